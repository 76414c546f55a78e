//! The receipt ledger: one SHA-256 hash chain per tenant, behind one trait.
//!
//! A receipt's canonical bytes are hashed as `SHA-256(prev ‖ bytes)`, where
//! `prev` is the hash of the tenant's previous receipt ([`GENESIS`] for the
//! first). The stored bytes are the hashed bytes: nothing is re-serialized to
//! verify. The bytes themselves carry `"tenant"`, `"seq"` and `"prev"`
//! (lowercase hex), which verification checks against the chain.
//!
//! # Layout
//! - [`memory`]: everything in memory, for tests.
//! - [`file`](mod@file): append-only segment files with group commit (the embedded default).
//! - `durability`: the [`Ticket`] a caller waits on until its receipt is
//!   durable, and the [`SyncPoint`] a backend's writer publishes progress to
//!   (public, with [`check_extends`], [`check_mark`] and [`Verifier`], for
//!   backends in other crates: `ggen-runtime`'s PostgreSQL ledger).
//! - `segment`: the frame and checkpoint formats of the file backend.
//! - `scan`: the one pass over a file ledger directory that opening,
//!   verifying and inspecting it share.
//! - [`inspect`]: read-only verify and scan of a file ledger directory.
//! - `verify`: chain replay shared by the backends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use crate::tenant::TenantId;

mod durability;
pub mod file;
pub mod inspect;

pub mod memory;
mod scan;
mod segment;
mod verify;

pub use durability::{FailOnPanic, Progress, Retaken, SyncPoint, Ticket, Verdict, poisoned};
pub use segment::{MAX_RECORD, encode_frame};
pub use verify::Verifier;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev` of a tenant's first receipt.
pub const GENESIS: Hash = [0; 32];

/// SHA-256(prev ‖ bytes): the hash of a receipt whose predecessor hashed to `prev`.
pub fn chain_hash(prev: &Hash, bytes: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(bytes);
    hasher.finalize().into()
}

/// Head of one tenant's chain; seq 0 + [`GENESIS`] for an empty chain. Receipts are numbered from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Sequence number of the last receipt (0: none yet).
    pub seq: u64,
    /// Hash of the last receipt ([`GENESIS`] when `seq` is 0).
    pub hash: Hash,
}

impl Head {
    /// The head of an empty chain.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS,
    };
}

/// What a caller appends: the canonical receipt bytes (which themselves contain
/// `"tenant"`, `"seq"`, and `"prev"` = lowercase hex of `prev`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The chain this receipt extends.
    pub tenant: TenantId,
    /// Must be the head's `seq + 1`.
    pub seq: u64,
    /// Must be the head's hash.
    pub prev: Hash,
    /// The canonical receipt bytes; hashed and stored as they are.
    pub bytes: Vec<u8>,
}

/// A stored receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The chain it belongs to.
    pub tenant: TenantId,
    /// Its position in the chain, from 1.
    pub seq: u64,
    /// `chain_hash(prev, bytes)` as stored.
    pub hash: Hash,
    /// The canonical receipt bytes.
    pub bytes: Arc<[u8]>,
}

/// The result of an append: the receipt's hash and a ticket for its durability.
#[derive(Debug)]
pub struct Appended {
    /// The new head hash of the tenant's chain.
    pub hash: Hash,
    /// Resolves once the receipt is durable.
    pub ticket: Ticket,
}

/// Where the log ended when [`Ledger::mark`] was called: a checkpoint taken
/// at a mark reflects exactly the records before it. Opaque; only meaningful
/// to the ledger that issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Records appended before the mark (ever, across restarts).
    records: u64,
    /// Backend-specific log position just after the last of those records.
    position: u64,
}

impl Mark {
    /// A mark after `records` records, at the backend's log `position`
    /// (for backends outside this crate).
    pub fn new(records: u64, position: u64) -> Mark {
        Mark { records, position }
    }

    /// The backend-specific log position it was taken at.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Number of records appended before the mark.
    pub fn records(&self) -> u64 {
        self.records
    }
}

/// The latest checkpoint as stored, beside the log's own account of its
/// mark. The blob is whatever the caller stored (and anyone who can write
/// the ledger directory may have rewritten); `heads` come from the ledger's
/// records, which the hash chains vouch for, so a caller can check the blob
/// against them before trusting it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Records before its mark.
    pub records: u64,
    /// The caller's snapshot, unchecked.
    pub blob: Arc<[u8]>,
    /// Every tenant with a receipt before the mark, with its head there
    /// (the last receipt before the mark), from the ledger's own records.
    pub heads: BTreeMap<TenantId, Head>,
}

/// What [`Ledger::recover`] hands its visitor, in this order.
#[derive(Clone, Copy, Debug)]
pub enum Recovered<'a> {
    /// The latest checkpoint: at most once, before any record.
    Checkpoint(&'a StoredCheckpoint),
    /// A record appended after that checkpoint's mark (every record when
    /// there is no checkpoint), in append order.
    Record(&'a Record),
}

/// The outcome of replaying every chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of tenants seen.
    pub tenants: usize,
    /// Number of receipts seen (bad ones included).
    pub receipts: u64,
    /// The first bad receipt in append order, if any.
    pub first_bad: Option<BadRecord>,
    /// How the stored checkpoint contradicts the chains, if it does (judged
    /// only with a [`VerifyOptions::checkpoint`] judge, and only when the
    /// chains verify up to its mark).
    pub checkpoint: Option<CheckpointProblem>,
}

/// How a stored checkpoint contradicts the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointProblem {
    /// The first tenant (in id order) it is wrong about; empty when the
    /// problem is not about one tenant (e.g. an unreadable blob).
    pub tenant: String,
    /// What is wrong.
    pub reason: String,
}

/// Judges a stored checkpoint: `None` when it agrees with the log. The
/// ledger cannot read the blob; its owner (the tenant registry) can.
pub type CheckpointJudge<'a> = &'a (dyn Fn(&StoredCheckpoint) -> Option<CheckpointProblem> + Sync);

/// How [`Ledger::verify_with`] runs.
#[derive(Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// Checked before every record: once set, verification stops with
    /// [`LedgerError::Cancelled`] (e.g. its HTTP request was dropped).
    pub cancel: Option<&'a AtomicBool>,
    /// Judges the stored checkpoint against every chain's head at its mark.
    pub checkpoint: Option<CheckpointJudge<'a>>,
    /// The SKU every receipt must name (`sku`): a ledger another SKU wrote
    /// is the wrong ledger, however sound its chains.
    pub sku: Option<&'a str>,
}

impl std::fmt::Debug for VerifyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("cancel", &self.cancel)
            .field("checkpoint", &self.checkpoint.is_some())
            .field("sku", &self.sku)
            .finish()
    }
}

impl VerifyOptions<'_> {
    /// Whether the caller gave up.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// The first receipt that does not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    /// Its tenant (for damage below the record level: the tenant the frame
    /// header claims if that is a valid id, else empty).
    pub tenant: String,
    /// Its sequence number (0 when unknown).
    pub seq: u64,
    /// What is wrong, naming the file and offset for damaged frames.
    pub reason: String,
}

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// An append that does not extend the tenant's chain.
    #[error(
        "append to tenant `{tenant}` does not extend its chain: expected seq `{expected_seq}` after `{expected_prev}`, got seq `{got_seq}` after `{got_prev}`"
    )]
    ChainMismatch {
        /// The tenant.
        tenant: String,
        /// The head's seq + 1.
        expected_seq: u64,
        /// The entry's seq.
        got_seq: u64,
        /// The head's hash, lowercase hex.
        expected_prev: String,
        /// The entry's prev, lowercase hex.
        got_prev: String,
    },
    /// A damaged frame or checkpoint that is not a torn tail.
    #[error("ledger file `{path}` is corrupt at offset `{offset}`: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Intact frames whose hash chain does not link: the ledger was tampered with.
    #[error(
        "hash chain of tenant `{tenant}` breaks at seq `{seq}` (`{path}` offset `{offset}`): {reason}"
    )]
    BrokenChain {
        /// The tenant.
        tenant: String,
        /// The first seq that does not link.
        seq: u64,
        /// The file holding it.
        path: PathBuf,
        /// Its byte offset.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("ledger i/o failed on `{path}`")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The ledger's disk is full: writes wait for space (and resume on
    /// their own once there is some); what waited for them is refused.
    #[error("ledger disk full at `{path}`: writes resume once space is freed")]
    Full {
        /// The file whose write or sync found no space.
        path: PathBuf,
        /// The failure.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A previous write or fsync failed: the ledger has stopped and accepts nothing.
    #[error("ledger stopped after a failed write or sync of `{path}`")]
    Poisoned {
        /// The file whose write or sync failed.
        path: PathBuf,
        /// The failure.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A ledger database refused or failed an operation (connection,
    /// schema, a query), or holds rows that cannot be receipts.
    #[error("ledger database `{target}`: {what}")]
    Database {
        /// Where the database is, without credentials (`postgres://host:port/db`).
        target: String,
        /// What failed.
        what: String,
        /// The driver's error, if there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An interrupted `ledger copy` left this ledger holding only part of its source.
    #[error(
        "ledger `{ledger}` is an unfinished copy (an interrupted `ledger copy` left only part of its source): remove it and copy again"
    )]
    IncompleteCopy {
        /// The directory, or the database without credentials.
        ledger: String,
    },
    /// Another process holds the ledger directory.
    #[error("ledger directory `{path}` is locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A receipt too large for one frame.
    #[error("receipt of `{len}` bytes exceeds the limit of `{max}` bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A checkpoint at a mark older than the stored checkpoint's.
    #[error(
        "checkpoint mark at `{mark}` records is older than the stored checkpoint at `{stored}` records"
    )]
    StaleMark {
        /// The refused mark's record count.
        mark: u64,
        /// The stored checkpoint's record count.
        stored: u64,
    },
    /// A checkpoint at a mark past the end of the log (not issued by this ledger).
    #[error("checkpoint mark at `{mark}` records is past the end of the log at `{end}` records")]
    ForeignMark {
        /// The refused mark's record count.
        mark: u64,
        /// Records in the log.
        end: u64,
    },
    /// The ledger has been shut down.
    #[error("ledger is closed")]
    Closed,
    /// A verification stopped because its caller cancelled it.
    #[error("verification cancelled after `{visited}` records")]
    Cancelled {
        /// Records checked before it stopped.
        visited: u64,
    },
    /// A `recover` visitor stopped recovery; the visitor's owner holds the reason.
    #[error("recovery stopped by its visitor")]
    Interrupted,
    /// A shared ledger refused an append when it committed (nothing of it
    /// was written); the decision may be taken again.
    #[error("{0}")]
    Rejected(Rejection),
    /// A `recover`/`scan` visitor refused a record.
    #[error("ledger visitor failed on tenant `{tenant}` seq `{seq}`")]
    Visitor {
        /// The record's tenant.
        tenant: String,
        /// The record's seq.
        seq: u64,
        /// The visitor's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why a shared ledger refused an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Another writer extended the tenant's chain first: the decision was
    /// taken on a state that is no longer the latest.
    Overtaken,
    /// The input's event id is already in the tenant's chain (inside the
    /// dedupe window), recorded by another writer.
    Duplicate,
    /// The decision starts a tenant's chain, and the ledger already holds
    /// the chains of [`Decision::max_tenants`] tenants (whichever replicas
    /// started them).
    TenantLimit,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rejection::Overtaken => {
                "another replica extended the tenant's chain first: the decision must be taken again"
            }
            Rejection::Duplicate => {
                "another replica already recorded this event id for the tenant"
            }
            Rejection::TenantLimit => {
                "the ledger already holds the SKU's `max_tenants` tenants: a new tenant is refused"
            }
        })
    }
}

/// One decision's receipts for a [`SharedLedger`]: committed together, or
/// refused together.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The tenant.
    pub tenant: TenantId,
    /// Consecutive entries of its chain; the first extends the head the
    /// decision was taken on.
    pub entries: Vec<Entry>,
    /// The registry's state of the tenant after the last entry (opaque here).
    pub state: Vec<u8>,
    /// When the tenant's next timer is due (ms since the epoch), if it has one.
    pub due: Option<i64>,
    /// The event ids the entries carry: (key, decision time in ms).
    pub ids: Vec<([u8; 16], i64)>,
    /// How long an event id is remembered (ms): an id recorded less than
    /// this long before the entry's decision time is a duplicate.
    pub window_ms: i64,
    /// What was decided on, so the writer can take the decision again
    /// under the tenant's lock when another writer overtook it (`None`:
    /// refuse it instead, e.g. a timer).
    pub redo: Option<Redo>,
    /// The SKU's `max_tenants`: a decision that starts the tenant's chain
    /// is refused ([`Rejection::TenantLimit`]) when the ledger already holds
    /// that many chains, so the bound holds for all replicas together.
    pub max_tenants: u32,
}

/// The input of a [`Decision`] and its decision time.
#[derive(Clone, Debug)]
pub struct Redo {
    /// The input.
    pub input: crate::receipt::Input,
    /// When it was decided.
    pub at: crate::clock::Timestamp,
}

/// Takes an overtaken decision again, for a [`SharedLedger`]'s writer
/// (the tenant registry).
pub trait Redecide: Send + Sync {
    /// Decides `redo` for `tenant` on `stored` (the tenant as committed,
    /// under its lock): the decision to commit in its place (`None`:
    /// nothing to write) and what to hand the waiting caller.
    fn redecide(
        &self,
        tenant: &TenantId,
        stored: Stored,
        redo: &Redo,
    ) -> Result<(Option<Decision>, Retaken), String>;
}

/// A tenant as a [`SharedLedger`] has it committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The head of its chain ([`Head::EMPTY`] for an unknown tenant).
    pub head: Head,
    /// The registry state stored with a receipt, and that receipt's seq
    /// (behind the head when receipts arrived without one, e.g. copied).
    pub state: Option<(u64, Vec<u8>)>,
}

/// A ledger several processes append to at once (replicas on one
/// database). A decision is taken on a tenant's [`Stored`] state and
/// committed only if the chain still ends where it was taken (else its
/// ticket resolves to [`Rejection::Overtaken`]) and none of its event ids
/// is already recorded ([`Rejection::Duplicate`]).
pub trait SharedLedger: Send + Sync {
    /// The tenant's committed head and state.
    fn load(&self, tenant: &TenantId) -> Result<Stored, LedgerError>;
    /// Queues `decision` for commit; [`Appended::hash`] is its last entry's.
    fn append_decision(&self, decision: Decision) -> Result<Appended, LedgerError>;
    /// Tenants whose timer is due at `now_ms` and that no other process
    /// claimed in the last `lease_ms`, at most `limit`; each is claimed
    /// for `lease_ms` (a process that dies leaves its claims to expire).
    fn claim_due(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<TenantId>, LedgerError>;
    /// Records that `tenant`'s next timer, as of its receipt `seq`, is
    /// `due` (when a claimed tenant's timer turned out not to be due); a
    /// no-op if the chain has moved past `seq`.
    fn store_due(&self, tenant: &TenantId, seq: u64, due: Option<i64>) -> Result<(), LedgerError>;
    /// Takes `tenant`'s lock (after any commit for it in progress) and
    /// loads it: a decision taken on [`LockedTenant::stored`] is on the
    /// latest state and cannot be overtaken. The way to decide when
    /// optimism keeps losing to other replicas; dropping the lock writes
    /// nothing.
    fn lock_tenant(&self, tenant: &TenantId) -> Result<Box<dyn LockedTenant>, LedgerError>;
    /// Lets the writer take overtaken decisions again through `taker`
    /// (without one, they are refused as [`Rejection::Overtaken`]).
    fn set_redecider(&self, taker: std::sync::Weak<dyn Redecide>);
    /// Whether `tenant`'s event id `key` is recorded with a decision time
    /// after `since_ms`.
    fn recorded(
        &self,
        tenant: &TenantId,
        key: [u8; 16],
        since_ms: i64,
    ) -> Result<bool, LedgerError>;
    /// Takes, for one attempt, the turn `turn.pair` of `turn.tenant`'s
    /// actions, which a dispatch and its counterparts (the action it
    /// undoes, or the undo of the action it repeats) share across every
    /// process on the ledger, so that one's attempt never overlaps the
    /// other's. Never waits: [`TurnTaken::Busy`] while another process
    /// holds the turn. Once taken, a counterpart decided after `turn.seq`
    /// whose dispatch asked before refuses it ([`TurnTaken::Superseded`]);
    /// otherwise the dispatch is recorded (unless `recorded`: an earlier
    /// ask of it did, busy or not), so that its earlier counterparts make
    /// no further attempt. A counterpart's turn taken less than its
    /// `attempt_ms` ago and not given back is still held (busy).
    fn take_action_turn(&self, turn: &ActionTurn, recorded: bool)
    -> Result<TurnTaken, LedgerError>;
}

/// A dispatch asking for its turn ([`SharedLedger::take_action_turn`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionTurn {
    /// Whose action it is.
    pub tenant: TenantId,
    /// The turn it shares with its counterparts: the undo action's name.
    pub pair: &'static str,
    /// The action dispatched.
    pub action: &'static str,
    /// Whether it is an undo.
    pub undo: bool,
    /// The seq of the receipt that decided it.
    pub seq: u64,
    /// Its counterparts' action names (dispatched the other way round).
    pub counterparts: Vec<&'static str>,
    /// The longest one attempt of it may take, in ms (its action's timeout
    /// and a margin). A turn taken for it keeps the counterparts out that
    /// long by the ledger's clock even when its holder is gone before
    /// giving it back (a process killed, a database session lost): a
    /// request already sent may still land.
    pub attempt_ms: u32,
}

/// What [`SharedLedger::take_action_turn`] found.
#[derive(Debug)]
pub enum TurnTaken {
    /// The turn is held until this is finished or dropped.
    Held(HeldTurn),
    /// Another process holds it, or a counterpart's attempt may still be
    /// under way (its holder gone before the attempt's `attempt_ms` were up).
    Busy,
    /// A counterpart decided later took it first: no attempt.
    Superseded {
        /// The counterpart's action.
        action: String,
        /// The seq of the receipt that decided it.
        seq: u64,
    },
}

/// A held action turn ([`TurnTaken::Held`]). [`HeldTurn::finish`] gives
/// it back once its attempt has ended; dropped without that (the attempt
/// abandoned while it may still be under way, e.g. at shutdown), it is
/// given back too, but its counterparts still wait until the attempt's
/// [`ActionTurn::attempt_ms`] are up.
pub struct HeldTurn(Option<Box<dyn FnOnce(bool) + Send>>);

impl HeldTurn {
    /// A turn that `release` gives back: with `true` once its attempt
    /// ended, with `false` when dropped before.
    pub fn new(release: impl FnOnce(bool) + Send + 'static) -> HeldTurn {
        HeldTurn(Some(Box::new(release)))
    }

    /// Gives the turn back: its attempt has ended (answered, failed or
    /// timed out), so its counterparts may go at once.
    pub fn finish(mut self) {
        if let Some(release) = self.0.take() {
            release(true);
        }
    }
}

impl Drop for HeldTurn {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release(false);
        }
    }
}

impl std::fmt::Debug for HeldTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldTurn")
    }
}

/// A tenant's chain held for one decision ([`SharedLedger::lock_tenant`]).
pub trait LockedTenant: Send {
    /// The tenant as committed (nothing can commit for it while held).
    fn stored(&self) -> &Stored;
    /// Commits `decision` (durably) and releases the lock; the only
    /// refusal left is [`Rejection::Duplicate`].
    fn commit(self: Box<Self>, decision: Decision) -> Result<(), LedgerError>;
}

/// Wraps an I/O error on `path` as [`LedgerError::Io`].
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A store of per-tenant hash chains.
pub trait Ledger: Send + Sync + 'static {
    /// Refuses ([`LedgerError::ChainMismatch`]) unless `entry.seq == head.seq + 1`
    /// and `entry.prev == head.hash`; computes the hash.
    /// Non-blocking: returns once the record is ordered in the log; durability is the Ticket's job.
    fn append(&self, entry: Entry) -> Result<Appended, LedgerError>;
    /// The head of `tenant`'s chain ([`Head::EMPTY`] if it has none).
    fn head(&self, tenant: &TenantId) -> Head;
    /// Receipts of one tenant with seq > after, at most limit, in seq order.
    fn read(&self, tenant: &TenantId, after: u64, limit: usize)
    -> Result<Vec<Record>, LedgerError>;
    /// Where the log ends now. Cheap and non-blocking: callers take it while
    /// no append can run (e.g. under every lock appends happen under), then
    /// build the blob for [`Ledger::checkpoint`] without holding those locks.
    fn mark(&self) -> Result<Mark, LedgerError>;
    /// Stores an opaque snapshot `blob` as reflecting exactly the records
    /// before `mark`; recovery replays the records after it. Blocks until the
    /// log is durable up to the mark (file backend) and the checkpoint itself
    /// is stored. Refuses ([`LedgerError::StaleMark`]) a mark older than the
    /// stored checkpoint's.
    fn checkpoint(&self, mark: Mark, blob: &[u8]) -> Result<(), LedgerError>;
    /// Recovery: first [`Recovered::Checkpoint`] with the latest checkpoint
    /// (if any: its blob, and every tenant's head at its mark from the
    /// ledger's own records, to check the blob against), then
    /// [`Recovered::Record`] for every record appended after its mark, in
    /// append order. A visitor error stops it and is returned.
    fn recover(
        &self,
        visit: &mut dyn FnMut(Recovered<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError>;
    /// Recovery once the caller set aside the checkpoint [`Ledger::recover`]
    /// visited (its states contradict the records): the same visits from
    /// the older checkpoint a ledger that lost the start of its log keeps
    /// for this (the file ledger's anchor keeps the one current at its
    /// cut), else every record from the start of the log as
    /// [`Recovered::Record`]s. A ledger that can do neither refuses.
    fn recover_past_checkpoint(
        &self,
        visit: &mut dyn FnMut(Recovered<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        self.scan(&mut |record| visit(Recovered::Record(record)))
    }
    /// Every record in append order (for `ledger show` and full replays).
    fn scan(
        &self,
        visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError>;
    /// Replays every chain: recomputes hashes, checks the `tenant`, `seq`, `prev`
    /// fields inside the bytes; reports the first bad (tenant, seq).
    fn verify(&self) -> Result<VerifyReport, LedgerError> {
        self.verify_with(&VerifyOptions::default())
    }
    /// [`Ledger::verify`], cancellable, and judging the stored checkpoint
    /// (see [`VerifyOptions`]).
    fn verify_with(&self, options: &VerifyOptions<'_>) -> Result<VerifyReport, LedgerError>;
    /// A ticket that resolves once everything appended so far is durable,
    /// for a caller that awaits rather than blocks a thread however long
    /// the writer is held up (see [`Ledger::flush`]).
    fn flushed(&self) -> Ticket;
    /// Waits until everything appended so far is durable.
    fn flush(&self) -> Result<(), LedgerError> {
        self.flushed().wait()
    }
    /// The shared-ledger interface, when other processes append too.
    fn shared(&self) -> Option<&dyn SharedLedger> {
        None
    }
    /// Refuses ([`LedgerError::Full`]) while writes wait for disk space:
    /// callers check before deciding, so no decision is cut in half.
    fn check_writable(&self) -> Result<(), LedgerError> {
        Ok(())
    }
    /// The ledger's disk use and the free space beside it, for a ledger on
    /// a local file system (`None` for others).
    fn space(&self) -> Option<Result<Space, LedgerError>> {
        None
    }
    /// The file ledger behind this one, if it is one (retention cuts its segments).
    fn as_file(&self) -> Option<&file::FileLedger> {
        None
    }
    /// The ledger's Merkle tree, when it keeps one.
    fn tree(&self) -> Option<&dyn LogTree> {
        None
    }
    /// Bytes a ledger that is not on a local file system holds where it
    /// is (a database's tables); `None` for others. May block for a
    /// round trip: not for an async runtime's threads.
    fn stored_bytes(&self) -> Option<Result<u64, LedgerError>> {
        None
    }
}

/// A ledger's Merkle tree (RFC 9162): every durable receipt a leaf, in
/// append order across tenants, kept as the ledger appends; what signed
/// checkpoints and proofs are made of.
pub trait LogTree: crate::merkle::Nodes + Send + Sync {
    /// The size and root of the tree of every durable receipt (a tree
    /// built on demand is extended first).
    fn latest(&self) -> Result<(u64, Hash), LedgerError>;
    /// The leaves the tree holds now, without extending it.
    fn stored_size(&self) -> Result<u64, LedgerError>;
    /// Refuses a tree that can never cover the ledger (its oldest
    /// receipts were archived before it was built).
    fn check_buildable(&self) -> Result<(), LedgerError> {
        Ok(())
    }
    /// The leaf index of `tenant`'s receipt `seq`, if the ledger holds it
    /// (archived receipts are not found).
    fn leaf_index(&self, tenant: &TenantId, seq: u64) -> Result<Option<u64>, LedgerError>;
    /// Makes the tree durable as far as it goes.
    fn sync(&self) -> Result<(), LedgerError>;
}

/// A local ledger's disk use (see [`Ledger::space`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes of the ledger's files.
    pub bytes: u64,
    /// Bytes an unprivileged writer may still use on its file system.
    pub free: u64,
    /// The file system's size in bytes.
    pub total: u64,
    /// Whether writes are waiting for space now.
    pub full: bool,
}

/// Whether `error` says the disk (or the writer's quota) is full: a
/// condition that passes, unlike other write errors.
pub fn is_out_of_space(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Checks that a checkpoint at `mark` neither goes back before the stored
/// checkpoint (at `stored` records) nor past the end of the log (`end` records).
pub fn check_mark(mark: &Mark, stored: u64, end: u64) -> Result<(), LedgerError> {
    if mark.records < stored {
        return Err(LedgerError::StaleMark {
            mark: mark.records,
            stored,
        });
    }
    if mark.records > end {
        return Err(LedgerError::ForeignMark {
            mark: mark.records,
            end,
        });
    }
    Ok(())
}

/// Checks that `entry` extends `head`.
pub fn check_extends(head: &Head, entry: &Entry) -> Result<(), LedgerError> {
    if entry.seq == head.seq.wrapping_add(1) && entry.prev == head.hash {
        return Ok(());
    }
    Err(LedgerError::ChainMismatch {
        tenant: entry.tenant.to_string(),
        expected_seq: head.seq.wrapping_add(1),
        got_seq: entry.seq,
        expected_prev: hex::encode(head.hash),
        got_prev: hex::encode(entry.prev),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_hash_is_sha256_of_prev_then_bytes() {
        // SHA-256 of 32 zero bytes followed by "abc", computed independently.
        let mut joined = vec![0u8; 32];
        joined.extend_from_slice(b"abc");
        let expected: Hash = Sha256::digest(&joined).into();
        assert_eq!(chain_hash(&GENESIS, b"abc"), expected);
        assert_ne!(chain_hash(&[1; 32], b"abc"), expected);
        // The empty input is SHA-256 of 32 zero bytes.
        assert_eq!(
            hex::encode(chain_hash(&GENESIS, b"")),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn check_mark_refuses_stale_and_foreign_marks() {
        let mark = Mark {
            records: 5,
            position: 0,
        };
        assert!(check_mark(&mark, 5, 5).is_ok());
        assert!(check_mark(&mark, 0, 9).is_ok());
        assert!(matches!(
            check_mark(&mark, 6, 9),
            Err(LedgerError::StaleMark { mark: 5, stored: 6 })
        ));
        assert!(matches!(
            check_mark(&mark, 0, 4),
            Err(LedgerError::ForeignMark { mark: 5, end: 4 })
        ));
    }

    #[test]
    fn check_extends_requires_seq_and_prev() {
        let tenant = TenantId::new("acme").unwrap();
        let entry = |seq, prev| Entry {
            tenant: tenant.clone(),
            seq,
            prev,
            bytes: Vec::new(),
        };
        assert!(check_extends(&Head::EMPTY, &entry(1, GENESIS)).is_ok());
        assert!(check_extends(&Head::EMPTY, &entry(2, GENESIS)).is_err());
        assert!(check_extends(&Head::EMPTY, &entry(1, [1; 32])).is_err());
        let head = Head {
            seq: 1,
            hash: [7; 32],
        };
        assert!(check_extends(&head, &entry(2, [7; 32])).is_ok());
        let err = check_extends(&head, &entry(1, [7; 32])).unwrap_err();
        assert!(err.to_string().contains("expected seq `2`"), "{err}");
    }
}

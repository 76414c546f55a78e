//! The PostgreSQL ledger shared by several governor replicas.
//!
//! Every replica appends; none holds the schema alone (each holds the
//! writer lock in shared mode, so an exclusive writer such as `ledger
//! copy` cannot write beside them). A replica's writer thread takes every
//! pending decision (up to a batch) and commits them in one transaction:
//!
//! 1. transaction-scoped advisory locks on the batch's tenants, taken in
//!    key order (so two batches never deadlock): one tenant's receipts are
//!    committed by one transaction at a time;
//! 2. each tenant's head as committed: a decision whose first receipt does
//!    not extend it was taken on a state another replica overtook, and is
//!    refused ([`Rejection::Overtaken`]); so are the tenant's later
//!    decisions in the batch, which extend it;
//! 3. the event ids the accepted decisions carry: one already recorded for
//!    the tenant inside the dedupe window refuses its decision
//!    ([`Rejection::Duplicate`]);
//! 4. positions from the receipt counter row (`ggen_log`), locked until
//!    commit, so commits happen in position order and positions stay
//!    gapless, as one writer's are;
//! 5. one statement inserting the receipts and the event ids and setting
//!    each tenant's head, state, state seq and next timer.
//!
//! A ticket resolves when its batch has committed: to `Ok` if its decision
//! was written, to [`LedgerError::Rejected`] if not (nothing of it was).
//! `synchronous_commit` is on. Timers are claimed with `FOR UPDATE SKIP
//! LOCKED` and a lease ([`SharedPgLedger::claim_due`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::types::Type;
use postgres::{Client, GenericClient};
use sha2::{Digest, Sha256};

use super::{
    PgLedger, PgOptions, Retry, column, connect, database, off_runtime, partitions, position,
};
use crate::ledger::{
    ActionTurn, Appended, Decision, Entry, FailOnPanic, GENESIS, Hash, Head, Ledger, LedgerError,
    LockedTenant, Mark, Progress, Record, Recovered, Redecide, Rejection, Retaken, SharedLedger,
    Stored, SyncPoint, Ticket, TurnTaken, Verdict, VerifyOptions, VerifyReport, chain_hash,
};
use crate::tenant::TenantId;

/// Threads, each with its connection, loading tenants and claiming timers
/// (the synchronous client cannot run on an async runtime's threads,
/// where requests load tenants: they hand the query over and wait).
const READERS: usize = 4;
/// Threads (each with its connection) holding tenants' locks for the
/// decisions taken again under them.
const LOCKERS: usize = 2;
/// Longest a locked tenant waits for its decision before letting go.
const LOCK_HOLD: Duration = Duration::from_secs(10);
/// How much longer than a caller waits (`PgOptions::answer_within`) the
/// server lets the statements of reader and locker threads run.
const STATEMENT_MARGIN: Duration = Duration::from_secs(1);
/// Every writing session: durable commits, the isolation the checks
/// assume whatever the server's default, a server-side bound on a
/// transaction left open by a vanished replica (its locks, tenants' and the
/// receipt counter's, would otherwise stall every other replica), and
/// `ggen.counts_tenants`: the session adds the tenants it starts to
/// `ggen_tenant_count` itself, once per statement, where the count's
/// trigger (which skips such sessions) would update it once per tenant.
pub(super) const WRITING_SESSION: &str = "SET synchronous_commit = on;
     SET standard_conforming_strings = on;
     SET default_transaction_isolation = 'read committed';
     SET idle_in_transaction_session_timeout = '20s';
     SET ggen.counts_tenants = on";
/// Lifts a session's `statement_timeout` (the writer's, and a patient
/// caller's while its job runs).
const UNBOUNDED: &str = "SET statement_timeout = 0";

/// Sets up the writer's session: [`WRITING_SESSION`], and no
/// `statement_timeout`. Its statements wait for tenants' locks (a locker
/// may hold one for `answer_within` and a decision) and for the receipt
/// counter: a timeout set on the role, the database or the URL would
/// cancel them and stop the ledger. Its waiters are bounded by the
/// request timeout instead.
fn writer_session(client: &mut Client) -> Result<(), postgres::Error> {
    client.batch_execute(WRITING_SESSION)?;
    client.batch_execute(UNBOUNDED)
}
/// How many times a batch the server aborted for a deadlock or a lock
/// conflict (with another replica's pruning, say) is tried again.
const BATCH_TRIES: u32 = 5;
/// A batch is let fill (see `Writer::run`) once the last one held this many.
const GATHER_FROM: usize = 8;
/// How long a batch waits for each further decision while it fills.
const GATHER_STEP: Duration = Duration::from_micros(150);
/// Longest a batch waits to fill.
const GATHER_FOR: Duration = Duration::from_millis(1);
/// How often the writer removes event ids past their window.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// How often the writer makes sure the receipts have a partition ahead.
const PARTITION_EVERY: Duration = Duration::from_secs(1);
/// Most expired event ids one pass removes.
const PRUNE_LIMIT: i64 = 50_000;

/// One decision on its way: its receipts with their hashes, its verdict.
#[derive(Debug, Clone)]
struct Pending {
    /// Local order of the decision (what its ticket waits for).
    local: u64,
    decision: Decision,
    hashes: Vec<Hash>,
    verdict: Arc<Verdict>,
}

#[derive(Debug, Default)]
struct State {
    /// Decisions queued so far (the last local number).
    queued: u64,
    pending: Vec<Pending>,
    closing: bool,
    failed: Option<(PathBuf, Arc<std::io::Error>)>,
}

struct Inner {
    target: String,
    /// Takes overtaken decisions again (the registry), once attached.
    taker: Mutex<Option<std::sync::Weak<dyn Redecide>>>,
    state: Mutex<State>,
    work: Condvar,
    sync: Arc<SyncPoint>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A PostgreSQL ledger several replicas write at once (see the module docs).
pub struct SharedPgLedger {
    inner: Arc<Inner>,
    /// Scans and verification, as a read-only ledger does them.
    reads: PgLedger,
    /// The Merkle tree every replica extends.
    tree: super::tree::PgTree,
    /// The schema's oid (tenant lock keys).
    oid: i64,
    /// Queries for the reader threads (closed on drop, which ends them).
    jobs: Option<mpsc::Sender<Job>>,
    /// Locked decisions for the locker threads (likewise).
    locks: Option<mpsc::Sender<Job>>,
    /// How callers wait for readers and lockers (`PgOptions::answer_within`).
    waits: Waits,
    /// The reader and locker threads.
    readers: Vec<JoinHandle<()>>,
    /// The action turns this process holds.
    turns: super::turns::Turns,
    writer: Option<JoinHandle<()>>,
}

/// A query for a reader thread, on its connection.
type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// A reader thread: connects, then runs queries as they come (connecting
/// again when its connection was lost: the queries are idempotent).
fn reader(url: String, target: String, setup: String, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut client: Option<Client> = None;
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        if client.as_ref().is_none_or(Client::is_closed) {
            let connected = connect(&url, &target).and_then(|mut c| {
                c.batch_execute(&setup)
                    .map_err(database(&target, "setting up a connection"))?;
                Ok(c)
            });
            match connected {
                Ok(connected) => client = Some(connected),
                Err(error) => {
                    // The job's caller hears of it as a closed channel.
                    tracing::warn!(target = %target, error = %crate::report::error_chain(&error), "ledger reader cannot connect");
                    drop(job);
                    continue;
                }
            }
        }
        if let Some(client) = client.as_mut() {
            job(client);
        }
    }
}

impl std::fmt::Debug for SharedPgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPgLedger")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

/// A tenant's head, state seq and state.
const LOAD: &str = "SELECT seq, hash, state_seq, state FROM ggen_heads WHERE tenant = $1";

/// The tenant [`LOAD`] read (`None`: no row, a tenant without receipts).
fn stored(
    row: Option<&postgres::Row>,
    tenant: &TenantId,
    target: &str,
) -> Result<Stored, LedgerError> {
    let Some(row) = row else {
        return Ok(Stored {
            head: Head::EMPTY,
            state: None,
        });
    };
    let bad = |why: String| super::altered(target, format!("the head of tenant `{tenant}`: {why}"));
    let seq: i64 = column(row, 0).map_err(bad)?;
    let hash: Vec<u8> = column(row, 1).map_err(bad)?;
    let state_seq: Option<i64> = column(row, 2).map_err(bad)?;
    let state: Option<Vec<u8>> = column(row, 3).map_err(bad)?;
    let seq = u64::try_from(seq).map_err(|_| bad(format!("seq `{seq}` is negative")))?;
    let hash: Hash = hash
        .as_slice()
        .try_into()
        .map_err(|_| bad(format!("a hash of `{}` bytes", hash.len())))?;
    let state = match (state_seq, state) {
        (Some(at), Some(blob)) => Some((
            u64::try_from(at).map_err(|_| bad(format!("state seq `{at}` is negative")))?,
            blob,
        )),
        _ => None,
    };
    Ok(Stored {
        head: Head { seq, hash },
        state,
    })
}

/// The hashes of `decision`'s receipts, which must chain among themselves
/// (the first is checked against the committed head when it commits).
fn chained(decision: &Decision, target: &str) -> Result<Vec<Hash>, LedgerError> {
    let refused = |what: String| LedgerError::Database {
        target: target.to_owned(),
        what,
        source: None,
    };
    let Some(first) = decision.entries.first() else {
        return Err(refused("a decision without receipts".to_owned()));
    };
    let mut hashes = Vec::with_capacity(decision.entries.len());
    let mut head = Head {
        seq: first.seq.wrapping_sub(1),
        hash: first.prev,
    };
    for entry in &decision.entries {
        crate::ledger::check_extends(&head, entry)?;
        if entry.tenant != decision.tenant {
            return Err(refused(format!(
                "a decision for `{}` holds a receipt of `{}`",
                decision.tenant, entry.tenant
            )));
        }
        if entry.bytes.len() > crate::ledger::MAX_RECORD {
            return Err(LedgerError::TooLarge {
                len: entry.bytes.len(),
                max: crate::ledger::MAX_RECORD,
            });
        }
        let hash = chain_hash(&entry.prev, &entry.bytes);
        hashes.push(hash);
        head = Head {
            seq: entry.seq,
            hash,
        };
    }
    Ok(hashes)
}

/// The advisory-lock key of `tenant` in the schema `oid`: transactions
/// appending to one tenant exclude each other (another tenant sharing the
/// key only waits).
fn tenant_key(oid: i64, tenant: &TenantId) -> i64 {
    lock_key(oid, tenant.as_str().as_bytes())
}

/// An advisory-lock key for `name` in the schema `oid`: the first 8 bytes
/// of SHA-256(oid ‖ name).
pub(super) fn lock_key(oid: i64, name: &[u8]) -> i64 {
    let mut hasher = Sha256::new();
    hasher.update(oid.to_be_bytes());
    hasher.update(name);
    let digest: [u8; 32] = hasher.finalize().into();
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

/// Takes from the front of `pending` the decisions that `fit` while the
/// receipts (counting the `receipts` already taken) stay within `max`: a
/// prefix, since tickets settle in queue order.
fn take_queued(
    pending: &mut Vec<Pending>,
    mut receipts: usize,
    max: usize,
    fits: impl Fn(&Pending) -> bool,
) -> Vec<Pending> {
    let take = pending
        .iter()
        .take_while(|p| {
            receipts += p.decision.entries.len();
            receipts <= max && fits(p)
        })
        .count();
    pending.drain(..take).collect()
}

/// Receipts in `batch`.
fn receipts_of(batch: &[Pending]) -> usize {
    batch.iter().map(|p| p.decision.entries.len()).sum()
}

/// The event ids `batch` carries, each with its tenant and the decision
/// time before which a recorded one has expired.
fn ids_of(batch: &[Pending]) -> impl Iterator<Item = (&str, &[u8; 16], i64)> {
    batch.iter().flat_map(|p| {
        p.decision.ids.iter().map(|(key, at)| {
            (
                p.decision.tenant.as_str(),
                key,
                at.saturating_sub(p.decision.window_ms),
            )
        })
    })
}

impl SharedPgLedger {
    /// Connects, takes the writer lock in shared mode, migrates the schema
    /// (safe when replicas start at once), checks the heads against their
    /// receipts and starts the writer. Loads no tenant.
    pub fn open(url: &str, options: PgOptions) -> Result<SharedPgLedger, LedgerError> {
        let target = super::redacted(url);
        let mut client = connect(url, &target)?;
        let oid = super::take_writer_lock(&mut client, &target, super::LockMode::Shared)?;
        super::schema::migrate(&mut client).map_err(|source| LedgerError::Database {
            target: target.clone(),
            what: "migrating the ledger schema failed".to_owned(),
            source: Some(Box::new(source)),
        })?;
        writer_session(&mut client)
            .map_err(database(&target, "setting up the writer's session"))?;
        let reads = PgLedger::open_read_only(url)?;
        let records = super::log_end(&mut *reads.reader()?, &target)?;
        let partition_end = partitions::ensure(
            &mut client,
            records + options.partition_receipts,
            options.partition_receipts,
        )
        .map_err(database(&target, "making the receipts' next partition"))?;
        {
            let mut reader = reads.reader()?;
            if super::copy_in_progress(&mut *reader, &target)? {
                return Err(LedgerError::IncompleteCopy { ledger: target });
            }
            // The same checks a single writer makes at start (the heads
            // are not kept: tenants load when first needed).
            super::load_heads(&mut reader, &target)?;
            // A tenant whose state is behind its chain (receipts copied in,
            // or written by a single writer) may have a timer due that no
            // row says: have the next tick look at it.
            reader
                .execute(
                    "UPDATE ggen_heads SET due_at = 0
                     WHERE state_seq IS DISTINCT FROM seq AND due_at IS DISTINCT FROM 0",
                    &[],
                )
                .map_err(database(&target, "marking tenants to check for timers"))?;
        }
        let inner = Arc::new(Inner {
            target: target.clone(),
            taker: Mutex::new(None),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            sync: Arc::new(SyncPoint::new(Progress::default())),
        });
        let writer = Writer {
            inner: Arc::clone(&inner),
            url: url.to_owned(),
            oid,
            client,
            window_ms: 0,
            txid: None,
            unconfirmed: None,
            last_batch: 0,
            contended: false,
            pruned: Instant::now(),
            partition_receipts: options.partition_receipts,
            partition_end,
            partitioned: Instant::now(),
        };
        let max_batch = options.max_batch.max(1);
        let failing = Arc::clone(&inner);
        let writer = std::thread::Builder::new()
            .name("ledger-pg-shared".to_owned())
            .spawn(move || {
                let _failing = FailOnPanic(|| fail(&failing, &super::WRITER_PANICKED));
                writer.run(max_batch);
            })
            .map_err(|source| LedgerError::Io {
                path: PathBuf::from(&target),
                source,
            })?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let (locks, locked) = mpsc::channel::<Job>();
        let locked = Arc::new(Mutex::new(locked));
        // Requests wait for these threads at most `answer_within`; their
        // statements are bounded on the server too, a second later, so one
        // stuck behind a lock frees its thread for the next request.
        let bounded = format!(
            "SET statement_timeout = {};",
            options
                .answer_within
                .saturating_add(STATEMENT_MARGIN)
                .as_millis()
                .min(i32::MAX as u128)
        );
        // Named, so `pg_stat_activity` tells an operator whose they are.
        let pools = [
            (
                "read",
                READERS,
                format!("SET application_name = 'ggen-read';\n{bounded}"),
                &queue,
            ),
            (
                "lock",
                LOCKERS,
                format!("SET application_name = 'ggen-lock';\n{bounded}\n{WRITING_SESSION}"),
                &locked,
            ),
        ];
        let readers = pools
            .into_iter()
            .flat_map(|(name, n, setup, queue)| {
                (0..n).map(move |i| (name, i, setup.clone(), queue))
            })
            .map(|(name, i, setup, queue)| {
                let (url, target, queue) = (url.to_owned(), target.clone(), Arc::clone(queue));
                std::thread::Builder::new()
                    .name(format!("ledger-pg-{name}-{i}"))
                    .spawn(move || reader(url, target, setup, queue))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| LedgerError::Io {
                path: PathBuf::from(&target),
                source,
            })?;
        let tree = super::tree::PgTree::new(url, &target);
        let turns =
            super::turns::Turns::start(url, &target, oid).map_err(|source| LedgerError::Io {
                path: PathBuf::from(&target),
                source,
            })?;
        Ok(SharedPgLedger {
            inner,
            reads,
            tree,
            oid,
            jobs: Some(jobs),
            locks: Some(locks),
            waits: Waits {
                within: options.answer_within,
                waiting: AtomicUsize::new(0),
                bounded: Arc::from(bounded),
            },
            readers,
            turns,
            writer: Some(writer),
        })
    }

    /// Where the database is, without credentials.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Runs `query` on a reader thread's connection and waits for it.
    fn with_reader<T: Send + 'static>(
        &self,
        query: impl FnOnce(&mut Client) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        on_reader(self.jobs.as_ref(), Some(&self.waits), query).unwrap_or_else(|unanswered| {
            Err(unanswered.error(&self.inner.target, "read", self.waits.within))
        })
    }

    fn altered(&self, why: String) -> LedgerError {
        super::altered(&self.inner.target, why)
    }
}

impl SharedLedger for SharedPgLedger {
    fn set_redecider(&self, taker: std::sync::Weak<dyn Redecide>) {
        *self
            .inner
            .taker
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(taker);
    }

    fn load(&self, tenant: &TenantId) -> Result<Stored, LedgerError> {
        let (name, target) = (tenant.clone(), self.inner.target.clone());
        self.with_reader(move |client| {
            let row = client
                .query_typed_opt(LOAD, &[(&name.as_str(), Type::TEXT)])
                .map_err(database(&target, "loading a tenant"))?;
            stored(row.as_ref(), &name, &target)
        })
    }

    fn append_decision(&self, decision: Decision) -> Result<Appended, LedgerError> {
        let hashes = chained(&decision, &self.inner.target)?;
        let hash = hashes[hashes.len() - 1];
        let verdict = Arc::new(Verdict::default());
        let mut state = self.inner.lock();
        if let Some(failed) = &state.failed {
            return Err(crate::ledger::poisoned(failed));
        }
        if state.closing {
            return Err(LedgerError::Closed);
        }
        state.queued += 1;
        let local = state.queued;
        state.pending.push(Pending {
            local,
            decision,
            hashes,
            verdict: Arc::clone(&verdict),
        });
        drop(state);
        self.inner.work.notify_one();
        Ok(Appended {
            hash,
            ticket: Ticket::judged(local, Arc::clone(&self.inner.sync), verdict),
        })
    }

    fn claim_due(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<TenantId>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let target = self.inner.target.clone();
        let rows = self.with_reader(move |client| {
            client
                .query_typed(
                    "UPDATE ggen_heads SET claimed_until = $1 + $2
                     WHERE tenant IN (
                         SELECT tenant FROM ggen_heads
                         WHERE due_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1)
                         ORDER BY due_at LIMIT $3
                         FOR UPDATE SKIP LOCKED)
                     RETURNING tenant",
                    &[
                        (&now_ms, Type::INT8),
                        (&lease_ms, Type::INT8),
                        (&limit, Type::INT8),
                    ],
                )
                .map_err(database(&target, "claiming due timers"))
        })?;
        // A row that names no valid tenant (an altered table) is passed
        // over, not allowed to keep the others' timers from firing.
        Ok(rows
            .iter()
            .filter_map(|row| {
                let tenant = column::<String>(row, 0)
                    .map_err(|why| self.altered(why))
                    .and_then(|name| {
                        TenantId::new(&name)
                            .map_err(|e| self.altered(format!("tenant `{name}` is invalid: {e}")))
                    });
                tenant
                    .map_err(|error| tracing::warn!(error = %error, "due timer row skipped"))
                    .ok()
            })
            .collect())
    }

    fn store_due(&self, tenant: &TenantId, seq: u64, due: Option<i64>) -> Result<(), LedgerError> {
        let (name, target) = (tenant.to_string(), self.inner.target.clone());
        self.with_reader(move |client| {
            client
                .query_typed(
                    "UPDATE ggen_heads SET due_at = $3, claimed_until = NULL
                     WHERE tenant = $1 AND seq = $2",
                    &[
                        (&name, Type::TEXT),
                        (&position(seq), Type::INT8),
                        (&due, Type::INT8),
                    ],
                )
                .map_err(database(&target, "storing a tenant's next timer"))
        })?;
        Ok(())
    }

    fn recorded(
        &self,
        tenant: &TenantId,
        key: [u8; 16],
        since_ms: i64,
    ) -> Result<bool, LedgerError> {
        let (name, target) = (tenant.to_string(), self.inner.target.clone());
        self.with_reader(move |client| {
            client
                .query_typed_one(
                    "SELECT EXISTS (SELECT 1 FROM ggen_event_ids
                                    WHERE tenant = $1 AND key = $2 AND at > $3)",
                    &[
                        (&name, Type::TEXT),
                        (&&key[..], Type::BYTEA),
                        (&since_ms, Type::INT8),
                    ],
                )
                .and_then(|row| row.try_get(0))
                .map_err(database(&target, "looking up an event id"))
        })
    }

    fn take_action_turn(
        &self,
        turn: &ActionTurn,
        recorded: bool,
    ) -> Result<TurnTaken, LedgerError> {
        self.turns.take(turn, recorded)
    }

    fn lock_tenant(&self, tenant: &TenantId) -> Result<Box<dyn LockedTenant>, LedgerError> {
        let (stored_tx, stored_rx) = mpsc::sync_channel::<Result<Stored, LedgerError>>(1);
        let (decision_tx, decision_rx) = mpsc::sync_channel::<Decision>(1);
        let (done_tx, done_rx) = mpsc::sync_channel::<LockedEnd>(1);
        let (name, target, oid) = (tenant.clone(), self.inner.target.clone(), self.oid);
        let (job, given_up) = self.waits.job(move |client| {
            let failed = |what: &'static str| database(&target, what);
            let mut tx = match client.transaction() {
                Ok(tx) => tx,
                Err(error) => {
                    let _ = stored_tx.send(Err(failed("locking a tenant")(error)));
                    return;
                }
            };
            let loaded = tx
                .query_typed(
                    "SELECT pg_advisory_xact_lock($1)",
                    &[(&tenant_key(oid, &name), Type::INT8)],
                )
                .and_then(|_| tx.query_typed_opt(LOAD, &[(&name.as_str(), Type::TEXT)]))
                .map_err(failed("locking a tenant"))
                .and_then(|row| stored(row.as_ref(), &name, &target));
            let ok = loaded.is_ok();
            if stored_tx.send(loaded).is_err() || !ok {
                return;
            }
            // Dropping the transaction without a decision rolls it back.
            let Ok(decision) = decision_rx.recv_timeout(LOCK_HOLD) else {
                return;
            };
            let mut txid = None;
            let judged = chained(&decision, &target).and_then(|hashes| {
                let pending = Pending {
                    local: 0,
                    decision,
                    hashes,
                    verdict: Arc::default(),
                };
                write_batch(
                    &mut tx,
                    oid,
                    &mut vec![pending],
                    None,
                    None,
                    false,
                    &mut txid,
                )
                .map_err(failed("committing a decision under its tenant's lock"))
            });
            let outcome = match judged {
                Err(error) => LockedEnd::Known(Err(error)),
                Ok((outcomes, written)) => match outcomes.first() {
                    Some(Outcome::Rejected(why)) => {
                        LockedEnd::Known(Err(LedgerError::Rejected(*why)))
                    }
                    _ if written.is_empty() => LockedEnd::Known(Ok(())),
                    _ => match tx.commit() {
                        Ok(()) => LockedEnd::Known(Ok(())),
                        Err(error) => {
                            let lost = super::writer::connection_lost(&error, client);
                            let error =
                                failed("committing a decision under its tenant's lock")(error);
                            if lost {
                                LockedEnd::Unknown {
                                    error,
                                    txid,
                                    written,
                                }
                            } else {
                                LockedEnd::Known(Err(error))
                            }
                        }
                    },
                },
            };
            let _ = done_tx.send(outcome);
        });
        // Given up on, the job is skipped, or finds no one to hand the
        // tenant to and rolls its transaction back.
        let stored = hand(self.locks.as_ref(), job)
            .and_then(|()| self.waits.wait(&stored_rx, &given_up))
            .map_err(|unanswered| {
                unanswered.error(&self.inner.target, "lock a tenant", self.waits.within)
            })??;
        Ok(Box::new(Locked {
            stored,
            decision: decision_tx,
            done: done_rx,
            target: self.inner.target.clone(),
            reads: self.jobs.clone(),
        }))
    }
}

/// How a decision under a tenant's lock ended, as its locker thread saw it.
enum LockedEnd {
    /// Written (`Ok`), or not (the error).
    Known(Result<(), LedgerError>),
    /// The connection was lost once `COMMIT` was sent: whether the
    /// decision was written is for a reader to find out.
    Unknown {
        error: LedgerError,
        txid: Option<i64>,
        written: Vec<Written>,
    },
}

/// Why a caller got no answer from a reader or locker thread.
#[derive(Debug)]
enum Unanswered {
    /// The job was dropped unanswered (its thread could not connect).
    NoThread,
    /// No thread takes jobs any more: the ledger is closing.
    Closed,
    /// No answer within the caller's wait (a stalled server).
    Late,
    /// [`MAX_WAITING`] callers wait already: turned away at once.
    Crowded,
}

impl From<mpsc::RecvTimeoutError> for Unanswered {
    fn from(error: mpsc::RecvTimeoutError) -> Unanswered {
        match error {
            mpsc::RecvTimeoutError::Timeout => Unanswered::Late,
            mpsc::RecvTimeoutError::Disconnected => Unanswered::NoThread,
        }
    }
}

impl Unanswered {
    /// The ledger error of a caller that waited `within` to `what` on `target`.
    fn error(self, target: &str, what: &str, within: Duration) -> LedgerError {
        LedgerError::Database {
            target: target.to_owned(),
            what: match self {
                Unanswered::NoThread | Unanswered::Closed => format!("cannot connect to {what}"),
                Unanswered::Late => {
                    format!("the database did not answer within {within:?} to {what}")
                }
                Unanswered::Crowded => format!(
                    "{MAX_WAITING} requests already wait for the database; not waiting to {what}"
                ),
            },
            source: None,
        }
    }
}

/// Most requests waiting for the database at once on one replica; more
/// are answered at once with an error (a 503). Each waits on a thread of
/// its own (the async worker's other tasks move to another), and tokio's
/// blocking threads, which carry both, are bounded too.
pub const MAX_WAITING: usize = 64;

thread_local! {
    /// Set by [`patiently`].
    static PATIENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `work` as a caller that waits for the database however long it
/// takes and is never turned away: for what must not be lost to a slow
/// database (an action's result, which no one sends again). A request
/// waits at most `PgOptions::answer_within`.
pub fn patiently<T>(work: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PATIENT.set(self.0);
        }
    }
    let _restore = Restore(PATIENT.replace(true));
    work()
}

/// How long [`patiently_again`] keeps trying while the database cannot be
/// reached: longer than a managed database's usual failover.
pub const PATIENT_RETRY_FOR: Duration = Duration::from_secs(120);

/// [`patiently`], and again while the database cannot be reached: a
/// connection lost to a restart or a failover fails the first query on
/// it, and a thread that cannot connect drops its query. `work` is run
/// again after a growing pause (up to 2 s) while it fails with a database
/// error, for up to [`PATIENT_RETRY_FOR`]. For work that may be done
/// twice: an action's result applied twice is recorded the second time as
/// a stale result that moves nothing.
pub fn patiently_again<T>(
    mut work: impl FnMut() -> Result<T, crate::registry::RegistryError>,
) -> Result<T, crate::registry::RegistryError> {
    let mut retry = Retry::within(PATIENT_RETRY_FOR);
    loop {
        let done = patiently(&mut work);
        let unreachable = matches!(
            done,
            Err(crate::registry::RegistryError::Ledger(
                LedgerError::Database { .. }
            ))
        );
        if !unreachable || !retry.again() {
            return done;
        }
    }
}

/// How long callers wait for reader and locker threads, and how many do.
#[derive(Debug)]
struct Waits {
    within: Duration,
    waiting: AtomicUsize,
    /// The statement that bounds the threads' sessions (set at connect).
    bounded: Arc<str>,
}

impl Waits {
    /// `body` as a job for a reader or locker thread, with the flag its
    /// caller's [`Waits::wait`] sets on giving up: a job not started by
    /// then is skipped. For a patient caller (see [`patiently`]) the
    /// session's `statement_timeout` is lifted while it runs, since that
    /// caller waits however long it takes.
    fn job(&self, body: impl FnOnce(&mut Client) + Send + 'static) -> (Job, Arc<AtomicBool>) {
        let given_up = Arc::new(AtomicBool::new(false));
        let skip = Arc::clone(&given_up);
        let bounded = PATIENT.get().then(|| Arc::clone(&self.bounded));
        let job: Job = Box::new(move |client| {
            if skip.load(Ordering::Acquire) {
                return;
            }
            match bounded {
                None => body(client),
                Some(bounded) => {
                    let lifted = client.batch_execute(UNBOUNDED).is_ok();
                    body(client);
                    if lifted {
                        let _ = client.batch_execute(&bounded);
                    }
                }
            }
        });
        (job, given_up)
    }

    /// Waits for `answer` (see [`Waits`] and [`patiently`]); sets
    /// `given_up` when it stops waiting without one, so a job not yet
    /// started is skipped.
    fn wait<T>(&self, answer: &mpsc::Receiver<T>, given_up: &AtomicBool) -> Result<T, Unanswered> {
        if PATIENT.get() {
            return wait_out(answer);
        }
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _counted = Counted(&self.waiting);
        let answered = if before >= MAX_WAITING {
            Err(Unanswered::Crowded)
        } else {
            off_runtime(|| answer.recv_timeout(self.within)).map_err(Unanswered::from)
        };
        if answered.is_err() {
            given_up.store(true, Ordering::Release);
        }
        answered
    }
}

/// Hands `job` to the threads taking from `queue` (`None`: closed).
fn hand(queue: Option<&mpsc::Sender<Job>>, job: Job) -> Result<(), Unanswered> {
    match queue {
        Some(queue) if queue.send(job).is_ok() => Ok(()),
        _ => Err(Unanswered::Closed),
    }
}

/// Waits for `answer` however long it takes (off the async workers).
fn wait_out<T>(answer: &mpsc::Receiver<T>) -> Result<T, Unanswered> {
    off_runtime(|| answer.recv()).map_err(|_| Unanswered::NoThread)
}

/// Runs `query` on a reader thread's connection (`jobs`) and waits for its
/// answer: as `waits` bounds it, or however long it takes (`None`).
fn on_reader<T: Send + 'static>(
    jobs: Option<&mpsc::Sender<Job>>,
    waits: Option<&Waits>,
    query: impl FnOnce(&mut Client) -> T + Send + 'static,
) -> Result<T, Unanswered> {
    let (tx, rx) = mpsc::sync_channel(1);
    let body = move |client: &mut Client| {
        let _ = tx.send(query(client));
    };
    match waits {
        Some(waits) => {
            let (job, given_up) = waits.job(body);
            hand(jobs, job)?;
            waits.wait(&rx, &given_up)
        }
        None => {
            hand(jobs, Box::new(body))?;
            wait_out(&rx)
        }
    }
}

/// Whether a locked decision whose `COMMIT` answer was lost is stored:
/// asked of the readers until one answers, however long that takes up to
/// [`super::RESUME_FOR`] of failures. A connection lost under the locker
/// was often lost under the readers too (a restart, a failover): a reader
/// fails its next query on the dead connection and connects again for
/// the one after, so the question is asked again, with a growing pause.
/// `None`: no answer (the caller is answered with the original error).
fn settle(
    reads: Option<&mpsc::Sender<Job>>,
    txid: Option<i64>,
    written: Vec<Written>,
) -> Option<bool> {
    let written = Arc::new(written);
    let mut retry = Retry::within(super::RESUME_FOR);
    loop {
        let asked = Arc::clone(&written);
        let answer = on_reader(reads, None, move |client| {
            ended(client, txid, Instant::now()).and_then(|()| any_stored(client, &asked))
        });
        let why = match answer {
            Ok(Ok(stored)) => return Some(stored),
            // The ledger is closing: no reader will answer.
            Err(Unanswered::Closed) => return None,
            Ok(Err(why)) => why,
            Err(_) => "no reader could connect".to_owned(),
        };
        if !retry.again() {
            tracing::error!(error = %why, "the outcome of a locked decision's commit is unknown");
            return None;
        }
    }
}

/// A tenant held by a locker thread's open transaction.
struct Locked {
    stored: Stored,
    decision: mpsc::SyncSender<Decision>,
    done: mpsc::Receiver<LockedEnd>,
    target: String,
    /// The reader threads' queue, to settle a commit whose answer was lost.
    reads: Option<mpsc::Sender<Job>>,
}

impl LockedTenant for Locked {
    fn stored(&self) -> &Stored {
        &self.stored
    }

    fn commit(self: Box<Self>, decision: Decision) -> Result<(), LedgerError> {
        let lost = || LedgerError::Database {
            target: self.target.clone(),
            what: "the tenant's lock was lost before its decision committed".to_owned(),
            source: None,
        };
        self.decision.send(decision).map_err(|_| lost())?;
        // Not bounded: the decision may be committing; the locker's
        // statements are bounded on the server (`statement_timeout`).
        match off_runtime(|| self.done.recv()).map_err(|_| lost())? {
            LockedEnd::Known(outcome) => outcome,
            LockedEnd::Unknown {
                error,
                txid,
                written,
            } => {
                // Answered as the server has it: a lost answer to a
                // `COMMIT` that went through is a success (refused, the
                // caller would take the input again on top of it).
                match settle(self.reads.as_ref(), txid, written) {
                    Some(true) => Ok(()),
                    Some(false) | None => Err(error),
                }
            }
        }
    }
}

impl Ledger for SharedPgLedger {
    fn tree(&self) -> Option<&dyn crate::ledger::LogTree> {
        Some(&self.tree)
    }

    fn stored_bytes(&self) -> Option<Result<u64, LedgerError>> {
        let target = self.inner.target.clone();
        Some(self.with_reader(move |client| {
            let row = client
                .query_one(
                    "SELECT coalesce(sum(pg_total_relation_size(oid)), 0)::bigint FROM pg_class
                     WHERE relnamespace = current_schema()::regnamespace
                       AND relkind = 'r' AND relname LIKE 'ggen\\_%'",
                    &[],
                )
                .map_err(database(&target, "sizing the ledger's tables"))?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        }))
    }

    /// Refused: receipts reach a shared ledger as whole decisions, with
    /// the tenant's state ([`SharedLedger::append_decision`]).
    fn append(&self, _entry: Entry) -> Result<Appended, LedgerError> {
        Err(LedgerError::Database {
            target: self.inner.target.clone(),
            what: "a shared ledger takes whole decisions, not single receipts".to_owned(),
            source: None,
        })
    }

    fn head(&self, tenant: &TenantId) -> Head {
        self.load(tenant).map_or(Head::EMPTY, |stored| stored.head)
    }

    /// The tenant's committed receipts (an acknowledged decision is
    /// committed; one on its way is not waited for, as a locked decision
    /// catching up must not wait for this replica's batch on its tenant).
    fn read(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Record>, LedgerError> {
        let (tenant, target) = (tenant.clone(), self.inner.target.clone());
        self.with_reader(move |client| super::read_tenant(client, &target, &tenant, after, limit))
    }

    /// Nothing to mark: a shared ledger stores no checkpoint.
    fn mark(&self) -> Result<Mark, LedgerError> {
        Ok(Mark::new(0, 0))
    }

    /// Nothing to store: every tenant's state is committed with its receipts.
    fn checkpoint(&self, _mark: Mark, _blob: &[u8]) -> Result<(), LedgerError> {
        Ok(())
    }

    /// Nothing to recover: tenants load when first needed.
    fn recover(
        &self,
        _visit: &mut dyn FnMut(Recovered<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        Ok(())
    }

    fn scan(
        &self,
        visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        self.flush()?;
        self.reads.scan(visit)
    }

    fn verify_with(&self, options: &VerifyOptions<'_>) -> Result<VerifyReport, LedgerError> {
        self.flush()?;
        self.reads.verify_with(options)
    }

    fn flushed(&self) -> Ticket {
        let queued = self.inner.lock().queued;
        Ticket::pending(queued, Arc::clone(&self.inner.sync))
    }

    fn shared(&self) -> Option<&dyn SharedLedger> {
        Some(self)
    }
}

impl Drop for SharedPgLedger {
    fn drop(&mut self) {
        self.inner.lock().closing = true;
        self.inner.work.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.jobs = None;
        self.locks = None;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// The writer thread's connection and what it remembers.
struct Writer {
    inner: Arc<Inner>,
    url: String,
    /// The schema's oid (tenant lock keys).
    oid: i64,
    client: Client,
    /// The longest dedupe window decisions named (for pruning ids).
    window_ms: i64,
    /// The transaction id of the last commit attempted, once known.
    txid: Option<i64>,
    /// What the last transaction decided and wrote, kept from the moment its
    /// `COMMIT` is sent until the answer comes back: if the connection is
    /// lost in between, [`Writer::resume`] reports these outcomes when the
    /// decisions it wrote are stored.
    unconfirmed: Option<(Outcomes, Vec<Written>)>,
    /// Decisions in the last batch taken.
    last_batch: usize,
    /// Whether the last batch had decisions another replica overtook.
    contended: bool,
    pruned: Instant,
    /// Positions per partition the writer makes.
    partition_receipts: u64,
    /// The first position without a partition, as last known.
    partition_end: u64,
    /// When the writer last made sure of a partition ahead.
    partitioned: Instant,
}

/// `text` as an SQL string literal (quotes doubled).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The bytes `text` spells in hex (`None`: it is not hex). Decoded into a
/// buffer of the right size: `hex::decode` collects byte by byte through
/// an iterator of results, several times slower, and every overtaken
/// decision reads its tenant's stored state this way (over 1 KiB of hex).
fn unhex(text: &str) -> Option<Vec<u8>> {
    let mut bytes = vec![0; text.len() / 2];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

/// Whether the server aborted the transaction in a way that wrote nothing
/// and may pass on a second try.
fn retryable(error: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    error.code().is_some_and(|code| {
        [
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::LOCK_NOT_AVAILABLE,
        ]
        .contains(code)
    })
}

/// A tenant's head row as a batch leaves it.
struct HeadRow<'a> {
    seq: i64,
    position: i64,
    hash: &'a [u8],
    state: &'a [u8],
    due: Option<i64>,
}

/// What became of one decision of a batch.
#[derive(Clone)]
enum Outcome {
    /// Written as decided.
    Committed,
    /// Nothing of it written.
    Rejected(Rejection),
    /// Taken again on the latest state; that decision was written (if it
    /// wrote anything), and this is what its taker reported.
    Retaken(Retaken),
}

/// What one batch decided for each of its decisions.
type Outcomes = Vec<Outcome>;

/// A decision a transaction wrote, by its last receipt: tenant, seq, hash.
type Written = (TenantId, i64, Hash);

/// Where a writer's transaction takes decisions that joined it late.
struct Joining<'a> {
    queue: &'a Inner,
    /// Most receipts in one transaction.
    max_batch: usize,
    /// The schema's turn lock, to wait for first when replicas contend:
    /// the queue fills while another replica's transaction runs, and all of
    /// it joins (see [`turn_key`]).
    turn: Option<i64>,
}

/// The key of the advisory lock a contended writer waits on before it
/// takes its batch: replicas contending for the same tenants take turns
/// with whole queues instead of half-filled batches. Only an
/// optimization: correctness rests on the tenant locks, taken after it.
fn turn_key(oid: i64) -> i64 {
    // No tenant id starts with a NUL.
    lock_key(oid, b"\0ggen-turn")
}

/// A decision a batch writes: one as queued, or one taken again.
enum Choice {
    Original(usize),
    Retaken(usize),
}

impl Writer {
    fn run(mut self, max_batch: usize) {
        loop {
            let mut batch = {
                let mut state = self.inner.lock();
                while state.pending.is_empty() && !state.closing {
                    let (next, _) = self
                        .inner
                        .work
                        .wait_timeout(state, PRUNE_EVERY)
                        .unwrap_or_else(PoisonError::into_inner);
                    state = next;
                    if state.pending.is_empty() && self.pruned.elapsed() >= PRUNE_EVERY {
                        break;
                    }
                }
                if state.pending.is_empty() && state.closing {
                    drop(state);
                    let _ = self.client.batch_execute("SELECT pg_advisory_unlock_all()");
                    return;
                }
                // When another replica contends for the same tenants (the
                // last batch had decisions it overtook), let the batch fill
                // while decisions keep arriving (the answers of the last
                // commit bring the next requests a moment later): the
                // replicas' transactions serialize on those tenants, so
                // fewer, larger ones carry more. At most GATHER_FOR, and
                // only while it grows; a replica alone never waits.
                if self.contended && self.last_batch >= GATHER_FROM {
                    let started = Instant::now();
                    while started.elapsed() < GATHER_FOR && !state.closing {
                        let before = state.pending.len();
                        let (next, _) = self
                            .inner
                            .work
                            .wait_timeout(state, GATHER_STEP)
                            .unwrap_or_else(PoisonError::into_inner);
                        state = next;
                        if state.pending.len() == before {
                            break;
                        }
                    }
                }
                let mut batch = take_queued(&mut state.pending, 0, max_batch, |_| true);
                if batch.is_empty() && !state.pending.is_empty() {
                    // One decision larger than a batch goes alone.
                    batch.push(state.pending.remove(0));
                }
                batch
            };
            if self.pruned.elapsed() >= PRUNE_EVERY {
                self.prune();
            }
            if self.partitioned.elapsed() >= PARTITION_EVERY {
                self.partitioned = Instant::now();
                if let Err(error) = self.partition_ahead(0) {
                    tracing::warn!(target = %self.inner.target, error = %crate::report::error_chain(&error), "making the receipts' next partition failed: trying again");
                }
            }
            self.last_batch = batch.len();
            if batch.is_empty() {
                continue;
            }
            let outcome = match self.commit(&mut batch, max_batch) {
                Err(error) if super::writer::connection_lost(&error, &self.client) => {
                    tracing::warn!(target = %self.inner.target, error = %crate::report::error_chain(&error), "ledger connection lost: connecting again");
                    self.resume(&batch)
                }
                other => other.map_err(|error| crate::report::error_chain(&error)),
            };
            for p in &batch {
                self.window_ms = self.window_ms.max(p.decision.window_ms);
            }
            let last = batch.last().map_or(0, |p| p.local);
            match outcome {
                Ok(outcomes) => {
                    self.contended = outcomes.iter().any(|o| {
                        matches!(
                            o,
                            Outcome::Retaken(_) | Outcome::Rejected(Rejection::Overtaken)
                        )
                    });
                    for (p, outcome) in batch.iter().zip(outcomes) {
                        match outcome {
                            Outcome::Committed => {}
                            Outcome::Rejected(why) => p.verdict.reject(why),
                            Outcome::Retaken(report) => p.verdict.retake(report),
                        }
                    }
                    self.inner.sync.publish(last, last);
                }
                Err(why) => return fail(&self.inner, &why),
            }
        }
    }

    /// Commits what of `batch` still extends the committed chains (see the
    /// module docs); returns each decision's refusal, if it was refused.
    /// [`Writer::commit`] of exactly `batch` (no decision joins it).
    fn commit_fixed(&mut self, batch: &mut Vec<Pending>) -> Result<Outcomes, postgres::Error> {
        let len = batch.len();
        let receipts = receipts_of(batch);
        let outcomes = self.commit(batch, receipts)?;
        debug_assert_eq!(batch.len(), len);
        Ok(outcomes)
    }

    /// A transaction the server aborted for a deadlock, a serialization
    /// failure or a lock it could not take wrote nothing: it is tried again.
    fn commit(
        &mut self,
        batch: &mut Vec<Pending>,
        max_batch: usize,
    ) -> Result<Outcomes, postgres::Error> {
        let mut tries = 1;
        loop {
            match self.commit_once(batch, max_batch) {
                Err(error) if tries < BATCH_TRIES && partitions::is_past_partitions(&error) => {
                    // Written past the partitions by replicas faster than
                    // this one looked ahead: make them, and try again.
                    self.partition_ahead(receipts_of(batch) * 2)?;
                    tries += 1;
                }
                Err(error) if tries < BATCH_TRIES && retryable(&error) => {
                    tracing::warn!(target = %self.inner.target, error = %crate::report::error_chain(&error), "ledger commit aborted by the server: trying again");
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Makes sure a partition's worth of positions (and `more`) past the
    /// log's end has partitions.
    fn partition_ahead(&mut self, more: usize) -> Result<(), postgres::Error> {
        let records: i64 = self
            .client
            .query_one("SELECT records FROM ggen_log", &[])?
            .try_get(0)?;
        let through = u64::try_from(records).unwrap_or(0) + self.partition_receipts + more as u64;
        if through >= self.partition_end {
            self.partition_end =
                partitions::ensure(&mut self.client, through, self.partition_receipts)?;
        }
        Ok(())
    }

    fn commit_once(
        &mut self,
        batch: &mut Vec<Pending>,
        max_batch: usize,
    ) -> Result<Outcomes, postgres::Error> {
        let mut txid = None;
        let taker = self
            .inner
            .taker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(std::sync::Weak::upgrade);
        let client = &mut self.client;
        let unconfirmed = &mut self.unconfirmed;
        *unconfirmed = None;
        let joining = Joining {
            queue: &self.inner,
            max_batch,
            turn: self.contended.then(|| turn_key(self.oid)),
        };
        let outcome = write_batch(
            client,
            self.oid,
            batch,
            Some(&joining),
            taker.as_deref(),
            true,
            &mut txid,
        )
        .and_then(|(outcomes, written)| {
            if written.is_empty() {
                client.batch_execute("ROLLBACK")?;
                return Ok(outcomes);
            }
            *unconfirmed = Some((outcomes.clone(), written));
            client.batch_execute("COMMIT")?;
            *unconfirmed = None;
            Ok(outcomes)
        });
        if outcome.is_err() && !client.is_closed() {
            // Whatever failed, the transaction must not stay open.
            let _ = client.batch_execute("ROLLBACK");
        }
        // Kept for `resume`: how an interrupted commit ended.
        self.txid = txid;
        outcome
    }

    /// After the connection was lost during `batch`'s commit: connects
    /// again (backing off, for up to [`super::RESUME_FOR`]) and finds out
    /// whether the transaction committed: it did if its `COMMIT` was sent
    /// and a decision it wrote (as queued, or as taken again) is stored with
    /// its last receipt's hash, and then the batch's outcomes are the ones
    /// it decided; otherwise it did not, and the batch is judged and
    /// committed again.
    fn resume(&mut self, batch: &[Pending]) -> Result<Outcomes, String> {
        let target = self.inner.target.clone();
        let started = Instant::now();
        let mut client = super::reconnect(&self.url, &target, super::LockMode::Shared)?;
        let query = super::failed;
        writer_session(&mut client).map_err(query("setting up the writer's session"))?;
        // The interrupted transaction may still be running in its old
        // session (holding its tenants' locks): wait until it ended.
        ended(&mut client, self.txid, started)?;
        // If its `COMMIT` was sent, the transaction committed exactly when
        // the decisions it wrote are stored (all of them or none), and then
        // its outcomes are the ones it decided, decisions taken again
        // included. If the `COMMIT` was not sent, nothing of it is stored.
        if let Some((outcomes, written)) = self.unconfirmed.take()
            && any_stored(&mut client, &written)?
        {
            self.client = client;
            tracing::info!(target = %target, "ledger connection back; the interrupted commit had completed");
            return Ok(outcomes);
        }
        self.client = client;
        let mut again = batch.to_vec();
        let outcomes = self
            .commit_fixed(&mut again)
            .map_err(query("committing again"))?;
        tracing::info!(target = %target, "ledger connection back; the interrupted commit was made again");
        Ok(outcomes)
    }

    /// Removes event ids older than the longest window decisions named.
    fn prune(&mut self) {
        self.pruned = Instant::now();
        if self.window_ms == 0 {
            return;
        }
        let now = crate::clock::Timestamp::now().as_millis();
        let cutoff = now.saturating_sub(self.window_ms);
        if let Err(error) = self.client.execute(
            "DELETE FROM ggen_event_ids WHERE ctid = ANY (ARRAY(
                 SELECT ctid FROM ggen_event_ids WHERE at < $1 LIMIT $2))",
            &[&cutoff, &PRUNE_LIMIT],
        ) {
            tracing::warn!(target = %self.inner.target, error = %crate::report::error_chain(&error), "removing expired event ids failed");
        }
    }
}

/// Whether the ledger has room for one more tenant's chain under `max`;
/// counts it in `tenants` if so. The first call of a transaction takes the
/// receipt counter's row lock, held to its commit: every statement that
/// inserts heads (and so raises `ggen_tenant_count`, by its trigger) holds
/// that lock until it commits, so the count read after it stays exact
/// while this transaction runs, whichever replicas start tenants.
fn admit(
    client: &mut impl GenericClient,
    tenants: &mut Option<i64>,
    max: u32,
) -> Result<bool, postgres::Error> {
    let count = match tenants {
        Some(count) => count,
        None => {
            // Two statements: the second's snapshot is taken once the lock
            // is held, after the commits it waited for. No count row (it
            // was deleted) admits no one.
            let mut count = i64::MAX;
            for message in client.simple_query(
                "SELECT records FROM ggen_log FOR UPDATE; SELECT tenants FROM ggen_tenant_count",
            )? {
                if let postgres::SimpleQueryMessage::Row(row) = message
                    && row.columns()[0].name() == "tenants"
                {
                    count = row.get(0).and_then(|n| n.parse().ok()).unwrap_or(i64::MAX);
                }
            }
            tenants.insert(count)
        }
    };
    if *count < i64::from(max) {
        *count += 1;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Waits until the transaction `txid` (of a session that was lost) has
/// ended as a new snapshot sees it, for up to twice [`super::RESUME_FOR`]
/// from `started`. `txid_status` alone is not enough: a `COMMIT` waiting
/// for a synchronous standby is already `committed` in the commit log while
/// its rows stay invisible and its locks held until the standby answers.
fn ended(client: &mut Client, txid: Option<i64>, started: Instant) -> Result<(), String> {
    let Some(txid) = txid else { return Ok(()) };
    loop {
        let (status, visible): (Option<String>, bool) = client
            .query_one(
                "SELECT txid_status($1), txid_visible_in_snapshot($1, txid_current_snapshot())",
                &[&txid],
            )
            .and_then(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .map_err(super::failed("reading how the interrupted commit ended"))?;
        if status.as_deref() != Some("in progress") && visible {
            return Ok(());
        }
        if started.elapsed() >= super::RESUME_FOR * 2 {
            return Err("the interrupted commit is still in progress".to_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether any of the `written` decisions is stored, with its last
/// receipt's hash (a transaction that ended wrote all of them or none).
fn any_stored(client: &mut Client, written: &[Written]) -> Result<bool, String> {
    let tenants: Vec<&str> = written.iter().map(|(t, _, _)| t.as_str()).collect();
    let seqs: Vec<i64> = written.iter().map(|(_, seq, _)| *seq).collect();
    let hashes: Vec<&[u8]> = written.iter().map(|(_, _, hash)| &hash[..]).collect();
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM ggen_receipts r
                 JOIN unnest($1::text[], $2::bigint[], $3::bytea[]) AS c(tenant, seq, hash)
                   ON r.tenant = c.tenant AND r.seq = c.seq AND r.hash = c.hash)",
            &[&tenants, &seqs, &hashes],
        )
        .and_then(|row| row.try_get(0))
        .map_err(super::failed("reading what the interrupted commit wrote"))
}

/// Stops the ledger: every pending and later ticket gets the error.
fn fail(inner: &Inner, why: &dyn std::fmt::Display) {
    let failure = super::stopped(&inner.target, why);
    inner.lock().failed = Some(failure.clone());
    inner.sync.fail(failure.0, failure.1);
}

/// Judges `batch` in a transaction on `client` and writes what of it still
/// extends the committed chains (see the module docs): each decision's
/// refusal, if it was refused, and the decisions it wrote, by their last
/// receipts (the caller commits them, or rolls back when there are none).
/// `begin` opens the transaction (else the caller has); `txid` learns its
/// id as soon as it is known.
///
/// Four round trips for a batch of any size, none of them a prepare
/// (statements are sent typed): open and lock, read the heads and the ids
/// already recorded, write, and the caller's commit.
fn write_batch(
    client: &mut impl GenericClient,
    oid: i64,
    batch: &mut Vec<Pending>,
    joining: Option<&Joining<'_>>,
    taker: Option<&dyn Redecide>,
    begin: bool,
    txid: &mut Option<i64>,
) -> Result<(Outcomes, Vec<Written>), postgres::Error> {
    let mut begin = begin;
    if let Some(joining) = joining
        && let Some(turn) = joining.turn
    {
        // Wait for the other replicas' transactions, then take everything
        // that queued meanwhile (a prefix: tickets settle in queue order).
        client.simple_query(&format!(
            "{}SELECT pg_advisory_xact_lock({turn})",
            if begin { "BEGIN; " } else { "" }
        ))?;
        begin = false;
        let taken = receipts_of(batch);
        let mut state = joining.queue.lock();
        batch.extend(take_queued(
            &mut state.pending,
            taken,
            joining.max_batch,
            |_| true,
        ));
    }
    let tenants: BTreeMap<i64, &TenantId> = batch
        .iter()
        .map(|p| (tenant_key(oid, &p.decision.tenant), &p.decision.tenant))
        .collect();
    // One round trip: open, lock (keys sorted in Rust; unnest keeps the
    // array's order), then read the heads and the event ids already
    // recorded inside their decision's window. Each statement of a simple
    // query takes its own snapshot, so the reads see every commit the
    // locks waited for. Literals only: numbers, tenant ids (letters,
    // digits, `.`, `_`, `-`, quoted anyway) and hex.
    let keys = tenants
        .keys()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut sql = String::with_capacity(256 + 40 * tenants.len());
    if begin {
        sql.push_str("BEGIN; ");
    }
    // Each tenant's head, and its stored state when the head is not where
    // the batch's first decision for it expects (an overtaken decision is
    // taken again on it, so no second round trip is needed).
    let mut expected = BTreeMap::new();
    for p in batch.iter() {
        let first = &p.decision.entries[0];
        expected
            .entry(p.decision.tenant.clone())
            .or_insert((first.seq.wrapping_sub(1), first.prev));
    }
    let expected_rows = expected
        .iter()
        .map(|(tenant, (seq, prev))| {
            format!(
                "({}, {}, '\\x{}'::bytea)",
                literal(tenant.as_str()),
                position(*seq),
                hex::encode(prev)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let with_state = if taker.is_some() { "" } else { "AND false" };
    sql.push_str(&format!(
        "SELECT txid_current(), (SELECT count(pg_advisory_xact_lock(k)) FROM unnest(ARRAY[{keys}]::bigint[]) AS k);
         SELECT 'h', h.tenant, h.seq::text, encode(h.hash, 'hex'), s.stale::text,
                CASE WHEN s.stale {with_state} THEN h.state_seq::text END,
                CASE WHEN s.stale {with_state} THEN encode(h.state, 'hex') END
         FROM ggen_heads h
         JOIN (VALUES {expected_rows}) AS e(tenant, seq, hash) ON h.tenant = e.tenant
         CROSS JOIN LATERAL (SELECT (h.seq, h.hash) IS DISTINCT FROM (e.seq, e.hash) AS stale) s"
    ));
    let ids: Vec<String> = ids_of(batch)
        .map(|(tenant, key, cutoff)| {
            format!(
                "({}, '\\x{}'::bytea, {cutoff})",
                literal(tenant),
                hex::encode(key)
            )
        })
        .collect();
    if !ids.is_empty() {
        sql.push_str(&format!(
            " UNION ALL
             SELECT 'i', e.tenant, NULL, encode(e.key, 'hex'), NULL, NULL, NULL FROM ggen_event_ids e
             JOIN (VALUES {}) AS c(tenant, key, cutoff) ON e.tenant = c.tenant AND e.key = c.key
             WHERE e.at > c.cutoff",
            ids.join(",")
        ));
    }
    let mut heads: HashMap<String, Head> = HashMap::new();
    let mut recorded: HashSet<(String, Vec<u8>)> = HashSet::new();
    // Each tenant's state where its chain now ends in this batch, once
    // known (`None` inside: no stored state).
    let mut states: HashMap<String, Option<(u64, Vec<u8>)>> = HashMap::new();
    for message in client.simple_query(&sql)? {
        let postgres::SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        match row.get(0) {
            Some("h") => {
                let (Some(tenant), Some(seq), Some(hash)) = (row.get(1), row.get(2), row.get(3))
                else {
                    continue;
                };
                let mut decoded = GENESIS;
                let hash = match hex::decode_to_slice(hash, &mut decoded) {
                    Ok(()) => decoded,
                    Err(_) => GENESIS,
                };
                heads.insert(
                    tenant.to_owned(),
                    Head {
                        seq: seq.parse().unwrap_or(0),
                        hash,
                    },
                );
                if taker.is_some() && row.get(4) == Some("true") {
                    let state = match (row.get(5), row.get(6)) {
                        (Some(at), Some(blob)) => at.parse().ok().zip(unhex(blob)),
                        _ => None,
                    };
                    states.insert(tenant.to_owned(), state);
                }
            }
            Some("i") => {
                if let (Some(tenant), Some(key)) = (row.get(1), row.get(3).and_then(unhex)) {
                    recorded.insert((tenant.to_owned(), key));
                }
            }
            // The first statement's row: the transaction's id.
            _ => *txid = row.get(0).and_then(|id| id.parse().ok()),
        }
    }
    // Judge each decision in order against the heads as they advance; one
    // another writer overtook is taken again on the tenant as committed
    // (under its lock) when the batch's owner can (`taker`).
    let mut outcomes: Outcomes = Vec::with_capacity(batch.len());
    let mut choices: Vec<Choice> = Vec::new();
    let mut retaken: Vec<(Decision, Vec<Hash>)> = Vec::new();
    // Decisions queued meanwhile (while the locks were awaited, say) on
    // tenants this transaction already holds join it, as a prefix of the
    // queue (tickets settle in queue order): under contention a batch
    // grows instead of the transactions multiplying.
    if let Some(joining) = joining {
        let start = batch.len();
        let joined = {
            let mut state = joining.queue.lock();
            take_queued(
                &mut state.pending,
                receipts_of(batch),
                joining.max_batch,
                |p| expected.contains_key(&p.decision.tenant),
            )
        };
        batch.extend(joined);
        // Their event ids, checked like the others'.
        let (mut id_tenants, mut id_keys, mut id_cutoffs) = (vec![], vec![], vec![]);
        for (tenant, key, cutoff) in ids_of(&batch[start..]) {
            id_tenants.push(tenant);
            id_keys.push(&key[..]);
            id_cutoffs.push(cutoff);
        }
        if !id_keys.is_empty() {
            for row in client.query_typed(
                "SELECT e.tenant, e.key FROM ggen_event_ids e
                 JOIN unnest($1::text[], $2::bytea[], $3::bigint[]) AS c(tenant, key, cutoff)
                   ON e.tenant = c.tenant AND e.key = c.key
                 WHERE e.at > c.cutoff",
                &[
                    (&id_tenants, Type::TEXT_ARRAY),
                    (&id_keys, Type::BYTEA_ARRAY),
                    (&id_cutoffs, Type::INT8_ARRAY),
                ],
            )? {
                recorded.insert((row.try_get(0)?, row.try_get(1)?));
            }
        }
    }
    // A tenant expected to exist that has no head row has no state.
    if taker.is_some() {
        for tenant in expected.keys() {
            if !heads.contains_key(tenant.as_str()) {
                states.insert(tenant.to_string(), None);
            }
        }
    }
    // How many tenants have a chain, counting those this batch may start:
    // read when the batch first starts one.
    let mut tenants: Option<i64> = None;
    // The tenants whose chains this batch starts (see `WRITING_SESSION`).
    let mut started = 0i64;
    for (index, p) in batch.iter().enumerate() {
        let d = &p.decision;
        let name = d.tenant.as_str();
        let head = heads.get(name).copied().unwrap_or(Head::EMPTY);
        // A decision that starts the tenant's chain needs room under
        // `max_tenants` (checked once it would otherwise be written).
        let mut room = |client: &mut _| -> Result<bool, postgres::Error> {
            Ok(head.seq > 0 || admit(client, &mut tenants, d.max_tenants)?)
        };
        let first = &d.entries[0];
        let duplicate = |d: &Decision| {
            d.ids
                .iter()
                .any(|(key, _)| recorded.contains(&(d.tenant.to_string(), key.to_vec())))
        };
        let overtaken = first.seq != head.seq + 1 || first.prev != head.hash;
        let mut chosen: Option<(&Decision, &[Hash])> = None;
        let outcome = match (overtaken, taker, &d.redo) {
            (false, ..) if duplicate(d) => Outcome::Rejected(Rejection::Duplicate),
            (false, ..) if !room(client)? => Outcome::Rejected(Rejection::TenantLimit),
            // Before the registry takes it again (and caches the result).
            (true, Some(_), Some(_)) if !room(client)? => Outcome::Rejected(Rejection::TenantLimit),
            (false, ..) => {
                chosen = Some((d, &p.hashes[..]));
                choices.push(Choice::Original(index));
                Outcome::Committed
            }
            (true, Some(taker), Some(redo)) => {
                if !states.contains_key(name) {
                    let row = client.query_typed_opt(
                        "SELECT state_seq, state FROM ggen_heads WHERE tenant = $1",
                        &[(&name, Type::TEXT)],
                    )?;
                    let state = match row {
                        Some(row) => match (
                            row.try_get::<_, Option<i64>>(0)?,
                            row.try_get::<_, Option<Vec<u8>>>(1)?,
                        ) {
                            (Some(at), Some(blob)) => u64::try_from(at).ok().map(|at| (at, blob)),
                            _ => None,
                        },
                        None => None,
                    };
                    states.insert(name.to_owned(), state);
                }
                let stored = Stored {
                    head,
                    state: states.get(name).cloned().flatten(),
                };
                match taker.redecide(&d.tenant, stored, redo) {
                    Ok((Some(decision), report)) => {
                        let extends = decision.entries.first().is_some_and(|e| {
                            e.seq == head.seq + 1 && e.prev == head.hash && e.tenant == d.tenant
                        });
                        match chained(&decision, "") {
                            Ok(_) if extends && duplicate(&decision) => {
                                Outcome::Rejected(Rejection::Duplicate)
                            }
                            Ok(hashes) if extends => {
                                retaken.push((decision, hashes));
                                choices.push(Choice::Retaken(retaken.len() - 1));
                                let (decision, hashes) = &retaken[retaken.len() - 1];
                                chosen = Some((decision, &hashes[..]));
                                Outcome::Retaken(report)
                            }
                            _ => Outcome::Rejected(Rejection::Overtaken),
                        }
                    }
                    // Decided again, nothing to write (a duplicate).
                    Ok((None, report)) => Outcome::Retaken(report),
                    Err(why) => {
                        tracing::warn!(tenant = %d.tenant, error = %why, "taking an overtaken decision again failed");
                        Outcome::Rejected(Rejection::Overtaken)
                    }
                }
            }
            (true, ..) => Outcome::Rejected(Rejection::Overtaken),
        };
        if let Some((decision, hashes)) = chosen {
            if head.seq == 0 {
                started += 1;
            }
            let last = decision.entries.len() - 1;
            heads.insert(
                name.to_owned(),
                Head {
                    seq: decision.entries[last].seq,
                    hash: hashes[last],
                },
            );
            states.insert(
                name.to_owned(),
                Some((decision.entries[last].seq, decision.state.clone())),
            );
            for (key, _) in &decision.ids {
                recorded.insert((name.to_owned(), key.to_vec()));
            }
        }
        outcomes.push(outcome);
    }
    let accepted: Vec<(&Decision, &[Hash])> = choices
        .iter()
        .map(|choice| match *choice {
            Choice::Original(i) => (&batch[i].decision, &batch[i].hashes[..]),
            Choice::Retaken(j) => (&retaken[j].0, &retaken[j].1[..]),
        })
        .collect();
    if accepted.is_empty() {
        return Ok((outcomes, Vec::new()));
    }
    let count: usize = accepted.iter().map(|(d, _)| d.entries.len()).sum();
    // Positions are the receipt counter's value before this batch plus
    // these offsets, 1…count, in batch order.
    let mut offset = 0i64;
    let mut r_offset = Vec::with_capacity(count);
    let mut r_tenant = Vec::with_capacity(count);
    let mut r_seq = Vec::with_capacity(count);
    let mut r_hash: Vec<&[u8]> = Vec::with_capacity(count);
    let mut r_bytes: Vec<&[u8]> = Vec::with_capacity(count);
    // The last decision of each tenant sets its head row.
    let mut last: BTreeMap<&str, HeadRow<'_>> = BTreeMap::new();
    let (mut i_tenant, mut i_key, mut i_at) = (vec![], vec![], vec![]);
    for &(d, hashes) in &accepted {
        for (entry, hash) in d.entries.iter().zip(hashes) {
            offset += 1;
            r_offset.push(offset);
            r_tenant.push(d.tenant.as_str());
            r_seq.push(position(entry.seq));
            r_hash.push(&hash[..]);
            r_bytes.push(&entry.bytes[..]);
        }
        let seq = position(d.entries[d.entries.len() - 1].seq);
        let hash = &hashes[hashes.len() - 1][..];
        last.insert(
            d.tenant.as_str(),
            HeadRow {
                seq,
                position: offset,
                hash,
                state: &d.state,
                due: d.due,
            },
        );
        for (key, at) in &d.ids {
            i_tenant.push(d.tenant.as_str());
            i_key.push(&key[..]);
            i_at.push(*at);
        }
    }
    let h_tenant: Vec<&str> = last.keys().copied().collect();
    let h_seq: Vec<i64> = last.values().map(|h| h.seq).collect();
    let h_offset: Vec<i64> = last.values().map(|h| h.position).collect();
    let h_hash: Vec<&[u8]> = last.values().map(|h| h.hash).collect();
    let h_state: Vec<&[u8]> = last.values().map(|h| h.state).collect();
    let h_due: Vec<Option<i64>> = last.values().map(|h| h.due).collect();
    client.query_typed(
        "WITH log AS (
             UPDATE ggen_log SET records = records + $15 RETURNING records - $15 AS base
         ), receipts AS (
             INSERT INTO ggen_receipts (position, tenant, seq, hash, bytes)
             SELECT log.base + r.o, r.t, r.s, r.h, r.b
             FROM log, unnest($1::bigint[], $2::text[], $3::bigint[], $4::bytea[], $5::bytea[])
                 AS r(o, t, s, h, b)
         ), ids AS (
             INSERT INTO ggen_event_ids (tenant, key, at)
             SELECT * FROM unnest($12::text[], $13::bytea[], $14::bigint[])
             ON CONFLICT (tenant, key) DO UPDATE SET at = excluded.at
         ), counted AS (
             UPDATE ggen_tenant_count SET tenants = tenants + $16 WHERE $16 > 0
         )
         INSERT INTO ggen_heads (tenant, seq, position, hash, state, state_seq, due_at)
         SELECT u.t, u.s, log.base + u.o, u.h, u.st, u.s, u.d
         FROM log, unnest($6::text[], $7::bigint[], $8::bigint[], $9::bytea[], $10::bytea[], $11::bigint[])
             AS u(t, s, o, h, st, d)
         ON CONFLICT (tenant) DO UPDATE SET
             seq = excluded.seq, position = excluded.position, hash = excluded.hash,
             state = excluded.state, state_seq = excluded.state_seq,
             due_at = excluded.due_at, claimed_until = NULL",
        &[
            (&r_offset, Type::INT8_ARRAY),
            (&r_tenant, Type::TEXT_ARRAY),
            (&r_seq, Type::INT8_ARRAY),
            (&r_hash, Type::BYTEA_ARRAY),
            (&r_bytes, Type::BYTEA_ARRAY),
            (&h_tenant, Type::TEXT_ARRAY),
            (&h_seq, Type::INT8_ARRAY),
            (&h_offset, Type::INT8_ARRAY),
            (&h_hash, Type::BYTEA_ARRAY),
            (&h_state, Type::BYTEA_ARRAY),
            (&h_due, Type::INT8_ARRAY),
            (&i_tenant, Type::TEXT_ARRAY),
            (&i_key, Type::BYTEA_ARRAY),
            (&i_at, Type::INT8_ARRAY),
            (&position(count as u64), Type::INT8),
            (&started, Type::INT8),
        ],
    )?;
    let written = accepted
        .iter()
        .map(|(d, hashes)| {
            let last = d.entries.len() - 1;
            (
                d.tenant.clone(),
                position(d.entries[last].seq),
                hashes[last],
            )
        })
        .collect();
    Ok((outcomes, written))
}

#[cfg(test)]
mod tests {
    use super::unhex;

    #[test]
    fn unhex_reads_what_encode_hex_writes_and_refuses_anything_else() {
        assert_eq!(unhex("00ff7a10"), Some(vec![0x00, 0xff, 0x7a, 0x10]));
        assert_eq!(unhex("00FF"), Some(vec![0x00, 0xff]));
        assert_eq!(unhex(""), Some(vec![]));
        assert_eq!(unhex("abc"), None, "odd length");
        assert_eq!(unhex("0g"), None, "not a hex digit");
        assert_eq!(unhex("\\x00"), None, "bytea's escaped form");
    }
}

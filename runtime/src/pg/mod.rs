//! The PostgreSQL ledger: the file ledger's hash chains, group commit and
//! checkpoints, in a database the operators already run (Cloud SQL,
//! AlloyDB), behind the same [`Ledger`] trait.
//!
//! An append is ordered in memory against the tenant's head, exactly as in
//! the file ledger, and returns a [`Ticket`]; one writer thread commits
//! whatever is pending in one statement (the receipts and the new heads, a
//! single implicit transaction with `synchronous_commit = on`) and publishes
//! progress, so a ticket resolves only once its receipt is committed. A
//! failed commit stops the ledger (every pending and later ticket errors),
//! as a failed `fdatasync` stops the file ledger.
//!
//! One process writes a database's ledger at a time: the writer connection
//! holds a session advisory lock named after the schema, released by the
//! server when the process or its connection dies (so `kill -9` frees it).
//! Tables live in the connection's `search_path` schema (`?options=-c
//! search_path=…` in the URL), so one database can hold several governors'
//! ledgers. Reads (`read`, `scan`, `verify`, `recover`) use a second
//! connection and see committed receipts; `read` first waits for every
//! append so far to commit.
//!
//! # Layout
//! - `schema`: versioned migrations.
//! - `writer`: the group-commit thread.
//! - [`copy`]: moving every receipt between a file ledger and a database.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use postgres::fallible_iterator::FallibleIterator as _;
use postgres::{Client, Config, NoTls, Row};

use crate::ledger::inspect::Archived;
use crate::ledger::{
    Appended, Entry, Hash, Head, Ledger, LedgerError, Mark, Progress, Record, Recovered,
    StoredCheckpoint, SyncPoint, Ticket, Verifier, VerifyOptions, VerifyReport, chain_hash,
    check_extends, check_mark,
};
use crate::tenant::TenantId;
use sha2::Digest as _;

pub mod copy;
mod partitions;
pub mod retention;
mod schema;
pub mod shared;
pub mod tree;
mod turns;
mod writer;

pub use partitions::{Anchor, DEFAULT_PARTITION_RECEIPTS, Partition};

/// Advisory-lock namespace of the writer lock (the other key is the schema's oid).
const WRITER_LOCK_SPACE: i32 = 0x6767_656e; // "ggen"

/// What every waiter of a ledger whose writer thread panicked (a bug) gets.
const WRITER_PANICKED: &str = "the ledger's writer thread stopped on a bug; start again (every committed receipt is in the database)";

/// Logs why a writer stopped its ledger (a failed commit, or a panic);
/// the failure every pending and later ticket gets.
fn stopped(target: &str, why: &dyn std::fmt::Display) -> (PathBuf, Arc<std::io::Error>) {
    let why = why.to_string();
    tracing::error!(target = %target, error = %why, "ledger writer failed: the ledger has stopped");
    (PathBuf::from(target), Arc::new(std::io::Error::other(why)))
}

/// How long a start (or a writer resuming) waits for a held writer lock.
const WRITER_LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How a [`PgLedger`] runs.
#[derive(Clone, Copy, Debug)]
pub struct PgOptions {
    /// Most receipts committed in one statement.
    pub max_batch: usize,
    /// Positions per partition of the receipts table (what retention
    /// archives and drops at a time).
    pub partition_receipts: u64,
    /// Replicas: longest a request waits for the database to load a
    /// tenant, to lock one, or to answer any other read on its behalf
    /// before it gives up (answered 503); the sessions doing that work
    /// have a `statement_timeout` a second longer (default 10 s).
    pub answer_within: std::time::Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_batch: 4096,
            partition_receipts: DEFAULT_PARTITION_RECEIPTS,
            answer_within: std::time::Duration::from_secs(10),
        }
    }
}

/// A receipt ordered in memory, not yet committed.
#[derive(Debug)]
struct Pending {
    position: u64,
    tenant: TenantId,
    seq: u64,
    hash: Hash,
    bytes: Vec<u8>,
}

/// What appends and the writer share, under one lock.
#[derive(Debug, Default)]
struct State {
    heads: HashMap<TenantId, Head>,
    /// Receipts ordered so far, committed or not (the last position).
    records: u64,
    /// Ordered, not yet taken by the writer.
    pending: Vec<Pending>,
    /// Set by drop: the writer commits what is pending and ends.
    closing: bool,
    /// Set when the writer stopped; appends read it under the lock they
    /// already hold (as the file ledger's do), not from the sync point.
    failed: Option<(PathBuf, Arc<std::io::Error>)>,
}

#[derive(Debug)]
struct Shared {
    target: String,
    state: Mutex<State>,
    /// Signalled when `pending` grows or `closing` is set.
    work: Condvar,
    sync: Arc<SyncPoint>,
}

impl Shared {
    /// The shared half of a ledger whose `state.records` receipts are all committed.
    fn new(target: String, state: State) -> Arc<Shared> {
        let records = state.records;
        Arc::new(Shared {
            target,
            state: Mutex::new(state),
            work: Condvar::new(),
            sync: Arc::new(SyncPoint::new(Progress {
                records,
                position: records,
                ..Progress::default()
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The PostgreSQL ledger (see the module docs).
pub struct PgLedger {
    shared: Arc<Shared>,
    /// For the connections of long reads (`scan`, `verify`, `recover`).
    url: String,
    /// For short reads and checkpoints; reconnected when it was lost.
    reader: Mutex<Client>,
    writer: Option<JoinHandle<()>>,
    /// The Merkle tree, for a ledger opened to write.
    tree: Option<tree::PgTree>,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("target", &self.shared.target)
            .field("writable", &self.writer.is_some())
            .finish_non_exhaustive()
    }
}

/// `postgres://host:port/db`: where a URL points, without its credentials.
pub fn redacted(url: &str) -> String {
    let Ok(config) = Config::from_str(url) else {
        return "postgres://<unparsable url>".to_owned();
    };
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{host}:{port}/{db}")
}

/// A [`LedgerError::Database`] for `target`.
fn database(
    target: &str,
    what: impl Into<String>,
) -> impl FnOnce(postgres::Error) -> LedgerError + '_ {
    let what = what.into();
    move |source| LedgerError::Database {
        target: target.to_owned(),
        what,
        source: Some(Box::new(source)),
    }
}

/// Connects to `url` (without TLS: reach a remote database through a local
/// proxy such as the Cloud SQL Auth Proxy, see docs/operations.md).
///
/// Unless the URL sets them, a connection attempt gives up after 10 s and
/// a connection whose sent data goes unacknowledged for 30 s (a dead host,
/// a dropped route) counts as lost, so the writer resumes or stops instead
/// of hanging on it.
fn connect(url: &str, target: &str) -> Result<Client, LedgerError> {
    let mut config =
        Config::from_str(url).map_err(database(target, "the database URL is invalid"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(std::time::Duration::from_secs(30));
    }
    config
        .connect(NoTls)
        .map_err(database(target, "cannot connect"))
}

/// How long a writer that lost its connection tries to get it back before
/// the ledger stops (a failover of a managed database takes tens of seconds).
const RESUME_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Pauses between tries of something a lost database fails: 100 ms, then
/// twice as long each time up to 2 s, for as long as `within` has not
/// passed since the first try.
struct Retry {
    started: std::time::Instant,
    within: std::time::Duration,
    pause: std::time::Duration,
}

impl Retry {
    fn within(within: std::time::Duration) -> Retry {
        Retry {
            started: std::time::Instant::now(),
            within,
            pause: std::time::Duration::from_millis(100),
        }
    }

    /// Pauses before the next try (off the async workers); `false`, at
    /// once, when `within` has passed.
    fn again(&mut self) -> bool {
        if self.started.elapsed() >= self.within {
            return false;
        }
        off_runtime(|| std::thread::sleep(self.pause));
        self.pause = (self.pause * 2).min(std::time::Duration::from_secs(2));
        true
    }
}

/// Waits on the calling thread with `wait`. On a worker of a multi-thread
/// tokio runtime (a request's), the worker's other tasks are handed to
/// another thread first, so a slow database holds up only the requests
/// waiting for it, never the service's other routes.
fn off_runtime<T>(wait: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// A writer's way back after its connection was lost: connects again
/// (backing off, for up to [`RESUME_FOR`]) and takes the writer lock in
/// `mode`; the error is the last failure's chain.
fn reconnect(url: &str, target: &str, mode: LockMode) -> Result<Client, String> {
    let mut retry = Retry::within(RESUME_FOR);
    let mut client = loop {
        match connect(url, target) {
            Ok(client) => break client,
            Err(error) => {
                let error = crate::report::error_chain(&error);
                if !retry.again() {
                    return Err(error);
                }
                tracing::warn!(target = %target, error = %error, "ledger connection: retrying");
            }
        }
    };
    take_writer_lock(&mut client, target, mode)
        .map_err(|error| crate::report::error_chain(&error))?;
    Ok(client)
}

/// Turns a failed query of a resuming writer into its message.
fn failed(what: &str) -> impl FnOnce(postgres::Error) -> String + '_ {
    move |error| format!("{what}: {}", crate::report::error_chain(&error))
}

/// One tenant's receipts with seq > `after`, at most `limit`, in seq order.
fn read_tenant(
    client: &mut Client,
    target: &str,
    tenant: &TenantId,
    after: u64,
    limit: usize,
) -> Result<Vec<Record>, LedgerError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query_typed(
            "SELECT tenant, seq, hash, bytes FROM ggen_receipts
             WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[
                (&tenant.as_str(), postgres::types::Type::TEXT),
                (&position(after), postgres::types::Type::INT8),
                (&limit, postgres::types::Type::INT8),
            ],
        )
        .map_err(database(target, "reading a tenant's receipts"))?;
    rows.iter()
        .map(|row| {
            row_record(row, 0, true).map_err(|why| LedgerError::Database {
                target: target.to_owned(),
                what: format!("a stored receipt is not a receipt: {why}"),
                source: None,
            })
        })
        .collect()
}

/// A row's receipt, or why the row cannot be one (a tampered table).
fn record(tenant: &str, seq: i64, hash: &[u8], bytes: Vec<u8>) -> Result<Record, String> {
    let tenant = TenantId::new(tenant).map_err(|e| format!("tenant `{tenant}` is invalid: {e}"))?;
    let seq = u64::try_from(seq).map_err(|_| format!("seq `{seq}` is negative"))?;
    let hash: Hash = hash
        .try_into()
        .map_err(|_| format!("hash of `{}` bytes, not 32", hash.len()))?;
    Ok(Record {
        tenant,
        seq,
        hash,
        bytes: Arc::from(bytes),
    })
}

/// Column `i` of `row`, or why it cannot be read (a NULL or another type
/// in an altered table): never a panic.
fn column<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, String> {
    row.try_get(i)
        .map_err(|e| format!("column {} is unreadable: {e}", row.columns()[i].name()))
}

/// The receipt in columns `from..from + 4` (tenant, seq, hash, bytes) of
/// `row`; `bytes` false reads no bytes (an empty receipt).
fn row_record(row: &Row, from: usize, bytes: bool) -> Result<Record, String> {
    let body = if bytes {
        column::<Vec<u8>>(row, from + 3)?
    } else {
        Vec::new()
    };
    record(
        column(row, from)?,
        column(row, from + 1)?,
        column(row, from + 2)?,
        body,
    )
}

/// The position in column `i`: a positive number.
fn row_position(row: &Row, i: usize) -> Result<u64, String> {
    let at: i64 = column(row, i)?;
    u64::try_from(at)
        .ok()
        .filter(|&at| at > 0)
        .ok_or_else(|| format!("position `{at}` is not positive"))
}

impl PgLedger {
    /// Connects, migrates the schema, takes the writer lock and loads every
    /// tenant's head (checked against its receipts).
    pub fn open(url: &str, options: PgOptions) -> Result<PgLedger, LedgerError> {
        let target = redacted(url);
        let mut writer_client = connect(url, &target)?;
        // The lock first: a governor that is not the writer must not touch
        // the schema (a newer one beside a running older one would migrate
        // it under the live writer).
        take_writer_lock(&mut writer_client, &target, LockMode::Exclusive)?;
        schema::migrate(&mut writer_client).map_err(|source| LedgerError::Database {
            target: target.clone(),
            what: "migrating the ledger schema failed".to_owned(),
            source: Some(Box::new(source)),
        })?;
        // Durable acknowledgements whatever the server's default.
        writer_client
            .batch_execute("SET synchronous_commit = on")
            .map_err(database(&target, "setting synchronous_commit"))?;
        let mut reader = connect(url, &target)?;
        if copy_in_progress(&mut reader, &target)? {
            return Err(LedgerError::IncompleteCopy { ledger: target });
        }
        let (heads, records) = load_heads(&mut reader, &target)?;
        check_checkpoint_end(&mut reader, &target, records)?;
        check_anchor_covered(&mut reader, &target)?;
        let partition_end = partitions::ensure(
            &mut writer_client,
            records + options.partition_receipts,
            options.partition_receipts,
        )
        .map_err(database(&target, "making the receipts' next partition"))?;
        let shared = Shared::new(
            target,
            State {
                heads,
                records,
                ..State::default()
            },
        );
        let writer = writer::spawn(
            Arc::clone(&shared),
            url.to_owned(),
            writer_client,
            options,
            partition_end,
        )
        .map_err(|source| LedgerError::Io {
            path: PathBuf::from(&shared.target),
            source,
        })?;
        let tree = Some(tree::PgTree::new(url, &shared.target));
        Ok(PgLedger {
            shared,
            url: url.to_owned(),
            reader: Mutex::new(reader),
            writer: Some(writer),
            tree,
        })
    }

    /// The ledger without writing it: no migration, no writer lock, so it
    /// works beside a running governor (`ledger verify`, `ledger show`, the
    /// source of `ledger copy`). Appends are refused; reads see what is
    /// committed.
    pub fn open_read_only(url: &str) -> Result<PgLedger, LedgerError> {
        let target = redacted(url);
        let mut reader = connect(url, &target)?;
        let row = reader
            .query_one(
                "SELECT CASE WHEN to_regclass('ggen_schema_migrations') IS NULL THEN NULL
                        ELSE (SELECT max(version) FROM ggen_schema_migrations) END",
                &[],
            )
            .map_err(database(&target, "reading the schema version"))?;
        let version: Option<i32> = column(&row, 0).map_err(|why| LedgerError::Database {
            target: target.clone(),
            what: format!("the schema version is unreadable: {why}"),
            source: None,
        })?;
        match version {
            None => {
                return Err(LedgerError::Database {
                    target,
                    what: "no ledger here (no ggen tables in the connection's search_path schema)"
                        .to_owned(),
                    source: None,
                });
            }
            Some(found) if found > schema::LATEST => {
                return Err(LedgerError::Database {
                    target,
                    what: schema::SchemaError::Newer { found }.to_string(),
                    source: None,
                });
            }
            Some(_) => {}
        }
        let records = log_end(&mut reader, &target)?;
        Ok(PgLedger {
            // Closing from the start: nothing may be appended.
            shared: Shared::new(
                target,
                State {
                    records,
                    closing: true,
                    ..State::default()
                },
            ),
            url: url.to_owned(),
            reader: Mutex::new(reader),
            writer: None,
            tree: None,
        })
    }

    /// The stored checkpoint with every tenant's head at its mark, if there is one.
    pub fn stored(&self) -> Result<Option<StoredCheckpoint>, LedgerError> {
        let mut client = self.reader()?;
        let Some((records, blob)) = self.stored_checkpoint(&mut *client)? else {
            return Ok(None);
        };
        Ok(Some(StoredCheckpoint {
            records,
            heads: self.heads_at(&mut client, records)?,
            blob: Arc::from(blob),
        }))
    }

    /// Every tenant's stored state with the seq it reflects (written by
    /// replicas sharing the schema; none before migration 3).
    pub fn stored_states(&self) -> Result<BTreeMap<TenantId, (u64, Vec<u8>)>, LedgerError> {
        let mut client = self.reader()?;
        let present = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                                WHERE table_schema = current_schema()
                                  AND table_name = 'ggen_heads' AND column_name = 'state')",
                &[],
            )
            .map_err(self.err("reading the stored states"))?;
        if !present.get::<_, bool>(0) {
            return Ok(BTreeMap::new());
        }
        let rows = client
            .query(
                "SELECT tenant, state_seq, state FROM ggen_heads
                 WHERE state IS NOT NULL AND state_seq IS NOT NULL",
                &[],
            )
            .map_err(self.err("reading the stored states"))?;
        rows.iter()
            .map(|row| {
                let tenant: String = column(row, 0).map_err(|why| self.bad_row(why))?;
                let tenant = TenantId::new(&tenant)
                    .map_err(|e| self.bad_row(format!("tenant `{tenant}` is invalid: {e}")))?;
                let seq: i64 = column(row, 1).map_err(|why| self.bad_row(why))?;
                let seq = u64::try_from(seq)
                    .map_err(|_| self.bad_row(format!("state seq `{seq}` is negative")))?;
                Ok((
                    tenant,
                    (seq, column(row, 2).map_err(|why| self.bad_row(why))?),
                ))
            })
            .collect()
    }

    /// Marks the schema as an unfinished copy of `source` (`true`), or
    /// finished (`false`); see [`copy`].
    pub(crate) fn mark_copy(&self, source: Option<&str>) -> Result<(), LedgerError> {
        let mut client = self.reader()?;
        match source {
            Some(source) => client.execute(
                "INSERT INTO ggen_copy_in_progress (source) VALUES ($1)",
                &[&source],
            ),
            None => client.execute("DELETE FROM ggen_copy_in_progress", &[]),
        }
        .map_err(self.err("marking the copy"))?;
        Ok(())
    }

    /// Where the database is, without credentials.
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// The short-read connection, connected again if it was lost (reads
    /// are idempotent, so a failover costs one failed request, not all).
    fn reader(&self) -> Result<MutexGuard<'_, Client>, LedgerError> {
        let mut client = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        if client.is_closed() {
            *client = connect(&self.url, &self.shared.target)?;
        }
        Ok(client)
    }

    /// A connection of its own for a long read, so `verify` and `scan` do
    /// not hold up tenant reads and checkpoints.
    fn long_reader(&self) -> Result<Client, LedgerError> {
        connect(&self.url, &self.shared.target)
    }

    fn err(&self, what: &str) -> impl FnOnce(postgres::Error) -> LedgerError + '_ {
        database(&self.shared.target, what)
    }

    fn bad_row(&self, reason: String) -> LedgerError {
        LedgerError::Database {
            target: self.shared.target.clone(),
            what: format!("a stored receipt is not a receipt: {reason}"),
            source: None,
        }
    }

    /// The stored checkpoint row: (records before its mark, blob).
    fn stored_checkpoint(
        &self,
        client: &mut impl postgres::GenericClient,
    ) -> Result<Option<(u64, Vec<u8>)>, LedgerError> {
        let row = client
            .query_opt("SELECT records, blob FROM ggen_checkpoint", &[])
            .map_err(self.err("reading the checkpoint"))?;
        row.map(|row| {
            let records: i64 = column(&row, 0).map_err(|why| self.bad_row(why))?;
            let records = u64::try_from(records)
                .map_err(|_| self.bad_row(format!("checkpoint at `{records}` records")))?;
            Ok((records, column(&row, 1).map_err(|why| self.bad_row(why))?))
        })
        .transpose()
    }

    /// Every tenant's head as of the first `records` receipts.
    fn heads_at(
        &self,
        client: &mut Client,
        records: u64,
    ) -> Result<BTreeMap<TenantId, Head>, LedgerError> {
        let rows = client
            .query(
                "SELECT r.tenant, r.seq, r.hash FROM ggen_heads h
                 CROSS JOIN LATERAL (
                     SELECT tenant, seq, hash FROM ggen_receipts
                     WHERE tenant = h.tenant AND position <= $1
                     ORDER BY seq DESC LIMIT 1
                 ) r",
                &[&position(records)],
            )
            .map_err(self.err("reading the heads at the checkpoint"))?;
        let mut heads = rows
            .into_iter()
            .map(|row| {
                let r = row_record(&row, 0, false).map_err(|reason| self.bad_row(reason))?;
                Ok((
                    r.tenant,
                    Head {
                        seq: r.seq,
                        hash: r.hash,
                    },
                ))
            })
            .collect::<Result<BTreeMap<_, _>, LedgerError>>()?;
        // A chain with no local receipt up to the mark ends in the archive.
        if let Some(anchor) = partitions::read_anchor(client, &self.shared.target)?
            && anchor.records <= records
        {
            for (tenant, head) in anchor.heads {
                heads.entry(tenant).or_insert(head);
            }
        }
        Ok(heads)
    }

    /// Where the local log starts, if partitions were archived.
    pub fn anchor(&self) -> Result<Option<Anchor>, LedgerError> {
        partitions::read_anchor(&mut *self.reader()?, &self.shared.target)
    }

    /// Every partition of the receipts, archived ones included, in order.
    pub fn partitions(&self) -> Result<Vec<Partition>, LedgerError> {
        partitions::list(&mut *self.reader()?, &self.shared.target)
    }

    /// Streams the receipts after `after` (a position) in append order.
    fn stream(
        &self,
        client: &mut impl postgres::GenericClient,
        after: u64,
        visit: &mut dyn FnMut(u64, Record) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut rows = client
            .query_raw(
                "SELECT position, tenant, seq, hash, bytes FROM ggen_receipts
                 WHERE position > $1 ORDER BY position",
                [position(after)],
            )
            .map_err(self.err("reading the receipts"))?;
        while let Some(row) = rows.next().map_err(self.err("reading the receipts"))? {
            let at = row_position(&row, 0).map_err(|reason| self.bad_row(reason))?;
            let r = row_record(&row, 1, true).map_err(|reason| self.bad_row(reason))?;
            visit(at, r)?;
        }
        Ok(())
    }
}

impl PgLedger {
    /// `ledger verify --archive`: the archived partitions (`archived`
    /// fetches each by id) and the local log as one log from genesis.
    pub fn verify_with_archive(
        &self,
        options: &VerifyOptions<'_>,
        archived: &mut Archived<'_>,
    ) -> Result<VerifyReport, LedgerError> {
        self.verify_from(options, Some(archived))
    }

    /// Every receipt from genesis: the archived partitions' (fetched by
    /// `archived`; a missing one is an error), then the local log's.
    pub fn scan_with_archive(
        &self,
        archived: &mut Archived<'_>,
        visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        self.flush()?;
        let Some(anchor) = self.anchor()? else {
            return self.checked_stream(0, Verifier::new(), visit);
        };
        let mut verifier = Verifier::new();
        for partition in self.partitions()? {
            if partition.id >= anchor.partition {
                break;
            }
            let name = partitions::object_name(partition.id);
            let id = u32::try_from(partition.id).unwrap_or_default();
            let bytes = archived(id)?.ok_or_else(|| {
                altered(
                    &self.shared.target,
                    format!("archived partition `{name}` is missing from the archive"),
                )
            })?;
            crate::ledger::inspect::visit_archived_checked(
                &mut verifier,
                Path::new(&name),
                &bytes,
                visit,
            )?;
        }
        // The local chains continue from where the archived ones ended
        // (checked), not from the anchor's word for it.
        self.checked_stream(anchor.records, verifier, visit)
    }

    fn verify_from(
        &self,
        options: &VerifyOptions<'_>,
        archived: Option<&mut Archived<'_>>,
    ) -> Result<VerifyReport, LedgerError> {
        self.flush()?;
        // One snapshot for the checkpoint, the receipts and the heads, so
        // writers committing meanwhile (replicas beside `ledger verify`)
        // cannot make a head look newer than its chain.
        let mut connection = self.long_reader()?;
        let mut client = connection
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(self.err("starting a consistent read"))?;
        let checkpoint = self
            .stored_checkpoint(&mut client)?
            .map(|(records, blob)| (records, Arc::<[u8]>::from(blob)));
        // After retention the local log starts at the anchor: its chains
        // continue from the anchor's heads, or from the archived
        // partitions, verified first, when they are given.
        let anchor = partitions::read_anchor(&mut client, &self.shared.target)?;
        let (mut verifier, before) = match (&anchor, archived) {
            (Some(anchor), Some(archived)) => {
                let mut verifier = Verifier::new().expecting(options);
                if !self.verify_archived(&mut client, &mut verifier, anchor, archived)? {
                    return Ok(verifier.report());
                }
                (verifier, 0)
            }
            (Some(anchor), None) => (
                Verifier::starting_at(&anchor.heads).expecting(options),
                anchor.records,
            ),
            (None, _) => (Verifier::new().expecting(options), 0),
        };
        let judge_at_mark = |verifier: &mut Verifier| {
            if let Some((records, blob)) = &checkpoint
                && before + verifier.receipts() == *records
            {
                verifier.at_mark(options, *records, blob);
            }
        };
        judge_at_mark(&mut verifier);
        // Each chain's last receipt as streamed: (seq, hash, position; `None`
        // for a chain ending in the archive).
        let mut last: HashMap<TenantId, (u64, Hash, Option<u64>)> = anchor
            .iter()
            .flat_map(|a| &a.heads)
            .map(|(tenant, head)| (tenant.clone(), (head.seq, head.hash, None)))
            .collect();
        let archived_records = anchor.as_ref().map_or(0, |a| a.records);
        self.stream(&mut client, archived_records, &mut |at, record| {
            if options.cancelled() {
                return Err(LedgerError::Cancelled {
                    visited: verifier.receipts(),
                });
            }
            // A deleted row leaves a gap in the positions.
            let expected = before + verifier.receipts() + 1;
            if at != expected {
                verifier.bad(
                    record.tenant.to_string(),
                    record.seq,
                    format!(
                        "receipts at positions {expected} to {} are missing",
                        at.saturating_sub(1)
                    ),
                );
            }
            verifier.feed(&record);
            judge_at_mark(&mut verifier);
            last.insert(record.tenant.clone(), (record.seq, record.hash, Some(at)));
            Ok(())
        })?;
        if let Some((records, _)) = &checkpoint
            && *records > before + verifier.receipts()
        {
            verifier.bad(
                String::new(),
                0,
                format!(
                    "the checkpoint at {records} receipts points past the end of the log ({}): receipts were deleted",
                    before + verifier.receipts()
                ),
            );
        }
        // A chain whose last receipts were deleted still links: the head
        // rows name them. Both ways: every chain has its head, every head
        // its chain.
        if !verifier.has_bad() {
            let rows = client
                .query("SELECT tenant, seq, hash, position FROM ggen_heads", &[])
                .map_err(self.err("checking the chain heads"))?;
            let mut headless: std::collections::BTreeSet<&TenantId> = last.keys().collect();
            for row in &rows {
                let head = row_record(row, 0, false).and_then(|r| Ok((r, row_position(row, 3)?)));
                let (tenant, seq, why) = match head {
                    Err(why) => (String::new(), 0, why),
                    Ok((r, at)) => {
                        headless.remove(&r.tenant);
                        match last.get(&r.tenant) {
                            Some(&(seq, hash, Some(pos))) if (seq, hash, pos) == (r.seq, r.hash, at) => continue,
                            Some(&(seq, hash, None)) if (seq, hash) == (r.seq, r.hash) && at <= archived_records => continue,
                            Some(_) => (r.tenant.to_string(), r.seq, "the recorded head is not the chain's last receipt (receipts were deleted or the head altered)".to_owned()),
                            None => (r.tenant.to_string(), r.seq, "a head is recorded for a chain with no receipts (they were deleted)".to_owned()),
                        }
                    }
                };
                verifier.bad(tenant, seq, why);
                break;
            }
            if let Some(tenant) = headless.first() {
                let seq = last.get(*tenant).map_or(0, |l| l.0);
                verifier.bad(
                    tenant.to_string(),
                    seq,
                    "the chain has no recorded head (its head row was deleted)".to_owned(),
                );
            }
            if !verifier.has_bad()
                && let Some(counted) = self.tenant_count(&mut client)?
                && counted != rows.len() as i64
            {
                let found = if counted < 0 {
                    "has no row".to_owned()
                } else {
                    format!("counts {counted} tenants with a chain")
                };
                verifier.bad(
                    String::new(),
                    0,
                    format!(
                        "`ggen_tenant_count` {found} where the heads are {} (it was altered): `max_tenants` no longer holds across replicas",
                        rows.len()
                    ),
                );
            }
        }
        // Last, as for a directory: the first bad only when all else verifies.
        if copy_in_progress(&mut client, &self.shared.target)? {
            verifier.bad(
                String::new(),
                0,
                crate::ledger::inspect::INCOMPLETE_COPY.to_owned(),
            );
        }
        Ok(verifier.report())
    }

    /// The number of tenants with a chain as `ggen_tenant_count` keeps it
    /// (`None` before schema version 7; `-1` for a deleted row).
    fn tenant_count(
        &self,
        client: &mut impl postgres::GenericClient,
    ) -> Result<Option<i64>, LedgerError> {
        let err = || database(&self.shared.target, "reading the tenant count");
        let exists: bool = client
            .query_one(
                "SELECT to_regclass(format('%I.ggen_tenant_count', current_schema())) IS NOT NULL",
                &[],
            )
            .and_then(|row| row.try_get(0))
            .map_err(err())?;
        if !exists {
            return Ok(None);
        }
        let row = client
            .query_opt("SELECT tenants FROM ggen_tenant_count", &[])
            .map_err(err())?;
        row.map_or(Ok(-1), |row| row.try_get(0))
            .map(Some)
            .map_err(err())
    }

    /// Feeds the archived partitions before `anchor` to `verifier`, each
    /// checked against the digest recorded when it was archived and the
    /// positions it held; `false` once it found a problem (reported in it).
    fn verify_archived(
        &self,
        client: &mut impl postgres::GenericClient,
        verifier: &mut Verifier,
        anchor: &Anchor,
        archived: &mut Archived<'_>,
    ) -> Result<bool, LedgerError> {
        let bad = |verifier: &mut Verifier, why: String| {
            verifier.bad(String::new(), 0, why);
            Ok(false)
        };
        let mut expected = 1;
        for partition in partitions::list(client, &self.shared.target)? {
            if partition.id >= anchor.partition {
                break;
            }
            let name = partitions::object_name(partition.id);
            let Some(digest) = partition.archived else {
                return bad(
                    verifier,
                    format!(
                        "partition {} is before the anchor but not recorded as archived",
                        partition.id
                    ),
                );
            };
            if partition.first != expected {
                return bad(
                    verifier,
                    format!(
                        "archived partition {} starts at position {}, not {expected}: the archived partitions do not follow each other",
                        partition.id, partition.first
                    ),
                );
            }
            let id = u32::try_from(partition.id).unwrap_or_default();
            let Some(bytes) = archived(id)? else {
                return bad(
                    verifier,
                    format!("archived partition `{name}` is missing from the archive"),
                );
            };
            if <[u8; 32]>::from(sha2::Sha256::digest(&bytes)) != digest {
                return bad(
                    verifier,
                    format!(
                        "archived partition `{name}` is not the copy recorded when it was archived (its SHA-256 differs)"
                    ),
                );
            }
            match crate::ledger::inspect::feed_archived(verifier, &name, &bytes) {
                Some(n) if !verifier.has_bad() && n == partition.next - partition.first => {}
                Some(n) if !verifier.has_bad() => {
                    return bad(
                        verifier,
                        format!(
                            "archived partition `{name}` holds {n} receipts, not the {} of positions {} to {}",
                            partition.next - partition.first,
                            partition.first,
                            partition.next - 1
                        ),
                    );
                }
                _ => return Ok(false),
            }
            expected = partition.next;
        }
        Ok(crate::ledger::inspect::ends_at_anchor(
            verifier,
            expected - 1,
            anchor.records,
            &anchor.heads,
        ))
    }
}

impl PgLedger {
    /// Streams the receipts after position `after` to `visit`, each fed to
    /// `verifier` first: the first that does not extend its chain stops
    /// the stream with an error naming it.
    fn checked_stream(
        &self,
        after: u64,
        mut verifier: Verifier,
        visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut client = self.long_reader()?;
        self.stream(&mut client, after, &mut |_, record| {
            verifier.feed(&record);
            if let Some(bad) = verifier.first_bad() {
                return Err(altered(
                    &self.shared.target,
                    format!(
                        "the hash chain of tenant `{}` breaks at seq `{}`: {}",
                        bad.tenant, bad.seq, bad.reason
                    ),
                ));
            }
            visit(&record)
        })
    }
}

/// A record count or position as PostgreSQL's `bigint`.
fn position(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// How a process holds the writer lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockMode {
    /// The only writer (one governor, `ledger copy`).
    Exclusive,
    /// One of several replicas, each committing conditionally.
    Shared,
}

/// Takes the writer lock of the connection's schema: a session advisory
/// lock keyed on the schema's oid (unique, unlike a hash of its name),
/// exclusive or shared; returns the oid.
fn take_writer_lock(client: &mut Client, target: &str, mode: LockMode) -> Result<i64, LedgerError> {
    let refused = |what: &str| LedgerError::Database {
        target: target.to_owned(),
        what: what.to_owned(),
        source: None,
    };
    let oid: Option<i64> = client
        .query_opt(
            "SELECT oid::bigint FROM pg_namespace WHERE nspname = current_schema()",
            &[],
        )
        .map_err(database(target, "reading the schema"))?
        .map(|row| row.get(0));
    let oid = oid.ok_or_else(|| {
        refused("the connection's search_path names no existing schema: create it first")
    })?;
    // Oids of user schemas are far below 2^31; the remainder keeps any oid an int4.
    let key = i32::try_from(oid % i64::from(i32::MAX)).unwrap_or(0);
    // A writer that just went away (a restart, a lost connection) holds the
    // lock until its server process notices: wait a moment before refusing.
    let started = std::time::Instant::now();
    loop {
        let take = match mode {
            LockMode::Exclusive => "SELECT pg_try_advisory_lock($1, $2)",
            LockMode::Shared => "SELECT pg_try_advisory_lock_shared($1, $2)",
        };
        let locked: bool = client
            .query_one(take, &[&WRITER_LOCK_SPACE, &key])
            .map_err(database(target, "taking the writer lock"))?
            .get(0);
        if locked {
            return Ok(oid);
        }
        if started.elapsed() >= WRITER_LOCK_GRACE {
            return Err(refused(match mode {
                LockMode::Exclusive => {
                    "another governor process is writing this ledger (one exclusive writer per database schema; replicas serving it hold it shared)"
                }
                LockMode::Shared => {
                    "a single exclusive writer (another governor without replicas, or `ledger copy`) is writing this ledger"
                }
            }));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether an unfinished `ledger copy` marked the schema (a schema
/// migrated before the mark existed has none).
fn copy_in_progress(
    client: &mut impl postgres::GenericClient,
    target: &str,
) -> Result<bool, LedgerError> {
    let row = client
        .query_one(
            "SELECT to_regclass('ggen_copy_in_progress') IS NOT NULL",
            &[],
        )
        .map_err(database(target, "reading the copy mark"))?;
    if !row.get::<_, bool>(0) {
        return Ok(false);
    }
    let row = client
        .query_one("SELECT EXISTS (SELECT 1 FROM ggen_copy_in_progress)", &[])
        .map_err(database(target, "reading the copy mark"))?;
    Ok(row.get(0))
}

/// The number of receipts: the last position.
fn log_end(client: &mut Client, target: &str) -> Result<u64, LedgerError> {
    let row = client
        .query_one("SELECT coalesce(max(position), 0) FROM ggen_receipts", &[])
        .map_err(database(target, "reading the end of the log"))?;
    let end: i64 = column(&row, 0).map_err(|why| altered(target, why))?;
    // Every local receipt may be archived (a log ending where a partition does).
    let archived = partitions::read_anchor(client, target)?.map_or(0, |a| a.records);
    Ok(u64::try_from(end).unwrap_or(0).max(archived))
}

/// Refuses, for a single writer, a ledger whose archived receipts its
/// checkpoint does not cover (replicas archived them: each tenant's state
/// is in its head row, which only replicas read).
fn check_anchor_covered(client: &mut Client, target: &str) -> Result<(), LedgerError> {
    let Some(anchor) = partitions::read_anchor(client, target)? else {
        return Ok(());
    };
    let row = client
        .query_opt("SELECT records FROM ggen_checkpoint", &[])
        .map_err(database(target, "reading the checkpoint"))?;
    let covered: i64 = match row {
        Some(row) => column(&row, 0).map_err(|why| altered(target, why))?,
        None => 0,
    };
    if u64::try_from(covered).unwrap_or(0) >= anchor.records {
        return Ok(());
    }
    Err(LedgerError::Database {
        target: target.to_owned(),
        what: format!(
            "the first {} receipts were archived, but the checkpoint covers only {covered}: replicas archived them (their tenants' states are in the head rows): serve this ledger with replicas (`deploy.replicas` above 1), not a single writer",
            anchor.records
        ),
        source: None,
    })
}

/// Why a writer refuses tables someone altered.
fn altered(target: &str, why: String) -> LedgerError {
    LedgerError::Database {
        target: target.to_owned(),
        what: format!(
            "{why}: the ledger tables were altered; refusing to extend them (run `ledger verify`)"
        ),
        source: None,
    }
}

/// Refuses a stored checkpoint that claims more receipts than the log holds
/// (receipts after it were deleted, or the row was forged).
fn check_checkpoint_end(client: &mut Client, target: &str, end: u64) -> Result<(), LedgerError> {
    let row = client
        .query_opt("SELECT records FROM ggen_checkpoint", &[])
        .map_err(database(target, "reading the checkpoint"))?;
    let Some(row) = row else { return Ok(()) };
    let records: i64 = column(&row, 0).map_err(|why| altered(target, why))?;
    if u64::try_from(records).is_ok_and(|records| records <= end) {
        return Ok(());
    }
    Err(altered(
        target,
        format!("the checkpoint at {records} receipts points past the end of the log ({end})"),
    ))
}

/// Every tenant's head from `ggen_heads`, each checked against the
/// receipts (the row must name a stored receipt, at its position, with
/// that hash and no successor; no receipt may belong to a tenant without a
/// head row), and the number of receipts (the last position). One index
/// probe per tenant, never a scan of the log.
fn load_heads(
    client: &mut Client,
    target: &str,
) -> Result<(HashMap<TenantId, Head>, u64), LedgerError> {
    let rows = client
        .query(
            "SELECT h.tenant, h.seq, h.hash,
                    (r.hash IS NOT DISTINCT FROM h.hash
                     AND r.position IS NOT DISTINCT FROM h.position
                     -- or its chain ends in an archived partition
                     OR r.position IS NULL AND a.seq = h.seq AND a.hash = h.hash
                        AND h.position <= (SELECT records FROM ggen_anchor))
                    AND NOT EXISTS (SELECT 1 FROM ggen_receipts n
                                    WHERE n.tenant = h.tenant AND n.seq = h.seq + 1)
             FROM ggen_heads h
             LEFT JOIN ggen_receipts r ON r.tenant = h.tenant AND r.seq = h.seq
             LEFT JOIN ggen_anchor_heads a ON a.tenant = h.tenant",
            &[],
        )
        .map_err(database(target, "reading the chain heads"))?;
    let mut heads = HashMap::with_capacity(rows.len());
    for row in rows {
        let tenant: String = column(&row, 0).map_err(|why| altered(target, why))?;
        let consistent: Option<bool> = column(&row, 3).map_err(|why| altered(target, why))?;
        if consistent != Some(true) {
            return Err(altered(
                target,
                format!("the head of tenant `{tenant}` does not match its last receipt"),
            ));
        }
        let r = row_record(&row, 0, false).map_err(|why| altered(target, why))?;
        heads.insert(
            r.tenant,
            Head {
                seq: r.seq,
                hash: r.hash,
            },
        );
    }
    // Each distinct tenant of the receipts, by a skip scan of the
    // (tenant, seq) index: one without a head row was written by hand.
    let headless = client
        .query_opt(
            "WITH RECURSIVE t(tenant) AS (
                 (SELECT tenant FROM ggen_receipts ORDER BY tenant LIMIT 1)
                 UNION ALL
                 SELECT (SELECT r.tenant FROM ggen_receipts r WHERE r.tenant > t.tenant
                         ORDER BY r.tenant LIMIT 1)
                 FROM t WHERE t.tenant IS NOT NULL
             )
             SELECT tenant FROM t
             WHERE tenant IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM ggen_heads h WHERE h.tenant = t.tenant)
             LIMIT 1",
            &[],
        )
        .map_err(database(target, "reading the chains"))?;
    if let Some(row) = headless {
        let tenant: String = column(&row, 0).map_err(|why| altered(target, why))?;
        return Err(altered(
            target,
            format!("tenant `{tenant}` has receipts but no head"),
        ));
    }
    Ok((heads, log_end(client, target)?))
}

impl Ledger for PgLedger {
    fn tree(&self) -> Option<&dyn crate::ledger::LogTree> {
        self.tree
            .as_ref()
            .map(|tree| tree as &dyn crate::ledger::LogTree)
    }

    fn append(&self, entry: Entry) -> Result<Appended, LedgerError> {
        let hash = chain_hash(&entry.prev, &entry.bytes);
        let mut state = self.shared.lock();
        if let Some(failed) = &state.failed {
            return Err(crate::ledger::poisoned(failed));
        }
        if state.closing {
            // Only a read-only ledger is closing while someone holds it.
            return Err(LedgerError::Database {
                target: self.shared.target.clone(),
                what: "opened read-only: appends are refused".to_owned(),
                source: None,
            });
        }
        let head = state
            .heads
            .get(&entry.tenant)
            .copied()
            .unwrap_or(Head::EMPTY);
        check_extends(&head, &entry)?;
        let position = state.records + 1;
        state.records = position;
        let seq = entry.seq;
        match state.heads.get_mut(&entry.tenant) {
            Some(head) => *head = Head { seq, hash },
            None => {
                state.heads.insert(entry.tenant.clone(), Head { seq, hash });
            }
        }
        state.pending.push(Pending {
            position,
            tenant: entry.tenant,
            seq,
            hash,
            bytes: entry.bytes,
        });
        drop(state);
        self.shared.work.notify_one();
        Ok(Appended {
            hash,
            ticket: Ticket::pending(position, Arc::clone(&self.shared.sync)),
        })
    }

    fn head(&self, tenant: &TenantId) -> Head {
        self.shared
            .lock()
            .heads
            .get(tenant)
            .copied()
            .unwrap_or(Head::EMPTY)
    }

    fn read(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Record>, LedgerError> {
        self.flush()?;
        read_tenant(
            &mut *self.reader()?,
            &self.shared.target,
            tenant,
            after,
            limit,
        )
    }

    fn mark(&self) -> Result<Mark, LedgerError> {
        let records = self.shared.lock().records;
        Ok(Mark::new(records, records))
    }

    fn checkpoint(&self, mark: Mark, blob: &[u8]) -> Result<(), LedgerError> {
        self.shared
            .sync
            .wait_until(|p| p.records >= mark.records())?;
        let end = self.shared.lock().records;
        let mut client = self.reader()?;
        let stored = self.stored_checkpoint(&mut *client)?.map_or(0, |(r, _)| r);
        check_mark(&mark, stored, end)?;
        client
            .execute(
                "INSERT INTO ggen_checkpoint (records, blob) VALUES ($1, $2)
                 ON CONFLICT (singleton) DO UPDATE SET records = excluded.records, blob = excluded.blob
                 WHERE ggen_checkpoint.records <= excluded.records",
                &[&position(mark.records()), &blob],
            )
            .map_err(self.err("storing the checkpoint"))?;
        Ok(())
    }

    fn recover(
        &self,
        visit: &mut dyn FnMut(Recovered<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        self.flush()?;
        let (after, verifier) = match self.stored()? {
            Some(stored) => {
                if stored.records > self.shared.lock().records {
                    return Err(altered(
                        &self.shared.target,
                        format!(
                            "the checkpoint at {} receipts points past the end of the log",
                            stored.records
                        ),
                    ));
                }
                visit(Recovered::Checkpoint(&stored))?;
                (stored.records, Verifier::starting_at(&stored.heads))
            }
            None => (0, Verifier::new()),
        };
        self.checked_stream(after, verifier, &mut |record| {
            visit(Recovered::Record(record))
        })
    }

    /// Replays every receipt when the checkpoint was set aside; refused
    /// once partitions were archived (their tenants' states can no longer
    /// be replayed from genesis).
    fn recover_past_checkpoint(
        &self,
        visit: &mut dyn FnMut(Recovered<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        if let Some(anchor) = self.anchor()? {
            return Err(LedgerError::Database {
                target: self.shared.target.clone(),
                what: format!(
                    "the checkpoint contradicts the receipts, and the first {} receipts were archived, so the states cannot be replayed from the start instead: serve this ledger with replicas (each tenant loads from its head row), or run `ledger verify --archive` to find the damage",
                    anchor.records
                ),
                source: None,
            });
        }
        self.scan(&mut |record| visit(Recovered::Record(record)))
    }

    /// Every receipt, each chain checked as it streams: a registry that
    /// set its checkpoint aside replays with this, so an altered receipt
    /// stops it instead of becoming tenant state (`ledger show` stops there
    /// too, naming it).
    fn scan(
        &self,
        visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        self.flush()?;
        match self.anchor()? {
            // Archived receipts are `ledger verify --archive`'s.
            Some(anchor) => {
                self.checked_stream(anchor.records, Verifier::starting_at(&anchor.heads), visit)
            }
            None => self.checked_stream(0, Verifier::new(), visit),
        }
    }

    fn verify_with(&self, options: &VerifyOptions<'_>) -> Result<VerifyReport, LedgerError> {
        self.verify_from(options, None)
    }

    fn flushed(&self) -> Ticket {
        let records = self.shared.lock().records;
        Ticket::pending(records, Arc::clone(&self.shared.sync))
    }
}

impl Drop for PgLedger {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.work.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

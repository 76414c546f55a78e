//! The group-commit thread: takes every pending receipt (up to a batch) and
//! commits them with their tenants' new heads in one statement, then
//! publishes how far the log is committed. While one batch commits, the
//! next accumulates, so the commits per second, not the receipts, are
//! bounded by the round trip.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use postgres::{Client, Statement};

use super::{Pending, PgOptions, Shared, partitions, position};
use crate::ledger::Head;
use crate::tenant::TenantId;

/// The receipts, the receipt count (which replicas sharing the schema
/// take positions from), then each touched tenant's last (seq, hash,
/// position), from parallel arrays: one statement, one implicit
/// transaction.
const COMMIT: &str = "
    WITH receipts AS (
        INSERT INTO ggen_receipts (position, tenant, seq, hash, bytes)
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bytea[], $5::bytea[])
    ), log AS (
        UPDATE ggen_log SET records = (SELECT max(p) FROM unnest($1::bigint[]) AS p)
    )
    INSERT INTO ggen_heads (tenant, seq, hash, position)
    SELECT * FROM unnest($6::text[], $7::bigint[], $8::bytea[], $9::bigint[])
    ON CONFLICT (tenant) DO UPDATE
        SET seq = excluded.seq, hash = excluded.hash, position = excluded.position";

/// Starts the writer on its own connection (which holds the writer lock).
pub(super) fn spawn(
    shared: Arc<Shared>,
    url: String,
    client: Client,
    options: PgOptions,
    partition_end: u64,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ledger-pg-writer".to_owned())
        .spawn(move || {
            let _failing = crate::ledger::FailOnPanic(|| fail(&shared, &super::WRITER_PANICKED));
            run(&shared, url, client, options, partition_end);
        })
}

/// The writer's connection and its prepared statement.
struct Writer<'a> {
    shared: &'a Shared,
    url: String,
    client: Client,
    statement: Statement,
    /// Positions per partition the writer makes.
    partition_receipts: u64,
    /// The first position without a partition, as last known.
    partition_end: u64,
}

fn run(shared: &Shared, url: String, mut client: Client, options: PgOptions, partition_end: u64) {
    let max_batch = options.max_batch.max(1);
    let statement = match client.prepare(COMMIT) {
        Ok(statement) => statement,
        Err(error) => return fail(shared, &error),
    };
    let mut writer = Writer {
        shared,
        url,
        client,
        statement,
        partition_receipts: options.partition_receipts,
        partition_end,
    };
    loop {
        let batch = {
            let mut state = shared.lock();
            while state.pending.is_empty() && !state.closing {
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if state.pending.is_empty() {
                drop(state);
                // Released now rather than when the server notices the
                // closed connection, so the next writer starts at once.
                let _ = writer
                    .client
                    .batch_execute("SELECT pg_advisory_unlock_all()");
                return;
            }
            let take = state.pending.len().min(max_batch);
            state.pending.drain(..take).collect::<Vec<Pending>>()
        };
        let Some(last) = batch.last().map(|p| p.position) else {
            continue;
        };
        let committed = match writer.commit(&batch) {
            Err(error) if connection_lost(&error, &writer.client) => {
                tracing::warn!(target = %shared.target, error = %crate::report::error_chain(&error), "ledger connection lost: connecting again");
                writer.resume(&batch)
            }
            outcome => outcome.map_err(|error| crate::report::error_chain(&error)),
        };
        match committed {
            Ok(()) => shared.sync.publish(last, last),
            Err(why) => return fail(shared, &why),
        }
    }
}

impl Writer<'_> {
    /// Commits `batch` and its tenants' new heads in one statement, after
    /// making the partitions it needs (a partition ahead, so this is rare;
    /// and again if another process dropped or never made them).
    fn commit(&mut self, batch: &[Pending]) -> Result<(), postgres::Error> {
        let last = batch.last().map_or(0, |p| p.position);
        if last >= self.partition_end {
            self.partition_end = partitions::ensure(
                &mut self.client,
                last + self.partition_receipts,
                self.partition_receipts,
            )?;
        }
        match self.insert(batch) {
            Err(error) if partitions::is_past_partitions(&error) => {
                self.partition_end = partitions::ensure(
                    &mut self.client,
                    last + self.partition_receipts,
                    self.partition_receipts,
                )?;
                self.insert(batch)
            }
            outcome => outcome,
        }
    }

    fn insert(&mut self, batch: &[Pending]) -> Result<(), postgres::Error> {
        let mut heads: HashMap<&TenantId, (Head, u64)> = HashMap::new();
        for p in batch {
            heads.insert(
                &p.tenant,
                (
                    Head {
                        seq: p.seq,
                        hash: p.hash,
                    },
                    p.position,
                ),
            );
        }
        let positions: Vec<i64> = batch.iter().map(|p| position(p.position)).collect();
        let tenants: Vec<&str> = batch.iter().map(|p| p.tenant.as_str()).collect();
        let seqs: Vec<i64> = batch.iter().map(|p| position(p.seq)).collect();
        let hashes: Vec<&[u8]> = batch.iter().map(|p| &p.hash[..]).collect();
        let bytes: Vec<&[u8]> = batch.iter().map(|p| &p.bytes[..]).collect();
        let head_tenants: Vec<&str> = heads.keys().map(|t| t.as_str()).collect();
        let head_seqs: Vec<i64> = heads.values().map(|(h, _)| position(h.seq)).collect();
        let head_hashes: Vec<&[u8]> = heads.values().map(|(h, _)| &h.hash[..]).collect();
        let head_positions: Vec<i64> = heads.values().map(|(_, p)| position(*p)).collect();
        self.client.execute(
            &self.statement,
            &[
                &positions,
                &tenants,
                &seqs,
                &hashes,
                &bytes,
                &head_tenants,
                &head_seqs,
                &head_hashes,
                &head_positions,
            ],
        )?;
        Ok(())
    }

    /// After the connection was lost during `batch`'s commit: connects
    /// again (backing off, for up to [`super::RESUME_FOR`]), takes the writer lock
    /// back, and finds out whether the commit happened before the
    /// connection went: the batch's last receipt is stored with its hash
    /// (it did), or the log ends just before the batch (it did not: commit
    /// it again). Anything else means another process wrote the ledger
    /// meanwhile, and the ledger stops.
    fn resume(&mut self, batch: &[Pending]) -> Result<(), String> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let target = &self.shared.target;
        let mut client = super::reconnect(&self.url, target, super::LockMode::Exclusive)?;
        let query = super::failed;
        client
            .batch_execute("SET synchronous_commit = on")
            .map_err(query("setting synchronous_commit"))?;
        let row = client
            .query_one(
                "SELECT (SELECT hash FROM ggen_receipts WHERE position = $1),
                        coalesce(max(position), 0)
                 FROM ggen_receipts",
                &[&position(last.position)],
            )
            .map_err(query("reading where the log ends"))?;
        let stored: Option<Vec<u8>> = super::column(&row, 0)?;
        let end: i64 = super::column(&row, 1)?;
        self.statement = client
            .prepare(COMMIT)
            .map_err(query("preparing the commit"))?;
        self.client = client;
        if stored.as_deref() == Some(&last.hash[..]) {
            tracing::info!(target = %target, "ledger connection back; the interrupted commit had completed");
            return Ok(());
        }
        if stored.is_none() && end == position(first.position - 1) {
            self.commit(batch).map_err(query("committing again"))?;
            tracing::info!(target = %target, "ledger connection back; the interrupted commit was made again");
            return Ok(());
        }
        Err(format!(
            "the ledger was written by another process while the connection was lost (the log ends at {end}, this governor's batch is {} to {})",
            first.position, last.position
        ))
    }
}

/// Whether `error` means the session is gone (so the commit's outcome is
/// unknown and the writer may resume): the socket closed, or the server
/// ended the session with a FATAL error (a terminated backend, a shutdown)
/// whose report can arrive before the close.
pub(super) fn connection_lost(error: &postgres::Error, client: &Client) -> bool {
    client.is_closed()
        || error.is_closed()
        || error
            .as_db_error()
            .is_some_and(|db| db.parsed_severity() == Some(postgres::error::Severity::Fatal))
}

/// Stops the ledger: every pending and later ticket gets the error.
fn fail(shared: &Shared, why: &dyn std::fmt::Display) {
    let failure = super::stopped(&shared.target, why);
    shared.lock().failed = Some(failure.clone());
    shared.sync.fail(failure.0, failure.1);
}

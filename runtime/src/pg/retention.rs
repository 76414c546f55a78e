//! Retention of a PostgreSQL ledger: the oldest full partitions past the
//! bound (`--retain 7d`, or a size) are archived and then dropped.
//!
//! For each partition, oldest first:
//!
//! 1. its receipts are streamed in position order into the archive as
//!    segment frames (object `0000000007.seg` for partition 7: every
//!    archive reads the same way, whichever ledger wrote it), and the copy
//!    is read back and compared;
//! 2. one transaction records the cut: the partition's digest, and the
//!    anchor moved past it (every tenant's head there);
//! 3. the partition is detached (`CONCURRENTLY`: appends and reads go on)
//!    and dropped.
//!
//! A crash or kill at any step is safe: before step 2 nothing changed but
//! an archived object, which the next round writes again; after it, the
//! next round finishes the detach and drop. A partition is only cut once
//! nothing needs it to recover: a single writer's checkpoint covers it, or
//! (replicas) every tenant's stored state is past it. One process archives
//! a schema at a time (a session advisory lock), so replicas may all run
//! retention.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator as _;

use super::partitions::{self, Partition};
use super::{column, connect, database, position, row_position, row_record};
use crate::archive::{Archive, ArchiveError, Retain, Step};
use crate::ledger::{Head, LedgerError, encode_frame};
use crate::tenant::TenantId;

/// Bytes of frames gathered before they go to the archive.
const CHUNK: usize = 1 << 20;

/// Namespace of the session advisory lock the archiving process holds
/// (the other key is the schema's oid, as for the writer lock).
const ARCHIVER_LOCK_SPACE: i32 = 0x6761_7263; // "garc"

/// What recovery reads a tenant's state from, so what a cut must leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// One governor: the checkpoint, then the receipts after it.
    Checkpoint,
    /// Replicas: each tenant's state in its head row, then its receipts after it.
    TenantStates,
}

/// Retention of one PostgreSQL ledger (see the module docs).
pub struct PgRetention {
    url: String,
    target: String,
    archive: Archive,
    retain: Retain,
    recovery: Recovery,
    /// Connected (holding the archiver lock) when first needed, again after
    /// it was lost.
    client: Option<Client>,
    /// For the archive's calls (the synchronous client runs outside it).
    runtime: tokio::runtime::Runtime,
    /// The Merkle tree, extended over a partition before it is dropped.
    tree: super::tree::PgTree,
}

impl std::fmt::Debug for PgRetention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRetention")
            .field("target", &self.target)
            .field("archive", &self.archive.url())
            .field("retain", &self.retain)
            .finish_non_exhaustive()
    }
}

impl PgRetention {
    /// Retention of the ledger at `url` into `archive`.
    pub fn new(
        url: &str,
        archive: Archive,
        retain: Retain,
        recovery: Recovery,
    ) -> Result<PgRetention, ArchiveError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .thread_name("ledger-archive-io")
            .build()
            .map_err(|e| ArchiveError::Join(e.to_string()))?;
        let target = super::redacted(url);
        Ok(PgRetention {
            tree: super::tree::PgTree::new(url, &target),
            url: url.to_owned(),
            target,
            archive,
            retain,
            recovery,
            client: None,
            runtime,
        })
    }

    /// A connection holding the archiver lock; `None` while another
    /// process archives this schema.
    fn connect(&self) -> Result<Option<Client>, ArchiveError> {
        let mut client = connect(&self.url, &self.target)?;
        // Keyed on the schema: governors of other schemas archive too.
        let locked: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, (oid::bigint % 2147483647)::int4)
                 FROM pg_namespace WHERE nspname = current_schema()",
                &[&ARCHIVER_LOCK_SPACE],
            )
            .map_err(database(&self.target, "taking the archiver lock"))?
            .get(0);
        Ok(locked.then_some(client))
    }

    /// Archives and drops, oldest first, every full partition past the
    /// bound at `now` that recovery no longer needs; returns how many.
    /// `stop` ends the sequence early at that step, as a crash would.
    pub fn round(&mut self, now: SystemTime, stop: Option<Step>) -> Result<usize, ArchiveError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = self.connect()?;
        }
        let Some(client) = self.client.as_mut() else {
            return Ok(0);
        };
        let target = &self.target;
        drop_cut(client, target)?;
        client
            .execute(
                "UPDATE ggen_partitions SET full_since = now()
                 WHERE full_since IS NULL AND next - 1 <= (SELECT records FROM ggen_log)",
                &[],
            )
            .map_err(database(target, "marking full partitions"))?;
        let mut cut = 0;
        while let Some(partition) = due(client, target, self.retain, self.recovery, now)? {
            // The tree keeps the leaves of what is dropped: it must hold them
            // first (a tree that was never built over them is not waited for).
            if !self.tree.extend_over(partition.next - 1)? {
                break;
            }
            let archiver = Archiver {
                client: &mut *client,
                target,
                archive: &self.archive,
                runtime: &self.runtime,
            };
            if !archiver.archive(&partition, stop)? {
                break;
            }
            tracing::info!(partition = partition.id, archive = %self.archive.url(), "ledger partition archived and dropped");
            cut += 1;
        }
        // Every round, so a prune a crash interrupted is finished.
        prune_tree(client, target)?;
        Ok(cut)
    }
}

/// Deletes the Merkle tree's nodes that only proofs of archived receipts
/// needed: per level, every node before the left neighbour of the first
/// local receipt's ancestor (which proofs of local receipts, and
/// consistency proofs from sizes past the anchor, still use), as the file
/// ledger's tree keeps. The table then stays the size of the local
/// receipts' tree (its space is reused once vacuumed).
fn prune_tree(client: &mut Client, target: &str) -> Result<u64, LedgerError> {
    client
        .execute(
            "DELETE FROM ggen_tree t
             USING (SELECT l::smallint AS level, greatest((a.records >> l) - 1, 0) AS kept
                    FROM ggen_anchor a, generate_series(0, 63) AS l) k
             WHERE t.level = k.level AND t.idx < k.kept",
            &[],
        )
        .map_err(database(target, "pruning the Merkle tree's archived nodes"))
}

/// The oldest partition not archived, if it is full, past `retain` at
/// `now` and not needed by `recovery`.
fn due(
    client: &mut Client,
    target: &str,
    retain: Retain,
    recovery: Recovery,
    now: SystemTime,
) -> Result<Option<Partition>, LedgerError> {
    let all = partitions::list(client, target)?;
    let Some(oldest) = all.into_iter().find(|p| p.archived.is_none()) else {
        return Ok(None);
    };
    let Some(full_since) = oldest.full_since else {
        return Ok(None);
    };
    let past = match retain {
        Retain::Age(age) => now.duration_since(full_since).is_ok_and(|old| old > age),
        Retain::Bytes(limit) => {
            let row = client
                .query_one(
                    "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint
                     FROM pg_inherits WHERE inhparent = 'ggen_receipts'::regclass",
                    &[],
                )
                .map_err(database(target, "sizing the partitions"))?;
            let bytes: i64 = row.get(0);
            u64::try_from(bytes).unwrap_or(0) > limit
        }
    };
    if !past {
        return Ok(None);
    }
    let needed = match recovery {
        Recovery::Checkpoint => {
            "SELECT coalesce((SELECT records FROM ggen_checkpoint), 0) < $1::bigint - 1"
        }
        Recovery::TenantStates => {
            "SELECT EXISTS (
                 SELECT 1 FROM ggen_heads h
                 WHERE h.state_seq IS DISTINCT FROM h.seq
                   AND EXISTS (SELECT 1 FROM ggen_receipts r
                               WHERE r.tenant = h.tenant
                                 AND r.seq = coalesce(h.state_seq, 0) + 1
                                 AND r.position < $1::bigint))"
        }
    };
    let needed: bool = client
        .query_one(needed, &[&position(oldest.next)])
        .map_err(database(target, "checking what recovery needs"))?
        .get(0);
    Ok((!needed).then_some(oldest))
}

/// What archiving one partition works with.
struct Archiver<'a> {
    client: &'a mut Client,
    target: &'a str,
    archive: &'a Archive,
    /// For the archive's calls (the synchronous client runs outside it).
    runtime: &'a tokio::runtime::Runtime,
}

impl Archiver<'_> {
    /// Steps 1–3 for `partition`; `false` when stopped early or when
    /// another process had cut it.
    fn archive(self, partition: &Partition, stop: Option<Step>) -> Result<bool, ArchiveError> {
        let target = self.target;
        let bad =
            |why: String| super::altered(target, format!("partition {}: {why}", partition.id));
        let id = u32::try_from(partition.id).map_err(|_| bad("its id is negative".to_owned()))?;
        let mut upload = self.runtime.block_on(self.archive.begin(id))?;
        let mut chunk = Vec::with_capacity(CHUNK + 4096);
        let mut heads: BTreeMap<TenantId, Head> = BTreeMap::new();
        let mut expected = partition.first;
        let reading = || database(target, "reading a partition");
        let mut rows = self
            .client
            .query_raw(
                format!(
                    "SELECT position, tenant, seq, hash, bytes FROM {}
                     WHERE position >= $1 ORDER BY position",
                    partitions::table(partition.id)
                )
                .as_str(),
                [position(partition.first)],
            )
            .map_err(reading())?;
        while let Some(row) = rows.next().map_err(reading())? {
            let at = row_position(&row, 0).map_err(bad)?;
            if at != expected {
                return Err(bad(format!("position {expected} is missing")).into());
            }
            let record = row_record(&row, 1, true).map_err(bad)?;
            encode_frame(
                &mut chunk,
                &record.tenant,
                record.seq,
                &record.hash,
                &record.bytes,
            );
            heads.insert(
                record.tenant,
                Head {
                    seq: record.seq,
                    hash: record.hash,
                },
            );
            expected += 1;
            if chunk.len() >= CHUNK {
                self.runtime.block_on(upload.write(self.archive, &chunk))?;
                chunk.clear();
            }
        }
        drop(rows);
        if expected != partition.next {
            return Err(bad(format!(
                "it ends at position {}, not {}: it is not full",
                expected - 1,
                partition.next - 1
            ))
            .into());
        }
        self.runtime.block_on(upload.write(self.archive, &chunk))?;
        if stop == Some(Step::Uploaded) {
            // Stored, never read back: a crash before the check.
            self.runtime.block_on(self.archive.finish(upload))?;
            return Ok(false);
        }
        let digest = self
            .runtime
            .block_on(self.archive.finish_verified(upload))?;
        if stop == Some(Step::Verified)
            || !record_cut(self.client, target, partition, &heads, &digest)?
        {
            return Ok(false);
        }
        if stop == Some(Step::Anchored) {
            return Ok(false);
        }
        drop_cut(self.client, target)?;
        Ok(true)
    }
}

/// Step 2: records `partition` as archived with `digest` and moves the
/// anchor past it (`heads`: each tenant's last receipt in it), in one
/// transaction; `false` when the anchor is not at it (cut meanwhile).
fn record_cut(
    client: &mut Client,
    target: &str,
    partition: &Partition,
    heads: &BTreeMap<TenantId, Head>,
    digest: &[u8; 32],
) -> Result<bool, LedgerError> {
    let failed = |what| database(target, what);
    let mut tx = client.transaction().map_err(failed("recording a cut"))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&partitions::PARTITION_LOCK],
    )
    .map_err(failed("recording a cut"))?;
    let at: Option<i32> = tx
        .query_one(
            "SELECT coalesce((SELECT partition FROM ggen_anchor),
                             (SELECT min(id) FROM ggen_partitions))",
            &[],
        )
        .map_err(failed("reading the anchor"))?
        .get(0);
    if at != Some(partition.id) {
        return Ok(false);
    }
    let tenants: Vec<&str> = heads.keys().map(TenantId::as_str).collect();
    let seqs: Vec<i64> = heads.values().map(|h| position(h.seq)).collect();
    let hashes: Vec<&[u8]> = heads.values().map(|h| &h.hash[..]).collect();
    tx.execute(
        "INSERT INTO ggen_anchor_heads (tenant, seq, hash)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
         ON CONFLICT (tenant) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        &[&tenants, &seqs, &hashes],
    )
    .map_err(failed("recording the anchor's heads"))?;
    tx.execute(
        "INSERT INTO ggen_anchor (partition, records) VALUES ($1, $2)
         ON CONFLICT (singleton) DO UPDATE SET partition = excluded.partition, records = excluded.records",
        &[&(partition.id + 1), &position(partition.next - 1)],
    )
    .map_err(failed("recording the anchor"))?;
    tx.execute(
        "UPDATE ggen_partitions SET archived = $1 WHERE id = $2",
        &[&&digest[..], &partition.id],
    )
    .map_err(failed("recording the archived partition"))?;
    tx.commit().map_err(failed("recording a cut"))?;
    Ok(true)
}

/// Step 3 for every partition the anchor let go that is still here (a cut
/// interrupted after step 2): detached, concurrently (or finishing a
/// detach that was interrupted), and dropped.
fn drop_cut(client: &mut Client, target: &str) -> Result<(), LedgerError> {
    let rows = client
        .query(
            "SELECT p.id, i.inhrelid IS NOT NULL, coalesce(i.inhdetachpending, false)
             FROM ggen_partitions p
             JOIN pg_class c ON c.relname = 'ggen_receipts_' || lpad(p.id::text, 10, '0')
                            AND c.relnamespace = current_schema()::regnamespace
             LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
             WHERE p.archived IS NOT NULL AND p.id < (SELECT partition FROM ggen_anchor)
             ORDER BY p.id",
            &[],
        )
        .map_err(database(target, "finding the cut partitions"))?;
    for row in rows {
        let bad = |why: String| super::altered(target, why);
        let id: i32 = column(&row, 0).map_err(bad)?;
        let attached: bool = column(&row, 1).map_err(bad)?;
        let pending: bool = column(&row, 2).map_err(bad)?;
        let table = partitions::table(id);
        if attached {
            let how = if pending { "FINALIZE" } else { "CONCURRENTLY" };
            client
                .batch_execute(&format!(
                    "ALTER TABLE ggen_receipts DETACH PARTITION {table} {how}"
                ))
                .map_err(database(target, "detaching an archived partition"))?;
        }
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
            .map_err(database(target, "dropping an archived partition"))?;
    }
    Ok(())
}

/// Runs [`PgRetention::round`] every `every` on a thread of its own until
/// `stopped` turns true; failures are logged and tried again next round.
pub fn spawn(
    mut retention: PgRetention,
    every: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ledger-archiver".to_owned())
        .spawn(move || {
            loop {
                let stop = retention.runtime.block_on(async {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => true,
                        () = tokio::time::sleep(every) => false,
                    }
                });
                if stop {
                    return;
                }
                if let Err(error) = retention.round(SystemTime::now(), None) {
                    tracing::error!(error = %crate::report::error_chain(&error), "archiving ledger partitions failed: trying again later");
                    // A failed statement may have left the session unusable.
                    retention.client = None;
                }
            }
        })
}

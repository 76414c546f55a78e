//! The receipts table's partitions and the anchor retention leaves.
//!
//! `ggen_receipts` is partitioned by ranges of position (migration 4):
//! partition `k` is table `ggen_receipts_{k:010}` holding positions
//! `first..next` as recorded in `ggen_partitions`. Writers make partitions
//! ahead of the log ([`ensure`]): each is made as a table of its own and
//! then attached, which takes only a `SHARE UPDATE EXCLUSIVE` lock on the
//! parent, so neither appends nor long reads (`ledger verify`) wait for it.
//!
//! Retention (see `crate::archive`) archives a full partition, records the
//! cut in the anchor ([`Anchor`]: the first local partition, the receipts
//! before it and every tenant's head there) and only then detaches and
//! drops the partition. What is left verifies from the anchor's heads.

use std::collections::BTreeMap;

use postgres::GenericClient;

use super::{altered, column, database, position};
use crate::ledger::{Head, LedgerError};
use crate::tenant::TenantId;

/// Key of the transaction-scoped advisory lock partitions are made under
/// (the same for every schema: making one is rare and short).
pub(crate) const PARTITION_LOCK: i64 = 0x6767_656e_2d70_6172; // "ggen-par"

/// Receipts per partition unless told otherwise: about 600 MB of calm
/// signal receipts.
pub const DEFAULT_PARTITION_RECEIPTS: u64 = 1_000_000;

/// The table of partition `id`.
pub(crate) fn table(id: i32) -> String {
    format!("ggen_receipts_{id:010}")
}

/// The archive object of partition `id` (named as a file ledger's segment:
/// it holds the partition's receipts in segment frames).
pub(crate) fn object_name(id: i32) -> String {
    format!("{id:010}.seg")
}

/// Makes partitions of `size` positions each, after the last one, until
/// position `through` has one; returns where the partitions then end (the
/// first position without one). Idempotent, and safe beside other writers
/// (they serialize on an advisory lock; the second finds the work done).
pub(crate) fn ensure(
    client: &mut postgres::Client,
    through: u64,
    size: u64,
) -> Result<u64, postgres::Error> {
    let size = size.max(1);
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])?;
    let row = tx.query_one(
        "SELECT coalesce(max(id), 0), coalesce(max(next), 1) FROM ggen_partitions",
        &[],
    )?;
    let (mut id, mut end): (i32, i64) = (row.get(0), row.get(1));
    let mut made = false;
    while u64::try_from(end).unwrap_or(0) <= through {
        id += 1;
        let next = end.saturating_add(position(size));
        let name = table(id);
        // The bounds as a constraint first, so attaching skips its scan.
        tx.batch_execute(&format!(
            "CREATE TABLE {name} (LIKE ggen_receipts INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
             ALTER TABLE {name}
                 ADD CONSTRAINT {name}_bounds CHECK (position >= {end} AND position < {next}),
                 ADD CONSTRAINT {name}_tenant_seq_key UNIQUE (tenant, seq);
             ALTER TABLE ggen_receipts ATTACH PARTITION {name} FOR VALUES FROM ({end}) TO ({next});"
        ))?;
        tx.execute(
            "INSERT INTO ggen_partitions (id, first, next) VALUES ($1, $2, $3)",
            &[&id, &end, &next],
        )?;
        end = next;
        made = true;
    }
    if made {
        tx.commit()?;
    }
    Ok(u64::try_from(end).unwrap_or(0))
}

/// Whether `error` is an insert past the last partition.
pub(crate) fn is_past_partitions(error: &postgres::Error) -> bool {
    error.code() == Some(&postgres::error::SqlState::CHECK_VIOLATION)
        && error
            .as_db_error()
            .is_some_and(|db| db.message().starts_with("no partition of relation"))
}

/// Where the local log starts once partitions were archived.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Anchor {
    /// The first local partition: every one before it is archived.
    pub partition: i32,
    /// Receipts in the archived partitions.
    pub records: u64,
    /// Every tenant's head at the cut (its last archived receipt).
    pub heads: BTreeMap<TenantId, Head>,
}

/// The anchor, if partitions were archived (`None` as well for a schema
/// from before migration 4).
pub(crate) fn read_anchor(
    client: &mut impl GenericClient,
    target: &str,
) -> Result<Option<Anchor>, LedgerError> {
    let present = client
        .query_one("SELECT to_regclass('ggen_anchor') IS NOT NULL", &[])
        .map_err(database(target, "reading the anchor"))?;
    if !present.get::<_, bool>(0) {
        return Ok(None);
    }
    let Some(row) = client
        .query_opt("SELECT partition, records FROM ggen_anchor", &[])
        .map_err(database(target, "reading the anchor"))?
    else {
        return Ok(None);
    };
    let bad = |why: String| altered(target, format!("the anchor: {why}"));
    let partition: i32 = column(&row, 0).map_err(bad)?;
    let records: i64 = column(&row, 1).map_err(bad)?;
    let rows = client
        .query("SELECT tenant, seq, hash FROM ggen_anchor_heads", &[])
        .map_err(database(target, "reading the anchor's heads"))?;
    let mut heads = BTreeMap::new();
    for row in rows {
        let r = super::row_record(&row, 0, false).map_err(bad)?;
        heads.insert(
            r.tenant,
            Head {
                seq: r.seq,
                hash: r.hash,
            },
        );
    }
    Ok(Some(Anchor {
        partition,
        records: u64::try_from(records).unwrap_or(0),
        heads,
    }))
}

/// One partition as `ggen_partitions` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its number (table `ggen_receipts_{id:010}`, archive object `{id:010}.seg`).
    pub id: i32,
    /// Its first position.
    pub first: u64,
    /// The first position after it.
    pub next: u64,
    /// When a retention round first saw it full.
    pub full_since: Option<std::time::SystemTime>,
    /// The SHA-256 of its verified archived copy, once archived.
    pub archived: Option<[u8; 32]>,
}

/// Every partition, in order.
pub(crate) fn list(
    client: &mut impl GenericClient,
    target: &str,
) -> Result<Vec<Partition>, LedgerError> {
    let rows = client
        .query(
            "SELECT id, first, next, full_since, archived FROM ggen_partitions ORDER BY id",
            &[],
        )
        .map_err(database(target, "reading the partitions"))?;
    let bad = |why: String| altered(target, format!("the partitions: {why}"));
    rows.iter()
        .map(|row| {
            let first: i64 = column(row, 1).map_err(bad)?;
            let next: i64 = column(row, 2).map_err(bad)?;
            let archived: Option<Vec<u8>> = column(row, 4).map_err(bad)?;
            Ok(Partition {
                id: column(row, 0).map_err(bad)?,
                first: u64::try_from(first).unwrap_or(0),
                next: u64::try_from(next).unwrap_or(0),
                full_since: column(row, 3).map_err(bad)?,
                archived: archived
                    .map(|a| {
                        <[u8; 32]>::try_from(a)
                            .map_err(|_| bad("a digest is not 32 bytes".to_owned()))
                    })
                    .transpose()?,
            })
        })
        .collect()
}

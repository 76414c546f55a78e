//! The PostgreSQL ledger's Merkle tree (RFC 9162): every committed receipt
//! a leaf, in position order (leaf index = position - 1), its perfect
//! subtrees' hashes in `ggen_tree` and its size in `ggen_tree_size`.
//!
//! The tree is extended from the receipts when it is needed (a checkpoint
//! to sign, a proof to make, a partition to archive), by whichever governor
//! needs it: under an advisory transaction lock, one batch of receipts per
//! transaction, so replicas never write the same node twice and a crash
//! loses at most a batch that is simply done again. Receipts become visible
//! in position order (positions are taken under the log's row lock and
//! committed in that order), so the tree is always over a prefix of the
//! committed log. A proof fetches the O(log n) nodes it needs in one query.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use postgres::Client;

use super::{column, connect, database};
use crate::ledger::{LedgerError, LogTree};
use crate::merkle::{Frontier, Hash, Nodes, ProofError, leaf_hash};
use crate::tenant::TenantId;

/// Serializes extensions across governors on one schema.
const TREE_LOCK: i64 = 0x6767_656e_2d74_7265;
/// Receipts hashed per transaction.
const BATCH: i64 = 10_000;

/// The tree of a PostgreSQL ledger (see the module documentation).
pub struct PgTree {
    url: String,
    target: String,
    /// Its own connection (extensions are long; reads must not wait for
    /// the ledger's), made on first use and again when lost.
    client: Mutex<Option<Client>>,
    /// Leaves of the tree as last extended or read.
    size: AtomicU64,
    /// Set once an extension found receipts archived past the tree: it can
    /// never be built.
    lost: AtomicBool,
}

impl std::fmt::Debug for PgTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTree")
            .field("target", &self.target)
            .field("size", &self.size.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PgTree {
    /// The tree of the ledger at `url` (nothing is read until needed).
    pub fn new(url: &str, target: &str) -> PgTree {
        PgTree {
            url: url.to_owned(),
            target: target.to_owned(),
            client: Mutex::new(None),
            size: AtomicU64::new(0),
            lost: AtomicBool::new(false),
        }
    }

    fn client(&self) -> Result<MutexGuard<'_, Option<Client>>, LedgerError> {
        let mut client = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if client.as_ref().is_none_or(Client::is_closed) {
            let mut fresh = connect(&self.url, &self.target)?;
            // An extension reads the size after it holds the lock: each
            // statement's own snapshot, whatever the server's default.
            fresh
                .batch_execute("SET default_transaction_isolation = 'read committed'")
                .map_err(database(&self.target, "setting the isolation level"))?;
            *client = Some(fresh);
        }
        Ok(client)
    }

    fn with<T>(
        &self,
        run: impl FnOnce(&mut Client) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let mut guard = self.client()?;
        let client = guard
            .as_mut()
            .unwrap_or_else(|| unreachable!("connected above"));
        run(client)
    }

    fn unavailable(&self, what: String) -> LedgerError {
        LedgerError::Database {
            target: self.target.clone(),
            what,
            source: None,
        }
    }

    /// Extends the stored tree over every committed receipt; its size and
    /// root.
    pub fn extend(&self) -> Result<(u64, Hash), LedgerError> {
        loop {
            let (size, root, added) = self.with(|client| self.extend_batch(client))?;
            // Another thread's extension may have gone further meanwhile.
            self.size.fetch_max(size, Ordering::AcqRel);
            if added < BATCH as u64 {
                return Ok((size, root));
            }
        }
    }

    /// Whether the tree covers the first `records` receipts once extended
    /// (retention asks before dropping them); true also for a tree that can
    /// never be built, whose leaves are already gone.
    pub fn extend_over(&self, records: u64) -> Result<bool, LedgerError> {
        match self.extend() {
            Ok((size, _)) => Ok(size >= records),
            Err(_) if self.lost.load(Ordering::Acquire) => Ok(true),
            Err(error) => Err(error),
        }
    }

    /// One transaction: up to [`BATCH`] receipts past the stored size.
    fn extend_batch(&self, client: &mut Client) -> Result<(u64, Hash, u64), LedgerError> {
        let target = self.target.as_str();
        let mut tx = client
            .transaction()
            .map_err(database(target, "starting a tree transaction"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&TREE_LOCK])
            .map_err(database(target, "taking the tree lock"))?;
        let size: i64 = tx
            .query_opt("SELECT size FROM ggen_tree_size", &[])
            .map_err(database(target, "reading the tree size"))?
            .map_or(Ok(0), |row| column(&row, 0))
            .map_err(|why| self.unavailable(why))?;
        let size = u64::try_from(size).unwrap_or(0);
        let mut edge = load_edge(&mut tx, target, size)?;
        let rows = tx
            .query(
                "SELECT position, bytes FROM ggen_receipts WHERE position > $1 ORDER BY position LIMIT $2",
                &[&(size as i64), &BATCH],
            )
            .map_err(database(target, "reading receipts for the tree"))?;
        let (mut levels, mut indexes, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let grown = edge.size();
            let position: i64 = column(row, 0).map_err(|why| self.unavailable(why))?;
            if u64::try_from(position).ok() != Some(grown + 1) {
                self.lost.store(true, Ordering::Release);
                return Err(self.unavailable(format!(
                    "the Merkle tree holds {grown} receipts but the next one here is at position {position}: the receipts between were archived before the tree was built"
                )));
            }
            let bytes: Vec<u8> = column(row, 1).map_err(|why| self.unavailable(why))?;
            edge.push_with(leaf_hash(&bytes), |level, index, node| {
                levels.push(level as i16);
                indexes.push(index as i64);
                hashes.push(node.to_vec());
            });
        }
        let grown = edge.size();
        if grown > size {
            tx.execute(
                "INSERT INTO ggen_tree (level, idx, hash)
                 SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])",
                &[&levels, &indexes, &hashes],
            )
            .map_err(database(target, "storing tree nodes"))?;
            tx.execute(
                "INSERT INTO ggen_tree_size (size) VALUES ($1)
                 ON CONFLICT (singleton) DO UPDATE SET size = excluded.size",
                &[&(grown as i64)],
            )
            .map_err(database(target, "storing the tree size"))?;
        }
        tx.commit()
            .map_err(database(target, "committing tree nodes"))?;
        Ok((grown, edge.root(), grown - size))
    }

    /// The stored nodes at `wanted` (level, index), in one query.
    fn fetch(&self, wanted: &[(u32, u64)]) -> Result<HashMap<(u32, u64), Hash>, LedgerError> {
        self.with(|client| nodes(client, &self.target, wanted))
    }

    /// Runs `prove` on the tree of its current size with every node it
    /// asks for fetched in one query (the nodes a proof needs depend only
    /// on its leaf and sizes, never on hashes).
    fn batched<T>(
        &self,
        prove: impl Fn(&dyn Nodes) -> Result<T, ProofError>,
    ) -> Result<T, ProofError> {
        let size = self.size.load(Ordering::Acquire);
        let recording = Recording {
            size,
            wanted: RefCell::new(Vec::new()),
        };
        prove(&recording)?;
        let wanted = recording.wanted.into_inner();
        let nodes = self.fetch(&wanted).map_err(|e| ProofError::Store {
            level: 0,
            index: 0,
            detail: e.to_string(),
        })?;
        prove(&Fetched { size, nodes })
    }
}

/// The stored nodes at `wanted` (level, index) that exist, in one query.
fn nodes(
    client: &mut impl postgres::GenericClient,
    target: &str,
    wanted: &[(u32, u64)],
) -> Result<HashMap<(u32, u64), Hash>, LedgerError> {
    let (levels, indexes): (Vec<i16>, Vec<i64>) =
        wanted.iter().map(|&(l, i)| (l as i16, i as i64)).unzip();
    let rows = client
        .query(
            "SELECT t.level, t.idx, t.hash FROM ggen_tree t
             JOIN unnest($1::smallint[], $2::bigint[]) AS w(level, idx)
               ON t.level = w.level AND t.idx = w.idx",
            &[&levels, &indexes],
        )
        .map_err(database(target, "reading tree nodes"))?;
    let bad = |why: String| LedgerError::Database {
        target: target.to_owned(),
        what: why,
        source: None,
    };
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let level: i16 = column(row, 0).map_err(bad)?;
        let index: i64 = column(row, 1).map_err(bad)?;
        let hash: Vec<u8> = column(row, 2).map_err(bad)?;
        let hash = Hash::try_from(hash.as_slice())
            .map_err(|_| bad("a tree node is not 32 bytes".to_owned()))?;
        found.insert((level as u32, index as u64), hash);
    }
    Ok(found)
}

/// The right edge of the stored tree of `size` leaves (its peaks).
fn load_edge(
    tx: &mut postgres::Transaction<'_>,
    target: &str,
    size: u64,
) -> Result<Frontier, LedgerError> {
    let wanted: Vec<(u32, u64)> = (0..64u32)
        .filter(|level| size >> level & 1 == 1)
        .map(|level| (level, (size >> level) - 1))
        .collect();
    let peaks = nodes(tx, target, &wanted)?;
    Frontier::load(size, |level, index| {
        peaks
            .get(&(level, index))
            .copied()
            .ok_or_else(|| LedgerError::Database {
                target: target.to_owned(),
                what: format!("the Merkle tree of {size} receipts lacks its node {level}/{index}"),
                source: None,
            })
    })
}

/// A tree that records the nodes asked of it (and answers zeros).
struct Recording {
    size: u64,
    wanted: RefCell<Vec<(u32, u64)>>,
}

impl Nodes for Recording {
    fn size(&self) -> u64 {
        self.size
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        self.wanted.borrow_mut().push((level, index));
        Ok([0; 32])
    }
}

/// The nodes fetched for one proof.
struct Fetched {
    size: u64,
    nodes: HashMap<(u32, u64), Hash>,
}

impl Nodes for Fetched {
    fn size(&self) -> u64 {
        self.size
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        self.nodes
            .get(&(level, index))
            .copied()
            .ok_or_else(|| ProofError::Store {
                level,
                index,
                detail: "not stored".to_owned(),
            })
    }
}

impl Nodes for PgTree {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        let nodes = self
            .fetch(&[(level, index)])
            .map_err(|e| ProofError::Store {
                level,
                index,
                detail: e.to_string(),
            })?;
        nodes
            .get(&(level, index))
            .copied()
            .ok_or(ProofError::Store {
                level,
                index,
                detail: "not stored".to_owned(),
            })
    }

    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.batched(|nodes| nodes.inclusion_proof(index, size))
    }

    fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ProofError> {
        self.batched(|nodes| nodes.consistency_proof(first, second))
    }

    fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.batched(|nodes| nodes.root_at(size))
    }
}

impl LogTree for PgTree {
    fn latest(&self) -> Result<(u64, Hash), LedgerError> {
        self.extend()
    }

    fn stored_size(&self) -> Result<u64, LedgerError> {
        let row = self.with(|client| {
            client
                .query_opt("SELECT size FROM ggen_tree_size", &[])
                .map_err(database(&self.target, "reading the tree size"))
        })?;
        let size: i64 = match row {
            Some(row) => column(&row, 0).map_err(|why| self.unavailable(why))?,
            None => 0,
        };
        let size = u64::try_from(size).unwrap_or(0);
        self.size.fetch_max(size, Ordering::AcqRel);
        Ok(size)
    }

    fn check_buildable(&self) -> Result<(), LedgerError> {
        let row = self.with(|client| {
            client
                .query_one(
                    "SELECT coalesce((SELECT size FROM ggen_tree_size), 0),
                            (SELECT min(position) FROM ggen_receipts)",
                    &[],
                )
                .map_err(database(&self.target, "reading the tree size"))
        })?;
        let size: i64 = column(&row, 0).map_err(|why| self.unavailable(why))?;
        let first: Option<i64> = column(&row, 1).map_err(|why| self.unavailable(why))?;
        match first {
            Some(first) if first > size + 1 => Err(self.unavailable(format!(
                "the Merkle tree holds {size} receipts but the oldest one here is at position {first}: the receipts between were archived before the tree was built, so it can never be"
            ))),
            _ => Ok(()),
        }
    }

    fn leaf_index(&self, tenant: &TenantId, seq: u64) -> Result<Option<u64>, LedgerError> {
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        let row = self.with(|client| {
            client
                .query_opt(
                    "SELECT position FROM ggen_receipts WHERE tenant = $1 AND seq = $2",
                    &[&tenant.as_str(), &seq],
                )
                .map_err(database(&self.target, "finding a receipt's position"))
        })?;
        let Some(row) = row else { return Ok(None) };
        let position: i64 = column(&row, 0).map_err(|why| self.unavailable(why))?;
        let index = u64::try_from(position - 1).ok();
        Ok(index.filter(|index| *index < self.size.load(Ordering::Acquire)))
    }

    /// Nothing to do: every extension was committed.
    fn sync(&self) -> Result<(), LedgerError> {
        Ok(())
    }
}

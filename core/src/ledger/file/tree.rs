//! The file ledger's Merkle tree (RFC 9162), kept on disk as the log grows:
//! every receipt a leaf, in append order, across tenants.
//!
//! `tree/` beside the segments holds one file per level — `level-NN`, the
//! hashes of the perfect subtrees of 2^NN leaves in order, 32 bytes each —
//! and `positions`, each leaf's packed log position (8 bytes, little
//! endian, ascending), which maps a receipt found by its tenant and seq to
//! its leaf index by binary search. A proof reads O(log n) nodes; nothing
//! is rebuilt. Appending a leaf writes it and the nodes it completes
//! (amortized two hashes), without a sync.
//!
//! The tree is derived data: the writer appends the leaves of records
//! only once they are durable, and `SYNCED` (written durably after every
//! level file is synced) names the size and root up to which the files are
//! known to be on disk. Opening trusts the files up to that size only —
//! after checking that the stored nodes give the stored root — cuts what
//! lies past it, and appends the rest again from the log's records as the
//! opening scan passes them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::{io_err, lock, replace_durably};
use crate::ledger::LedgerError;
use crate::merkle::{Frontier, Hash, Nodes, ProofError, empty_root};

/// The tree's directory inside the ledger directory.
pub const TREE_DIR: &str = "tree";
/// The file naming the size and root the level files are synced up to.
const SYNCED_FILE: &str = "SYNCED";
const POSITIONS_FILE: &str = "positions";
const SYNCED_HEADER: &str = "ggen-tree 1";

/// Levels from this one up are also held in memory (a 128th of the
/// leaves' hashes, a quarter of a byte per receipt): a proof reads at most
/// this many nodes from disk.
const HELD_FROM: usize = 8;
/// One leaf's position in every this many (a 4 KiB page of `positions`) is
/// held in memory: finding a leaf reads one page.
const PAGE: u64 = 512;

/// `dir/name` to read and write, created if missing (its length is the
/// caller's to cut).
fn open_rw(dir: &Path, name: &str) -> Result<File, LedgerError> {
    let path = dir.join(name);
    fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map(|file| file.into_parts().0)
        .map_err(io_err(&path))
}

/// `path` to read (errors name it).
fn open_read(path: &Path) -> io::Result<File> {
    fs_err::File::open(path).map(|file| file.into_parts().0)
}

fn level_name(level: usize) -> String {
    format!("level-{level:02}")
}

/// The tree of a file ledger (see the module documentation).
#[derive(Debug)]
pub struct FileTree {
    dir: PathBuf,
    /// Leaves whose nodes are all written: what proofs may use.
    size: AtomicU64,
    /// Level files, opened as the tree grows tall enough to need them.
    levels: RwLock<Vec<Arc<File>>>,
    positions: File,
    held: RwLock<Held>,
    builder: Mutex<Builder>,
    /// Held by one `sync` at a time.
    syncing: Mutex<()>,
    /// Set once a write failed: the files no longer match the log, so the
    /// tree answers nothing until the ledger is opened again (which
    /// rebuilds it from the last synced size).
    failed: AtomicBool,
}

/// What the tree holds in memory besides its files.
#[derive(Debug, Default)]
struct Held {
    /// `upper[l]`: every node of level `HELD_FROM + l`.
    upper: Vec<Vec<Hash>>,
    /// The positions of leaves 0, `PAGE`, 2·`PAGE`, …
    pages: Vec<u64>,
}

/// The appending side: the right edge and what a batch writes.
#[derive(Debug, Default)]
struct Builder {
    edge: Frontier,
    /// New nodes per level, written at the end of a batch.
    pending: Vec<Vec<u8>>,
    positions: Vec<u8>,
}

impl FileTree {
    /// Opens (creating if needed) the tree in `ledger/tree`, trusting it up
    /// to its synced size, which it returns (the log's records from that
    /// index on are to be appended again); a tree whose synced nodes do not
    /// give its synced root (damaged, or not written by this code) starts
    /// over from empty. A [`FileLedger`](super::FileLedger) opens and keeps
    /// its own: this is for tools and benchmarks.
    pub fn open(ledger: &Path) -> Result<(FileTree, u64), LedgerError> {
        let dir = ledger.join(TREE_DIR);
        fs_err::create_dir_all(&dir).map_err(io_err(&dir))?;
        let positions = open_rw(&dir, POSITIONS_FILE)?;
        let tree = FileTree {
            dir: dir.clone(),
            size: AtomicU64::new(0),
            levels: RwLock::new(Vec::new()),
            positions,
            held: RwLock::new(Held::default()),
            builder: Mutex::new(Builder::default()),
            syncing: Mutex::new(()),
            failed: AtomicBool::new(false),
        };
        let adopted = match read_synced(&dir) {
            Ok((size, root)) => tree.adopt(size, root).map(|()| size),
            Err(LedgerError::Corrupt { reason, .. }) => Err(reason),
            Err(error) => return Err(error),
        };
        let trusted = match adopted {
            Ok(size) => size,
            Err(why) => {
                tracing::warn!(tree = %dir.display(), %why, "the ledger's Merkle tree is rebuilt from the log");
                tree.adopt(0, empty_root())
                    .map_err(|why| LedgerError::Corrupt {
                        path: dir.clone(),
                        offset: 0,
                        reason: why,
                    })?;
                0
            }
        };
        Ok((tree, trusted))
    }

    /// Cuts every file to the tree of `size` leaves and loads its right
    /// edge, checking it gives `root`.
    fn adopt(&self, size: u64, root: Hash) -> Result<(), String> {
        let cut = |file: &File, len: u64, name: &str| -> Result<(), String> {
            let have = file.metadata().map_err(|e| format!("{name}: {e}"))?.len();
            if have < len {
                return Err(format!("{name} holds {have} bytes, fewer than {len}"));
            }
            file.set_len(len).map_err(|e| format!("{name}: {e}"))
        };
        cut(&self.positions, size * 8, POSITIONS_FILE)?;
        let height = if size == 0 {
            0
        } else {
            64 - size.leading_zeros() as usize
        };
        let mut levels = Vec::with_capacity(height);
        for level in 0..height {
            let file = open_rw(&self.dir, &level_name(level)).map_err(|e| e.to_string())?;
            cut(&file, (size >> level) * 32, &level_name(level))?;
            levels.push(Arc::new(file));
        }
        // Taller levels left by a larger tree hold nothing now.
        for level in height..64 {
            let path = self.dir.join(level_name(level));
            match fs_err::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(format!("{}: {e}", path.display()));
                }
                _ => {}
            }
        }
        let mut held = Held::default();
        for (level, file) in levels.iter().enumerate().skip(HELD_FROM) {
            let mut bytes = vec![0; ((size >> level) * 32) as usize];
            file.read_exact_at(&mut bytes, 0)
                .map_err(|e| format!("{}: {e}", level_name(level)))?;
            held.upper.push(
                bytes
                    .chunks_exact(32)
                    .map(|h| h.try_into().unwrap_or([0; 32]))
                    .collect(),
            );
        }
        for index in (0..size).step_by(PAGE as usize) {
            let mut position = [0; 8];
            self.positions
                .read_exact_at(&mut position, index * 8)
                .map_err(|e| format!("{POSITIONS_FILE}: {e}"))?;
            held.pages.push(u64::from_le_bytes(position));
        }
        *self.held.write().unwrap_or_else(|e| e.into_inner()) = held;
        *self.levels.write().unwrap_or_else(|e| e.into_inner()) = levels;
        self.size.store(size, Ordering::Release);
        let builder = Builder {
            edge: Frontier::load(size, |level, index| self.node(level, index))
                .map_err(|e| e.to_string())?,
            ..Builder::default()
        };
        if builder.edge.root() != root {
            return Err(format!(
                "its nodes do not give the root `{}` it was synced with",
                hex::encode(root)
            ));
        }
        *lock(&self.builder) = builder;
        Ok(())
    }

    /// Appends leaves (their [`leaf_hash`](crate::merkle::leaf_hash) and
    /// the record's packed log position), writing every node they
    /// complete; no sync. A failed write stops the tree (see `failed`).
    pub fn push(&self, leaves: &[(Hash, u64)]) {
        if leaves.is_empty() || self.failed.load(Ordering::Acquire) {
            return;
        }
        let mut builder = lock(&self.builder);
        let start = builder.edge.size();
        let Builder {
            edge,
            pending,
            positions,
        } = &mut *builder;
        for (leaf, position) in leaves {
            positions.extend_from_slice(&position.to_le_bytes());
            edge.push_with(*leaf, |level, _, node| {
                let level = level as usize;
                if pending.len() <= level {
                    pending.resize_with(level + 1, Vec::new);
                }
                pending[level].extend_from_slice(node);
            });
        }
        let b = &mut *builder;
        if let Err(error) = self.write(b, start) {
            tracing::error!(tree = %self.dir.display(), %error, "the ledger's Merkle tree cannot be written: no checkpoints or proofs until the ledger is opened again");
            self.failed.store(true, Ordering::Release);
            return;
        }
        self.size.store(b.edge.size(), Ordering::Release);
    }

    fn write(&self, b: &mut Builder, start: u64) -> io::Result<()> {
        self.positions.write_all_at(&b.positions, start * 8)?;
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        // Leaf `start + i`'s position is at `8 i` of the batch's bytes.
        let first_page = start.div_ceil(PAGE) * PAGE;
        for index in (first_page..b.edge.size()).step_by(PAGE as usize) {
            let at = ((index - start) * 8) as usize;
            let bytes: [u8; 8] = b.positions[at..at + 8].try_into().unwrap_or([0; 8]);
            held.pages.push(u64::from_le_bytes(bytes));
        }
        b.positions.clear();
        for (level, bytes) in b.pending.iter().enumerate().skip(HELD_FROM) {
            if held.upper.len() <= level - HELD_FROM {
                held.upper.resize_with(level - HELD_FROM + 1, Vec::new);
            }
            held.upper[level - HELD_FROM].extend(
                bytes
                    .chunks_exact(32)
                    .map(|h| h.try_into().unwrap_or([0; 32])),
            );
        }
        drop(held);
        let mut levels = self.levels.write().unwrap_or_else(|e| e.into_inner());
        for (level, bytes) in b.pending.iter_mut().enumerate() {
            if bytes.is_empty() {
                continue;
            }
            if levels.len() <= level {
                let path = self.dir.join(level_name(level));
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)?;
                levels.push(Arc::new(file));
            }
            levels[level].write_all_at(bytes, (start >> level) * 32)?;
            bytes.clear();
        }
        Ok(())
    }

    /// Syncs every file, then records durably the size and root they hold.
    pub fn sync(&self) -> Result<(), LedgerError> {
        self.sync_size().map(|_| ())
    }

    /// [`FileTree::sync`], returning the size it made durable.
    pub(super) fn sync_size(&self) -> Result<u64, LedgerError> {
        self.check()?;
        // One sync at a time (they share `SYNCED`'s temporary); appends go
        // on meanwhile: the files hold at least the size taken here.
        let _one = lock(&self.syncing);
        let (size, root) = {
            let builder = lock(&self.builder);
            (builder.edge.size(), builder.edge.root())
        };
        let levels = self
            .levels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (level, file) in levels.iter().enumerate() {
            file.sync_data()
                .map_err(io_err(&self.dir.join(level_name(level))))?;
        }
        self.positions
            .sync_data()
            .map_err(io_err(&self.dir.join(POSITIONS_FILE)))?;
        self.write_synced(size, root)?;
        Ok(size)
    }

    fn write_synced(&self, size: u64, root: Hash) -> Result<(), LedgerError> {
        let text = format!("{SYNCED_HEADER}\n{size}\n{}\n", hex::encode(root));
        replace_durably(&self.dir, SYNCED_FILE, text.as_bytes())
    }

    fn check(&self) -> Result<(), LedgerError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(LedgerError::Corrupt {
                path: self.dir.clone(),
                offset: 0,
                reason: "a write of the Merkle tree failed; it is rebuilt when the ledger is opened again".to_owned(),
            });
        }
        Ok(())
    }

    /// The size and root of the tree of every durable record.
    pub fn head(&self) -> Result<(u64, Hash), LedgerError> {
        self.check()?;
        let builder = lock(&self.builder);
        Ok((builder.edge.size(), builder.edge.root()))
    }

    /// The leaf index of the record at packed log `position`, if it is one.
    pub fn leaf_at(&self, position: u64) -> Result<Option<u64>, LedgerError> {
        self.check()?;
        let size = self.size.load(Ordering::Acquire);
        // The page whose first position is the last at or before `position`
        // (positions ascend), from memory; then that page, from the file.
        let page = {
            let held = self.held.read().unwrap_or_else(|e| e.into_inner());
            match held.pages.partition_point(|first| *first <= position) {
                0 => return Ok(None),
                after => (after - 1) as u64,
            }
        };
        let start = page * PAGE;
        let end = (start + PAGE).min(size);
        if start >= end {
            return Ok(None);
        }
        let mut bytes = vec![0; ((end - start) * 8) as usize];
        self.positions
            .read_exact_at(&mut bytes, start * 8)
            .map_err(io_err(&self.dir.join(POSITIONS_FILE)))?;
        let found = bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect::<Vec<_>>()
            .binary_search(&position);
        Ok(found.ok().map(|i| start + i as u64))
    }
}

impl Nodes for FileTree {
    fn size(&self) -> u64 {
        if self.failed.load(Ordering::Acquire) {
            return 0;
        }
        self.size.load(Ordering::Acquire)
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        let fail = |detail: String| ProofError::Store {
            level,
            index,
            detail,
        };
        if level >= 64 || index >= self.size.load(Ordering::Acquire) >> level {
            return Err(fail("not in the tree".to_owned()));
        }
        if let Some(upper) = (level as usize).checked_sub(HELD_FROM) {
            return self
                .held
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .upper
                .get(upper)
                .and_then(|nodes| nodes.get(index as usize))
                .copied()
                .ok_or_else(|| fail("not held".to_owned()));
        }
        let file = self
            .levels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(level as usize)
            .cloned()
            .ok_or_else(|| fail("its level has no file".to_owned()))?;
        let mut hash = [0; 32];
        file.read_exact_at(&mut hash, index * 32)
            .map_err(|e| fail(e.to_string()))?;
        Ok(hash)
    }
}

/// `SYNCED`'s size and root; the empty tree when there is none.
fn read_synced(dir: &Path) -> Result<(u64, Hash), LedgerError> {
    let path = dir.join(SYNCED_FILE);
    let text = match fs_err::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, empty_root())),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let bad = || LedgerError::Corrupt {
        path: path.clone(),
        offset: 0,
        reason: "not a tree size and root".to_owned(),
    };
    let mut lines = text.lines();
    if lines.next() != Some(SYNCED_HEADER) {
        return Err(bad());
    }
    let size = lines
        .next()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let root = lines
        .next()
        .and_then(|s| hex::decode(s).ok())
        .and_then(|b| <Hash>::try_from(b).ok())
        .ok_or_else(bad)?;
    Ok((size, root))
}

impl FileTree {
    /// Empties the tree (before it is built again from the whole log).
    pub(super) fn reset(&self) -> Result<(), LedgerError> {
        // First: a crash during the rebuild must not find the old size
        // vouching for files cut short.
        self.write_synced(0, empty_root())?;
        self.adopt(0, empty_root())
            .map_err(|reason| LedgerError::Corrupt {
                path: self.dir.clone(),
                offset: 0,
                reason,
            })
    }
}

/// Records handed to the fill's worker at a time, at most…
const FILL_BATCH: usize = 4096;
/// …and at most about this many bytes of them (records may be large).
const FILL_BYTES: usize = 8 << 20;

/// Records of the log, copied for the fill's worker.
#[derive(Debug, Default)]
struct Batch {
    /// Their receipt bytes, one after the other.
    bytes: Vec<u8>,
    /// Each record's position and the end of its bytes in `bytes`.
    records: Vec<(u64, usize)>,
}

/// The tree's side of the opening scan: checks the leaves the tree already
/// has against the log's records (their hash and position), and appends
/// the records past them. The hashing runs on a worker thread beside the
/// scan, which only copies each record's bytes.
#[derive(Debug)]
pub(super) struct Fill {
    trusted: u64,
    /// Records visited (their index in the log, from the first local one).
    next: u64,
    batch: Batch,
    sender: Option<std::sync::mpsc::SyncSender<Batch>>,
    worker: Option<std::thread::JoinHandle<Result<Arc<FileTree>, String>>>,
}

impl Fill {
    /// Checks and continues `tree` (trusted up to `trusted` leaves) from
    /// the record of index `first` on: `None` when it cannot be, as
    /// records before `first` were archived and the tree lacks them.
    pub(super) fn new(
        tree: Arc<FileTree>,
        trusted: u64,
        first: u64,
    ) -> Result<Option<Fill>, LedgerError> {
        if first > trusted {
            return Ok(None);
        }
        let reader = |name: &str, at: u64| -> Result<io::BufReader<File>, LedgerError> {
            let path = tree.dir.join(name);
            let file = open_read(&path).map_err(io_err(&path))?;
            let mut reader = io::BufReader::with_capacity(64 << 10, file);
            io::Seek::seek(&mut reader, io::SeekFrom::Start(at)).map_err(io_err(&path))?;
            Ok(reader)
        };
        let stored = if trusted > first {
            Some((
                reader(&level_name(0), first * 32)?,
                reader(POSITIONS_FILE, first * 8)?,
            ))
        } else {
            None
        };
        let (sender, batches) = std::sync::mpsc::sync_channel::<Batch>(4);
        let worker = std::thread::Builder::new()
            .name("ledger-tree".to_owned())
            .spawn(move || fill(&tree, trusted, first, stored, &batches).map(|()| tree))
            .map_err(io_err(Path::new("ledger-tree thread")))?;
        Ok(Some(Fill {
            trusted,
            next: first,
            batch: Batch::default(),
            sender: Some(sender),
            worker: Some(worker),
        }))
    }

    /// The log's next record, at packed `position`.
    pub(super) fn record(&mut self, position: u64, bytes: &[u8]) {
        self.next += 1;
        self.batch.bytes.extend_from_slice(bytes);
        self.batch.records.push((position, self.batch.bytes.len()));
        if self.batch.records.len() >= FILL_BATCH || self.batch.bytes.len() >= FILL_BYTES {
            self.send();
        }
    }

    fn send(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        if let Some(sender) = &self.sender
            && sender.send(batch).is_err()
        {
            // The worker stopped at a mismatch: `finish` reports it.
            self.sender = None;
        }
    }

    /// After the scan: the tree, or why it must be built again from the
    /// whole log.
    pub(super) fn finish(mut self) -> Result<Arc<FileTree>, String> {
        self.send();
        self.sender = None;
        let tree = self
            .worker
            .take()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err("its worker panicked".to_owned()))
            })
            .unwrap_or_else(|| Err("no worker".to_owned()))?;
        if self.next < self.trusted {
            return Err(format!(
                "it holds {} leaves, the log only {} records",
                self.trusted, self.next
            ));
        }
        Ok(tree)
    }
}

/// The fill's worker: hashes every record of `batches` (the first of index
/// `first`), compares the leaves below `trusted` with the stored ones and
/// appends the others; stops at the first mismatch.
fn fill(
    tree: &FileTree,
    trusted: u64,
    first: u64,
    mut stored: Option<(io::BufReader<File>, io::BufReader<File>)>,
    batches: &std::sync::mpsc::Receiver<Batch>,
) -> Result<(), String> {
    let mut index = first;
    let mut pending = Vec::with_capacity(FILL_BATCH);
    // Interior nodes are checked only from the first leaf: with archived
    // records, the nodes over them cannot be recomputed.
    let mut inner = (first == 0).then(|| Inner {
        dir: &tree.dir,
        edge: Frontier::new(),
        readers: Vec::new(),
    });
    for batch in batches {
        let mut start = 0;
        for &(position, end) in &batch.records {
            let leaf = crate::merkle::leaf_hash(&batch.bytes[start..end]);
            start = end;
            if index >= trusted {
                pending.push((leaf, position));
            } else if let Some((leaves, positions)) = &mut stored {
                let mut stored_leaf = [0; 32];
                let mut stored_position = [0; 8];
                io::Read::read_exact(leaves, &mut stored_leaf)
                    .and_then(|()| io::Read::read_exact(positions, &mut stored_position))
                    .map_err(|error| format!("leaf {index} cannot be read: {error}"))?;
                if stored_leaf != leaf {
                    return Err(format!(
                        "leaf {index} is not the hash of the log's record {index}"
                    ));
                }
                if u64::from_le_bytes(stored_position) != position {
                    return Err(format!(
                        "leaf {index} is not at the log position of record {index}"
                    ));
                }
                if let Some(inner) = &mut inner {
                    inner.check(leaf)?;
                }
            }
            index += 1;
        }
        tree.push(&pending);
        pending.clear();
    }
    Ok(())
}

/// The interior nodes of a stored tree, recomputed from its checked leaves
/// and compared with the level files as they complete (each level's in
/// order, so each file is read once, front to back).
struct Inner<'a> {
    dir: &'a Path,
    edge: Frontier,
    readers: Vec<io::BufReader<File>>,
}

impl Inner<'_> {
    /// The next leaf (checked), and every node it completes.
    fn check(&mut self, leaf: Hash) -> Result<(), String> {
        let Inner { dir, edge, readers } = self;
        let mut bad = Ok(());
        edge.push_with(leaf, |level, index, node| {
            if level == 0 || bad.is_err() {
                return;
            }
            bad = compare(dir, readers, level as usize, index, node);
        });
        bad
    }
}

/// Compares `node`, the next of `level`, with the level file's next hash.
fn compare(
    dir: &Path,
    readers: &mut Vec<io::BufReader<File>>,
    level: usize,
    index: u64,
    node: &Hash,
) -> Result<(), String> {
    while readers.len() < level {
        let file =
            open_read(&dir.join(level_name(readers.len() + 1))).map_err(|e| e.to_string())?;
        readers.push(io::BufReader::with_capacity(16 << 10, file));
    }
    let mut stored = [0; 32];
    io::Read::read_exact(&mut readers[level - 1], &mut stored)
        .map_err(|e| format!("node {level}/{index} cannot be read: {e}"))?;
    if stored != *node {
        return Err(format!(
            "node {level}/{index} is not the hash of its children"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ledger::file::{FileLedger, FileOptions};
    use crate::ledger::{Entry, Ledger};
    use crate::merkle::{MemoryTree, leaf_hash};
    use crate::tenant::TenantId;

    /// Appends `n` receipts spread over three tenants; returns their
    /// bytes in append order.
    fn append(ledger: &FileLedger, n: usize, salt: &str) -> Vec<(TenantId, u64, Vec<u8>)> {
        let mut out = Vec::new();
        for i in 0..n {
            let tenant = TenantId::new(["acme", "globex", "initech"][i % 3]).unwrap();
            let head = ledger.head(&tenant);
            let bytes = format!(
                r#"{{"tenant":"{tenant}","seq":{},"prev":"{}","note":"{salt}{i}"}}"#,
                head.seq + 1,
                hex::encode(head.hash)
            )
            .into_bytes();
            let appended = ledger
                .append(Entry {
                    tenant: tenant.clone(),
                    seq: head.seq + 1,
                    prev: head.hash,
                    bytes: bytes.clone(),
                })
                .unwrap();
            let _ = appended;
            out.push((tenant, head.seq + 1, bytes));
        }
        ledger.flush().unwrap();
        out
    }

    fn memory(records: &[(TenantId, u64, Vec<u8>)]) -> MemoryTree {
        let mut tree = MemoryTree::new();
        for (_, _, bytes) in records {
            tree.push(leaf_hash(bytes));
        }
        tree
    }

    fn small() -> FileOptions {
        FileOptions {
            segment_bytes: 4096,
            ..FileOptions::default()
        }
    }

    /// The tree a ledger keeps is the RFC 9162 tree of its records in
    /// append order: same root, same proofs, and every receipt's leaf found.
    fn assert_same(ledger: &FileLedger, records: &[(TenantId, u64, Vec<u8>)]) {
        let expected = memory(records);
        let tree = ledger.tree().expect("a tree");
        assert_eq!(tree.latest().unwrap(), (expected.size(), expected.root()));
        assert_eq!(tree.size(), expected.size());
        for (index, (tenant, seq, _)) in records.iter().enumerate() {
            let index = index as u64;
            assert_eq!(tree.leaf_index(tenant, *seq).unwrap(), Some(index));
            let size = expected.size();
            assert_eq!(
                tree.inclusion_proof(index, size).unwrap(),
                expected.inclusion_proof(index, size).unwrap()
            );
        }
        for first in [1, records.len() as u64 / 2, records.len() as u64] {
            assert_eq!(
                tree.consistency_proof(first, expected.size()).unwrap(),
                expected.consistency_proof(first, expected.size()).unwrap()
            );
        }
        assert_eq!(
            tree.leaf_index(&TenantId::new("nobody").unwrap(), 1)
                .unwrap(),
            None
        );
        assert_eq!(tree.leaf_index(&records[0].0, 10_000).unwrap(), None);
    }

    #[test]
    fn the_tree_follows_appends_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = {
            let ledger = FileLedger::open(dir.path(), small()).unwrap();
            let records = append(&ledger, 77, "a");
            assert_same(&ledger, &records);
            records
        };
        // Closed cleanly: the tree was synced and is taken as it is.
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        assert_same(&ledger, &records);
        records.extend(append(&ledger, 50, "b"));
        assert_same(&ledger, &records);
    }

    #[test]
    fn an_unsynced_or_damaged_tree_is_built_again_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let records = {
            let ledger = FileLedger::open(dir.path(), small()).unwrap();
            append(&ledger, 40, "a")
        };
        let tree_dir = dir.path().join(TREE_DIR);
        let level0 = tree_dir.join(level_name(0));
        // A crash before the first sync: no SYNCED file.
        fs_err::remove_file(tree_dir.join(SYNCED_FILE)).unwrap();
        drop(FileLedger::open(dir.path(), small()).unwrap());
        // A leaf rewritten on disk (SYNCED still names the old root).
        let mut bytes = fs_err::read(&level0).unwrap();
        bytes[32 * 5] ^= 1;
        fs_err::write(&level0, &bytes).unwrap();
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        assert_same(&ledger, &records);
        drop(ledger);
        // A leaf and the root both rewritten: the leaf no longer hashes the
        // log's record, which the opening scan checks.
        let mut bytes = fs_err::read(&level0).unwrap();
        bytes[32 * 39] ^= 1;
        fs_err::write(&level0, &bytes).unwrap();
        let synced = fs_err::read_to_string(tree_dir.join(SYNCED_FILE)).unwrap();
        let mut peaks = MemoryTree::new();
        for leaf in bytes.chunks(32) {
            peaks.push(leaf.try_into().unwrap());
        }
        let forged = synced.replace(synced.lines().nth(2).unwrap(), &hex::encode(peaks.root()));
        fs_err::write(tree_dir.join(SYNCED_FILE), forged).unwrap();
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        assert_same(&ledger, &records);
        drop(ledger);
        // An interior node rewritten (not on the right edge, so the root in
        // SYNCED still holds): recomputed from the leaves on open.
        let level1 = tree_dir.join(level_name(1));
        let mut nodes = fs_err::read(&level1).unwrap();
        nodes[32 * 3 + 7] ^= 1;
        fs_err::write(&level1, &nodes).unwrap();
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        assert_same(&ledger, &records);
        drop(ledger);
        // Files cut short, and garbage in SYNCED.
        fs_err::write(&level0, &bytes[..64]).unwrap();
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        assert_same(&ledger, &records);
        drop(ledger);
        fs_err::write(tree_dir.join(SYNCED_FILE), "nonsense").unwrap();
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        assert_same(&ledger, &records);
    }

    #[test]
    fn a_tree_longer_than_its_log_is_built_again() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let records = {
            let ledger = FileLedger::open(dir.path(), small()).unwrap();
            append(&ledger, 10, "a")
        };
        {
            let ledger = FileLedger::open(other.path(), small()).unwrap();
            append(&ledger, 30, "z");
        }
        // The tree of another, longer ledger put in place of this one's.
        fs_err::remove_dir_all(dir.path().join(TREE_DIR)).unwrap();
        copy_dir(&other.path().join(TREE_DIR), &dir.path().join(TREE_DIR));
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        assert_same(&ledger, &records);
    }

    #[test]
    fn a_ledger_opened_without_a_tree_keeps_none() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = FileLedger::open(
            dir.path(),
            FileOptions {
                tree: false,
                ..small()
            },
        )
        .unwrap();
        append(&ledger, 3, "a");
        assert!(ledger.tree().is_none());
        assert!(!dir.path().join(TREE_DIR).exists());
        drop(ledger);
        // A later open with one builds it from the whole log.
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        assert_eq!(ledger.tree().unwrap().size(), 3);
    }

    /// Past the levels and pages held in memory: every node, root, proof
    /// and leaf lookup matches the tree in memory, before and after a
    /// reopen, whatever the batch sizes.
    #[test]
    fn a_large_tree_reads_the_same_from_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3 * PAGE + 17;
        let leaf = |i: u64| (leaf_hash(&i.to_le_bytes()), 10 + i * 7);
        let mut expected = MemoryTree::new();
        {
            let (tree, trusted) = FileTree::open(dir.path()).unwrap();
            assert_eq!(trusted, 0);
            let mut i = 0;
            for batch in [1u64, 2, 300, 511, 1, 700].iter().cycle() {
                let end = (i + batch).min(n);
                let leaves: Vec<_> = (i..end).map(leaf).collect();
                tree.push(&leaves);
                for (hash, _) in &leaves {
                    expected.push(*hash);
                }
                i = end;
                if i == n {
                    break;
                }
            }
            check_large(&tree, &expected, n, &leaf);
            tree.sync().unwrap();
        }
        let (tree, trusted) = FileTree::open(dir.path()).unwrap();
        assert_eq!(trusted, n);
        check_large(&tree, &expected, n, &leaf);
    }

    fn check_large(
        tree: &FileTree,
        expected: &MemoryTree,
        n: u64,
        leaf: &dyn Fn(u64) -> (Hash, u64),
    ) {
        assert_eq!(tree.head().unwrap(), (n, expected.root()));
        for level in 0..12u32 {
            for index in 0..(n >> level) {
                assert_eq!(tree.node(level, index), expected.node(level, index));
            }
        }
        for index in (0..n).step_by(37) {
            assert_eq!(
                tree.inclusion_proof(index, n).unwrap(),
                expected.inclusion_proof(index, n).unwrap()
            );
            assert_eq!(tree.leaf_at(leaf(index).1).unwrap(), Some(index));
            assert_eq!(tree.leaf_at(leaf(index).1 + 1).unwrap(), None);
        }
        assert_eq!(tree.leaf_at(leaf(n - 1).1).unwrap(), Some(n - 1));
        assert_eq!(tree.leaf_at(0).unwrap(), None);
        assert_eq!(tree.leaf_at(u64::MAX).unwrap(), None);
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs_err::create_dir_all(to).unwrap();
        for entry in fs_err::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            fs_err::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any run of appends and reopenings (clean, or with the tree's
        /// unsynced tail lost) keeps the tree of exactly the log's records.
        #[test]
        fn the_tree_is_always_the_logs(steps in proptest::collection::vec((1usize..40, any::<bool>()), 1..6)) {
            let dir = tempfile::tempdir().unwrap();
            let mut records = Vec::new();
            for (round, (n, lose)) in steps.into_iter().enumerate() {
                let ledger = FileLedger::open(dir.path(), small()).unwrap();
                records.extend(append(&ledger, n, &format!("r{round}-")));
                assert_same(&ledger, &records);
                drop(ledger);
                if lose {
                    // As if the last sync never happened.
                    fs_err::remove_file(dir.path().join(TREE_DIR).join(SYNCED_FILE)).unwrap();
                }
            }
        }
    }
}

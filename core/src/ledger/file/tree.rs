//! The file ledger's Merkle tree (RFC 9162), kept on disk as the log grows:
//! every receipt a leaf, in append order, across tenants.
//!
//! `tree/` beside the segments holds one file per level — `level-NN`, the
//! hashes of the perfect subtrees of 2^NN leaves in order, 32 bytes each —
//! and `positions`, each leaf's packed log position (8 bytes, little
//! endian, ascending), which maps a receipt found by its tenant and seq to
//! its leaf index by binary search. A proof reads O(log n) nodes; nothing
//! is rebuilt. Appending a leaf hashes the nodes it completes (amortized
//! two hashes); each file's newest entries wait in memory until they fill
//! [`WRITE_AT`] bytes or the tree is synced, then go out in one write (a
//! write per level per group commit made the writer thread's `pwrite`s
//! ten per sync, and every one dirtied an inode the log's `fdatasync`
//! then wrote too).
//!
//! Retention cuts the log's oldest segments; the tree then lets go of
//! what no proof can use any more ([`FileTree::prune`]): of the nodes over
//! archived receipts it keeps, per level, only the one just left of the
//! first local receipt's ancestor, which inclusion proofs of local
//! receipts and consistency proofs from sizes past the cut need. The
//! level files' and `positions`' archived parts are punched out (the files
//! become sparse: their offsets stay, their blocks are freed) and the
//! nodes and pages held in memory for them dropped, so disk and memory
//! follow the retention, not the ledger's whole history.
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
pub(crate) const SYNCED_FILE: &str = "SYNCED";
const POSITIONS_FILE: &str = "positions";
const SYNCED_HEADER: &str = "ggen-tree 1";

/// Levels from this one up are also held in memory (a 128th of the
/// leaves' hashes, a quarter of a byte per receipt): a proof reads at most
/// this many nodes from disk.
const HELD_FROM: usize = 8;
/// One leaf's position in every this many (a 4 KiB page of `positions`) is
/// held in memory: finding a leaf reads one page.
const PAGE: u64 = 512;
/// A file's unwritten entries are written once they reach this many bytes
/// (and all of them when the tree is synced): a group commit of a few
/// dozen receipts adds about a kilobyte to level 0, and half as much to
/// each level above.
pub(crate) const WRITE_AT: usize = 8 << 10;

/// `dir/name` to read and write, created if missing (its length is the
/// caller's to cut).
fn open_rw(dir: &Path, name: &str) -> Result<File, LedgerError> {
    let path = dir.join(name);
    super::no_links(
        fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
    )
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
    /// Leaves before this one are archived: only the nodes [`kept_from`]
    /// on are kept.
    pruned: AtomicU64,
    /// Set once punching holes failed (said once: the file system cannot,
    /// and archived nodes keep their disk blocks).
    unpunched: AtomicBool,
}

/// What the tree holds in memory besides its files.
#[derive(Debug, Default)]
struct Held {
    /// `upper[l]`: the nodes of level `HELD_FROM + l`, from those kept on.
    upper: Vec<HeldLevel>,
    /// The positions of leaves `page_base`·`PAGE`, (`page_base` + 1)·`PAGE`, …
    pages: Vec<u64>,
    page_base: u64,
}

/// One level's nodes held in memory: those of index `base` on.
#[derive(Debug, Default)]
struct HeldLevel {
    base: u64,
    nodes: Vec<Hash>,
}

impl HeldLevel {
    fn get(&self, index: u64) -> Option<Hash> {
        let at = index.checked_sub(self.base)?;
        self.nodes.get(usize::try_from(at).ok()?).copied()
    }
}

/// The first node of `level` a tree whose leaves before `pruned` were
/// archived keeps: the left sibling of the first local leaf's ancestor
/// there, which its proofs (and those of every later leaf) may need.
fn kept_from(level: usize, pruned: u64) -> u64 {
    (pruned >> level).saturating_sub(1)
}

/// Drops the first `n` of `items` (all, if fewer), freeing the memory
/// once most of it is unused; returns how many went.
fn drop_front<T>(items: &mut Vec<T>, n: u64) -> u64 {
    let n = usize::try_from(n).unwrap_or(usize::MAX).min(items.len());
    items.drain(..n);
    if items.capacity() > 4 * items.len().max(64) {
        items.shrink_to_fit();
    }
    n as u64
}

/// Frees the blocks of `file`'s first `len` bytes (rounded down to whole
/// 4 KiB blocks), keeping its size and offsets.
fn punch(file: &File, len: u64) -> io::Result<()> {
    let len = len / 4096 * 4096;
    if len == 0 {
        return Ok(());
    }
    use rustix::fs::FallocateFlags;
    rustix::fs::fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        0,
        len,
    )
    .map_err(io::Error::from)
}

/// The appending side: the right edge and the entries not yet written.
#[derive(Debug, Default)]
struct Builder {
    edge: Frontier,
    /// Per level, its newest nodes, not yet in its file.
    pending: Vec<Vec<u8>>,
    /// The newest leaves' positions, not yet in `positions`.
    positions: Vec<u8>,
}

impl Builder {
    /// Nodes of `level` in its file: those before the pending ones.
    fn written(&self, level: usize) -> u64 {
        let pending = self.pending.get(level).map_or(0, Vec::len) / 32;
        (self.edge.size() >> level) - pending as u64
    }

    /// Leaves whose positions are in the `positions` file.
    fn positions_written(&self) -> u64 {
        self.edge.size() - (self.positions.len() / 8) as u64
    }
}

impl FileTree {
    /// Opens (creating if needed) the tree in `ledger/tree`, trusting it up
    /// to its synced size, which it returns (the log's records from that
    /// index on are to be appended again); a tree whose synced nodes do not
    /// give its synced root (damaged, or not written by this code) starts
    /// over from empty. A [`FileLedger`](super::FileLedger) opens and keeps
    /// its own: this is for tools and benchmarks.
    pub fn open(ledger: &Path) -> Result<(FileTree, u64), LedgerError> {
        FileTree::open_pruned(ledger, 0)
    }

    /// [`FileTree::open`] of a ledger whose first `pruned` receipts were
    /// archived: nothing over them is read but what [`kept_from`] keeps,
    /// and their blocks are freed (again, should a crash have come between
    /// the cut and the last prune).
    pub(super) fn open_pruned(ledger: &Path, pruned: u64) -> Result<(FileTree, u64), LedgerError> {
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
            pruned: AtomicU64::new(pruned),
            unpunched: AtomicBool::new(false),
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
        tree.punch_archived(pruned);
        Ok((tree, trusted))
    }

    /// Lets go of what the leaves before `first` needed (archived: see the
    /// module documentation); a tree already pruned further keeps its
    /// prune. Nodes over them are no longer answered.
    pub fn prune(&self, first: u64) {
        let pruned = self.pruned.fetch_max(first, Ordering::AcqRel).max(first);
        {
            let mut guard = self.held.write().unwrap_or_else(|e| e.into_inner());
            let held = &mut *guard;
            for (l, level) in held.upper.iter_mut().enumerate() {
                let keep = kept_from(HELD_FROM + l, pruned);
                level.base += drop_front(&mut level.nodes, keep.saturating_sub(level.base));
            }
            let page_base = pruned / PAGE;
            let dropped = drop_front(&mut held.pages, page_base.saturating_sub(held.page_base));
            held.page_base += dropped;
        }
        self.punch_archived(pruned);
    }

    /// Frees the blocks of every file's part that only archived leaves
    /// needed (whole pages of `positions`, each level's nodes before its
    /// kept one). A file system that cannot punch holes keeps them: said
    /// once.
    fn punch_archived(&self, pruned: u64) {
        if pruned == 0 || self.unpunched.load(Ordering::Acquire) {
            return;
        }
        let levels = self
            .levels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let punched =
            punch(&self.positions, (pruned / PAGE * PAGE).saturating_mul(8)).and_then(|()| {
                levels.iter().enumerate().try_for_each(|(level, file)| {
                    punch(file, kept_from(level, pruned).saturating_mul(32))
                })
            });
        if let Err(error) = punched
            && !self.unpunched.swap(true, Ordering::AcqRel)
        {
            tracing::warn!(tree = %self.dir.display(), %error, "cannot free the blocks of the Merkle tree's archived nodes: the tree keeps about 72 bytes per archived receipt on disk");
        }
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
        // A size no file can hold (crafted) is a tree to rebuild, not an overflow.
        let past = || format!("its size `{size}` is past any tree's");
        cut(
            &self.positions,
            size.checked_mul(8).ok_or_else(past)?,
            POSITIONS_FILE,
        )?;
        let height = if size == 0 {
            0
        } else {
            64 - size.leading_zeros() as usize
        };
        let mut levels = Vec::with_capacity(height);
        for level in 0..height {
            let file = open_rw(&self.dir, &level_name(level)).map_err(|e| e.to_string())?;
            let len = (size >> level).checked_mul(32).ok_or_else(past)?;
            cut(&file, len, &level_name(level))?;
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
        let pruned = self.pruned.load(Ordering::Acquire);
        let mut held = Held {
            page_base: pruned / PAGE,
            ..Held::default()
        };
        for (level, file) in levels.iter().enumerate().skip(HELD_FROM) {
            let base = kept_from(level, pruned).min(size >> level);
            let mut bytes = vec![0; (((size >> level) - base) * 32) as usize];
            file.read_exact_at(&mut bytes, base * 32)
                .map_err(|e| format!("{}: {e}", level_name(level)))?;
            held.upper.push(HeldLevel {
                base,
                nodes: bytes
                    .chunks_exact(32)
                    .map(|h| h.try_into().unwrap_or([0; 32]))
                    .collect(),
            });
        }
        for index in (held.page_base * PAGE..size).step_by(PAGE as usize) {
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
    /// the record's packed log position) and every node they complete,
    /// writing the files whose unwritten entries reached `WRITE_AT`
    /// bytes; no sync. A failed write stops the tree (see `failed`).
    pub fn push(&self, leaves: &[(Hash, u64)]) {
        if leaves.is_empty() || self.failed.load(Ordering::Acquire) {
            return;
        }
        let mut builder = lock(&self.builder);
        let start = builder.edge.size();
        // Where this batch's entries start in the unwritten ones.
        let mut marks = [0; 64];
        for (mark, pending) in marks.iter_mut().zip(&builder.pending) {
            *mark = pending.len();
        }
        let positions_mark = builder.positions.len();
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
        self.hold(b, start, &marks, positions_mark);
        if let Err(error) = self.write(b, false) {
            self.stop(&error);
            return;
        }
        self.size.store(b.edge.size(), Ordering::Release);
    }

    /// After a failed write: the files no longer match the log.
    fn stop(&self, error: &io::Error) {
        tracing::error!(tree = %self.dir.display(), %error, "the ledger's Merkle tree cannot be written: no checkpoints or proofs until the ledger is opened again");
        self.failed.store(true, Ordering::Release);
    }

    /// Copies into memory what it keeps of a batch of leaves from `start`
    /// on (their entries start at `marks[level]` of each level's unwritten
    /// nodes, at `positions_mark` of the unwritten positions).
    fn hold(&self, b: &Builder, start: u64, marks: &[usize; 64], positions_mark: usize) {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        // Leaf `start + i`'s position is at `positions_mark + 8 i`.
        let first_page = start.div_ceil(PAGE) * PAGE;
        for index in (first_page..b.edge.size()).step_by(PAGE as usize) {
            let at = positions_mark + ((index - start) * 8) as usize;
            let bytes: [u8; 8] = b.positions[at..at + 8].try_into().unwrap_or([0; 8]);
            held.pages.push(u64::from_le_bytes(bytes));
        }
        let pruned = self.pruned.load(Ordering::Acquire);
        for (level, pending) in b.pending.iter().enumerate().skip(HELD_FROM) {
            let bytes = &pending[marks.get(level).copied().unwrap_or(0)..];
            while held.upper.len() <= level - HELD_FROM {
                // A new top level: its first node is this batch's.
                let base = kept_from(HELD_FROM + held.upper.len(), pruned);
                held.upper.push(HeldLevel {
                    base,
                    nodes: Vec::new(),
                });
            }
            held.upper[level - HELD_FROM].nodes.extend(
                bytes
                    .chunks_exact(32)
                    .map(|h| h.try_into().unwrap_or([0; 32])),
            );
        }
    }

    /// Writes the unwritten entries of every file that has [`WRITE_AT`]
    /// bytes of them (`all`: of every file).
    fn write(&self, b: &mut Builder, all: bool) -> io::Result<()> {
        let due = |bytes: &Vec<u8>| !bytes.is_empty() && (all || bytes.len() >= WRITE_AT);
        if due(&b.positions) {
            self.positions
                .write_all_at(&b.positions, b.positions_written() * 8)?;
            b.positions.clear();
        }
        let mut levels = self.levels.write().unwrap_or_else(|e| e.into_inner());
        for level in 0..b.pending.len() {
            if !due(&b.pending[level]) {
                continue;
            }
            let at = b.written(level) * 32;
            let bytes = &mut b.pending[level];
            if levels.len() <= level {
                let path = self.dir.join(level_name(level));
                let file = super::create_no_link(&path)?.into_parts().0;
                levels.push(Arc::new(file));
            }
            levels[level].write_all_at(bytes, at)?;
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
            let mut builder = lock(&self.builder);
            if let Err(error) = self.write(&mut builder, true) {
                self.stop(&error);
                return Err(io_err(&self.dir)(error));
            }
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
                // Before the first page kept: archived, or no leaf at all.
                0 => return Ok(None),
                after => held.page_base + (after - 1) as u64,
            }
        };
        let start = page * PAGE;
        let end = (start + PAGE).min(size);
        if start >= end {
            return Ok(None);
        }
        let mut bytes = vec![0; ((end - start) * 8) as usize];
        // The newest positions may not be in the file yet: those of leaves
        // `written` on are the unwritten ones, in order.
        let in_file = {
            let builder = lock(&self.builder);
            let written = builder.positions_written();
            let in_file = written.clamp(start, end);
            if end > written {
                let from = ((in_file - written) * 8) as usize;
                let to = ((end - written) * 8) as usize;
                let at = ((in_file - start) * 8) as usize;
                if let Some(pending) = builder.positions.get(from..to) {
                    bytes[at..].copy_from_slice(pending);
                }
            }
            in_file
        };
        self.positions
            .read_exact_at(&mut bytes[..((in_file - start) * 8) as usize], start * 8)
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
        if index < kept_from(level as usize, self.pruned.load(Ordering::Acquire)) {
            return Err(fail(
                "over archived receipts only: not kept (`--archive` proves them offline)"
                    .to_owned(),
            ));
        }
        if let Some(upper) = (level as usize).checked_sub(HELD_FROM) {
            return self
                .held
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .upper
                .get(upper)
                .and_then(|nodes| nodes.get(index))
                .ok_or_else(|| fail("not held".to_owned()));
        }
        let mut hash = [0; 32];
        {
            // The newest nodes may not be in the file yet.
            let builder = lock(&self.builder);
            let written = builder.written(level as usize);
            if index >= written
                && let Some(pending) = builder.pending.get(level as usize)
            {
                let at = ((index - written) * 32) as usize;
                let node = pending
                    .get(at..at + 32)
                    .ok_or_else(|| fail("not in the tree".to_owned()))?;
                hash.copy_from_slice(node);
                return Ok(hash);
            }
        }
        let file = self
            .levels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(level as usize)
            .cloned()
            .ok_or_else(|| fail("its level has no file".to_owned()))?;
        file.read_exact_at(&mut hash, index * 32)
            .map_err(|e| fail(e.to_string()))?;
        Ok(hash)
    }
}

/// The size `tree/SYNCED` in the ledger folder `ledger` names: how many
/// records were durable when the tree was last synced (`None`: no tree,
/// or an unreadable file, which open rebuilds from the log).
pub(crate) fn synced_size(ledger: &Path) -> Option<u64> {
    let dir = ledger.join(TREE_DIR);
    if !dir.join(SYNCED_FILE).exists() {
        return None;
    }
    read_synced(&dir).ok().map(|(size, _)| size)
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

    /// After the scan: the tree, or why it is not the log's.
    pub(super) fn finish(mut self) -> Result<Arc<FileTree>, NotTheLogs> {
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
            .unwrap_or_else(|| Err("no worker".to_owned()))
            .map_err(NotTheLogs::Mismatch)?;
        if self.next < self.trusted {
            return Err(NotTheLogs::Short {
                synced: self.trusted,
                records: self.next,
            });
        }
        Ok(tree)
    }
}

/// Why a stored tree is not its log's, found by [`Fill::finish`].
#[derive(Debug, thiserror::Error)]
pub(super) enum NotTheLogs {
    /// A leaf differs from its record's hash (another log's tree, or
    /// damage): the tree is built again from the log.
    #[error("{0}")]
    Mismatch(String),
    /// Every leaf matches its record, but the tree was synced with more
    /// records durable than the log holds: acknowledged receipts are
    /// missing from the log.
    #[error("it holds {synced} leaves, the log only {records} records")]
    Short {
        /// The synced size.
        synced: u64,
        /// The records the log holds.
        records: u64,
    },
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

    /// A `SYNCED` naming a size no file can hold (`u64::MAX`, 2^61) is a
    /// tree to rebuild from the log, never an overflow (nor, wrapped, a
    /// `positions` cut to nothing); verify says receipts were lost.
    #[test]
    fn a_synced_size_past_any_tree_is_rebuilt_not_overflowed() {
        for size in [u64::MAX, 1 << 61] {
            let dir = tempfile::tempdir().unwrap();
            let records = {
                let ledger = FileLedger::open(dir.path(), FileOptions::default()).unwrap();
                append(&ledger, 5, "s")
            };
            let synced = dir.path().join(TREE_DIR).join(SYNCED_FILE);
            fs_err::write(
                &synced,
                format!("{SYNCED_HEADER}\n{size}\n{}\n", hex::encode([1u8; 32])),
            )
            .unwrap();
            let bad = crate::ledger::file::verify_dir(dir.path())
                .unwrap()
                .first_bad
                .unwrap();
            assert!(bad.reason.contains("receipts were lost"), "{}", bad.reason);
            let ledger = FileLedger::open(dir.path(), FileOptions::default()).unwrap();
            assert_same(&ledger, &records);
        }
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

    /// Nodes and positions wait in memory until a file has `WRITE_AT`
    /// bytes of them to write: proofs and leaf lookups read across the
    /// written and unwritten parts alike, and a clean close writes the rest.
    #[test]
    fn unwritten_nodes_answer_like_written_ones() {
        let dir = tempfile::tempdir().unwrap();
        let tree_file = |name: &str| {
            fs_err::metadata(dir.path().join(TREE_DIR).join(name)).map_or(0, |m| m.len())
        };
        let records = {
            let ledger = FileLedger::open(dir.path(), small()).unwrap();
            // Level 0 holds 32 bytes per leaf: 1500 leaves, durable 20 at
            // a time, write some of its file and keep the rest;
            // `positions` (8 per leaf) writes one part.
            let mut records = Vec::new();
            for group in 0..75 {
                records.extend(append(&ledger, 20, &format!("w{group}-")));
            }
            let written = tree_file(&level_name(0));
            assert!(written > 0 && written < 1500 * 32, "{written}");
            assert!(tree_file(POSITIONS_FILE) < 1500 * 8);
            assert_same(&ledger, &records);
            records
        };
        assert_eq!(tree_file(&level_name(0)), 1500 * 32);
        assert_eq!(tree_file(POSITIONS_FILE), 1500 * 8);
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
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

    /// After retention archived the first `first` leaves: every node a
    /// proof of a later leaf (or a consistency proof from a later size)
    /// needs is kept and read the same from memory and disk; the others
    /// are refused (never read from a punched hole as zeros), and the
    /// archived part of the files no longer holds disk blocks.
    #[test]
    fn a_pruned_tree_keeps_what_later_proofs_need_and_frees_the_rest() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let n = 9 * PAGE + 17;
        let first = 5 * PAGE + 100;
        let leaf = |i: u64| (leaf_hash(&i.to_le_bytes()), 10 + i * 7);
        let mut expected = MemoryTree::new();
        let (tree, _) = FileTree::open(dir.path()).unwrap();
        let leaves: Vec<_> = (0..n).map(leaf).collect();
        tree.push(&leaves);
        for (hash, _) in &leaves {
            expected.push(*hash);
        }
        tree.sync().unwrap();
        let files = dir.path().join(TREE_DIR);
        let allocated = |name: &str| fs_err::metadata(files.join(name)).unwrap().blocks() * 512;
        let level0 = level_name(0);
        let before = (allocated(&level0), allocated(POSITIONS_FILE));
        tree.prune(first);
        check_pruned(&tree, &expected, first, n, &leaf);
        // The whole 4 KiB blocks before the kept nodes are freed.
        let freed0 = kept_from(0, first) * 32 / 4096 * 4096;
        assert!(freed0 >= 4 * 4096);
        assert!(allocated(&level0) <= before.0 - freed0, "{before:?}");
        assert!(allocated(POSITIONS_FILE) <= before.1 - first / PAGE * 4096);
        // A later prune to an earlier point keeps the later one.
        tree.prune(10);
        check_pruned(&tree, &expected, first, n, &leaf);
        // More leaves, a sync and a reopen told of the cut: the same, with
        // only the kept nodes and pages read into memory.
        let more: Vec<_> = (n..n + 300).map(leaf).collect();
        tree.push(&more);
        for (hash, _) in &more {
            expected.push(*hash);
        }
        tree.sync().unwrap();
        drop(tree);
        let (tree, trusted) = FileTree::open_pruned(dir.path(), first).unwrap();
        assert_eq!(trusted, n + 300);
        check_pruned(&tree, &expected, first, n + 300, &leaf);
        let held = tree.held.read().unwrap();
        assert_eq!(held.upper[0].base, kept_from(HELD_FROM, first));
        assert_eq!(
            held.upper[0].nodes.len() as u64,
            ((n + 300) >> HELD_FROM) - kept_from(HELD_FROM, first)
        );
        assert_eq!(held.page_base, first / PAGE);
    }

    fn check_pruned(
        tree: &FileTree,
        expected: &MemoryTree,
        first: u64,
        n: u64,
        leaf: &dyn Fn(u64) -> (Hash, u64),
    ) {
        assert_eq!(tree.head().unwrap(), (n, expected.root()));
        for level in 0..13u32 {
            let kept = kept_from(level as usize, first);
            for index in 0..(n >> level) {
                let got = tree.node(level, index);
                if index < kept {
                    assert!(got.is_err(), "node {level}/{index} answered");
                } else {
                    assert_eq!(got, expected.node(level, index), "node {level}/{index}");
                }
            }
        }
        for index in (first..n).step_by(29).chain([first, n - 1]) {
            for size in [index + 1, (index + n) / 2 + 1, n] {
                assert_eq!(
                    tree.inclusion_proof(index, size).unwrap(),
                    expected.inclusion_proof(index, size).unwrap(),
                    "leaf {index} at {size}"
                );
            }
            assert_eq!(tree.leaf_at(leaf(index).1).unwrap(), Some(index));
        }
        for from in [first + 1, first + 7, (first + n) / 2, n] {
            assert_eq!(
                tree.consistency_proof(from, n).unwrap(),
                expected.consistency_proof(from, n).unwrap()
            );
        }
        // Archived leaves are no longer found.
        assert_eq!(tree.leaf_at(leaf(0).1).unwrap(), None);
        assert_eq!(tree.leaf_at(leaf(first / PAGE * PAGE - 1).1).unwrap(), None);
    }

    /// Retention on a ledger: cutting segments prunes its tree, whose
    /// proofs of every local receipt still match the whole log's tree, on
    /// disk only about the local receipts' share, before and after a
    /// reopen and as the log grows.
    #[test]
    fn cutting_segments_prunes_the_tree_and_local_proofs_still_hold() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        let mut records = append(&ledger, 3000, "a");
        ledger.checkpoint(ledger.mark().unwrap(), b"all").unwrap();
        let (ids, _) = ledger.segments().unwrap();
        for &id in &ids[..ids.len() * 3 / 4] {
            assert!(ledger.cut(id).unwrap());
        }
        let first = ledger.anchor().unwrap().records;
        assert!(first > 2 * PAGE, "{first}");
        let level0 = dir.path().join(TREE_DIR).join(level_name(0));
        let kept = |n: u64| (n - kept_from(0, first)) * 32 + 2 * 4096;
        let allocated = || fs_err::metadata(&level0).unwrap().blocks() * 512;
        assert!(allocated() <= kept(3000), "{} bytes", allocated());
        assert_local_same(&ledger, &records, first);
        drop(ledger);
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        assert_local_same(&ledger, &records, first);
        records.extend(append(&ledger, 200, "b"));
        assert_local_same(&ledger, &records, first);
        assert!(allocated() <= kept(3200), "{} bytes", allocated());
    }

    /// [`assert_same`] for the receipts from `first` on (those before it
    /// archived: no leaf found, no proof).
    fn assert_local_same(ledger: &FileLedger, records: &[(TenantId, u64, Vec<u8>)], first: u64) {
        let expected = memory(records);
        let tree = ledger.tree().expect("a tree");
        let size = expected.size();
        assert_eq!(tree.latest().unwrap(), (size, expected.root()));
        for (index, (tenant, seq, _)) in records.iter().enumerate() {
            let index = index as u64;
            if index < first {
                assert_eq!(tree.leaf_index(tenant, *seq).unwrap(), None);
                continue;
            }
            assert_eq!(tree.leaf_index(tenant, *seq).unwrap(), Some(index));
            assert_eq!(
                tree.inclusion_proof(index, size).unwrap(),
                expected.inclusion_proof(index, size).unwrap()
            );
        }
        assert_eq!(
            tree.consistency_proof(first + 1, size).unwrap(),
            expected.consistency_proof(first + 1, size).unwrap()
        );
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

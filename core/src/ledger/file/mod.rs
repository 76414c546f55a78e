//! The file ledger: append-only segment files with group commit.
//!
//! Appends are framed (see `segment`) into a shared buffer under a short
//! mutex; one writer thread (`writer`) takes the whole buffer, writes it and issues one
//! sync covering every append in it, then publishes the durable position that
//! [`Ticket`]s wait on. A failed write or sync poisons the ledger for good:
//! pending and future tickets and appends error, and nothing is retried.
//!
//! On open (lock, scan, checkpoint check, writer start), every segment is
//! scanned (see `scan`): CRCs and hash chains are checked and
//! tenant heads rebuilt from the frame headers; a torn final record is
//! truncated; any other damage, or a chain that does not link, refuses the open.
//! The same scan notes every tenant's head at the stored checkpoint's mark,
//! which recovery hands over beside the blob so it can be checked.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;

use super::durability::Progress;
use super::scan::{
    self, AfterDamage, Damage, Records, Scanned, Span, Visitor, list_segments, read_checkpoint,
};
use super::segment::{self, Checkpoint, Frame, MAX_RECORD};
use super::{
    Appended, Entry, Hash, Head, Ledger, LedgerError, LogTree, Mark, Record, Recovered, Space,
    StoredCheckpoint, SyncPoint, Ticket, VerifyOptions, VerifyReport, chain_hash, check_extends,
    check_mark, io_err,
};
use crate::tenant::TenantId;

pub use super::inspect::{
    Archived, scan_dir, scan_with_archive, verify_dir, verify_dir_with, verify_with_archive,
};

mod anchor;
mod index;
mod tree;
mod writer;

pub use anchor::{ANCHOR_FILE, Anchor, read_anchor};

pub use super::segment::CHECKPOINT_FILE;
use index::{Chain, Indexes};
pub(crate) use tree::synced_size;
pub use tree::{FileTree, TREE_DIR};
use writer::Writer;

/// The data sync used for segment files: `fdatasync` by default; injectable for tests.
pub type SyncFn = Arc<dyn Fn(&std::fs::File) -> io::Result<()> + Send + Sync>;

/// Name of the lock file inside a ledger directory.
pub const LOCK_FILE: &str = "LOCK";
/// How long open waits for a held lock before refusing.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(250);
/// Present while `ledger copy` fills the directory: a ledger holding it is
/// an unfinished copy, which open refuses and verify reports.
pub const COPYING_FILE: &str = "COPYING";
/// Largest allowed segment size (offsets are 32-bit).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 31;
/// How far ahead of its appends the current segment is zero-filled.
const PREALLOCATE: u64 = 256 << 10;
/// How long the writer lets appends accumulate under concurrent load.
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(200);

/// How a [`FileLedger`] is opened.
#[derive(Clone)]
pub struct FileOptions {
    /// A segment is closed and a new one started once it would grow past this (default 64 MiB).
    pub segment_bytes: u64,
    /// Makes a segment file's data durable (default: `File::sync_data`, i.e. `fdatasync`).
    pub sync: SyncFn,
    /// Keeps the ledger's Merkle tree in [`TREE_DIR`] (default: yes).
    pub tree: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            segment_bytes: 64 << 20,
            sync: Arc::new(std::fs::File::sync_data),
            tree: true,
        }
    }
}

impl fmt::Debug for FileOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileOptions")
            .field("segment_bytes", &self.segment_bytes)
            .field("tree", &self.tree)
            .finish_non_exhaustive()
    }
}

/// A torn final record that [`FileLedger::open`] truncated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    /// The segment that was cut.
    pub path: PathBuf,
    /// Its new length: where the torn record began.
    pub offset: u64,
    /// How many bytes were dropped.
    pub dropped: u64,
}

/// Where one record lives: packed (segment, offset) and frame length.
#[derive(Debug, Clone, Copy)]
struct Loc {
    position: u64,
    len: u32,
}

/// Framed bytes for one segment, not yet handed to the writer.
#[derive(Debug)]
struct Chunk {
    segment: u32,
    offset: u32,
    bytes: Vec<u8>,
}

/// A record waiting for the writer to hash its Merkle leaf.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The record's packed log position (its frame's start).
    position: u64,
    /// Where its receipt bytes start in its segment, and their length.
    start: u32,
    len: u32,
}

/// Everything appends touch, under one short mutex.
#[derive(Debug)]
struct State {
    /// Keyed by the id the registry holds too (one allocation per tenant,
    /// shared); looked up by `&str` as well.
    chains: HashMap<TenantId, Chain>,
    /// Appended but not yet taken by the writer.
    chunks: Vec<Chunk>,
    /// Where the records in `chunks` are, when the ledger keeps its tree:
    /// the writer hashes their leaves (off the appending threads).
    leaves: Vec<Pending>,
    /// Empty buffers for reuse.
    spare: Vec<Vec<u8>>,
    /// Records appended so far (ever, including before this open).
    records: u64,
    /// Segment receiving appends, and its length including pending bytes.
    segment: u32,
    segment_len: u64,
    writer_waiting: bool,
    closing: bool,
    /// Set once the writer failed; appends then refuse.
    failed: Option<(PathBuf, Arc<io::Error>)>,
    /// Set while the writer waits for disk space (see [`Ledger::check_writable`]).
    full: Option<(PathBuf, Arc<io::Error>)>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<State>,
    wake: Condvar,
    sync: Arc<SyncPoint>,
    /// Read handles of segments, opened on demand.
    readers: RwLock<HashMap<u32, Arc<std::fs::File>>>,
    /// Where sealed segments' records are (see [`index`]).
    indexes: Indexes,
    /// Serializes checkpoints; holds the stored checkpoint's record count.
    checkpointing: Mutex<u64>,
    /// The checkpoint open read and every tenant's head at its position
    /// (noted by open's scan), until the first recovery takes them or a
    /// newer checkpoint replaces it: start-up reads the file once.
    open_heads: Mutex<Option<(Checkpoint, BTreeMap<TenantId, Head>)>>,
    /// False while the `CHECKPOINT` file is one open set aside (until a new
    /// one is written): recovery then ignores it.
    checkpoint_usable: AtomicBool,
    /// `state.full.is_some()`, readable without the lock.
    full: AtomicBool,
    /// Where the local log starts, once segments were archived.
    anchor: Mutex<Option<Anchor>>,
    /// The Merkle tree of the durable records, when the ledger keeps one.
    tree: Option<Arc<FileTree>>,
}

/// The embedded file ledger. Dropping it drains and syncs pending appends.
#[derive(Debug)]
pub struct FileLedger {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    /// The torn tail truncated on open, if any.
    repair: Option<Repair>,
    /// Why open set the `CHECKPOINT` file aside, if it did.
    rejected_checkpoint: Option<String>,
    /// Held for the ledger's lifetime: the exclusive directory lock.
    _lock: fs_err::File,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fsyncs a directory so that a file created or renamed in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    fs_err::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// `options` refusing to open a symbolic link (`O_NOFOLLOW`): no file the
/// ledger writes is a link, and one planted in its folder by someone else
/// must not make it truncate or write the file it points to.
pub(crate) fn no_links(options: &mut fs_err::OpenOptions) -> &mut fs_err::OpenOptions {
    use fs_err::os::unix::fs::OpenOptionsExt as _;
    options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
}

/// Creates (or truncates) `path` for reading and writing, refusing a link
/// there.
pub(crate) fn create_no_link(path: &Path) -> io::Result<fs_err::File> {
    no_links(
        fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true),
    )
    .open(path)
}

/// Replaces `dir/name` with `bytes`, durably: a synced temporary renamed
/// over it, then the directory synced. A failed write (a full disk) leaves
/// no temporary behind.
fn replace_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LedgerError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let written = create_no_link(&tmp).and_then(|mut file| {
        io::Write::write_all(&mut file, bytes)?;
        file.sync_all()
    });
    if let Err(error) = written {
        let _ = fs_err::remove_file(&tmp);
        return Err(io_err(&tmp)(error));
    }
    let path = dir.join(name);
    fs_err::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

/// Removes segment `id`'s file and its index file, whichever exist;
/// whether anything was removed (the caller syncs the directory).
fn remove_segment_files(dir: &Path, id: u32) -> Result<bool, LedgerError> {
    let mut removed = false;
    for path in [
        dir.join(segment::segment_name(id)),
        dir.join(index::index_name(id)),
    ] {
        match fs_err::remove_file(&path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Ok(removed)
}

/// Open, step 1: creates `dir` if needed and takes its exclusive lock, held
/// for the ledger's lifetime.
fn lock_dir(dir: &Path) -> Result<fs_err::File, LedgerError> {
    fs_err::create_dir_all(dir).map_err(io_err(dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock_file = no_links(
        fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true),
    )
    .open(&lock_path)
    .map_err(io_err(&lock_path))?;
    // A lock held by another process is refused, after a short grace: a
    // process that forked while it had this ledger open holds a copy of the
    // closed descriptor (and so the lock) until its child execs.
    let started = std::time::Instant::now();
    loop {
        match lock_file.file().try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_GRACE => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
    }
    sync_dir(dir)?;
    Ok(lock_file)
}

/// What open's scan of the log found.
struct Opened {
    index: Index,
    scanned: Scanned,
    checkpoint: Option<Checkpoint>,
    /// Why the `CHECKPOINT` file is not used, when it is unreadable.
    rejected: Option<String>,
    /// Where the local log starts, if segments were archived.
    anchor: Option<Anchor>,
    /// The Merkle tree, continued to the log's end.
    tree: Option<Arc<FileTree>>,
}

/// Open's part with an anchor: removes the segments (and index files) it
/// let go that are still here (a cut interrupted after its anchor was
/// written; their archived copies were verified before), and refuses a log
/// that does not start where the anchor says.
fn drop_cut_segments(dir: &Path, anchor: &Anchor) -> Result<Vec<u32>, LedgerError> {
    let mut removed = false;
    for entry in fs_err::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(segment::parse_segment_name) else {
            continue;
        };
        if id < anchor.segment {
            removed |= remove_segment_files(dir, id)?;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    let ids = list_segments(dir)?;
    // A cut keeps the segment it starts at: with none left, a writer would
    // start again at segment 1, which the next open removes as cut.
    let found = match ids.first() {
        Some(&first) if first == anchor.segment => return Ok(ids),
        Some(first) => format!("it starts at {first}"),
        None => "no segment is left".to_owned(),
    };
    Err(LedgerError::Corrupt {
        path: dir.join(segment::segment_name(anchor.segment)),
        offset: 0,
        reason: format!(
            "the anchor says the local log starts at segment {}, but {found}",
            anchor.segment
        ),
    })
}

/// Open, step 2: scans every segment, rebuilding the chains and cutting a
/// torn tail; refuses any other damage and any chain that does not link.
fn scan_log(
    dir: &Path,
    anchor: Option<Anchor>,
    tree: Option<(Arc<FileTree>, u64)>,
) -> Result<Opened, LedgerError> {
    let ids = match &anchor {
        Some(anchor) => drop_cut_segments(dir, anchor)?,
        None => list_segments(dir)?,
    };
    // The checkpoint only saves replay time: an unreadable one is set
    // aside (and the whole log replayed), never a reason to stop.
    let (checkpoint, rejected) = match read_checkpoint(dir) {
        Ok(checkpoint) => (checkpoint, None),
        Err(LedgerError::Corrupt { reason, .. }) => (None, Some(reason)),
        Err(error) => return Err(error),
    };
    // Chains continue from the anchor's heads.
    let chains = anchor
        .iter()
        .flat_map(|a| &a.heads)
        .map(|(tenant, head)| {
            let chain = Chain {
                head: *head,
                base: head.seq,
                ..Chain::default()
            };
            (tenant.clone(), chain)
        })
        .collect();
    let mut index = Index {
        dir: dir.to_path_buf(),
        chains,
        segment: 0,
        sealed: Vec::new(),
        unwritten: BTreeMap::new(),
        heads_at_checkpoint: BTreeMap::new(),
        repair: None,
        fill: None,
        visited: 0,
        archived: anchor.is_some(),
        fields_checked: checkpoint.is_none(),
        unchecked: HashMap::new(),
        durable: Durable {
            checkpoint: checkpoint.as_ref().map(|c| (c.records, c.position)),
            synced: tree.as_ref().map(|(_, trusted)| *trusted),
        },
    };
    let first = anchor.as_ref().map_or(0, |a| a.records);
    index.visited = first;
    let mut kept = None;
    if let Some((tree, trusted)) = tree {
        index.fill = tree::Fill::new(Arc::clone(&tree), trusted, first)?;
        if index.fill.is_none() {
            tracing::warn!(ledger = %dir.display(), "the ledger has no Merkle tree of its archived receipts: it keeps none (no transparency checkpoints or proofs)");
        }
        kept = Some(tree);
    }
    let span = Span {
        records: first,
        ..Span::all(&ids)
    };
    let scanned = scan::scan(dir, span, checkpoint.as_ref(), &mut index)?;
    let tree = match index.fill.take().map(tree::Fill::finish) {
        None => None,
        Some(Ok(tree)) => Some(tree),
        // The tree's leaves are appended only once their records are
        // durable: a log that matches them but ends before the synced size
        // lost acknowledged receipts. Refused, nothing changed (building
        // the tree again would erase the only evidence).
        Some(Err(tree::NotTheLogs::Short { synced, records })) => {
            return Err(LedgerError::Corrupt {
                path: dir.join(TREE_DIR).join(tree::SYNCED_FILE),
                offset: 0,
                reason: format!(
                    "the Merkle tree was synced when {synced} receipts were durable, and its leaves match the log's, but the log holds only {records}: acknowledged receipts are missing (the log cut short, or restored from an older copy than its tree). Nothing was changed: restore the ledger folder from a copy that holds them; to go on without them, {}",
                    give_up(first > 0)
                ),
            });
        }
        Some(Err(tree::NotTheLogs::Mismatch(why))) => {
            let tree = kept
                .take()
                .unwrap_or_else(|| unreachable!("a fill has a tree"));
            rebuild_tree(dir, &ids, first, tree, &why)?
        }
    };
    // Only the segments sealed above keep an index file.
    let sealed: std::collections::HashSet<u32> = index.sealed.iter().copied().collect();
    index::remove_others(dir, &|id| sealed.contains(&id))?;
    Ok(Opened {
        index,
        scanned,
        checkpoint,
        rejected,
        anchor,
        tree,
    })
}

/// How an operator gives up receipts the durable evidence says the log
/// held: what to move aside, and what that costs (`archived`: the log's
/// first receipts were archived, so the tree cannot be built again).
fn give_up(archived: bool) -> String {
    let cost = if archived {
        "the ledger then keeps no Merkle tree (its first receipts are archived): no transparency checkpoints or proofs from it again"
    } else {
        "the tree is built again from the log, and signed checkpoints published before no longer extend"
    };
    format!("move `{CHECKPOINT_FILE}` and `{TREE_DIR}` aside and start again ({cost})")
}

/// Open's part when the stored tree is not this log's (`why`): builds it
/// again from every record, if the log still starts at its first record.
fn rebuild_tree(
    dir: &Path,
    ids: &[u32],
    first: u64,
    tree: Arc<FileTree>,
    why: &str,
) -> Result<Option<Arc<FileTree>>, LedgerError> {
    tree.reset()?;
    if first > 0 {
        tracing::warn!(ledger = %dir.display(), %why, "the ledger's Merkle tree does not match its log, whose first receipts were archived: it keeps none");
        return Ok(None);
    }
    tracing::warn!(ledger = %dir.display(), %why, "the ledger's Merkle tree does not match its log: it is built again");
    let mut fill = tree::Fill::new(tree, 0, 0)?.unwrap_or_else(|| unreachable!("nothing archived"));
    struct Rebuild<'a>(&'a mut tree::Fill);
    impl Visitor for Rebuild<'_> {
        fn record(&mut self, _: &Path, position: u64, frame: Frame<'_>) -> Result<(), LedgerError> {
            self.0.record(position, frame.bytes);
            Ok(())
        }
        fn damaged(&mut self, damage: &Damage<'_>) -> Result<AfterDamage, LedgerError> {
            Err(LedgerError::Corrupt {
                path: damage.path.to_path_buf(),
                offset: damage.offset,
                reason: damage.reason.to_owned(),
            })
        }
    }
    scan::scan(dir, Span::all(ids), None, &mut Rebuild(&mut fill))?;
    let tree = fill.finish().map_err(|problem| LedgerError::Corrupt {
        path: dir.join(TREE_DIR),
        offset: 0,
        reason: problem.to_string(),
    })?;
    Ok(Some(tree))
}

/// Open, step 3: refuses a checkpoint whose mark the scan did not reach (not
/// a record boundary with its record count). Unlike an unreadable file (set
/// aside in step 2), a readable mark past the log's end is evidence that
/// records were lost, so the open stops.
fn check_checkpoint(dir: &Path, opened: &Opened) -> Result<(), LedgerError> {
    match &opened.checkpoint {
        Some(ck) if !opened.scanned.checkpoint_found => {
            let (seg, off) = segment::unpack(ck.position);
            Err(LedgerError::Corrupt {
                path: dir.join(CHECKPOINT_FILE),
                offset: 0,
                reason: format!(
                    "checkpoint position `{}:{off}` ({} records) is not a record boundary of the log",
                    segment::segment_name(seg),
                    ck.records
                ),
            })
        }
        _ => Ok(()),
    }
}

/// Open, step 4: opens the last segment for appends and starts the writer thread.
fn start_writer(
    dir: PathBuf,
    options: FileOptions,
    opened: Opened,
    lock_file: fs_err::File,
) -> Result<FileLedger, LedgerError> {
    let Opened {
        index,
        scanned,
        checkpoint,
        rejected,
        anchor,
        tree,
    } = opened;
    let segment_bytes = options.segment_bytes.clamp(4096, MAX_SEGMENT_BYTES);
    let dir_for_indexes = dir.clone();
    let sealed_below = index.segment;
    let last = scanned.last;
    let segment = last.map_or(1, |l| l.id);
    let last_len = last.map_or(0, |l| l.end);
    let current = match last {
        Some(last) => {
            let path = dir.join(segment::segment_name(last.id));
            let file = no_links(fs_err::OpenOptions::new().read(true).write(true))
                .open(&path)
                .map_err(io_err(&path))?;
            // What the scan found may be in the page cache only (a process
            // killed before its sync): made durable before anything, a
            // signed checkpoint above all, is built on it.
            file.sync_data().map_err(io_err(&path))?;
            sync_dir(&dir)?;
            Some((last.id, file))
        }
        None => None,
    };
    let records = scanned.records;
    let sync = Arc::new(SyncPoint::new(Progress {
        records,
        position: segment::pack(segment, last_len as u32),
        ..Progress::default()
    }));
    let shared = Arc::new(Shared {
        dir,
        segment_bytes,
        state: Mutex::new(State {
            chains: index.chains,
            chunks: Vec::new(),
            leaves: Vec::new(),
            spare: Vec::new(),
            records,
            segment,
            segment_len: last_len,
            writer_waiting: false,
            closing: false,
            failed: None,
            full: None,
        }),
        wake: Condvar::new(),
        sync,
        readers: RwLock::new(HashMap::new()),
        indexes: {
            let indexes = Indexes::new(dir_for_indexes);
            indexes.hold(index.unwritten);
            indexes
        },
        checkpoint_usable: AtomicBool::new(rejected.is_none()),
        full: AtomicBool::new(false),
        anchor: Mutex::new(anchor),
        tree,
        checkpointing: Mutex::new(checkpoint.as_ref().map_or(0, |c| c.records)),
        open_heads: Mutex::new(checkpoint.map(|c| (c, index.heads_at_checkpoint))),
    });
    let writer = {
        let shared = Arc::clone(&shared);
        let sync_fn = options.sync;
        std::thread::Builder::new()
            .name("ledger-writer".to_owned())
            .spawn(move || {
                Writer {
                    shared,
                    sync: sync_fn,
                    current,
                    allocated: last.map_or(0, |l| l.file_len),
                    end: last_len,
                    sealed_below,
                }
                .run()
            })
            .map_err(io_err(Path::new("ledger-writer thread")))?
    };
    Ok(FileLedger {
        shared,
        writer: Some(writer),
        repair: index.repair,
        rejected_checkpoint: rejected,
        _lock: lock_file,
    })
}

/// Open's scan visitor: checks every chain links, builds the index of heads
/// and record locations, notes every head at the checkpoint's mark, cuts a
/// torn tail.
struct Index {
    dir: PathBuf,
    chains: HashMap<TenantId, Chain>,
    /// The segment whose records the scan is visiting.
    segment: u32,
    /// Segments sealed (their locations moved to index files).
    sealed: Vec<u32>,
    /// Sealed segments whose index file could not be written: held in memory.
    unwritten: BTreeMap<u32, index::SegmentIndex>,
    /// Every tenant's head where the checkpoint's mark is: what its blob must agree with.
    heads_at_checkpoint: BTreeMap<TenantId, Head>,
    /// The torn tail cut, if any.
    repair: Option<Repair>,
    /// The Merkle tree's side of the scan.
    fill: Option<tree::Fill>,
    /// Records visited, counting those before the local log (archived).
    visited: u64,
    /// Whether the log's first receipts were archived (a tree of it
    /// cannot be built again).
    archived: bool,
    /// Whether each record's own `tenant`, `seq` and `prev` are checked as
    /// it is visited: past the checkpoint's mark (recovery replays those
    /// records), or everywhere without a checkpoint. Before the mark only
    /// each tenant's last record is, at the mark (see `unchecked`): the
    /// head a start extends must say what verify says of it, and parsing
    /// every receipt would cost a large ledger's restart too much.
    fields_checked: bool,
    /// Per tenant, its last record before the checkpoint's mark so far:
    /// where it is, its predecessor's hash, and its bytes.
    unchecked: HashMap<Box<str>, Unchecked>,
    /// What survived a crash says of how many records were durable.
    durable: Durable,
}

/// A record whose own fields open checks later (see `Index::unchecked`).
#[derive(Debug, Default)]
struct Unchecked {
    position: u64,
    seq: u64,
    prev: Hash,
    bytes: Vec<u8>,
}

/// Durable evidence of how many records the log held: a torn tail is cut
/// only past all of it (a record it covers was acknowledged).
#[derive(Debug, Clone, Copy)]
struct Durable {
    /// The stored checkpoint's record count and packed position (written
    /// after those records were durable).
    checkpoint: Option<(u64, u64)>,
    /// The tree's synced size (`tree/SYNCED`, trusted: its leaves are
    /// appended only once their records are durable).
    synced: Option<u64>,
}

impl Durable {
    /// What says the record of index `record`, at packed `position`, was
    /// durable, if anything.
    fn covering(&self, record: u64, position: u64) -> Option<String> {
        if let Some((records, _)) = self
            .checkpoint
            .filter(|&(n, at)| n > record || at > position)
        {
            return Some(format!(
                "the checkpoint (`{CHECKPOINT_FILE}`) covers {records} records"
            ));
        }
        if let Some(size) = self.synced.filter(|&n| n > record) {
            return Some(format!(
                "the Merkle tree (`{TREE_DIR}/SYNCED`) was synced with {size} leaves"
            ));
        }
        None
    }
}

impl Index {
    /// Moves the locations of records in segments before `below` to their
    /// index files (written now, or held in memory if that fails).
    fn seal_below(&mut self, below: u32) {
        for (id, sealed) in index::seal(&mut self.chains, below) {
            self.sealed.push(id);
            if let Some(unwritten) = index::ensure(&self.dir, sealed) {
                self.unwritten.insert(id, unwritten);
            }
        }
    }
}

impl Visitor for Index {
    fn record(&mut self, path: &Path, position: u64, frame: Frame<'_>) -> Result<(), LedgerError> {
        let broken = |reason: String| LedgerError::BrokenChain {
            tenant: frame.tenant.to_owned(),
            seq: frame.seq,
            path: path.to_path_buf(),
            offset: u64::from(segment::unpack(position).1),
            reason,
        };
        let id = segment::unpack(position).0;
        if id != self.segment {
            self.seal_below(id);
            self.segment = id;
        }
        // `decode` validated the tenant id.
        let chain = match self.chains.get_mut(frame.tenant) {
            Some(chain) => chain,
            None => {
                let tenant = TenantId::new(frame.tenant).map_err(|e| broken(e.to_string()))?;
                self.chains.entry(tenant).or_default()
            }
        };
        let Some(next) = chain.head.seq.checked_add(1) else {
            return Err(broken("its chain's seq is at its largest".to_owned()));
        };
        if frame.seq != next {
            return Err(broken(format!("expected seq `{next}`")));
        }
        if chain_hash(&chain.head.hash, frame.bytes) != frame.hash {
            return Err(broken(
                "stored hash does not match SHA-256(prev ‖ bytes)".to_owned(),
            ));
        }
        if self.fields_checked {
            super::verify::check_fields(
                frame.tenant,
                frame.seq,
                frame.bytes,
                &chain.head.hash,
                None,
            )
            .map_err(broken)?;
        } else {
            let slot = match self.unchecked.get_mut(frame.tenant) {
                Some(slot) => slot,
                None => self.unchecked.entry(Box::from(frame.tenant)).or_default(),
            };
            slot.position = position;
            slot.seq = frame.seq;
            slot.prev = chain.head.hash;
            slot.bytes.clear();
            slot.bytes.extend_from_slice(frame.bytes);
        }
        chain.head = Head {
            seq: frame.seq,
            hash: frame.hash,
        };
        chain.push_recent(Loc {
            position,
            len: frame.len as u32,
        });
        if let Some(fill) = &mut self.fill {
            fill.record(position, frame.bytes);
        }
        self.visited += 1;
        Ok(())
    }

    fn at_checkpoint(&mut self, _: &Checkpoint) -> Result<(), LedgerError> {
        // Every tenant's last record before the mark: the head recovery
        // starts from (records past the mark are checked as visited).
        for (tenant, record) in std::mem::take(&mut self.unchecked) {
            if let Err(reason) =
                super::verify::check_fields(&tenant, record.seq, &record.bytes, &record.prev, None)
            {
                let (id, offset) = segment::unpack(record.position);
                return Err(LedgerError::BrokenChain {
                    tenant: tenant.into(),
                    seq: record.seq,
                    path: self.dir.join(segment::segment_name(id)),
                    offset: u64::from(offset),
                    reason,
                });
            }
        }
        self.fields_checked = true;
        self.heads_at_checkpoint = self
            .chains
            .iter()
            .map(|(tenant, chain)| (tenant.clone(), chain.head))
            .collect();
        Ok(())
    }

    fn damaged(&mut self, damage: &Damage<'_>) -> Result<AfterDamage, LedgerError> {
        if !damage.torn {
            return Err(LedgerError::Corrupt {
                path: damage.path.to_path_buf(),
                offset: damage.offset,
                reason: format!("{}, followed by more data", damage.reason),
            });
        }
        // A torn final record was never acknowledged, unless durable
        // evidence says the log held it: then it is an acknowledged
        // receipt damaged, and cutting it would destroy the evidence.
        let id = damage
            .path
            .file_name()
            .and_then(|name| segment::parse_segment_name(&name.to_string_lossy()))
            .unwrap_or(self.segment);
        let at = segment::pack(id, damage.offset as u32);
        if let Some(evidence) = self.durable.covering(self.visited, at) {
            let (tenant, seq) = super::inspect::claimed(damage.bytes);
            return Err(LedgerError::Corrupt {
                path: damage.path.to_path_buf(),
                offset: damage.offset,
                reason: format!(
                    "the last record (receipt {}, header naming tenant `{tenant}` seq {seq}) is damaged ({}), but {evidence}: it was acknowledged, not torn by a crash. Nothing was changed: restore this segment from a backup (the last segment is never archived; `ledger verify` names what verifies); to give the receipt up for good instead, {}",
                    self.visited + 1,
                    damage.reason,
                    give_up(self.archived)
                ),
            });
        }
        // A torn final record was never acknowledged: drop it.
        let path = damage.path;
        let file = no_links(fs_err::OpenOptions::new().write(true))
            .open(path)
            .map_err(io_err(path))?;
        file.set_len(damage.offset).map_err(io_err(path))?;
        file.sync_all().map_err(io_err(path))?;
        self.repair = Some(Repair {
            path: path.to_path_buf(),
            offset: damage.offset,
            dropped: damage.bytes.len() as u64,
        });
        Ok(AfterDamage::Cut)
    }
}

impl FileLedger {
    /// Opens (creating if needed) the ledger in `dir`, locking it exclusively.
    pub fn open(dir: impl AsRef<Path>, options: FileOptions) -> Result<FileLedger, LedgerError> {
        let dir = dir.as_ref().to_path_buf();
        let lock = lock_dir(&dir)?;
        if dir.join(COPYING_FILE).exists() {
            return Err(LedgerError::IncompleteCopy {
                ledger: dir.display().to_string(),
            });
        }
        let anchor = read_anchor(&dir)?;
        let tree = if options.tree {
            // What retention archived, the tree keeps no more of.
            let archived = anchor.as_ref().map_or(0, |anchor| anchor.records);
            let (tree, trusted) = FileTree::open_pruned(&dir, archived)?;
            Some((Arc::new(tree), trusted))
        } else {
            None
        };
        let opened = scan_log(&dir, anchor, tree)?;
        check_checkpoint(&dir, &opened)?;
        start_writer(dir, options, opened, lock)
    }

    /// Where the local log starts, once segments were cut (see [`Anchor`]).
    pub fn anchor(&self) -> Option<Anchor> {
        lock(&self.shared.anchor).clone()
    }

    /// The local segments' ids, and the first one not yet complete on
    /// disk: every segment before it is closed, cut to its last frame and
    /// synced (the durable position has moved past it).
    pub fn segments(&self) -> Result<(Vec<u32>, u32), LedgerError> {
        let durable = segment::unpack(self.shared.sync.progress().position).0;
        Ok((list_segments(&self.shared.dir)?, durable))
    }

    /// The file of segment `id`.
    pub fn segment_path(&self, id: u32) -> PathBuf {
        self.shared.dir.join(segment::segment_name(id))
    }

    /// Lets the oldest local segment, `id`, go: records the new start of the
    /// local log in the anchor (every tenant's head after `id`, and a copy
    /// of the current checkpoint), durably, then removes the segment and
    /// its index file. Reads start after the tenants' heads at the cut.
    ///
    /// **The caller must first have a verified copy of the segment in its
    /// archive**: after this, the segment exists nowhere else. Returns
    /// `false`, changing nothing, while the checkpoint does not yet cover
    /// the whole segment (recovery must not need it) or `id` is not a
    /// closed segment at the front of the log.
    pub fn cut(&self, id: u32) -> Result<bool, LedgerError> {
        self.cut_steps(id, true)
    }

    /// [`FileLedger::cut`] stopped right after its anchor is written, as a
    /// crash there would leave it (for tests of what open makes of that).
    #[doc(hidden)]
    pub fn cut_anchor_only(&self, id: u32) -> Result<bool, LedgerError> {
        self.cut_steps(id, false)
    }

    /// The anchor after segment `id` is cut, from its index: each tenant's
    /// last record there (read and checked) is its new head.
    fn heads_after(
        &self,
        id: u32,
        before: Option<&Anchor>,
        checkpoint: &[u8],
    ) -> Result<Anchor, LedgerError> {
        let index = self.shared.indexes.get(id)?;
        let mut heads = before.map(|a| a.heads.clone()).unwrap_or_default();
        let mut records = before.map_or(0, |a| a.records);
        let mut buf = Vec::new();
        for (tenant, run) in index.runs() {
            let tenant = TenantId::new(tenant).map_err(|e| LedgerError::Corrupt {
                path: self.shared.dir.join(index::index_name(id)),
                offset: 0,
                reason: e.to_string(),
            })?;
            let last = run.len() - 1;
            let (offset, len) = run.loc(last);
            let loc = Loc {
                position: segment::pack(id, offset),
                len,
            };
            let record = self.read_checked(&tenant, run.first + last as u64, loc, &mut buf)?;
            heads.insert(
                tenant,
                Head {
                    seq: record.seq,
                    hash: record.hash,
                },
            );
            records += run.len() as u64;
        }
        Ok(Anchor {
            segment: id + 1,
            records,
            heads,
            checkpoint: checkpoint.to_vec(),
        })
    }

    fn cut_steps(&self, id: u32, finish: bool) -> Result<bool, LedgerError> {
        let dir = &self.shared.dir;
        // The anchor on disk is the authority. A cut whose anchor is
        // written but whose removal did not happen: only the removal is
        // left (counting the segment again would be wrong).
        let before = anchor::read_anchor(dir)?;
        if let Some(written) = before.as_ref().filter(|a| a.segment > id) {
            if finish {
                self.finish_cut(written.clone(), id)?;
            }
            return Ok(true);
        }
        // Only a segment already complete on disk (not waiting for the
        // writer, which may be stalled on a full disk).
        let (ids, complete) = self.segments()?;
        if ids.first() != Some(&id) || id >= complete {
            return Ok(false);
        }
        let ck_path = dir.join(CHECKPOINT_FILE);
        let ck_bytes = match fs_err::read(&ck_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&ck_path)(e)),
        };
        match segment::decode_checkpoint(&ck_bytes) {
            Ok(ck) if ck.position >= segment::pack(id + 1, 0) => {}
            // Not covering it yet, or unreadable (the next checkpoint replaces it).
            _ => return Ok(false),
        }
        let path = self.segment_path(id);
        let anchor = match self.heads_after(id, before.as_ref(), &ck_bytes) {
            Ok(anchor) => anchor,
            // Not sealed yet (the writer seals right after it publishes):
            // the whole segment is read instead.
            Err(_) => {
                let bytes = fs_err::read(&path).map_err(io_err(&path))?;
                anchor::advance(before.as_ref(), id, &bytes, ck_bytes, &path)?
            }
        };
        // The Merkle tree keeps the leaves of what is cut: it must hold
        // them durably first, or it could never be rebuilt (a failed tree
        // refuses here, and the cut waits for a reopen to rebuild it).
        if let Some(tree) = &self.shared.tree
            && tree.sync_size()? < anchor.records
        {
            return Ok(false);
        }
        anchor::write_anchor(dir, &anchor)?;
        if !finish {
            return Ok(true);
        }
        self.finish_cut(anchor, id)?;
        Ok(true)
    }

    /// A cut's steps after its anchor is written: the anchor becomes the
    /// start of the log, segment `id` goes, and so does what only the cut
    /// receipts' proofs needed of the tree.
    fn finish_cut(&self, anchor: Anchor, id: u32) -> Result<(), LedgerError> {
        let archived = anchor.records;
        self.adopt(anchor);
        self.remove_cut(id)?;
        if let Some(tree) = &self.shared.tree {
            tree.prune(archived);
        }
        Ok(())
    }

    /// Makes `anchor` (written) the in-memory start of the log: reads of
    /// its tenants start after their heads there.
    fn adopt(&self, anchor: Anchor) {
        {
            let mut state = lock(&self.shared.state);
            for (tenant, head) in &anchor.heads {
                if let Some(chain) = state.chains.get_mut(tenant.as_str()) {
                    chain.base = chain.base.max(head.seq);
                }
            }
        }
        *lock(&self.shared.anchor) = Some(anchor);
    }

    /// Removes segment `id` (cut: the anchor lets it go) and its index.
    fn remove_cut(&self, id: u32) -> Result<(), LedgerError> {
        let dir = &self.shared.dir;
        self.shared
            .readers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        self.shared.indexes.forget(id);
        remove_segment_files(dir, id)?;
        sync_dir(dir)
    }

    /// The torn final record that open truncated, if any (worth a warning in the log).
    pub fn repair(&self) -> Option<&Repair> {
        self.repair.as_ref()
    }

    /// Why open set the `CHECKPOINT` file aside (unreadable: a bad CRC or
    /// length), if it did: recovery replays the whole log, and the next
    /// checkpoint replaces the file. Worth a warning in the log.
    pub fn rejected_checkpoint(&self) -> Option<&str> {
        self.rejected_checkpoint.as_deref()
    }

    /// The ledger directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The position of the log's first record (its oldest segment's start).
    fn log_start(&self) -> Result<u64, LedgerError> {
        Ok(list_segments(&self.shared.dir)?
            .first()
            .map_or(segment::pack(1, 0), |&id| segment::pack(id, 0)))
    }

    /// The checkpoint the anchor keeps (`None` when nothing was cut).
    fn anchor_checkpoint(&self) -> Result<Option<Checkpoint>, LedgerError> {
        let anchor = lock(&self.shared.anchor);
        let Some(anchor) = anchor.as_ref() else {
            return Ok(None);
        };
        anchor
            .checkpoint()
            .map(Some)
            .map_err(|reason| LedgerError::Corrupt {
                path: self.shared.dir.join(ANCHOR_FILE),
                offset: 0,
                reason: format!("the checkpoint the anchor keeps: {reason}"),
            })
    }

    /// [`Ledger::recover`]'s visits from `checkpoint` (with the heads at its
    /// position, when already known), else from the start of the log, up to
    /// the durable position `end`.
    fn recover_from(
        &self,
        checkpoint: Option<(Checkpoint, Option<BTreeMap<TenantId, Head>>)>,
        end: u64,
        visit: &mut dyn FnMut(Recovered<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let from = match checkpoint {
            Some((checkpoint, heads)) => {
                let heads = match heads {
                    Some(heads) => heads,
                    None => self.heads_at(checkpoint.position)?,
                };
                let stored = StoredCheckpoint {
                    records: checkpoint.records,
                    heads,
                    blob: checkpoint.blob,
                };
                visit(Recovered::Checkpoint(&stored))?;
                checkpoint.position
            }
            None => self.log_start()?,
        };
        self.visit_range(from, end, &mut |record| visit(Recovered::Record(record)))
    }

    /// Waits for everything appended so far; returns the durable end position.
    fn flush_position(&self) -> Result<u64, LedgerError> {
        let target = {
            let state = lock(&self.shared.state);
            if let Some(failed) = &state.failed {
                return Err(super::poisoned(failed));
            }
            state.records
        };
        self.shared.sync.wait_until(|p| p.records >= target)?;
        Ok(self.shared.sync.progress().position)
    }

    fn reader(&self, id: u32) -> Result<Arc<std::fs::File>, LedgerError> {
        if let Some(file) = self
            .shared
            .readers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Ok(Arc::clone(file));
        }
        let path = self.shared.dir.join(segment::segment_name(id));
        let file = Arc::new(
            fs_err::File::open(&path)
                .map_err(io_err(&path))?
                .into_file(),
        );
        let mut readers = self
            .shared
            .readers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Not kept for a segment a cut let go meanwhile (its removal took
        // the handles it found; this one would outlive the file).
        if lock(&self.shared.anchor)
            .as_ref()
            .is_none_or(|anchor| id >= anchor.segment)
        {
            readers.insert(id, Arc::clone(&file));
        }
        Ok(file)
    }

    /// Reads the record at `loc` (durable: callers wait for it).
    fn read_at(&self, loc: Loc, buf: &mut Vec<u8>) -> Result<Record, LedgerError> {
        let (id, offset) = segment::unpack(loc.position);
        let file = self.reader(id)?;
        buf.resize(loc.len as usize, 0);
        let path = || self.shared.dir.join(segment::segment_name(id));
        file.read_exact_at(buf, u64::from(offset))
            .map_err(|e| io_err(&path())(e))?;
        let frame = segment::decode(buf).map_err(|e| LedgerError::Corrupt {
            path: path(),
            offset: u64::from(offset),
            reason: format!("{e:?} while reading an indexed record"),
        })?;
        Ok(frame.record())
    }

    /// Every tenant's head as of the durable log position `position` (a
    /// record boundary): noted by open's scan for the checkpoint it found,
    /// else from the in-memory index, reading the frame of each tenant whose
    /// chain grew past `position` (the index keeps positions, not hashes).
    fn heads_at(&self, position: u64) -> Result<BTreeMap<TenantId, Head>, LedgerError> {
        let mut heads = BTreeMap::new();
        // Tenants whose record there is to be read: by location, or
        // somewhere in their sealed runs.
        let mut unread = Vec::new();
        let mut sealed = Vec::new();
        {
            let state = lock(&self.shared.state);
            for (tenant, chain) in &state.chains {
                let covered = chain.recent.partition_point(|l| l.position < position);
                let tenant = tenant.clone();
                if covered == chain.recent.len() && covered > 0 {
                    heads.insert(tenant, chain.head);
                } else if covered > 0 {
                    let seq = chain.recent_first() + covered as u64 - 1;
                    unread.push((tenant, seq, chain.recent[covered - 1]));
                } else {
                    sealed.push((tenant, chain.sealed, chain.recent_first()));
                }
            }
        }
        let anchor = lock(&self.shared.anchor).clone();
        let floor = anchor.as_ref().map_or(0, |a| a.segment);
        for (tenant, start, end) in sealed {
            match index::last_before(
                &self.shared.indexes,
                tenant.as_str(),
                position,
                start,
                end,
                floor,
            )? {
                Some((seq, loc)) => unread.push((tenant, seq, loc)),
                // None local before `position`: its head at the cut, if any.
                None => {
                    if let Some(head) = anchor.as_ref().and_then(|a| a.heads.get(&tenant)) {
                        heads.insert(tenant, *head);
                    }
                }
            }
        }
        // Tenants with no local record before `position` at all.
        let to_read: std::collections::HashSet<&TenantId> =
            unread.iter().map(|(t, ..)| t).collect();
        let mut cut: Vec<(TenantId, Head)> = Vec::new();
        for (tenant, head) in anchor.iter().flat_map(|a| &a.heads) {
            if !heads.contains_key(tenant) && !to_read.contains(tenant) {
                cut.push((tenant.clone(), *head));
            }
        }
        heads.extend(cut);
        let mut buf = Vec::new();
        for (tenant, seq, loc) in unread {
            let record = self.read_checked(&tenant, seq, loc, &mut buf)?;
            heads.insert(
                tenant,
                Head {
                    seq: record.seq,
                    hash: record.hash,
                },
            );
        }
        Ok(heads)
    }

    /// [`FileLedger::read_at`], checked to be `tenant`'s record `seq`: an
    /// index file pointing elsewhere is refused, not believed.
    fn read_checked(
        &self,
        tenant: &TenantId,
        seq: u64,
        loc: Loc,
        buf: &mut Vec<u8>,
    ) -> Result<Record, LedgerError> {
        let record = self.read_at(loc, buf)?;
        if record.tenant != *tenant || record.seq != seq {
            let (id, offset) = segment::unpack(loc.position);
            return Err(LedgerError::Corrupt {
                path: self.shared.dir.join(index::index_name(id)),
                offset: 0,
                reason: format!(
                    "the index puts `{tenant}` seq {seq} at offset {offset} of segment {id}, which holds `{}` seq {}",
                    record.tenant, record.seq
                ),
            });
        }
        Ok(record)
    }

    /// Where `tenant`'s local receipts with seq > `after` are, at most
    /// `limit`, in seq order.
    fn locate(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Loc)>, LedgerError> {
        let (from, sealed, recent_first, recent) = {
            let state = lock(&self.shared.state);
            let Some(chain) = state.chains.get(tenant.as_str()) else {
                return Ok(Vec::new());
            };
            // Archived receipts are not read here (`ledger verify --archive`
            // reads them): a page starts at the first local one.
            let from = after.saturating_add(1).max(chain.base + 1);
            if from > chain.head.seq || limit == 0 {
                return Ok(Vec::new());
            }
            let recent_first = chain.recent_first();
            let skip = usize::try_from(from.saturating_sub(recent_first)).unwrap_or(usize::MAX);
            let recent: Vec<Loc> = chain
                .recent
                .iter()
                .skip(skip)
                .take(limit)
                .copied()
                .collect();
            (from, chain.sealed, recent_first.max(from), recent)
        };
        index::locate(
            &self.shared.indexes,
            tenant.as_str(),
            from,
            limit,
            sealed,
            recent_first,
            &recent,
        )
    }

    /// Visits every durable record from `from` up to `end` (packed positions).
    fn visit_range(
        &self,
        from: u64,
        end: u64,
        visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        if from == end {
            // Nothing to visit (and an empty ledger has no segment yet).
            return Ok(());
        }
        let (first, start) = segment::unpack(from);
        let segments: Vec<u32> = (first..=segment::unpack(end).0).collect();
        let span = Span {
            segments: &segments,
            start,
            end: Some(end),
            records: 0,
        };
        scan::scan(&self.shared.dir, span, None, &mut Records(visit))?;
        Ok(())
    }
}

impl Drop for FileLedger {
    fn drop(&mut self) {
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_all();
        if let Some(writer) = self.writer.take() {
            // A panicked writer has nothing left to drain.
            let _ = writer.join();
        }
        if let Some(tree) = &self.shared.tree
            && let Err(error) = tree.sync()
        {
            tracing::warn!(%error, "the ledger's Merkle tree could not be synced");
        }
    }
}

impl Ledger for FileLedger {
    fn append(&self, entry: Entry) -> Result<Appended, LedgerError> {
        if entry.bytes.len() > MAX_RECORD {
            return Err(LedgerError::TooLarge {
                len: entry.bytes.len(),
                max: MAX_RECORD,
            });
        }
        // Hash and frame outside the lock; the chain check below makes them right.
        let hash = chain_hash(&entry.prev, &entry.bytes);
        let (header, used) = segment::encode_header(&entry.tenant, entry.seq, &hash, &entry.bytes);
        let frame_len = (used + entry.bytes.len()) as u64;
        let shared = &*self.shared;
        let mut guard = lock(&shared.state);
        let state = &mut *guard;
        if let Some(failed) = &state.failed {
            return Err(super::poisoned(failed));
        }
        if state.closing {
            return Err(LedgerError::Closed);
        }
        let chain = match state.chains.get_mut(entry.tenant.as_str()) {
            Some(chain) => chain,
            None => state.chains.entry(entry.tenant.clone()).or_default(),
        };
        check_extends(&chain.head, &entry)?;
        if state.segment_len > 0 && state.segment_len + frame_len > shared.segment_bytes {
            state.segment += 1;
            state.segment_len = 0;
        }
        let offset = state.segment_len as u32;
        chain.head = Head {
            seq: entry.seq,
            hash,
        };
        chain.push_recent(Loc {
            position: segment::pack(state.segment, offset),
            len: frame_len as u32,
        });
        let chunk = match state.chunks.last_mut() {
            Some(chunk) if chunk.segment == state.segment => chunk,
            _ => {
                let bytes = state.spare.pop().unwrap_or_default();
                state.chunks.push(Chunk {
                    segment: state.segment,
                    offset,
                    bytes,
                });
                state
                    .chunks
                    .last_mut()
                    .unwrap_or_else(|| unreachable!("just pushed"))
            }
        };
        chunk.bytes.extend_from_slice(&header[..used]);
        chunk.bytes.extend_from_slice(&entry.bytes);
        if self.shared.tree.is_some() {
            state.leaves.push(Pending {
                position: segment::pack(state.segment, offset),
                start: offset + used as u32,
                len: entry.bytes.len() as u32,
            });
        }
        state.segment_len += frame_len;
        state.records += 1;
        let records = state.records;
        let wake = std::mem::take(&mut state.writer_waiting);
        drop(guard);
        if wake {
            shared.wake.notify_one();
        }
        Ok(Appended {
            hash,
            ticket: Ticket::pending(records, Arc::clone(&shared.sync)),
        })
    }

    fn head(&self, tenant: &TenantId) -> Head {
        lock(&self.shared.state)
            .chains
            .get(tenant.as_str())
            .map_or(Head::EMPTY, |c| c.head)
    }

    fn read(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Record>, LedgerError> {
        let locs = self.locate(tenant, after, limit)?;
        let Some((_, last)) = locs.last() else {
            return Ok(Vec::new());
        };
        // Recent records may still be in the writer's hands: wait until on disk.
        let end = last.position + u64::from(last.len);
        self.shared.sync.wait_until(|p| p.position >= end)?;
        let mut buf = Vec::new();
        locs.into_iter()
            .map(|(seq, loc)| self.read_checked(tenant, seq, loc, &mut buf))
            .collect()
    }

    fn mark(&self) -> Result<Mark, LedgerError> {
        let state = lock(&self.shared.state);
        if let Some(failed) = &state.failed {
            return Err(super::poisoned(failed));
        }
        Ok(Mark {
            records: state.records,
            position: segment::pack(state.segment, state.segment_len as u32),
        })
    }

    fn checkpoint(&self, mark: Mark, blob: &[u8]) -> Result<(), LedgerError> {
        let mut stored = lock(&self.shared.checkpointing);
        let end = {
            let state = lock(&self.shared.state);
            if let Some(failed) = &state.failed {
                return Err(super::poisoned(failed));
            }
            state.records
        };
        check_mark(&mark, *stored, end)?;
        // The checkpoint must never point past the durable log.
        self.shared.sync.wait_until(|p| p.records >= mark.records)?;
        let bytes = segment::encode_checkpoint(mark.records, mark.position, blob);
        replace_durably(&self.shared.dir, CHECKPOINT_FILE, &bytes)?;
        *stored = mark.records;
        // The tree is derived from the log: a failed sync costs only the
        // time to hash its records again at the next open.
        if let Some(tree) = &self.shared.tree
            && let Err(error) = tree.sync()
        {
            tracing::warn!(%error, "the ledger's Merkle tree could not be synced");
        }
        self.shared.checkpoint_usable.store(true, Ordering::Release);
        // The checkpoint open read is superseded.
        lock(&self.shared.open_heads).take();
        Ok(())
    }

    fn recover(
        &self,
        visit: &mut dyn FnMut(Recovered<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let end = self.flush_position()?;
        // The checkpoint open read, with the heads its scan noted (the first
        // recovery takes them; a checkpoint written since empties the slot),
        // else the file as it is now.
        let opened = lock(&self.shared.open_heads).take();
        let checkpoint = match opened {
            Some((checkpoint, heads)) => Some((checkpoint, Some(heads))),
            None if self.shared.checkpoint_usable.load(Ordering::Acquire) => {
                read_checkpoint(&self.shared.dir)?.map(|c| (c, None))
            }
            None => None,
        };
        // The log before the cut cannot be replayed: without a usable
        // checkpoint, the copy the anchor keeps stands in.
        let checkpoint = match checkpoint {
            None => self.anchor_checkpoint()?.map(|c| (c, None)),
            checkpoint => checkpoint,
        };
        self.recover_from(checkpoint, end, visit)
    }

    fn recover_past_checkpoint(
        &self,
        visit: &mut dyn FnMut(Recovered<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let end = self.flush_position()?;
        let checkpoint = self.anchor_checkpoint()?.map(|c| (c, None));
        self.recover_from(checkpoint, end, visit)
    }

    fn scan(
        &self,
        visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let end = self.flush_position()?;
        self.visit_range(self.log_start()?, end, visit)
    }

    fn verify_with(&self, options: &VerifyOptions<'_>) -> Result<VerifyReport, LedgerError> {
        // Bounded: frames appended meanwhile must not look like a torn tail.
        let end = self.flush_position()?;
        super::inspect::verify_up_to(&self.shared.dir, Some(end), options)
    }

    fn flush(&self) -> Result<(), LedgerError> {
        self.flush_position().map(|_| ())
    }

    fn flushed(&self) -> Ticket {
        let state = lock(&self.shared.state);
        // A failed ledger says so at once, as `flush` does: a ticket no
        // record can satisfy gets the failure published with it.
        let records = if state.failed.is_some() {
            u64::MAX
        } else {
            state.records
        };
        Ticket::pending(records, Arc::clone(&self.shared.sync))
    }

    fn as_file(&self) -> Option<&FileLedger> {
        Some(self)
    }

    fn tree(&self) -> Option<&dyn LogTree> {
        self.shared.tree.as_ref().map(|_| self as &dyn LogTree)
    }

    fn check_writable(&self) -> Result<(), LedgerError> {
        if !self.shared.full.load(Ordering::Acquire) {
            return Ok(());
        }
        match &lock(&self.shared.state).full {
            Some((path, source)) => Err(LedgerError::Full {
                path: path.clone(),
                source: Arc::clone(source),
            }),
            None => Ok(()),
        }
    }

    fn space(&self) -> Option<Result<Space, LedgerError>> {
        let dir = &self.shared.dir;
        let measure = || -> Result<Space, LedgerError> {
            let mut bytes = 0;
            for entry in fs_err::read_dir(dir).map_err(io_err(dir))? {
                let entry = entry.map_err(io_err(dir))?;
                // A file removed meanwhile (a temporary) counts nothing.
                bytes += entry.metadata().map_or(0, |m| m.len());
            }
            // The tree's files are sparse once pruned: their blocks count.
            let tree = dir.join(TREE_DIR);
            if let Ok(entries) = fs_err::read_dir(&tree) {
                use std::os::unix::fs::MetadataExt;
                for entry in entries.flatten() {
                    bytes += entry.metadata().map_or(0, |m| m.blocks() * 512);
                }
            }
            let fs =
                rustix::fs::statvfs(dir.as_path()).map_err(|e| io_err(dir)(io::Error::from(e)))?;
            Ok(Space {
                bytes,
                free: fs.f_bavail.saturating_mul(fs.f_frsize),
                total: fs.f_blocks.saturating_mul(fs.f_frsize),
                full: lock(&self.shared.state).full.is_some(),
            })
        };
        Some(measure())
    }
}

impl crate::merkle::Nodes for FileLedger {
    fn size(&self) -> u64 {
        self.shared.tree.as_ref().map_or(0, |tree| tree.size())
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, crate::merkle::ProofError> {
        match &self.shared.tree {
            Some(tree) => tree.node(level, index),
            None => Err(crate::merkle::ProofError::Store {
                level,
                index,
                detail: "the ledger keeps no tree".to_owned(),
            }),
        }
    }
}

impl LogTree for FileLedger {
    fn latest(&self) -> Result<(u64, Hash), LedgerError> {
        self.tree_or_err()?.head()
    }

    fn stored_size(&self) -> Result<u64, LedgerError> {
        self.tree_or_err()?.head().map(|(size, _)| size)
    }

    fn leaf_index(&self, tenant: &TenantId, seq: u64) -> Result<Option<u64>, LedgerError> {
        let tree = self.tree_or_err()?;
        let Some((_, loc)) = self
            .locate(tenant, seq.saturating_sub(1), 1)?
            .into_iter()
            .find(|(found, _)| *found == seq)
        else {
            return Ok(None);
        };
        tree.leaf_at(loc.position)
    }

    fn sync(&self) -> Result<(), LedgerError> {
        self.tree_or_err()?.sync()
    }
}

impl FileLedger {
    fn tree_or_err(&self) -> Result<&FileTree, LedgerError> {
        self.shared
            .tree
            .as_deref()
            .ok_or_else(|| LedgerError::Corrupt {
                path: self.shared.dir.join(TREE_DIR),
                offset: 0,
                reason: "the ledger keeps no Merkle tree".to_owned(),
            })
    }
}

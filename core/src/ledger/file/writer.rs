//! The file ledger's writer thread: takes batches, writes them, one sync per batch.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::{COMMIT_DELAY, Chunk, PREALLOCATE, Pending, Shared, SyncFn, index, lock};
use crate::ledger::{FailOnPanic, Hash};
use crate::ledger::{is_out_of_space, segment};

/// Stops the ledger: appends refuse, and every wait for durability (pending
/// or future) errors with `error`.
fn fail(shared: &Shared, path: PathBuf, error: io::Error) {
    let mut state = lock(&shared.state);
    let error = Arc::new(error);
    state.failed = Some((path.clone(), Arc::clone(&error)));
    state.chunks.clear();
    state.leaves.clear();
    drop(state);
    shared.sync.fail(path, error);
}

/// How often a writer waiting for disk space tries again.
const SPACE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The writer thread: takes batches, writes them, one sync per batch.
///
/// The current segment is zero-filled [`PREALLOCATE`] bytes at a time ahead
/// of its appends, so that most appends overwrite space the file already
/// has: an `fdatasync` then flushes data only, not a size change (which
/// costs an inode write, or a journal commit). A segment is cut back to its
/// last frame before the next one starts; recovery reads a zero tail of the
/// last segment as its end.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) sync: SyncFn,
    pub(super) current: Option<(u32, fs_err::File)>,
    /// Length of the current segment file (its preallocated end).
    pub(super) allocated: u64,
    /// End of the last frame written to the current segment.
    pub(super) end: u64,
    /// Records in segments before this one are sealed (see [`super::index`]).
    pub(super) sealed_below: u32,
}

impl Writer {
    pub(super) fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let _stopping = FailOnPanic(move || {
            let error = io::Error::other(
                "the ledger's writer thread stopped on a bug; open the ledger again (it recovers from the log)",
            );
            fail(&shared, shared.dir.clone(), error);
        });
        let mut batch: Vec<Chunk> = Vec::new();
        let mut pending = Vec::new();
        let mut leaves = Vec::new();
        let mut last_batch = 0u64;
        let mut synced = 0u64;
        loop {
            // Under concurrent load (the last sync covered several appends),
            // let a few more appends join before writing: one fdatasync then
            // covers more records, at a cost far below a sync's own latency.
            if last_batch > 1 {
                std::thread::sleep(COMMIT_DELAY);
            }
            let (records, position) = {
                let mut state = lock(&self.shared.state);
                for chunk in batch.drain(..) {
                    let mut bytes = chunk.bytes;
                    bytes.clear();
                    if state.spare.len() < 4 {
                        state.spare.push(bytes);
                    }
                }
                while state.chunks.is_empty() && !state.closing {
                    state.writer_waiting = true;
                    state = self
                        .shared
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                state.writer_waiting = false;
                if state.chunks.is_empty() {
                    return;
                }
                std::mem::swap(&mut batch, &mut state.chunks);
                pending.clear();
                std::mem::swap(&mut pending, &mut state.leaves);
                (
                    state.records,
                    segment::pack(state.segment, state.segment_len as u32),
                )
            };
            // Hashed here, beside the appending threads rather than on them.
            if self.shared.tree.is_some() {
                hash_leaves(&batch, &pending, &mut leaves);
            }
            let mut written = self.write(&batch);
            if let Err((path, error)) = &written
                && is_out_of_space(error)
            {
                written = self.wait_for_space(&batch, path.clone(), error);
            }
            if let Err((path, error)) = written {
                fail(&self.shared, path, error);
                return;
            }
            // Leaves join the tree once durable (and before waiters learn
            // they are): a checkpoint never commits to a record a crash
            // could take back.
            if let Some(tree) = &self.shared.tree {
                tree.push(&leaves);
                leaves.clear();
            }
            self.shared.sync.publish(records, position);
            last_batch = records - synced;
            synced = records;
            self.seal();
        }
    }

    /// Once the log moved on to a new segment (the old one closed and
    /// synced), moves the closed segments' record locations out of memory
    /// into their index files.
    fn seal(&mut self) {
        let Some((id, _)) = &self.current else { return };
        if *id <= self.sealed_below {
            return;
        }
        {
            let mut state = lock(&self.shared.state);
            let sealed = index::seal(&mut state.chains, *id);
            // Held before the lock is let go: a read that finds a tenant's
            // run sealed finds its index.
            self.shared.indexes.hold(sealed);
        }
        self.sealed_below = *id;
        self.shared.indexes.write_out();
    }

    /// Publishes that writes wait for space (`Some`), or no longer do, to
    /// appenders ([`Ledger::check_writable`](crate::ledger::Ledger::check_writable))
    /// and to waiters (the sync point).
    fn set_full(&self, full: Option<(PathBuf, Arc<io::Error>)>) {
        self.shared.full.store(full.is_some(), Ordering::Release);
        lock(&self.shared.state).full = full.clone();
        self.shared.sync.stall(full);
    }

    /// After `batch`'s write found the disk full: refuses what waits for it
    /// and new writes ([`Ledger::check_writable`](crate::ledger::Ledger::check_writable)),
    /// then writes it again every [`SPACE_RETRY`] until it fits (`Ok`), or
    /// until another error, or a close (the batch was never acknowledged).
    fn wait_for_space(
        &mut self,
        batch: &[Chunk],
        path: PathBuf,
        error: &io::Error,
    ) -> Result<(), (PathBuf, io::Error)> {
        tracing::error!(path = %path.display(), error = %error, "ledger disk full: ingest refused until space is freed");
        let stalled = (
            path,
            Arc::new(io::Error::new(error.kind(), error.to_string())),
        );
        self.set_full(Some(stalled));
        loop {
            {
                let state = lock(&self.shared.state);
                let (state, _) = self
                    .shared
                    .wake
                    .wait_timeout_while(state, SPACE_RETRY, |s| !s.closing)
                    .unwrap_or_else(PoisonError::into_inner);
                if state.closing {
                    return Err((
                        self.shared.dir.clone(),
                        io::Error::new(
                            io::ErrorKind::StorageFull,
                            "closed while the disk was full",
                        ),
                    ));
                }
            }
            match self.write(batch) {
                Err((_, error)) if is_out_of_space(&error) => continue,
                Err(other) => return Err(other),
                Ok(()) => {
                    self.set_full(None);
                    tracing::info!("ledger disk has space again: ingest resumed");
                    return Ok(());
                }
            }
        }
    }

    /// Writes `batch` and syncs every segment it touched. Written again
    /// after a full disk: chunks of segments already closed (and synced)
    /// are skipped, those of the current segment rewritten (a failed sync
    /// leaves their pages in doubt), a segment file that attempt created
    /// reused.
    fn write(&mut self, batch: &[Chunk]) -> Result<(), (PathBuf, io::Error)> {
        for chunk in batch {
            if self.current.as_ref().is_some_and(|c| chunk.segment < c.0) {
                continue;
            }
            if self.current.as_ref().map(|c| c.0) != Some(chunk.segment) {
                if let Some((_, file)) = &self.current {
                    let failed = |e| (file.path().to_path_buf(), e);
                    // Cut the preallocated zeros: only the last segment may end in them.
                    file.set_len(self.end).map_err(failed)?;
                    (self.sync)(file.file()).map_err(failed)?;
                }
                let path = self.shared.dir.join(segment::segment_name(chunk.segment));
                // Only an earlier attempt of this batch (on a full disk) can
                // have created a segment past the current one: open read it
                // otherwise. What it holds is written again.
                let file = super::create_no_link(&path).map_err(|e| (path.clone(), e))?;
                fs_err::File::open(&self.shared.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| (self.shared.dir.clone(), e))?;
                self.current = Some((chunk.segment, file));
                self.allocated = 0;
            }
            let Some((_, file)) = &self.current else {
                unreachable!("a segment was opened above")
            };
            let failed = |e| (file.path().to_path_buf(), e);
            let chunk_end = u64::from(chunk.offset) + chunk.bytes.len() as u64;
            if chunk_end > self.allocated {
                // Never past the segment's size limit (unless one frame is).
                let limit = self.shared.segment_bytes.max(chunk_end);
                let target = (chunk_end.div_ceil(PREALLOCATE) * PREALLOCATE).min(limit);
                zero_fill(file.file(), self.allocated, target).map_err(failed)?;
                self.allocated = target;
            }
            file.file()
                .write_all_at(&chunk.bytes, u64::from(chunk.offset))
                .map_err(failed)?;
            self.end = chunk_end;
        }
        if let Some((_, file)) = &self.current {
            (self.sync)(file.file()).map_err(|e| (file.path().to_path_buf(), e))?;
        }
        Ok(())
    }
}

/// The Merkle leaves of the `pending` records, found in `batch`'s framed
/// bytes (both in log order), into `leaves` with their positions.
fn hash_leaves(batch: &[Chunk], pending: &[Pending], leaves: &mut Vec<(Hash, u64)>) {
    let mut chunks = batch.iter();
    let mut chunk = chunks.next();
    for record in pending {
        let segment_of = segment::unpack(record.position).0;
        while let Some(c) = chunk
            && (c.segment != segment_of
                || u64::from(record.start) >= u64::from(c.offset) + c.bytes.len() as u64)
        {
            chunk = chunks.next();
        }
        let Some(c) = chunk else {
            unreachable!("every pending record is in the batch's chunks")
        };
        let from = (record.start - c.offset) as usize;
        let bytes = &c.bytes[from..from + record.len as usize];
        leaves.push((crate::merkle::leaf_hash(bytes), record.position));
    }
}

/// Writes zeros to `file` from `from` up to `to`.
fn zero_fill(file: &std::fs::File, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

//! Write stage: apply a plan to the disk, touching only files whose bytes
//! change. Each write goes to a temporary file in the same folder, is synced,
//! then renamed over the target, so a reader never sees half a file; each
//! folder that changed is synced once at the end. Manifests are renamed
//! last.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::owned::{self, OwnedError};
use crate::plan::{CratePlan, Op};

/// Why a plan could not be applied.
#[derive(Debug, Error)]
pub enum WriteError {
    /// A file system operation failed.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What was being done (`create`, `write`, `replace`, `sync`, …).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// A path to write or delete is reached through a link, or is not
    /// what the plan saw (a folder where a file goes, …).
    #[error(transparent)]
    Owned(#[from] OwnedError),
}

impl WriteError {
    /// 1 for what is on disk (rejected input), 2 for a failing file system.
    pub const fn exit_code(&self) -> u8 {
        match self {
            WriteError::Owned(e) => e.exit_code(),
            WriteError::Io { .. } => 2,
        }
    }
}

/// What applying a plan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Files created or rewritten.
    pub written: usize,
    /// Files removed.
    pub deleted: usize,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WriteError {
    let path = path.to_owned();
    move |source| WriteError::Io {
        action,
        path,
        source,
    }
}

/// A temporary file in `dir` that becomes an ordinary file when persisted:
/// readable by all, writable by its owner (0644; tempfile's own default,
/// 0600, would leave generated files unreadable to others).
pub fn temp_in(dir: &Path, prefix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    builder.tempfile_in(dir)
}

/// Writes `bytes` to `path` atomically: temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir).map_err(io("create", dir))?;
    let mut temp = temp_in(dir, ".ggen-").map_err(io("create a temporary file in", dir))?;
    temp.write_all(bytes).map_err(io("write", temp.path()))?;
    temp.as_file().sync_all().map_err(io("sync", temp.path()))?;
    temp.persist(path)
        .map_err(|e| io("replace", path)(e.error))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    let handle = fs_err::File::open(dir).map_err(io("open", dir))?;
    handle.sync_all().map_err(io("sync", dir))
}

/// Removes `dir` and its parents up to (not including) `stop` while they
/// are empty. `dir` lies below `stop` by construction (a checked path of
/// plain names, no link on the way, joined to the crate folder).
fn prune_empty(mut dir: &Path, stop: &Path) {
    while dir != stop && dir.starts_with(stop) {
        // Failing means "not empty" (or gone): either way, stop climbing.
        if fs_err::remove_dir(dir).is_err() {
            return;
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => return,
        }
    }
}

/// Files and folders synced concurrently: fsync latency, not CPU, bounds a
/// fresh build, and concurrent syncs share the file system's journal commits.
const SYNC_THREADS: usize = 16;

/// Runs `f` over `items` on up to [`SYNC_THREADS`] threads; the first error wins.
fn for_each_parallel<T: Sync>(
    items: &[T],
    f: impl Fn(&T) -> Result<(), WriteError> + Sync,
) -> Result<(), WriteError> {
    if items.is_empty() {
        return Ok(());
    }
    let chunk = items.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().try_for_each(&f)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Result<Vec<()>, WriteError>>()
    })?;
    Ok(())
}

/// A produced file written to a temporary file beside its target, not yet renamed.
struct Staged {
    target: PathBuf,
    temp: tempfile::NamedTempFile,
    manifest: bool,
}

fn stage(target: &Path, bytes: &[u8], manifest: bool) -> Result<Staged, WriteError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir).map_err(io("create", dir))?;
    let mut temp = temp_in(dir, ".ggen-").map_err(io("create a temporary file in", dir))?;
    temp.write_all(bytes).map_err(io("write", temp.path()))?;
    Ok(Staged {
        target: target.to_owned(),
        temp,
        manifest,
    })
}

/// Renames a staged file over its target.
fn persist(
    s: Staged,
    touched: &mut BTreeSet<PathBuf>,
    applied: &mut Applied,
) -> Result<(), WriteError> {
    if let Some(dir) = s.target.parent() {
        touched.insert(dir.to_owned());
    }
    s.temp
        .persist(&s.target)
        .map_err(|e| io("replace", &s.target)(e.error))?;
    applied.written += 1;
    Ok(())
}

/// Applies every write and delete of `plans`. Refused and kept files are left
/// alone; callers refuse to apply a plan with refusals unless forced.
///
/// Order: stage every write as a temp file, sync them all (in parallel),
/// rename the files, delete stale ones, rename the manifests last, then sync
/// every changed folder. A crash at any point leaves each file either old or
/// new, and a manifest only ever describes files already in place.
pub fn apply(plans: &[CratePlan], out_root: &Path) -> Result<Applied, WriteError> {
    let mut applied = Applied::default();
    let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
    let mut staged = Vec::new();
    let mut deletes = Vec::new();
    for plan in plans {
        for change in &plan.changes {
            if !matches!(
                change.op,
                Op::Create | Op::Update | Op::Overwrite | Op::Delete
            ) {
                continue;
            }
            // Checked again here, not only when planning: a write or a
            // delete never goes through a link or leaves the crate folder.
            if let Some(problem) = owned::path_problem(&change.path) {
                return Err(OwnedError::Outside {
                    path: format!("{}/{}", plan.dir, change.path),
                    problem,
                }
                .into());
            }
            let (target, _) = owned::locate(&plan.path, &change.path)?;
            match change.op {
                Op::Create | Op::Update | Op::Overwrite => {
                    let text = change.after.as_deref().unwrap_or_default();
                    let manifest = change.path == crate::manifest::FILE_NAME;
                    staged.push(stage(&target, text.as_bytes(), manifest)?);
                }
                Op::Delete => deletes.push(target),
                Op::Unchanged | Op::Refuse | Op::Keep | Op::Unowned => {}
            }
        }
    }
    for_each_parallel(&staged, |s| {
        s.temp
            .as_file()
            .sync_all()
            .map_err(io("sync", s.temp.path()))
    })?;
    let (manifests, files): (Vec<Staged>, Vec<Staged>) =
        staged.into_iter().partition(|s| s.manifest);
    for s in files {
        persist(s, &mut touched, &mut applied)?;
    }
    for target in &deletes {
        let dir = target.parent().unwrap_or(out_root);
        fs_err::remove_file(target).map_err(io("delete", target))?;
        applied.deleted += 1;
        prune_empty(dir, out_root);
        if let Some(existing) = dir.ancestors().find(|d| d.is_dir()) {
            touched.insert(existing.to_owned());
        }
    }
    for s in manifests {
        persist(s, &mut touched, &mut applied)?;
    }
    let dirs: Vec<PathBuf> = touched.into_iter().filter(|d| d.is_dir()).collect();
    for_each_parallel(&dirs, |d| sync_dir(d))?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("sub/file.txt");
        write_atomic(&target, b"one").expect("write");
        write_atomic(&target, b"two").expect("rewrite");
        assert_eq!(fs_err::read(&target).expect("read"), b"two");
        let names: Vec<_> = fs_err::read_dir(dir.path().join("sub"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("file.txt")]);
    }

    #[cfg(unix)]
    #[test]
    fn written_files_are_readable_by_all() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.txt");
        write_atomic(&path, b"x").expect("written");
        let mode = fs_err::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}

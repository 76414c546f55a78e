//! Retention with archiving: a file ledger's closed segments older than a
//! bound (`--retain 7d`, or a size: `--retain 20GiB`) are copied to an
//! archive, the copy read back and compared, and only then cut from the
//! local log (see [`FileLedger::cut`]).
//!
//! The archive goes through the `object_store` crate (one interface over a
//! local directory, GCS and S3); this build has its local-directory store,
//! which is what the tests use. Objects are named `NNNNNNNNNN.seg` after
//! the segment, under the URL's path.
//!
//! Every step can be interrupted (a crash, a kill) and the sequence run
//! again: an upload is atomic and is simply made again, a segment is cut
//! only after its archived copy matched it byte for byte (and, in a local
//! directory, was synced), and a cut finishes at the next open once its
//! anchor is written.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use sha2::{Digest, Sha256};

use crate::ledger::file::FileLedger;
use crate::ledger::{Ledger, LedgerError};

/// What could go wrong archiving.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive URL is not one this build can write.
    #[error("archive `{url}`: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The store refused or failed an operation.
    #[error("archive `{url}`: {source}")]
    Store {
        /// The archive.
        url: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The copy read back differs from the segment.
    #[error(
        "archive `{url}`: the copy of segment {segment} reads back different from the local file"
    )]
    Mismatch {
        /// The archive.
        url: String,
        /// The segment.
        segment: u32,
    },
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A blocking step was cancelled or panicked.
    #[error("archiving stopped: {0}")]
    Join(String),
}

/// How much of the log stays local.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    /// Segments last written longer ago than this are archived.
    Age(Duration),
    /// The oldest segments are archived while the local ones are larger.
    Bytes(u64),
}

impl std::str::FromStr for Retain {
    type Err = String;

    /// `7d`, `12h`, `30m`, `90s`; `20GiB`, `500MiB`, `10GB`.
    fn from_str(text: &str) -> Result<Retain, String> {
        let text = text.trim();
        let bad =
            || format!("`{text}` is neither an age (`7d`, `12h`, `30m`) nor a size (`20GiB`)");
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let seconds = |scale: u64| {
            number
                .checked_mul(scale)
                .map(|s| Retain::Age(Duration::from_secs(s)))
        };
        let bytes = |scale: u64| number.checked_mul(scale).map(Retain::Bytes);
        let retain = match unit.trim() {
            "s" => seconds(1),
            "m" => seconds(60),
            "h" => seconds(3600),
            "d" => seconds(86_400),
            unit => crate::ingress::disk::byte_unit(unit).and_then(bytes),
        };
        retain
            .filter(|r| *r != Retain::Age(Duration::ZERO) && *r != Retain::Bytes(0))
            .ok_or_else(bad)
    }
}

/// An archive of ledger segments.
#[derive(Debug, Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// The directory, for a local archive (its copies are synced).
    local: Option<PathBuf>,
}

/// Bytes read and uploaded at a time.
const UPLOAD_PART: usize = 1 << 20;

/// The object name of segment `id`.
fn object(id: u32) -> ObjectPath {
    ObjectPath::from(format!("{id:010}.seg"))
}

impl Archive {
    /// The archive at `url`: `file:///abs/dir`, or a directory path
    /// (created if missing). `gs://` and `s3://` are refused by this build.
    pub fn open(url: &str) -> Result<Archive, ArchiveError> {
        let refuse = |reason: &str| ArchiveError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let dir = match url.split_once("://") {
            None => PathBuf::from(url),
            Some(("file", path)) => PathBuf::from(path),
            Some((scheme @ ("gs" | "s3" | "az" | "azure" | "http" | "https"), _)) => {
                return Err(refuse(&format!(
                    "`{scheme}://` archives need object_store's cloud features, which this build leaves out: archive to a directory (a mounted bucket works)"
                )));
            }
            Some(_) => return Err(refuse("unknown scheme: give `file:///dir` or a directory")),
        };
        fs_err::create_dir_all(&dir).map_err(|e| refuse(&e.to_string()))?;
        let store =
            LocalFileSystem::new_with_prefix(&dir).map_err(|source| ArchiveError::Store {
                url: url.to_owned(),
                source,
            })?;
        Ok(Archive {
            store: Arc::new(store),
            url: url.to_owned(),
            local: Some(dir),
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn store_error(&self, source: object_store::Error) -> ArchiveError {
        ArchiveError::Store {
            url: self.url.clone(),
            source,
        }
    }

    /// Segment `id`'s archived bytes, if it is archived.
    pub async fn get(&self, id: u32) -> Result<Option<Vec<u8>>, ArchiveError> {
        match self.store.get(&object(id)).await {
            Ok(got) => Ok(Some(
                got.bytes().await.map_err(|e| self.store_error(e))?.to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(self.store_error(error)),
        }
    }

    /// The SHA-256 of segment `id`'s archived copy, read as a stream
    /// (`None`: not archived).
    async fn digest(&self, id: u32) -> Result<Option<[u8; 32]>, ArchiveError> {
        use futures_util::StreamExt as _;
        let got = match self.store.get(&object(id)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(self.store_error(error)),
        };
        let mut hasher = Sha256::new();
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            hasher.update(chunk.map_err(|e| self.store_error(e))?);
        }
        Ok(Some(hasher.finalize().into()))
    }

    /// Stores the segment file `path` as segment `id`, streamed a MiB at
    /// a time, and reads it back: `Ok` only once the archived copy is
    /// durable and equal to the file.
    pub async fn put_verified(&self, id: u32, path: &std::path::Path) -> Result<(), ArchiveError> {
        let digest = self.upload(id, path).await?;
        self.check_durable(id, digest).await
    }

    /// Starts storing segment `id` from bytes written to the [`Upload`] in
    /// order (finished by [`Archive::finish_verified`]).
    pub fn begin(&self, id: u32) -> Upload {
        Upload {
            // At most two 1 MiB parts in flight: archiving must not add a
            // segment's size to the governor's memory.
            writer: object_store::buffered::BufWriter::with_capacity(
                Arc::clone(&self.store),
                object(id),
                UPLOAD_PART,
            )
            .with_max_concurrency(2),
            hasher: Sha256::new(),
            id,
        }
    }

    /// Completes `upload` and reads the copy back: `Ok` with its SHA-256
    /// only once the archived copy is durable and equal to what was written.
    pub async fn finish_verified(&self, upload: Upload) -> Result<[u8; 32], ArchiveError> {
        let id = upload.id;
        let digest = self.finish(upload).await?;
        self.check_durable(id, digest).await?;
        Ok(digest)
    }

    /// Completes `upload` (the object appears whole, or not at all);
    /// returns the SHA-256 of what was written. Not read back.
    pub async fn finish(&self, upload: Upload) -> Result<[u8; 32], ArchiveError> {
        use tokio::io::AsyncWriteExt as _;
        let Upload {
            mut writer, hasher, ..
        } = upload;
        writer.shutdown().await.map_err(|e| self.stream_error(e))?;
        Ok(hasher.finalize().into())
    }

    /// Reads segment `id`'s archived copy back and compares its SHA-256
    /// with `digest`; syncs it in a local directory.
    async fn check_durable(&self, id: u32, digest: [u8; 32]) -> Result<(), ArchiveError> {
        if self.digest(id).await? != Some(digest) {
            return Err(ArchiveError::Mismatch {
                url: self.url.clone(),
                segment: id,
            });
        }
        if let Some(dir) = &self.local {
            // The local store renames a temporary into place but does not sync.
            let path = dir.join(format!("{id:010}.seg"));
            let synced = tokio::task::spawn_blocking(move || {
                fs_err::File::open(&path)?.sync_all()?;
                fs_err::File::open(path.parent().unwrap_or(&path))?.sync_all()
            })
            .await
            .map_err(|e| ArchiveError::Join(e.to_string()))?;
            synced.map_err(|e| self.stream_error(e))?;
        }
        Ok(())
    }

    /// Streams the file `path` into the store as segment `id`, a MiB at a
    /// time; returns the SHA-256 of what it read.
    async fn upload(&self, id: u32, path: &std::path::Path) -> Result<[u8; 32], ArchiveError> {
        use tokio::io::AsyncReadExt as _;
        let io = |source: std::io::Error| {
            ArchiveError::Ledger(LedgerError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut upload = self.begin(id);
        let mut chunk = vec![0u8; UPLOAD_PART];
        loop {
            let n = file.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                break;
            }
            upload.write(self, &chunk[..n]).await?;
        }
        self.finish(upload).await
    }

    /// An I/O error of a stream into the store.
    fn stream_error(&self, error: std::io::Error) -> ArchiveError {
        self.store_error(object_store::Error::Generic {
            store: "archive",
            source: Box::new(error),
        })
    }
}

/// An archived copy being written (see [`Archive::begin`]).
pub struct Upload {
    writer: object_store::buffered::BufWriter,
    hasher: Sha256,
    id: u32,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// Appends `bytes` to the copy.
    pub async fn write(&mut self, archive: &Archive, bytes: &[u8]) -> Result<(), ArchiveError> {
        use tokio::io::AsyncWriteExt as _;
        self.hasher.update(bytes);
        self.writer
            .write_all(bytes)
            .await
            .map_err(|e| archive.stream_error(e))
    }
}

/// Where [`archive_segment`] stops early (tests: a crash there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// After the upload, before it is read back.
    Uploaded,
    /// After the archived copy was verified, before the cut.
    Verified,
    /// After the anchor of the cut is written, before the segment is removed.
    Anchored,
}

/// Archives segment `id` (the oldest local one, closed) and cuts it:
/// `false` when the ledger refused the cut (the checkpoint does not cover
/// the segment yet). `stop` ends the sequence early, as a crash would.
pub async fn archive_segment(
    ledger: &Arc<dyn Ledger>,
    archive: &Archive,
    id: u32,
    stop: Option<Step>,
) -> Result<bool, ArchiveError> {
    let path = file_of(ledger.as_ref())?.segment_path(id);
    if stop == Some(Step::Uploaded) {
        archive.upload(id, &path).await?;
        return Ok(false);
    }
    archive.put_verified(id, &path).await?;
    if stop == Some(Step::Verified) {
        return Ok(false);
    }
    let cutter = Arc::clone(ledger);
    let anchor_only = stop == Some(Step::Anchored);
    blocking(move || {
        let file = file_of(cutter.as_ref())?;
        if anchor_only {
            file.cut_anchor_only(id)
        } else {
            file.cut(id)
        }
    })
    .await
}

/// The file ledger behind `ledger` (retention needs one).
fn file_of(ledger: &dyn Ledger) -> Result<&FileLedger, LedgerError> {
    ledger.as_file().ok_or_else(|| LedgerError::Io {
        path: PathBuf::from("archive"),
        source: std::io::Error::other("retention and archiving need a file ledger"),
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, ArchiveError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ArchiveError::Join(e.to_string()))?
        .map_err(ArchiveError::from)
}

/// Archives and cuts, oldest first, every closed segment past `retain` (at
/// `now`); returns how many were cut. Stops at the first the ledger will
/// not cut yet (the checkpoint does not cover it).
pub async fn archive_due(
    ledger: &Arc<dyn Ledger>,
    archive: &Archive,
    retain: Retain,
    now: SystemTime,
) -> Result<usize, ArchiveError> {
    let mut cut = 0;
    loop {
        let sizer = Arc::clone(ledger);
        let due = blocking(move || {
            let sizer = file_of(sizer.as_ref())?;
            let (ids, current) = sizer.segments()?;
            let Some(&first) = ids.first().filter(|&&id| id < current) else {
                return Ok(None);
            };
            let meta = |id: u32| {
                let path = sizer.segment_path(id);
                fs_err::metadata(&path).map_err(|source| LedgerError::Io {
                    path: path.clone(),
                    source,
                })
            };
            let due = match retain {
                Retain::Age(age) => meta(first)?
                    .modified()
                    .is_ok_and(|at| now.duration_since(at).is_ok_and(|old| old > age)),
                Retain::Bytes(limit) => {
                    let mut total = 0;
                    for &id in &ids {
                        total += meta(id)?.len();
                    }
                    total > limit
                }
            };
            Ok(due.then_some(first))
        })
        .await?;
        let Some(id) = due else { return Ok(cut) };
        if !archive_segment(ledger, archive, id, None).await? {
            return Ok(cut);
        }
        tracing::info!(segment = id, archive = %archive.url, "segment archived and removed locally");
        cut += 1;
    }
}

/// Runs [`run`] on a thread of its own, with a small runtime whose blocking
/// work (file reads, the store's writes, cuts) stays on one more thread:
/// archiving's buffers then come and go in the same two threads' memory
/// instead of spreading over the service's blocking pool.
pub fn spawn(
    ledger: Arc<dyn Ledger>,
    archive: Archive,
    retain: Retain,
    every: Duration,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .thread_name("ledger-archive-io")
        .build()?;
    std::thread::Builder::new()
        .name("ledger-archiver".to_owned())
        .spawn(move || runtime.block_on(run(ledger, archive, retain, every, stopped)))
}

/// Runs [`archive_due`] every `every` until `stopped` turns true; failures
/// are logged and tried again at the next round.
pub async fn run(
    ledger: Arc<dyn Ledger>,
    archive: Archive,
    retain: Retain,
    every: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = ticks.tick() => {}
        }
        if let Err(error) = archive_due(&ledger, &archive, retain, SystemTime::now()).await {
            tracing::error!(error = %crate::report::error_chain(&error), "archiving ledger segments failed: trying again later");
        }
    }
}

impl Archive {
    /// A blocking reader of archived segments, for the ledger's archive
    /// verification and scan (on a thread of its own: it runs its own
    /// small runtime).
    pub fn fetcher(
        &self,
    ) -> Result<impl FnMut(u32) -> Result<Option<Vec<u8>>, LedgerError> + Send + use<>, ArchiveError>
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| ArchiveError::Join(e.to_string()))?;
        let archive = self.clone();
        Ok(move |id| {
            runtime
                .block_on(archive.get(id))
                .map_err(|error| LedgerError::Io {
                    path: PathBuf::from(&archive.url),
                    source: std::io::Error::other(crate::report::error_chain(&error)),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_bounds_parse() {
        assert_eq!(
            "7d".parse(),
            Ok(Retain::Age(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!("90s".parse(), Ok(Retain::Age(Duration::from_secs(90))));
        assert_eq!("20GiB".parse(), Ok(Retain::Bytes(20 << 30)));
        for bad in [
            "",
            "7",
            "0d",
            "0GiB",
            "d",
            "7 weeks",
            "-1d",
            "99999999999999999999d",
        ] {
            assert!(bad.parse::<Retain>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cloud_urls_are_refused_by_this_build_with_a_reason() {
        let error = Archive::open("gs://bucket/ledger").unwrap_err();
        assert!(error.to_string().contains("cloud features"), "{error}");
        assert!(Archive::open("ftp://x/y").is_err());
    }
}

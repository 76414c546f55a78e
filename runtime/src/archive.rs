//! Retention with archiving: a file ledger's closed segments older than a
//! bound (`--retain 7d`, or a size: `--retain 20GiB`) are copied to an
//! archive, the copy read back and compared, and only then cut from the
//! local log (see [`FileLedger::cut`]).
//!
//! The archive goes through the `object_store` crate, one interface over a
//! local directory, an S3 bucket (`s3://bucket/prefix`) and a GCS bucket
//! (`gs://bucket/prefix`); credentials and endpoints come from the usual
//! `AWS_*` / `GOOGLE_*` environment variables. Objects are named
//! `NNNNNNNNNN.seg` after the segment, under the URL's path.
//!
//! Every step can be interrupted (a crash, a kill) and the sequence run
//! again: an upload is atomic and is simply made again, a segment is cut
//! only after its archived copy matched it byte for byte (and, in a local
//! directory, was synced), and a cut finishes at the next open once its
//! anchor is written.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
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
    #[error("archive `{url}`")]
    Store {
        /// The archive.
        url: String,
        /// The store's error.
        #[source]
        source: StoreFailure,
    },
    /// A bucket did not answer the check made before `serve` starts.
    #[error("archive `{url}` cannot be listed{hint}")]
    Unreachable {
        /// The archive.
        url: String,
        /// Where the credentials came from, when none were given.
        hint: &'static str,
        /// The store's error.
        #[source]
        source: StoreFailure,
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
    /// The archive already holds another segment under this one's name
    /// (a ledger started afresh, or two ledgers sharing a prefix): it is
    /// never overwritten, since it may be the only copy of its history.
    #[error(
        "archive `{url}` already holds a different segment {segment}: not overwritten (is another ledger archiving to this prefix, or was this ledger started afresh?)"
    )]
    Occupied {
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

/// An error of the `object_store` crate, shown once: its message already
/// carries its causes (an error chain would repeat them).
#[derive(Debug)]
pub struct StoreFailure(pub object_store::Error);

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StoreFailure {}

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
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// The directory, for a local archive (its copies are synced).
    local: Option<PathBuf>,
    /// Builds another client of the same store (a bucket's HTTP
    /// connections belong to the runtime that opened them).
    connect: Connect,
    /// Said when [`Archive::check`] fails: where the credentials were
    /// looked for when no variable gave them (empty: they were given).
    hint: &'static str,
    /// Bytes per part of a multipart upload.
    part: usize,
}

type Connect = Arc<dyn Fn() -> Result<Arc<dyn ObjectStore>, ArchiveError> + Send + Sync>;

impl std::fmt::Debug for Archive {
    // The store's settings may hold credentials: only the URL is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Where an archive URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A local directory (a mounted bucket included).
    Dir(PathBuf),
    /// An S3 bucket and the prefix of the objects in it.
    S3 { bucket: String, prefix: String },
    /// A GCS bucket and the prefix of the objects in it.
    Gcs { bucket: String, prefix: String },
}

impl Target {
    /// `file:///dir` or a path; `s3://bucket[/prefix]`, `gs://bucket[/prefix]`.
    fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = match url.split_once("://") {
            None => return Ok(Target::Dir(PathBuf::from(url))),
            Some(("file", path)) => return Ok(Target::Dir(PathBuf::from(path))),
            Some(split) => split,
        };
        if !matches!(scheme, "s3" | "gs") {
            return Err(match scheme {
                "az" | "azure" | "abfs" | "abfss" | "adl" => {
                    "Azure archives are not supported: give `s3://bucket/prefix`, `gs://bucket/prefix` or a directory".to_owned()
                }
                "http" | "https" => "HTTP archives are not supported (an S3-compatible endpoint is `s3://bucket/prefix` with `AWS_ENDPOINT`): give `s3://`, `gs://` or a directory".to_owned(),
                _ => format!(
                    "unknown scheme `{scheme}`: give `s3://bucket/prefix`, `gs://bucket/prefix`, `file:///dir` or a directory"
                ),
            });
        }
        if rest.contains(['?', '#']) {
            return Err("a query or fragment is not part of an archive URL".to_owned());
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("no bucket: give `{scheme}://bucket/prefix`"));
        }
        let prefix = prefix.trim_end_matches('/');
        ObjectPath::parse(prefix)
            .map_err(|e| format!("the prefix `{prefix}` is not an object path: {e}"))?;
        let (bucket, prefix) = (bucket.to_owned(), prefix.to_owned());
        Ok(match scheme {
            "s3" => Target::S3 { bucket, prefix },
            _ => Target::Gcs { bucket, prefix },
        })
    }
}

/// Puts `store` under `prefix` (none when empty).
fn under(store: impl ObjectStore, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

/// The client of a bucket, configured from `settings` (the `AWS_*` or
/// `GOOGLE_*` variables, as object_store's `from_env` reads them).
fn bucket_store(
    target: &Target,
    settings: &[(String, String)],
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    // reqwest is built without a rustls provider (nothing needs aws-lc-rs):
    // ring is installed once for the process (an error: one already was).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let keys = settings
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value));
    match target {
        Target::S3 { bucket, prefix } => {
            let mut builder = AmazonS3Builder::new();
            for (key, value) in keys {
                if let Ok(key) = key.parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            Ok(under(builder.with_bucket_name(bucket).build()?, prefix))
        }
        Target::Gcs { bucket, prefix } => {
            let mut builder = GoogleCloudStorageBuilder::new();
            for (key, value) in keys {
                if let Ok(key) = key.parse::<GoogleConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            Ok(under(builder.with_bucket_name(bucket).build()?, prefix))
        }
        Target::Dir(_) => unreachable!("a directory is not a bucket"),
    }
}

/// Bytes read and uploaded at a time.
const UPLOAD_PART: usize = 1 << 20;

/// Bytes per part of an upload to a bucket: S3 and GCS refuse smaller
/// parts (but the last).
const BUCKET_PART: usize = 5 << 20;

/// How long [`Archive::check`] waits for a bucket (and its credentials).
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The object name of segment `id`.
fn object(id: u32) -> ObjectPath {
    ObjectPath::from(format!("{id:010}.seg"))
}

impl Archive {
    /// The archive at `url`: `s3://bucket/prefix` or `gs://bucket/prefix`
    /// (configured from the `AWS_*` / `GOOGLE_*` environment variables), or
    /// a directory: `file:///abs/dir` or a path (created if missing).
    /// Opening a bucket reaches nothing yet: see [`Archive::check`].
    pub fn open(url: &str) -> Result<Archive, ArchiveError> {
        Archive::open_with_env(url, std::env::vars())
    }

    /// [`Archive::open`] with `env` in place of the process's environment.
    pub fn open_with_env(
        url: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Archive, ArchiveError> {
        let refuse = |reason: String| ArchiveError::Url {
            url: url.to_owned(),
            reason,
        };
        let failed = |source| ArchiveError::Store {
            url: url.to_owned(),
            source: StoreFailure(source),
        };
        let target = Target::parse(url).map_err(refuse)?;
        if let Target::Dir(dir) = target {
            fs_err::create_dir_all(&dir).map_err(|e| refuse(e.to_string()))?;
            let store: Arc<dyn ObjectStore> =
                Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(failed)?);
            let shared = Arc::clone(&store);
            return Ok(Archive {
                store,
                url: url.to_owned(),
                local: Some(dir),
                connect: Arc::new(move || Ok(Arc::clone(&shared))),
                hint: "",
                part: UPLOAD_PART,
            });
        }
        // `SERVICE_ACCOUNT` is read by GCS's `from_env` as well.
        let settings: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| {
                name.starts_with("AWS_") || name.starts_with("GOOGLE_") || name == "SERVICE_ACCOUNT"
            })
            .collect();
        let given = |names: &[&str]| {
            settings
                .iter()
                .any(|(name, _)| names.contains(&name.as_str()))
        };
        let hint = match target {
            Target::S3 { .. }
                if !given(&[
                    "AWS_ACCESS_KEY_ID",
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "AWS_SKIP_SIGNATURE",
                ]) =>
            {
                " (no `AWS_ACCESS_KEY_ID`, web identity or container credentials are set: they were asked of the instance metadata server)"
            }
            Target::Gcs { .. }
                if !given(&[
                    "GOOGLE_SERVICE_ACCOUNT",
                    "GOOGLE_SERVICE_ACCOUNT_PATH",
                    "GOOGLE_SERVICE_ACCOUNT_KEY",
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    "SERVICE_ACCOUNT",
                    "GOOGLE_BEARER_TOKEN",
                    "GOOGLE_SKIP_SIGNATURE",
                ]) =>
            {
                " (neither `GOOGLE_APPLICATION_CREDENTIALS` nor `GOOGLE_SERVICE_ACCOUNT` is set: credentials were asked of the metadata server, as workload identity does)"
            }
            _ => "",
        };
        let store = bucket_store(&target, &settings).map_err(failed)?;
        let owned = url.to_owned();
        Ok(Archive {
            store,
            url: url.to_owned(),
            local: None,
            connect: Arc::new(move || {
                bucket_store(&target, &settings).map_err(|source| ArchiveError::Store {
                    url: owned.clone(),
                    source: StoreFailure(source),
                })
            }),
            hint,
            part: BUCKET_PART,
        })
    }

    /// What `serve` checks before it opens anything: the URL, and that a
    /// bucket answers with the credentials the environment gives (see
    /// [`Archive::check`]). A directory is not created here.
    pub async fn preflight(url: &str) -> Result<(), ArchiveError> {
        match Target::parse(url) {
            Err(reason) => Err(ArchiveError::Url {
                url: url.to_owned(),
                reason,
            }),
            Ok(Target::Dir(_)) => Ok(()),
            Ok(_) => Archive::open(url)?.check().await,
        }
    }

    /// Checks a bucket answers with these credentials by listing (at most
    /// one page of) the objects under the prefix; a directory passes.
    /// Needs a runtime with I/O and timers.
    pub async fn check(&self) -> Result<(), ArchiveError> {
        use futures_util::StreamExt as _;
        if self.local.is_some() {
            return Ok(());
        }
        let unreachable = |source| ArchiveError::Unreachable {
            url: self.url.clone(),
            hint: self.hint,
            source: StoreFailure(source),
        };
        match tokio::time::timeout(CHECK_TIMEOUT, self.store.list(None).next()).await {
            Ok(None | Some(Ok(_))) => Ok(()),
            Ok(Some(Err(error))) => Err(unreachable(error)),
            Err(_) => Err(unreachable(object_store::Error::Generic {
                store: "archive",
                source: format!("no answer within {} s", CHECK_TIMEOUT.as_secs()).into(),
            })),
        }
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn store_error(&self, source: object_store::Error) -> ArchiveError {
        ArchiveError::Store {
            url: self.url.clone(),
            source: StoreFailure(source),
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
    /// durable and equal to the file (see [`Archive::begin`] for a copy
    /// already there).
    pub async fn put_verified(&self, id: u32, path: &std::path::Path) -> Result<(), ArchiveError> {
        let upload = self.upload(id, path).await?;
        self.finish_verified(upload).await.map(drop)
    }

    /// Starts storing segment `id` from bytes written to the [`Upload`] in
    /// order (finished by [`Archive::finish_verified`]). A copy already
    /// there is never overwritten: the bytes are then only hashed, and the
    /// copy is used as it is when equal to them (an earlier round stopped
    /// after storing it), refused when not.
    pub async fn begin(&self, id: u32) -> Result<Upload, ArchiveError> {
        let into = match self.digest(id).await? {
            Some(stored) => Destination::Compare(stored),
            // At most two parts in flight (1 MiB, 5 MiB to a bucket):
            // archiving must not add a segment's size to the governor's memory.
            None => Destination::Store(
                object_store::buffered::BufWriter::with_capacity(
                    Arc::clone(&self.store),
                    object(id),
                    self.part,
                )
                .with_max_concurrency(2),
            ),
        };
        Ok(Upload {
            into,
            hasher: Sha256::new(),
            id,
        })
    }

    /// Completes `upload` and reads the copy back: `Ok` with its SHA-256
    /// only once the archived copy is durable and equal to what was written.
    pub async fn finish_verified(&self, upload: Upload) -> Result<[u8; 32], ArchiveError> {
        let (id, stored) = (upload.id, matches!(upload.into, Destination::Store(_)));
        let digest = self.finish(upload).await?;
        // A copy that was there is equal already (`finish` compared it).
        if stored && self.digest(id).await? != Some(digest) {
            return Err(ArchiveError::Mismatch {
                url: self.url.clone(),
                segment: id,
            });
        }
        self.sync_local(id).await?;
        Ok(digest)
    }

    /// Completes `upload` (the object appears whole, or not at all; a copy
    /// that was there is compared with what was written); returns the
    /// SHA-256 of what was written. Not read back.
    pub async fn finish(&self, upload: Upload) -> Result<[u8; 32], ArchiveError> {
        use tokio::io::AsyncWriteExt as _;
        let Upload { into, hasher, id } = upload;
        let digest: [u8; 32] = hasher.finalize().into();
        match into {
            Destination::Store(mut writer) => {
                writer.shutdown().await.map_err(|e| self.stream_error(e))?
            }
            Destination::Compare(stored) if stored != digest => {
                return Err(ArchiveError::Occupied {
                    url: self.url.clone(),
                    segment: id,
                });
            }
            Destination::Compare(_) => {}
        }
        Ok(digest)
    }

    /// Syncs segment `id`'s archived copy in a local directory.
    async fn sync_local(&self, id: u32) -> Result<(), ArchiveError> {
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

    /// Streams the file `path` into an [`Upload`] of segment `id`, a MiB at
    /// a time.
    async fn upload(&self, id: u32, path: &std::path::Path) -> Result<Upload, ArchiveError> {
        use tokio::io::AsyncReadExt as _;
        let io = |source: std::io::Error| {
            ArchiveError::Ledger(LedgerError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut upload = self.begin(id).await?;
        let mut chunk = vec![0u8; UPLOAD_PART];
        loop {
            let n = file.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                return Ok(upload);
            }
            upload.write(self, &chunk[..n]).await?;
        }
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
    into: Destination,
    hasher: Sha256,
    id: u32,
}

/// Where an [`Upload`]'s bytes go.
enum Destination {
    /// Into the store.
    Store(object_store::buffered::BufWriter),
    /// Nowhere: a copy is there already, with this SHA-256, to compare.
    Compare([u8; 32]),
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
        match &mut self.into {
            Destination::Store(writer) => writer
                .write_all(bytes)
                .await
                .map_err(|e| archive.stream_error(e)),
            Destination::Compare(_) => Ok(()),
        }
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
        let upload = archive.upload(id, &path).await?;
        archive.finish(upload).await?;
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
        // A bucket's client needs I/O and timers, and a client of its own:
        // connections another fetcher's runtime opened would be driven
        // only while that runtime runs.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ArchiveError::Join(e.to_string()))?;
        let archive = Archive {
            store: (self.connect)()?,
            ..self.clone()
        };
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
    fn archive_urls_parse_into_a_directory_or_a_bucket_and_prefix() {
        let bucket = |bucket: &str, prefix: &str| (bucket.to_owned(), prefix.to_owned());
        let s3 = |url| match Target::parse(url) {
            Ok(Target::S3 { bucket, prefix }) => (bucket, prefix),
            other => panic!("{url}: {other:?}"),
        };
        assert_eq!(
            s3("s3://ledgers/eu/governor-1"),
            bucket("ledgers", "eu/governor-1")
        );
        assert_eq!(s3("s3://ledgers/eu/"), bucket("ledgers", "eu"));
        assert_eq!(s3("s3://ledgers"), bucket("ledgers", ""));
        assert_eq!(
            Target::parse("gs://ledgers/eu"),
            Ok(Target::Gcs {
                bucket: "ledgers".to_owned(),
                prefix: "eu".to_owned()
            })
        );
        assert_eq!(
            Target::parse("file:///var/archive"),
            Ok(Target::Dir(PathBuf::from("/var/archive")))
        );
        assert_eq!(
            Target::parse("relative/dir"),
            Ok(Target::Dir(PathBuf::from("relative/dir")))
        );
        for (bad, why) in [
            ("az://container/x", "Azure"),
            ("https://example.com/x", "HTTP archives"),
            ("ftp://x/y", "unknown scheme `ftp`"),
            ("s3:///prefix", "no bucket"),
            ("gs://", "no bucket"),
            ("s3://b/a//c", "not an object path"),
            ("s3://b/p?versionId=1", "query"),
        ] {
            let error = Target::parse(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
            let error = Archive::open_with_env(bad, []).unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn a_credentials_file_that_cannot_be_read_is_refused_at_open() {
        let missing = "/nonexistent/ggen-archive-key.json".to_owned();
        for name in ["GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_SERVICE_ACCOUNT"] {
            let error =
                Archive::open_with_env("gs://bucket/ledger", [(name.to_owned(), missing.clone())])
                    .unwrap_err();
            let text = crate::report::error_chain(&error);
            assert!(text.contains("gs://bucket/ledger"), "{text}");
            assert!(matches!(error, ArchiveError::Store { .. }), "{text}");
        }
    }

    #[test]
    fn opening_a_bucket_reads_only_its_own_variables() {
        // Settings of the other cloud are ignored; a bad value of its own is not.
        let env = [("GOOGLE_BASE_URL".to_owned(), "x".to_owned())];
        assert!(Archive::open_with_env("s3://bucket/p", env).is_ok());
        let env = [("AWS_ALLOW_HTTP".to_owned(), "maybe".to_owned())];
        let error = Archive::open_with_env("s3://bucket/p", env).unwrap_err();
        assert!(matches!(error, ArchiveError::Store { .. }), "{error}");
        let env = [
            ("AWS_ACCESS_KEY_ID".to_owned(), "AKIDEXAMPLE".to_owned()),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                "s3cret-never-shown".to_owned(),
            ),
        ];
        let archive = Archive::open_with_env("s3://bucket/p", env).unwrap();
        let shown = format!("{archive:?}");
        assert!(shown.contains("s3://bucket/p"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

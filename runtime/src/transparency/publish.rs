//! Signed checkpoints of a running ledger's tree, published where the
//! operator of the ledger volume does not control them in the same way: a
//! directory (a mounted bucket), a webhook, or stdout for a log pipeline.
//!
//! `serve` publishes every `--publish-every` seconds, or sooner once
//! `--publish-receipts` receipts were appended, and at shutdown; `replay`
//! at its end. A checkpoint commits only to durable receipts (the ledger
//! adds a leaf once its record is synced). The note is self-authenticating
//! (its Ed25519 signature), so sinks need no credential of their own.

use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::ledger::Ledger;
use crate::merkle::Hash;
use crate::note::{Checkpoint, NoteSigner};

/// The environment variable that may hold the signing key itself (as
/// `keygen` writes it) instead of `--checkpoint-key FILE`.
pub const KEY_ENV: &str = "GOVERNOR_CHECKPOINT_KEY";

/// How long a webhook sink may take to take a checkpoint.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where checkpoints go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// One file per checkpoint, `<size>.checkpoint` (20 digits), in a
    /// directory: what `ledger verify --checkpoints DIR` reads.
    Dir(PathBuf),
    /// `POST` of the note (`text/plain`) to an `https://` URL (plain
    /// `http://` to loopback only).
    Webhook(String),
    /// One JSON line per checkpoint on stdout (`-`).
    Stdout,
}

impl FromStr for Sink {
    type Err = String;

    fn from_str(text: &str) -> Result<Sink, String> {
        if text == "-" {
            return Ok(Sink::Stdout);
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            // Named redacted: the URL may carry a credential.
            let named = crate::actuator::webhook::redacted(text);
            let url = reqwest::Url::parse(text).map_err(|e| format!("`{named}`: {e}"))?;
            if !crate::actuator::webhook::secure_url(&url, &[]) {
                return Err(format!(
                    "`{named}`: checkpoints go to `https://` URLs (plain `http://` to loopback only)"
                ));
            }
            return Ok(Sink::Webhook(text.to_owned()));
        }
        if text.is_empty() {
            return Err("an empty sink: give a directory, a URL or `-`".to_owned());
        }
        Ok(Sink::Dir(PathBuf::from(text)))
    }
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Dir(dir) => write!(f, "{}", dir.display()),
            Sink::Webhook(url) => f.write_str(&crate::actuator::webhook::redacted(url)),
            Sink::Stdout => f.write_str("stdout"),
        }
    }
}

/// The flags of signed checkpoints, shared by `serve` and `replay`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PublishArgs {
    /// Sign checkpoints of the ledger's Merkle tree with this Ed25519 key
    /// (`keygen --out FILE` makes one); or the key itself in
    /// `GOVERNOR_CHECKPOINT_KEY`. Needs `--publish-checkpoints`.
    #[arg(long, value_name = "FILE")]
    pub checkpoint_key: Option<PathBuf>,
    /// Where signed checkpoints are published: a directory (one file per
    /// checkpoint), an `https://` URL (POST), or `-` (JSON lines on
    /// stdout); repeat for several.
    #[arg(long = "publish-checkpoints", value_name = "DIR|URL|-")]
    pub publish: Vec<Sink>,
    /// Seconds between signed checkpoints (when receipts were appended).
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub publish_every: u64,
    /// Receipts after which a checkpoint is published without waiting
    /// for `--publish-every`.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub publish_receipts: u64,
}

impl PublishArgs {
    /// The publisher these flags ask for (`None`: no signed checkpoints),
    /// `key_env` being `GOVERNOR_CHECKPOINT_KEY`'s value; why not, when the
    /// flags cannot work.
    pub fn publisher(&self, key_env: Option<String>) -> Result<Option<Publisher>, String> {
        let key_env = key_env.filter(|k| !k.trim().is_empty());
        let signer = match (&self.checkpoint_key, key_env) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "give the checkpoint key once: `--checkpoint-key` or `{KEY_ENV}`, not both"
                ));
            }
            (Some(path), None) => {
                super::signer(path).map_err(|e| crate::report::error_chain(&e))?
            }
            (None, Some(text)) => {
                NoteSigner::from_text(text.trim()).map_err(|e| format!("`{KEY_ENV}`: {e}"))?
            }
            (None, None) if self.publish.is_empty() => return Ok(None),
            (None, None) => {
                return Err(format!(
                    "`--publish-checkpoints` needs a key to sign them: `--checkpoint-key FILE` or `{KEY_ENV}` (`keygen --out FILE` makes one)"
                ));
            }
        };
        for sink in &self.publish {
            if let Sink::Dir(dir) = sink
                && !dir.is_dir()
            {
                return Err(format!(
                    "`--publish-checkpoints {}`: not a directory",
                    dir.display()
                ));
            }
        }
        if self.publish.is_empty() {
            return Err("signed checkpoints must be published somewhere the ledger's operator does not control: give `--publish-checkpoints DIR|URL|-`".to_owned());
        }
        Ok(Some(Publisher::new(signer, self.publish.clone())))
    }
}

/// A checkpoint signed and published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Receipts it commits to.
    pub size: u64,
    /// The tree's root at that size.
    pub root: Hash,
    /// The signed note.
    pub note: String,
}

/// Why a checkpoint was not published (everywhere).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The ledger keeps no tree, or it cannot be read.
    #[error("the ledger's Merkle tree cannot be read")]
    Tree(#[source] crate::ledger::LedgerError),
    /// The tree's root changed at a size already published: the tree no
    /// longer matches what was signed.
    #[error(
        "the ledger's tree at {size} receipts has root {now}, but the checkpoint published for that size has {published}"
    )]
    Diverged {
        /// The size.
        size: u64,
        /// The published root, hex.
        published: String,
        /// The root now, hex.
        now: String,
    },
    /// The key cannot sign this origin.
    #[error("the checkpoint cannot be signed: {0}")]
    Sign(String),
    /// Some sinks did not take it; they are tried again next time.
    #[error("checkpoint of {size} receipts not published to {}", failed.join("; "))]
    Sinks {
        /// The checkpoint's size.
        size: u64,
        /// Each failed sink with its error.
        failed: Vec<String>,
    },
}

#[derive(Debug, Default)]
struct State {
    latest: Option<Published>,
    /// Whether each sink has `latest`.
    delivered: Vec<bool>,
}

/// Signs the ledger's checkpoints and delivers them to every sink.
#[derive(Debug)]
pub struct Publisher {
    signer: NoteSigner,
    sinks: Vec<Sink>,
    state: Mutex<State>,
    /// Held while one publication runs.
    running: tokio::sync::Mutex<()>,
}

impl Publisher {
    /// A publisher signing with `signer` (its name is the origin) to `sinks`.
    pub fn new(signer: NoteSigner, sinks: Vec<Sink>) -> Publisher {
        Publisher {
            signer,
            sinks,
            state: Mutex::new(State::default()),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The sinks, as logs name them.
    pub fn sinks(&self) -> Vec<String> {
        self.sinks.iter().map(ToString::to_string).collect()
    }

    /// The log's origin (the key's name).
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// Whether a sink still lacks the latest checkpoint.
    pub fn undelivered(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.latest.is_some() && state.delivered.iter().any(|done| !done)
    }

    /// The latest checkpoint signed.
    pub fn latest(&self) -> Option<Published> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .latest
            .clone()
    }

    /// Signs the checkpoint of every durable receipt (unless the latest
    /// already covers them) and delivers it to every sink that lacks it.
    pub async fn publish(&self, ledger: &Arc<dyn Ledger>) -> Result<Published, PublishError> {
        let _running = self.running.lock().await;
        let reader = Arc::clone(ledger);
        let (size, root) = tokio::task::spawn_blocking(move || {
            let tree = reader
                .tree()
                .ok_or_else(|| crate::ledger::LedgerError::Corrupt {
                    path: PathBuf::from("tree"),
                    offset: 0,
                    reason: "the ledger keeps no Merkle tree".to_owned(),
                })?;
            let head = tree.latest()?;
            tree.sync()?;
            Ok(head)
        })
        .await
        .map_err(|e| {
            PublishError::Tree(crate::ledger::LedgerError::Corrupt {
                path: PathBuf::from("tree"),
                offset: 0,
                reason: e.to_string(),
            })
        })?
        .map_err(PublishError::Tree)?;
        let published = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match &state.latest {
                Some(latest) if latest.size == size && latest.root != root => {
                    return Err(PublishError::Diverged {
                        size,
                        published: hex::encode(latest.root),
                        now: hex::encode(root),
                    });
                }
                Some(latest) if latest.size == size => latest.clone(),
                _ => {
                    let note = Checkpoint {
                        origin: self.signer.name().to_owned(),
                        size,
                        root,
                    }
                    .sign(&self.signer)
                    .map_err(|e| PublishError::Sign(e.to_string()))?;
                    let published = Published { size, root, note };
                    state.latest = Some(published.clone());
                    state.delivered = vec![false; self.sinks.len()];
                    published
                }
            }
        };
        let delivered = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .delivered
            .clone();
        let mut failed = Vec::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            if delivered.get(i).copied().unwrap_or(false) {
                continue;
            }
            match deliver(sink, &published).await {
                Ok(()) => {
                    let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    if state.latest.as_ref().map(|l| l.size) == Some(published.size)
                        && let Some(done) = state.delivered.get_mut(i)
                    {
                        *done = true;
                    }
                }
                Err(error) => failed.push(format!("{sink}: {error}")),
            }
        }
        if !failed.is_empty() {
            return Err(PublishError::Sinks {
                size: published.size,
                failed,
            });
        }
        Ok(published)
    }
}

/// The file name of the checkpoint of `size` receipts in a directory sink.
pub fn file_name(size: u64) -> String {
    format!("{size:020}.checkpoint")
}

async fn deliver(sink: &Sink, published: &Published) -> Result<(), String> {
    match sink {
        Sink::Dir(dir) => {
            let dir = dir.clone();
            let published = published.clone();
            tokio::task::spawn_blocking(move || write_file(&dir, &published))
                .await
                .map_err(|e| e.to_string())?
        }
        Sink::Webhook(url) => {
            crate::actuator::webhook::install_crypto_provider();
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("ggen-runtime/", env!("CARGO_PKG_VERSION")))
                .timeout(WEBHOOK_TIMEOUT)
                .build()
                .map_err(|e| e.to_string())?;
            let response = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(published.note.clone())
                .send()
                .await
                // The URL may carry a credential (userinfo, a query token):
                // the sink's Display names it, redacted, beside the error.
                .map_err(|e| crate::report::error_chain(&e.without_url()))?;
            if !response.status().is_success() {
                return Err(format!("answered {}", response.status()));
            }
            Ok(())
        }
        Sink::Stdout => {
            let line = serde_json::json!({
                "checkpoint": {
                    "size": published.size,
                    "root": hex::encode(published.root),
                    "note": published.note,
                }
            });
            // A stalled log pipe blocks a blocking thread, not a worker.
            tokio::task::spawn_blocking(move || {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}").and_then(|()| out.flush())
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
        }
    }
}

/// Writes `published` to `dir/<size>.checkpoint`, durably: a temporary
/// of its own (hidden, so `ledger verify --checkpoints` skips it; a fresh
/// random name, created new and never through a link) is synced, then
/// linked to its name, which fails rather than replace a file already
/// there. A different checkpoint already there for that size is kept and
/// reported: two roots for one size is the evidence an auditor needs.
fn write_file(dir: &std::path::Path, published: &Published) -> Result<(), String> {
    use fs_err::os::unix::fs::OpenOptionsExt as _;
    let name = file_name(published.size);
    let path = dir.join(&name);
    if let Some(existing) = read_existing(&path)? {
        return same(&path, &existing, published);
    }
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| format!("no random bytes: {e}"))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(random)));
    let written = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(published.note.as_bytes())?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = fs_err::remove_file(&tmp);
        return Err(e.to_string());
    }
    let linked = fs_err::hard_link(&tmp, &path);
    let _ = fs_err::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        // Another publisher's file appeared meanwhile: kept, and compared.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let existing = read_existing(&path)?.unwrap_or_default();
            return same(&path, &existing, published);
        }
        Err(e) => return Err(e.to_string()),
    }
    fs_err::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| e.to_string())
}

/// The checkpoint file at `path`, if there is one: read without following
/// a link or waiting on a FIFO, and only if it is a regular file of a
/// checkpoint's size.
fn read_existing(path: &std::path::Path) -> Result<Option<String>, String> {
    use fs_err::os::unix::fs::OpenOptionsExt as _;
    use std::io::Read as _;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = match fs_err::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "{e}: the entry is kept and nothing is written over it"
            ));
        }
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > 64 << 10 {
        return Err(format!(
            "`{}` is there but is not a checkpoint file: kept, nothing written",
            path.display()
        ));
    }
    let mut text = String::new();
    file.take(64 << 10)
        .read_to_string(&mut text)
        .map_err(|e| format!("`{}`: {e}", path.display()))?;
    Ok(Some(text))
}

fn same(path: &std::path::Path, existing: &str, published: &Published) -> Result<(), String> {
    if existing == published.note {
        return Ok(());
    }
    Err(format!(
        "`{}` already holds another checkpoint of {} receipts: the ledger no longer matches what was published (restored from a backup, or rewritten); the file is kept",
        path.display(),
        published.size
    ))
}

/// Publishes `publisher`'s checkpoints of `ledger` until `stopped` turns
/// true: every `every` when the tree grew, sooner once it grew by
/// `receipts`; a failed publication is logged and tried again next time.
pub async fn publish_periodically(
    publisher: Arc<Publisher>,
    ledger: Arc<dyn Ledger>,
    every: Duration,
    receipts: u64,
    poll: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut last: Option<std::time::Instant> = None;
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = ticks.tick() => {}
        }
        let size = ledger.tree().map_or(0, crate::merkle::Nodes::size);
        let due = match (publisher.latest(), last) {
            // At start.
            (_, None) => true,
            // Nothing signed yet (the tree or the key failed): every `every`.
            (None, Some(at)) => at.elapsed() >= every,
            // Every `every` in any case (a tree another process extends,
            // as a database ledger's, shows its growth only then; an
            // unchanged tree signs nothing new), sooner once `receipts` more.
            (Some(published), Some(at)) => {
                at.elapsed() >= every || size.saturating_sub(published.size) >= receipts
            }
        };
        if !due {
            continue;
        }
        match publisher.publish(&ledger).await {
            Ok(published) => {
                tracing::info!(size = published.size, root = %hex::encode(published.root), "signed checkpoint published");
                last = Some(std::time::Instant::now());
            }
            Err(error) => {
                tracing::error!(error = %crate::report::error_chain(&error), "signed checkpoint not published");
                // Tried again once due (after `every` at the latest).
                last = Some(std::time::Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_are_directories_urls_or_stdout() {
        assert_eq!("-".parse::<Sink>(), Ok(Sink::Stdout));
        assert_eq!(
            "/mnt/bucket".parse::<Sink>(),
            Ok(Sink::Dir(PathBuf::from("/mnt/bucket")))
        );
        assert_eq!(
            "https://audit.example/checkpoints".parse::<Sink>(),
            Ok(Sink::Webhook(
                "https://audit.example/checkpoints".to_owned()
            ))
        );
        assert!("http://127.0.0.1:9/x".parse::<Sink>().is_ok());
        let plain = "http://audit.example/x".parse::<Sink>().unwrap_err();
        assert!(plain.contains("loopback"), "{plain}");
        assert!("".parse::<Sink>().is_err());
        // A refused URL is named without its credentials.
        let refused = "http://user:pw@audit.example/x?token=S3CRET"
            .parse::<Sink>()
            .unwrap_err();
        assert!(refused.contains("audit.example"), "{refused}");
        assert!(
            !refused.contains("pw") && !refused.contains("S3CRET"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn a_failed_delivery_never_names_the_sink_s_credentials() {
        // A port nothing listens on: the POST fails to connect.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink: Sink = format!("http://user:pw@127.0.0.1:{port}/ingest?token=S3CRET")
            .parse()
            .unwrap();
        let error = deliver(&sink, &published(1, 1)).await.unwrap_err();
        let logged = format!("{sink}: {error}");
        assert!(logged.contains(&format!("127.0.0.1:{port}")), "{logged}");
        assert!(
            !logged.contains("S3CRET") && !logged.contains("pw@"),
            "{logged}"
        );
    }

    fn published(size: u64, root: u8) -> Published {
        let signer = NoteSigner::from_seed("example.com/log", [7; 32]).unwrap();
        let checkpoint = Checkpoint {
            origin: signer.name().to_owned(),
            size,
            root: [root; 32],
        };
        Published {
            size,
            root: [root; 32],
            note: checkpoint.sign(&signer).unwrap(),
        }
    }

    /// Names in `dir`, sorted.
    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_directory_sink_never_replaces_or_follows_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let first = published(5, 1);
        write_file(dir.path(), &first).unwrap();
        // Again: the same note is already there.
        write_file(dir.path(), &first).unwrap();
        assert_eq!(names(dir.path()), vec![file_name(5)]);
        // Another root for the same size: refused, the first kept.
        let other = published(5, 2);
        let error = write_file(dir.path(), &other).unwrap_err();
        assert!(error.contains("another checkpoint of 5"), "{error}");
        let kept = fs_err::read_to_string(dir.path().join(file_name(5))).unwrap();
        assert_eq!(kept, first.note);
        // A link planted at the next name is not followed: its target
        // keeps its bytes.
        let victim = dir.path().join("victim");
        fs_err::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(file_name(6))).unwrap();
        assert!(write_file(dir.path(), &published(6, 3)).is_err());
        assert_eq!(fs_err::read_to_string(&victim).unwrap(), "precious");
        // A FIFO there does not hang the publisher.
        let fifo = dir.path().join(file_name(7));
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(write_file(dir.path(), &published(7, 4)).is_err());
        // No temporary is left behind.
        assert!(
            names(dir.path()).iter().all(|n| !n.starts_with('.')),
            "{:?}",
            names(dir.path())
        );
    }

    #[test]
    fn flags_need_a_key_and_a_sink_together() {
        let key = NoteSigner::from_seed("example.com/log", [7; 32])
            .unwrap()
            .to_text();
        let none = PublishArgs::default();
        assert!(none.publisher(None).unwrap().is_none());
        let sink_only = PublishArgs {
            publish: vec![Sink::Stdout],
            ..PublishArgs::default()
        };
        assert!(
            sink_only
                .publisher(None)
                .unwrap_err()
                .contains("needs a key")
        );
        let publisher = sink_only.publisher(Some(key.clone())).unwrap().unwrap();
        assert_eq!(publisher.origin(), "example.com/log");
        assert!(
            none.publisher(Some(key.clone()))
                .unwrap_err()
                .contains("published somewhere")
        );
        let both = PublishArgs {
            checkpoint_key: Some(PathBuf::from("/nonexistent")),
            publish: vec![Sink::Stdout],
            ..PublishArgs::default()
        };
        assert!(both.publisher(Some(key)).unwrap_err().contains("not both"));
        let missing = PublishArgs {
            publish: vec![Sink::Dir(PathBuf::from("/nonexistent/checkpoints"))],
            ..PublishArgs::default()
        };
        let key = NoteSigner::from_seed("example.com/log", [7; 32])
            .unwrap()
            .to_text();
        assert!(
            missing
                .publisher(Some(key))
                .unwrap_err()
                .contains("not a directory")
        );
        assert!(
            sink_only
                .publisher(Some("PRIVATE+KEY+nonsense".to_owned()))
                .is_err()
        );
    }
}

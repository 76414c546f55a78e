//! An acknowledged request is always in the ledger: in-process (drop
//! everything without a checkpoint, reopen) and across a real `kill -9` of a
//! serving governor process.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ggen_runtime::ingress::auth::JwksSource;
use ggen_runtime::ingress::service::{self, ActionsMode, LogFormat, ServeArgs};
use ggen_runtime::ledger::Ledger;
use ggen_runtime::ledger::file::{self, FileLedger, FileOptions};
use ggen_runtime::pg::PgLedger;
use ggen_runtime::registry::Registry;
use ggen_runtime::tenant::TenantId;
use ggen_runtime::transparency::publish::{PublishArgs, Sink};
use tokio::sync::Mutex;

use super::client::Connection;
use super::harness::{Service, TOKEN, post, signal};
use super::sku::GUARD;

/// Env var that turns [`governor_child`] into a serving governor.
const CHILD_LEDGER: &str = "GGEN_IT_GOVERNOR_LEDGER";
/// Env var with the child's `--checkpoint-every`; when set, the child also
/// checks every 100 ms instead of every 10 s.
const CHILD_CHECKPOINT_EVERY: &str = "GGEN_IT_GOVERNOR_CHECKPOINT_EVERY";
/// Env var with the child's `--shutdown-timeout`.
const CHILD_SHUTDOWN_TIMEOUT: &str = "GGEN_IT_GOVERNOR_SHUTDOWN_TIMEOUT";
/// `--verify-every` of the child, in seconds (default 0: never).
const CHILD_VERIFY_EVERY: &str = "GGEN_IT_GOVERNOR_VERIFY_EVERY";
/// Env var that makes the child serve [`super::sku::REPLICA`] with live
/// actions instead of [`GUARD`] with logged ones.
pub(super) const CHILD_REPLICA: &str = "GGEN_IT_GOVERNOR_REPLICA";
/// Retention for the child: `--retain` (with `--archive-every 1`).
pub(super) const CHILD_RETAIN: &str = "GGEN_IT_GOVERNOR_RETAIN";
/// Retention for the child: `--archive`.
pub(super) const CHILD_ARCHIVE: &str = "GGEN_IT_GOVERNOR_ARCHIVE";
/// The child's `--segment-size`, in bytes.
pub(super) const CHILD_SEGMENT: &str = "GGEN_IT_GOVERNOR_SEGMENT";
/// The child's `--partition-receipts`.
pub(super) const CHILD_PARTITION: &str = "GGEN_IT_GOVERNOR_PARTITION";
/// A directory the child publishes signed checkpoints to (every second
/// or 100 receipts), with the key in `GOVERNOR_CHECKPOINT_KEY`.
pub(super) const CHILD_PUBLISH: &str = "GGEN_IT_GOVERNOR_PUBLISH";
const TENANTS: usize = 10;

fn tenant_of(i: usize) -> String {
    format!("t{}", i % TENANTS)
}

/// Every signal id receipted in the ledger at `dir` (opened afresh).
fn receipted_ids(dir: &Path) -> BTreeSet<String> {
    ids_in(&FileLedger::open(dir, FileOptions::default()).unwrap())
}

/// Every signal id receipted in `ledger`.
/// The event id of a signal receipt (`None` for other receipts).
pub(super) fn signal_id(bytes: &[u8]) -> Option<String> {
    let receipt: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    (receipt["kind"] == "signal")
        .then(|| receipt["event"]["id"].as_str().map(str::to_owned))
        .flatten()
}

fn ids_in(ledger: &dyn Ledger) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for t in 0..TENANTS {
        let tenant = TenantId::new(&tenant_of(t)).unwrap();
        for record in ledger.read(&tenant, 0, usize::MAX).unwrap() {
            ids.extend(signal_id(&record.bytes));
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_signals_survive_dropping_everything_without_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(Service::file(&GUARD, dir.path(), FileOptions::default()));
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let service = Arc::clone(&service);
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            for n in 0..25 {
                let i = worker * 25 + n;
                let id = format!("m-{i}");
                let reply = service
                    .send(post("/v1/signals", signal(&tenant_of(i), 10.0, &id)))
                    .await;
                assert_eq!(reply.status, 204, "{reply:?}");
                acked.lock().unwrap().push(id);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    drop(service);
    let report = file::verify_dir(dir.path()).unwrap();
    assert_eq!(report.first_bad, None);
    // One open for the check and the restart: every open-after-close can
    // race a fork elsewhere in this test process that still holds the
    // closed LOCK's descriptor until it execs.
    let ledger = Arc::new(FileLedger::open(dir.path(), FileOptions::default()).unwrap());
    let acked = acked.lock().unwrap();
    assert_eq!(acked.len(), 200);
    all_stored(&acked, &ids_in(&*ledger));
    // A restart recovers every tenant from the ledger alone.
    let registry = Registry::new(&GUARD, ledger);
    assert_eq!(registry.recover().unwrap().tenants, TENANTS);
}

/// Not a test: the governor process [`acknowledged_signals_survive_kill_9`]
/// runs (this test binary re-executed with `CHILD_LEDGER` set).
#[test]
#[ignore = "entry point of a child process"]
fn governor_child() {
    let Some(ledger) = std::env::var_os(CHILD_LEDGER) else {
        return;
    };
    let every = std::env::var(CHILD_CHECKPOINT_EVERY)
        .ok()
        .map(|n| n.parse::<u64>().unwrap());
    let args = ServeArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: match ledger.to_str() {
            Some(url) if url.starts_with("postgres://") => ggen_runtime::store::StoreArgs {
                database_url: Some(url.to_owned()),
                ledger: None,
            },
            _ => ggen_runtime::store::StoreArgs::dir(ledger),
        },
        insecure_no_auth: false,
        check: false,
        no_pubsub: false,
        log_format: LogFormat::Text,
        // The test SKUs name a Pub/Sub audience: `serve` needs its keys.
        jwks: Some(JwksSource::File(super::harness::fixture("jwks.json"))),
        oidc_email: vec![super::auth::EMAIL.to_owned()],
        marketplace_audience: None,
        marketplace_oidc_email: Vec::new(),
        procurement_url: None,
        gcp_token_url: None,
        gcp_key_file: None,
        max_in_flight: 1024,
        min_free: Default::default(),
        retain: std::env::var(CHILD_RETAIN).ok().map(|r| r.parse().unwrap()),
        archive: std::env::var(CHILD_ARCHIVE).ok(),
        archive_every: if std::env::var_os(CHILD_RETAIN).is_some() {
            1
        } else {
            60
        },
        partition_receipts: std::env::var(CHILD_PARTITION)
            .ok()
            .map_or(ggen_runtime::pg::DEFAULT_PARTITION_RECEIPTS, |n| {
                n.parse().unwrap()
            }),
        database_timeout: 10,
        segment_size: std::env::var(CHILD_SEGMENT)
            .ok()
            .map_or(64 << 20, |n| n.parse().unwrap()),
        max_connections: 4096,
        header_read_timeout: 10,
        shutdown_timeout: std::env::var(CHILD_SHUTDOWN_TIMEOUT)
            .ok()
            .map_or(30, |s| s.parse().unwrap()),
        actions: if std::env::var_os(CHILD_REPLICA).is_some() {
            ActionsMode::Live
        } else {
            ActionsMode::Log
        },
        drain_timeout: 1,
        checkpoint_every: every.unwrap_or(200_000),
        verify_every: std::env::var(CHILD_VERIFY_EVERY)
            .ok()
            .map_or(0, |s| s.parse().unwrap()),
        dedupe_window: 3600,
        dedupe_capacity: 100_000,
        dedupe_max_ids: 2_000_000,
        checkpoint_poll: if every.is_some() {
            Duration::from_millis(100)
        } else {
            service::CHECKPOINT_POLL
        },
        // The key, when publishing, comes from `GOVERNOR_CHECKPOINT_KEY`.
        transparency: PublishArgs {
            checkpoint_key: None,
            publish: std::env::var_os(CHILD_PUBLISH)
                .map(|dir| vec![Sink::Dir(dir.into())])
                .unwrap_or_default(),
            publish_every: 1,
            publish_receipts: 100,
        },
        publish_poll: Duration::from_millis(100),
    };
    let code = if std::env::var_os(CHILD_REPLICA).is_some() {
        service::run(&super::sku::REPLICA, args)
    } else {
        service::run(&GUARD, args)
    };
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

/// Kills the child on drop, whatever happens in the test.
pub(super) struct Child(pub(super) std::process::Child);

impl Child {
    /// Sends SIGTERM and waits for the exit, failing with `late` past `bound`.
    pub(super) async fn terminate(
        &mut self,
        bound: Duration,
        late: &str,
    ) -> std::process::ExitStatus {
        let killed = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < bound, "{late}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the governor child on `dir`; returns it and its address.
fn spawn_governor(dir: &Path) -> (Child, SocketAddr) {
    spawn_governor_with(dir, None)
}

/// Starts the governor child on `dir`, with `--checkpoint-every` if given.
fn spawn_governor_with(dir: &Path, checkpoint_every: Option<u64>) -> (Child, SocketAddr) {
    let every = checkpoint_every.map(|every| (CHILD_CHECKPOINT_EVERY, every.to_string()));
    spawn_governor_env(dir, every.as_slice())
}

/// Starts the governor child on `dir` with the extra environment `env`.
pub(super) fn spawn_governor_env(dir: &Path, env: &[(&str, String)]) -> (Child, SocketAddr) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "ingress::durability::governor_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_LEDGER, dir)
        .env("GOVERNOR_AUTH_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command.envs(env.iter().map(|(name, value)| (name, value)));
    let mut child = Child(command.spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keeps draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("listening")
                && let Some(rest) = line.split("addr=").nth(1)
            {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the governor child did not start listening");
    (child, addr.parse().unwrap())
}

/// Starts a governor on `ledger` (a directory, or a `postgres://` URL as a
/// path), loads it from 8 connections and `kill -9`s it after 500 acks;
/// returns the acknowledged signal ids.
async fn acked_before_kill_9(ledger: &Path) -> Vec<String> {
    let (mut child, addr) = spawn_governor(ledger);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (acked, sent, stop) = (Arc::clone(&acked), Arc::clone(&sent), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let Ok(mut connection) = Connection::open(addr).await else {
                return;
            };
            while !stop.load(Ordering::Acquire) {
                let i = sent.fetch_add(1, Ordering::AcqRel);
                if i >= 100_000 {
                    break;
                }
                let id = format!("k-{i}");
                let body = signal(&tenant_of(i), 20.0, &id);
                match connection
                    .request("POST", "/v1/signals", Some(TOKEN), &body)
                    .await
                {
                    Ok((204, _)) => acked.lock().await.push(id),
                    Ok((status, body)) => panic!("unexpected {status}: {body}"),
                    // The process died under us: this one was never acknowledged.
                    Err(_) => break,
                }
            }
        }));
    }
    // Kill while requests are in flight, after a good number of acks.
    let started = Instant::now();
    while acked.lock().await.len() < 500 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    stop.store(true, Ordering::Release);
    for task in tasks {
        task.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().await);
    assert!(
        acked.len() >= 500,
        "only {} acks before the deadline",
        acked.len()
    );
    acked
}

/// Every acknowledged id is among the stored ones.
fn all_stored(acked: &[String], stored: &BTreeSet<String>) {
    for id in acked {
        assert!(
            stored.contains(id),
            "acknowledged `{id}` is not in the ledger"
        );
    }
    assert!(stored.len() >= acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_signals_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let acked = acked_before_kill_9(dir.path()).await;
    let report = file::verify_dir(dir.path()).unwrap();
    assert_eq!(report.first_bad, None, "{report:?}");
    all_stored(&acked, &receipted_ids(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_signals_survive_kill_9_on_postgres() {
    // The synchronous client must not run on a runtime thread.
    use tokio::task::block_in_place as blocking;
    let Some(url) = blocking(crate::ledger::postgres::fresh_schema) else {
        return;
    };
    let acked = acked_before_kill_9(Path::new(&url)).await;
    blocking(|| {
        let ledger = PgLedger::open_read_only(&url).unwrap();
        let report = ledger.verify().unwrap();
        assert_eq!(report.first_bad, None, "{report:?}");
        all_stored(&acked, &ids_in(&ledger));
    });
    // The killed process's writer lock is gone with its connection: a new
    // governor takes over the ledger, recovers and serves.
    let (_child, addr) = spawn_governor(Path::new(&url));
    let mut connection = Connection::open(addr).await.unwrap();
    let (status, body) = connection
        .request(
            "POST",
            "/v1/signals",
            Some(TOKEN),
            &signal("t0", 20.0, "after-restart"),
        )
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    drop(_child);
    blocking(|| {
        let ledger = PgLedger::open_read_only(&url).unwrap();
        assert!(ids_in(&ledger).contains("after-restart"));
        assert_eq!(ledger.verify().unwrap().first_bad, None);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_checkpoints_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_governor(dir.path());
    let mut connection = Connection::open(addr).await.unwrap();
    for i in 0..50 {
        let body = signal(&tenant_of(i), 120.0, &format!("g-{i}"));
        let (status, text) = connection
            .request("POST", "/v1/signals", Some(TOKEN), &body)
            .await
            .unwrap();
        assert_eq!(status, 204, "{text}");
    }
    let (status, _) = connection
        .request("GET", "/readyz", None, "")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let status = child
        .terminate(Duration::from_secs(30), "no exit after SIGTERM")
        .await;
    assert!(status.success(), "{status:?}");
    assert!(dir.path().join(file::CHECKPOINT_FILE).exists());
    let report = file::verify_dir(dir.path()).unwrap();
    assert_eq!(report.first_bad, None);
    let ledger = Arc::new(FileLedger::open(dir.path(), FileOptions::default()).unwrap());
    assert_eq!(ids_in(&*ledger).len(), 50);
    // The restart resumes from the checkpoint: every tenant, nothing replayed twice.

    let stats = Registry::new(&GUARD, ledger).recover().unwrap();
    assert_eq!(stats.from_checkpoint, TENANTS);
    assert_eq!(stats.replayed, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_every_verifies_the_ledger_in_the_background_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(CHILD_VERIFY_EVERY, "1".to_owned())];
    let (mut child, addr) = spawn_governor_env(dir.path(), &env);
    let mut connection = Connection::open(addr).await.unwrap();
    for i in 0..5 {
        let body = signal(&tenant_of(i), 120.0, &format!("v-{i}"));
        let (status, text) = connection
            .request("POST", "/v1/signals", Some(TOKEN), &body)
            .await
            .unwrap();
        assert_eq!(status, 204, "{text}");
    }
    let runs = |text: &str| -> u64 {
        super::harness::without_sku(text)
            .lines()
            .find_map(|l| l.strip_prefix("governor_ledger_verifications_total "))
            .map_or(0, |n| n.parse().unwrap())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (status, text) = connection
            .request("GET", "/metrics", None, "")
            .await
            .unwrap();
        assert_eq!(status, 200);
        if runs(&text) >= 2 || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        runs(&text) >= 2,
        "no background verification within 30 s:\n{text}"
    );
    assert!(
        super::harness::without_sku(&text).contains("governor_ledger_verify_failures_total 0\n"),
        "{text}"
    );
    let status = child
        .terminate(Duration::from_secs(20), "no exit after SIGTERM")
        .await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stalled_upload_still_checkpoints_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(CHILD_SHUTDOWN_TIMEOUT, "1".to_owned())];
    let (mut child, addr) = spawn_governor_env(dir.path(), &env);
    let mut connection = Connection::open(addr).await.unwrap();
    for i in 0..20 {
        let body = signal(&tenant_of(i), 120.0, &format!("d-{i}"));
        let (status, text) = connection
            .request("POST", "/v1/signals", Some(TOKEN), &body)
            .await
            .unwrap();
        assert_eq!(status, 204, "{text}");
    }
    // An authenticated upload that stalls: it holds its request slot for
    // the 30 s request timeout, past the pod's grace period once SIGTERM
    // and a graceful drain without bound meet.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/signals HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n{{"
    );
    tokio::io::AsyncWriteExt::write_all(&mut stalled, head.as_bytes())
        .await
        .unwrap();
    // Served on a connection of its own: the request reached the server.
    let (status, _) = connection
        .request("GET", "/readyz", None, "")
        .await
        .unwrap();
    assert_eq!(status, 200);
    // `--shutdown-timeout 1`: out well before the stalled request's 30 s.
    let status = child
        .terminate(
            Duration::from_secs(20),
            "no exit after SIGTERM while an upload stalls",
        )
        .await;
    assert!(status.success(), "{status:?}");
    assert!(dir.path().join(file::CHECKPOINT_FILE).exists());
    let ledger = Arc::new(FileLedger::open(dir.path(), FileOptions::default()).unwrap());
    assert_eq!(ids_in(&*ledger).len(), 20);

    let stats = Registry::new(&GUARD, ledger).recover().unwrap();
    assert_eq!(stats.from_checkpoint, TENANTS);
    assert_eq!(stats.replayed, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_checkpoints_bound_the_replay_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_governor_with(dir.path(), Some(20));
    let mut connection = Connection::open(addr).await.unwrap();
    let mut send = async |i: usize| {
        let body = signal(&tenant_of(i), 120.0, &format!("p-{i}"));
        let (status, text) = connection
            .request("POST", "/v1/signals", Some(TOKEN), &body)
            .await
            .unwrap();
        assert_eq!(status, 204, "{text}");
    };
    for i in 0..100 {
        send(i).await;
    }
    // Written while serving: the final checkpoint never runs after kill -9.
    let started = Instant::now();
    while !dir.path().join(file::CHECKPOINT_FILE).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no periodic checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 100..110 {
        send(i).await;
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let report = file::verify_dir(dir.path()).unwrap();
    assert_eq!(report.first_bad, None, "{report:?}");
    let ledger = Arc::new(FileLedger::open(dir.path(), FileOptions::default()).unwrap());
    assert_eq!(ids_in(&*ledger).len(), 110);

    let stats = Registry::new(&GUARD, ledger).recover().unwrap();
    assert_eq!(stats.from_checkpoint, TENANTS, "{stats:?}");
    assert!(stats.records < report.receipts, "{stats:?} {report:?}");
    assert_eq!(stats.tenants, TENANTS);
}

/// A file-ledger governor with retention (4 KiB segments, a checkpoint every
/// 100 receipts, every covered segment archived each second) `kill -9`ed
/// under load again and again, at points a seeded generator picks, so in
/// the middle of archiving rounds at whatever step they were: every
/// acknowledged signal is local or archived, once, the local log verifies
/// from its anchor and `ledger verify --archive` from genesis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_survives_repeated_kill_9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = tempfile::tempdir().unwrap();
    let env = [
        (CHILD_RETAIN, "1B".to_owned()),
        (
            CHILD_ARCHIVE,
            archive_dir.path().to_str().unwrap().to_owned(),
        ),
        (CHILD_SEGMENT, "4096".to_owned()),
        (CHILD_CHECKPOINT_EVERY, "100".to_owned()),
    ];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill points seeded with {seed}");
    let mut state = seed | 1;
    let mut next = move |below: u64| {
        // xorshift64: reproducible from the printed seed.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let mut acked = Vec::new();
    for run in 0..6 {
        let (mut child, addr) = spawn_governor_env(dir.path(), &env);
        let mut connection = Connection::open(addr).await.unwrap();
        let kill_after = 150 + next(250) as usize;
        for i in 0..kill_after {
            // Paced, so archiving rounds run while signals arrive.
            if i % 40 == 39 {
                tokio::time::sleep(Duration::from_millis(100 + next(200))).await;
            }
            let id = format!("k-{run}-{i}");
            let (status, text) = connection
                .request(
                    "POST",
                    "/v1/signals",
                    Some(TOKEN),
                    &signal(&tenant_of(i), 20.0, &id),
                )
                .await
                .unwrap();
            assert_eq!(status, 204, "{text}");
            acked.push(id);
        }
        child.0.kill().unwrap();
        let _ = child.0.wait();
    }
    let archive =
        ggen_runtime::archive::Archive::open(archive_dir.path().to_str().unwrap()).unwrap();
    let anchor = file::read_anchor(dir.path())
        .unwrap()
        .expect("nothing was archived");
    assert!(
        anchor.segment > 10,
        "archived only {} segments",
        anchor.segment - 1
    );
    // The fetcher runs a runtime of its own: not on this one's threads.
    let ids = tokio::task::block_in_place(|| {
        let mut fetch = archive.fetcher().unwrap();
        let mut ids = Vec::new();
        file::scan_with_archive(dir.path(), &mut fetch, &mut |record| {
            ids.extend(signal_id(&record.bytes));
            Ok(())
        })
        .unwrap();
        ids
    });
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a signal recorded twice");
    for id in &acked {
        assert!(
            unique.contains(id),
            "acknowledged signal {id} is lost (seed {seed})"
        );
    }
    for archive_flag in [None, Some(archive_dir.path())] {
        let mut args = vec![
            "governor".to_owned(),
            "ledger".to_owned(),
            "verify".to_owned(),
            "--ledger".to_owned(),
            dir.path().display().to_string(),
        ];
        if let Some(path) = archive_flag {
            args.extend(["--archive".to_owned(), path.display().to_string()]);
        }
        let code = tokio::task::spawn_blocking(move || ggen_runtime::cli::run(&GUARD, args))
            .await
            .unwrap();
        assert_eq!(code, std::process::ExitCode::SUCCESS, "seed {seed}");
    }
}

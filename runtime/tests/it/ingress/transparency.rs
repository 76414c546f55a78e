//! Signed checkpoints from a running governor and inclusion proofs over
//! HTTP: what a customer fetches verifies with the standalone verifier
//! (`ggen verify-receipt` is `audit::verify_receipt`), what was published
//! agrees with the ledger's own offline tree, and both survive `kill -9`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ggen_runtime::audit::{AuditError, verify_receipt};
use ggen_runtime::ingress::Options;
use ggen_runtime::ledger::Ledger as _;
use ggen_runtime::ledger::file::{FileLedger, FileOptions};
use ggen_runtime::note::NoteSigner;
use ggen_runtime::store::Location;
use ggen_runtime::transparency::{self, publish};
use serde_json::Value;

use super::client::Connection;
use super::durability::{CHILD_PUBLISH, spawn_governor_env};
use super::harness::{Service, TOKEN, full_auth, get, post, request, signal};
use super::sku::GUARD;

const ORIGIN: &str = "governor.test/guard";

fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, [42; 32]).unwrap()
}

struct Setup {
    service: Service,
    publisher: Arc<publish::Publisher>,
    ledger: tempfile::TempDir,
    published: tempfile::TempDir,
}

/// A file-ledger service whose publisher writes to a directory; nothing
/// published yet.
fn setup(with_publisher: bool) -> Setup {
    let ledger = tempfile::tempdir().unwrap();
    let published = tempfile::tempdir().unwrap();
    let publisher = Arc::new(publish::Publisher::new(
        signer(),
        vec![publish::Sink::Dir(published.path().to_path_buf())],
    ));
    let service = Service::over(
        &GUARD,
        Arc::new(FileLedger::open(ledger.path(), FileOptions::default()).unwrap()),
        full_auth(),
        Options {
            transparency: with_publisher.then(|| Arc::clone(&publisher)),
            ..Options::default()
        },
    );
    Setup {
        service,
        publisher,
        ledger,
        published,
    }
}

async fn signals(service: &Service, from: usize, to: usize) {
    for i in from..to {
        let reply = service
            .send(post(
                "/v1/signals",
                signal(&format!("t{}", i % 3), 10.0, &format!("s-{i}")),
            ))
            .await;
        assert_eq!(reply.status, 204, "{reply:?}");
    }
}

/// The parts a customer saves from a proof answer: the receipt's exact
/// bytes, the proof, and the checkpoint.
fn parts(answer: &Value) -> (Vec<u8>, String, Option<String>) {
    (
        answer["receipt"].as_str().unwrap().as_bytes().to_vec(),
        answer["proof"].to_string(),
        answer["checkpoint"].as_str().map(str::to_owned),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_over_http_verifies_with_the_standalone_verifier() {
    let setup = setup(true);
    let service = &setup.service;
    signals(service, 0, 30).await;
    let first = setup.publisher.publish(&service.ledger).await.unwrap();
    assert_eq!(first.size, 30);
    signals(service, 30, 45).await;
    let second = setup.publisher.publish(&service.ledger).await.unwrap();
    assert_eq!(second.size, 45);
    let key = signer().verifier().to_text();

    // Against the latest checkpoint, which the answer carries.
    let reply = service.send(get("/v1/tenants/t1/receipts/4/proof")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["tree_size"], Value::Null);
    assert_eq!(reply.json["proof"]["tree_size"], 45);
    let (receipt, proof, checkpoint) = parts(&reply.json);
    let stored = service.receipts("t1")[3].clone();
    assert_eq!(serde_json::from_slice::<Value>(&receipt).unwrap(), stored);
    let checkpoint = checkpoint.expect("the latest checkpoint");
    assert_eq!(checkpoint, second.note);
    let (verified, index) = verify_receipt(&receipt, &proof, &checkpoint, &key).unwrap();
    assert_eq!(
        (verified.size, index),
        (45, reply.json["proof"]["leaf_index"].as_u64().unwrap())
    );

    // Against an earlier checkpoint the customer kept (`?size=`): the
    // answer has no note then, the published file is the one to use.
    let reply = service
        .send(get("/v1/tenants/t1/receipts/4/proof?size=30"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (receipt, proof, none) = parts(&reply.json);
    assert_eq!(none, None);
    let kept = fs_err::read_to_string(setup.published.path().join(publish::file_name(30))).unwrap();
    assert_eq!(kept, first.note);
    verify_receipt(&receipt, &proof, &kept, &key).unwrap();

    // Every part tampered with is caught, and named.
    let mut forged = receipt.clone();
    let at = forged.iter().position(|b| *b == b'1').unwrap();
    forged[at] = b'2';
    assert!(matches!(
        verify_receipt(&forged, &proof, &kept, &key),
        Err(AuditError::Receipt(_))
    ));
    let other = NoteSigner::from_seed(ORIGIN, [43; 32]).unwrap();
    assert!(matches!(
        verify_receipt(&receipt, &proof, &kept, &other.verifier().to_text()),
        Err(AuditError::Checkpoint { .. })
    ));
    let mut bad_proof: Value = serde_json::from_str(&proof).unwrap();
    bad_proof["hashes"][0] = Value::String("00".repeat(32));
    assert!(verify_receipt(&receipt, &bad_proof.to_string(), &kept, &key).is_err());
    // A proof for one size does not pass with another size's checkpoint.
    assert!(matches!(
        verify_receipt(&receipt, &proof, &second.note, &key),
        Err(AuditError::Proof(_))
    ));

    // What the service signed is the tree of the ledger as an auditor
    // rebuilds it offline: `ledger verify --checkpoints` agrees.
    let count = transparency::check(
        &Location::Dir(setup.ledger.path().to_path_buf()),
        setup.published.path(),
        &signer().verifier(),
    )
    .unwrap();
    assert_eq!(count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_requests_that_cannot_be_answered_get_a_4xx() {
    let setup = setup(true);
    let service = &setup.service;
    signals(service, 0, 6).await;
    // Nothing signed yet.
    service
        .send(get("/v1/tenants/t1/receipts/1/proof"))
        .await
        .assert_error(409, "conflict");
    setup.publisher.publish(&service.ledger).await.unwrap();
    signals(service, 6, 9).await;
    // Only with the api token.
    let anonymous = request("GET", "/v1/tenants/t1/receipts/1/proof", None, "");
    service
        .send(anonymous)
        .await
        .assert_error(401, "unauthorized");
    let wrong = request(
        "GET",
        "/v1/tenants/t1/receipts/1/proof",
        Some("not-the-token-at-all"),
        "",
    );
    service.send(wrong).await.assert_error(401, "unauthorized");
    for (path, status, code) in [
        ("/v1/tenants/nobody/receipts/1/proof", 404, "not_found"),
        ("/v1/tenants/t1/receipts/99/proof", 404, "not_found"),
        ("/v1/tenants/t1/receipts/0/proof", 400, "bad_request"),
        ("/v1/tenants/t1/receipts/01/proof", 400, "bad_request"),
        ("/v1/tenants/t1/receipts/-1/proof", 400, "bad_request"),
        ("/v1/tenants/t1/receipts/abc/proof", 400, "bad_request"),
        (
            "/v1/tenants/t1/receipts/99999999999999999999999/proof",
            400,
            "bad_request",
        ),
        ("/v1/tenants/Bad%20Id/receipts/1/proof", 400, "bad_request"),
        // Receipt 3 of t1 came after the checkpoint.
        ("/v1/tenants/t1/receipts/3/proof", 409, "conflict"),
        (
            "/v1/tenants/t1/receipts/1/proof?size=1000",
            400,
            "bad_request",
        ),
        ("/v1/tenants/t1/receipts/1/proof?size=0", 400, "bad_request"),
        // Receipt 2 of t1 is leaf 3 or later: not in a tree of 1.
        ("/v1/tenants/t1/receipts/2/proof?size=1", 409, "conflict"),
        ("/v1/tenants/t1/receipts/1/proof?size=x", 400, "bad_request"),
        ("/v1/tenants/t1/receipts/1/proof?root=1", 400, "bad_request"),
    ] {
        let reply = service.send(get(path)).await;
        assert_eq!(
            (reply.status.as_u16(), reply.json["error"].as_str()),
            (status, Some(code)),
            "{path}: {reply:?}"
        );
    }
    // Receipt 3 once a checkpoint covers it.
    setup.publisher.publish(&service.ledger).await.unwrap();
    let reply = service.send(get("/v1/tenants/t1/receipts/3/proof")).await;
    assert_eq!(reply.status, 200, "{reply:?}");

    // A governor without a key proves nothing.
    let off = self::setup(false);
    signals(&off.service, 0, 2).await;
    off.service
        .send(get("/v1/tenants/t1/receipts/1/proof"))
        .await
        .assert_error(409, "conflict");
}

/// Waits until `dir` holds a checkpoint of at least `size` receipts.
fn wait_for_checkpoint(dir: &Path, size: u64) -> u64 {
    let started = Instant::now();
    loop {
        let largest = fs_err::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(".checkpoint")?.parse::<u64>().ok()
            })
            .max()
            .unwrap_or(0);
        if largest >= size {
            return largest;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no checkpoint of {size} receipts published (largest {largest})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn send_signals(connection: &mut Connection, prefix: &str, n: usize) {
    for i in 0..n {
        let body = signal(&format!("t{}", i % 5), 10.0, &format!("{prefix}-{i}"));
        let (status, text) = connection
            .request("POST", "/v1/signals", Some(TOKEN), &body)
            .await
            .unwrap();
        assert_eq!(status, 204, "{text}");
    }
}

/// A real `serve` publishes signed checkpoints to a directory as it
/// goes; `kill -9` in the middle, a restart and a SIGTERM later, every
/// checkpoint published is a prefix of the ledger (the tree was rebuilt
/// from the log where the crash left it), and a proof fetched over HTTP
/// verifies against the final checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_checkpoints_survive_kill_9_and_a_restart() {
    let ledger = tempfile::tempdir().unwrap();
    let published = tempfile::tempdir().unwrap();
    let env = [
        (CHILD_PUBLISH, published.path().display().to_string()),
        (publish::KEY_ENV, signer().to_text()),
    ];
    let (mut child, addr) = spawn_governor_env(ledger.path(), &env);
    let mut connection = Connection::open(addr).await.unwrap();
    send_signals(&mut connection, "a", 250).await;
    let before = wait_for_checkpoint(published.path(), 250);
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let (mut child, addr) = spawn_governor_env(ledger.path(), &env);
    let mut connection = Connection::open(addr).await.unwrap();
    send_signals(&mut connection, "b", 120).await;
    let after = wait_for_checkpoint(published.path(), before + 120);
    let (status, body) = connection
        .request("GET", "/v1/tenants/t2/receipts/3/proof", Some(TOKEN), "")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let (receipt, proof, checkpoint) = parts(&answer);
    let key = signer().verifier().to_text();
    let (verified, _) = verify_receipt(&receipt, &proof, &checkpoint.unwrap(), &key).unwrap();
    assert!(verified.size >= after);
    let status = child
        .terminate(Duration::from_secs(30), "no exit after SIGTERM")
        .await;
    assert!(status.success(), "{status:?}");

    // The last checkpoint, at shutdown, covers every receipt.
    let ledger_now = FileLedger::open(ledger.path(), FileOptions::default()).unwrap();
    let size = ledger_now.tree().unwrap().size();
    drop(ledger_now);
    assert!(published.path().join(publish::file_name(size)).exists());
    let count = transparency::check(
        &Location::Dir(ledger.path().to_path_buf()),
        published.path(),
        &signer().verifier(),
    )
    .unwrap();
    assert!(count >= 3, "{count}");
}

/// The same on a PostgreSQL ledger: the service signs the tree stored in
/// the schema, and a proof over HTTP verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_from_a_database_ledger_verifies() {
    use tokio::task::block_in_place as blocking;
    let Some(url) = blocking(crate::ledger::postgres::fresh_schema) else {
        return;
    };
    let published = tempfile::tempdir().unwrap();
    let publisher = Arc::new(publish::Publisher::new(
        signer(),
        vec![publish::Sink::Dir(published.path().to_path_buf())],
    ));
    let ledger = blocking(|| {
        ggen_runtime::pg::PgLedger::open(&url, ggen_runtime::pg::PgOptions::default()).unwrap()
    });
    let service = blocking(|| {
        Service::over(
            &GUARD,
            Arc::new(ledger),
            full_auth(),
            Options {
                transparency: Some(Arc::clone(&publisher)),
                ..Options::default()
            },
        )
    });
    signals(&service, 0, 20).await;
    let checkpoint = publisher.publish(&service.ledger).await.unwrap();
    assert_eq!(checkpoint.size, 20);
    let reply = service.send(get("/v1/tenants/t2/receipts/5/proof")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (receipt, proof, note) = parts(&reply.json);
    let key = signer().verifier().to_text();
    verify_receipt(&receipt, &proof, &note.unwrap(), &key).unwrap();
    // The offline check of the database agrees with what the service signed.
    let count = blocking(|| {
        transparency::check(
            &Location::Database(url.clone()),
            published.path(),
            &signer().verifier(),
        )
    })
    .unwrap();
    assert_eq!(count, 1);
    // The publisher's own cadence keeps up with a database tree, which
    // only an extension shows growing: a later checkpoint follows.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let cadence = tokio::spawn(publish::publish_periodically(
        Arc::clone(&publisher),
        Arc::clone(&service.ledger),
        std::time::Duration::from_millis(300),
        1_000_000,
        std::time::Duration::from_millis(50),
        stopped,
    ));
    signals(&service, 20, 30).await;
    let started = Instant::now();
    while publisher.latest().unwrap().size < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no later checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    cadence.await.unwrap();
    // The synchronous database client closes off the runtime's threads.
    blocking(move || drop(service));
}

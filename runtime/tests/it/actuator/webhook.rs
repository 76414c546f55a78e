//! The webhook adapter against a real loopback server: retries, idempotency
//! key, signature, status mapping, timeouts, refused connections.

use ggen_runtime::fsm::State;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::harness::{Harness, tenant};
use super::pack::webhook_pack;
use super::target::{Reply, Target, refused_url};

const SECRET: &[u8] = b"webhook-secret";

/// The signature header a receiver expects for `body`: the header's own
/// `t` (which must be the wall clock's, within a minute) and the
/// HMAC-SHA256 of `"<t>." ‖ body`, computed here independently of the runtime.
fn expected_signature(header: Option<&str>, body: &[u8]) -> String {
    let header = header.expect("a signature header");
    let t: i64 = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timestamp in `{header}`"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - t).abs() < 60, "signed at `{t}`, now `{now}`");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn retries_a_failing_target_with_one_key_and_signed_identical_bodies() {
    let target = Target::failing(2, 503).await;
    let h = Harness::new(
        webhook_pack("{}".into(), 2000, 3, 0),
        Some(&target.url),
        Some(SECRET),
    );
    let t = tenant("acme");
    let applied = h.signal(&t, 120.0, 0);
    assert_eq!(applied.state.name(), "intervening");
    let key = applied.dispatches[0].key.to_string();
    h.settle().await;

    let hits = target.hits();
    assert_eq!(hits.len(), 3, "two 503s, then 200");
    for hit in &hits {
        assert_eq!(hit.header("idempotency-key"), Some(key.as_str()));
        assert_eq!(hit.header("content-type"), Some("application/json"));
        let signature = hit.header("x-ggen-signature");
        assert_eq!(
            signature,
            Some(expected_signature(signature, &hit.body).as_str())
        );
        assert_eq!(hit.body, hits[0].body, "every attempt sends the same bytes");
    }
    assert_eq!(
        hits[0].json(),
        serde_json::json!({
            "action": "throttle",
            "at": "2026-01-01T00:00:00Z",
            "idempotency_key": key,
            "params": {},
            "sku": "act_guard",
            "tenant": "acme",
            "undo": false,
        })
    );

    let results = h.receipts_of(&t, "action_result");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["event"]["ok"], true);
    assert_eq!(results[0]["event"]["idempotency_key"], key.as_str());
    let detail = results[0]["event"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("200") && detail.contains("attempt 3/4"),
        "{detail}"
    );
    assert_eq!(h.state(&t), State::Warning);
    let stats = h.dispatcher.stats();
    assert_eq!((stats.succeeded, stats.failed, stats.attempts), (1, 0, 3));
}

#[tokio::test]
async fn status_408_and_429_are_retried() {
    let target = Target::start(|n| match n {
        0 => Reply::Status(408),
        1 => Reply::Status(429),
        _ => Reply::Status(204),
    })
    .await;
    let h = Harness::new(
        webhook_pack("{}".into(), 2000, 2, 0),
        Some(&target.url),
        None,
    );
    let t = tenant("acme");
    h.signal(&t, 120.0, 0);
    h.settle().await;
    assert_eq!(target.hits().len(), 3);
    assert_eq!(h.state(&t), State::Warning);
    // Without a secret there is no signature header.
    assert!(target.hits()[0].header("x-ggen-signature").is_none());
}

#[tokio::test]
async fn a_hanging_target_times_out_every_attempt_and_the_tenant_degrades() {
    let target = Target::start(|_| Reply::Hang).await;
    let h = Harness::new(
        webhook_pack("{}".into(), 150, 2, 0),
        Some(&target.url),
        Some(SECRET),
    );
    let t = tenant("acme");
    h.signal(&t, 120.0, 0);
    h.settle().await;

    assert_eq!(
        target.hits().len(),
        3,
        "one try and two retries, each cut off"
    );
    let results = h.receipts_of(&t, "action_result");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["event"]["ok"], false);
    let detail = results[0]["event"]["detail"].as_str().unwrap();
    assert!(detail.contains("timed out after 150 ms"), "{detail}");
    assert_eq!(results[0]["to"], "degraded");
    assert_eq!(h.state(&t).name(), "degraded");
}

#[tokio::test]
async fn a_permanent_client_error_is_not_retried() {
    let target = Target::always(400).await;
    let h = Harness::new(
        webhook_pack("{}".into(), 2000, 5, 0),
        Some(&target.url),
        None,
    );
    let t = tenant("acme");
    h.signal(&t, 120.0, 0);
    h.settle().await;

    assert_eq!(target.hits().len(), 1);
    let results = h.receipts_of(&t, "action_result");
    assert_eq!(results[0]["event"]["ok"], false);
    let detail = results[0]["event"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("`400`") && detail.contains("attempt 1/6"),
        "{detail}"
    );
    assert_eq!(h.state(&t).name(), "degraded");
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_fails() {
    let url = refused_url().await;
    let h = Harness::new(webhook_pack("{}".into(), 2000, 2, 0), Some(&url), None);
    let t = tenant("acme");
    h.signal(&t, 120.0, 0);
    h.settle().await;

    let stats = h.dispatcher.stats();
    assert_eq!((stats.failed, stats.attempts), (1, 3));
    let results = h.receipts_of(&t, "action_result");
    let detail = results[0]["event"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("webhook request to `http://127.0.0.1:")
            && detail.contains("failed")
            && detail.contains("attempt 3/3"),
        "{detail}"
    );
    assert_eq!(h.state(&t).name(), "degraded");
}

#[tokio::test]
async fn params_url_wins_over_the_default_url() {
    let target = Target::always(200).await;
    let params = serde_json::json!({ "url": target.url, "max_instances": 2 }).to_string();
    let default = refused_url().await;
    let h = Harness::new(webhook_pack(params, 2000, 0, 0), Some(&default), None);
    let t = tenant("acme");
    h.signal(&t, 120.0, 0);
    h.settle().await;

    let hits = target.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].json()["params"]["max_instances"], 2);
    assert_eq!(h.state(&t), State::Warning);
}

#[tokio::test]
async fn no_url_anywhere_is_a_permanent_failure() {
    let h = Harness::new(webhook_pack("{}".into(), 2000, 3, 0), None, None);
    let t = tenant("acme");
    h.signal(&t, 120.0, 0);
    h.settle().await;

    assert_eq!(h.dispatcher.stats().attempts, 1);
    let results = h.receipts_of(&t, "action_result");
    let detail = results[0]["event"]["detail"].as_str().unwrap();
    assert!(detail.contains("no webhook url"), "{detail}");
    assert_eq!(h.state(&t).name(), "degraded");
}

/// `url` (`http://127.0.0.1:PORT/hook`) with a secret in its userinfo, path and query.
fn with_secrets(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, _) = rest.split_once('/').unwrap();
    format!("http://user:s3cret-user@{authority}/hook/s3cret-path?token=s3cret-query")
}

/// Env var that makes [`secrets_child`] run.
const SECRETS_CHILD: &str = "GGEN_IT_WEBHOOK_SECRETS_CHILD";

/// Webhooks to URLs with secrets, through a loopback target: receipts are
/// checked here, logs (every level, on stderr) by the parent.
async fn secrets_scenario() {
    let target = Target::failing(1, 503).await;
    let answering = with_secrets(&target.url);
    let refused = with_secrets(&refused_url().await);
    // A scheme reqwest refuses: its builder error names the whole URL.
    let unsupported = answering.replacen("http://", "ftp://", 1);
    for (url, expected) in [
        (&refused, "failed"),
        (&unsupported, "invalid webhook request to `ftp://127.0.0.1:"),
        (&answering, "answered `200` (attempt 2/2)"),
    ] {
        let params = serde_json::json!({ "url": url }).to_string();
        let h = Harness::new(webhook_pack(params, 2000, 1, 0), None, None);
        let t = tenant("acme");
        h.signal(&t, 120.0, 0);
        h.settle().await;

        // Every receipt, not only the result: the action receipt must not
        // carry the URL either.
        let receipts = serde_json::to_string(&h.receipts(&t)).unwrap();
        assert!(!receipts.contains("s3cret"), "{url}: {receipts}");
        let results = h.receipts_of(&t, "action_result");
        let detail = results[0]["event"]["detail"].as_str().unwrap();
        assert!(detail.contains(expected), "{detail}");
        // The target is still named, by scheme, host and port.
        let host = url.split_once('@').unwrap().1.split_once('/').unwrap().0;
        assert!(detail.contains(&format!("://{host}`")), "{detail}");
    }
    assert_eq!(
        target.hits().len(),
        2,
        "the redaction must not change the request"
    );
}

/// Not a test: the process [`secrets_in_a_webhook_url_reach_neither_receipts_nor_logs`]
/// runs (this test binary re-executed), so that its global log subscriber
/// sees every event and no other test's.
#[test]
#[ignore = "entry point of a child process"]
fn secrets_child() {
    if std::env::var_os(SECRETS_CHILD).is_none() {
        return;
    }
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(secrets_scenario());
}

#[test]
fn secrets_in_a_webhook_url_reach_neither_receipts_nor_logs() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "actuator::webhook::secrets_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SECRETS_CHILD, "1")
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the child failed:\n{logs}");
    assert!(logs.contains("action finished"), "no log captured: {logs}");
    assert!(!logs.contains("s3cret"), "{logs}");
}

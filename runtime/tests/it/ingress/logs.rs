//! Logs as Cloud Logging reads them, from the real `--log-format json`
//! subscriber in a child process (this test binary re-executed, so its
//! global subscriber sees only this scenario): every line one JSON object
//! with `severity` and `message` at the top level, numbers as numbers; a
//! failed action at `WARNING`; authentication refusals logged with route
//! and reason, rate-limited, never with the credential.

use std::sync::Arc;
use std::time::Duration;

use ggen_runtime::actuator::webhook::WebhookConfig;
use ggen_runtime::actuator::{Actuators, Dispatcher, DispatcherOptions};
use ggen_runtime::ingress::service::{LogFormat, init_logging};
use ggen_runtime::ingress::{Options, serve};
use ggen_runtime::ledger::memory::MemoryLedger;
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use super::client::Connection;
use super::harness::{Service, TOKEN, full_auth, signal};
use super::sku::REPLICA;

/// Set in the child's environment.
const LOGS_CHILD: &str = "GGEN_TEST_LOGS_CHILD";
/// A wrong bearer token: it must never reach a log line.
const WRONG: &str = "s3cret-wrong-token-0987";
/// The refusal log's interval in the child.
const INTERVAL: Duration = Duration::from_millis(500);

/// What the child does under the JSON subscriber: refusals in bursts on
/// either side of one interval, and a signal whose action fails.
async fn scenario() {
    let actuator = Dispatcher::new(
        tokio::runtime::Handle::current(),
        Actuators::new(WebhookConfig::default()).unwrap(),
        DispatcherOptions::default(),
    );
    let service = Service::over(
        &REPLICA,
        Arc::new(MemoryLedger::new()),
        full_auth(),
        Options {
            auth_log_interval: INTERVAL,
            actuator: Some(actuator.clone()),
            ..Options::default()
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        service.state.clone(),
        std::future::pending(),
    ));
    // A fresh connection each: a refusal before the body closes its connection.
    let status = |path: &'static str, token: Option<&'static str>, body: String| async move {
        let mut client = Connection::open(addr).await.unwrap();
        client.request("POST", path, token, &body).await.unwrap().0
    };
    let body = signal("acme", 1.0, "1");
    for _ in 0..5 {
        assert_eq!(status("/v1/signals", Some(WRONG), body.clone()).await, 401);
    }
    assert_eq!(status("/v1/signals", None, body.clone()).await, 401);
    assert_eq!(status("/pubsub/push", Some(WRONG), "{}".into()).await, 401);
    tokio::time::sleep(INTERVAL + Duration::from_millis(100)).await;
    assert_eq!(status("/v1/signals", Some(WRONG), body).await, 401);
    // REPLICA's actions run `false`: the throttle fails.
    let breach = signal("acme", 120.0, "2");
    assert_eq!(status("/v1/signals", Some(TOKEN), breach).await, 204);
    actuator.drain(Duration::from_secs(10)).await.unwrap();
}

/// Not a test: the process [`json_logs_are_cloud_logging_lines`] runs.
#[test]
#[ignore = "entry point of a child process"]
fn logs_child() {
    if std::env::var_os(LOGS_CHILD).is_none() {
        return;
    }
    init_logging(LogFormat::Json);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(scenario());
}

/// The child's stderr lines that are log lines, parsed (any line starting
/// with `{` must be a JSON object).
fn log_lines(stderr: &str) -> Vec<Map<String, Value>> {
    stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(map)) => map,
            other => panic!("not a json object: {line}: {other:?}"),
        })
        .collect()
}

#[test]
fn json_logs_are_cloud_logging_lines_and_auth_refusals_are_rate_limited_without_the_credential() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ingress::logs::logs_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOGS_CHILD, "1")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the child failed:\n{stderr}");
    assert!(
        !stderr.contains(WRONG),
        "the credential was logged:\n{stderr}"
    );
    assert!(
        !stderr.contains(TOKEN),
        "the credential was logged:\n{stderr}"
    );
    let lines = log_lines(&stderr);
    assert!(!lines.is_empty(), "no log line:\n{stderr}");
    for line in &lines {
        let severity = line["severity"].as_str().unwrap_or_default();
        assert!(
            ["DEBUG", "INFO", "WARNING", "ERROR"].contains(&severity),
            "{line:?}"
        );
        assert!(line["message"].is_string(), "{line:?}");
        assert!(!line.contains_key("level"), "{line:?}");
        assert!(!line.contains_key("fields"), "fields nested: {line:?}");
    }

    let refusals = |route: &str, reason: &str| -> Vec<&Map<String, Value>> {
        lines
            .iter()
            .filter(|l| {
                l["message"] == "authentication refused"
                    && l["route"] == route
                    && l["reason"] == reason
            })
            .collect()
    };
    // Five wrong tokens then one after the interval: two lines, the second
    // counting the four held back.
    let wrong = refusals("/v1/signals", "wrong_token");
    assert_eq!(wrong.len(), 2, "{stderr}");
    assert_eq!(wrong[0]["suppressed"], 0);
    assert_eq!(wrong[1]["suppressed"], 4);
    assert_eq!(wrong[0]["severity"], "WARNING");
    assert_eq!(wrong[0]["status"], 401);
    assert_eq!(wrong[0]["detail"], "bearer token does not verify");
    // Another reason and another route have windows of their own.
    assert_eq!(
        refusals("/v1/signals", "missing_credentials").len(),
        1,
        "{stderr}"
    );
    let oidc = refusals("/pubsub/push", "oidc_rejected");
    assert_eq!(oidc.len(), 1, "{stderr}");

    let failed: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "action failed")
        .collect();
    assert_eq!(failed.len(), 1, "{stderr}");
    assert_eq!(failed[0]["severity"], "WARNING");
    assert_eq!(failed[0]["action"], "throttle");
    assert_eq!(failed[0]["tenant"], "acme");
    assert_eq!(failed[0]["ok"], false);
    assert_eq!(failed[0]["attempts"], 1);
}

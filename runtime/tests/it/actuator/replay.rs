//! `replay --live-actions`: the same replay, with the actions really run.

use std::sync::Arc;
use std::time::Duration;

use ggen_runtime::actuator::webhook::WebhookConfig;
use ggen_runtime::actuator::{Actuators, Clock, Dispatcher, DispatcherOptions};
use ggen_runtime::clock::Timestamp;
use ggen_runtime::ledger::Ledger;
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::registry::Registry;
use ggen_runtime::replay;
use serde_json::Value;

use super::harness::{FAST, tenant};
use super::pack::{TestPack, webhook_pack};
use super::target::{Reply, Target};

const LINES: &str = r#"{"tenant":"acme","signal":"load","value":60,"at":"2026-01-01T00:00:00Z"}
{"tenant":"acme","signal":"load","value":120,"at":"2026-01-01T00:00:01Z","id":"m-2"}
{"tenant":"beta","signal":"load","value":130,"at":"2026-01-01T00:00:02Z"}
{"tenant":"acme","signal":"load","value":140,"at":"2026-01-01T00:00:03Z"}

{"tenant":"acme","signal":"load","value":10,"at":"2026-01-01T00:10:00Z"}
"#;

fn registry(pack: &'static TestPack) -> (Arc<MemoryLedger>, Arc<Registry>) {
    let ledger = Arc::new(MemoryLedger::new());
    (ledger.clone(), Arc::new(Registry::new(pack, ledger)))
}

async fn live(pack: &'static TestPack, url: &str) -> (Arc<MemoryLedger>, replay::Summary) {
    let (ledger, registry) = registry(pack);
    let actuators = Actuators::new(WebhookConfig {
        default_url: Some(url.to_owned()),
        secret: None,
    })
    .unwrap();
    let options = DispatcherOptions {
        backoff: FAST,
        clock: Clock::manual(Timestamp(0)),
        ..DispatcherOptions::default()
    };
    let dispatcher = Dispatcher::new(tokio::runtime::Handle::current(), actuators, options);
    let summary = replay::run_live(
        &registry,
        LINES.as_bytes(),
        &dispatcher,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    (ledger, summary)
}

#[tokio::test]
async fn a_healthy_target_gives_the_same_final_states_as_the_log_replay() {
    let target = Target::always(200).await;
    let pack = webhook_pack("{}".into(), 2000, 1, 0);
    let (ledger, summary) = live(pack, &target.url).await;

    let (_, log_registry) = registry(pack);
    let logged = replay::run(&log_registry, LINES.as_bytes()).unwrap();
    assert_eq!(summary.tenants, logged.tenants);
    assert_eq!(summary.lines, 5);
    assert!(summary.bad_lines.is_empty());
    assert_eq!(summary.unsettled, 0);

    let actions: Vec<(String, String)> = target
        .hits()
        .iter()
        .map(|hit| {
            let body = hit.json();
            (
                body["tenant"].as_str().unwrap().to_owned(),
                body["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("acme".to_owned(), "throttle".to_owned()),
            ("beta".to_owned(), "throttle".to_owned()),
            // No cooldown in this SKU: back in warning, 140 intervenes again.
            ("acme".to_owned(), "throttle".to_owned()),
            ("acme".to_owned(), "unthrottle".to_owned()),
        ]
    );
    // Results are stamped with the time of the line that caused them.
    let acme: Vec<Value> = ledger
        .read(&tenant("acme"), 0, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.bytes).unwrap())
        .collect();
    let result = acme.iter().find(|r| r["kind"] == "action_result").unwrap();
    assert_eq!(result["at"], "2026-01-01T00:00:01Z");
    assert_eq!(result["event"]["ok"], true);
}

#[tokio::test]
async fn a_hung_target_leaves_the_tenants_degraded() {
    let target = Target::start(|_| Reply::Hang).await;
    let pack = webhook_pack("{}".into(), 100, 1, 0);
    let (_, summary) = live(pack, &target.url).await;
    let states: Vec<(&str, &str)> = summary
        .tenants
        .iter()
        .map(|t| (t.tenant.as_str(), t.state))
        .collect();
    // acme recovers from degraded on the last line (undo dispatched, then
    // failing too, recorded as stale); beta stays degraded.
    assert_eq!(states, [("acme", "stable"), ("beta", "degraded")]);
    assert_eq!(target.hits().len(), 2 + 2 + 2, "two attempts per action");
    assert_eq!(summary.unsettled, 0);
}

#[test]
fn a_line_that_is_not_utf8_is_one_bad_line_and_the_rest_is_replayed() {
    let pack = webhook_pack("{}".into(), 2000, 1, 0);
    let (ledger, registry) = registry(pack);
    let mut input = Vec::new();
    input.extend_from_slice(
        b"{\"tenant\":\"acme\",\"signal\":\"load\",\"value\":60,\"at\":\"2026-01-01T00:00:00Z\"}\r\n",
    );
    input.extend_from_slice(b"{\"tenant\":\"ac\xffme\"}\n");
    input.extend_from_slice(
        b"{\"tenant\":\"acme\",\"signal\":\"load\",\"value\":120,\"at\":\"2026-01-01T00:00:01Z\"}",
    );
    let summary = replay::run(&registry, input.as_slice()).unwrap();

    assert_eq!(summary.lines, 3);
    assert_eq!(summary.bad_lines.len(), 1, "{:?}", summary.bad_lines);
    assert_eq!(
        summary.bad_lines[0].to_string(),
        "line 2: invalid replay line: not UTF-8 at byte `14`"
    );
    // Lines 1 and 3 (after the bad one, without a final newline) were both fed.
    let events: Vec<String> = ledger
        .read(&tenant("acme"), 0, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.bytes).unwrap())
        .map(|r| {
            format!(
                "{}:{}",
                r["kind"].as_str().unwrap(),
                r["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            "signal:warning",
            "signal:intervening",
            "action:intervening",
            "action_result:warning"
        ]
    );
    assert_eq!(summary.tenants.len(), 1);
}

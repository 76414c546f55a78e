//! The service and `replay` classify readings with one function: the same
//! bad inputs write the same `rejected` receipts on both paths (only the
//! decision time, and so the chain's hashes, differ).

use std::sync::Arc;

use ggen_runtime::ledger::Ledger;
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::registry::Registry;
use ggen_runtime::replay;
use ggen_runtime::tenant::TenantId;
use serde_json::{Value, json};

use super::harness::{Service, post};
use super::sku::GUARD;

/// A receipt without the fields the clock decides.
fn timeless(mut receipt: Value) -> Value {
    let map = receipt.as_object_mut().unwrap();
    map.remove("at");
    map.remove("prev");
    receipt
}

#[tokio::test]
async fn the_service_and_replay_receipt_bad_readings_alike() {
    let long_name = "s".repeat(300);
    let bad: Vec<(String, Value)> = vec![
        (long_name.clone(), json!(1)),
        ("nope".to_owned(), json!(1)),
        ("load".to_owned(), json!(-1)),
        ("load".to_owned(), json!(1e300)),
        ("load".to_owned(), json!("12")),
        ("load".to_owned(), json!({ "deep": ["x".repeat(400)] })),
        ("load".to_owned(), json!(null)),
    ];

    let service = Service::memory(&GUARD);
    for (i, (signal, value)) in bad.iter().enumerate() {
        let body =
            json!({ "tenant": "h", "signal": signal, "value": value, "id": format!("r-{i}") });
        let reply = service.send(post("/v1/signals", body.to_string())).await;
        reply.assert_error(400, "rejected");
    }

    let ledger = Arc::new(MemoryLedger::new());
    let registry = Registry::new(&GUARD, ledger.clone());
    registry.recover().unwrap();
    let lines: String = bad
        .iter()
        .enumerate()
        .map(|(i, (signal, value))| {
            let line = json!({ "tenant": "h", "signal": signal, "value": value,
                "at": "2026-01-01T00:00:00Z", "id": format!("r-{i}") });
            format!("{line}\n")
        })
        .collect();
    let summary = replay::run(&registry, lines.as_bytes()).unwrap();
    assert_eq!(
        summary.bad_lines.len(),
        bad.len(),
        "{:?}",
        summary.bad_lines
    );

    let tenant = TenantId::new("h").unwrap();
    let replayed: Vec<Value> = ledger
        .read(&tenant, 0, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| timeless(serde_json::from_slice(&r.bytes).unwrap()))
        .collect();
    let served: Vec<Value> = service.receipts("h").into_iter().map(timeless).collect();
    assert_eq!(served.len(), bad.len());
    assert_eq!(served, replayed);
    for receipt in &served {
        assert_eq!(receipt["kind"], "rejected");
        let quoted = receipt["event"]["input"]["signal"].as_str().unwrap();
        assert!(quoted.chars().count() <= 128, "{quoted}");
    }
}

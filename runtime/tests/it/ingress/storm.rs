//! A storm over a real socket: hundreds of over-threshold signals for one
//! tenant dispatch the action once per cooldown.

use std::time::Duration;

use ggen_runtime::ingress::serve;
use tokio::net::TcpListener;

use super::client::Connection;
use super::harness::{Service, TOKEN, signal};
use super::sku::GUARD;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_dispatches_one_action_per_cooldown() {
    let service = Service::with_log_actuator(&GUARD);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, service.state.clone(), async move {
        let _ = stopped.await;
    }));

    let mut tasks = Vec::new();
    for worker in 0..4 {
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(addr).await.unwrap();
            for n in 0..100 {
                let body = signal("storm", 150.0 + f64::from(n), &format!("s-{worker}-{n}"));
                let (status, text) = connection
                    .request("POST", "/v1/signals", Some(TOKEN), &body)
                    .await
                    .unwrap();
                assert_eq!(status, 204, "{text}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let actuator = service.actuator.as_ref().unwrap();
    actuator.drain(Duration::from_secs(10)).await.unwrap();
    // After the confirmed action, more breaching signals meet the cooldown.
    let mut connection = Connection::open(addr).await.unwrap();
    for n in 0..20 {
        let body = signal("storm", 200.0, &format!("late-{n}"));
        let (status, _) = connection
            .request("POST", "/v1/signals", Some(TOKEN), &body)
            .await
            .unwrap();
        assert_eq!(status, 204);
    }
    actuator.drain(Duration::from_secs(10)).await.unwrap();
    let (status, view) = connection
        .request("GET", "/v1/tenants/storm", Some(TOKEN), "")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();

    assert_eq!(service.receipts_of("storm", "signal").len(), 420);
    let actions = service.receipts_of("storm", "action");
    assert_eq!(actions.len(), 1, "{actions:#?}");
    assert_eq!(service.receipts_of("storm", "action_result").len(), 1);
    assert_eq!(view["state"], "warning", "{view}");
    service.assert_verifies();

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A sender's clock does not drive policy: ten intervene-level readings
/// whose `at` claims an hour between each, sent within a second, meet the
/// cooldown of the first dispatch on the server's clock; one claiming the
/// year 9999 blocks nothing beyond that cooldown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_times_do_not_move_cooldowns_budgets_or_timers() {
    use super::harness::post;
    use ggen_runtime::clock::Timestamp;

    let service = Service::with_log_actuator(&GUARD);
    let actuator = service.actuator.as_ref().unwrap();
    let start = Timestamp::now();
    let mut bodies: Vec<String> = (0..10)
        .map(|hour| {
            serde_json::json!({
                "tenant": "forger", "signal": "load", "value": 150.0,
                "at": format!("2026-01-01T{hour:02}:00:00Z"), "id": format!("f-{hour}"),
            })
            .to_string()
        })
        .collect();
    bodies.push(
        serde_json::json!({
            "tenant": "forger", "signal": "load", "value": 150.0,
            "at": "9999-01-01T00:00:00Z", "id": "f-future",
        })
        .to_string(),
    );
    for body in bodies {
        let reply = service.send(post("/v1/signals", body)).await;
        assert_eq!(reply.status, 204, "{reply:?}");
        // Let the dispatched action confirm, as hours would have.
        actuator.drain(Duration::from_secs(10)).await.unwrap();
    }
    let end = Timestamp::now();

    let actions = service.receipts_of("forger", "action");
    assert_eq!(
        actions.len(),
        1,
        "cooldown_s 300 on the server's clock: {actions:#?}"
    );
    let signals = service.receipts_of("forger", "signal");
    assert_eq!(signals.len(), 11);
    for receipt in &signals {
        let at = Timestamp::parse(receipt["at"].as_str().unwrap()).unwrap();
        assert!(
            start <= at && at <= end,
            "decided at {at}, not on the server's clock"
        );
        assert!(receipt["event"]["observed_at"].is_string(), "{receipt}");
        if let Some(until) = receipt["decision"]["block"]["until"].as_str() {
            let until = Timestamp::parse(until).unwrap();
            assert!(
                until <= end.plus_secs(300),
                "a block until {until} outlives the cooldown"
            );
        }
    }
    let blocked = signals
        .iter()
        .filter(|r| r["decision"]["reason"] == "blocked")
        .count();
    assert_eq!(blocked, 10, "every later reading meets the cooldown");
    assert_eq!(
        signals[10]["event"]["observed_at"], "9999-01-01T00:00:00Z",
        "the claimed time is kept as the observation time"
    );
    service.assert_verifies();
}

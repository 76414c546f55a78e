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

//! Replayed deliveries: a captured marketplace request sent again, and
//! Pub/Sub redeliveries arriving after many newer messages, are dropped
//! however many other ids came in between, across a restart too.

use ggen_runtime::clock::Timestamp;
use ggen_runtime::ledger::file::FileOptions;

use super::harness::{Service, envelope, get, marketplace_signed_at, post, pubsub, signal};
use super::sku::GUARD;

/// The entitlement state `/v1/tenants/{t}` reports.
async fn entitlement(service: &Service, tenant: &str) -> String {
    let reply = service.send(get(&format!("/v1/tenants/{tenant}"))).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json["entitlement"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_captured_marketplace_event_replayed_later_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = || FileOptions::default();
    let now = Timestamp::now();
    let event =
        |name: &str, id: &str| format!(r#"{{"tenant":"acme","event":"{name}","id":"{id}"}}"#);
    let reinstated = event("reinstated", "e-4");
    {
        let service = Service::file(&GUARD, dir.path(), options());
        for (name, id) in [
            ("created", "e-1"),
            ("approved", "e-2"),
            ("suspended", "e-3"),
        ] {
            let reply = service
                .send(marketplace_signed_at(&event(name, id), now))
                .await;
            assert_eq!(reply.status, 204, "{name}: {reply:?}");
        }
        // The request an attacker captures: body and signature header.
        let reply = service.send(marketplace_signed_at(&reinstated, now)).await;
        assert_eq!(reply.status, 204, "{reply:?}");
        let reply = service
            .send(marketplace_signed_at(&event("suspended", "e-5"), now))
            .await;
        assert_eq!(reply.status, 204, "{reply:?}");
        // Forty signals (the old dedupe ring held 32 ids, shared with signals).
        for n in 0..40 {
            let body = signal("acme", 1.0, &format!("s-{n}"));
            assert_eq!(service.send(post("/v1/signals", body)).await.status, 204);
        }
        // The captured request, replayed: a duplicate, no effect.
        let reply = service.send(marketplace_signed_at(&reinstated, now)).await;
        assert_eq!(reply.status, 204, "{reply:?}");
        assert_eq!(entitlement(&service, "acme").await, "suspended");
        assert_eq!(service.receipts_of("acme", "entitlement").len(), 5);
    }
    // After a restart (the ids come back from the ledger) it still is.
    let service = Service::file(&GUARD, dir.path(), options());
    let reply = service.send(marketplace_signed_at(&reinstated, now)).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert_eq!(entitlement(&service, "acme").await, "suspended");
    assert_eq!(service.receipts_of("acme", "entitlement").len(), 5);

    // Captured longer ago than the signature tolerance: refused outright,
    // even with an id never seen.
    let old = Timestamp::from_millis(now.as_millis() - 10 * 60 * 1000);
    let reply = service
        .send(marketplace_signed_at(&event("reinstated", "e-never"), old))
        .await;
    reply.assert_error(401, "unauthorized");
    assert!(reply.text.contains("timestamp"), "{reply:?}");
    assert_eq!(entitlement(&service, "acme").await, "suspended");
    service.assert_verifies();
}

#[tokio::test]
async fn a_pubsub_redelivery_after_many_newer_messages_is_still_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let first = envelope("acme", r#"{"signal":"load","value":120}"#, "msg-first");
    {
        let service = Service::file(&GUARD, dir.path(), FileOptions::default());
        assert_eq!(service.send(pubsub(first.clone())).await.status, 204);
        for n in 0..500 {
            let body = envelope(
                "acme",
                r#"{"signal":"load","value":1}"#,
                &format!("msg-{n}"),
            );
            assert_eq!(service.send(pubsub(body)).await.status, 204);
        }
        assert_eq!(service.send(pubsub(first.clone())).await.status, 204);
        assert_eq!(service.receipts_of("acme", "signal").len(), 501);
        // A checkpoint carries the window across the restart below.
        service.registry.checkpoint().unwrap();
        let late = envelope("acme", r#"{"signal":"load","value":1}"#, "msg-late");
        assert_eq!(service.send(pubsub(late)).await.status, 204);
    }
    let service = Service::file(&GUARD, dir.path(), FileOptions::default());
    for id in ["msg-first", "msg-0", "msg-499", "msg-late"] {
        let again = envelope("acme", r#"{"signal":"load","value":120}"#, id);
        assert_eq!(service.send(pubsub(again)).await.status, 204);
    }
    assert_eq!(
        service.receipts_of("acme", "signal").len(),
        502,
        "nothing applied twice"
    );
    // The first message's intervention was dispatched once, not again.
    assert_eq!(service.receipts_of("acme", "action").len(), 1);
    service.assert_verifies();
}

#[tokio::test]
async fn a_full_dedupe_window_is_answered_429_with_retry_after() {
    use std::sync::Arc;
    use std::time::Duration;

    use ggen_runtime::ingress::{AppState, Options};
    use ggen_runtime::ledger::Ledger;
    use ggen_runtime::ledger::memory::MemoryLedger;
    use ggen_runtime::registry::{DedupeOptions, Registry};

    use super::harness::full_auth;

    let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::new());
    let dedupe = DedupeOptions {
        window: Duration::from_secs(600),
        capacity: 2,
        ..DedupeOptions::default()
    };
    let registry = Arc::new(Registry::with_dedupe(&GUARD, Arc::clone(&ledger), dedupe));
    registry.recover().unwrap();
    let service = Service {
        state: AppState::new(Arc::clone(&registry), full_auth(), Options::default()),
        registry,
        ledger,
        actuator: None,
    };
    for n in 0..2 {
        let body = signal("busy", 1.0, &format!("s-{n}"));
        assert_eq!(service.send(post("/v1/signals", body)).await.status, 204);
    }
    let reply = service
        .send(post("/v1/signals", signal("busy", 1.0, "s-2")))
        .await;
    reply.assert_error(429, "dedupe_full");
    let reply = service
        .send(pubsub(envelope(
            "busy",
            r#"{"signal":"load","value":1}"#,
            "m-3",
        )))
        .await;
    reply.assert_error(429, "dedupe_full");
    assert_eq!(service.receipts("busy").len(), 2, "nothing written");
    // The service is not poisoned: other tenants and readiness are fine.
    assert_eq!(
        service
            .send(post("/v1/signals", signal("calm", 1.0, "c-1")))
            .await
            .status,
        204
    );
    assert_eq!(service.send(get("/readyz")).await.status, 200);
}

/// Ids are deduplicated per door: the API token cannot pre-empt a Pub/Sub
/// message by sending its (guessable) `messageId` first, and a redelivery
/// is still a duplicate after it — across a restart too (the receipt records
/// the door).
#[tokio::test]
async fn an_api_id_cannot_pre_empt_a_pubsub_message_id() {
    let dir = tempfile::tempdir().unwrap();
    {
        let service = Service::file(&GUARD, dir.path(), FileOptions::default());
        // The token holder guesses the next messageId.
        let body = signal("acme", 1.0, "msg-next");
        assert_eq!(service.send(post("/v1/signals", body)).await.status, 204);
        let push = envelope("acme", r#"{"signal":"load","value":120}"#, "msg-next");
        assert_eq!(service.send(pubsub(push.clone())).await.status, 204);
        let signals = service.receipts_of("acme", "signal");
        assert_eq!(signals.len(), 2, "the Pub/Sub message was applied");
        assert_eq!(signals[1]["event"]["via"], "pubsub");
        assert!(signals[0]["event"].get("via").is_none());
        assert_eq!(service.send(pubsub(push)).await.status, 204);
        assert_eq!(service.receipts_of("acme", "signal").len(), 2);
    }
    let service = Service::file(&GUARD, dir.path(), FileOptions::default());
    let push = envelope("acme", r#"{"signal":"load","value":120}"#, "msg-next");
    assert_eq!(service.send(pubsub(push)).await.status, 204);
    let body = signal("acme", 1.0, "msg-next");
    assert_eq!(service.send(post("/v1/signals", body)).await.status, 204);
    assert_eq!(
        service.receipts_of("acme", "signal").len(),
        2,
        "both remembered in their own spaces after a restart"
    );
    service.assert_verifies();
}

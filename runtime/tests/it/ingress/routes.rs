//! Every route on its happy path, answered as documented.

use axum::body::Body;
use ggen_runtime::clock::Timestamp;
use serde_json::{Value, json};

use super::harness::{
    ADMIN, Service, envelope, get, marketplace, post, pubsub, request, signal, without_sku,
};
use super::sku::{GUARD, WATCHED};

#[tokio::test]
async fn a_signal_is_receipted_and_acknowledged_with_204() {
    let service = Service::memory(&GUARD);
    let reply = service
        .send(post("/v1/signals", signal("acme", 60.0, "m-1")))
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let receipts = service.receipts("acme");
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0]["kind"], "signal");
    assert_eq!(receipts[0]["event"]["id"], "m-1");
    assert_eq!(receipts[0]["to"], "warning");
    service.assert_verifies();
}

#[tokio::test]
async fn escaped_strings_in_a_signal_are_read_as_their_text() {
    // The body's strings are borrowed unless they hold escapes: both kinds
    // name the same tenant, signal and id.
    let service = Service::memory(&GUARD);
    let escaped = r#"{"tenant":"ac\u006de","signal":"lo\u0061d","value":60,"id":"m\u002d1"}"#;
    for body in [escaped.to_owned(), signal("acme", 60.0, "m-1")] {
        let reply = service.send(post("/v1/signals", body)).await;
        assert_eq!(reply.status, 204, "{reply:?}");
    }
    // One receipt: the plain signal was the escaped one's duplicate.
    let receipts = service.receipts("acme");
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts[0]["event"]["signal"], "load");
    assert_eq!(receipts[0]["event"]["id"], "m-1");
    service.assert_verifies();
}

#[tokio::test]
async fn a_batch_answers_per_item() {
    let service = Service::memory(&GUARD);
    let body = json!([
        { "tenant": "a", "signal": "load", "value": 10, "id": "1" },
        { "tenant": "b", "signal": "nope", "value": 10 },
        { "tenant": "../x", "signal": "load", "value": 10 },
        { "tenant": "c", "signal": "load", "value": 10, "at": "2026-01-01T00:00:00Z" },
    ]);
    let reply = service.send(post("/v1/signals", body.to_string())).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let results = reply.json["results"].as_array().unwrap();
    let statuses: Vec<_> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [204, 400, 400, 204]);
    assert_eq!(results[1]["error"], "rejected");
    assert_eq!(results[2]["error"], "bad_request");
    assert_eq!(service.receipts_of("b", "rejected").len(), 1);
    // The sender's `at` is recorded as the observation time only.
    let c = &service.receipts("c")[0];
    assert_eq!(c["event"]["observed_at"], "2026-01-01T00:00:00Z");
    assert_server_time(&c["at"]);
    service.assert_verifies();
}

#[tokio::test]
async fn pubsub_push_is_receipted_under_the_message_id_and_deduplicated() {
    let service = Service::memory(&GUARD);
    let body = envelope("acme", r#"{"signal":"load","value":120}"#, "msg-42");
    for _ in 0..3 {
        let reply = service.send(pubsub(body.clone())).await;
        assert_eq!(reply.status, 204, "{reply:?}");
    }
    let receipts = service.receipts("acme");
    let signals: Vec<&Value> = receipts.iter().filter(|r| r["kind"] == "signal").collect();
    assert_eq!(signals.len(), 1, "{receipts:#?}");
    assert_eq!(signals[0]["event"]["id"], "msg-42");
    // `at` absent: the publish time is the observation time; the decision
    // is taken on the server's clock.
    assert_eq!(signals[0]["event"]["observed_at"], "2026-01-01T00:00:00Z");
    assert_server_time(&signals[0]["at"]);
    // 120 is past `intervene`: the throttle was dispatched once.
    assert_eq!(service.receipts_of("acme", "action").len(), 1);
    service.assert_verifies();
}

#[tokio::test]
async fn pubsub_snake_case_envelopes_are_accepted() {
    let service = Service::memory(&GUARD);
    let data = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        r#"{"signal":"load","value":1,"at":"2026-02-01T00:00:00Z"}"#,
    );
    let body = json!({ "message": { "data": data, "attributes": { "tenant_id": "snake" },
        "message_id": "s-1", "publish_time": "2026-01-01T00:00:00Z" } });
    let reply = service.send(pubsub(body.to_string())).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let receipt = &service.receipts("snake")[0];
    assert_eq!(receipt["event"]["observed_at"], "2026-02-01T00:00:00Z");
    assert_server_time(&receipt["at"]);
}

#[tokio::test]
async fn tenant_view_admit_and_receipts_pages() {
    let service = Service::memory(&GUARD);
    for i in 0..5 {
        let reply = service
            .send(post(
                "/v1/signals",
                signal("acme", 10.0 + f64::from(i), &format!("m-{i}")),
            ))
            .await;
        assert_eq!(reply.status, 204);
    }
    let view = service.send(get("/v1/tenants/acme")).await;
    assert_eq!(view.status, 200, "{view:?}");
    assert_eq!(view.json["state"], "stable");
    assert_eq!(view.json["entitlement"], "pending");
    assert_eq!(view.json["seq"], 5);
    assert_eq!(view.json["last_receipt"]["seq"], 5);
    assert_eq!(view.json["in_flight"], json!([]));

    let admit = service.send(get("/v1/tenants/acme/admit")).await;
    assert_eq!(
        admit.json,
        json!({ "allow": true, "state": "stable", "reason": "stable" })
    );

    let page = service
        .send(get("/v1/tenants/acme/receipts?after=1&limit=2"))
        .await;
    assert_eq!(page.status, 200, "{page:?}");
    let seqs: Vec<_> = page.json["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["receipt"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(page.json["next_after"], 3);
    let rest = service.send(get("/v1/tenants/acme/receipts?after=3")).await;
    assert_eq!(rest.json["receipts"].as_array().unwrap().len(), 2);
    assert_eq!(rest.json["next_after"], 5);

    let unknown = service.send(get("/v1/tenants/nobody")).await;
    unknown.assert_error(404, "not_found");
}

#[tokio::test]
async fn reset_with_the_admin_token_returns_to_stable() {
    let service = Service::memory(&GUARD);
    service
        .send(post("/v1/signals", signal("acme", 600.0, "r-1")))
        .await;
    assert_eq!(
        service.send(get("/v1/tenants/acme")).await.json["state"],
        "refusing"
    );
    let reply = service
        .send(request(
            "POST",
            "/v1/tenants/acme/reset",
            Some(ADMIN),
            r#"{"reason":"false alarm"}"#,
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["state"], "stable");
    let resets = service.receipts_of("acme", "reset");
    assert_eq!(resets.len(), 1);
    // An empty body is fine too.
    let reply = service
        .send(request(
            "POST",
            "/v1/tenants/acme/reset",
            Some(ADMIN),
            Body::empty(),
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    service.assert_verifies();
}

/// A reset forgets a tenant's readings; where the SKU requires an
/// entitlement, it cannot admit a tenant that has none.
#[tokio::test]
async fn a_reset_leaves_a_tenant_without_its_required_entitlement_refused() {
    let service = Service::memory(&WATCHED);
    let reply = service
        .send(post("/v1/signals", signal("nx", 10.0, "n-1")))
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let refused = json!({ "allow": false, "state": "refusing", "reason": "entitlement_inactive" });
    assert_eq!(
        service.send(get("/v1/tenants/nx/admit")).await.json,
        refused
    );
    let reply = service
        .send(request(
            "POST",
            "/v1/tenants/nx/reset",
            Some(ADMIN),
            Body::empty(),
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["state"], "refusing");
    assert_eq!(
        service.send(get("/v1/tenants/nx/admit")).await.json,
        refused
    );
    let resets = service.receipts_of("nx", "reset");
    assert_eq!(resets[0]["decision"]["reason"], "operator_reset");
    assert_eq!(
        (resets[0]["from"].as_str(), resets[0]["to"].as_str()),
        (Some("refusing"), Some("refusing"))
    );
    service.assert_verifies();
}

/// A plan change's plan holds from `plan_changed`, not from its request,
/// and a cancelled request leaves the old plan's profile.
#[tokio::test]
async fn a_requested_plan_waits_for_plan_changed() {
    let service = Service::memory(&GUARD);
    let events = [
        (
            r#"{"tenant":"acme","event":"created","id":"p-1","plan":"standard"}"#,
            "standard",
        ),
        (
            r#"{"tenant":"acme","event":"approved","id":"p-2"}"#,
            "standard",
        ),
        (
            r#"{"tenant":"acme","event":"plan_change_requested","id":"p-3","plan":"enterprise"}"#,
            "standard",
        ),
        (
            r#"{"tenant":"acme","event":"plan_change_cancelled","id":"p-4","plan":"enterprise"}"#,
            "standard",
        ),
        (
            r#"{"tenant":"acme","event":"plan_change_requested","id":"p-5","plan":"enterprise"}"#,
            "standard",
        ),
        (
            r#"{"tenant":"acme","event":"plan_changed","id":"p-6","plan":"enterprise"}"#,
            "enterprise",
        ),
    ];
    for (event, profile) in events {
        let reply = service.send(marketplace(event)).await;
        assert_eq!(reply.status, 204, "{event}: {reply:?}");
        let view = service.send(get("/v1/tenants/acme")).await;
        assert_eq!(view.json["profile"], profile, "after {event}");
    }
    service.assert_verifies();
}

#[tokio::test]
async fn marketplace_events_walk_the_entitlement_and_refuse_invalid_ones_with_409() {
    let service = Service::memory(&GUARD);
    let created = r#"{"tenant":"acme","event":"created","id":"e-1"}"#;
    assert_eq!(service.send(marketplace(created)).await.status, 204);
    let approved = r#"{"tenant":"acme","event":"approved","id":"e-2","plan":"enterprise"}"#;
    assert_eq!(service.send(marketplace(approved)).await.status, 204);
    // A redelivery is a duplicate: 204, no receipt.
    assert_eq!(service.send(marketplace(approved)).await.status, 204);
    let view = service.send(get("/v1/tenants/acme")).await;
    assert_eq!(view.json["entitlement"], "active");
    assert_eq!(view.json["profile"], "enterprise");
    let again = r#"{"tenant":"acme","event":"approved","id":"e-3"}"#;
    let reply = service.send(marketplace(again)).await;
    reply.assert_error(409, "conflict");
    let receipts = service.receipts_of("acme", "entitlement");
    assert_eq!(receipts.len(), 3, "{receipts:#?}");
    service.assert_verifies();
}

#[tokio::test]
async fn ledger_verify_probes_and_metrics() {
    let service = Service::memory(&GUARD);
    service
        .send(post("/v1/signals", signal("acme", 120.0, "v-1")))
        .await;
    service
        .send(post("/v1/signals", signal("acme", -1.0, "v-2")))
        .await;
    let verify = service.send(get("/v1/ledger/verify")).await;
    assert_eq!(verify.status, 200);
    assert_eq!(verify.json["ok"], true);
    assert_eq!(verify.json["tenants"], 1);
    assert_eq!(verify.json["receipts"], 3);

    // An operator reset is a transition too (not made by a signal).
    let reset = request(
        "POST",
        "/v1/tenants/acme/reset",
        Some(ADMIN),
        Body::from(r#"{"reason":"drill"}"#),
    );
    assert_eq!(service.send(reset).await.status, 200);

    let unauthenticated = |path: &str| request("GET", path, None, Body::empty());
    let health = service.send(unauthenticated("/healthz")).await;
    assert_eq!(health.json["status"], "ok");
    let ready = service.send(unauthenticated("/readyz")).await;
    assert_eq!(ready.status, 200, "{ready:?}");

    let metrics = service.send(unauthenticated("/metrics")).await;
    assert_eq!(metrics.status, 200);
    let text = without_sku(&metrics.text);
    for series in [
        r#"governor_signals_total{signal="load",outcome="accepted"} 1"#,
        r#"governor_signals_total{signal="load",outcome="rejected"} 1"#,
        r#"governor_decisions_total{level="intervene"} 1"#,
        r#"governor_transitions_total{from="boot",to="intervening"} 1"#,
        r#"governor_transitions_total{from="intervening",to="stable"} 1"#,
        r#"governor_actions_total{action="throttle"} 1"#,
        r#"governor_tenants{state="stable"} 1"#,
        "governor_ledger_durable_seconds_bucket",
        r#"governor_http_request_duration_seconds_bucket{route="/v1/signals",le="0.25"}"#,
        "governor_ledger_verifications_total 1\n",
        "governor_ledger_verify_failures_total 0\n",
        "governor_ledger_last_verify_ok 1\n",
        "governor_ready 1\n",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
}

/// Asserts that a receipt's `at` is the server's clock (within a minute of now).
#[track_caller]
fn assert_server_time(at: &Value) {
    let at = Timestamp::parse(at.as_str().expect("`at` is a string")).unwrap();
    let skew = (Timestamp::now().as_millis() - at.as_millis()).abs();
    assert!(
        skew < 60_000,
        "receipt decided at {at}, not on the server's clock"
    );
}

//! One tenant's inconsistency stays that tenant's; `GET /v1/ledger/verify`
//! judges the checkpoint and stops when its request is dropped.

use std::sync::Arc;

use ggen_runtime::tenant::{Registry, TenantId};

use super::harness::{Service, get, post, signal};
use super::sku::GUARD;

#[tokio::test]
async fn a_tenant_out_of_step_with_its_chain_gets_500_and_the_rest_are_served() {
    let service = Service::memory(&GUARD);
    for (tenant, id) in [("acme", "1"), ("beta", "2")] {
        let reply = service
            .send(post("/v1/signals", signal(tenant, 10.0, id)))
            .await;
        assert_eq!(reply.status, 204, "{reply:?}");
    }
    // Another writer moves `acme`'s chain on behind the service's back.
    let other = Registry::new(&GUARD, Arc::clone(&service.ledger));
    other.recover().unwrap();
    let at = ggen_runtime::clock::Timestamp::now();
    let input = ggen_runtime::receipt::Input::Reset {
        reason: "elsewhere".into(),
    };
    other
        .apply(&TenantId::new("acme").unwrap(), input, at)
        .unwrap();
    let receipts = service.assert_verifies().receipts;

    let reply = service
        .send(post("/v1/signals", signal("acme", 10.0, "3")))
        .await;
    reply.assert_error(500, "tenant_inconsistent");
    let detail = reply.json["detail"].as_str().unwrap();
    assert!(detail.contains("`acme`"), "{detail}");
    assert!(detail.contains("ledger verify"), "{detail}");
    assert_eq!(
        service.assert_verifies().receipts,
        receipts,
        "nothing written"
    );
    // Everyone else is still served, and the service is ready.
    let reply = service
        .send(post("/v1/signals", signal("beta", 10.0, "4")))
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let reply = service
        .send(post("/v1/signals", signal("gamma", 10.0, "5")))
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert_eq!(service.send(get("/readyz")).await.status, 200);
}

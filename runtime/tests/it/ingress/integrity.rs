//! One tenant's inconsistency stays that tenant's; `GET /v1/ledger/verify`
//! judges the checkpoint, runs one at a time and stops when its request is
//! dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ggen_runtime::ingress::Options;
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::ledger::{
    Appended, Entry, Head, Ledger, LedgerError, Mark, Record, Recovered, VerifyOptions,
    VerifyReport,
};
use ggen_runtime::registry::Registry;
use ggen_runtime::tenant::TenantId;
use serde_json::{Value, json};

use super::harness::{Service, full_auth, get, post, signal, without_sku};
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

#[tokio::test]
async fn ledger_verify_reports_a_checkpoint_that_contradicts_the_chains() {
    let service = Service::memory(&GUARD);
    for (tenant, id) in [("acme", "1"), ("beta", "2")] {
        let reply = service
            .send(post("/v1/signals", signal(tenant, 10.0, id)))
            .await;
        assert_eq!(reply.status, 204, "{reply:?}");
    }
    service.registry.checkpoint().unwrap();
    let reply = service.send(get("/v1/ledger/verify")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["ok"], true, "{reply:?}");
    assert_eq!(reply.json["checkpoint"], Value::Null, "{reply:?}");
    // The same checkpoint, rewritten: `beta` one receipt further than the ledger.
    let mut blob = None;
    service
        .ledger
        .recover(&mut |item| {
            if let Recovered::Checkpoint(stored) = item {
                blob = Some(serde_json::from_slice::<Value>(&stored.blob).unwrap());
            }
            Ok(())
        })
        .unwrap();
    let mut blob = blob.unwrap();
    for entry in blob["tenants"].as_array_mut().unwrap() {
        if entry[0] == "beta" {
            entry[1]["seq"] = json!(2);
        }
    }
    let mark = service.ledger.mark().unwrap();
    service
        .ledger
        .checkpoint(mark, &serde_json::to_vec(&blob).unwrap())
        .unwrap();
    let reply = service.send(get("/v1/ledger/verify")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["ok"], false, "{reply:?}");
    assert_eq!(reply.json["checkpoint"]["tenant"], "beta", "{reply:?}");
    let reason = reply.json["checkpoint"]["reason"].as_str().unwrap();
    assert!(reason.contains("seq `2`"), "{reason}");
    // Counted, for the alert on a failed verification.
    let metrics = without_sku(&service.send(get("/metrics")).await.text);
    assert!(
        metrics.contains("governor_ledger_verifications_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("governor_ledger_verify_failures_total 1\n"),
        "{metrics}"
    );
    // The chains are still reported, and they are fine.
    assert_eq!(reply.json["first_bad"], Value::Null, "{reply:?}");
    assert_eq!(
        (
            reply.json["receipts"].clone(),
            reply.json["tenants"].clone()
        ),
        (json!(2), json!(2))
    );
}

/// A memory ledger whose verification waits to be cancelled (for at most
/// 10 s), noting whether it was.
#[derive(Default)]
struct StallingVerify {
    inner: MemoryLedger,
    started: AtomicBool,
    cancelled: AtomicBool,
}

impl Ledger for StallingVerify {
    fn append(&self, entry: Entry) -> Result<Appended, LedgerError> {
        self.inner.append(entry)
    }
    fn head(&self, tenant: &TenantId) -> Head {
        self.inner.head(tenant)
    }
    fn read(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Record>, LedgerError> {
        self.inner.read(tenant, after, limit)
    }
    fn mark(&self) -> Result<Mark, LedgerError> {
        self.inner.mark()
    }
    fn checkpoint(&self, mark: Mark, blob: &[u8]) -> Result<(), LedgerError> {
        self.inner.checkpoint(mark, blob)
    }
    fn recover(
        &self,
        visit: &mut dyn FnMut(Recovered<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        self.inner.recover(visit)
    }
    fn scan(
        &self,
        visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        self.inner.scan(visit)
    }
    fn verify_with(&self, options: &VerifyOptions<'_>) -> Result<VerifyReport, LedgerError> {
        self.started.store(true, Ordering::SeqCst);
        for _ in 0..10_000 {
            if options.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                self.cancelled.store(true, Ordering::SeqCst);
                return Err(LedgerError::Cancelled { visited: 0 });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.inner.verify_with(options)
    }
    fn flushed(&self) -> ggen_runtime::ledger::Ticket {
        self.inner.flushed()
    }
}

#[tokio::test]
async fn a_verify_whose_request_timed_out_is_cancelled() {
    let ledger = Arc::new(StallingVerify::default());
    let service = Service::over(
        &GUARD,
        ledger.clone(),
        full_auth(),
        Options {
            request_timeout: Duration::from_millis(50),
            ..Options::default()
        },
    );
    let reply = service.send(get("/v1/ledger/verify")).await;
    reply.assert_error(408, "timeout");
    assert!(ledger.started.load(Ordering::SeqCst), "verify never ran");
    // The handler was dropped with its request: the verification sees it
    // (waiting for the blocking thread, at most as long as it would stall).
    for _ in 0..10_000 {
        if ledger.cancelled.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        ledger.cancelled.load(Ordering::SeqCst),
        "verify ran on after its request was dropped"
    );
    // Receipts are read off the async workers too, and still answered.
    let reply = service
        .send(post("/v1/signals", signal("acme", 10.0, "1")))
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let reply = service.send(get("/v1/tenants/acme/receipts")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["receipts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_second_verify_while_one_runs_is_refused_and_signals_are_still_served() {
    let ledger = Arc::new(StallingVerify::default());
    let service = Service::over(
        &GUARD,
        ledger.clone(),
        full_auth(),
        Options {
            request_timeout: Duration::from_millis(500),
            ..Options::default()
        },
    );
    let first = service.send(get("/v1/ledger/verify"));
    let meanwhile = async {
        for _ in 0..10_000 {
            if ledger.started.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(ledger.started.load(Ordering::SeqCst), "verify never ran");
        // A tenant looping the route gets 429 while one verification runs;
        // its signals are not held up by it.
        let second = service.send(get("/v1/ledger/verify")).await;
        let signal = service
            .send(post("/v1/signals", signal("acme", 10.0, "1")))
            .await;
        (second, signal)
    };
    let (first, (second, signal)) = tokio::join!(first, meanwhile);
    second.assert_error(429, "busy");
    assert_eq!(signal.status, 204, "{signal:?}");
    // The first ran until its request timed out, and then gave its turn back.
    first.assert_error(408, "timeout");
    ledger.started.store(false, Ordering::SeqCst);
    let third = service.send(get("/v1/ledger/verify")).await;
    third.assert_error(408, "timeout");
    assert!(
        ledger.started.load(Ordering::SeqCst),
        "the turn was not given back"
    );
}

//! The registry: limits, dedupe, receipts, concurrency, checkpoint + recover.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ggen_runtime::clock::Timestamp;
use ggen_runtime::entitlement::{EntitlementError, EntitlementEvent, EntitlementState};
use ggen_runtime::fsm::State;
use ggen_runtime::ledger::Ledger;
use ggen_runtime::ledger::file::{FileLedger, FileOptions};
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::receipt::{IdempotencyKey, Input};
use ggen_runtime::registry::{DedupeOptions, Registry, RegistryError};
use ggen_runtime::tenant::TenantId;
use serde_json::Value;

use super::sku::{AVAIL, ENTITLED, LOAD, OPEN, THROTTLE, TINY};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp(T0 + secs * 1000)
}

fn signal(signal: ggen_runtime::sku::SignalId, value: f64, id: Option<&str>) -> Input {
    Input::Signal {
        via: Default::default(),
        observed: None,
        signal,
        value,
        id: id.map(str::to_owned),
    }
}

fn receipts(ledger: &MemoryLedger, t: &TenantId) -> Vec<Value> {
    ledger
        .read(t, 0, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.bytes).unwrap())
        .collect()
}

fn open() -> (Arc<MemoryLedger>, Registry) {
    let ledger = Arc::new(MemoryLedger::new());
    (ledger.clone(), Registry::new(&OPEN, ledger))
}

#[test]
fn max_tenants_refuses_the_next_new_tenant() {
    let ledger = Arc::new(MemoryLedger::new());
    let registry = Registry::new(&TINY, ledger);
    for name in ["a", "b", "c"] {
        registry
            .apply(&tenant(name), signal(LOAD, 1.0, None), at(0))
            .unwrap();
    }
    let err = registry
        .apply(&tenant("d"), signal(LOAD, 1.0, None), at(0))
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::TooManyTenants { max: 3, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "tenant limit `3` reached: new tenant `d` refused"
    );
    // Known tenants keep working.
    registry
        .apply(&tenant("a"), signal(LOAD, 2.0, None), at(1))
        .unwrap();
    assert_eq!(registry.len(), 3);
    assert!(registry.view(&tenant("d")).is_none());
}

#[test]
fn a_redelivered_rejected_message_is_receipted_once() {
    let (ledger, registry) = open();
    let t = tenant("acme");
    let rejected = || Input::Rejected {
        reason: "unknown signal `nope`".into(),
        event: serde_json::json!({ "id": "m-9", "signal": "nope", "value": "1" }),
    };
    let first = registry.apply(&t, rejected(), at(0)).unwrap();
    assert_eq!((first.duplicate, first.receipts), (false, 1));
    let again = registry.apply(&t, rejected(), at(1)).unwrap();
    assert_eq!((again.duplicate, again.receipts), (true, 0));
    // A signal with the same id is not a duplicate of the rejection.
    assert!(
        !registry
            .apply(&t, signal(LOAD, 1.0, Some("m-9")), at(2))
            .unwrap()
            .duplicate
    );
    assert_eq!(receipts(&ledger, &t).len(), 2);
}

#[test]
fn applied_reports_from_state_and_level() {
    let (_ledger, registry) = open();
    let t = tenant("acme");
    let first = registry
        .apply(&t, signal(AVAIL, 98.0, None), at(0))
        .unwrap();
    assert_eq!((first.from, first.state), (State::Boot, State::Warning));
    assert_eq!(first.level, ggen_runtime::policy::Level::Warn);
    let second = registry
        .apply(&t, signal(AVAIL, 100.0, None), at(1))
        .unwrap();
    assert_eq!(second.from, State::Warning);
}

#[test]
fn duplicate_ids_are_dropped_before_the_step() {
    let (ledger, registry) = open();
    let t = tenant("acme");
    let first = registry
        .apply(&t, signal(LOAD, 60.0, Some("m-1")), at(0))
        .unwrap();
    assert_eq!(
        (first.duplicate, first.receipts, first.last_seq),
        (false, 1, 1)
    );
    assert!(first.ticket.is_some());
    let again = registry
        .apply(&t, signal(LOAD, 60.0, Some("m-1")), at(1))
        .unwrap();
    assert_eq!(
        (again.duplicate, again.receipts, again.last_seq),
        (true, 0, 1)
    );
    assert!(again.ticket.is_none());
    // Same id in another namespace (entitlement) or another tenant is new.
    let ent = Input::Entitlement {
        observed: None,
        marketplace: None,
        event: EntitlementEvent::Created,
        id: Some("m-1".into()),
        plan: None,
    };
    assert!(!registry.apply(&t, ent, at(2)).unwrap().duplicate);
    assert!(
        !registry
            .apply(&tenant("other"), signal(LOAD, 60.0, Some("m-1")), at(2))
            .unwrap()
            .duplicate
    );
    assert_eq!(receipts(&ledger, &t).len(), 2);
    // Many later ids do not push `m-1` out (the old ring held 32): ids are
    // kept for a window of decision time.
    for i in 0..1_000 {
        let id = format!("n-{i}");
        registry
            .apply(&t, signal(LOAD, 1.0, Some(&id)), at(3))
            .unwrap();
    }
    let window = i64::try_from(registry.dedupe().window.as_secs()).unwrap();
    assert!(
        registry
            .apply(&t, signal(LOAD, 1.0, Some("m-1")), at(window))
            .unwrap()
            .duplicate
    );
    // Past the window it is new again.
    assert!(
        !registry
            .apply(&t, signal(LOAD, 1.0, Some("m-1")), at(window + 1))
            .unwrap()
            .duplicate
    );
    assert!(
        registry
            .apply(&t, signal(LOAD, 1.0, Some("m-1")), at(window + 2))
            .unwrap()
            .duplicate
    );
}

#[test]
fn a_full_dedupe_window_refuses_new_ids_without_deciding() {
    let ledger = Arc::new(MemoryLedger::new());
    let options = DedupeOptions {
        window: Duration::from_secs(600),
        capacity: 3,
        ..DedupeOptions::default()
    };
    let registry = Registry::with_dedupe(&OPEN, ledger.clone(), options);
    let t = tenant("busy");
    for i in 0..3 {
        let id = format!("m-{i}");
        registry
            .apply(&t, signal(LOAD, 1.0, Some(&id)), at(i))
            .unwrap();
    }
    let refused = registry
        .apply(&t, signal(LOAD, 1.0, Some("m-3")), at(10))
        .unwrap_err();
    assert!(
        matches!(
            refused,
            RegistryError::DedupeFull { capacity: 3, retry_after, .. }
                if retry_after == Duration::from_secs(590)
        ),
        "{refused:?}"
    );
    assert_eq!(receipts(&ledger, &t).len(), 3, "nothing written for it");
    // Known ids are still duplicates, inputs without ids still decide, and
    // entitlement ids are not bound by the signal ids' capacity.
    assert!(
        registry
            .apply(&t, signal(LOAD, 1.0, Some("m-1")), at(11))
            .unwrap()
            .duplicate
    );
    registry.apply(&t, signal(LOAD, 1.0, None), at(12)).unwrap();
    let ent = Input::Entitlement {
        observed: None,
        marketplace: None,
        event: EntitlementEvent::Created,
        id: Some("evt-1".into()),
        plan: None,
    };
    assert!(!registry.apply(&t, ent, at(13)).unwrap().duplicate);
    // Once the oldest id leaves the window there is room again.
    registry
        .apply(&t, signal(LOAD, 1.0, Some("m-3")), at(601))
        .unwrap();
    assert_eq!(receipts(&ledger, &t).len(), 6);
}

#[test]
fn decisions_never_go_back_in_time_per_tenant() {
    let (ledger, registry) = open();
    let t = tenant("acme");
    registry
        .apply(&t, signal(LOAD, 1.0, None), at(100))
        .unwrap();
    registry.apply(&t, signal(LOAD, 1.0, None), at(50)).unwrap();
    let times: Vec<String> = receipts(&ledger, &t)
        .iter()
        .map(|r| r["at"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        times[0], times[1],
        "the earlier clock is raised to the last decision"
    );
}

#[test]
fn intervention_writes_decision_and_action_receipts() {
    let (ledger, registry) = open();
    let t = tenant("acme");
    registry
        .apply(&t, signal(LOAD, 150.0, Some("m-1")), at(0))
        .unwrap();
    // Dwell 2: the second breaching reading intervenes.
    let applied = registry
        .apply(&t, signal(LOAD, 150.5, Some("m-2")), at(1))
        .unwrap();
    assert_eq!(applied.receipts, 2);
    assert_eq!(applied.dispatches.len(), 1);
    let dispatch = &applied.dispatches[0];
    assert_eq!((dispatch.key.action, dispatch.undo), (THROTTLE, false));
    assert_eq!(dispatch.key.to_string(), "acme:2:throttle");
    assert!(matches!(applied.state, State::Intervening { deadline } if deadline == at(31)));

    let all = receipts(&ledger, &t);
    assert_eq!(all.len(), 3);
    // Stored bytes are canonical: re-canonicalizing the parsed JSON gives them back.
    for record in ledger.read(&t, 0, 10).unwrap() {
        let value: Value = serde_json::from_slice(&record.bytes).unwrap();
        assert_eq!(
            ggen_runtime::canonical::to_vec(&value).unwrap(),
            &record.bytes[..]
        );
    }
    let decision = &all[1];
    for key in [
        "v",
        "tenant",
        "seq",
        "kind",
        "at",
        "sku",
        "spec_sha256",
        "from",
        "to",
        "event",
        "decision",
        "actions",
        "prev",
    ] {
        assert!(decision.get(key).is_some(), "missing {key}: {decision}");
    }
    assert_eq!(decision["v"], 1);
    assert_eq!(decision["kind"], "signal");
    assert_eq!(decision["at"], "2026-01-01T00:00:01Z");
    assert_eq!(
        (decision["from"].as_str(), decision["to"].as_str()),
        (Some("stable"), Some("intervening"))
    );
    assert_eq!(
        decision["event"],
        serde_json::json!({"id": "m-2", "signal": "load", "value": "150.5"})
    );
    assert_eq!(decision["decision"]["signal_level"], "intervene");
    assert_eq!(decision["decision"]["threshold"], "100");
    assert_eq!(decision["decision"]["streak"], 2);
    assert_eq!(decision["decision"]["dwell"], 2);
    assert_eq!(
        decision["actions"],
        serde_json::json!([{"name": "throttle", "idempotency_key": "acme:2:throttle"}])
    );
    assert_eq!(decision["prev"].as_str().unwrap().len(), 64);
    let action = &all[2];
    assert_eq!(action["kind"], "action");
    assert_eq!(action["action"]["name"], "throttle");
    assert_eq!(action["action"]["idempotency_key"], "acme:2:throttle");
    // The first receipt of a tenant comes from boot.
    assert_eq!(all[0]["from"], "boot");
    assert_eq!(all[0]["prev"], "0".repeat(64));

    // Further breaching signals are recorded, never re-dispatched.
    let storm = registry
        .apply(&t, signal(LOAD, 400.0, None), at(2))
        .unwrap();
    assert_eq!((storm.receipts, storm.dispatches.len()), (1, 0));
    let view = registry.view(&t).unwrap();
    assert_eq!(view.in_flight.len(), 1);
    assert_eq!(view.in_flight[0].idempotency_key, "acme:2:throttle");

    // Confirmation → warning; recovery → stable with the undo dispatched.
    let ok = Input::ActionResult {
        key: IdempotencyKey::parse(&OPEN, "acme:2:throttle").unwrap(),
        ok: true,
        detail: Some("200".into()),
    };
    assert_eq!(registry.apply(&t, ok, at(3)).unwrap().state, State::Warning);
    registry.apply(&t, signal(LOAD, 10.0, None), at(4)).unwrap();
    let back = registry.apply(&t, signal(LOAD, 10.0, None), at(5)).unwrap();
    assert_eq!(back.state, State::Stable);
    assert_eq!(back.dispatches.len(), 1);
    assert!(back.dispatches[0].undo);
    assert_eq!(
        back.dispatches[0].key.to_string(),
        format!("acme:{}:unthrottle", back.last_seq - 1)
    );
}

#[test]
fn timers_fire_before_input_and_on_tick() {
    let (ledger, registry) = open();
    let t = tenant("acme");
    registry
        .apply(&t, signal(AVAIL, 90.0, None), at(0))
        .unwrap();
    assert!(matches!(
        registry.view(&t).unwrap().state,
        State::Intervening { .. }
    ));
    assert!(registry.tick(at(29)).unwrap().is_empty());
    let fired = registry.tick(at(30)).unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].state, State::Degraded { retry_at: at(150) });
    let all = receipts(&ledger, &t);
    let timeout = all.last().unwrap();
    assert_eq!(timeout["kind"], "timeout");
    assert_eq!(timeout["event"]["timer"], "intervention_deadline");
    // The retry is due at 150 and the tenant still breaches: an input at 200
    // first fires the retry (cooldown 60 s has passed), then is handled.
    let applied = registry
        .apply(&t, signal(LOAD, 1.0, None), at(200))
        .unwrap();
    assert_eq!(applied.dispatches.len(), 2, "throttle and page again");
    assert!(matches!(applied.state, State::Intervening { .. }));
    assert_eq!(applied.receipts, 4, "timeout + 2 actions + signal");
    assert_eq!(receipts(&ledger, &t)[all.len()]["kind"], "timeout");
}

#[test]
fn refused_entitlement_events_are_receipted_and_reported() {
    let ledger = Arc::new(MemoryLedger::new());
    let registry = Registry::new(&ENTITLED, ledger.clone());
    let t = tenant("acme");
    let ev = |event| Input::Entitlement {
        observed: None,
        marketplace: None,
        event,
        id: None,
        plan: None,
    };
    // Signals before an active entitlement are recorded, not acted upon.
    let s = registry
        .apply(&t, signal(AVAIL, 90.0, None), at(0))
        .unwrap();
    assert_eq!((s.state, s.dispatches.len()), (State::Refusing, 0));
    assert!(!registry.admit(&t).allow);
    let refused = registry
        .apply(&t, ev(EntitlementEvent::Reinstated), at(1))
        .unwrap();
    assert_eq!(refused.receipts, 1);
    assert_eq!(
        refused.refused,
        Some(EntitlementError::InvalidTransition {
            from: EntitlementState::Pending,
            event: EntitlementEvent::Reinstated
        })
    );
    let last = receipts(&ledger, &t).pop().unwrap();
    assert_eq!(last["kind"], "entitlement");
    assert_eq!(last["decision"]["reason"], "entitlement_refused");
    assert_eq!(last["from"], last["to"]);
    // Approval lifts the refusal (the tenant's level is below refuse, but
    // the reading recorded while pending is past warn: warning).
    let approved = registry
        .apply(&t, ev(EntitlementEvent::Approved), at(2))
        .unwrap();
    assert_eq!((approved.state, approved.refused), (State::Warning, None));
    let admission = registry.admit(&t);
    assert!(admission.allow);
    assert_eq!(admission.state, "warning");
    // Plan change switches the profile.
    let plan = Input::Entitlement {
        observed: None,
        marketplace: None,
        event: EntitlementEvent::PlanChanged,
        id: None,
        plan: Some(ggen_runtime::sku::ProfileId(1)),
    };
    registry.apply(&t, plan, at(3)).unwrap();
    assert_eq!(registry.view(&t).unwrap().profile, "relaxed");
    let cancelled = registry
        .apply(&t, ev(EntitlementEvent::Cancelled), at(4))
        .unwrap();
    assert_eq!(cancelled.state, State::Refusing);
    assert_eq!(registry.admit(&t).reason, "entitlement_inactive");
    assert!(
        registry
            .apply(&t, ev(EntitlementEvent::Approved), at(5))
            .unwrap()
            .refused
            .is_some()
    );
    assert_eq!(
        registry.view(&t).unwrap().entitlement,
        EntitlementState::Cancelled
    );
}

#[test]
fn rejected_input_and_stale_results_change_no_state() {
    let (ledger, registry) = open();
    let t = tenant("acme");
    registry.apply(&t, signal(LOAD, 60.0, None), at(0)).unwrap();
    registry.apply(&t, signal(LOAD, 60.0, None), at(1)).unwrap();
    let before = registry.states();
    let rejected = Input::Rejected {
        reason: "value `-1` below min `0`".into(),
        event: serde_json::json!({"signal": "load", "value": -1.5}),
    };
    let applied = registry.apply(&t, rejected, at(2)).unwrap();
    assert_eq!((applied.receipts, applied.state), (1, State::Warning));
    let last = receipts(&ledger, &t).pop().unwrap();
    assert_eq!(last["kind"], "rejected");
    assert_eq!(last["event"]["input"]["value"], "-1.5");
    let stale = Input::ActionResult {
        key: IdempotencyKey::parse(&OPEN, "someone-else:1:throttle").unwrap(),
        ok: false,
        detail: None,
    };
    assert_eq!(
        registry.apply(&t, stale, at(3)).unwrap().state,
        State::Warning
    );
    let after = registry.states();
    assert_eq!(before[&t].governor, after[&t].governor);
    assert_eq!(after[&t].seq, before[&t].seq + 2);
}

#[test]
fn operator_reset_returns_to_stable_and_undoes() {
    let (_ledger, registry) = open();
    let t = tenant("acme");
    registry
        .apply(&t, signal(AVAIL, 90.0, None), at(0))
        .unwrap();
    let reset = registry
        .apply(
            &t,
            Input::Reset {
                reason: "ops".into(),
            },
            at(1),
        )
        .unwrap();
    assert_eq!(reset.state, State::Stable);
    let undo: Vec<_> = reset
        .dispatches
        .iter()
        .map(|d| (d.key.action, d.undo))
        .collect();
    assert_eq!(undo, vec![(super::sku::UNTHROTTLE, true)]);
    assert!(registry.view(&t).unwrap().in_flight.is_empty());
    // Cooldown history survives the reset: both actions still cool down.
    let again = registry
        .apply(&t, signal(AVAIL, 90.0, None), at(2))
        .unwrap();
    assert_eq!((again.state, again.dispatches.len()), (State::Warning, 0));
    // After the cooldown both run again (4 of the hourly budget of 4).
    let later = registry
        .apply(&t, signal(AVAIL, 90.0, None), at(60))
        .unwrap();
    assert_eq!(later.dispatches.len(), 2);
    assert!(matches!(later.state, State::Intervening { .. }));
    registry
        .apply(
            &t,
            Input::Reset {
                reason: "ops".into(),
            },
            at(61),
        )
        .unwrap();
    // The budget is spent for the rest of the hour.
    let blocked = registry
        .apply(&t, signal(AVAIL, 90.0, None), at(200))
        .unwrap();
    assert_eq!(
        (blocked.state, blocked.dispatches.len()),
        (State::Warning, 0)
    );
}

#[test]
fn concurrent_tenants_keep_their_chains() {
    let (ledger, registry) = open();
    let registry = Arc::new(registry);
    let threads: Vec<_> = (0..4)
        .map(|worker| {
            let registry = registry.clone();
            std::thread::spawn(move || {
                for i in 0..2000i64 {
                    let t = tenant(&format!("t{}", (i * 7 + worker) % 50));
                    let value = [10.0, 60.0, 120.0, 30.0][(i % 4) as usize];
                    let id = format!("w{worker}-{i}");
                    registry
                        .apply(&t, signal(LOAD, value, Some(&id)), at(i))
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(registry.len(), 50);
    let report = ledger.verify().unwrap();
    assert_eq!(report.first_bad, None);
    assert_eq!(report.tenants, 50);
    let total: u64 = registry.states().values().map(|s| s.seq).sum();
    assert_eq!(report.receipts, total);
    assert!(total >= 8000);
    let counts: usize = registry.states_count().iter().map(|(_, n)| n).sum();
    assert_eq!(counts, 50);
    let fresh = Registry::new(&OPEN, ledger.clone());
    fresh.recover().unwrap();
    assert_eq!(fresh.states(), registry.states());
}

#[test]
fn checkpoint_and_recover_round_trip() {
    let (ledger, registry) = open();
    for i in 0..20i64 {
        let t = tenant(&format!("t{}", i % 5));
        registry
            .apply(
                &t,
                signal(LOAD, 60.0 + i as f64, Some(&format!("a{i}"))),
                at(i),
            )
            .unwrap();
    }
    assert_eq!(registry.checkpoint().unwrap(), 5);
    // After the checkpoint: more records, one new tenant.
    for i in 20..30i64 {
        let t = tenant(&format!("t{}", i % 6));
        registry
            .apply(&t, signal(AVAIL, 90.0, Some(&format!("a{i}"))), at(i))
            .unwrap();
    }
    let fresh = Registry::new(&OPEN, ledger.clone());
    let stats = fresh.recover().unwrap();
    assert_eq!(stats.from_checkpoint, 5);
    assert!(stats.replayed > 0 && stats.replayed == stats.records - stats.skipped);
    assert_eq!(stats.diverged, 0);
    assert_eq!(stats.tenants, 6);
    assert_eq!(fresh.states(), registry.states());
    // Dedupe survives the round trip.
    let dup = fresh
        .apply(&tenant("t1"), signal(LOAD, 1.0, Some("a16")), at(40))
        .unwrap();
    assert!(dup.duplicate);
    // And the recovered registry keeps extending the same chains.
    fresh
        .apply(&tenant("t1"), signal(LOAD, 1.0, None), at(41))
        .unwrap();
    assert_eq!(ledger.verify().unwrap().first_bad, None);
    // A checkpoint of another SKU is refused.
    let other = Registry::new(&ENTITLED, ledger.clone());
    assert!(matches!(
        other.recover(),
        Err(RegistryError::CheckpointSku { .. })
    ));
}

/// 4 threads apply 2000 signals each over 50 tenants while a 5th checkpoints
/// in a loop; every checkpoint must recover (no gap between the blob and the
/// records after its mark), and the last one plus its tail must rebuild the
/// exact states.
fn checkpoints_under_load(ledger: Arc<dyn Ledger>) -> Registry {
    let registry = Arc::new(Registry::new(&OPEN, Arc::clone(&ledger)));
    let done = Arc::new(AtomicBool::new(false));
    let checkpointer = {
        let (registry, ledger, done) = (registry.clone(), ledger.clone(), done.clone());
        std::thread::spawn(move || {
            let mut checkpoints = 0;
            while !done.load(Ordering::Acquire) {
                if registry.appended() == 0 {
                    std::thread::yield_now();
                    continue;
                }
                registry.checkpoint().unwrap();
                checkpoints += 1;
                let fresh = Registry::new(&OPEN, ledger.clone());
                let stats = fresh.recover().unwrap();
                assert!(stats.from_checkpoint > 0, "{stats:?}");
                assert_eq!(stats.diverged, 0, "{stats:?}");
            }
            checkpoints
        })
    };
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let registry = registry.clone();
            std::thread::spawn(move || {
                for i in 0..2000i64 {
                    let t = tenant(&format!("t{}", (i * 7 + worker) % 50));
                    let value = [10.0, 60.0, 120.0, 30.0][(i % 4) as usize];
                    let id = format!("w{worker}-{i}");
                    registry
                        .apply(&t, signal(LOAD, value, Some(&id)), at(i))
                        .unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let checkpoints = checkpointer.join().unwrap();
    assert!(checkpoints >= 1);
    // A tail after the last checkpoint.
    for i in 0..20i64 {
        registry
            .apply(
                &tenant(&format!("t{i}")),
                signal(AVAIL, 90.0, None),
                at(3000 + i),
            )
            .unwrap();
    }
    let fresh = Registry::new(&OPEN, ledger.clone());
    let stats = fresh.recover().unwrap();
    assert!(stats.from_checkpoint > 0, "{stats:?}");
    assert!(stats.replayed >= 20, "{stats:?}");
    assert!(
        stats.records < ledger.verify().unwrap().receipts,
        "{stats:?}"
    );
    assert_eq!(fresh.states(), registry.states());
    assert_eq!(ledger.verify().unwrap().first_bad, None);
    Arc::into_inner(registry).unwrap()
}

#[test]
fn checkpoints_taken_while_applying_recover_exactly() {
    checkpoints_under_load(Arc::new(MemoryLedger::new()));
}

#[test]
fn file_checkpoints_taken_while_applying_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = || FileOptions {
        sync: Arc::new(|_| Ok(())),
        ..FileOptions::default()
    };
    let states = {
        let ledger = Arc::new(FileLedger::open(dir.path(), options()).unwrap());
        checkpoints_under_load(ledger).states()
    };
    let ledger = Arc::new(FileLedger::open(dir.path(), options()).unwrap());
    let fresh = Registry::new(&OPEN, ledger);
    let stats = fresh.recover().unwrap();
    assert!(stats.from_checkpoint > 0, "{stats:?}");
    assert_eq!(fresh.states(), states);
}

#[test]
fn idle_tenants_stay_small() {
    let (_ledger, registry) = open();
    let t = tenant("a-fairly-long-tenant-name.example");
    registry
        .apply(
            &t,
            Input::Entitlement {
                observed: None,
                marketplace: None,
                event: EntitlementEvent::Created,
                id: None,
                plan: None,
            },
            at(0),
        )
        .unwrap();
    assert!(
        registry.tenant_bytes(&t).unwrap() <= 512,
        "{}",
        registry.tenant_bytes(&t).unwrap()
    );
    // After a busy life: ids, rules, dispatch history.
    for i in 0..100i64 {
        let value = if i % 10 < 5 { 90.0 } else { 100.0 };
        registry
            .apply(
                &t,
                signal(AVAIL, value, Some(&format!("message-id-{i:020}"))),
                at(i * 100),
            )
            .unwrap();
        registry
            .apply(&t, signal(LOAD, (i % 7) as f64 * 30.0, None), at(i * 100))
            .unwrap();
    }
    let bytes = registry.tenant_bytes(&t).unwrap();
    assert!(bytes <= 2500, "{bytes} bytes");
}

#[test]
fn every_transition_is_counted_where_it_happens() {
    let ledger = Arc::new(MemoryLedger::new());
    let registry = Registry::new(&ENTITLED, ledger.clone());
    let t = tenant("acme");
    let apply = |input, secs| registry.apply(&t, input, at(secs)).unwrap();
    apply(signal(LOAD, 10.0, None), 0);
    apply(
        Input::Entitlement {
            observed: None,
            marketplace: None,
            event: EntitlementEvent::Approved,
            id: None,
            plan: None,
        },
        1,
    );
    apply(signal(LOAD, 150.0, None), 2);
    apply(signal(LOAD, 150.0, None), 3);
    registry.tick(at(100)).unwrap();
    apply(
        Input::Reset {
            reason: "operator".into(),
        },
        101,
    );
    apply(signal(LOAD, 150.0, None), 102);
    let dispatched = apply(signal(LOAD, 150.0, None), 103);
    let dispatch = dispatched.dispatches.first().expect("an action dispatched");
    apply(
        Input::ActionResult {
            key: dispatch.key.clone(),
            ok: true,
            detail: None,
        },
        104,
    );

    // What the chain says happened, counted independently of the registry.
    let mut expected = [[0u64; 6]; 6];
    let mut kinds = std::collections::BTreeSet::new();
    let index = |name: &Value| State::NAMES.iter().position(|n| name == n).unwrap();
    for receipt in receipts(&ledger, &t) {
        let (from, to) = (index(&receipt["from"]), index(&receipt["to"]));
        if from != to {
            expected[from][to] += 1;
            kinds.insert(receipt["kind"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["action_result", "entitlement", "reset", "signal", "timeout"]
    );
    assert_eq!(registry.transitions(), expected);
}

#[test]
fn a_clock_that_jumped_ahead_does_not_freeze_the_tenant() {
    let (ledger, registry) = open();
    let t = tenant("acme");
    // A decision while the clock was a day ahead...
    registry
        .apply(&t, signal(LOAD, 1.0, None), at(86_400))
        .unwrap();
    // ...then the clock is right again: decisions follow it (a freeze at
    // the future time would hold every cooldown, budget and timer).
    registry.apply(&t, signal(LOAD, 1.0, None), at(10)).unwrap();
    // A small step back (inside the lead) still keeps the chain monotonic.
    registry.apply(&t, signal(LOAD, 1.0, None), at(5)).unwrap();
    let times: Vec<Timestamp> = receipts(&ledger, &t)
        .iter()
        .map(|r| Timestamp::parse(r["at"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(times, [at(86_400), at(10), at(10)]);
}

#[test]
fn the_service_wide_bound_on_dedupe_ids_refuses_new_ids_until_some_expire() {
    let ledger = Arc::new(MemoryLedger::new());
    let options = DedupeOptions {
        window: Duration::from_secs(600),
        capacity: 100,
        max_total: 3,
    };
    let registry = Registry::with_dedupe(&OPEN, ledger.clone(), options);
    let (a, b) = (tenant("a"), tenant("b"));
    registry
        .apply(&a, signal(LOAD, 1.0, Some("a-1")), at(0))
        .unwrap();
    registry
        .apply(&a, signal(LOAD, 1.0, Some("a-2")), at(1))
        .unwrap();
    registry
        .apply(&b, signal(LOAD, 1.0, Some("b-1")), at(2))
        .unwrap();
    assert_eq!(registry.dedupe_ids(), 3);
    // Any tenant's next new id is refused; ids already seen are duplicates;
    // inputs without ids still decide.
    for t in [&a, &b] {
        let refused = registry
            .apply(t, signal(LOAD, 1.0, Some("new")), at(3))
            .unwrap_err();
        assert!(
            matches!(refused, RegistryError::DedupeTotalFull { capacity: 3, .. }),
            "{refused:?}"
        );
        // It names the service's bound, not a tenant that holds no such ids.
        let message = refused.to_string();
        assert!(message.contains("the service holds `3`"), "{message}");
    }
    assert!(
        registry
            .apply(&a, signal(LOAD, 1.0, Some("a-1")), at(3))
            .unwrap()
            .duplicate
    );
    registry.apply(&b, signal(LOAD, 1.0, None), at(3)).unwrap();
    // The timer pass expires idle tenants' ids, which frees the bound.
    registry.tick(at(700)).unwrap();
    assert_eq!(registry.dedupe_ids(), 0);
    registry
        .apply(&b, signal(LOAD, 1.0, Some("new")), at(701))
        .unwrap();
    assert_eq!(registry.dedupe_ids(), 1);
}

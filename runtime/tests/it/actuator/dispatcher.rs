//! The dispatcher end to end through a registry: dispatch once, storm guard
//! and cooldown, undo on recovery, intervention timeout, stale results,
//! queue limit, drain, log-only mode, an action and its undo in order.

use std::time::Duration;

use ggen_runtime::actuator::{ActuatorError, ActuatorMode, DispatcherOptions};
use ggen_runtime::fsm::State;
use ggen_runtime::receipt::{IdempotencyKey, Input};
use ggen_runtime::registry::Dispatch;
use ggen_runtime::sku::ActionId;
use ggen_runtime::tenant::TenantId;

use super::harness::{Harness, at, tenant};
use super::pack::webhook_pack;
use super::target::{Reply, Target};

#[tokio::test]
async fn over_threshold_signals_call_the_webhook_once_then_warning() {
    let target = Target::always(200).await;
    let h = Harness::new(
        webhook_pack("{}".into(), 2000, 0, 0),
        Some(&target.url),
        None,
    );
    let t = tenant("acme");
    assert_eq!(h.signal(&t, 60.0, 0).state, State::Warning);
    let applied = h.signal(&t, 120.0, 1);
    assert_eq!(applied.state.name(), "intervening");
    assert_eq!(applied.dispatches.len(), 1);
    h.settle().await;

    assert_eq!(target.hits().len(), 1);
    assert_eq!(h.state(&t), State::Warning);
    let kinds: Vec<String> = h
        .receipts(&t)
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["signal", "signal", "action", "action_result"]);
    let result = &h.receipts(&t)[3];
    assert_eq!(
        (result["from"].as_str(), result["to"].as_str()),
        (Some("intervening"), Some("warning"))
    );
}

#[tokio::test]
async fn a_storm_calls_the_webhook_once_per_cooldown_and_undo_runs_on_recovery() {
    let target = Target::always(200).await;
    let h = Harness::new(
        webhook_pack("{}".into(), 2000, 0, 300),
        Some(&target.url),
        None,
    );
    let t = tenant("acme");
    // 250 over-threshold readings within one cooldown. The first 20 arrive
    // while the action is in flight (this test's runtime has one thread and
    // the loop does not yield): the storm guard records them.
    for i in 0..20 {
        h.signal(&t, 150.0 + f64::from(i), i64::from(i));
    }
    let guarded = h
        .receipts_of(&t, "signal")
        .iter()
        .filter(|r| r["decision"]["reason"] == "storm_guard")
        .count();
    assert_eq!(guarded, 19);
    h.settle().await;
    // Confirmed: the rest are blocked by the cooldown.
    for i in 20..250 {
        h.signal(&t, 150.0 + f64::from(i), i64::from(i));
    }
    h.settle().await;
    assert_eq!(target.hits().len(), 1, "storm guard + cooldown: one call");

    // Past the cooldown: one more call for another storm.
    for i in 400..500 {
        h.signal(&t, 150.0, i);
        h.settle().await;
    }
    assert_eq!(target.hits().len(), 2);
    assert_eq!(h.state(&t), State::Warning);

    // Recovery: the undo runs, through the same webhook.
    let applied = h.signal(&t, 10.0, 600);
    assert_eq!(applied.state, State::Stable);
    h.settle().await;
    let hits = target.hits();
    assert_eq!(hits.len(), 3);
    let undo = hits[2].json();
    assert_eq!(undo["action"], "unthrottle");
    assert_eq!(undo["undo"], true);
    let results = h.receipts_of(&t, "action_result");
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r["event"]["ok"] == true));
    assert_eq!(h.state(&t), State::Stable);
    assert_eq!(h.dispatcher.stats().dispatched, 3);
}

#[tokio::test]
async fn a_hung_webhook_is_degraded_by_the_intervention_timeout() {
    let target = Target::start(|_| Reply::Hang).await;
    // The attempt itself would hang for a minute: the FSM's 30 s deadline wins.
    let options = DispatcherOptions {
        timer_period: Duration::from_millis(10),
        ..DispatcherOptions::default()
    };
    let h = Harness::with_options(
        webhook_pack("{}".into(), 60_000, 0, 0),
        Some(&target.url),
        None,
        options,
    );
    let t = tenant("acme");
    h.signal(&t, 120.0, 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let timers = {
        let (dispatcher, registry) = (h.dispatcher.clone(), h.registry.clone());
        tokio::spawn(async move {
            dispatcher
                .run_timers(registry, async {
                    let _ = stopped.await;
                })
                .await;
        })
    };
    h.clock.advance_to(at(29));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        h.state(&t).name(),
        "intervening",
        "deadline not reached yet"
    );
    h.clock.advance_to(at(31));
    for _ in 0..500 {
        if h.state(&t).name() == "degraded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.state(&t).name(), "degraded");
    let timeouts = h.receipts_of(&t, "timeout");
    assert_eq!(timeouts.len(), 1);
    assert_eq!(timeouts[0]["event"]["timer"], "intervention_deadline");
    assert_eq!(target.hits().len(), 1);
    assert!(
        h.receipts_of(&t, "action_result").is_empty(),
        "still hanging"
    );
    assert_eq!(h.dispatcher.in_flight(), 1);
    stop.send(()).unwrap();
    timers.await.unwrap();

    // Draining gives up at its deadline while the attempt hangs.
    let err = h
        .dispatcher
        .drain(Duration::from_millis(20))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ActuatorError::DrainTimeout { pending: 1 }),
        "{err}"
    );
}

#[tokio::test]
async fn a_result_after_the_tenant_moved_on_is_recorded_as_stale() {
    let target = Target::start(|_| Reply::Hang).await;
    let h = Harness::new(
        webhook_pack("{}".into(), 200, 0, 0),
        Some(&target.url),
        None,
    );
    let t = tenant("acme");
    h.signal(&t, 120.0, 0);
    // The deadline passes before the attempt times out.
    h.clock.advance_to(at(31));
    h.dispatcher.tick(&h.registry);
    assert_eq!(h.state(&t).name(), "degraded");
    h.settle().await;

    let results = h.receipts_of(&t, "action_result");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["event"]["ok"], false);
    assert_eq!(results[0]["decision"]["reason"], "stale_result");
    assert_eq!(results[0]["from"], results[0]["to"]);
}

#[tokio::test]
async fn log_only_mode_never_calls_the_target() {
    let target = Target::always(200).await;
    let options = DispatcherOptions {
        mode: ActuatorMode::LogOnly,
        ..DispatcherOptions::default()
    };
    let h = Harness::with_options(
        webhook_pack("{}".into(), 2000, 0, 0),
        Some(&target.url),
        None,
        options,
    );
    let t = tenant("acme");
    h.signal(&t, 120.0, 0);
    h.settle().await;
    assert!(target.hits().is_empty());
    assert_eq!(h.state(&t), State::Warning);
    let results = h.receipts_of(&t, "action_result");
    assert!(
        results[0]["event"]["detail"]
            .as_str()
            .unwrap()
            .contains("log adapter")
    );
}

#[tokio::test]
async fn a_full_queue_fails_the_dispatch_without_running_it() {
    let target = Target::always(200).await;
    let options = DispatcherOptions {
        max_queued: 0,
        ..DispatcherOptions::default()
    };
    let h = Harness::with_options(
        webhook_pack("{}".into(), 2000, 0, 0),
        Some(&target.url),
        None,
        options,
    );
    let t = tenant("acme");
    h.signal(&t, 120.0, 0);
    // Recorded synchronously: nothing is in flight.
    assert_eq!(h.dispatcher.in_flight(), 0);
    assert_eq!(h.state(&t).name(), "degraded");
    let results = h.receipts_of(&t, "action_result");
    assert_eq!(
        results[0]["event"]["detail"],
        "actuator queue full: not run"
    );
    assert!(target.hits().is_empty());
    let stats = h.dispatcher.stats();
    assert_eq!((stats.rejected, stats.failed, stats.attempts), (1, 1, 0));
}

#[tokio::test]
async fn many_tenants_run_concurrently_within_the_permit_bound() {
    let target = Target::always(200).await;
    let options = DispatcherOptions {
        concurrency: 4,
        ..DispatcherOptions::default()
    };
    let h = Harness::with_options(
        webhook_pack("{}".into(), 2000, 0, 0),
        Some(&target.url),
        None,
        options,
    );
    let tenants: Vec<_> = (0..40).map(|i| tenant(&format!("t{i}"))).collect();
    for t in &tenants {
        h.signal(t, 120.0, 0);
    }
    h.settle().await;
    assert_eq!(target.hits().len(), 40);
    assert!(tenants.iter().all(|t| h.state(t) == State::Warning));
}

/// Waits until `target` has `n` requests (a few seconds at most).
pub(super) async fn hits_reach(target: &Target, n: usize) {
    for _ in 0..500 {
        if target.hits().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the target got {} requests, not {n}", target.hits().len());
}

/// The actions named by the target's requests, in arrival order.
pub(super) fn called(target: &Target) -> Vec<String> {
    target
        .hits()
        .iter()
        .map(|hit| hit.json()["action"].as_str().unwrap().to_owned())
        .collect()
}

/// A target that answers its first request 500 after `ms`, the others 200.
async fn first_slow_failure(ms: u64) -> Target {
    Target::start(move |n| {
        if n == 0 {
            Reply::After(ms, 500)
        } else {
            Reply::Status(200)
        }
    })
    .await
}

/// A harness whose `throttle` (undone by `unthrottle`) calls `target`,
/// tried up to 4 times.
fn throttling(target: &Target) -> Harness {
    Harness::new(
        webhook_pack("{}".into(), 2000, 3, 0),
        Some(&target.url),
        None,
    )
}

/// The dispatch of action `action` (0: throttle, 1: unthrottle) for
/// `tenant`, decided at `seq`.
fn dispatch(h: &Harness, tenant: &TenantId, seq: u64, action: u16, undo: bool) -> Dispatch {
    let sku = h.registry.pack().sku();
    Dispatch {
        key: IdempotencyKey::new(sku, tenant.clone(), seq, ActionId(action)),
        undo,
    }
}

#[tokio::test]
async fn an_undo_waits_for_the_action_it_undoes_and_stops_its_retries() {
    // The throttle's first attempt is slow and fails: without an order
    // between the two, its retry would land after the unthrottle and
    // leave the tenant throttled while the governor says `stable`.
    let target = first_slow_failure(300).await;
    let h = throttling(&target);
    let t = tenant("acme");
    assert_eq!(h.signal(&t, 120.0, 0).state.name(), "intervening");
    hits_reach(&target, 1).await;
    let reset = Input::Reset {
        reason: "operator".to_owned(),
    };
    let applied = h.registry.apply(&t, reset, at(1)).unwrap();
    assert_eq!(applied.state, State::Stable);
    assert_eq!(applied.dispatches.len(), 1, "the unthrottle");
    h.dispatcher.spawn_all(&h.registry, applied.dispatches);
    h.settle().await;

    assert_eq!(called(&target), ["throttle", "unthrottle"]);
    let hits = target.hits();
    assert!(
        hits[1].at >= hits[0].answered.unwrap(),
        "the unthrottle was sent while the throttle's attempt was under way"
    );
    let results = h.receipts_of(&t, "action_result");
    let detail = |i: usize| results[i]["event"]["detail"].as_str().unwrap().to_owned();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["event"]["ok"], false);
    assert!(
        detail(0).starts_with("superseded by the undo `unthrottle` decided at seq")
            && detail(0).ends_with("not tried again after attempt 1/4"),
        "{}",
        detail(0)
    );
    assert_eq!(results[1]["event"]["ok"], true, "{}", detail(1));
    assert_eq!(h.state(&t), State::Stable);
}

#[tokio::test]
async fn an_action_and_its_undo_run_in_the_order_they_were_decided() {
    // The first throttle's attempt is slow and fails.
    let target = first_slow_failure(200).await;
    let h = throttling(&target);
    let t = tenant("acme");
    // Throttle (3), its undo (6), throttle again (9): the undo waits for
    // the first throttle, then the second stops it before it runs.
    h.dispatcher
        .spawn(&h.registry, dispatch(&h, &t, 3, 0, false));
    hits_reach(&target, 1).await;
    h.dispatcher
        .spawn(&h.registry, dispatch(&h, &t, 6, 1, true));
    h.dispatcher
        .spawn(&h.registry, dispatch(&h, &t, 9, 0, false));
    h.settle().await;
    assert_eq!(called(&target), ["throttle", "throttle"]);
    let hits = target.hits();
    assert!(hits[1].at >= hits[0].answered.unwrap());

    // Spawned in the wrong order (two decisions' durability waits can
    // wake either way round): an undo decided later is already there,
    // so the earlier throttle does not run at all.
    let u = tenant("other");
    let slow = Target::start(|_| Reply::After(100, 200)).await;
    let h = throttling(&slow);
    h.dispatcher
        .spawn(&h.registry, dispatch(&h, &u, 6, 1, true));
    h.dispatcher
        .spawn(&h.registry, dispatch(&h, &u, 3, 0, false));
    h.settle().await;
    assert_eq!(called(&slow), ["unthrottle"]);
    let details: Vec<String> = h
        .receipts_of(&u, "action_result")
        .iter()
        .map(|r| r["event"]["detail"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d == "superseded by the undo `unthrottle` decided at seq 6: not run"),
        "{details:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_drained_no_dispatch_task_holds_the_registry() {
    // A failed attempt and its retry, then the result recorded: every kind
    // of dispatch task has run and ended when `drain` returns.
    let target = first_slow_failure(20).await;
    let h = throttling(&target);
    for i in 0..20 {
        h.signal(&tenant(&format!("t{i}")), 120.0, 0);
    }
    h.settle().await;
    assert_eq!(target.hits().len(), 21);
    assert_eq!(
        std::sync::Arc::strong_count(&h.registry),
        1,
        "a dispatch task still holds the registry after drain"
    );
}

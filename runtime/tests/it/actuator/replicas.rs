//! An action and its undo decided on two replicas sharing one PostgreSQL
//! ledger, each replica with its own dispatcher: their attempts never
//! overlap, and neither lands after a counterpart decided later.

use std::sync::Arc;

use ggen_runtime::actuator::{ActuatorMode, Clock, Dispatcher, DispatcherOptions};
use ggen_runtime::fsm::State;
use ggen_runtime::ledger::{HeldTurn, Ledger, TurnTaken};
use ggen_runtime::pg::shared::SharedPgLedger;
use ggen_runtime::pg::{PgLedger, PgOptions};
use ggen_runtime::receipt::{Input, Via};
use ggen_runtime::registry::{Applied, Registry};
use ggen_runtime::tenant::TenantId;
use serde_json::Value;

use super::dispatcher::{called, hits_reach};
use super::harness::{at, dispatcher, tenant};
use super::pack::{LOAD, webhook_pack};
use super::target::{Reply, Target};
use crate::ledger::postgres::fresh_schema;
use crate::ledger::postgres_turns::{end_turn_sessions, named, throttle_turn};

/// One replica: a registry on its own connection to the shared schema,
/// and a dispatcher calling `target` (`throttle`, undone by
/// `unthrottle`, tried up to 4 times, `timeout_ms` per attempt).
struct Replica {
    registry: Arc<Registry>,
    dispatcher: Dispatcher,
}

impl Drop for Replica {
    fn drop(&mut self) {
        // Its ledger's synchronous clients close on this thread (the
        // dispatcher's tasks let go of the registry before `drain` returns).
        let registry = std::mem::replace(&mut self.registry, placeholder());
        tokio::task::block_in_place(|| drop(registry));
    }
}

/// A registry on a memory ledger, standing in for a dropped replica's.
fn placeholder() -> Arc<Registry> {
    let ledger = Arc::new(ggen_runtime::ledger::memory::MemoryLedger::new());
    Arc::new(Registry::new(webhook_pack("{}".into(), 2000, 3, 0), ledger))
}

impl Replica {
    fn new(url: &str, target: &Target) -> Replica {
        Replica::with(url, target, 10_000, DispatcherOptions::default())
    }

    fn with(url: &str, target: &Target, timeout_ms: u32, options: DispatcherOptions) -> Replica {
        // The synchronous client runs a runtime of its own.
        let ledger =
            tokio::task::block_in_place(|| SharedPgLedger::open(url, PgOptions::default()))
                .unwrap();
        let registry = Arc::new(Registry::new(
            webhook_pack("{}".into(), timeout_ms, 3, 0),
            Arc::new(ledger),
        ));
        registry.attach();
        let dispatcher = dispatcher(Some(&target.url), None, &Clock::manual(at(0)), options);
        Replica {
            registry,
            dispatcher,
        }
    }

    /// Decides `input` for `tenant` at `at(secs)` until committed (taken
    /// again on the other replica's commits), without running its actions.
    fn decide(&self, tenant: &TenantId, input: Input, secs: i64) -> Applied {
        let mut applied = self.registry.apply(tenant, input, at(secs)).unwrap();
        let Some(ticket) = applied.ticket.take() else {
            return applied;
        };
        ticket.clone().wait().unwrap();
        Registry::retaken(&ticket).unwrap_or(applied)
    }

    /// Runs the actions `applied` dispatched.
    fn run(&self, applied: &Applied) {
        self.dispatcher
            .spawn_all(&self.registry, applied.dispatches.clone());
    }

    async fn settle(&self) {
        self.dispatcher
            .drain(std::time::Duration::from_secs(20))
            .await
            .unwrap();
    }
}

fn breach() -> Input {
    Input::Signal {
        signal: LOAD,
        value: 120.0,
        id: None,
        observed: None,
        via: Via::Api,
    }
}

fn reset() -> Input {
    Input::Reset {
        reason: "operator".to_owned(),
    }
}

/// The details of `tenant`'s action results, in seq order.
fn results(url: &str, tenant: &TenantId) -> Vec<(bool, String)> {
    // The synchronous client runs a runtime of its own.
    let records = tokio::task::block_in_place(|| {
        PgLedger::open_read_only(url)
            .unwrap()
            .read(tenant, 0, usize::MAX)
            .unwrap()
    });
    records
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.bytes).unwrap())
        .filter(|r| r["kind"] == "action_result")
        .map(|r| {
            let event = &r["event"];
            (
                event["ok"] == true,
                event["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits until `tenant`'s dispatch of `action` decided at `seq` asked for
/// its turn (its row in `ggen_action_turns`).
fn recorded(url: &str, tenant: &TenantId, action: &str, seq: u64) {
    let seq = i64::try_from(seq).unwrap();
    // The synchronous client runs a runtime of its own.
    let found = tokio::task::block_in_place(|| {
        let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
        (0..1000).any(|_| {
            let row = client
                .query_opt(
                    "SELECT 1 FROM ggen_action_turns WHERE tenant = $1 AND action = $2 AND seq = $3",
                    &[&tenant.as_str(), &action, &seq],
                )
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(10));
            row.is_some()
        })
    });
    assert!(
        found,
        "the dispatch of {action} decided at seq {seq} never asked for its turn"
    );
}

/// A target answering its first request `status` once opened, every
/// later one 200 at once.
async fn first_held_open(status: u16) -> Target {
    Target::start(move |n| {
        if n == 0 {
            Reply::WhenOpen(status)
        } else {
            Reply::Status(200)
        }
    })
    .await
}

/// `target` was called for the throttle, then for the unthrottle, sent
/// once the throttle's attempt was answered.
fn throttle_answered_before_the_unthrottle_went(target: &Target) {
    assert_eq!(called(target), ["throttle", "unthrottle"]);
    let hits = target.hits();
    assert!(
        hits[1].at >= hits[0].answered.unwrap(),
        "the unthrottle was sent while the throttle's attempt was under way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_decided_on_the_other_replica_waits_for_the_action_and_stops_its_retries() {
    let Some(url) = tokio::task::block_in_place(fresh_schema) else {
        return;
    };
    // The throttle's first attempt fails, answered only once B's
    // unthrottle asked for its turn: unordered, the unthrottle would land
    // during it and the throttle's retry after it, leaving the workload
    // throttled while the governor says `stable`.
    let target = first_held_open(500).await;
    let (a, b) = (Replica::new(&url, &target), Replica::new(&url, &target));
    let t = tenant("acme");
    let throttle = a.decide(&t, breach(), 0);
    assert_eq!(throttle.state.name(), "intervening");
    a.run(&throttle);
    hits_reach(&target, 1).await;
    // The operator's reset reaches B, which undoes what A applied.
    let undo = b.decide(&t, reset(), 1);
    assert_eq!(undo.state, State::Stable);
    assert_eq!(undo.dispatches.len(), 1, "the unthrottle");
    b.run(&undo);
    let seq = undo.dispatches[0].key.seq;
    recorded(&url, &t, "unthrottle", seq);
    target.open();
    a.settle().await;
    b.settle().await;

    throttle_answered_before_the_unthrottle_went(&target);
    // The two results are recorded in either order (both replicas record
    // as their dispatch ends): the throttle's failed, the unthrottle's ok.
    let superseded = format!(
        "superseded by the undo `unthrottle` decided at seq {seq}: not tried again after attempt 1/4"
    );
    let mut results = results(&url, &t);
    results.sort();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0], (false, superseded));
    assert!(results[1].0, "{:?}", results[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_turn_went_with_a_lost_session_still_keeps_its_undo_out() {
    let Some(url) = tokio::task::block_in_place(fresh_schema) else {
        return;
    };
    // The throttle's attempt is answered only when the gate opens; the
    // database session holding its turn is ended meanwhile (a database
    // restart, a failover), which gives the turn's lock back.
    let target = first_held_open(200).await;
    let (a_url, a_name) = named(&url);
    let (a, b) = (Replica::new(&a_url, &target), Replica::new(&url, &target));
    let t = tenant("acme");
    let throttle = a.decide(&t, breach(), 0);
    a.run(&throttle);
    hits_reach(&target, 1).await;
    let killed = tokio::task::block_in_place(|| end_turn_sessions(&url, &a_name));
    assert_eq!(killed, 1, "A's session holding the turn");
    // The reset reaches B; its unthrottle must not go while the throttle's
    // request may still land.
    let undo = b.decide(&t, reset(), 1);
    b.run(&undo);
    recorded(&url, &t, "unthrottle", undo.dispatches[0].key.seq);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    target.open();
    a.settle().await;
    b.settle().await;

    throttle_answered_before_the_unthrottle_went(&target);
    let results = results(&url, &t);
    assert!(results.iter().all(|(ok, _)| *ok), "{results:?}");
    // A's give-back ended its attempt's mark, on a new connection.
    let marked: i64 = tokio::task::block_in_place(|| {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        client
            .query_one(
                "SELECT count(*) FROM ggen_action_turns WHERE attempt_until IS NOT NULL",
                &[],
            )
            .unwrap()
            .get(0)
    });
    assert_eq!(marked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_whose_undo_already_ran_on_the_other_replica_does_not_run() {
    let Some(url) = tokio::task::block_in_place(fresh_schema) else {
        return;
    };
    let target = Target::always(200).await;
    let (a, b) = (Replica::new(&url, &target), Replica::new(&url, &target));
    let t = tenant("acme");
    // A decides the throttle but its dispatch is late (its durability
    // wait woke after B's); B's reset undoes it, and B's unthrottle runs.
    let throttle = a.decide(&t, breach(), 0);
    let undo = b.decide(&t, reset(), 1);
    b.run(&undo);
    b.settle().await;
    a.run(&throttle);
    a.settle().await;

    assert_eq!(called(&target), ["unthrottle"]);
    let seq = undo.dispatches[0].key.seq;
    let details: Vec<String> = results(&url, &t).into_iter().map(|(_, d)| d).collect();
    assert!(
        details.contains(&format!(
            "superseded by the undo `unthrottle` decided at seq {seq}: not run"
        )),
        "{details:?}"
    );

    // A throttle decided after the undo is not held back by it.
    let again = a.decide(&t, breach(), 2);
    assert_eq!(again.dispatches.len(), 1);
    a.run(&again);
    a.settle().await;
    assert_eq!(called(&target), ["unthrottle", "throttle"]);
}

/// `acme`'s throttle decided on `a`, its turn held there (an attempt
/// that never ends, as a stuck replica's would); the undo decided on `b`
/// and run there. The turn is given back once `b` settled.
async fn undo_while_the_throttle_holds_the_turn(a: &Replica, b: &Replica) {
    let held = hold_throttle_turn(a);
    let undo = b.decide(&tenant("acme"), reset(), 1);
    b.run(&undo);
    b.settle().await;
    held.finish();
}

/// `acme`'s throttle decided on `a`, its turn taken there and held.
fn hold_throttle_turn(a: &Replica) -> HeldTurn {
    let t = tenant("acme");
    let throttle = a.decide(&t, breach(), 0);
    let ask = throttle_turn(&t, false, throttle.dispatches[0].key.seq);
    let shared = a.registry.ledger().shared().unwrap();
    match tokio::task::block_in_place(|| shared.take_action_turn(&ask, false)) {
        Ok(TurnTaken::Held(held)) => held,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_whose_turn_stays_held_elsewhere_fails_its_attempts_without_making_them() {
    let Some(url) = tokio::task::block_in_place(fresh_schema) else {
        return;
    };
    let target = Target::always(200).await;
    // 100 ms per attempt: a turn is waited for 1.1 s per attempt.
    let (a, b) = (
        Replica::with(&url, &target, 100, DispatcherOptions::default()),
        Replica::with(&url, &target, 100, DispatcherOptions::default()),
    );
    undo_while_the_throttle_holds_the_turn(&a, &b).await;

    assert!(called(&target).is_empty(), "{:?}", called(&target));
    assert_eq!(
        results(&url, &tenant("acme")),
        [(
            false,
            "not tried: a counterpart's attempt on another replica held the turn of `unthrottle` for 1100 ms (attempt 4/4)".to_owned()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_only_actions_take_no_turns() {
    let Some(url) = tokio::task::block_in_place(fresh_schema) else {
        return;
    };
    let target = Target::always(200).await;
    let (a, b) = (
        Replica::with(&url, &target, 100, DispatcherOptions::default()),
        Replica::with(
            &url,
            &target,
            100,
            DispatcherOptions {
                mode: ActuatorMode::LogOnly,
                ..DispatcherOptions::default()
            },
        ),
    );
    undo_while_the_throttle_holds_the_turn(&a, &b).await;

    let results = results(&url, &tenant("acme"));
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(results[0].0, "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_waiting_for_its_turn_holds_no_permit() {
    let Some(url) = tokio::task::block_in_place(fresh_schema) else {
        return;
    };
    let target = Target::always(200).await;
    // B runs one attempt at a time; its unthrottle for `acme` waits for
    // the turn A holds (3 s per attempt, 4 attempts).
    let one = DispatcherOptions {
        concurrency: 1,
        ..DispatcherOptions::default()
    };
    let (a, b) = (
        Replica::with(&url, &target, 2000, DispatcherOptions::default()),
        Replica::with(&url, &target, 2000, one),
    );
    let held = hold_throttle_turn(&a);
    let t = tenant("acme");
    let undo = b.decide(&t, reset(), 1);
    b.run(&undo);
    recorded(&url, &t, "unthrottle", undo.dispatches[0].key.seq);
    // Meanwhile another tenant's throttle on B runs at once.
    let other = b.decide(&tenant("globex"), breach(), 2);
    b.run(&other);
    hits_reach(&target, 1).await;
    assert_eq!(called(&target), ["throttle"]);
    held.finish();
    b.settle().await;
    assert_eq!(called(&target), ["throttle", "unthrottle"]);
}

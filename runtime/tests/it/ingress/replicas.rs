//! Several replicas on one PostgreSQL schema, in one process: registries
//! over their own `SharedPgLedger`s, decided at explicit times, so races,
//! timers and leases are exercised deterministically. (The same with real
//! governor processes, HTTP and `kill -9` is in `durability.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ggen_runtime::clock::Timestamp;
use ggen_runtime::entitlement::EntitlementEvent;
use ggen_runtime::ledger::{
    ActionTurn, HeldTurn, Ledger, LedgerError, Rejection, SharedLedger, TurnTaken,
};
use ggen_runtime::pg::shared::SharedPgLedger;
use ggen_runtime::pg::{PgLedger, PgOptions};
use ggen_runtime::receipt::{Input, Via};
use ggen_runtime::registry::{Applied, DECISION_ATTEMPTS, Registry, RegistryError, TIMER_LEASE_MS};
use ggen_runtime::sku::{SignalId, TablePack};
use ggen_runtime::tenant::TenantId;
use serde_json::Value;

use super::sku::{GUARD, TINY};
use crate::ledger::postgres::fresh_schema;
use crate::ledger::postgres_turns::{end_turn_sessions, named};

/// The intervention timeout of [`GUARD`], in ms.
const TIMEOUT_MS: i64 = 120_000;

/// A replica as `serve` runs one: overtaken decisions are taken again
/// in its ledger's writer.
fn replica(url: &str) -> Arc<Registry> {
    replica_of(&GUARD, url)
}

/// A replica of `pack` as `serve` runs one.
fn replica_of(pack: &'static TablePack, url: &str) -> Arc<Registry> {
    let ledger = SharedPgLedger::open(url, PgOptions::default()).unwrap();
    let registry = Arc::new(Registry::new(pack, Arc::new(ledger)));
    registry.attach();
    registry
}

/// A replica whose overtaken decisions are refused back to the caller.
fn unattached(url: &str) -> Arc<Registry> {
    let ledger = SharedPgLedger::open(url, PgOptions::default()).unwrap();
    Arc::new(Registry::new(&GUARD, Arc::new(ledger)))
}

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + ms)
}

fn load(value: f64, id: &str) -> Input {
    Input::Signal {
        signal: SignalId(0),
        value,
        id: Some(id.to_owned()),
        observed: None,
        via: Via::Api,
    }
}

/// Decides `input` as the service does: waits until committed, and takes
/// the decision again while another replica's overtakes it.
fn decide(registry: &Registry, tenant: &TenantId, input: Input, now: Timestamp) -> Applied {
    try_decide(registry, tenant, input, now).unwrap()
}

/// [`decide`], with the registry's refusal.
fn try_decide(
    registry: &Registry,
    tenant: &TenantId,
    input: Input,
    now: Timestamp,
) -> Result<Applied, RegistryError> {
    let mut applied = registry.apply(tenant, input.clone(), now)?;
    for _ in 0..DECISION_ATTEMPTS {
        let ticket = applied.ticket.take();
        match ticket.clone().map(|ticket| ticket.wait()) {
            None | Some(Ok(())) => {
                return Ok(ticket
                    .as_ref()
                    .and_then(Registry::retaken)
                    .unwrap_or(applied));
            }
            Some(Err(LedgerError::Rejected(why))) => {
                applied = registry.apply_again(tenant, input.clone(), now, why, applied.epoch)?;
            }
            Some(Err(error)) => panic!("{error}"),
        }
    }
    panic!("still overtaken after {DECISION_ATTEMPTS} attempts");
}

/// Ticks `registry` at `now`: exactly one timer fires, and commits.
fn fire_one(registry: &Registry, now: Timestamp) {
    let fired = registry.tick(now).unwrap();
    assert_eq!(fired.len(), 1);
    let ticket = fired.into_iter().next().unwrap().ticket.unwrap();
    ticket.wait().unwrap();
}

/// Every receipt of `tenant`, parsed, in seq order (checked consecutive).
fn receipts(url: &str, tenant: &TenantId) -> Vec<Value> {
    let ledger = PgLedger::open_read_only(url).unwrap();
    let records = ledger.read(tenant, 0, usize::MAX).unwrap();
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            record.seq,
            i as u64 + 1,
            "{tenant}: seqs are not consecutive"
        );
    }
    records
        .iter()
        .map(|r| serde_json::from_slice(&r.bytes).unwrap())
        .collect()
}

/// `ledger verify` passes: chains, heads, and every stored tenant state
/// against what its receipts replay to.
fn verifies(url: &str) {
    verifies_as(&GUARD, url);
}

/// [`verifies`], for a ledger of `pack`.
fn verifies_as(pack: &'static TablePack, url: &str) {
    let (text, ok) = ggen_runtime::cli::verify_database_report(pack, url, None).unwrap();
    assert!(ok, "{text}");
}

/// How many tenants have a chain, by the heads and by `ggen_tenant_count`.
fn tenants_stored(url: &str) -> (i64, i64) {
    let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM ggen_heads), (SELECT tenants FROM ggen_tenant_count)",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn max_tenants_bounds_the_tenants_of_all_replicas_together() {
    let Some(url) = fresh_schema() else { return };
    // `max_tenants` 2; each replica would hold 2.
    let (a, b) = (replica_of(&TINY, &url), replica_of(&TINY, &url));
    try_decide(&a, &tenant("one"), load(1.0, "s1"), at(0)).unwrap();
    try_decide(&b, &tenant("two"), load(1.0, "s2"), at(0)).unwrap();
    for (replica, name) in [(&a, "three"), (&b, "four")] {
        let refused = try_decide(replica, &tenant(name), load(1.0, "s3"), at(10)).unwrap_err();
        assert!(
            matches!(&refused, RegistryError::TooManyTenants { max: 2, tenant } if tenant.as_str() == name),
            "{refused}"
        );
    }
    // A tenant the ledger has is served by either replica; the refused
    // ones left no trace, and the next new one is refused again.
    try_decide(&a, &tenant("two"), load(2.0, "s4"), at(20)).unwrap();
    try_decide(&b, &tenant("one"), load(2.0, "s5"), at(20)).unwrap();
    assert!(a.view(&tenant("three")).is_none());
    assert!(matches!(
        try_decide(&a, &tenant("five"), load(1.0, "s6"), at(30)),
        Err(RegistryError::TooManyTenants { .. })
    ));
    assert_eq!(tenants_stored(&url), (2, 2));
    verifies_as(&TINY, &url);
}

#[test]
fn a_new_tenant_refused_after_being_taken_again_leaves_nothing_behind() {
    let Some(url) = fresh_schema() else { return };
    // Taken again in the writer (`replica_of`), or under the tenant's lock
    // (a replica without a taker hands the overtaken decision back).
    let attached = replica_of(&TINY, &url);
    let unattached = {
        let ledger = SharedPgLedger::open(&url, PgOptions::default()).unwrap();
        Arc::new(Registry::new(&TINY, Arc::new(ledger)))
    };
    let b = replica_of(&TINY, &url);
    try_decide(&b, &tenant("one"), load(1.0, "s1"), at(0)).unwrap();
    try_decide(&b, &tenant("two"), load(1.0, "s2"), at(0)).unwrap();
    for a in [&attached, &unattached] {
        // Two inputs for a new tenant, the second decided on the first's
        // state before the ledger answered: refused, the second is taken
        // again (it extends a chain the ledger does not have).
        let three = tenant("three");
        let inputs = [load(1.0, "x1"), load(2.0, "x2")];
        let applied = inputs
            .iter()
            .map(|input| a.apply(&three, input.clone(), at(10)).unwrap())
            .collect::<Vec<_>>();
        for (applied, input) in applied.into_iter().zip(inputs) {
            let refused = match applied.ticket.unwrap().wait() {
                Err(LedgerError::Rejected(why)) => a
                    .apply_again(&three, input, at(10), why, applied.epoch)
                    .unwrap_err(),
                other => panic!("{other:?}"),
            };
            assert!(
                matches!(refused, RegistryError::TooManyTenants { .. }),
                "{refused}"
            );
        }
        assert!(a.view(&three).is_none(), "the refused tenant is cached");
        let held: usize = a.states_count().iter().map(|(_, n)| n).sum();
        assert_eq!(held, 0, "the refused tenant is counted");
    }
    assert_eq!(tenants_stored(&url), (2, 2));
    verifies_as(&TINY, &url);
}

#[test]
fn replicas_starting_new_tenants_at_once_start_at_most_max_tenants() {
    let Some(url) = fresh_schema() else { return };
    let replicas = [replica_of(&TINY, &url), replica_of(&TINY, &url)];
    let barrier = std::sync::Barrier::new(16);
    let started: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (replicas, barrier) = (&replicas, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let name = tenant(&format!("new{i}"));
                    match try_decide(&replicas[i % 2], &name, load(1.0, "s"), at(0)) {
                        Ok(_) => true,
                        Err(RegistryError::TooManyTenants { .. }) => false,
                        Err(other) => panic!("{other}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(started.iter().filter(|s| **s).count(), 2, "{started:?}");
    assert_eq!(tenants_stored(&url), (2, 2));
    verifies_as(&TINY, &url);
}

#[test]
fn two_replicas_on_the_same_tenants_never_fork_and_record_each_input_once() {
    let Some(url) = fresh_schema() else { return };
    let replicas = [replica(&url), replica(&url)];
    const TENANTS: usize = 20;
    const PER_THREAD: usize = 150;
    // Four threads, two per replica, on the same tenants at the same time;
    // every input is also sent to the other replica (a redelivery).
    std::thread::scope(|s| {
        for thread in 0..4 {
            let replicas = &replicas;
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let t = tenant(&format!("t{}", (i + thread) % TENANTS));
                    let now = at(i as i64 * 10);
                    let (first, second) = (&replicas[thread % 2], &replicas[1 - thread % 2]);
                    let id = format!("s-{thread}-{i}");
                    let input = match i % 25 {
                        7 => Input::Entitlement {
                            event: EntitlementEvent::Created,
                            id: Some(format!("e-{thread}-{i}")),
                            plan: None,
                            observed: None,
                            marketplace: None,
                        },
                        13 => Input::Reset {
                            reason: "test".to_owned(),
                        },
                        _ => load(if i % 3 == 0 { 150.0 } else { 20.0 }, &id),
                    };
                    let applied = decide(first, &t, input.clone(), now);
                    assert!(!applied.duplicate, "{id}: a first delivery is no duplicate");
                    if !matches!(input, Input::Reset { .. }) {
                        let again = decide(second, &t, input, now);
                        assert!(again.duplicate, "{id}: the redelivery was recorded again");
                        assert_eq!(again.receipts, 0);
                    }
                }
            });
        }
    });
    verifies(&url);
    let mut signals = BTreeMap::<String, usize>::new();
    for t in 0..TENANTS {
        let t = tenant(&format!("t{t}"));
        let records = PgLedger::open_read_only(&url)
            .unwrap()
            .read(&t, 0, usize::MAX)
            .unwrap();
        let receipts = receipts(&url, &t);
        for r in &receipts {
            if r["kind"] == "signal" {
                *signals
                    .entry(r["event"]["id"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
        // Both replicas, brought up to date, agree with the chain's head.
        for registry in &replicas {
            let view = registry.view(&t).unwrap();
            assert_eq!(view.seq, receipts.len() as u64, "{t}");
            assert_eq!(view.hash, hex::encode(records.last().unwrap().hash));
        }
    }
    let expected = 4 * PER_THREAD - 4 * PER_THREAD.div_ceil(25) * 2;
    assert_eq!(signals.len(), expected, "every signal id is in the ledger");
    assert!(signals.values().all(|n| *n == 1), "a signal recorded twice");
}

#[test]
fn a_decision_on_a_stale_state_is_refused_then_taken_again_under_the_lock() {
    let Some(url) = fresh_schema() else { return };
    let (a, b) = (unattached(&url), unattached(&url));
    let t = tenant("acme");
    // B caches the tenant, then A moves it on twice.
    decide(&b, &t, load(20.0, "first"), at(0));
    decide(&a, &t, load(150.0, "breach"), at(10));
    let after_a = a.view(&t).unwrap();
    assert_eq!(after_a.state.name(), "intervening");
    // B's cache still says stable: its decision is refused, then retaken
    // on A's state (intervening, with A's action in flight).
    let mut applied = b.apply(&t, load(20.0, "calm"), at(20)).unwrap();
    let refused = applied.ticket.take().unwrap().wait().unwrap_err();
    assert!(matches!(refused, LedgerError::Rejected(_)), "{refused}");
    let again = b
        .apply_again(
            &t,
            load(20.0, "calm"),
            at(20),
            rejection(&refused),
            applied.epoch,
        )
        .unwrap();
    assert_eq!(again.from.name(), "intervening");
    again.ticket.unwrap().wait().unwrap();
    let receipts = receipts(&url, &t);
    assert_eq!(receipts.last().unwrap()["event"]["id"], "calm");
    assert_eq!(receipts.last().unwrap()["from"], "intervening");
    verifies(&url);
}

#[test]
fn a_decision_on_a_stale_state_is_taken_again_in_the_writer() {
    let Some(url) = fresh_schema() else { return };
    let (a, b) = (replica(&url), replica(&url));
    let t = tenant("acme");
    decide(&b, &t, load(20.0, "first"), at(0));
    decide(&a, &t, load(150.0, "breach"), at(10));
    // B's cache still says stable; its writer decides again on A's state
    // and commits that: the ticket resolves, reporting the new decision.
    let mut applied = b.apply(&t, load(20.0, "calm"), at(20)).unwrap();
    assert_eq!(applied.from.name(), "stable", "decided on the stale cache");
    let ticket = applied.ticket.take().unwrap();
    ticket.clone().wait().unwrap();
    let retaken = Registry::retaken(&ticket).expect("taken again");
    assert_eq!(retaken.from.name(), "intervening");
    let receipts = receipts(&url, &t);
    assert_eq!(receipts.last().unwrap()["event"]["id"], "calm");
    assert_eq!(receipts.last().unwrap()["from"], "intervening");
    assert_eq!(b.view(&t).unwrap().seq, receipts.len() as u64);
    verifies(&url);
}

fn rejection(error: &LedgerError) -> ggen_runtime::ledger::Rejection {
    match error {
        LedgerError::Rejected(why) => *why,
        other => panic!("not a rejection: {other}"),
    }
}

#[test]
fn an_action_result_at_the_other_replica_confirms_the_action() {
    let Some(url) = fresh_schema() else { return };
    let (a, b) = (replica(&url), replica(&url));
    let t = tenant("acme");
    let decided = decide(&a, &t, load(150.0, "breach"), at(0));
    let key = decided.dispatches[0].key.clone();
    // The result reaches B, which never saw the tenant.
    let applied = decide(
        &b,
        &t,
        Input::ActionResult {
            key,
            ok: true,
            detail: Some("200".to_owned()),
        },
        at(50),
    );
    let receipts = receipts(&url, &t);
    let last = receipts.last().unwrap();
    assert_eq!(last["kind"], "action_result");
    assert_ne!(last["decision"]["reason"], "stale_result", "{last}");
    let view = b.view(&t).unwrap();
    assert!(view.in_flight.iter().all(|f| f.confirmed), "{view:?}");
    assert_eq!(applied.state, view.state);
    assert_eq!(a.view(&t).unwrap(), view, "A sees what B committed");
}

#[test]
fn a_due_timer_fires_once_across_replicas_and_a_dead_claimer_s_timer_still_fires() {
    let Some(url) = fresh_schema() else { return };
    let (a, b) = (replica(&url), replica(&url));
    let (t, u) = (tenant("acme"), tenant("beta"));
    decide(&a, &t, load(150.0, "t-breach"), at(0));
    decide(&a, &u, load(150.0, "u-breach"), at(0));
    // Not due yet: nothing claimed, nothing fired.
    assert!(b.tick(at(TIMEOUT_MS - 1)).unwrap().is_empty());
    // Both replicas tick at once after the deadline: each timer fires once.
    let due = at(TIMEOUT_MS + 1);
    let fired: Vec<Vec<Applied>> = std::thread::scope(|s| {
        let ticks: Vec<_> = [&a, &b]
            .into_iter()
            .map(|r| s.spawn(move || r.tick(due).unwrap()))
            .collect();
        ticks.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for applied in fired.into_iter().flatten() {
        if let Some(ticket) = applied.ticket {
            // A second firing of one timer could only be refused.
            match ticket.wait() {
                Ok(()) | Err(LedgerError::Rejected(_)) => {}
                Err(error) => panic!("{error}"),
            }
        }
    }
    for tenant in [&t, &u] {
        let timers = receipts(&url, tenant)
            .into_iter()
            .filter(|r| r["kind"] == "timeout")
            .count();
        assert_eq!(timers, 1, "{tenant}: one timer receipt");
    }
    // A replica that claims a due timer and dies: the claim keeps the
    // others away for the lease, then they fire it.
    let v = tenant("gamma");
    decide(&a, &v, load(150.0, "v-breach"), at(0));
    let later = TIMEOUT_MS + 10_000;
    {
        let dying = SharedPgLedger::open(
            &url,
            PgOptions {
                max_batch: 16,
                ..PgOptions::default()
            },
        )
        .unwrap();
        let claimed = dying
            .claim_due(at(later).as_millis(), TIMER_LEASE_MS, 16)
            .unwrap();
        assert_eq!(claimed, std::slice::from_ref(&v));
    }
    assert!(
        b.tick(at(later + 1)).unwrap().is_empty(),
        "claimed elsewhere"
    );
    fire_one(&b, at(later + TIMER_LEASE_MS));
    let timers: Vec<Value> = receipts(&url, &v)
        .into_iter()
        .filter(|r| r["kind"] == "timeout")
        .collect();
    assert_eq!(timers.len(), 1);
    verifies(&url);
}

#[test]
fn a_storm_over_both_replicas_dispatches_once_per_cooldown_within_the_budget() {
    let Some(url) = fresh_schema() else { return };
    let replicas = [replica(&url), replica(&url)];
    let t = tenant("storm");
    // Two hours of breaching readings every 10 s, spread over both
    // replicas from four threads; every dispatch is confirmed at once.
    const STEP_MS: i64 = 10_000;
    const STEPS: i64 = 720;
    std::thread::scope(|s| {
        for thread in 0..4i64 {
            let (replicas, t) = (&replicas, &t);
            s.spawn(move || {
                for step in (thread..STEPS).step_by(4) {
                    let registry = &replicas[usize::try_from(step % 2).unwrap()];
                    let now = at(step * STEP_MS);
                    let applied = decide(registry, t, load(150.0, &format!("storm-{step}")), now);
                    for dispatch in applied.dispatches {
                        decide(
                            registry,
                            t,
                            Input::ActionResult {
                                key: dispatch.key,
                                ok: true,
                                detail: None,
                            },
                            now,
                        );
                    }
                }
            });
        }
    });
    verifies(&url);
    let actions: Vec<i64> = receipts(&url, &t)
        .into_iter()
        .filter(|r| r["kind"] == "action" && r["undo"] != true)
        .map(|r| {
            Timestamp::parse(r["at"].as_str().unwrap())
                .unwrap()
                .as_millis()
        })
        .collect();
    assert!(!actions.is_empty(), "the storm dispatched nothing");
    // No two dispatches within the 300 s cooldown, at most 6 in any hour.
    for pair in actions.windows(2) {
        assert!(
            pair[1] - pair[0] >= 300_000,
            "two actions within the cooldown: {actions:?}"
        );
    }
    for (i, first) in actions.iter().enumerate() {
        let in_hour = actions[i..]
            .iter()
            .take_while(|a| **a < first + 3_600_000)
            .count();
        assert!(
            in_hour <= 6,
            "{in_hour} actions within an hour: {actions:?}"
        );
    }
    let distinct: BTreeSet<i64> = actions.iter().copied().collect();
    assert_eq!(distinct.len(), actions.len());
}

#[test]
fn a_rewritten_stored_state_is_reported_by_verify() {
    let Some(url) = fresh_schema() else { return };
    let a = replica(&url);
    decide(&a, &tenant("acme"), load(150.0, "breach"), at(0));
    decide(&a, &tenant("beta"), load(20.0, "calm"), at(0));
    verifies(&url);
    // Keep every head, rewrite acme's state to stable (as if its
    // intervention never happened).
    let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    client
        .execute(
            "UPDATE ggen_heads SET state = convert_to(
                 replace(convert_from(state, 'UTF8'), '\"intervening\"', '\"stable\"'), 'UTF8')
             WHERE tenant = 'acme'",
            &[],
        )
        .unwrap();
    let (text, ok) = ggen_runtime::cli::verify_database_report(&GUARD, &url, None).unwrap();
    assert!(!ok, "{text}");
    assert!(text.contains("tenant `acme`"), "{text}");
}

#[test]
fn a_copied_ledger_is_replayed_on_load_and_its_timers_found() {
    let Some(url) = fresh_schema() else { return };
    // A file ledger with a breaching tenant (a timer due) and ids.
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = ggen_runtime::ledger::file::FileLedger::open(
            dir.path(),
            ggen_runtime::ledger::file::FileOptions::default(),
        )
        .unwrap();
        let registry = Registry::new(&GUARD, Arc::new(ledger));
        for i in 0..5 {
            let applied = registry
                .apply(&tenant("acme"), load(20.0, &format!("c{i}")), at(i))
                .unwrap();
            applied.ticket.unwrap().wait().unwrap();
        }
        let applied = registry
            .apply(&tenant("acme"), load(150.0, "c-breach"), at(10))
            .unwrap();
        applied.ticket.unwrap().wait().unwrap();
    }
    use ggen_runtime::store::Location;
    ggen_runtime::pg::copy::copy(
        &Location::Dir(dir.path().to_path_buf()),
        &Location::Database(url.clone()),
    )
    .unwrap();
    let replica = replica(&url);
    let t = tenant("acme");
    // Loading replays the copied receipts (no stored state); doing it
    // again counts the ids once, not once per load.
    for _ in 0..3 {
        let view = replica.view(&t).unwrap();
        assert_eq!(view.state.name(), "intervening");
        assert_eq!(replica.dedupe_ids(), 6);
    }
    // A copied id is a duplicate here too.
    let again = decide(&replica, &t, load(20.0, "c3"), at(20));
    assert!(again.duplicate);
    // The copied tenant's timer was found and fires.
    fire_one(&replica, at(TIMEOUT_MS + 100));
    assert_eq!(replica.view(&t).unwrap().state.name(), "degraded");
    verifies(&url);
}

#[test]
fn verify_beside_committing_replicas_sees_one_consistent_snapshot() {
    let Some(url) = fresh_schema() else { return };
    let replicas = [replica(&url), replica(&url)];
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for (n, registry) in replicas.iter().enumerate() {
            let stop = &stop;
            s.spawn(move || {
                for i in 0..2_000i64 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let t = tenant(&format!("v{}", i % 4));
                    decide(registry, &t, load(20.0, &format!("v-{n}-{i}")), at(i));
                }
            });
        }
        // Heads move on while each verify streams the chains.
        for _ in 0..10 {
            verifies(&url);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    verifies(&url);
}

/// A read token issued through one replica opens the tenant's receipts on
/// the other at once, and a revocation through the other closes it on the
/// first: the tokens are part of the committed state every replica loads.
#[test]
fn a_read_token_issued_on_one_replica_is_honoured_and_revoked_on_the_other() {
    use ggen_runtime::receipt::AccessChange;
    let Some(url) = fresh_schema() else { return };
    let (a, b) = (replica(&url), replica(&url));
    let t = tenant("acme");
    decide(&a, &t, load(20.0, "first"), at(0));
    // B has the tenant cached before the token exists.
    assert_eq!(b.token_digest(&t, "0123456789abcdef"), None);
    let issue = Input::Access {
        change: AccessChange::Issue,
        token: "0123456789abcdef".to_owned(),
        digest: Some("ab".repeat(32)),
    };
    decide(&a, &t, issue, at(1));
    assert_eq!(
        b.token_digest(&t, "0123456789abcdef"),
        Some("ab".repeat(32))
    );
    assert_eq!(b.tokens(&t), Some(vec!["0123456789abcdef".to_owned()]));
    let revoke = Input::Access {
        change: AccessChange::Revoke,
        token: "0123456789abcdef".to_owned(),
        digest: None,
    };
    decide(&b, &t, revoke, at(2));
    assert_eq!(a.token_digest(&t, "0123456789abcdef"), None);
    assert_eq!(a.tokens(&t), Some(Vec::new()));
}

#[test]
fn a_duplicate_found_when_taken_again_answers_with_the_committed_tenant() {
    let Some(url) = fresh_schema() else { return };
    let (one, two) = (replica(&url), replica(&url));
    let t = tenant("acme");
    decide(&one, &t, load(1.0, "first"), at(0));
    // The other replica records the event first, on top of the first.
    decide(&two, &t, load(2.0, "twice"), at(1));
    // The same event reaches the first replica, which has not seen its id:
    // decided on its stale cache, overtaken, taken again in the writer on
    // the committed tenant, and refused there as the duplicate it is.
    let applied = one.apply(&t, load(2.0, "twice"), at(2)).unwrap();
    let refused = applied.ticket.clone().unwrap().wait().unwrap_err();
    assert!(
        matches!(refused, LedgerError::Rejected(Rejection::Duplicate)),
        "{refused}"
    );
    let again = one
        .apply_again(
            &t,
            load(2.0, "twice"),
            at(2),
            Rejection::Duplicate,
            applied.epoch,
        )
        .unwrap();
    assert!(again.duplicate);
    // The answer is the tenant as committed (2 receipts), not the decision
    // taken again that was never written.
    assert_eq!(receipts(&url, &t).len(), 2);
    assert_eq!(again.last_seq, 2);
    // And the next decision on that replica extends the committed chain.
    decide(&one, &t, load(3.0, "after"), at(3));
    assert_eq!(receipts(&url, &t).len(), 3);
    verifies(&url);
}

/// `acme`'s `throttle` (or its undo `unthrottle`) decided at `seq`, asking
/// for its turn.
fn throttle_turn(undo: bool, seq: u64) -> ActionTurn {
    crate::ledger::postgres_turns::throttle_turn(&tenant("acme"), undo, seq)
}

/// [`throttle_turn`]s whose attempts last `attempt_ms` at most.
fn throttle_turns_of(attempt_ms: u32) -> impl Fn(bool, u64) -> ActionTurn {
    move |undo, seq| ActionTurn {
        attempt_ms,
        ..throttle_turn(undo, seq)
    }
}

#[test]
fn an_action_turn_is_held_by_one_replica_at_a_time_and_a_dead_one_gives_it_back() {
    let Some(url) = fresh_schema() else { return };
    // B's sessions are told apart from every other test's by their name.
    let (b_url, b_name) = named(&url);
    let (a, b, c) = (
        SharedPgLedger::open(&url, PgOptions::default()).unwrap(),
        SharedPgLedger::open(&b_url, PgOptions::default()).unwrap(),
        SharedPgLedger::open(&url, PgOptions::default()).unwrap(),
    );
    let take =
        |ledger: &SharedPgLedger, turn: ActionTurn| ledger.take_action_turn(&turn, false).unwrap();
    let TurnTaken::Held(throttling) = take(&a, throttle_turn(false, 3)) else {
        panic!("a free turn was not taken");
    };
    // Another tenant's turn is its own.
    let other = crate::ledger::postgres_turns::throttle_turn(&tenant("globex"), true, 4);
    assert!(matches!(take(&b, other), TurnTaken::Held(_)));
    // The undo decided at 5 waits for the throttle's attempt, but is
    // recorded: the throttle decided at 3 makes no further attempt.
    assert!(matches!(take(&b, throttle_turn(true, 5)), TurnTaken::Busy));
    assert!(matches!(
        b.take_action_turn(&throttle_turn(true, 5), true).unwrap(),
        TurnTaken::Busy
    ));
    throttling.finish();
    match a.take_action_turn(&throttle_turn(false, 3), true).unwrap() {
        TurnTaken::Superseded { action, seq } => {
            assert_eq!((action.as_str(), seq), ("unthrottle", 5))
        }
        other => panic!("the throttle was not superseded: {other:?}"),
    }
    // The undo's attempt may last 1.5 s.
    let undo_5 = throttle_turns_of(1_500)(true, 5);
    let taken_at = std::time::Instant::now();
    let TurnTaken::Held(undoing) = b.take_action_turn(&undo_5, true).unwrap() else {
        panic!("the turn given back was not taken");
    };
    // A throttle decided later is not held back by the undo's record,
    // only by its attempt; the replica attempting it dies (its session
    // ends), and its turn is free again once the attempt's 1.5 s are up
    // (a request it sent may still land until then).
    assert!(matches!(take(&c, throttle_turn(false, 9)), TurnTaken::Busy));
    assert_eq!(
        end_turn_sessions(&url, &b_name),
        1,
        "one of B's sessions holds a turn"
    );
    let taken =
        (0..500).find_map(
            |_| match c.take_action_turn(&throttle_turn(false, 9), true).unwrap() {
                TurnTaken::Held(held) => Some(held),
                TurnTaken::Busy => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                }
                superseded @ TurnTaken::Superseded { .. } => panic!("{superseded:?}"),
            },
        );
    assert!(taken.is_some(), "the dead session's turn stayed held");
    assert!(
        taken_at.elapsed() >= std::time::Duration::from_millis(1_500),
        "the dead session's turn was taken while its attempt may have been under way"
    );
    taken.unwrap().finish();
    // (The give-back is sent to C's thread: let it run.)
    assert!(matches!(take(&c, other_tenant_turn()), TurnTaken::Held(_)));
    // B, connected again, holds the turn for an undo decided later; the
    // give-back of the turn its dead session held must not free it.
    let TurnTaken::Held(_again) = take(&b, throttle_turn(true, 10)) else {
        panic!("B could not take the turn on its new session");
    };
    undoing.finish();
    // (The give-back is sent to B's thread: let it run.)
    assert!(matches!(take(&b, other_tenant_turn()), TurnTaken::Held(_)));
    assert!(matches!(
        take(&c, throttle_turn(false, 11)),
        TurnTaken::Busy
    ));
    // And an undo decided before a recorded throttle never runs after it.
    assert!(matches!(
        take(&b, throttle_turn(true, 8)),
        TurnTaken::Superseded { seq: 11, .. }
    ));
}

/// Waits until `ledger`'s turns thread ran the give-backs sent to it (it
/// runs them before its next ask: another tenant's).
fn given_back(ledger: &SharedPgLedger) {
    let _ = ledger
        .take_action_turn(&other_tenant_turn(), false)
        .unwrap();
}

/// Polls `ask` on `ledger` until its turn is taken (10 s at most).
fn taken_eventually(ledger: &SharedPgLedger, ask: &ActionTurn) -> HeldTurn {
    for _ in 0..500 {
        match ledger.take_action_turn(ask, true).unwrap() {
            TurnTaken::Held(held) => return held,
            TurnTaken::Busy => std::thread::sleep(std::time::Duration::from_millis(20)),
            superseded @ TurnTaken::Superseded { .. } => panic!("{superseded:?}"),
        }
    }
    panic!("the turn stayed taken");
}

#[test]
fn a_turn_given_back_before_its_attempt_ended_keeps_the_counterparts_out_until_its_time_is_up() {
    let Some(url) = fresh_schema() else { return };
    let (a, b) = (
        SharedPgLedger::open(&url, PgOptions::default()).unwrap(),
        SharedPgLedger::open(&url, PgOptions::default()).unwrap(),
    );
    // Attempts of 1 s at most.
    let turn = throttle_turns_of(1_000);
    // An attempt that ended: its counterpart goes at once.
    let TurnTaken::Held(held) = a.take_action_turn(&turn(false, 1), false).unwrap() else {
        panic!("a free turn was not taken");
    };
    held.finish();
    given_back(&a);
    let TurnTaken::Held(held) = b.take_action_turn(&turn(true, 2), false).unwrap() else {
        panic!("the turn of an ended attempt was not free");
    };
    held.finish();
    given_back(&b);
    // An attempt abandoned under way (dropped at shutdown): its request
    // may still land, so the counterpart waits for its 1 s.
    let started = std::time::Instant::now();
    let TurnTaken::Held(held) = a.take_action_turn(&turn(false, 3), false).unwrap() else {
        panic!("a free turn was not taken");
    };
    drop(held);
    given_back(&a);
    assert!(matches!(
        b.take_action_turn(&turn(true, 4), false).unwrap(),
        TurnTaken::Busy
    ));
    taken_eventually(&b, &turn(true, 4)).finish();
    assert!(started.elapsed() >= std::time::Duration::from_millis(1_000));
}

#[test]
fn an_attempt_ending_beside_another_of_the_same_action_leaves_the_other_covered() {
    let Some(url) = fresh_schema() else { return };
    let (a_url, a_name) = named(&url);
    let (a, b) = (
        SharedPgLedger::open(&a_url, PgOptions::default()).unwrap(),
        SharedPgLedger::open(&url, PgOptions::default()).unwrap(),
    );
    let turn = throttle_turns_of(1_500);
    // Two throttles of one tenant attempted side by side on A (not
    // counterparts: one process's lanes let them); the later one ends
    // first, then A's session is lost with the earlier one under way.
    let started = std::time::Instant::now();
    let TurnTaken::Held(earlier) = a.take_action_turn(&turn(false, 5), false).unwrap() else {
        panic!("a free turn was not taken");
    };
    let TurnTaken::Held(later) = a.take_action_turn(&turn(false, 9), false).unwrap() else {
        panic!("the same session's second attempt was refused");
    };
    later.finish();
    given_back(&a);
    assert_eq!(
        end_turn_sessions(&url, &a_name),
        1,
        "A's session holding the turns"
    );
    // The earlier throttle's request may still land: the undo waits.
    taken_eventually(&b, &turn(true, 11)).finish();
    assert!(started.elapsed() >= std::time::Duration::from_millis(1_500));
    drop(earlier);
}

/// A turn of another tenant than `acme`.
fn other_tenant_turn() -> ActionTurn {
    crate::ledger::postgres_turns::throttle_turn(&tenant("initech"), true, 1)
}

#[test]
fn the_writer_sets_its_own_session_whatever_the_url_or_role_says() {
    let Some(url) = fresh_schema() else {
        return;
    };
    // Settings a role, a database or the URL may carry: backslashes as
    // escapes in string literals, and every statement bounded to 200 ms.
    let strict =
        format!("{url}%20-c%20standard_conforming_strings%3Doff%20-c%20statement_timeout%3D200");
    let a = replica(&strict);
    let t = tenant("t");
    // The writer's statement spells hashes and ids as `'\x…'` literals.
    decide(&a, &t, load(1.0, "a"), at(1_000));
    // Someone holds the receipt counter well past 200 ms: the writer's
    // update waits for it rather than being cancelled (which would stop
    // the ledger).
    let mut other = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let mut tx = other.transaction().unwrap();
    tx.batch_execute("LOCK TABLE ggen_log IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let decided = std::thread::spawn({
        let a = Arc::clone(&a);
        move || decide(&a, &tenant("t"), load(2.0, "b"), at(2_000)).last_seq
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    tx.commit().unwrap();
    assert_eq!(decided.join().unwrap(), 2);
    assert_eq!(
        a.ledger().check_writable().map_err(|e| e.to_string()),
        Ok(())
    );
    verifies(&url);
}

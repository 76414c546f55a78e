//! The governor's transitions on a one-signal SKU.

use super::*;
use crate::sku::{
    ActionDef, Adapter, Direction, GovernorTiming, IngressDef, ProfileDef, Rule, SignalDef, Sku,
    TablePack,
};

const LOAD: SignalId = SignalId(0);
static SIGNALS: [SignalDef; 1] = [SignalDef {
    name: "load",
    unit: "percent",
    description: "",
    min: None,
    max: None,
    direction: Direction::Above,
}];
static ACTIONS: [ActionDef; 2] = [
    ActionDef {
        name: "throttle",
        adapter: Adapter::Log,
        undo: Some(ActionId(1)),
        params: "{}",
        timeout_ms: 1,
        retries: 0,
    },
    ActionDef {
        name: "unthrottle",
        adapter: Adapter::Log,
        undo: None,
        params: "{}",
        timeout_ms: 1,
        retries: 0,
    },
];
static RULES: [Rule; 1] = [Rule {
    signal: LOAD,
    direction: Direction::Above,
    warn: Some(50.0),
    intervene: Some(100.0),
    refuse: Some(500.0),
    clear: 40.0,
    dwell: 1,
    actions: &[ActionId(0)],
}];
static PROFILES: [ProfileDef; 1] = [ProfileDef {
    name: "standard",
    rules: &RULES,
    cooldown_s: 100,
    max_actions_per_hour: None,
}];
static SKU: Sku = Sku {
    id: "unit",
    name: "Unit",
    version: "1.0.0",
    spec_sha256: "00",
    tenant_attribute: "tenant_id",
    max_tenants: 10,
    signals: &SIGNALS,
    actions: &ACTIONS,
    profiles: &PROFILES,
    default_profile: ProfileId(0),
    governor: GovernorTiming {
        intervention_timeout_s: 10,
        recovery_evaluations: 2,
        degraded_retry_s: 50,
    },
    entitlement_required: false,
    marketplace: None,
    ingress: IngressDef {
        pubsub_audience: None,
        max_body_bytes: 1024,
    },
};

static PACK: TablePack = TablePack(&SKU);

fn s(secs: i64) -> Timestamp {
    Timestamp(secs * 1000)
}

fn signal(g: &mut Governor, value: f64, at: i64, seq: u64) -> Step {
    g.step(
        &PACK,
        Event::Signal {
            signal: LOAD,
            value,
        },
        s(at),
        seq,
    )
    .expect("a signal always steps")
}

#[test]
fn first_event_leaves_boot_like_stable() {
    let mut g = Governor::new(&PACK);
    let step = signal(&mut g, 60.0, 0, 1);
    assert_eq!((step.from, step.to), (State::Boot, State::Warning));
    let mut g = Governor::new(&PACK);
    assert_eq!(g.step(&PACK, Event::Timer, s(0), 1), None, "nothing due");
    assert_eq!(g.state(), State::Boot);
}

#[test]
fn intervention_timeout_retry_and_recovery() {
    let mut g = Governor::new(&PACK);
    let step = signal(&mut g, 120.0, 0, 1);
    assert_eq!(step.to, State::Intervening { deadline: s(10) });
    assert_eq!(
        step.dispatch,
        vec![Dispatched {
            action: ActionId(0),
            undo: false
        }]
    );
    // Storm guard: breaching again dispatches nothing.
    let storm = signal(&mut g, 300.0, 1, 2);
    assert_eq!(
        (storm.decision.reason, storm.dispatch.len()),
        (Reason::StormGuard, 0)
    );
    assert_eq!(g.step(&PACK, Event::Timer, s(9), 3), None);
    let timeout = g.step(&PACK, Event::Timer, s(10), 3).unwrap();
    assert_eq!(timeout.to, State::Degraded { retry_at: s(60) });
    assert_eq!(g.due(), Some(s(60)));
    // Retry at 60 is blocked by the 100 s cooldown: re-armed, named.
    let blocked = g.step(&PACK, Event::Timer, s(60), 4).unwrap();
    assert_eq!(blocked.to, State::Degraded { retry_at: s(110) });
    assert!(
        matches!(blocked.decision.block, Some(Block::Cooldown { until, .. }) if until == s(100))
    );
    let retry = g.step(&PACK, Event::Timer, s(110), 5).unwrap();
    assert_eq!(retry.decision.reason, Reason::DegradedRetry);
    assert_eq!(retry.to, State::Intervening { deadline: s(120) });
    // A stale result (old decision) changes nothing; the right one confirms.
    let stale = Event::ActionResult {
        decided: 1,
        action: ActionId(0),
        ok: true,
    };
    assert_eq!(
        g.step(&PACK, stale, s(111), 6).unwrap().decision.reason,
        Reason::StaleResult
    );
    let ok = Event::ActionResult {
        decided: 5,
        action: ActionId(0),
        ok: true,
    };
    assert_eq!(g.step(&PACK, ok, s(112), 7).unwrap().to, State::Warning);
    // Two clear readings: stable, and the undo runs once.
    assert_eq!(signal(&mut g, 10.0, 113, 8).to, State::Warning);
    let back = signal(&mut g, 10.0, 114, 9);
    assert_eq!(
        (back.to, back.decision.reason),
        (State::Stable, Reason::Recovered)
    );
    assert_eq!(
        back.dispatch,
        vec![Dispatched {
            action: ActionId(1),
            undo: true
        }]
    );
    assert!(g.applied().is_empty());
}

#[test]
fn refuse_level_and_failed_actions() {
    let mut g = Governor::new(&PACK);
    signal(&mut g, 120.0, 0, 1);
    let failed = Event::ActionResult {
        decided: 1,
        action: ActionId(0),
        ok: false,
    };
    assert_eq!(
        g.step(&PACK, failed, s(1), 2).unwrap().to,
        State::Degraded { retry_at: s(51) }
    );
    let refused = signal(&mut g, 600.0, 2, 3);
    assert_eq!(
        (refused.to, refused.decision.reason),
        (State::Refusing, Reason::RefuseLevel)
    );
    assert_eq!(signal(&mut g, 550.0, 3, 4).to, State::Refusing);
    // Below refuse but still past warn: out of refusing into warning, and
    // nothing is undone while the readings still call for it.
    let lifted = signal(&mut g, 60.0, 4, 5);
    assert_eq!(
        (lifted.to, lifted.decision.reason),
        (State::Warning, Reason::RefusalLifted)
    );
    assert!(lifted.dispatch.is_empty());
    assert_eq!(signal(&mut g, 600.0, 5, 6).to, State::Refusing);
    // Every rule normal: stable.
    let lifted = signal(&mut g, 10.0, 6, 7);
    assert_eq!(
        (lifted.to, lifted.decision.reason),
        (State::Stable, Reason::RefusalLifted)
    );
    let reset = g.step(&PACK, Event::Reset, s(7), 8).unwrap();
    assert_eq!((reset.from, reset.to), (State::Stable, State::Stable));
}

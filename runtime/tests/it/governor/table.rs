//! `fsm::TRANSITIONS` against `step`: seeded random walks through the
//! governor of each test SKU record every charted step `step` makes; each
//! must be in the table (for that SKU), and each table edge must be made.

use std::collections::BTreeSet;

use ggen_runtime::actuator::Jitter;
use ggen_runtime::clock::Timestamp;
use ggen_runtime::fsm::{self, Event, Governor};
use ggen_runtime::sku::{
    ActionId, Direction, PolicyPack, ProfileDef, ProfileId, Rule, Sku, TablePack,
};

use super::sku::{AVAIL, ENTITLED, LOAD, OPEN, THROTTLE, TestPack};

/// Rules the test SKU lacks: `load` refuses on its first reading (dwell 1),
/// `avail` intervenes with no action to run (always blocked).
static EDGE_RULES: [Rule; 2] = [
    Rule {
        signal: LOAD,
        direction: Direction::Above,
        warn: Some(50.0),
        intervene: Some(100.0),
        refuse: Some(500.0),
        clear: 40.0,
        dwell: 1,
        actions: &[THROTTLE],
    },
    Rule {
        signal: AVAIL,
        direction: Direction::Below,
        warn: Some(99.0),
        intervene: Some(95.0),
        refuse: None,
        clear: 99.5,
        dwell: 1,
        actions: &[],
    },
];
static EDGE_PROFILES: [ProfileDef; 2] = [
    ProfileDef {
        name: "edge",
        rules: &EDGE_RULES,
        cooldown_s: 60,
        max_actions_per_hour: Some(2),
    },
    ProfileDef {
        name: "edge_too",
        rules: &EDGE_RULES,
        cooldown_s: 0,
        max_actions_per_hour: None,
    },
];
static EDGE_OPEN_SKU: Sku = Sku {
    profiles: &EDGE_PROFILES,
    ..*OPEN.0
};
static EDGE_ENTITLED_SKU: Sku = Sku {
    profiles: &EDGE_PROFILES,
    ..*ENTITLED.0
};
static EDGE_OPEN: TestPack = TablePack(&EDGE_OPEN_SKU);
static EDGE_ENTITLED: TestPack = TablePack(&EDGE_ENTITLED_SKU);

/// Values around every threshold of the test SKU (both profiles).
const LOAD_VALUES: [f64; 9] = [0.0, 39.9, 45.0, 50.0, 100.0, 250.0, 400.0, 499.9, 500.0];
const AVAIL_VALUES: [f64; 5] = [100.0, 99.2, 99.0, 95.0, 50.0];
/// Time steps: none, short, and past each timer and the cooldown/budget window.
const ADVANCE_S: [i64; 6] = [0, 1, 31, 61, 121, 3601];

type Edge = (&'static str, &'static str, &'static str);

/// One random event for `governor`.
fn event(rng: &mut Jitter, governor: &Governor, pack: &TestPack) -> Event {
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    match pick(12) {
        0..=4 => Event::Signal {
            signal: LOAD,
            value: LOAD_VALUES[pick(LOAD_VALUES.len())],
        },
        5 | 6 => Event::Signal {
            signal: AVAIL,
            value: AVAIL_VALUES[pick(AVAIL_VALUES.len())],
        },
        7 | 8 => {
            let (seq, flight) = governor.in_flight();
            let stale = flight.is_empty() || pick(4) == 0;
            let action = if stale {
                ActionId(u16::try_from(pick(pack.sku().actions.len())).unwrap())
            } else {
                flight[pick(flight.len())].action
            };
            Event::ActionResult {
                decided: if stale { seq + 1 } else { seq },
                action,
                ok: pick(3) != 0,
            }
        }
        9 => Event::Timer,
        10 => Event::Entitlement {
            active: pick(3) != 0,
            profile: match pick(4) {
                0 => Some(ProfileId(u16::try_from(pick(2)).unwrap())),
                _ => None,
            },
        },
        _ => Event::Reset,
    }
}

/// The charted steps of many seeded random walks through `pack`'s governor.
fn walk(pack: &'static TestPack, seed: &str) -> BTreeSet<Edge> {
    let mut rng = Jitter::for_key(seed);
    let mut seen = BTreeSet::new();
    for _ in 0..400 {
        let mut governor = Governor::new(pack);
        let mut now = 1_767_225_600_000_i64;
        for seq in 1..=60 {
            now += 1000 * ADVANCE_S[(rng.next_u64() % ADVANCE_S.len() as u64) as usize];
            let event = event(&mut rng, &governor, pack);
            let Some(step) = fsm::step(&mut governor, pack, event, Timestamp(now), seq) else {
                continue;
            };
            if fsm::charted(step.from, step.to, step.decision.reason) {
                seen.insert((
                    step.from.name(),
                    step.to.name(),
                    step.decision.reason.as_str(),
                ));
            }
        }
    }
    seen
}

/// The table's edges for a SKU.
fn table(entitlement_required: bool) -> BTreeSet<Edge> {
    fsm::transitions(entitlement_required)
        .map(|t| (t.from, t.to, t.reason.as_str()))
        .collect()
}

#[test]
fn the_transition_table_is_exactly_what_step_does() {
    for (packs, required) in [
        ([&OPEN, &EDGE_OPEN], false),
        ([&ENTITLED, &EDGE_ENTITLED], true),
    ] {
        let seen: BTreeSet<Edge> = packs
            .iter()
            .flat_map(|pack| walk(pack, "fsm-table"))
            .collect();
        let table = table(required);
        let missing: Vec<_> = seen.difference(&table).collect();
        let unreached: Vec<_> = table.difference(&seen).collect();
        assert!(
            missing.is_empty() && unreached.is_empty(),
            "entitlement required: {required}\nstep makes these, the table lacks them: {missing:#?}\n\
             the table has these, step never made them: {unreached:#?}"
        );
    }
}

#[test]
fn the_transition_table_has_no_repeats() {
    let all: BTreeSet<_> = fsm::TRANSITIONS
        .iter()
        .map(|t| (t.from, t.to, t.reason.as_str()))
        .collect();
    assert_eq!(all.len(), fsm::TRANSITIONS.len());
}

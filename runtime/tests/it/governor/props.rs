//! Property test: random event sequences through the registry agree with the
//! reference model, keep the invariants, and replay to the identical state.

use std::collections::BTreeMap;
use std::sync::Arc;

use ggen_runtime::clock::Timestamp;
use ggen_runtime::entitlement::{EntitlementEvent, EntitlementState};
use ggen_runtime::fsm::State;
use ggen_runtime::ledger::Ledger;
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::receipt::{IdempotencyKey, Input};
use ggen_runtime::registry::{Applied, Registry};
use ggen_runtime::sku::{PolicyPack, ProfileId, SignalId};
use ggen_runtime::tenant::TenantId;
use proptest::prelude::*;

use super::model::{MDispatch, MState, MStep, Model};
use super::sku::{AVAIL, ENTITLED, LOAD, OPEN, TestPack};

/// Values around every threshold of the test SKU.
const LOAD_VALUES: [f64; 13] = [
    0.0, 39.9, 40.0, 45.0, 49.9, 50.0, 75.0, 99.9, 100.0, 250.0, 400.0, 499.9, 500.0,
];
const AVAIL_VALUES: [f64; 10] = [100.0, 99.6, 99.5, 99.2, 99.0, 97.0, 95.1, 95.0, 90.0, 50.0];
const TENANTS: [&str; 3] = ["t0", "t1", "t2"];
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

#[derive(Debug, Clone)]
enum Op {
    Signal {
        tenant: usize,
        load: bool,
        value: usize,
        with_id: bool,
    },
    Repeat {
        tenant: usize,
    },
    Result {
        tenant: usize,
        pick: usize,
        ok: bool,
    },
    Advance {
        secs: i64,
    },
    Tick,
    Entitlement {
        tenant: usize,
        event: usize,
        plan: Option<u16>,
    },
    Reset {
        tenant: usize,
    },
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    let tenant = 0..TENANTS.len();
    prop_oneof![
        8 => (tenant.clone(), any::<bool>(), 0..13usize, any::<bool>()).prop_map(
            |(tenant, load, value, with_id)| Op::Signal { tenant, load, value, with_id }
        ),
        1 => tenant.clone().prop_map(|tenant| Op::Repeat { tenant }),
        4 => (tenant.clone(), any::<usize>(), prop::bool::weighted(0.8))
            .prop_map(|(tenant, pick, ok)| Op::Result { tenant, pick, ok }),
        3 => (0i64..200).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Tick),
        2 => (tenant.clone(), 0..6usize, prop::option::weighted(0.2, 0u16..2))
            .prop_map(|(tenant, event, plan)| Op::Entitlement { tenant, event, plan }),
        1 => tenant.prop_map(|tenant| Op::Reset { tenant }),
        1 => Just(Op::Checkpoint),
    ]
}

/// The registry side of one tenant's history, for building inputs.
#[derive(Debug, Default)]
struct Seen {
    /// Every dispatch so far: action and idempotency key.
    dispatches: Vec<IdempotencyKey>,
    /// The last signal sent with an id.
    last_signal: Option<(SignalId, f64, String)>,
    /// Whether the entitlement was cancelled at the last check.
    cancelled: bool,
}

fn model_state(state: State) -> MState {
    let at = match state {
        State::Intervening { deadline } => Some(deadline.as_millis()),
        State::Degraded { retry_at } => Some(retry_at.as_millis()),
        State::Boot | State::Stable | State::Warning | State::Refusing => None,
    };
    MState {
        name: state.name(),
        at,
    }
}

fn dispatched(pack: &dyn PolicyPack, applied: &Applied) -> Vec<MDispatch> {
    applied
        .dispatches
        .iter()
        .map(|d| (pack.sku().action(d.key.action).name, d.undo))
        .collect()
}

fn join(first: Option<MStep>, second: MStep) -> MStep {
    match first {
        None => second,
        Some(mut step) => {
            step.receipts += second.receipts;
            step.dispatches.extend(second.dispatches);
            step
        }
    }
}

struct Harness {
    pack: &'static TestPack,
    ledger: Arc<MemoryLedger>,
    registry: Registry,
    models: BTreeMap<usize, Model>,
    seen: BTreeMap<usize, Seen>,
    now: i64,
    ids: u64,
}

impl Harness {
    fn new(pack: &'static TestPack) -> Harness {
        let ledger = Arc::new(MemoryLedger::new());
        let registry = Registry::new(pack, ledger.clone());
        Harness {
            pack,
            ledger,
            registry,
            models: BTreeMap::new(),
            seen: BTreeMap::new(),
            now: T0,
            ids: 0,
        }
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.ids += 1;
        format!("{prefix}-{}", self.ids)
    }

    /// Applies `input` to both sides and checks they agree.
    fn apply(
        &mut self,
        tenant: usize,
        input: Input,
        expected: impl FnOnce(&mut Model, i64) -> (bool, MStep),
    ) {
        let id = TenantId::new(TENANTS[tenant]).unwrap();
        let before = self.registry.view(&id).map(|v| v.state);
        let pack = self.pack;
        let model = self
            .models
            .entry(tenant)
            .or_insert_with(|| Model::new(pack));
        let (duplicate, want) = expected(model, self.now);
        let applied = self
            .registry
            .apply(&id, input, Timestamp(self.now))
            .expect("apply");
        assert_eq!(applied.duplicate, duplicate, "duplicate flag");
        assert_eq!(applied.receipts, want.receipts, "receipts written");
        let got = dispatched(pack, &applied);
        assert_eq!(got, want.dispatches, "dispatches");
        assert_eq!(model_state(applied.state), model.state, "state after");
        // Storm guard: nothing new is dispatched while a set is in flight
        // (unless its deadline fired first).
        if let Some(State::Intervening { deadline }) = before
            && self.now < deadline.as_millis()
        {
            assert!(
                got.iter().all(|(_, undo)| *undo),
                "dispatch while in flight: {got:?}"
            );
        }
        self.record(tenant, &applied);
    }

    fn record(&mut self, tenant: usize, applied: &Applied) {
        let seen = self.seen.entry(tenant).or_default();
        for d in &applied.dispatches {
            seen.dispatches.push(d.key.clone());
        }
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Signal {
                tenant,
                load,
                value,
                with_id,
            } => {
                let (signal, value) = if load {
                    (LOAD, LOAD_VALUES[value])
                } else {
                    (AVAIL, AVAIL_VALUES[value % AVAIL_VALUES.len()])
                };
                let id = with_id.then(|| self.next_id("m"));
                if let Some(id) = &id {
                    self.seen.entry(tenant).or_default().last_signal =
                        Some((signal, value, id.clone()));
                }
                let model_id = id.clone();
                self.apply(
                    tenant,
                    Input::Signal {
                        via: Default::default(),
                        signal,
                        value,
                        id,
                        observed: None,
                    },
                    |m, now| {
                        let timer = m.timer(now);
                        (
                            false,
                            join(timer, m.signal(signal, value, model_id.as_deref(), now)),
                        )
                    },
                );
            }
            Op::Repeat { tenant } => {
                let Some((signal, value, id)) =
                    self.seen.get(&tenant).and_then(|s| s.last_signal.clone())
                else {
                    return;
                };
                let input = Input::Signal {
                    via: Default::default(),
                    observed: None,
                    signal,
                    value,
                    id: Some(id.clone()),
                };
                self.apply(tenant, input, |m, now| {
                    if m.duplicate(&id) {
                        return (
                            true,
                            MStep {
                                receipts: 0,
                                dispatches: Vec::new(),
                            },
                        );
                    }
                    let timer = m.timer(now);
                    (false, join(timer, m.signal(signal, value, Some(&id), now)))
                });
            }
            Op::Result { tenant, pick, ok } => {
                let Some(key) = self
                    .seen
                    .get(&tenant)
                    .filter(|s| !s.dispatches.is_empty())
                    .map(|s| s.dispatches[pick % s.dispatches.len()].clone())
                else {
                    return;
                };
                let (decided, action) = (key.seq, key.action);
                let input = Input::ActionResult {
                    key,
                    ok,
                    detail: None,
                };
                self.apply(tenant, input, |m, now| {
                    let timer = m.timer(now);
                    (false, join(timer, m.result(decided, action.0, ok, now)))
                });
            }
            Op::Advance { secs } => self.now += secs * 1000,
            Op::Tick => {
                let mut fired = self.registry.tick(Timestamp(self.now)).expect("tick");
                fired.sort_by(|a, b| a.tenant.cmp(&b.tenant));
                let mut want = Vec::new();
                for (&tenant, model) in &mut self.models {
                    if let Some(step) = model.timer(self.now) {
                        want.push((TENANTS[tenant], step, model.state));
                    }
                }
                let got: Vec<_> = fired
                    .iter()
                    .map(|a| {
                        let step = MStep {
                            receipts: a.receipts,
                            dispatches: dispatched(self.pack, a),
                        };
                        (a.tenant.as_str(), step, model_state(a.state))
                    })
                    .collect();
                assert_eq!(got, want, "tick");
                for applied in fired {
                    let tenant = TENANTS
                        .iter()
                        .position(|t| *t == applied.tenant.as_str())
                        .unwrap();
                    self.record(tenant, &applied);
                }
            }
            Op::Entitlement {
                tenant,
                event,
                plan,
            } => {
                let event = EntitlementEvent::ALL[event];
                let id = self.next_id("e");
                let model_id = id.clone();
                let input = Input::Entitlement {
                    observed: None,
                    marketplace: None,
                    event,
                    id: Some(id),
                    plan: plan.map(ProfileId),
                };
                self.apply(tenant, input, |m, now| {
                    let timer = m.timer(now);
                    let plan = plan.map(usize::from);
                    (
                        false,
                        join(timer, m.entitlement(event.as_str(), plan, Some(&model_id))),
                    )
                });
            }
            Op::Reset { tenant } => {
                let input = Input::Reset {
                    reason: "operator".to_owned(),
                };
                self.apply(tenant, input, |m, now| {
                    let timer = m.timer(now);
                    (false, join(timer, m.reset()))
                });
            }
            Op::Checkpoint => {
                self.registry.checkpoint().expect("checkpoint");
            }
        }
        self.check_views();
    }

    fn check_views(&mut self) {
        for (&tenant, model) in &self.models {
            let id = TenantId::new(TENANTS[tenant]).unwrap();
            let Some(view) = self.registry.view(&id) else {
                continue;
            };
            assert_eq!(model_state(view.state), model.state, "{id} state");
            assert_eq!(view.entitlement.as_str(), model.ent, "{id} entitlement");
            assert_eq!(view.seq, model.seq, "{id} receipts");
            assert_eq!(
                view.profile,
                self.pack.sku().profiles[model.profile].name,
                "{id} profile"
            );
            assert_eq!(
                !view.in_flight.is_empty(),
                model.in_flight(),
                "{id} in flight"
            );
            // Cancelled is left by a new purchase (`created`) only.
            let seen = self.seen.entry(tenant).or_default();
            if seen.cancelled {
                assert!(
                    matches!(
                        view.entitlement,
                        EntitlementState::Cancelled | EntitlementState::Pending
                    ),
                    "{id}: cancelled left for {}",
                    view.entitlement
                );
            }
            seen.cancelled = view.entitlement == EntitlementState::Cancelled;
        }
    }

    fn check_replay(&self) {
        let report = self.ledger.verify().expect("verify");
        assert_eq!(report.first_bad, None, "chains verify");
        let fresh = Registry::new(self.pack, self.ledger.clone());
        let stats = fresh.recover().expect("recover");
        assert_eq!(stats.diverged, 0, "replayed receipts agree with their `to`");
        assert_eq!(
            fresh.states(),
            self.registry.states(),
            "replay rebuilds the state"
        );
        assert_eq!(fresh.len(), self.registry.len());
    }
}

fn run_ops(pack: &'static TestPack, ops: Vec<Op>) {
    let mut harness = Harness::new(pack);
    for op in ops {
        harness.run(op);
    }
    harness.check_replay();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn registry_matches_the_model_without_entitlement(ops in prop::collection::vec(op(), 1..80)) {
        run_ops(&OPEN, ops);
    }

    #[test]
    fn registry_matches_the_model_with_entitlement(ops in prop::collection::vec(op(), 1..80)) {
        run_ops(&ENTITLED, ops);
    }
}

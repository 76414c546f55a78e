//! The proof that an interpreted pack means what a compiled one does,
//! for any spec: its tables and lookups equal the compiled ones, and random
//! streams of signals (across every threshold's edge), entitlement events,
//! action results and timers driven through a registry on each pack write
//! byte-identical receipts. Used by `pack.rs` for the shipped specs and by
//! `scripts/check-edge-spec` (through `#[path]`) for the edge-case spec,
//! whose generated crate lives in a throwaway workspace.

use std::collections::BTreeMap;
use std::sync::Arc;

use ggen_runtime_core::clock::Timestamp;
use ggen_runtime_core::entitlement::EntitlementEvent;
use ggen_runtime_core::ledger::Ledger;
use ggen_runtime_core::ledger::memory::MemoryLedger;
use ggen_runtime_core::receipt::{Input, Via};
use ggen_runtime_core::registry::{Dispatch, Registry};
use ggen_runtime_core::sku::{PolicyPack, ProfileId, SignalId, Sku};
use ggen_runtime_core::tenant::TenantId;
use proptest::prelude::*;

/// The interpreted pack of the spec at `path`.
pub fn interpreted(path: &std::path::Path) -> &'static dyn PolicyPack {
    let model = ggen::pipeline::model(path, &path.display().to_string()).unwrap();
    ggen::pack::interpreted(&model)
}

/// Asserts that `ours` has `compiled`'s tables and answers every lookup alike.
pub fn assert_same_tables(ours: &dyn PolicyPack, compiled: &dyn PolicyPack, what: &str) {
    // Every field, floats to the last bit (Debug prints the shortest
    // text that reads back to the same f64).
    assert_eq!(
        format!("{:?}", ours.sku()),
        format!("{:?}", compiled.sku()),
        "{what}"
    );
    let sku = compiled.sku();
    for p in 0..sku.profiles.len() {
        for s in 0..sku.signals.len() {
            let (profile, signal) = (ProfileId(p as u16), SignalId(s as u16));
            assert_eq!(
                ours.rule(profile, signal),
                compiled.rule(profile, signal),
                "{what}: profile {p} signal {s}"
            );
        }
    }
    for name in sku.signals.iter().map(|s| s.name).chain(["nope", ""]) {
        assert_eq!(ours.signal_by_name(name), compiled.signal_by_name(name));
    }
    for name in sku.profiles.iter().map(|p| p.name).chain(["nope", ""]) {
        assert_eq!(ours.profile_by_name(name), compiled.profile_by_name(name));
    }
}

/// One step of a stream, with indices resolved against the SKU when run.
#[derive(Debug, Clone)]
pub enum Step {
    /// A reading of signal `signal % n` for tenant `tenant`, `value` chosen
    /// among the rules' thresholds (`pick`), just off them, or in range.
    Signal {
        tenant: u8,
        signal: u8,
        pick: u16,
        nudge: i8,
        uniform: f64,
    },
    /// An entitlement event, with a plan (profile `plan % n`) or none.
    Entitlement {
        tenant: u8,
        event: u8,
        plan: Option<u8>,
    },
    /// The result of the `which`-th dispatch still waiting for one.
    Result { which: u8, ok: bool },
    /// The clock moves on by this many seconds, and due timers fire.
    Tick { seconds: u32 },
}

pub fn signal_step() -> impl Strategy<Value = Step> {
    (0..3u8, any::<u8>(), any::<u16>(), -1..=1i8, 0.0..1.0f64).prop_map(
        |(tenant, signal, pick, nudge, uniform)| Step::Signal {
            tenant,
            signal,
            pick,
            nudge,
            uniform,
        },
    )
}

pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => signal_step(),
        2 => (0..3u8, 0..6u8, proptest::option::of(any::<u8>()))
            .prop_map(|(tenant, event, plan)| Step::Entitlement { tenant, event, plan }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(which, ok)| Step::Result { which, ok }),
        1 => prop_oneof![0..30u32, 60..4000u32].prop_map(|seconds| Step::Tick { seconds }),
    ]
}

/// A reading of `signal` for `step`: a threshold of some profile's rule
/// (exactly, or one ulp either side), or a value inside the signal's range.
fn value(sku: &Sku, signal: SignalId, pick: u16, nudge: i8, uniform: f64) -> f64 {
    let thresholds: Vec<f64> = sku
        .profiles
        .iter()
        .flat_map(|p| p.rules.iter().filter(|r| r.signal == signal))
        .flat_map(|r| [r.warn, r.intervene, r.refuse, Some(r.clear)])
        .flatten()
        .collect();
    let def = sku.signal(signal);
    if !pick.is_multiple_of(4) && !thresholds.is_empty() {
        let t = thresholds[usize::from(pick) % thresholds.len()];
        let v = match nudge {
            -1 => t.next_down(),
            1 => t.next_up(),
            _ => t,
        };
        if def.accepts(v) {
            return v;
        }
    }
    let (lo, hi) = (def.min.unwrap_or(0.0), def.max.unwrap_or(10_000.0));
    lo + (hi - lo) * uniform
}

/// Every receipt `steps` write through a registry on `pack`: each tenant's
/// chain in order, as text (timers of several tenants due at once may fire
/// in any order across tenants; each chain's order is the decision's), and
/// under `!refused` what the registry refused before deciding.
pub fn receipts(pack: &'static dyn PolicyPack, steps: &[Step]) -> BTreeMap<String, Vec<String>> {
    let ledger = Arc::new(MemoryLedger::new());
    let registry = Registry::new(pack, Arc::clone(&ledger) as Arc<dyn Ledger>);
    let sku = pack.sku();
    let tenants = ["acme", "beta", "gamma"].map(|t| TenantId::new(t).unwrap());
    let mut now = 1_800_000_000_000i64;
    let mut waiting: Vec<Dispatch> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        now += 1000;
        let applied = match step {
            Step::Signal {
                tenant,
                signal,
                pick,
                nudge,
                uniform,
            } => {
                let signal = SignalId(u16::from(*signal) % sku.signals.len() as u16);
                let input = Input::Signal {
                    signal,
                    value: value(sku, signal, *pick, *nudge, *uniform),
                    id: Some(format!("s{i}")),
                    observed: None,
                    via: Via::Api,
                };
                vec![registry.apply(
                    &tenants[usize::from(*tenant)],
                    input,
                    Timestamp::from_millis(now),
                )]
            }
            Step::Entitlement {
                tenant,
                event,
                plan,
            } => {
                let event =
                    EntitlementEvent::ALL[usize::from(*event) % EntitlementEvent::ALL.len()];
                let profile = plan.map(|p| ProfileId(u16::from(p) % sku.profiles.len() as u16));
                let input = Input::Entitlement {
                    event,
                    id: Some(format!("e{i}")),
                    plan: profile,
                    observed: None,
                    marketplace: None,
                };
                vec![registry.apply(
                    &tenants[usize::from(*tenant)],
                    input,
                    Timestamp::from_millis(now),
                )]
            }
            Step::Result { which, ok } if !waiting.is_empty() => {
                let dispatch = waiting.remove(usize::from(*which) % waiting.len());
                let input = Input::ActionResult {
                    key: dispatch.key.clone(),
                    ok: *ok,
                    detail: None,
                };
                vec![registry.apply(&dispatch.key.tenant, input, Timestamp::from_millis(now))]
            }
            Step::Result { .. } => Vec::new(),
            Step::Tick { seconds } => {
                now += i64::from(*seconds) * 1000;
                registry
                    .tick(Timestamp::from_millis(now))
                    .unwrap()
                    .into_iter()
                    .map(Ok)
                    .collect()
            }
        };
        for applied in applied {
            match applied {
                Ok(applied) => waiting.extend(applied.dispatches),
                // What the registry refuses before deciding (a tenant past
                // `max_tenants`) must be refused alike.
                Err(error) => refused.push(format!("step {i}: {error}")),
            }
        }
        // Results pick from the same list whatever order timers fired in.
        waiting.sort_by(|a, b| {
            (a.key.tenant.as_str(), a.key.seq, a.key.action.0).cmp(&(
                b.key.tenant.as_str(),
                b.key.seq,
                b.key.action.0,
            ))
        });
    }
    ledger.flush().unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    ledger
        .scan(&mut |record| {
            out.entry(record.tenant.to_string())
                .or_default()
                .push(String::from_utf8(record.bytes.to_vec()).unwrap());
            Ok(())
        })
        .unwrap();
    // No tenant id has a `!`.
    if !refused.is_empty() {
        out.insert("!refused".to_owned(), refused);
    }
    out
}

/// A stream: a reading first (so every case writes receipts), then any steps.
pub fn stream() -> impl Strategy<Value = Vec<Step>> {
    (signal_step(), proptest::collection::vec(step(), 0..120))
        .prop_map(|(first, rest)| [vec![first], rest].concat())
}

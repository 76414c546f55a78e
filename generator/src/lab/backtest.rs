//! `ggen backtest`: the same recorded inputs through two versions of a
//! spec, and what the change does — per tenant the first input after which
//! the two disagree on its state, and in total the interventions, refusals
//! and actions added and removed and the time spent in each state, overall
//! and per profile. Gates turn the report into a CI verdict.
//!
//! Both specs run in lock step on the lab's clock ([`Sim`]), each on a
//! [`Discard`] ledger, so memory is bounded by tenants, not by inputs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ggen_runtime_core::clock::Timestamp;
use ggen_runtime_core::fsm::State;
use ggen_runtime_core::receipt::Input;
use ggen_runtime_core::replay::{self, Line};
use ggen_runtime_core::sku::PolicyPack;
use ggen_runtime_core::tenant::TenantId;
use serde::Serialize;

use super::recorded::{self, Recorded, RecordedError};
use super::{Discard, Settle, Sim, SimError, Stepped};

/// Inputs that could not be replayed, listed in a report (all are counted).
const BAD_LISTED: usize = 20;

const INTERVENING: usize = 3;
const REFUSING: usize = 5;

/// One side of the comparison: a spec's name and its interpreted pack.
#[derive(Clone, Copy)]
#[allow(
    missing_debug_implementations,
    reason = "a pack is tables; the name says which"
)]
pub struct Side<'a> {
    /// The spec as named (`specs/x.json`, `HEAD:specs/x.json`).
    pub name: &'a str,
    /// Its pack.
    pub pack: &'static dyn PolicyPack,
}

/// The limits a change must stay within.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gates {
    /// Refusals the new spec may add in total.
    pub max_new_refusals: Option<u64>,
    /// Interventions the new spec may add in total.
    pub max_new_interventions: Option<u64>,
    /// Percent more actions the new spec may dispatch in total.
    pub max_action_increase: Option<f64>,
    /// Recorded inputs that may be unreadable (not JSON, not UTF-8, not a
    /// replay line) before the run fails; 0 by default: a recording that
    /// cannot be read is no evidence that a change is safe.
    pub max_unreadable: u64,
}

/// What happened to tenants under one spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Entries into `intervening` (a degraded retry included).
    pub interventions: u64,
    /// Entries into `refusing`.
    pub refusals: u64,
    /// Actions dispatched (undos included).
    pub actions: u64,
    /// Actions dispatched, by action.
    pub by_action: BTreeMap<String, u64>,
    /// Milliseconds tenants spent in each state (from each tenant's first input).
    pub state_ms: BTreeMap<&'static str, u64>,
}

/// One count under both specs, with what the change added and removed
/// summed per tenant (a change can add refusals to some tenants and remove
/// them from others while the totals stay level).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Under the old spec.
    pub old: u64,
    /// Under the new spec.
    pub new: u64,
    /// Summed over tenants with more under the new spec.
    pub added: u64,
    /// Summed over tenants with fewer under the new spec.
    pub removed: u64,
}

/// Both specs' totals for one profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProfileTotals {
    /// Under the old spec (empty if it has no such profile).
    pub old: Totals,
    /// Under the new spec.
    pub new: Totals,
}

/// The first input after which the two specs disagree on a tenant's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// The tenant.
    pub tenant: String,
    /// The input (line or receipt number).
    pub input: usize,
    /// Its time.
    pub at: Timestamp,
    /// The tenant's state under the old spec.
    pub old: &'static str,
    /// Under the new spec.
    pub new: &'static str,
}

/// An input that could not be replayed (under one spec or both).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadInput {
    /// Its number.
    pub input: usize,
    /// Why.
    pub message: String,
}

/// One gate's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    /// The option that set it (`max-new-refusals`).
    pub name: &'static str,
    /// Its limit.
    pub limit: f64,
    /// The measured value (`null`: an increase from none, for percentages).
    pub value: Option<f64>,
    /// Whether the change crossed it.
    pub crossed: bool,
    /// The tenants that contributed (more under the new spec), by id.
    pub tenants: Vec<String>,
}

/// What a backtest found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The old spec, as named.
    pub old: String,
    /// The new spec, as named.
    pub new: String,
    /// Where the inputs came from.
    pub recorded: String,
    /// What one input is called (`line`, `receipt`).
    pub unit: &'static str,
    /// Inputs read.
    pub inputs: usize,
    /// Inputs that could not be replayed under one spec or both.
    pub bad_inputs: usize,
    /// The first of them.
    pub bad: Vec<BadInput>,
    /// Tenants seen.
    pub tenants: usize,
    /// The first input's time.
    pub from: Option<Timestamp>,
    /// The last input's time: the end of every tenant's last interval.
    pub to: Option<Timestamp>,
    /// Interventions under both specs.
    pub interventions: Change,
    /// Refusals under both specs.
    pub refusals: Change,
    /// Actions under both specs.
    pub actions: Change,
    /// Everything under the old spec.
    pub old_totals: Totals,
    /// Everything under the new spec.
    pub new_totals: Totals,
    /// Per profile (a tenant counts under the profile it was on at the time).
    pub profiles: BTreeMap<String, ProfileTotals>,
    /// Tenants whose state differed after some input.
    pub diverged: usize,
    /// Each such tenant's first divergence, by tenant.
    pub divergences: Vec<Divergence>,
    /// The gates asked for, in the order of the options.
    pub gates: Vec<Gate>,
    /// What may make the comparison meaningless (two different SKUs).
    pub warnings: Vec<String>,
}

impl Report {
    /// Whether a gate was crossed.
    pub fn crossed(&self) -> bool {
        self.gates.iter().any(|g| g.crossed)
    }
}

/// Why a backtest stopped.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The recorded inputs could not be read.
    #[error("reading the recorded inputs")]
    Recorded(#[from] RecordedError),
    /// The simulated registry failed (an internal fault: its ledger keeps no data).
    #[error("input {input}")]
    Registry {
        /// The input.
        input: usize,
        /// The cause.
        #[source]
        source: Box<SimError>,
    },
    /// More recorded inputs could not be read than `--max-unreadable` allows.
    #[error(
        "{count} of {inputs} recorded input(s) from {recorded} cannot be read (allowed: {allowed}); the first, {unit} {input}: {message}"
    )]
    Unreadable {
        /// Where the inputs came from.
        recorded: String,
        /// What one input is called (`line`, `receipt`).
        unit: &'static str,
        /// The first unreadable input's number.
        input: usize,
        /// Why it cannot be read (a JSON error names its column).
        message: String,
        /// How many could not be read.
        count: u64,
        /// How many were read in all.
        inputs: usize,
        /// How many were allowed.
        allowed: u64,
    },
    /// Not one recorded input could be replayed: there is nothing to judge
    /// a change by (an empty file, a folder that is not a ledger).
    #[error("no input from {recorded} could be replayed ({inputs} read)")]
    NoInputs {
        /// Where the inputs came from.
        recorded: String,
        /// How many were read.
        inputs: usize,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    interventions: u64,
    refusals: u64,
    actions: u64,
}

struct Track {
    state: usize,
    /// When the current interval began.
    since: i64,
    /// The tenant's last decision time: the registry never decides a
    /// tenant's step earlier than its previous one, so neither does this.
    last: i64,
    profile: usize,
    counts: Counts,
}

/// What happened under one spec, as its steps are taken.
struct Book {
    pack: &'static dyn PolicyPack,
    tracks: HashMap<TenantId, Track>,
    /// Per profile of this spec, by id.
    profiles: Vec<Totals>,
}

impl Book {
    fn track(&mut self, tenant: &TenantId, at: i64) -> &mut Track {
        let default = usize::from(self.pack.sku().default_profile.0);
        self.tracks.entry(tenant.clone()).or_insert(Track {
            state: State::Boot.index(),
            since: at,
            last: at,
            profile: default,
            counts: Counts::default(),
        })
    }

    /// Closes `tenant`'s current interval at `at` into its profile's totals.
    fn close(&mut self, tenant: &TenantId, at: i64) {
        let track = self.track(tenant, at);
        let spent = u64::try_from(at - track.since).unwrap_or(0);
        let (profile, state) = (track.profile, track.state);
        track.since = at;
        *self.profiles[profile]
            .state_ms
            .entry(State::NAMES[state])
            .or_default() += spent;
    }

    fn account(&mut self, stepped: &Stepped) {
        let tenant = &stepped.applied.tenant;
        let track = self.track(tenant, stepped.at.as_millis());
        let at = stepped.at.as_millis().max(track.last);
        track.last = at;
        let (profile, from) = (track.profile, track.state);
        let to = stepped.applied.state.index();
        let dispatches = &stepped.applied.dispatches;
        let counts = Counts {
            interventions: u64::from(to != from && to == INTERVENING),
            refusals: u64::from(to != from && to == REFUSING),
            actions: dispatches.len() as u64,
        };
        if to != from {
            self.close(tenant, at);
        }
        let track = self.track(tenant, at);
        track.state = to;
        track.counts.interventions += counts.interventions;
        track.counts.refusals += counts.refusals;
        track.counts.actions += counts.actions;
        let sku = self.pack.sku();
        let totals = &mut self.profiles[profile];
        totals.interventions += counts.interventions;
        totals.refusals += counts.refusals;
        totals.actions += counts.actions;
        for dispatch in dispatches {
            *totals
                .by_action
                .entry(sku.action(dispatch.key.action).name.to_owned())
                .or_default() += 1;
        }
    }
}

/// One spec's simulation and its bookkeeping.
struct Run {
    sim: Sim,
    book: Book,
}

impl Run {
    fn new(pack: &'static dyn PolicyPack, settle: Settle) -> Run {
        Run {
            sim: Sim::new(pack, Arc::new(Discard::default()), settle),
            book: Book {
                pack,
                tracks: HashMap::new(),
                profiles: vec![Totals::default(); pack.sku().profiles.len()],
            },
        }
    }

    /// Feeds `line`: `Err` says why this spec cannot take it.
    fn feed(&mut self, number: usize, line: &Line) -> Result<Result<(), String>, BacktestError> {
        let prepared = match replay::prepare(self.book.pack, line) {
            Ok(prepared) => prepared,
            Err(why) => return Ok(Err(why)),
        };
        let entitlement = matches!(prepared.input, Input::Entitlement { .. });
        let book = &mut self.book;
        let result = self.sim.apply(
            &prepared.tenant,
            prepared.input,
            prepared.at,
            &mut |stepped| book.account(&stepped),
        );
        let outcome = match result {
            Ok(_) => Ok(()),
            // One tenant's refusal is a bad input; the others go on.
            Err(SimError::Registry(e)) if super::refuses_input(&e) => Err(e.to_string()),
            Err(source) => {
                return Err(BacktestError::Registry {
                    input: number,
                    source: Box::new(source),
                });
            }
        };
        if entitlement {
            self.follow_profile(&prepared.tenant, prepared.at);
        }
        Ok(outcome)
    }

    /// After an entitlement event: the tenant's profile now (time so far
    /// counts under the one it was on).
    fn follow_profile(&mut self, tenant: &TenantId, at: Timestamp) {
        let Some(view) = self.sim.registry().view(tenant) else {
            return;
        };
        let Some(profile) = self.book.pack.profile_by_name(view.profile) else {
            return;
        };
        let profile = usize::from(profile.0);
        let track = self.book.track(tenant, at.as_millis());
        if track.profile == profile {
            return;
        }
        let at = at.as_millis().max(track.last);
        self.book.close(tenant, at);
        self.book.track(tenant, at).profile = profile;
    }

    /// Fires the timers due by `end`, closes every tenant's interval there
    /// (or at its last decision, if later), and returns the totals per
    /// profile name.
    fn finish(&mut self, end: Timestamp) -> Result<BTreeMap<String, Totals>, BacktestError> {
        let book = &mut self.book;
        self.sim
            .advance(end, &mut |stepped| book.account(&stepped))
            .map_err(|source| BacktestError::Registry {
                input: 0,
                source: Box::new(source),
            })?;
        let tenants: Vec<(TenantId, i64)> = book
            .tracks
            .iter()
            .map(|(t, track)| (t.clone(), end.as_millis().max(track.last)))
            .collect();
        for (tenant, at) in tenants {
            book.close(&tenant, at);
        }
        let sku = book.pack.sku();
        Ok(book
            .profiles
            .iter_mut()
            .enumerate()
            .map(|(i, totals)| {
                for name in State::NAMES {
                    totals.state_ms.entry(name).or_default();
                }
                (sku.profiles[i].name.to_owned(), std::mem::take(totals))
            })
            .collect())
    }

    fn state(&self, tenant: &TenantId) -> usize {
        self.book.tracks.get(tenant).map_or(0, |t| t.state)
    }
}

/// Sums per-profile totals.
fn sum<'a>(all: impl Iterator<Item = &'a Totals>) -> Totals {
    let mut total = Totals::default();
    for name in State::NAMES {
        total.state_ms.insert(name, 0);
    }
    for t in all {
        total.interventions += t.interventions;
        total.refusals += t.refusals;
        total.actions += t.actions;
        for (action, n) in &t.by_action {
            *total.by_action.entry(action.clone()).or_default() += n;
        }
        for (state, ms) in &t.state_ms {
            *total.state_ms.entry(state).or_default() += ms;
        }
    }
    total
}

/// Replays `recorded` through `old` and `new`, dispatched actions settled
/// as `settle` says, and judges the change by `gates`.
pub fn run(
    old: Side<'_>,
    new: Side<'_>,
    recorded: &Recorded,
    settle: Settle,
    gates: &Gates,
) -> Result<Report, BacktestError> {
    let mut runs = [Run::new(old.pack, settle), Run::new(new.pack, settle)];
    let mut inputs = 0;
    let mut bad_inputs = 0;
    let mut bad = Vec::new();
    // Inputs at least one spec took.
    let mut replayed = 0usize;
    let mut from: Option<Timestamp> = None;
    let mut to: Option<Timestamp> = None;
    let mut divergences: HashMap<TenantId, Divergence> = HashMap::new();
    let mut failure = None;
    let mut unreadable = 0u64;
    let mut first_unreadable = None;
    recorded::each(recorded, &mut |number, line| {
        if failure.is_some() {
            return;
        }
        inputs += 1;
        let mut problems = Vec::new();
        match line {
            Err(message) => {
                unreadable += 1;
                first_unreadable.get_or_insert_with(|| (number, message.clone()));
                problems.push(message);
            }
            Ok(line) => {
                let at = line.at();
                from = Some(from.map_or(at, |f| f.min(at)));
                to = Some(to.map_or(at, |t| t.max(at)));
                let mut took = false;
                for (run, side) in runs.iter_mut().zip(["old", "new"]) {
                    match run.feed(number, &line) {
                        Ok(Ok(())) => took = true,
                        Ok(Err(why)) => problems.push(format!("{side} spec: {why}")),
                        Err(error) => {
                            failure = Some(error);
                            return;
                        }
                    }
                }
                replayed += usize::from(took);
                if let Ok(tenant) = TenantId::new(line.tenant()) {
                    let (a, b) = (runs[0].state(&tenant), runs[1].state(&tenant));
                    if a != b && !divergences.contains_key(&tenant) {
                        divergences.insert(
                            tenant.clone(),
                            Divergence {
                                tenant: tenant.to_string(),
                                input: number,
                                at,
                                old: State::NAMES[a],
                                new: State::NAMES[b],
                            },
                        );
                    }
                }
            }
        }
        if !problems.is_empty() {
            bad_inputs += 1;
            if bad.len() < BAD_LISTED {
                let message = match problems.as_slice() {
                    [old, new]
                        if old.strip_prefix("old spec: ") == new.strip_prefix("new spec: ") =>
                    {
                        format!("both specs: {}", &old["old spec: ".len()..])
                    }
                    _ => problems.join("; "),
                };
                bad.push(BadInput {
                    input: number,
                    message,
                });
            }
        }
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    if unreadable > gates.max_unreadable
        && let Some((input, message)) = first_unreadable
    {
        return Err(BacktestError::Unreadable {
            recorded: recorded.describe(),
            unit: recorded.unit(),
            input,
            message,
            count: unreadable,
            inputs,
            allowed: gates.max_unreadable,
        });
    }
    if replayed == 0 {
        return Err(BacktestError::NoInputs {
            recorded: recorded.describe(),
            inputs,
        });
    }
    let end = to.unwrap_or_default();
    let [old_run, new_run] = &mut runs;
    let old_profiles = old_run.finish(end)?;
    let new_profiles = new_run.finish(end)?;

    // Per tenant: what the change added and removed.
    let mut tenants: Vec<&TenantId> = old_run.book.tracks.keys().collect();
    tenants.extend(
        new_run
            .book
            .tracks
            .keys()
            .filter(|t| !old_run.book.tracks.contains_key(*t)),
    );
    tenants.sort();
    let counts =
        |run: &Run, t: &TenantId| run.book.tracks.get(t).map(|t| t.counts).unwrap_or_default();
    let mut changes = [Change::default(); 3];
    let mut more: [Vec<String>; 3] = Default::default();
    for tenant in &tenants {
        let (a, b) = (counts(old_run, tenant), counts(new_run, tenant));
        for (i, (x, y)) in [
            (a.interventions, b.interventions),
            (a.refusals, b.refusals),
            (a.actions, b.actions),
        ]
        .into_iter()
        .enumerate()
        {
            changes[i].old += x;
            changes[i].new += y;
            changes[i].added += y.saturating_sub(x);
            changes[i].removed += x.saturating_sub(y);
            if y > x {
                more[i].push(tenant.to_string());
            }
        }
    }
    let [interventions, refusals, actions] = changes;
    let [more_interventions, more_refusals, more_actions] = more;

    let increase = |c: &Change| c.new as f64 - c.old as f64;
    // A gate on a total's increase, with the tenants that had more.
    let total_gate = |name, limit: Option<u64>, change: &Change, tenants| {
        limit.map(|limit| Gate {
            name,
            limit: limit as f64,
            value: Some(increase(change)),
            crossed: increase(change) > limit as f64,
            tenants,
        })
    };
    let mut report_gates: Vec<Gate> = [
        total_gate(
            "max-new-refusals",
            gates.max_new_refusals,
            &refusals,
            more_refusals,
        ),
        total_gate(
            "max-new-interventions",
            gates.max_new_interventions,
            &interventions,
            more_interventions,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(limit) = gates.max_action_increase {
        let value = match (actions.old, actions.new) {
            (0, 0) => Some(0.0),
            (0, _) => None,
            (old, _) => Some(increase(&actions) / old as f64 * 100.0),
        };
        report_gates.push(Gate {
            name: "max-action-increase",
            limit,
            value,
            crossed: value.map_or(actions.new > 0, |v| v > limit),
            tenants: more_actions,
        });
    }

    let mut profiles: BTreeMap<String, ProfileTotals> = BTreeMap::new();
    for (name, totals) in &old_profiles {
        profiles.entry(name.clone()).or_default().old = totals.clone();
    }
    for (name, totals) in &new_profiles {
        profiles.entry(name.clone()).or_default().new = totals.clone();
    }
    let mut warnings = Vec::new();
    let (old_id, new_id) = (old.pack.sku().id, new.pack.sku().id);
    if old_id != new_id {
        warnings.push(format!(
            "the specs are different SKUs (`{old_id}`, `{new_id}`): a backtest compares two versions of one"
        ));
    }
    let mut divergences: Vec<Divergence> = divergences.into_values().collect();
    divergences.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(Report {
        old: old.name.to_owned(),
        new: new.name.to_owned(),
        recorded: recorded.describe(),
        unit: recorded.unit(),
        inputs,
        bad_inputs,
        bad,
        tenants: tenants.len(),
        from,
        to,
        interventions,
        refusals,
        actions,
        old_totals: sum(old_profiles.values()),
        new_totals: sum(new_profiles.values()),
        profiles,
        diverged: divergences.len(),
        divergences,
        gates: report_gates,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ggen_runtime_core::registry::DedupeOptions;

    use super::*;

    /// The service-wide dedupe limit (2,000,000 ids by default; 2 here)
    /// refuses the input past it, with the reason, instead of ending the
    /// backtest as an internal error.
    #[test]
    fn the_services_dedupe_limit_refuses_an_input_not_the_run() {
        let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/cost_guard.json");
        let model = crate::pipeline::model(&spec, "specs/cost_guard.json").expect("valid");
        let pack = crate::pack::interpreted(&model);
        let mut run = Run::new(pack, Settle::Succeed);
        let dedupe = DedupeOptions {
            max_total: 2,
            ..DedupeOptions::default()
        };
        run.sim = Sim::with_dedupe(pack, Arc::new(Discard::default()), Settle::Succeed, dedupe);
        let outcomes: Vec<Result<(), String>> = (1..=3)
            .map(|i| {
                let text = format!(
                    r#"{{"tenant":"t{i}","signal":"spend_rate","value":1,"id":"e{i}","at":"2026-11-01T00:0{i}:00Z"}}"#
                );
                let line = replay::parse_line(i, &text).expect("a replay line");
                run.feed(i, &line).expect("a refusal is not a fault")
            })
            .collect();
        assert_eq!(outcomes[..2], [Ok(()), Ok(())]);
        let refused = outcomes[2].as_ref().expect_err("the third id is refused");
        assert!(
            refused.contains("the service holds `2` event ids in all"),
            "{refused}"
        );
    }
}

//! A small, deliberately plain reference model of one tenant's governor,
//! written from the DESIGN.md §5 table (and the documented choices), not from
//! the runtime's code: strings for states, a flat list of rule memories,
//! linear scans everywhere.

use std::collections::VecDeque;

use ggen_runtime::sku::{Direction, PolicyPack, Rule, SignalId};

use super::sku::TestPack;

const HOUR: i64 = 3_600_000;

/// The model's state: name and, for the timed states, the deadline (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MState {
    /// State name as in receipts.
    pub name: &'static str,
    /// Deadline or retry time, for `intervening` / `degraded`.
    pub at: Option<i64>,
}

const fn plain(name: &'static str) -> MState {
    MState { name, at: None }
}

/// One expected dispatch: action name and whether it is an undo.
pub type MDispatch = (&'static str, bool);

/// What one model step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MStep {
    /// Receipts written (decision + one per dispatch).
    pub receipts: u32,
    /// Dispatches in order.
    pub dispatches: Vec<MDispatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lv {
    Normal,
    Warn,
    Intervene,
    Refuse,
}

#[derive(Debug, Clone, Copy)]
struct RuleMem {
    streak: u32,
    level: Lv,
    clear: bool,
}

/// The model tenant.
#[derive(Debug, Clone)]
pub struct Model {
    pack: &'static TestPack,
    /// FSM state.
    pub state: MState,
    /// Entitlement state name.
    pub ent: &'static str,
    ent_seen: bool,
    /// Profile index.
    pub profile: usize,
    rules: Vec<RuleMem>,
    recovery: u32,
    last_run: Vec<(u16, i64)>,
    runs: Vec<i64>,
    /// In flight: (action index, confirmed).
    flight: Vec<(u16, bool)>,
    flight_seq: u64,
    applied: Vec<u16>,
    /// Receipts so far (the chain's seq).
    pub seq: u64,
    ids: VecDeque<String>,
}

fn breach(direction: Direction, value: f64, threshold: f64) -> bool {
    match direction {
        Direction::Above => value >= threshold,
        Direction::Below => value <= threshold,
    }
}

fn raw(rule: &Rule, value: f64) -> Lv {
    let hit = |t: Option<f64>| t.is_some_and(|t| breach(rule.direction, value, t));
    if hit(rule.refuse) {
        Lv::Refuse
    } else if hit(rule.intervene) {
        Lv::Intervene
    } else if hit(rule.warn) {
        Lv::Warn
    } else {
        Lv::Normal
    }
}

impl Model {
    /// A tenant nobody heard of.
    pub fn new(pack: &'static TestPack) -> Model {
        let profile = usize::from(pack.sku().default_profile.0);
        Model {
            pack,
            state: plain("boot"),
            ent: "pending",
            ent_seen: false,
            profile,
            rules: Vec::new(),
            recovery: 0,
            last_run: Vec::new(),
            runs: Vec::new(),
            flight: Vec::new(),
            flight_seq: 0,
            applied: Vec::new(),
            seq: 0,
            ids: VecDeque::new(),
        }
    }

    fn rules(&self) -> &'static [Rule] {
        self.pack.sku().profiles[self.profile].rules
    }

    fn forget_rules(&mut self) {
        self.rules = Vec::new();
        self.recovery = 0;
    }

    fn tenant_level(&self) -> Lv {
        self.rules
            .iter()
            .map(|m| m.level)
            .max()
            .unwrap_or(Lv::Normal)
    }

    /// Whether the timer is due at `now`.
    pub fn due(&self, now: i64) -> bool {
        match (self.state.name, self.state.at) {
            ("intervening", Some(d)) => now >= d,
            ("degraded", Some(r)) => now >= r && self.tenant_level() >= Lv::Intervene,
            _ => false,
        }
    }

    /// Whether an action set is in flight.
    pub fn in_flight(&self) -> bool {
        self.state.name == "intervening"
    }

    /// Tries to run `actions`: `Some(dispatches)` or `None` when blocked.
    fn try_run(&mut self, actions: &[ggen_runtime::sku::ActionId], now: i64) -> Option<Vec<u16>> {
        let profile = &self.pack.sku().profiles[self.profile];
        let cooldown = i64::from(profile.cooldown_s) * 1000;
        let free: Vec<u16> = actions
            .iter()
            .map(|a| a.0)
            .filter(|a| {
                cooldown == 0
                    || self
                        .last_run
                        .iter()
                        .find(|(x, _)| x == a)
                        .is_none_or(|(_, t)| now >= t + cooldown)
            })
            .collect();
        if free.is_empty() {
            return None;
        }
        if let Some(max) = profile.max_actions_per_hour {
            let used = self.runs.iter().filter(|&&t| t > now - HOUR).count();
            if used + free.len() > max as usize {
                return None;
            }
        }
        for &a in &free {
            self.last_run.retain(|(x, _)| *x != a);
            self.last_run.push((a, now));
            self.runs.push(now);
            if !self.applied.contains(&a) {
                self.applied.push(a);
            }
        }
        Some(free)
    }

    /// Intervention: dispatch or stay in `blocked`.
    fn intervene(
        &mut self,
        rule: &Rule,
        now: i64,
        seq: u64,
        blocked: MState,
        out: &mut Vec<u16>,
    ) -> MState {
        let timing = self.pack.sku().governor;
        match self.try_run(rule.actions, now) {
            Some(run) => {
                self.flight = run.iter().map(|&a| (a, false)).collect();
                self.flight_seq = seq;
                out.extend(run);
                MState {
                    name: "intervening",
                    at: Some(now + i64::from(timing.intervention_timeout_s) * 1000),
                }
            }
            None => blocked,
        }
    }

    fn retry_state(&self, now: i64) -> MState {
        MState {
            name: "degraded",
            at: Some(now + i64::from(self.pack.sku().governor.degraded_retry_s) * 1000),
        }
    }

    /// Moves to `to`, handling the undo-on-stable and flight rules; returns the step.
    fn finish(&mut self, to: MState, run: Vec<u16>) -> MStep {
        let sku = self.pack.sku();
        let mut dispatches: Vec<MDispatch> = run
            .iter()
            .map(|&a| (sku.actions[usize::from(a)].name, false))
            .collect();
        if to.name == "stable" && self.state.name != "stable" {
            for a in std::mem::take(&mut self.applied) {
                if let Some(undo) = sku.actions[usize::from(a)].undo {
                    let entry = (sku.actions[usize::from(undo.0)].name, true);
                    if !dispatches.contains(&entry) {
                        dispatches.push(entry);
                    }
                }
            }
        }
        if to.name == "stable" || to.name == "refusing" {
            self.flight.clear();
        }
        self.state = to;
        let receipts = 1 + dispatches.len() as u32;
        self.seq += u64::from(receipts);
        MStep {
            receipts,
            dispatches,
        }
    }

    /// The timer check before an input (or on a tick).
    pub fn timer(&mut self, now: i64) -> Option<MStep> {
        if !self.due(now) {
            return None;
        }
        let seq = self.seq + 1;
        let mut run = Vec::new();
        let to = if self.state.name == "intervening" {
            self.flight.clear();
            self.retry_state(now)
        } else {
            let level = self.tenant_level();
            let index = self.rules.iter().position(|m| m.level == level).unwrap();
            let rule = self.rules()[index];
            let blocked = self.retry_state(now);
            self.intervene(&rule, now, seq, blocked, &mut run)
        };
        Some(self.finish(to, run))
    }

    /// Dedupe: `true` if `id` was seen among the last 32 ids.
    pub fn duplicate(&mut self, id: &str) -> bool {
        self.ids.iter().any(|x| x == id)
    }

    fn remember(&mut self, id: &str) {
        if self.ids.len() == 32 {
            self.ids.pop_front();
        }
        self.ids.push_back(id.to_owned());
    }

    /// A signal reading.
    pub fn signal(&mut self, signal: SignalId, value: f64, id: Option<&str>, now: i64) -> MStep {
        let sku = self.pack.sku();
        let seq = self.seq + 1;
        let rules = self.rules();
        let mut level = Lv::Normal;
        let mut rule_hit = None;
        if let Some(index) = rules.iter().position(|r| r.signal == signal) {
            let rule = &rules[index];
            if self.rules.is_empty() {
                self.rules = vec![
                    RuleMem {
                        streak: 0,
                        level: Lv::Normal,
                        clear: true
                    };
                    rules.len()
                ];
            }
            let r = raw(rule, value);
            let m = &mut self.rules[index];
            m.streak = if r >= Lv::Warn { m.streak + 1 } else { 0 };
            m.level = if m.streak >= u32::from(rule.dwell) {
                r
            } else {
                Lv::Normal
            };
            m.clear = !breach(rule.direction, value, rule.clear);
            level = m.level;
            self.recovery = if self.rules.iter().all(|m| m.clear) {
                self.recovery + 1
            } else {
                0
            };
            rule_hit = Some(*rule);
        }
        if let Some(id) = id {
            self.remember(id);
        }
        let recovered =
            rule_hit.is_some() && self.recovery >= u32::from(sku.governor.recovery_evaluations);
        let mut run = Vec::new();
        let state = self.state;
        let not_entitled = sku.entitlement_required && !admitted(self.ent);
        let to = if not_entitled || level == Lv::Refuse {
            plain("refusing")
        } else {
            match state.name {
                "boot" | "stable" | "warning" => match level {
                    Lv::Intervene => {
                        self.intervene(&rule_hit.unwrap(), now, seq, plain("warning"), &mut run)
                    }
                    Lv::Warn => plain("warning"),
                    _ if state.name == "warning" && !recovered => plain("warning"),
                    _ => plain("stable"),
                },
                "intervening" => state,
                "degraded" => match level {
                    Lv::Intervene if now >= state.at.unwrap() => {
                        let blocked = self.retry_state(now);
                        self.intervene(&rule_hit.unwrap(), now, seq, blocked, &mut run)
                    }
                    Lv::Normal if recovered => plain("stable"),
                    _ => state,
                },
                // Lifted: warning while a rule is still past warn, else stable.
                "refusing" if self.tenant_level() < Lv::Refuse => {
                    if self.tenant_level() >= Lv::Warn {
                        plain("warning")
                    } else {
                        plain("stable")
                    }
                }
                "refusing" => state,
                other => panic!("model has no state {other}"),
            }
        };
        self.finish(to, run)
    }

    /// An action result for `(decided, action)`.
    pub fn result(&mut self, decided: u64, action: u16, ok: bool, now: i64) -> MStep {
        let state = self.state;
        let pending = state.name == "intervening"
            && decided == self.flight_seq
            && self.flight.iter().any(|&(a, done)| a == action && !done);
        let to = if !pending {
            if state.name == "boot" {
                plain("stable")
            } else {
                state
            }
        } else if !ok {
            self.flight.clear();
            self.retry_state(now)
        } else {
            for f in &mut self.flight {
                if f.0 == action && !f.1 {
                    f.1 = true;
                    break;
                }
            }
            if self.flight.iter().all(|f| f.1) {
                self.flight.clear();
                plain("warning")
            } else {
                state
            }
        };
        self.finish(to, Vec::new())
    }

    /// An entitlement event (by name) with an optional profile index.
    pub fn entitlement(&mut self, event: &str, plan: Option<usize>, id: Option<&str>) -> MStep {
        let to_ent = match (self.ent, event) {
            (state, "noted") => Some(state),
            ("pending", "created") if !self.ent_seen => Some("pending"),
            ("cancelled", "created") => Some("pending"),
            ("pending", "approved") => Some("active"),
            ("active", "plan_change_requested") => Some("plan_change_pending"),
            ("active" | "plan_change_pending", "plan_changed") => Some("active"),
            ("suspended", "plan_changed") => Some("suspended"),
            ("plan_change_pending", "plan_change_cancelled") => Some("active"),
            ("active", "suspended") => Some("suspended"),
            ("suspended", "reinstated") => Some("active"),
            ("active" | "plan_change_pending", "cancellation_requested") => {
                Some("pending_cancellation")
            }
            ("pending_cancellation", "cancellation_reverted") => Some("active"),
            ("cancelled", "cancelled") => None,
            (_, "cancelled") => Some("cancelled"),
            _ => None,
        };
        if let Some(id) = id {
            self.remember(id);
        }
        let Some(ent) = to_ent else {
            // Refused: receipted, nothing changes (not even boot).
            self.seq += 1;
            return MStep {
                receipts: 1,
                dispatches: Vec::new(),
            };
        };
        self.ent = ent;
        self.ent_seen |= event != "noted";
        // A requested plan only waits; a cancelled request keeps the old.
        let in_force = !matches!(event, "plan_change_requested" | "plan_change_cancelled");
        if let Some(plan) = plan.filter(|_| in_force)
            && plan != self.profile
        {
            self.profile = plan;
            self.forget_rules();
        }
        let required = self.pack.sku().entitlement_required;
        let to = if required && !admitted(ent) {
            plain("refusing")
        } else {
            match self.state.name {
                // Lifted: warning while a rule is still past warn, else stable.
                "refusing" if self.tenant_level() < Lv::Refuse => {
                    if self.tenant_level() >= Lv::Warn {
                        plain("warning")
                    } else {
                        plain("stable")
                    }
                }
                "boot" => plain("stable"),
                _ => self.state,
            }
        };
        self.finish(to, Vec::new())
    }

    /// An operator reset.
    pub fn reset(&mut self) -> MStep {
        self.forget_rules();
        // It cannot grant an entitlement the SKU requires.
        let to = if self.pack.sku().entitlement_required && !admitted(self.ent) {
            plain("refusing")
        } else {
            plain("stable")
        };
        self.finish(to, Vec::new())
    }
}

/// Whether signals of a tenant whose entitlement is in `state` are acted on.
fn admitted(state: &str) -> bool {
    matches!(
        state,
        "active" | "plan_change_pending" | "pending_cancellation"
    )
}

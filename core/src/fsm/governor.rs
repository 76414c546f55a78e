//! The [`Governor`] of one tenant and its transition function, [`step`].

use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

use super::{Decision, Dispatched, Event, InFlight, Reason, State, Step};
use crate::clock::Timestamp;
use crate::policy::{Block, Evaluation, Level, PolicyMemory};
use crate::sku::{ActionId, PolicyPack, ProfileDef, ProfileId, Rule, SignalId};

/// The governor of one tenant: FSM state plus the memory the FSM needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Governor {
    state: State,
    /// The tenant's policy profile.
    profile: ProfileId,
    /// Whether the tenant's entitlement is active (as last reported).
    entitled: bool,
    policy: PolicyMemory,
    /// Sequence number of the receipt that dispatched the in-flight set.
    flight_seq: u64,
    /// The in-flight set; non-empty only in `intervening`. (Both lists are
    /// thin: a pointer, not three words, in every tenant's state.)
    flight: ThinVec<InFlight>,
    /// Actions dispatched since the last `stable`, first dispatch first, no repeats.
    applied: ThinVec<ActionId>,
}

impl Governor {
    /// A governor in `boot` on the SKU's default profile, not entitled.
    pub fn new(pack: &dyn PolicyPack) -> Governor {
        Governor {
            state: State::Boot,
            profile: pack.sku().default_profile,
            entitled: false,
            policy: PolicyMemory::default(),
            flight_seq: 0,
            flight: ThinVec::new(),
            applied: ThinVec::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The current profile.
    pub fn profile(&self) -> ProfileId {
        self.profile
    }

    /// Whether the entitlement was last reported active.
    pub fn entitled(&self) -> bool {
        self.entitled
    }

    /// The tenant's level: the worst effective level over its rules.
    pub fn level(&self) -> Level {
        self.policy.level()
    }

    /// The in-flight set and the sequence number that dispatched it.
    pub fn in_flight(&self) -> (u64, &[InFlight]) {
        (self.flight_seq, &self.flight)
    }

    /// Actions applied since the last `stable`.
    pub fn applied(&self) -> &[ActionId] {
        &self.applied
    }

    /// The first part in which `self` and `other` differ (`None`: equal),
    /// to name it in a report.
    pub fn difference(&self, other: &Governor) -> Option<&'static str> {
        if self.state != other.state {
            Some("state")
        } else if self.profile != other.profile {
            Some("profile")
        } else if self.entitled != other.entitled {
            Some("entitlement flag")
        } else if self.policy != other.policy {
            Some("policy memory (rule streaks, recovery count, cooldowns, budget)")
        } else if self.flight_seq != other.flight_seq || self.flight != other.flight {
            Some("in-flight actions")
        } else if self.applied != other.applied {
            Some("applied actions")
        } else {
            None
        }
    }

    /// The policy memory (read-only).
    pub fn policy(&self) -> &PolicyMemory {
        &self.policy
    }

    /// Heap bytes held (for the idle-tenant memory budget).
    pub fn heap_bytes(&self) -> usize {
        self.policy.heap_bytes()
            + self.flight.capacity() * size_of::<InFlight>()
            + self.applied.capacity() * size_of::<ActionId>()
    }

    /// Checks a governor read from a checkpoint against `pack` and the
    /// tenant's head `seq`: every profile and action id in range and the
    /// rule memory shaped like the profile, so that no later step or view
    /// can index out of bounds, and the in-flight set decided at or before
    /// the head.
    pub fn check(&self, pack: &dyn PolicyPack, seq: u64) -> Result<(), String> {
        let sku = pack.sku();
        let Some(profile) = sku.profiles.get(usize::from(self.profile.0)) else {
            return Err(format!(
                "profile id `{}` is out of range: the sku has `{}` profiles",
                self.profile.0,
                sku.profiles.len()
            ));
        };
        let actions = sku.actions.len();
        let ids = self.flight.iter().map(|f| ("in-flight", f.action));
        let ids = ids.chain(self.applied.iter().map(|&a| ("applied", a)));
        for (list, action) in ids {
            if usize::from(action.0) >= actions {
                return Err(format!(
                    "{list} action id `{}` is out of range: the sku has `{actions}` actions",
                    action.0
                ));
            }
        }
        if self.flight_seq > seq {
            return Err(format!(
                "in-flight set decided at seq `{}`, after the head at seq `{seq}`",
                self.flight_seq
            ));
        }
        self.policy.check(profile, actions)
    }

    /// When a [`Event::Timer`] would do something, if ever.
    pub fn due(&self) -> Option<Timestamp> {
        match self.state {
            State::Intervening { deadline } => Some(deadline),
            State::Degraded { retry_at } if self.policy.level() >= Level::Intervene => {
                Some(retry_at)
            }
            State::Degraded { .. }
            | State::Boot
            | State::Stable
            | State::Warning
            | State::Refusing => None,
        }
    }

    /// Handles `event` at `now`; `seq` is the sequence number the deciding
    /// receipt will get (it keys dispatched actions).
    ///
    /// Returns `None` only for a [`Event::Timer`] with nothing due (no
    /// receipt); every other call is one receipt. One handler per event,
    /// each an exhaustive match over the state (no wildcard arm), so the
    /// table of DESIGN.md §5 reads event by event.
    pub fn step(
        &mut self,
        pack: &dyn PolicyPack,
        event: Event,
        now: Timestamp,
        seq: u64,
    ) -> Option<Step> {
        let from = self.state;
        let timing = pack.sku().governor;
        let mut out = Out {
            reason: Reason::Evaluated,
            evaluation: None,
            block: None,
            dispatch: Vec::new(),
        };
        let at = At {
            now,
            seq,
            retry_at: now.plus_secs(timing.degraded_retry_s),
        };
        let to = match event {
            Event::Signal { signal, value } => self.on_signal(pack, signal, value, at, &mut out),
            Event::ActionResult {
                decided,
                action,
                ok,
            } => self.on_action_result(decided, action, ok, at, &mut out),
            Event::Timer => self.on_timer(pack, at, &mut out)?,
            Event::Entitlement { active, profile } => {
                self.on_entitlement(pack, active, profile, &mut out)
            }
            Event::Reset => {
                out.reason = Reason::OperatorReset;
                self.policy.reset_rules();
                // A reset forgets the readings; it cannot grant an
                // entitlement the SKU requires.
                if pack.sku().entitlement_required && !self.entitled {
                    State::Refusing
                } else {
                    State::Stable
                }
            }
        };

        if matches!(to, State::Refusing | State::Stable) {
            self.flight.clear();
        }
        if to == State::Stable && from != State::Stable {
            self.undo_applied(pack, &mut out.dispatch);
        }
        self.state = to;
        Some(Step {
            from,
            to,
            decision: Decision {
                reason: out.reason,
                evaluation: out.evaluation,
                level: self.policy.level(),
                recovery_needed: timing.recovery_evaluations,
                block: out.block,
            },
            dispatch: out.dispatch,
        })
    }

    /// A reading: evaluated first; refused before anything else when the
    /// entitlement is missing or the reading is at the refuse level.
    fn on_signal(
        &mut self,
        pack: &dyn PolicyPack,
        signal: SignalId,
        value: f64,
        at: At,
        out: &mut Out,
    ) -> State {
        let sku = pack.sku();
        let from = self.state;
        let needed = sku.governor.recovery_evaluations;
        let ev = self.policy.evaluate(self.profile_def(pack), signal, value);
        out.evaluation = Some(ev);
        let refusal = if sku.entitlement_required && !self.entitled {
            Some(Reason::EntitlementInactive)
        } else if ev.level == Level::Refuse {
            Some(Reason::RefuseLevel)
        } else {
            None
        };
        match (from, refusal) {
            (State::Refusing, Some(reason)) => {
                out.reason = reason;
                State::Refusing
            }
            (State::Refusing, None) => self.lift_refusal(out),
            (
                State::Boot | State::Stable | State::Warning | State::Intervening { .. },
                Some(reason),
            )
            | (State::Degraded { .. }, Some(reason)) => out.refuse(reason),
            (State::Boot | State::Stable | State::Warning, None) => match (ev.level, ev.rule) {
                (Level::Intervene | Level::Refuse, Some(rule)) => {
                    self.intervene(pack, rule, at, out, State::Warning)
                }
                (Level::Warn | Level::Intervene | Level::Refuse, _) => State::Warning,
                (Level::Normal, _) if from == State::Warning => self.recover(ev, needed, out, from),
                (Level::Normal, _) => State::Stable,
            },
            (State::Intervening { deadline }, None) => {
                if ev.level >= Level::Intervene {
                    out.reason = Reason::StormGuard;
                }
                State::Intervening { deadline }
            }
            (State::Degraded { retry_at: due }, None) => match (ev.level, ev.rule) {
                (Level::Intervene | Level::Refuse, Some(rule)) if at.now >= due => {
                    out.reason = Reason::DegradedRetry;
                    let blocked = State::Degraded {
                        retry_at: at.retry_at,
                    };
                    self.intervene(pack, rule, at, out, blocked)
                }
                (Level::Intervene | Level::Refuse, _) => {
                    out.reason = Reason::RetryWait;
                    State::Degraded { retry_at: due }
                }
                (Level::Warn, _) => State::Degraded { retry_at: due },
                (Level::Normal, _) => self.recover(ev, needed, out, from),
            },
        }
    }

    /// The outcome of an action dispatched by receipt `decided`.
    fn on_action_result(
        &mut self,
        decided: u64,
        action: ActionId,
        ok: bool,
        at: At,
        out: &mut Out,
    ) -> State {
        match self.state {
            State::Intervening { deadline } => {
                let pending = self
                    .flight
                    .iter()
                    .position(|f| f.action == action && !f.ok)
                    .filter(|_| decided == self.flight_seq);
                match (pending, ok) {
                    (None, _) => {
                        out.reason = Reason::StaleResult;
                        State::Intervening { deadline }
                    }
                    (Some(_), false) => {
                        out.reason = Reason::ActionFailed;
                        self.flight.clear();
                        State::Degraded {
                            retry_at: at.retry_at,
                        }
                    }
                    (Some(index), true) => {
                        self.flight[index].ok = true;
                        if self.flight.iter().all(|f| f.ok) {
                            out.reason = Reason::AllConfirmed;
                            self.flight.clear();
                            State::Warning
                        } else {
                            out.reason = Reason::Confirmed;
                            State::Intervening { deadline }
                        }
                    }
                }
            }
            State::Boot => {
                out.reason = Reason::StaleResult;
                State::Stable
            }
            from @ (State::Stable | State::Warning | State::Degraded { .. } | State::Refusing) => {
                out.reason = Reason::StaleResult;
                from
            }
        }
    }

    /// A timer check: `None` when nothing is due (no receipt).
    fn on_timer(&mut self, pack: &dyn PolicyPack, at: At, out: &mut Out) -> Option<State> {
        match self.state {
            State::Intervening { deadline } => {
                if at.now < deadline {
                    return None;
                }
                out.reason = Reason::InterventionTimeout;
                self.flight.clear();
                Some(State::Degraded {
                    retry_at: at.retry_at,
                })
            }
            State::Degraded { retry_at: due } => {
                let trigger = self.policy.trigger(self.profile_def(pack));
                match trigger {
                    Some(rule) if at.now >= due => {
                        out.reason = Reason::DegradedRetry;
                        let blocked = State::Degraded {
                            retry_at: at.retry_at,
                        };
                        Some(self.intervene(pack, rule, at, out, blocked))
                    }
                    Some(_) | None => None,
                }
            }
            State::Boot | State::Stable | State::Warning | State::Refusing => None,
        }
    }

    /// The entitlement changed (or was re-stated), perhaps with a new profile.
    fn on_entitlement(
        &mut self,
        pack: &dyn PolicyPack,
        active: bool,
        profile: Option<ProfileId>,
        out: &mut Out,
    ) -> State {
        self.entitled = active;
        if let Some(profile) = profile
            && profile != self.profile
        {
            self.profile = profile;
            self.policy.reset_rules();
        }
        if pack.sku().entitlement_required && !active {
            return out.refuse(Reason::EntitlementInactive);
        }
        match self.state {
            State::Refusing => self.lift_refusal(out),
            State::Boot => {
                out.reason = Reason::EntitlementRecorded;
                State::Stable
            }
            from @ (State::Stable
            | State::Warning
            | State::Intervening { .. }
            | State::Degraded { .. }) => {
                out.reason = Reason::EntitlementRecorded;
                from
            }
        }
    }

    fn profile_def(&self, pack: &dyn PolicyPack) -> &'static ProfileDef {
        pack.sku().profile(self.profile)
    }

    /// Dispatches `rule`'s actions if cooldown and budget allow, else stays in `blocked`.
    fn intervene(
        &mut self,
        pack: &dyn PolicyPack,
        rule: &'static Rule,
        at: At,
        out: &mut Out,
        blocked: State,
    ) -> State {
        let At { now, seq, .. } = at;
        let profile = self.profile_def(pack);
        match self.policy.admit(profile, rule.actions, now) {
            Ok(actions) => {
                let keep = pack.sku().largest_budget();
                self.policy.record_dispatch(keep, &actions, now);
                self.flight_seq = seq;
                self.flight.clear();
                for &action in &actions {
                    self.flight.push(InFlight { action, ok: false });
                    if !self.applied.contains(&action) {
                        self.applied.push(action);
                    }
                    out.dispatch.push(Dispatched {
                        action,
                        undo: false,
                    });
                }
                if out.reason != Reason::DegradedRetry {
                    out.reason = Reason::Dispatched;
                }
                State::Intervening {
                    deadline: now.plus_secs(pack.sku().governor.intervention_timeout_s),
                }
            }
            Err(block) => {
                out.reason = Reason::Blocked;
                out.block = Some(block);
                blocked
            }
        }
    }

    /// Warning/degraded on a normal reading: stable once recovered.
    fn recover(&self, ev: Evaluation, needed: u16, out: &mut Out, from: State) -> State {
        if ev.rule.is_some() && ev.recovery >= needed {
            out.reason = Reason::Recovered;
            State::Stable
        } else {
            from
        }
    }

    /// Refusing, with the entitlement fine: still refusing at refuse level;
    /// `warning` while a rule is still at `warn` or `intervene` (what was
    /// applied stays, and is undone on recovery, so lifting a refusal never
    /// undoes an action the readings still call for); `stable` (undoing what
    /// was applied) when every rule is normal.
    fn lift_refusal(&self, out: &mut Out) -> State {
        let level = self.policy.level();
        if level >= Level::Refuse {
            out.reason = Reason::StillRefusing;
            return State::Refusing;
        }
        out.reason = Reason::RefusalLifted;
        if level >= Level::Warn {
            State::Warning
        } else {
            State::Stable
        }
    }

    /// Dispatches the undo of every applied action once, and forgets them.
    fn undo_applied(&mut self, pack: &dyn PolicyPack, dispatch: &mut Vec<Dispatched>) {
        let sku = pack.sku();
        for action in self.applied.drain(..) {
            if let Some(undo) = sku.action(action).undo {
                let entry = Dispatched {
                    action: undo,
                    undo: true,
                };
                if !dispatch.contains(&entry) {
                    dispatch.push(entry);
                }
            }
        }
    }
}

/// The transition function as a free function: [`Governor::step`].
pub fn step(
    governor: &mut Governor,
    pack: &dyn PolicyPack,
    event: Event,
    now: Timestamp,
    seq: u64,
) -> Option<Step> {
    governor.step(pack, event, now, seq)
}

/// The time of a step and what follows from it.
#[derive(Clone, Copy)]
struct At {
    /// When the step happens.
    now: Timestamp,
    /// The deciding receipt's sequence number.
    seq: u64,
    /// When a degraded tenant may dispatch again if it degrades now.
    retry_at: Timestamp,
}

/// What a step accumulates besides the next state.
struct Out {
    reason: Reason,
    evaluation: Option<Evaluation>,
    block: Option<Block>,
    dispatch: Vec<Dispatched>,
}

impl Out {
    fn refuse(&mut self, reason: Reason) -> State {
        self.reason = reason;
        State::Refusing
    }
}

//! The governor state machine of one tenant (DESIGN.md §5).
//!
//! [`Governor::step`] is a deterministic function of the governor's value,
//! the [`Event`], the injected time, the deciding receipt's sequence number
//! and the [`PolicyPack`]: no clock, no I/O. The registry writes one receipt
//! per step and runs the [`Dispatched`] effects.
//!
//! Choices where DESIGN.md is silent:
//! - every transition *into* `stable` from another state (recovery, refusal
//!   lifted, operator reset) dispatches the `undo` of every action applied
//!   since the last `stable`, once each; undo dispatches consume neither
//!   cooldown nor budget;
//! - entering `refusing` or `stable` drops the in-flight set; results that
//!   arrive later are recorded as stale;
//! - a blocked retry in `degraded` re-arms `retry_at` (so a tenant blocked by
//!   its budget does not write a timer receipt on every tick).

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::policy::{Block, Evaluation, Level, PolicyMemory};
use crate::sku::{ActionId, PolicyPack, ProfileDef, ProfileId, Rule, SignalId};

/// A governor state; timers are deadlines inside the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A tenant no event was seen for; its first event is handled like `stable`.
    Boot,
    /// Nothing to do.
    Stable,
    /// A rule is at `warn` (or the tenant has not recovered yet).
    Warning,
    /// An action set is in flight; it degrades if not confirmed by `deadline`.
    Intervening {
        /// When the in-flight set times out.
        #[serde(with = "millis")]
        deadline: Timestamp,
    },
    /// An intervention failed or timed out; dispatch again from `retry_at`.
    Degraded {
        /// The earliest time of the next dispatch.
        #[serde(with = "millis")]
        retry_at: Timestamp,
    },
    /// The tenant is refused (refuse level or no active entitlement).
    Refusing,
}

impl State {
    /// Every state name, in lifecycle order (for metrics).
    pub const NAMES: [&'static str; 6] = [
        "boot",
        "stable",
        "warning",
        "intervening",
        "degraded",
        "refusing",
    ];

    /// The lowercase name used in receipts and views.
    pub const fn name(self) -> &'static str {
        match self {
            State::Boot => "boot",
            State::Stable => "stable",
            State::Warning => "warning",
            State::Intervening { .. } => "intervening",
            State::Degraded { .. } => "degraded",
            State::Refusing => "refusing",
        }
    }

    /// Index of [`State::name`] in [`State::NAMES`].
    pub const fn index(self) -> usize {
        match self {
            State::Boot => 0,
            State::Stable => 1,
            State::Warning => 2,
            State::Intervening { .. } => 3,
            State::Degraded { .. } => 4,
            State::Refusing => 5,
        }
    }
}

/// Something that happened to a tenant, as the FSM sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// A reading of a signal.
    Signal {
        /// Which signal.
        signal: SignalId,
        /// The reading (finite, already range-checked at ingress).
        value: f64,
    },
    /// The outcome of a dispatched action, after the actuator's own retries.
    ActionResult {
        /// Sequence number of the receipt that dispatched it.
        decided: u64,
        /// The action.
        action: ActionId,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A timer check: fires whatever deadline is due at `now`.
    Timer,
    /// The entitlement changed (or was re-stated).
    Entitlement {
        /// Whether the entitlement is active after the event.
        active: bool,
        /// The tenant's new profile, when the plan changed.
        profile: Option<ProfileId>,
    },
    /// An operator reset the tenant.
    Reset,
}

/// Why the FSM decided what it did (named in the receipt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A reading changed nothing beyond its level.
    Evaluated,
    /// A signal while an entitlement is required but not active.
    EntitlementInactive,
    /// A reading at the refuse level.
    RefuseLevel,
    /// Intervene level: the rule's actions were dispatched.
    Dispatched,
    /// Intervene level, but a cooldown or the budget blocked the dispatch.
    Blocked,
    /// Intervene level while an action set is in flight: not re-dispatched.
    StormGuard,
    /// Degraded and breaching, but `retry_at` has not passed.
    RetryWait,
    /// Cleared long enough: back to stable.
    Recovered,
    /// Refusing, and the refusal no longer holds: back to stable.
    RefusalLifted,
    /// Still refusing.
    StillRefusing,
    /// One in-flight action confirmed, others pending.
    Confirmed,
    /// Every in-flight action confirmed.
    AllConfirmed,
    /// An in-flight action failed.
    ActionFailed,
    /// A result for an action that is not in flight.
    StaleResult,
    /// The intervention deadline passed.
    InterventionTimeout,
    /// Degraded retry: dispatched again.
    DegradedRetry,
    /// An entitlement event that needs no transition.
    EntitlementRecorded,
    /// An operator reset.
    OperatorReset,
}

impl Reason {
    /// The snake_case name used in receipts.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Evaluated => "evaluated",
            Reason::EntitlementInactive => "entitlement_inactive",
            Reason::RefuseLevel => "refuse_level",
            Reason::Dispatched => "dispatched",
            Reason::Blocked => "blocked",
            Reason::StormGuard => "storm_guard",
            Reason::RetryWait => "retry_wait",
            Reason::Recovered => "recovered",
            Reason::RefusalLifted => "refusal_lifted",
            Reason::StillRefusing => "still_refusing",
            Reason::Confirmed => "confirmed",
            Reason::AllConfirmed => "all_confirmed",
            Reason::ActionFailed => "action_failed",
            Reason::StaleResult => "stale_result",
            Reason::InterventionTimeout => "intervention_timeout",
            Reason::DegradedRetry => "degraded_retry",
            Reason::EntitlementRecorded => "entitlement_recorded",
            Reason::OperatorReset => "operator_reset",
        }
    }
}

/// What the FSM decided, for the receipt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Why.
    pub reason: Reason,
    /// The policy's view of the reading, for signals.
    pub evaluation: Option<Evaluation>,
    /// The tenant's level after the step (worst rule).
    pub level: Level,
    /// Consecutive cleared evaluations needed to recover.
    pub recovery_needed: u16,
    /// What blocked a dispatch, if anything did.
    pub block: Option<Block>,
}

/// One action the step dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dispatched {
    /// The action to run.
    pub action: ActionId,
    /// Whether it is the `undo` of an earlier action (no budget, no cooldown).
    pub undo: bool,
}

/// The outcome of one step: exactly one receipt's worth.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// State before.
    pub from: State,
    /// State after (equal to `from` when there is no transition).
    pub to: State,
    /// The decision, for the receipt.
    pub decision: Decision,
    /// Actions to dispatch, keyed by the deciding receipt's sequence number.
    pub dispatch: Vec<Dispatched>,
}

/// One action of the in-flight set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// The action.
    pub action: ActionId,
    /// Whether its success was confirmed.
    pub ok: bool,
}

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
    /// The in-flight set; non-empty only in `intervening`.
    flight: Vec<InFlight>,
    /// Actions dispatched since the last `stable`, first dispatch first, no repeats.
    applied: Vec<ActionId>,
}

/// Timestamps in checkpoints as plain milliseconds (any `i64` round-trips,
/// unlike RFC 3339 text).
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::clock::Timestamp;

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.as_millis())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        i64::deserialize(d).map(Timestamp)
    }
}

/// Serde for the id newtypes, so governors can be checkpointed.
mod ids {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::sku::{ActionId, ProfileId};

    impl Serialize for ActionId {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.serialize(s)
        }
    }

    impl<'de> Deserialize<'de> for ActionId {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            u16::deserialize(d).map(ActionId)
        }
    }

    impl Serialize for ProfileId {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.serialize(s)
        }
    }

    impl<'de> Deserialize<'de> for ProfileId {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            u16::deserialize(d).map(ProfileId)
        }
    }
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
            flight: Vec::new(),
            applied: Vec::new(),
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
    /// receipt); every other call is one receipt.
    pub fn step(
        &mut self,
        pack: &dyn PolicyPack,
        event: Event,
        now: Timestamp,
        seq: u64,
    ) -> Option<Step> {
        let sku = pack.sku();
        let from = self.state;
        let timing = sku.governor;
        let retry_at = now.plus_secs(timing.degraded_retry_s);
        let mut out = Out {
            reason: Reason::Evaluated,
            evaluation: None,
            block: None,
            dispatch: Vec::new(),
        };
        let evaluation = match event {
            Event::Signal { signal, value } => {
                let ev = self.policy.evaluate(self.profile_def(pack), signal, value);
                out.evaluation = Some(ev);
                Some(ev)
            }
            Event::ActionResult { .. }
            | Event::Timer
            | Event::Entitlement { .. }
            | Event::Reset => None,
        };
        // A signal is refused before anything else when the entitlement is
        // missing or the reading is at the refuse level.
        let refusal = evaluation.and_then(|ev| {
            if sku.entitlement_required && !self.entitled {
                Some(Reason::EntitlementInactive)
            } else if ev.level == Level::Refuse {
                Some(Reason::RefuseLevel)
            } else {
                None
            }
        });

        let to = match (from, event) {
            (State::Boot | State::Stable | State::Warning, Event::Signal { .. }) => {
                match (refusal, evaluation) {
                    (Some(reason), _) => out.refuse(reason),
                    (None, Some(ev)) => match (ev.level, ev.rule) {
                        (Level::Intervene | Level::Refuse, Some(rule)) => {
                            self.intervene(pack, rule, now, seq, &mut out, State::Warning)
                        }
                        (Level::Warn | Level::Intervene | Level::Refuse, _) => State::Warning,
                        (Level::Normal, _) if from == State::Warning => {
                            self.recover(ev, timing.recovery_evaluations, &mut out, from)
                        }
                        (Level::Normal, _) => State::Stable,
                    },
                    (None, None) => from,
                }
            }
            (State::Intervening { deadline }, Event::Signal { .. }) => match refusal {
                Some(reason) => out.refuse(reason),
                None => {
                    if evaluation.is_some_and(|ev| ev.level >= Level::Intervene) {
                        out.reason = Reason::StormGuard;
                    }
                    State::Intervening { deadline }
                }
            },
            (State::Degraded { retry_at: due }, Event::Signal { .. }) => {
                match (refusal, evaluation) {
                    (Some(reason), _) => out.refuse(reason),
                    (None, Some(ev)) => match (ev.level, ev.rule) {
                        (Level::Intervene | Level::Refuse, Some(rule)) if now >= due => {
                            out.reason = Reason::DegradedRetry;
                            let blocked = State::Degraded { retry_at };
                            self.intervene(pack, rule, now, seq, &mut out, blocked)
                        }
                        (Level::Intervene | Level::Refuse, _) => {
                            out.reason = Reason::RetryWait;
                            State::Degraded { retry_at: due }
                        }
                        (Level::Warn, _) => State::Degraded { retry_at: due },
                        (Level::Normal, _) => {
                            self.recover(ev, timing.recovery_evaluations, &mut out, from)
                        }
                    },
                    (None, None) => from,
                }
            }
            (State::Refusing, Event::Signal { .. }) => match refusal {
                Some(reason) => {
                    out.reason = reason;
                    State::Refusing
                }
                None => self.lift_refusal(&mut out),
            },

            (
                State::Intervening { deadline },
                Event::ActionResult {
                    decided,
                    action,
                    ok,
                },
            ) => {
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
                        State::Degraded { retry_at }
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
            (State::Boot, Event::ActionResult { .. }) => {
                out.reason = Reason::StaleResult;
                State::Stable
            }
            (
                State::Stable | State::Warning | State::Degraded { .. } | State::Refusing,
                Event::ActionResult { .. },
            ) => {
                out.reason = Reason::StaleResult;
                from
            }

            (State::Intervening { deadline }, Event::Timer) => {
                if now < deadline {
                    return None;
                }
                out.reason = Reason::InterventionTimeout;
                self.flight.clear();
                State::Degraded { retry_at }
            }
            (State::Degraded { retry_at: due }, Event::Timer) => {
                let profile = self.profile_def(pack);
                let trigger = self.policy.trigger(profile);
                match trigger {
                    Some(rule) if now >= due => {
                        out.reason = Reason::DegradedRetry;
                        let blocked = State::Degraded { retry_at };
                        self.intervene(pack, rule, now, seq, &mut out, blocked)
                    }
                    Some(_) | None => return None,
                }
            }
            (State::Boot | State::Stable | State::Warning | State::Refusing, Event::Timer) => {
                return None;
            }

            (
                State::Boot
                | State::Stable
                | State::Warning
                | State::Intervening { .. }
                | State::Degraded { .. }
                | State::Refusing,
                Event::Entitlement { active, profile },
            ) => {
                self.entitled = active;
                if let Some(profile) = profile
                    && profile != self.profile
                {
                    self.profile = profile;
                    self.policy.reset_rules();
                }
                if sku.entitlement_required && !active {
                    out.refuse(Reason::EntitlementInactive)
                } else {
                    match from {
                        State::Refusing => self.lift_refusal(&mut out),
                        State::Boot => {
                            out.reason = Reason::EntitlementRecorded;
                            State::Stable
                        }
                        State::Stable
                        | State::Warning
                        | State::Intervening { .. }
                        | State::Degraded { .. } => {
                            out.reason = Reason::EntitlementRecorded;
                            from
                        }
                    }
                }
            }

            (
                State::Boot
                | State::Stable
                | State::Warning
                | State::Intervening { .. }
                | State::Degraded { .. }
                | State::Refusing,
                Event::Reset,
            ) => {
                out.reason = Reason::OperatorReset;
                self.policy.reset_rules();
                State::Stable
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

    fn profile_def(&self, pack: &dyn PolicyPack) -> &'static ProfileDef {
        pack.sku().profile(self.profile)
    }

    /// Dispatches `rule`'s actions if cooldown and budget allow, else stays in `blocked`.
    fn intervene(
        &mut self,
        pack: &dyn PolicyPack,
        rule: &'static Rule,
        now: Timestamp,
        seq: u64,
        out: &mut Out,
        blocked: State,
    ) -> State {
        let profile = self.profile_def(pack);
        match self.policy.admit(profile, rule.actions, now) {
            Ok(actions) => {
                self.policy.record_dispatch(profile, &actions, now);
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

    /// Refusing, with the entitlement fine: stable unless still at refuse level.
    fn lift_refusal(&self, out: &mut Out) -> State {
        if self.policy.level() < Level::Refuse {
            out.reason = Reason::RefusalLifted;
            State::Stable
        } else {
            out.reason = Reason::StillRefusing;
            State::Refusing
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sku::{ActionDef, Adapter, Direction, GovernorTiming, IngressDef, SignalDef, Sku};

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
        ingress: IngressDef {
            pubsub_audience: None,
            max_body_bytes: 1024,
        },
    };

    struct Pack;

    impl PolicyPack for Pack {
        fn sku(&self) -> &'static Sku {
            &SKU
        }
        fn rule(&self, _: ProfileId, signal: SignalId) -> Option<&'static Rule> {
            RULES.iter().find(|r| r.signal == signal)
        }
        fn signal_by_name(&self, name: &str) -> Option<SignalId> {
            (name == "load").then_some(LOAD)
        }
        fn profile_by_name(&self, name: &str) -> Option<ProfileId> {
            (name == "standard").then_some(ProfileId(0))
        }
    }

    fn s(secs: i64) -> Timestamp {
        Timestamp(secs * 1000)
    }

    fn signal(g: &mut Governor, value: f64, at: i64, seq: u64) -> Step {
        g.step(
            &Pack,
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
        let mut g = Governor::new(&Pack);
        let step = signal(&mut g, 60.0, 0, 1);
        assert_eq!((step.from, step.to), (State::Boot, State::Warning));
        let mut g = Governor::new(&Pack);
        assert_eq!(g.step(&Pack, Event::Timer, s(0), 1), None, "nothing due");
        assert_eq!(g.state(), State::Boot);
    }

    #[test]
    fn intervention_timeout_retry_and_recovery() {
        let mut g = Governor::new(&Pack);
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
        assert_eq!(g.step(&Pack, Event::Timer, s(9), 3), None);
        let timeout = g.step(&Pack, Event::Timer, s(10), 3).unwrap();
        assert_eq!(timeout.to, State::Degraded { retry_at: s(60) });
        assert_eq!(g.due(), Some(s(60)));
        // Retry at 60 is blocked by the 100 s cooldown: re-armed, named.
        let blocked = g.step(&Pack, Event::Timer, s(60), 4).unwrap();
        assert_eq!(blocked.to, State::Degraded { retry_at: s(110) });
        assert!(
            matches!(blocked.decision.block, Some(Block::Cooldown { until, .. }) if until == s(100))
        );
        let retry = g.step(&Pack, Event::Timer, s(110), 5).unwrap();
        assert_eq!(retry.decision.reason, Reason::DegradedRetry);
        assert_eq!(retry.to, State::Intervening { deadline: s(120) });
        // A stale result (old decision) changes nothing; the right one confirms.
        let stale = Event::ActionResult {
            decided: 1,
            action: ActionId(0),
            ok: true,
        };
        assert_eq!(
            g.step(&Pack, stale, s(111), 6).unwrap().decision.reason,
            Reason::StaleResult
        );
        let ok = Event::ActionResult {
            decided: 5,
            action: ActionId(0),
            ok: true,
        };
        assert_eq!(g.step(&Pack, ok, s(112), 7).unwrap().to, State::Warning);
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
        let mut g = Governor::new(&Pack);
        signal(&mut g, 120.0, 0, 1);
        let failed = Event::ActionResult {
            decided: 1,
            action: ActionId(0),
            ok: false,
        };
        assert_eq!(
            g.step(&Pack, failed, s(1), 2).unwrap().to,
            State::Degraded { retry_at: s(51) }
        );
        let refused = signal(&mut g, 600.0, 2, 3);
        assert_eq!(
            (refused.to, refused.decision.reason),
            (State::Refusing, Reason::RefuseLevel)
        );
        assert_eq!(signal(&mut g, 550.0, 3, 4).to, State::Refusing);
        let lifted = signal(&mut g, 60.0, 4, 5);
        assert_eq!(
            (lifted.to, lifted.decision.reason),
            (State::Stable, Reason::RefusalLifted)
        );
        let reset = g.step(&Pack, Event::Reset, s(5), 6).unwrap();
        assert_eq!((reset.from, reset.to), (State::Stable, State::Stable));
    }
}

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
//!
//! The vocabulary ([`State`], [`Event`], [`Decision`], [`Step`], ...) is
//! here; [`Governor`] and [`step`] are in `governor.rs`, checkpoint serde in
//! `checkpoint.rs`, the transitions as data ([`TRANSITIONS`]) in `table.rs`.
//!
//! [`PolicyPack`]: crate::sku::PolicyPack

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::policy::{Block, Evaluation, Level};
use crate::sku::{ActionId, ProfileId, SignalId};

mod checkpoint;
mod governor;
mod table;

pub use governor::{Governor, step};
pub use table::{Applies, TRANSITIONS, Transition, charted, transitions};

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
        #[serde(with = "checkpoint::millis")]
        deadline: Timestamp,
    },
    /// An intervention failed or timed out; dispatch again from `retry_at`.
    Degraded {
        /// The earliest time of the next dispatch.
        #[serde(with = "checkpoint::millis")]
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

#[cfg(test)]
mod tests;

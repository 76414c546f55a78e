//! The governor's transitions as data (DESIGN.md §5), for what draws or
//! documents the FSM (`ggen explain`, the generated README's diagram).
//!
//! The table is proved against [`step`](super::step) by the runtime's tests:
//! random walks through the governor of a SKU with and without an
//! entitlement requirement find every [charted](charted) step in the table
//! and every table edge among the steps, so it cannot drift from the code.

use super::{Reason, State};

/// Which SKUs a transition can happen for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// Every SKU.
    Always,
    /// Only SKUs that require an entitlement (`entitlement.required`).
    WithEntitlement,
    /// Only SKUs that do not (a new tenant of the others is refused until
    /// its entitlement is active).
    WithoutEntitlement,
}

/// One charted transition: `from` → `to`, decided for `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before ([`State::name`]).
    pub from: &'static str,
    /// The state after ([`State::name`]).
    pub to: &'static str,
    /// Why (the receipt's `decision.reason`).
    pub reason: Reason,
    /// Which SKUs it can happen for.
    pub applies: Applies,
}

impl Transition {
    /// Whether it can happen for a SKU with `entitlement_required`.
    pub const fn applies_to(&self, entitlement_required: bool) -> bool {
        match self.applies {
            Applies::Always => true,
            Applies::WithEntitlement => entitlement_required,
            Applies::WithoutEntitlement => !entitlement_required,
        }
    }
}

/// Whether a step is charted: every change of state, plus the two steps
/// that stay put but that DESIGN §5 names: a dispatch blocked by cooldown or
/// budget, and the storm guard.
pub fn charted(from: State, to: State, reason: Reason) -> bool {
    from.name() != to.name() || matches!(reason, Reason::Blocked | Reason::StormGuard)
}

/// A transition only SKUs that require an entitlement make.
const fn entitled_only(from: &'static str, to: &'static str, reason: Reason) -> Transition {
    Transition {
        from,
        to,
        reason,
        applies: Applies::WithEntitlement,
    }
}

const fn t(from: &'static str, to: &'static str, reason: Reason) -> Transition {
    let applies = match reason {
        Reason::EntitlementInactive => Applies::WithEntitlement,
        _ => Applies::Always,
    };
    Transition {
        from,
        to,
        reason,
        applies,
    }
}

/// A new tenant's first input (a signal, a reset), which only SKUs without
/// an entitlement requirement act upon: a new tenant is never entitled.
const fn first_input(to: &'static str, reason: Reason) -> Transition {
    Transition {
        from: "boot",
        to,
        reason,
        applies: Applies::WithoutEntitlement,
    }
}

/// Every charted transition of the governor, grouped by source state in
/// lifecycle order.
pub const TRANSITIONS: &[Transition] = &[
    // A new tenant's first input is handled as in `stable`.
    first_input("stable", Reason::Evaluated),
    t("boot", "stable", Reason::EntitlementRecorded),
    t("boot", "stable", Reason::StaleResult),
    first_input("stable", Reason::OperatorReset),
    first_input("warning", Reason::Evaluated),
    first_input("warning", Reason::Blocked),
    first_input("intervening", Reason::Dispatched),
    first_input("refusing", Reason::RefuseLevel),
    t("boot", "refusing", Reason::EntitlementInactive),
    entitled_only("boot", "refusing", Reason::OperatorReset),
    t("stable", "warning", Reason::Evaluated),
    t("stable", "warning", Reason::Blocked),
    t("stable", "intervening", Reason::Dispatched),
    t("stable", "refusing", Reason::RefuseLevel),
    t("stable", "refusing", Reason::EntitlementInactive),
    // A stale action result moves a new tenant to stable unentitled.
    entitled_only("stable", "refusing", Reason::OperatorReset),
    t("warning", "stable", Reason::Recovered),
    t("warning", "stable", Reason::OperatorReset),
    t("warning", "warning", Reason::Blocked),
    t("warning", "intervening", Reason::Dispatched),
    t("warning", "refusing", Reason::RefuseLevel),
    t("warning", "refusing", Reason::EntitlementInactive),
    t("intervening", "stable", Reason::OperatorReset),
    t("intervening", "warning", Reason::AllConfirmed),
    t("intervening", "intervening", Reason::StormGuard),
    t("intervening", "degraded", Reason::ActionFailed),
    t("intervening", "degraded", Reason::InterventionTimeout),
    t("intervening", "refusing", Reason::RefuseLevel),
    t("intervening", "refusing", Reason::EntitlementInactive),
    t("degraded", "stable", Reason::Recovered),
    t("degraded", "stable", Reason::OperatorReset),
    t("degraded", "intervening", Reason::DegradedRetry),
    t("degraded", "degraded", Reason::Blocked),
    t("degraded", "refusing", Reason::RefuseLevel),
    t("degraded", "refusing", Reason::EntitlementInactive),
    t("refusing", "stable", Reason::RefusalLifted),
    t("refusing", "warning", Reason::RefusalLifted),
    t("refusing", "stable", Reason::OperatorReset),
];

/// The transitions that can happen for a SKU with `entitlement_required`.
pub fn transitions(entitlement_required: bool) -> impl Iterator<Item = &'static Transition> {
    TRANSITIONS
        .iter()
        .filter(move |t| t.applies_to(entitlement_required))
}

//! Google Cloud Marketplace, as the decision core sees it: what a
//! notification records ([`Notice`]), how Google's entitlement states map
//! onto the tenant's [`EntitlementState`], and which Procurement API call
//! the governor makes for what it read ([`decide`]).
//!
//! No I/O here: the service reads the entitlement (or account) from the
//! Procurement API, hands the result to [`decide`], records the notice on
//! the tenant's chain, and runs the call; the call's outcome comes back as
//! a `procurement` receipt.

use std::fmt;
use std::str::FromStr;

use crate::entitlement::EntitlementState;
use crate::sku::{MarketplaceDef, ProfileId};

/// The longest text kept from a field of a notification or an entitlement.
pub const MAX_FIELD: usize = 128;

/// The event types Google documents; anything else is receipted as
/// rejected and acknowledged.
pub const EVENT_TYPES: [&str; 16] = [
    "ACCOUNT_ACTIVE",
    "ACCOUNT_CREATION_REQUESTED",
    "ACCOUNT_DELETED",
    "ENTITLEMENT_ACTIVE",
    "ENTITLEMENT_CANCELLATION_REVERTED",
    "ENTITLEMENT_CANCELLED",
    "ENTITLEMENT_CANCELLING",
    "ENTITLEMENT_CREATION_REQUESTED",
    "ENTITLEMENT_DELETED",
    "ENTITLEMENT_OFFER_ACCEPTED",
    "ENTITLEMENT_OFFER_ENDED",
    "ENTITLEMENT_PENDING_CANCELLATION",
    "ENTITLEMENT_PLAN_CHANGED",
    "ENTITLEMENT_PLAN_CHANGE_CANCELLED",
    "ENTITLEMENT_PLAN_CHANGE_REQUESTED",
    "ENTITLEMENT_RENEWED",
];

/// Whether `event_type` is one Google documents.
pub fn known_event_type(event_type: &str) -> bool {
    EVENT_TYPES.binary_search(&event_type).is_ok()
}

/// The tenant state a Google entitlement state (`ENTITLEMENT_ACTIVE`, …)
/// stands for; `None` for states the governor does not follow
/// (`ENTITLEMENT_STATE_UNSPECIFIED`, unknown values).
pub fn state_of(google: &str) -> Option<EntitlementState> {
    use EntitlementState as S;
    Some(match google {
        "ENTITLEMENT_ACTIVATION_REQUESTED" => S::Pending,
        "ENTITLEMENT_ACTIVE" => S::Active,
        "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL" | "ENTITLEMENT_PENDING_PLAN_CHANGE" => {
            S::PlanChangePending
        }
        "ENTITLEMENT_PENDING_CANCELLATION" => S::PendingCancellation,
        "ENTITLEMENT_SUSPENDED" => S::Suspended,
        "ENTITLEMENT_CANCELLED" => S::Cancelled,
        _ => return None,
    })
}

/// What a Marketplace notification and the Procurement read it caused
/// tell, as recorded on the tenant's entitlement receipt
/// (`event.marketplace`). Every text is bounded by [`MAX_FIELD`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notice {
    /// The notification's `eventType`.
    pub event_type: String,
    /// The entitlement id, for entitlement notifications.
    pub entitlement: Option<String>,
    /// The account id (the tenant).
    pub account: Option<String>,
    /// The entitlement's (or account's) state as read from the Procurement API.
    pub state: Option<String>,
    /// The entitlement's plan as read.
    pub plan: Option<String>,
}

/// `text`, cut to [`MAX_FIELD`] characters.
pub fn bounded(text: &str) -> String {
    text.chars().take(MAX_FIELD).collect()
}

/// A Partner Procurement API call the governor makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// `entitlements/{id}:approve`.
    Approve,
    /// `entitlements/{id}:reject`.
    Reject,
    /// `entitlements/{id}:approvePlanChange`.
    ApprovePlanChange,
    /// `entitlements/{id}:rejectPlanChange`.
    RejectPlanChange,
    /// `accounts/{id}:approve` (the `signup` approval).
    ApproveAccount,
}

impl Call {
    /// Every call.
    pub const ALL: [Call; 5] = [
        Call::Approve,
        Call::Reject,
        Call::ApprovePlanChange,
        Call::RejectPlanChange,
        Call::ApproveAccount,
    ];

    /// The name receipts and idempotency keys use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Call::Approve => "approve",
            Call::Reject => "reject",
            Call::ApprovePlanChange => "approve_plan_change",
            Call::RejectPlanChange => "reject_plan_change",
            Call::ApproveAccount => "approve_account",
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Call {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Call::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| format!("unknown procurement call `{}`", bounded(name)))
    }
}

/// A call decided, with what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The call.
    pub call: Call,
    /// The entitlement or account id it acts on.
    pub target: String,
    /// `pendingPlanName` of a plan change, or the reason of a rejection.
    pub argument: Option<String>,
}

/// What the Procurement API said about an entitlement.
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    /// The entitlement id.
    pub id: &'a str,
    /// Google's state (`ENTITLEMENT_ACTIVATION_REQUESTED`, …).
    pub state: &'a str,
    /// The current plan.
    pub plan: Option<&'a str>,
    /// The plan a pending change moves to.
    pub new_pending_plan: Option<&'a str>,
}

/// The profile an entitlement's current plan maps to (`None`: no plan, or
/// an unmapped one: the tenant keeps its profile).
pub fn profile(def: &MarketplaceDef, read: &Read<'_>) -> Option<ProfileId> {
    read.plan.and_then(|plan| def.profile(plan))
}

/// The call the governor makes for an entitlement it read, `accepted`
/// telling whether the tenant's state machine took the notification (a
/// refused activation request is an account's second live entitlement).
/// Only with `auto_approve`: otherwise the provider approves elsewhere.
pub fn decide(def: &MarketplaceDef, read: &Read<'_>, accepted: bool) -> Option<Planned> {
    if !def.auto_approve {
        return None;
    }
    let target = read.id.to_owned();
    let unmapped = |plan: Option<&str>| {
        format!(
            "plan `{}` is not offered by this product's governor",
            bounded(plan.unwrap_or(""))
        )
    };
    match read.state {
        "ENTITLEMENT_ACTIVATION_REQUESTED" if !accepted => Some(Planned {
            call: Call::Reject,
            target,
            argument: Some(
                "the account already holds a live entitlement to this product".to_owned(),
            ),
        }),
        "ENTITLEMENT_ACTIVATION_REQUESTED" => match read.plan.and_then(|p| def.profile(p)) {
            Some(_) => Some(Planned {
                call: Call::Approve,
                target,
                argument: None,
            }),
            None => Some(Planned {
                call: Call::Reject,
                target,
                argument: Some(unmapped(read.plan)),
            }),
        },
        "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL" => {
            let pending = read.new_pending_plan?;
            let call = if def.profile(pending).is_some() {
                Call::ApprovePlanChange
            } else {
                Call::RejectPlanChange
            };
            Some(Planned {
                call,
                target,
                argument: Some(pending.to_owned()),
            })
        }
        _ => None,
    }
}

/// The call for an account read with its `signup` approval in
/// `signup_state` (`PENDING`, `APPROVED`, `REJECTED`), with `auto_approve`.
pub fn decide_account(
    def: &MarketplaceDef,
    id: &str,
    signup_state: Option<&str>,
) -> Option<Planned> {
    (def.auto_approve && signup_state == Some("PENDING")).then(|| Planned {
        call: Call::ApproveAccount,
        target: id.to_owned(),
        argument: Some("signup".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sku::MarketplacePlan;

    static PLANS: [MarketplacePlan; 2] = [
        MarketplacePlan {
            name: "basic",
            profile: ProfileId(0),
        },
        MarketplacePlan {
            name: "pro",
            profile: ProfileId(1),
        },
    ];

    fn def(auto_approve: bool) -> MarketplaceDef {
        MarketplaceDef {
            provider_id: "acme",
            product: None,
            auto_approve,
            plans: &PLANS,
        }
    }

    fn read<'a>(state: &'a str, plan: Option<&'a str>, pending: Option<&'a str>) -> Read<'a> {
        Read {
            id: "e-1",
            state,
            plan,
            new_pending_plan: pending,
        }
    }

    #[test]
    fn event_types_are_sorted_for_lookup() {
        assert!(EVENT_TYPES.windows(2).all(|w| w[0] < w[1]));
        assert!(known_event_type("ENTITLEMENT_ACTIVE"));
        assert!(!known_event_type("ENTITLEMENT_EXPLODED"));
    }

    #[test]
    fn google_states_map_onto_tenant_states() {
        use EntitlementState as S;
        for (google, want) in [
            ("ENTITLEMENT_ACTIVATION_REQUESTED", Some(S::Pending)),
            ("ENTITLEMENT_ACTIVE", Some(S::Active)),
            (
                "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL",
                Some(S::PlanChangePending),
            ),
            (
                "ENTITLEMENT_PENDING_PLAN_CHANGE",
                Some(S::PlanChangePending),
            ),
            (
                "ENTITLEMENT_PENDING_CANCELLATION",
                Some(S::PendingCancellation),
            ),
            ("ENTITLEMENT_SUSPENDED", Some(S::Suspended)),
            ("ENTITLEMENT_CANCELLED", Some(S::Cancelled)),
            ("ENTITLEMENT_STATE_UNSPECIFIED", None),
            ("active", None),
        ] {
            assert_eq!(state_of(google), want, "{google}");
        }
    }

    #[test]
    fn auto_approve_approves_mapped_plans_and_rejects_the_rest() {
        let d = def(true);
        let approve = decide(
            &d,
            &read("ENTITLEMENT_ACTIVATION_REQUESTED", Some("pro"), None),
            true,
        );
        assert_eq!(
            approve.map(|p| (p.call, p.target)),
            Some((Call::Approve, "e-1".to_owned()))
        );
        let reject = decide(
            &d,
            &read("ENTITLEMENT_ACTIVATION_REQUESTED", Some("gold"), None),
            true,
        )
        .unwrap();
        assert_eq!(reject.call, Call::Reject);
        assert!(reject.argument.unwrap().contains("`gold`"));
        let second = decide(
            &d,
            &read("ENTITLEMENT_ACTIVATION_REQUESTED", Some("pro"), None),
            false,
        )
        .unwrap();
        assert_eq!(second.call, Call::Reject);
        assert!(second.argument.unwrap().contains("already holds"));
        let change = decide(
            &d,
            &read(
                "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL",
                Some("basic"),
                Some("pro"),
            ),
            true,
        )
        .unwrap();
        assert_eq!(
            (change.call, change.argument.as_deref()),
            (Call::ApprovePlanChange, Some("pro"))
        );
        let refuse = decide(
            &d,
            &read(
                "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL",
                Some("basic"),
                Some("gold"),
            ),
            true,
        )
        .unwrap();
        assert_eq!(
            (refuse.call, refuse.argument.as_deref()),
            (Call::RejectPlanChange, Some("gold"))
        );
        for state in [
            "ENTITLEMENT_ACTIVE",
            "ENTITLEMENT_PENDING_PLAN_CHANGE",
            "ENTITLEMENT_CANCELLED",
        ] {
            assert_eq!(
                decide(&d, &read(state, Some("pro"), Some("basic")), true),
                None,
                "{state}"
            );
        }
        assert_eq!(
            decide(
                &d,
                &read(
                    "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL",
                    Some("basic"),
                    None
                ),
                true
            ),
            None
        );
    }

    #[test]
    fn without_auto_approve_nothing_is_called() {
        let d = def(false);
        for state in [
            "ENTITLEMENT_ACTIVATION_REQUESTED",
            "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL",
        ] {
            assert_eq!(
                decide(&d, &read(state, Some("pro"), Some("basic")), true),
                None
            );
        }
        assert_eq!(decide_account(&d, "a-1", Some("PENDING")), None);
    }

    #[test]
    fn a_pending_signup_is_approved() {
        let d = def(true);
        let planned = decide_account(&d, "a-1", Some("PENDING")).unwrap();
        assert_eq!(
            (planned.call, planned.target.as_str()),
            (Call::ApproveAccount, "a-1")
        );
        for state in [Some("APPROVED"), Some("REJECTED"), None] {
            assert_eq!(decide_account(&d, "a-1", state), None);
        }
    }

    #[test]
    fn call_names_round_trip() {
        for call in Call::ALL {
            assert_eq!(call.as_str().parse::<Call>(), Ok(call));
        }
        assert!("approve_everything".parse::<Call>().is_err());
    }
}

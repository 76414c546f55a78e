//! The marketplace entitlement of one tenant.
//!
//! `pending → active ⇄ suspended`, `active ⇄ plan_change_pending`,
//! `active → pending_cancellation → active | cancelled`, and `→ cancelled`
//! from anywhere; a new `created` starts a cancelled tenant over. The states
//! beyond `pending`, `active`, `suspended` and `cancelled` are those of
//! Google Cloud Marketplace's entitlements (a plan change awaiting approval
//! or the end of the billing cycle; a cancellation that takes effect at the
//! end of the cycle): the tenant stays admitted in both.
//!
//! An event that is not valid in the current state is an
//! [`EntitlementError::InvalidTransition`]: the caller refuses it (HTTP 409) and still writes a
//! receipt.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a tenant's entitlement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementState {
    /// Created (or not heard of yet) but not approved: activation requested.
    Pending,
    /// Approved: signals are acted upon.
    Active,
    /// Active, with a change of plan waiting (for approval, or for the end
    /// of the billing cycle).
    PlanChangePending,
    /// Active until the end of the billing cycle, then cancelled.
    PendingCancellation,
    /// Temporarily withdrawn.
    Suspended,
    /// Gone; only a new `created` starts the tenant over.
    Cancelled,
}

impl EntitlementState {
    /// Every state, in lifecycle order.
    pub const ALL: [EntitlementState; 6] = [
        EntitlementState::Pending,
        EntitlementState::Active,
        EntitlementState::PlanChangePending,
        EntitlementState::PendingCancellation,
        EntitlementState::Suspended,
        EntitlementState::Cancelled,
    ];

    /// Its position in [`EntitlementState::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The lowercase name used in receipts and views.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntitlementState::Pending => "pending",
            EntitlementState::Active => "active",
            EntitlementState::PlanChangePending => "plan_change_pending",
            EntitlementState::PendingCancellation => "pending_cancellation",
            EntitlementState::Suspended => "suspended",
            EntitlementState::Cancelled => "cancelled",
        }
    }

    /// Whether signals are acted upon in this state: active, and the two
    /// states that are still active at the marketplace.
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            EntitlementState::Active
                | EntitlementState::PlanChangePending
                | EntitlementState::PendingCancellation
        )
    }
}

impl fmt::Display for EntitlementState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A marketplace event about a tenant's entitlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementEvent {
    /// The entitlement exists (activation requested); valid as the tenant's
    /// first event, or after a cancellation (a new purchase).
    Created,
    /// Pending → active.
    Approved,
    /// Active → plan_change_pending: a new plan waits.
    PlanChangeRequested,
    /// The plan (and with it possibly the profile) changed: active (also
    /// from plan_change_pending) or suspended.
    PlanChanged,
    /// Plan_change_pending → active, on the old plan.
    PlanChangeCancelled,
    /// Active → suspended.
    Suspended,
    /// Suspended → active.
    Reinstated,
    /// Active or plan_change_pending → pending_cancellation.
    CancellationRequested,
    /// Pending_cancellation → active.
    CancellationReverted,
    /// Any state but cancelled → cancelled.
    Cancelled,
    /// Recorded without a change (a notification that re-states the
    /// current state); valid in every state, and not the tenant's "first
    /// event" (`created` stays valid after it).
    Noted,
}

impl EntitlementEvent {
    /// Whether a `plan` the event carries is the plan in force, so the
    /// tenant's profile follows it. Not for `plan_change_requested` (its
    /// plan only waits: the old one holds until `plan_changed`) nor for
    /// `plan_change_cancelled` (the old plan holds); either's plan is
    /// recorded in the receipt, never acted on.
    pub const fn puts_plan_in_force(self) -> bool {
        !matches!(
            self,
            EntitlementEvent::PlanChangeRequested | EntitlementEvent::PlanChangeCancelled
        )
    }

    /// Every event, in lifecycle order.
    pub const ALL: [EntitlementEvent; 11] = [
        EntitlementEvent::Created,
        EntitlementEvent::Approved,
        EntitlementEvent::PlanChangeRequested,
        EntitlementEvent::PlanChanged,
        EntitlementEvent::PlanChangeCancelled,
        EntitlementEvent::Suspended,
        EntitlementEvent::Reinstated,
        EntitlementEvent::CancellationRequested,
        EntitlementEvent::CancellationReverted,
        EntitlementEvent::Cancelled,
        EntitlementEvent::Noted,
    ];

    /// The marketplace spelling (`plan_changed`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            EntitlementEvent::Created => "created",
            EntitlementEvent::Approved => "approved",
            EntitlementEvent::PlanChangeRequested => "plan_change_requested",
            EntitlementEvent::PlanChanged => "plan_changed",
            EntitlementEvent::PlanChangeCancelled => "plan_change_cancelled",
            EntitlementEvent::Suspended => "suspended",
            EntitlementEvent::Reinstated => "reinstated",
            EntitlementEvent::CancellationRequested => "cancellation_requested",
            EntitlementEvent::CancellationReverted => "cancellation_reverted",
            EntitlementEvent::Cancelled => "cancelled",
            EntitlementEvent::Noted => "noted",
        }
    }
}

impl fmt::Display for EntitlementEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the entitlement state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntitlementError {
    /// The event is not valid in the current state.
    #[error("entitlement event `{event}` is not valid in state `{from}`")]
    InvalidTransition {
        /// The state the entitlement was in (unchanged).
        from: EntitlementState,
        /// The refused event.
        event: EntitlementEvent,
    },
    /// A Marketplace notification about another entitlement than the one
    /// the tenant follows (the tenant is the account; it holds one live
    /// entitlement at a time).
    #[error(
        "entitlement `{got}` is not the one this tenant follows (`{follows}`, {state}): an account holds one live entitlement"
    )]
    OtherEntitlement {
        /// The entitlement the tenant follows.
        follows: String,
        /// The tenant's state (not cancelled).
        state: EntitlementState,
        /// The entitlement the notification is about (at most 128 characters).
        got: String,
    },
    /// The event name is not one of the marketplace events.
    #[error(
        "unknown entitlement event `{name}`: expected created, approved, plan_change_requested, plan_changed, plan_change_cancelled, suspended, reinstated, cancellation_requested, cancellation_reverted, cancelled or noted"
    )]
    UnknownEvent {
        /// The name as received (truncated to 64 characters).
        name: String,
    },
}

impl FromStr for EntitlementEvent {
    type Err = EntitlementError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        EntitlementEvent::ALL
            .into_iter()
            .find(|e| e.as_str() == name)
            .ok_or_else(|| EntitlementError::UnknownEvent {
                name: name.chars().take(64).collect(),
            })
    }
}

/// One tenant's entitlement: its state, whether any event was seen yet,
/// and the Google Cloud Marketplace entitlement it follows, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// Current state.
    state: EntitlementState,
    /// Whether an event was accepted already (`created` is only valid before).
    seen: bool,
    /// The Marketplace entitlement id the tenant follows (written only once
    /// a Marketplace notification moved it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    follows: Option<Box<str>>,
}

impl Default for Entitlement {
    fn default() -> Self {
        Entitlement::new()
    }
}

impl Entitlement {
    /// The first part in which `self` and `other` differ (`None`: equal),
    /// to name it in a report.
    pub fn difference(&self, other: &Entitlement) -> Option<&'static str> {
        if self.state != other.state {
            Some("state")
        } else if self.seen != other.seen {
            Some("first-event flag (`seen`)")
        } else if self.follows != other.follows {
            Some("followed Marketplace entitlement")
        } else {
            None
        }
    }

    /// A tenant no marketplace event was heard of: pending.
    pub const fn new() -> Entitlement {
        Entitlement {
            state: EntitlementState::Pending,
            seen: false,
            follows: None,
        }
    }

    /// The current state.
    pub const fn state(&self) -> EntitlementState {
        self.state
    }

    /// Whether the entitlement is active (see [`EntitlementState::is_active`]).
    pub const fn is_active(&self) -> bool {
        self.state.is_active()
    }

    /// The state `event` leads to, without applying it.
    pub fn next(&self, event: EntitlementEvent) -> Result<EntitlementState, EntitlementError> {
        use EntitlementEvent as E;
        use EntitlementState as S;
        let to = match (self.state, event) {
            (_, E::Noted) => Some(self.state),
            (S::Pending, E::Created) if !self.seen => Some(S::Pending),
            (S::Cancelled, E::Created) => Some(S::Pending),
            (S::Pending, E::Approved) => Some(S::Active),
            (S::Active, E::PlanChangeRequested) => Some(S::PlanChangePending),
            (S::Active | S::PlanChangePending, E::PlanChanged) => Some(S::Active),
            (S::Suspended, E::PlanChanged) => Some(S::Suspended),
            (S::PlanChangePending, E::PlanChangeCancelled) => Some(S::Active),
            (S::Active, E::Suspended) => Some(S::Suspended),
            (S::Suspended, E::Reinstated) => Some(S::Active),
            (S::Active | S::PlanChangePending, E::CancellationRequested) => {
                Some(S::PendingCancellation)
            }
            (S::PendingCancellation, E::CancellationReverted) => Some(S::Active),
            (S::Cancelled, E::Cancelled) => None,
            (_, E::Cancelled) => Some(S::Cancelled),
            _ => None,
        };
        to.ok_or(EntitlementError::InvalidTransition {
            from: self.state,
            event,
        })
    }

    /// The event that brings this entitlement to `target` (a state the
    /// marketplace reports), `plan_differs` telling whether the reported
    /// plan is another than the tenant's: the marketplace's notifications
    /// are hints, its current state is the truth, so a late or repeated
    /// notification converges instead of replaying history. The event may
    /// still be invalid (an activation request for an active tenant, say):
    /// [`Entitlement::next`] refuses it then.
    pub fn toward(&self, target: EntitlementState, plan_differs: bool) -> EntitlementEvent {
        use EntitlementEvent as E;
        use EntitlementState as S;
        match (self.state, target) {
            (S::Pending, S::Pending) if self.seen => E::Noted,
            (_, S::Pending) => E::Created,
            (S::Pending, S::Active) => E::Approved,
            (S::Active | S::PlanChangePending, S::Active) if plan_differs => E::PlanChanged,
            (S::PlanChangePending, S::Active) => E::PlanChangeCancelled,
            (S::Active, S::Active) => E::Noted,
            (S::PendingCancellation, S::Active) => E::CancellationReverted,
            (S::Suspended, S::Active) => E::Reinstated,
            (S::Cancelled, S::Active) => E::Approved,
            (S::PlanChangePending, S::PlanChangePending) => E::Noted,
            (_, S::PlanChangePending) => E::PlanChangeRequested,
            (S::PendingCancellation, S::PendingCancellation) => E::Noted,
            (_, S::PendingCancellation) => E::CancellationRequested,
            (S::Suspended, S::Suspended) if plan_differs => E::PlanChanged,
            (S::Suspended, S::Suspended) => E::Noted,
            (_, S::Suspended) => E::Suspended,
            (S::Cancelled, S::Cancelled) => E::Noted,
            (_, S::Cancelled) => E::Cancelled,
        }
    }

    /// The Marketplace entitlement id the tenant follows, once one moved it.
    pub fn follows(&self) -> Option<&str> {
        self.follows.as_deref()
    }

    /// Whether a notification about Marketplace entitlement `id` may move
    /// this tenant: it follows no entitlement yet, or this one, or it is
    /// cancelled (a new purchase starts over).
    pub fn check_follow(&self, id: &str) -> Result<(), EntitlementError> {
        match self.follows.as_deref() {
            Some(follows) if follows != id && self.state != EntitlementState::Cancelled => {
                Err(EntitlementError::OtherEntitlement {
                    follows: follows.to_owned(),
                    state: self.state,
                    got: id.chars().take(128).collect(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Follows Google Cloud Marketplace: entitlement `id` (none for an
    /// account notification) is in `target` as the Procurement API reads
    /// it (none: a state the tenant does not track; nothing changes), and
    /// `event` names the move ([`Entitlement::toward`]). The read state is
    /// the truth, so any state may follow any other (Pub/Sub reorders and
    /// redelivers, and a notification may be the first one heard of an
    /// entitlement); only another entitlement than the one followed is
    /// refused ([`Entitlement::check_follow`]). On error nothing changes.
    pub fn sync(
        &mut self,
        id: Option<&str>,
        target: Option<EntitlementState>,
        event: EntitlementEvent,
    ) -> Result<EntitlementState, EntitlementError> {
        if let Some(id) = id {
            self.check_follow(id)?;
            self.follows = Some(id.into());
        }
        if let Some(target) = target {
            self.state = target;
        }
        self.seen |= event != EntitlementEvent::Noted;
        Ok(self.state)
    }

    /// Applies `event`; on error the entitlement is unchanged.
    pub fn apply(&mut self, event: EntitlementEvent) -> Result<EntitlementState, EntitlementError> {
        let to = self.next(event)?;
        self.state = to;
        self.seen |= event != EntitlementEvent::Noted;
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use EntitlementEvent as E;
    use EntitlementState as S;

    /// An entitlement in `state`, reached by valid events.
    fn at(state: S) -> Entitlement {
        let mut e = Entitlement::new();
        let path: &[E] = match state {
            S::Pending => &[E::Created],
            S::Active => &[E::Approved],
            S::PlanChangePending => &[E::Approved, E::PlanChangeRequested],
            S::PendingCancellation => &[E::Approved, E::CancellationRequested],
            S::Suspended => &[E::Approved, E::Suspended],
            S::Cancelled => &[E::Cancelled],
        };
        for &event in path {
            e.apply(event).unwrap();
        }
        assert_eq!(e.state(), state);
        e
    }

    /// The valid events of each start (`None`: the fresh, never-seen
    /// tenant) and where they lead; every other pair is refused.
    fn valid(start: Option<S>) -> Vec<(E, S)> {
        let mut out = match start {
            None => vec![
                (E::Created, S::Pending),
                (E::Approved, S::Active),
                (E::Cancelled, S::Cancelled),
            ],
            Some(S::Pending) => vec![(E::Approved, S::Active), (E::Cancelled, S::Cancelled)],
            Some(S::Active) => vec![
                (E::PlanChangeRequested, S::PlanChangePending),
                (E::PlanChanged, S::Active),
                (E::Suspended, S::Suspended),
                (E::CancellationRequested, S::PendingCancellation),
                (E::Cancelled, S::Cancelled),
            ],
            Some(S::PlanChangePending) => vec![
                (E::PlanChanged, S::Active),
                (E::PlanChangeCancelled, S::Active),
                (E::CancellationRequested, S::PendingCancellation),
                (E::Cancelled, S::Cancelled),
            ],
            Some(S::PendingCancellation) => vec![
                (E::CancellationReverted, S::Active),
                (E::Cancelled, S::Cancelled),
            ],
            Some(S::Suspended) => vec![
                (E::PlanChanged, S::Suspended),
                (E::Reinstated, S::Active),
                (E::Cancelled, S::Cancelled),
            ],
            Some(S::Cancelled) => vec![(E::Created, S::Pending)],
        };
        out.push((E::Noted, start.unwrap_or(S::Pending)));
        out
    }

    #[test]
    fn every_state_event_pair() {
        let starts = std::iter::once(None).chain(S::ALL.map(Some));
        for start in starts {
            let valid = valid(start);
            for event in E::ALL {
                let mut e = start.map_or_else(Entitlement::new, at);
                let before = e.clone();
                let expected = valid.iter().find(|(v, _)| *v == event).map(|(_, to)| *to);
                match (e.apply(event), expected) {
                    (Ok(to), Some(want)) => {
                        assert_eq!(to, want, "{start:?} + {event}");
                        assert_eq!(e.state(), want);
                        assert_eq!(e.seen, before.seen || event != E::Noted);
                    }
                    (Err(err), None) => {
                        assert_eq!(
                            err,
                            EntitlementError::InvalidTransition {
                                from: before.state(),
                                event
                            }
                        );
                        assert_eq!(e, before, "a refused event changes nothing");
                    }
                    (got, want) => panic!("{start:?} + {event}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn noted_keeps_created_valid() {
        let mut e = Entitlement::new();
        e.apply(E::Noted).unwrap();
        assert_eq!(e.apply(E::Created), Ok(S::Pending));
        assert_eq!(
            e.apply(E::Created).unwrap_err().to_string(),
            "entitlement event `created` is not valid in state `pending`"
        );
    }

    #[test]
    fn active_means_admitted() {
        for s in S::ALL {
            let want = matches!(s, S::Active | S::PlanChangePending | S::PendingCancellation);
            assert_eq!(at(s).is_active(), want, "{s}");
            assert_eq!(s.is_active(), want, "{s}");
            assert_eq!(S::ALL[s.index()], s);
        }
    }

    #[test]
    fn event_names_round_trip() {
        for event in E::ALL {
            assert_eq!(event.as_str().parse::<E>(), Ok(event));
        }
        let err = "approve".parse::<E>().unwrap_err();
        assert!(err.to_string().contains("`approve`"));
    }

    #[test]
    fn invalid_transition_message() {
        let err = at(S::Cancelled).next(E::Approved).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entitlement event `approved` is not valid in state `cancelled`"
        );
    }

    #[test]
    fn a_tenant_follows_one_marketplace_entitlement_at_a_time() {
        let mut e = Entitlement::new();
        assert_eq!(
            e.sync(Some("e1"), Some(S::Pending), E::Created),
            Ok(S::Pending)
        );
        assert_eq!(e.follows(), Some("e1"));
        // Any state follows any other for the followed entitlement (even
        // one step "skipped": Pub/Sub reorders).
        assert_eq!(
            e.sync(
                Some("e1"),
                Some(S::PendingCancellation),
                E::CancellationRequested
            ),
            Ok(S::PendingCancellation)
        );
        assert_eq!(
            e.sync(Some("e1"), Some(S::Active), E::CancellationReverted),
            Ok(S::Active)
        );
        // Another entitlement of the account while this one lives: refused, nothing changes.
        let before = e.clone();
        let err = e
            .sync(Some("e2"), Some(S::Cancelled), E::Cancelled)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "entitlement `e2` is not the one this tenant follows (`e1`, active): an account holds one live entitlement"
        );
        assert_eq!(e, before);
        assert!(e.check_follow("e2").is_err() && e.check_follow("e1").is_ok());
        // Account notifications (no entitlement) and unknown states change nothing.
        assert_eq!(e.sync(None, None, E::Noted), Ok(S::Active));
        assert_eq!(e.sync(Some("e1"), None, E::Noted), Ok(S::Active));
        // Once cancelled, a new purchase is followed.
        assert_eq!(
            e.sync(Some("e1"), Some(S::Cancelled), E::Cancelled),
            Ok(S::Cancelled)
        );
        assert_eq!(
            e.sync(Some("e2"), Some(S::Active), E::Approved),
            Ok(S::Active)
        );
        assert_eq!(e.follows(), Some("e2"));
        assert!(e.check_follow("e1").is_err(), "the old one is stale now");
    }

    #[test]
    fn follows_is_left_out_of_the_serialized_form_until_set() {
        let fresh = serde_json::to_string(&Entitlement::new()).unwrap();
        assert_eq!(fresh, r#"{"state":"pending","seen":false}"#);
        let mut e = Entitlement::new();
        e.sync(Some("e1"), Some(S::Active), E::Approved).unwrap();
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Entitlement>(&text).unwrap(), e);
        assert!(text.contains(r#""follows":"e1""#), "{text}");
    }

    /// Any start, reachable by a path of valid events.
    fn any_entitlement() -> impl Strategy<Value = Entitlement> {
        proptest::collection::vec(0..E::ALL.len(), 0..12).prop_map(|events| {
            let mut e = Entitlement::new();
            for i in events {
                let _ = e.apply(E::ALL[i]);
            }
            e
        })
    }

    proptest! {
        /// Following the marketplace: the event `toward` picks either
        /// reaches the reported state, or is refused and changes nothing;
        /// it is refused only where no single valid event reaches it.
        #[test]
        fn toward_reaches_the_target_or_is_refused(
            start in any_entitlement(),
            target in 0..S::ALL.len(),
            plan_differs in any::<bool>(),
        ) {
            let target = S::ALL[target];
            let mut e = start.clone();
            let event = start.toward(target, plan_differs);
            match e.apply(event) {
                Ok(to) => prop_assert_eq!(to, target, "{:?} toward {} by {}", start, target, event),
                Err(_) => {
                    prop_assert_eq!(&e, &start);
                    let reachable = E::ALL.iter().any(|&other| start.next(other) == Ok(target));
                    prop_assert!(!reachable, "{:?} toward {}: {} refused, yet reachable", start, target, event);
                }
            }
            // Re-stating the state reached is a no-op.
            if e.state() == target {
                let want = if target == S::Pending && !e.seen { E::Created } else { E::Noted };
                prop_assert_eq!(e.toward(target, false), want);
            }
        }
    }
}

//! The marketplace entitlement of one tenant: `pending → active ⇄ suspended`,
//! `→ cancelled` (terminal).
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
    /// Created (or not heard of yet) but not approved.
    Pending,
    /// Approved: signals are acted upon.
    Active,
    /// Temporarily withdrawn.
    Suspended,
    /// Gone for good; every further event is invalid.
    Cancelled,
}

impl EntitlementState {
    /// The lowercase name used in receipts and views.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntitlementState::Pending => "pending",
            EntitlementState::Active => "active",
            EntitlementState::Suspended => "suspended",
            EntitlementState::Cancelled => "cancelled",
        }
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
    /// The entitlement exists; only valid as the tenant's first event.
    Created,
    /// Pending → active.
    Approved,
    /// The plan (and with it possibly the profile) changed; active or suspended.
    PlanChanged,
    /// Active → suspended.
    Suspended,
    /// Suspended → active.
    Reinstated,
    /// Any state but cancelled → cancelled.
    Cancelled,
}

impl EntitlementEvent {
    /// Every event, in lifecycle order.
    pub const ALL: [EntitlementEvent; 6] = [
        EntitlementEvent::Created,
        EntitlementEvent::Approved,
        EntitlementEvent::PlanChanged,
        EntitlementEvent::Suspended,
        EntitlementEvent::Reinstated,
        EntitlementEvent::Cancelled,
    ];

    /// The marketplace spelling (`plan_changed`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            EntitlementEvent::Created => "created",
            EntitlementEvent::Approved => "approved",
            EntitlementEvent::PlanChanged => "plan_changed",
            EntitlementEvent::Suspended => "suspended",
            EntitlementEvent::Reinstated => "reinstated",
            EntitlementEvent::Cancelled => "cancelled",
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
    /// The event name is not one of the marketplace events.
    #[error(
        "unknown entitlement event `{name}`: expected created, approved, plan_changed, suspended, reinstated or cancelled"
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

/// One tenant's entitlement: its state and whether any event was seen yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// Current state.
    state: EntitlementState,
    /// Whether an event was accepted already (`created` is only valid before).
    seen: bool,
}

impl Default for Entitlement {
    fn default() -> Self {
        Entitlement::new()
    }
}

impl Entitlement {
    /// A tenant no marketplace event was heard of: pending.
    pub const fn new() -> Entitlement {
        Entitlement {
            state: EntitlementState::Pending,
            seen: false,
        }
    }

    /// The current state.
    pub const fn state(&self) -> EntitlementState {
        self.state
    }

    /// Whether the entitlement is active.
    pub const fn is_active(&self) -> bool {
        matches!(self.state, EntitlementState::Active)
    }

    /// The state `event` leads to, without applying it.
    pub fn next(&self, event: EntitlementEvent) -> Result<EntitlementState, EntitlementError> {
        use EntitlementEvent as E;
        use EntitlementState as S;
        let to = match (self.state, event) {
            (S::Pending, E::Created) if !self.seen => Some(S::Pending),
            (S::Pending, E::Created) => None,
            (S::Active | S::Suspended | S::Cancelled, E::Created) => None,
            (S::Pending, E::Approved) => Some(S::Active),
            (S::Active | S::Suspended | S::Cancelled, E::Approved) => None,
            (S::Active, E::PlanChanged) => Some(S::Active),
            (S::Suspended, E::PlanChanged) => Some(S::Suspended),
            (S::Pending | S::Cancelled, E::PlanChanged) => None,
            (S::Active, E::Suspended) => Some(S::Suspended),
            (S::Pending | S::Suspended | S::Cancelled, E::Suspended) => None,
            (S::Suspended, E::Reinstated) => Some(S::Active),
            (S::Pending | S::Active | S::Cancelled, E::Reinstated) => None,
            (S::Pending | S::Active | S::Suspended, E::Cancelled) => Some(S::Cancelled),
            (S::Cancelled, E::Cancelled) => None,
        };
        to.ok_or(EntitlementError::InvalidTransition {
            from: self.state,
            event,
        })
    }

    /// Applies `event`; on error the entitlement is unchanged.
    pub fn apply(&mut self, event: EntitlementEvent) -> Result<EntitlementState, EntitlementError> {
        let to = self.next(event)?;
        self.state = to;
        self.seen = true;
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EntitlementEvent as E;
    use EntitlementState as S;

    /// An entitlement in `state`, reached by valid events.
    fn at(state: S) -> Entitlement {
        let mut e = Entitlement::new();
        let path: &[E] = match state {
            S::Pending => &[E::Created],
            S::Active => &[E::Approved],
            S::Suspended => &[E::Approved, E::Suspended],
            S::Cancelled => &[E::Cancelled],
        };
        for &event in path {
            e.apply(event).unwrap();
        }
        assert_eq!(e.state(), state);
        e
    }

    #[test]
    fn every_state_event_pair() {
        // (start, event, expected): `None` start is the fresh, never-seen tenant.
        let table: [(Option<S>, E, Option<S>); 30] = [
            (None, E::Created, Some(S::Pending)),
            (None, E::Approved, Some(S::Active)),
            (None, E::PlanChanged, None),
            (None, E::Suspended, None),
            (None, E::Reinstated, None),
            (None, E::Cancelled, Some(S::Cancelled)),
            (Some(S::Pending), E::Created, None),
            (Some(S::Pending), E::Approved, Some(S::Active)),
            (Some(S::Pending), E::PlanChanged, None),
            (Some(S::Pending), E::Suspended, None),
            (Some(S::Pending), E::Reinstated, None),
            (Some(S::Pending), E::Cancelled, Some(S::Cancelled)),
            (Some(S::Active), E::Created, None),
            (Some(S::Active), E::Approved, None),
            (Some(S::Active), E::PlanChanged, Some(S::Active)),
            (Some(S::Active), E::Suspended, Some(S::Suspended)),
            (Some(S::Active), E::Reinstated, None),
            (Some(S::Active), E::Cancelled, Some(S::Cancelled)),
            (Some(S::Suspended), E::Created, None),
            (Some(S::Suspended), E::Approved, None),
            (Some(S::Suspended), E::PlanChanged, Some(S::Suspended)),
            (Some(S::Suspended), E::Suspended, None),
            (Some(S::Suspended), E::Reinstated, Some(S::Active)),
            (Some(S::Suspended), E::Cancelled, Some(S::Cancelled)),
            (Some(S::Cancelled), E::Created, None),
            (Some(S::Cancelled), E::Approved, None),
            (Some(S::Cancelled), E::PlanChanged, None),
            (Some(S::Cancelled), E::Suspended, None),
            (Some(S::Cancelled), E::Reinstated, None),
            (Some(S::Cancelled), E::Cancelled, None),
        ];
        for (start, event, expected) in table {
            let mut e = start.map_or_else(Entitlement::new, at);
            let before = e;
            match (e.apply(event), expected) {
                (Ok(to), Some(want)) => {
                    assert_eq!(to, want, "{start:?} + {event}");
                    assert_eq!(e.state(), want);
                    assert!(e.seen);
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

    #[test]
    fn only_active_is_active() {
        assert!(at(S::Active).is_active());
        for s in [S::Pending, S::Suspended, S::Cancelled] {
            assert!(!at(s).is_active());
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
}

//! The static description of one SKU, as a generated crate supplies it.
//!
//! Everything here is `'static` data rendered by ggen from a spec: the
//! runtime never learns about a SKU any other way.

use std::fmt;

/// Index of a signal in [`Sku::signals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SignalId(pub u16);

/// Index of an action in [`Sku::actions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActionId(pub u16);

/// Index of a profile in [`Sku::profiles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProfileId(pub u16);

/// Which side of a threshold is worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Higher values are worse (spend, error rate).
    Above,
    /// Lower values are worse (availability, free capacity).
    Below,
}

impl Direction {
    /// The spec's spelling (`above` / `below`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Above => "above",
            Direction::Below => "below",
        }
    }
}

/// A signal the governor watches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalDef {
    /// snake_case name, unique within the SKU.
    pub name: &'static str,
    /// Free-text unit, shown in docs and metrics.
    pub unit: &'static str,
    /// What the signal measures, for people.
    pub description: &'static str,
    /// Values below this are rejected at ingress.
    pub min: Option<f64>,
    /// Values above this are rejected at ingress.
    pub max: Option<f64>,
    /// Which way is worse.
    pub direction: Direction,
}

impl SignalDef {
    /// Whether `value` is finite and inside `[min, max]`.
    pub fn accepts(&self, value: f64) -> bool {
        value.is_finite()
            && self.min.is_none_or(|min| value >= min)
            && self.max.is_none_or(|max| value <= max)
    }
}

/// How an action is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Adapter {
    /// Records what it would do; always succeeds.
    Log,
    /// HTTP POST of the action as JSON.
    Webhook,
    /// Runs a program with templated arguments.
    Command,
}

impl Adapter {
    /// The spec's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Adapter::Log => "log",
            Adapter::Webhook => "webhook",
            Adapter::Command => "command",
        }
    }
}

impl fmt::Display for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action the governor may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionDef {
    /// Unique name.
    pub name: &'static str,
    /// Which adapter runs it.
    pub adapter: Adapter,
    /// The action run when the governor steps back to stable.
    pub undo: Option<ActionId>,
    /// Adapter parameters as canonical JSON (an object; `{}` when absent).
    pub params: &'static str,
    /// Per-attempt timeout.
    pub timeout_ms: u32,
    /// Retries after the first attempt.
    pub retries: u32,
}

/// One rule of a profile: thresholds for one signal, already resolved.
///
/// Invariants (checked by ggen): at least one of `warn`/`intervene`/`refuse`
/// is set; set thresholds are ordered by `direction` (`warn ≤ intervene ≤
/// refuse` for `Above`, reversed for `Below`); `clear` is not past `warn`;
/// `dwell ≥ 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// The signal the rule watches.
    pub signal: SignalId,
    /// Which way is worse (copied from the signal).
    pub direction: Direction,
    /// The warn threshold, if any.
    pub warn: Option<f64>,
    /// The intervene threshold, if any.
    pub intervene: Option<f64>,
    /// The refuse threshold, if any.
    pub refuse: Option<f64>,
    /// Hysteresis exit threshold: recovery counts only evaluations on the
    /// good side of it. Defaults to `warn` (or the mildest threshold set).
    pub clear: f64,
    /// Consecutive breaching evaluations before the level escalates.
    pub dwell: u16,
    /// Actions dispatched on `intervene`, in spec order.
    pub actions: &'static [ActionId],
}

/// A customer profile: a flattened rule set (after `extends`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfileDef {
    /// The profile's name in the spec.
    pub name: &'static str,
    /// At most one rule per signal, in spec order.
    pub rules: &'static [Rule],
    /// An action does not run again for the same tenant within this many seconds (0: no cooldown).
    pub cooldown_s: u32,
    /// Cap on dispatches per tenant per rolling hour (`None`: unlimited).
    pub max_actions_per_hour: Option<u32>,
}

/// Timing of the governor FSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GovernorTiming {
    /// An intervention not confirmed within this many seconds degrades.
    pub intervention_timeout_s: u32,
    /// Consecutive cleared evaluations needed to return to stable.
    pub recovery_evaluations: u16,
    /// How long `degraded` waits before dispatching again.
    pub degraded_retry_s: u32,
}

/// Ingress settings of the SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressDef {
    /// OIDC audience expected on Pub/Sub push tokens; `None`: bearer token auth.
    pub pubsub_audience: Option<&'static str>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

/// One Marketplace plan and the profile its tenants get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketplacePlan {
    /// The Marketplace plan id.
    pub name: &'static str,
    /// Its profile.
    pub profile: ProfileId,
}

/// The SKU's product on Google Cloud Marketplace (`entitlement.marketplace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketplaceDef {
    /// The provider (partner) id.
    pub provider_id: &'static str,
    /// The product's `productExternalName`: entitlements of the provider's
    /// other products are left alone (`None`: every entitlement is this product's).
    pub product: Option<&'static str>,
    /// Whether entitlement requests and plan changes are approved as they arrive.
    pub auto_approve: bool,
    /// Every mapped plan, sorted by name.
    pub plans: &'static [MarketplacePlan],
}

impl MarketplaceDef {
    /// The profile of Marketplace plan `name`, if it is mapped.
    pub fn profile(&self, name: &str) -> Option<ProfileId> {
        self.plans
            .binary_search_by(|p| p.name.cmp(name))
            .ok()
            .map(|i| self.plans[i].profile)
    }
}

/// Everything the runtime knows about one SKU.
#[derive(Debug, Clone, Copy)]
pub struct Sku {
    /// The SKU id (`^[a-z][a-z0-9_]{1,39}$`).
    pub id: &'static str,
    /// Its display name.
    pub name: &'static str,
    /// Its semver version.
    pub version: &'static str,
    /// SHA-256 (hex) of the spec file the crate was generated from; stamped on every receipt.
    pub spec_sha256: &'static str,
    /// Pub/Sub message attribute that names the tenant.
    pub tenant_attribute: &'static str,
    /// The most tenants one service holds.
    pub max_tenants: u32,
    /// Signals, indexed by [`SignalId`].
    pub signals: &'static [SignalDef],
    /// Actions, indexed by [`ActionId`].
    pub actions: &'static [ActionDef],
    /// Profiles, indexed by [`ProfileId`].
    pub profiles: &'static [ProfileDef],
    /// The profile of a tenant with no plan.
    pub default_profile: ProfileId,
    /// FSM timing.
    pub governor: GovernorTiming,
    /// Whether a tenant needs an active entitlement before its signals are acted upon.
    pub entitlement_required: bool,
    /// The product on Google Cloud Marketplace, if it is sold there.
    pub marketplace: Option<MarketplaceDef>,
    /// Ingress settings.
    pub ingress: IngressDef,
}

impl Sku {
    /// The signal `id` names.
    pub fn signal(&self, id: SignalId) -> &'static SignalDef {
        &self.signals[usize::from(id.0)]
    }

    /// The action `id` names.
    pub fn action(&self, id: ActionId) -> &'static ActionDef {
        &self.actions[usize::from(id.0)]
    }

    /// The profile `id` names.
    pub fn profile(&self, id: ProfileId) -> &'static ProfileDef {
        &self.profiles[usize::from(id.0)]
    }

    /// The largest `max_actions_per_hour` of any profile: how many recent
    /// dispatch times a tenant must remember so that a plan change never
    /// forgets one a budget still counts (`None`: no profile has a budget).
    pub fn largest_budget(&self) -> Option<u32> {
        self.profiles
            .iter()
            .filter_map(|p| p.max_actions_per_hour)
            .max()
    }
}

/// What a generated crate implements: its SKU table and the policy lookups,
/// written as exhaustive matches over the spec's signals and profiles.
pub trait PolicyPack: Send + Sync + 'static {
    /// The SKU's static description.
    fn sku(&self) -> &'static Sku;
    /// The rule for `signal` under `profile`, if the profile has one.
    fn rule(&self, profile: ProfileId, signal: SignalId) -> Option<&'static Rule>;
    /// Looks up a signal by its spec name.
    fn signal_by_name(&self, name: &str) -> Option<SignalId>;
    /// Looks up a profile by its spec name.
    fn profile_by_name(&self, name: &str) -> Option<ProfileId>;
}

/// A [`PolicyPack`] answered by scanning the [`Sku`] tables, for SKUs
/// written by hand (tests, benches, examples). Generated crates implement
/// the trait with exhaustive matches instead.
#[derive(Debug, Clone, Copy)]
pub struct TablePack(pub &'static Sku);

impl PolicyPack for TablePack {
    fn sku(&self) -> &'static Sku {
        self.0
    }

    fn rule(&self, profile: ProfileId, signal: SignalId) -> Option<&'static Rule> {
        self.0
            .profile(profile)
            .rules
            .iter()
            .find(|r| r.signal == signal)
    }

    fn signal_by_name(&self, name: &str) -> Option<SignalId> {
        let index = self.0.signals.iter().position(|s| s.name == name)?;
        u16::try_from(index).ok().map(SignalId)
    }

    fn profile_by_name(&self, name: &str) -> Option<ProfileId> {
        let index = self.0.profiles.iter().position(|p| p.name == name)?;
        u16::try_from(index).ok().map(ProfileId)
    }
}

/// The prefix of the service's own secrets (`GOVERNOR_AUTH_TOKEN`, …): no
/// command action may be handed one.
pub const SECRET_ENV_PREFIX: &str = "GOVERNOR_";

/// The names a `command` action's `params.env` lists (the variables the
/// child may see besides `PATH`), or why they are invalid. The command
/// adapter and `ggen validate` apply this one check.
pub fn command_env_names(
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<String>, String> {
    let items = match params.get("env") {
        None => return Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items,
        Some(_) => return Err("`params.env` must be an array of variable names".to_owned()),
    };
    items
        .iter()
        .map(|item| match item {
            serde_json::Value::String(name) if name.starts_with(SECRET_ENV_PREFIX) => Err(format!(
                "`params.env` names `{name}`: `{SECRET_ENV_PREFIX}*` variables are the service's secrets and never reach a command"
            )),
            serde_json::Value::String(name) if !name.is_empty() && !name.contains(['=', '\0']) => {
                Ok(name.clone())
            }
            _ => Err("`params.env` must be an array of variable names".to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marketplace_plans_are_found_by_name_and_only_by_name() {
        static PLANS: [MarketplacePlan; 3] = [
            MarketplacePlan {
                name: "Zeta.9",
                profile: ProfileId(2),
            },
            MarketplacePlan {
                name: "basic",
                profile: ProfileId(0),
            },
            MarketplacePlan {
                name: "plan-9.x_y",
                profile: ProfileId(1),
            },
        ];
        let marketplace = MarketplaceDef {
            provider_id: "p",
            product: None,
            auto_approve: false,
            plans: &PLANS,
        };
        for plan in &PLANS {
            assert_eq!(marketplace.profile(plan.name), Some(plan.profile));
        }
        for other in ["", "Basic", "basic ", "zeta.9", "plan"] {
            assert_eq!(marketplace.profile(other), None, "{other}");
        }
    }
}

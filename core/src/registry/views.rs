//! What operators and metrics see: tenant views, admission, counts and
//! exported states.

use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use super::dedupe::id_key;
use super::{Registry, TenantState};
use crate::entitlement::{Entitlement, EntitlementState};
use crate::fsm::{InFlight, State};
use crate::policy::Level;
use crate::receipt::{IdempotencyKey, Input, Kind};
use crate::sku::ProfileId;
use crate::tenant::TenantId;

/// What a protected service asks: may this tenant proceed?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Whether to let the tenant's work through.
    pub allow: bool,
    /// The tenant's state name.
    pub state: &'static str,
    /// Why, in snake_case.
    pub reason: &'static str,
}

/// One in-flight action, as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlightView {
    /// Action name.
    pub action: &'static str,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// Whether its success was confirmed.
    pub confirmed: bool,
}

/// A tenant as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantView {
    /// The tenant.
    pub tenant: TenantId,
    /// FSM state.
    pub state: State,
    /// Entitlement state.
    pub entitlement: EntitlementState,
    /// Profile name.
    pub profile: &'static str,
    /// The tenant's level (worst rule).
    pub level: Level,
    /// The in-flight action set.
    pub in_flight: Vec<InFlightView>,
    /// Seq of the last receipt.
    pub seq: u64,
    /// Hash of the last receipt, lowercase hex.
    pub hash: String,
}

impl Registry {
    /// On a shared ledger, brings the cached `tenant` up to what another
    /// replica committed, so views and admissions show the latest state
    /// (if the ledger cannot answer, the cache is shown, with a warning).
    fn refresh_shared(&self, tenant: &TenantId) {
        if let Some(shared) = self.ledger.shared()
            && let Err(error) = self.refresh(shared, tenant)
        {
            tracing::warn!(
                %tenant,
                error = &error as &dyn std::error::Error,
                "showing the cached tenant: loading its latest state failed"
            );
        }
    }

    /// What a Marketplace notification for `tenant` is decided on: the
    /// tenant's entitlement and profile (a tenant never heard of: a fresh
    /// entitlement, the default profile), and whether `input`'s id is
    /// already inside its dedupe window (then the notification had its
    /// effect). The registry's answer before `input` is applied: a racing
    /// input may still change it.
    pub fn entitlement_of(
        &self,
        tenant: &TenantId,
        input: &Input,
    ) -> (Entitlement, ProfileId, bool) {
        self.refresh_shared(tenant);
        let shard = self.shard(tenant);
        let Some(t) = shard.get(tenant) else {
            return (Entitlement::new(), self.pack.sku().default_profile, false);
        };
        let seen = input.id().is_some_and(|id| {
            let key = id_key(input.id_space(), id);
            t.recent.holds(&key, input.kind() == Kind::Entitlement)
        });
        (t.entitlement.clone(), t.governor.profile(), seen)
    }

    /// A tenant as operators see it.
    pub fn view(&self, tenant: &TenantId) -> Option<TenantView> {
        self.refresh_shared(tenant);
        let shard = self.shard(tenant);
        let t = shard.get(tenant)?;
        let sku = self.pack.sku();
        let (seq, flight) = t.governor.in_flight();
        Some(TenantView {
            tenant: tenant.clone(),
            state: t.governor.state(),
            entitlement: t.entitlement.state(),
            profile: sku.profile(t.governor.profile()).name,
            level: t.governor.level(),
            in_flight: flight
                .iter()
                .map(|f: &InFlight| InFlightView {
                    action: sku.action(f.action).name,
                    idempotency_key: IdempotencyKey::new(sku, tenant.clone(), seq, f.action)
                        .to_string(),
                    confirmed: f.ok,
                })
                .collect(),
            seq: t.head.seq,
            hash: hex::encode(t.head.hash),
        })
    }

    /// Whether a protected service should let `tenant`'s work through.
    pub fn admit(&self, tenant: &TenantId) -> Admission {
        self.refresh_shared(tenant);
        let shard = self.shard(tenant);
        let Some(t) = shard.get(tenant) else {
            return if self.pack.sku().entitlement_required {
                Admission {
                    allow: false,
                    state: State::Boot.name(),
                    reason: "unknown_tenant",
                }
            } else {
                Admission {
                    allow: true,
                    state: State::Boot.name(),
                    reason: "unknown_tenant",
                }
            };
        };
        let state = t.governor.state();
        let (allow, reason) = match state {
            // Whatever the state: only an entitlement admits, where the
            // SKU requires one.
            _ if self.pack.sku().entitlement_required && !t.governor.entitled() => {
                (false, "entitlement_inactive")
            }
            State::Refusing => (false, "refusing"),
            State::Boot | State::Stable => (true, "stable"),
            State::Warning => (true, "warning"),
            State::Intervening { .. } => (true, "intervening"),
            State::Degraded { .. } => (true, "degraded"),
        };
        Admission {
            allow,
            state: state.name(),
            reason,
        }
    }

    /// Receipts appended through this registry since it was created (not
    /// those recovered); a scheduler compares it to decide when to checkpoint.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether there are no tenants.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tenants by entitlement state, in [`EntitlementState::ALL`] order.
    pub fn entitlements_count(&self) -> [(&'static str, usize); 6] {
        let mut counts = EntitlementState::ALL.map(|s| (s.as_str(), 0));
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for t in shard.values() {
                counts[t.entitlement.state().index()].1 += 1;
            }
        }
        counts
    }

    /// Tenants by state name, in [`State::NAMES`] order.
    pub fn states_count(&self) -> [(&'static str, usize); 6] {
        let mut counts = State::NAMES.map(|name| (name, 0));
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for t in shard.values() {
                counts[t.governor.state().index()].1 += 1;
            }
        }
        counts
    }

    /// The ids of `tenant`'s read tokens, in order (`None`: no such tenant).
    pub fn tokens(&self, tenant: &TenantId) -> Option<Vec<String>> {
        self.refresh_shared(tenant);
        let shard = self.shard(tenant);
        let tokens = &shard.get(tenant)?.tokens;
        Some(tokens.iter().flat_map(|t| t.keys()).cloned().collect())
    }

    /// The SHA-256 (lowercase hex) of the secret of `tenant`'s read token
    /// `id`, as committed (a shared ledger's latest).
    pub fn token_digest(&self, tenant: &TenantId, id: &str) -> Option<String> {
        // Fails closed: a revocation another replica committed must hold
        // even when this one cannot load the tenant's latest state.
        if let Some(shared) = self.ledger.shared()
            && let Err(error) = self.refresh(shared, tenant)
        {
            tracing::warn!(%tenant, error = &error as &dyn std::error::Error, "read token refused: the tenant's latest state cannot be loaded");
            return None;
        }
        self.shard(tenant)
            .get(tenant)?
            .tokens
            .as_ref()?
            .get(id)
            .cloned()
    }

    /// Approximate bytes one tenant holds in memory.
    pub fn tenant_bytes(&self, tenant: &TenantId) -> Option<usize> {
        self.shard(tenant).get(tenant).map(|t| t.bytes(tenant))
    }

    /// The complete state of every tenant, ordered by tenant id.
    pub fn states(&self) -> BTreeMap<TenantId, TenantState> {
        let mut out = BTreeMap::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(shard.iter().map(|(id, t)| (id.clone(), t.export())));
        }
        out
    }
}

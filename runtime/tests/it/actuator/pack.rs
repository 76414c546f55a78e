//! Test SKUs built at run time (leaked to `'static`), so action params can
//! name the port of a test server.

use ggen_runtime::sku::{
    ActionDef, ActionId, Adapter, Direction, GovernorTiming, IngressDef, ProfileDef, ProfileId,
    Rule, SignalDef, SignalId, Sku, TablePack,
};

/// The only signal: `load`, higher is worse (warn 50, intervene 100, clear 40).
pub const LOAD: SignalId = SignalId(0);

static SIGNALS: [SignalDef; 1] = [SignalDef {
    name: "load",
    unit: "percent",
    description: "load",
    min: Some(0.0),
    max: None,
    direction: Direction::Above,
}];

/// How the test SKU behaves.
#[derive(Debug, Clone)]
pub struct PackSpec {
    /// The SKU's actions; the rule dispatches `rule_actions`.
    pub actions: Vec<ActionDef>,
    /// Indexes of the actions run on `intervene`.
    pub rule_actions: Vec<u16>,
    pub cooldown_s: u32,
    pub intervention_timeout_s: u32,
    pub recovery_evaluations: u16,
}

/// A leaked policy pack over a run-time SKU.
pub type TestPack = TablePack;

impl PackSpec {
    /// Builds and leaks the SKU of this spec.
    pub fn leak(self) -> &'static TestPack {
        let spec = self;
        let actions: &'static [ActionDef] = Vec::leak(spec.actions);
        let rule_actions: &'static [ActionId] =
            Vec::leak(spec.rule_actions.into_iter().map(ActionId).collect());
        let rules: &'static [Rule] = Vec::leak(vec![Rule {
            signal: LOAD,
            direction: Direction::Above,
            warn: Some(50.0),
            intervene: Some(100.0),
            refuse: None,
            clear: 40.0,
            dwell: 1,
            actions: rule_actions,
        }]);
        let profiles: &'static [ProfileDef] = Vec::leak(vec![ProfileDef {
            name: "standard",
            rules,
            cooldown_s: spec.cooldown_s,
            max_actions_per_hour: None,
        }]);
        let sku: &'static Sku = Box::leak(Box::new(Sku {
            id: "act_guard",
            name: "Actuator Guard",
            version: "1.0.0",
            spec_sha256: "00aa",
            tenant_attribute: "tenant_id",
            max_tenants: 1000,
            signals: &SIGNALS,
            actions,
            profiles,
            default_profile: ProfileId(0),
            governor: GovernorTiming {
                intervention_timeout_s: spec.intervention_timeout_s,
                recovery_evaluations: spec.recovery_evaluations,
                degraded_retry_s: 600,
            },
            entitlement_required: false,
            marketplace: None,
            ingress: IngressDef {
                pubsub_audience: None,
                max_body_bytes: 1 << 20,
            },
        }));
        Box::leak(Box::new(TablePack(sku)))
    }
}

/// An action definition; `params` is leaked.
pub fn action(
    name: &'static str,
    adapter: Adapter,
    undo: Option<u16>,
    params: String,
    timeout_ms: u32,
    retries: u32,
) -> ActionDef {
    ActionDef {
        name,
        adapter,
        undo: undo.map(ActionId),
        params: String::leak(params),
        timeout_ms,
        retries,
    }
}

/// A SKU with one webhook action `throttle` (undone by webhook `unthrottle`).
pub fn webhook_pack(
    params: String,
    timeout_ms: u32,
    retries: u32,
    cooldown_s: u32,
) -> &'static TestPack {
    PackSpec {
        actions: vec![
            action(
                "throttle",
                Adapter::Webhook,
                Some(1),
                params.clone(),
                timeout_ms,
                retries,
            ),
            action(
                "unthrottle",
                Adapter::Webhook,
                None,
                params,
                timeout_ms,
                retries,
            ),
        ],
        rule_actions: vec![0],
        cooldown_s,
        intervention_timeout_s: 30,
        recovery_evaluations: 1,
    }
    .leak()
}

//! The SKU the ingress tests serve: one signal with all three thresholds,
//! an action with an undo, a Pub/Sub OIDC audience (but in [`PLAIN`]) and a
//! small body limit.

use ggen_runtime::sku::{
    ActionDef, ActionId, Adapter, Direction, GovernorTiming, IngressDef, MarketplaceDef,
    MarketplacePlan, ProfileDef, ProfileId, Rule, SignalDef, SignalId, Sku, TablePack,
};

/// The audience Pub/Sub OIDC tokens must name.
pub const AUDIENCE: &str = "https://governor.test/pubsub/push";
/// The body limit of the test SKU.
pub const MAX_BODY: usize = 4096;

static SIGNALS: [SignalDef; 1] = [SignalDef {
    name: "load",
    unit: "percent",
    description: "load",
    min: Some(0.0),
    max: Some(1000.0),
    direction: Direction::Above,
}];

static ACTIONS: [ActionDef; 2] = [
    ActionDef {
        name: "throttle",
        adapter: Adapter::Log,
        undo: Some(ActionId(1)),
        params: "{}",
        timeout_ms: 1000,
        retries: 0,
    },
    ActionDef {
        name: "unthrottle",
        adapter: Adapter::Log,
        undo: None,
        params: "{}",
        timeout_ms: 1000,
        retries: 0,
    },
];

static RULES: [Rule; 1] = [Rule {
    signal: SignalId(0),
    direction: Direction::Above,
    warn: Some(50.0),
    intervene: Some(100.0),
    refuse: Some(500.0),
    clear: 40.0,
    dwell: 1,
    actions: &[ActionId(0)],
}];

static PROFILES: [ProfileDef; 2] = [
    ProfileDef {
        name: "standard",
        rules: &RULES,
        cooldown_s: 300,
        max_actions_per_hour: Some(6),
    },
    ProfileDef {
        name: "enterprise",
        rules: &RULES,
        cooldown_s: 60,
        max_actions_per_hour: None,
    },
];

const fn sku(id: &'static str, max_tenants: u32, pubsub_audience: Option<&'static str>) -> Sku {
    Sku {
        id,
        name: "Ingress Test Guard",
        version: "1.0.0",
        spec_sha256: "00aa",
        tenant_attribute: "tenant_id",
        max_tenants,
        signals: &SIGNALS,
        actions: &ACTIONS,
        profiles: &PROFILES,
        default_profile: ProfileId(0),
        governor: GovernorTiming {
            intervention_timeout_s: 120,
            recovery_evaluations: 2,
            degraded_retry_s: 600,
        },
        entitlement_required: false,
        marketplace: None,
        ingress: IngressDef {
            pubsub_audience,
            max_body_bytes: MAX_BODY,
        },
    }
}

static GUARD_SKU: Sku = sku("ingress_guard", 10_000, Some(AUDIENCE));
static TINY_SKU: Sku = sku("ingress_guard_tiny", 2, Some(AUDIENCE));
static PLAIN_SKU: Sku = sku("ingress_guard_plain", 10_000, None);

/// Up to 10 000 tenants.
pub static GUARD: TablePack = TablePack(&GUARD_SKU);
/// At most two tenants.
pub static TINY: TablePack = TablePack(&TINY_SKU);
/// Like [`GUARD`], without a Pub/Sub audience (pushes use the bearer token).
pub static PLAIN: TablePack = TablePack(&PLAIN_SKU);

/// The [`REPLICA`] actions: `false`, so every dispatch fails at once and
/// the tenant keeps a degraded-retry timer (a program that exists: `serve`
/// refuses to start with one that does not).
static FAILING_ACTIONS: [ActionDef; 2] = [
    ActionDef {
        name: "throttle",
        adapter: Adapter::Command,
        undo: Some(ActionId(1)),
        params: r#"{"program":"false","args":[]}"#,
        timeout_ms: 1000,
        retries: 0,
    },
    ActionDef {
        name: "unthrottle",
        adapter: Adapter::Command,
        undo: None,
        params: r#"{"program":"false","args":[]}"#,
        timeout_ms: 1000,
        retries: 0,
    },
];

static REPLICA_SKU: Sku = Sku {
    id: "ingress_guard_replica",
    actions: &FAILING_ACTIONS,
    governor: GovernorTiming {
        intervention_timeout_s: 2,
        recovery_evaluations: 2,
        degraded_retry_s: 2,
    },
    ..GUARD_SKU
};

/// Like [`GUARD`] with 2 s timers and actions that always fail: its
/// breaching tenants fire a timer every 2 s (fleet tests of timers).
pub static REPLICA: TablePack = TablePack(&REPLICA_SKU);

/// A SKU like [`GUARD`] with `actions` instead and the Pub/Sub `audience`
/// given (what `serve`'s preflight checks are run against).
pub const fn with_actions(actions: &'static [ActionDef], audience: Option<&'static str>) -> Sku {
    Sku {
        id: "ingress_guard_preflight",
        actions,
        ..sku("ingress_guard_preflight", 10_000, audience)
    }
}

/// [`BROKEN`]'s actions: a webhook with no `params.url` (nowhere to go
/// without `GOVERNOR_WEBHOOK_URL`) and a program that does not exist.
static BROKEN_ACTIONS: [ActionDef; 2] = [
    ActionDef {
        name: "throttle",
        adapter: Adapter::Command,
        undo: Some(ActionId(1)),
        params: r#"{"program":"/nonexistent/ggen-test-action","args":[]}"#,
        timeout_ms: 1000,
        retries: 0,
    },
    ActionDef {
        name: "unthrottle",
        adapter: Adapter::Webhook,
        undo: None,
        params: "{}",
        timeout_ms: 1000,
        retries: 0,
    },
];

static BROKEN_SKU: Sku = with_actions(&BROKEN_ACTIONS, Some(AUDIENCE));

/// A SKU whose live actions cannot work: `serve` refuses to start it.
pub static BROKEN: TablePack = TablePack(&BROKEN_SKU);

/// The Marketplace provider id of [`SOLD`].
pub const PROVIDER: &str = "acme-partner";
/// The product (`productExternalName`) [`SOLD`] governs.
pub const PRODUCT: &str = "guard.endpoints.provider.cloud.goog";

/// [`SOLD`]'s plans: `basic-monthly` → `standard`, `pro-monthly` → `enterprise`.
static SOLD_PLANS: [MarketplacePlan; 2] = [
    MarketplacePlan {
        name: "basic-monthly",
        profile: ProfileId(0),
    },
    MarketplacePlan {
        name: "pro-monthly",
        profile: ProfileId(1),
    },
];

static SOLD_SKU: Sku = Sku {
    id: "ingress_guard_sold",
    entitlement_required: true,
    marketplace: Some(MarketplaceDef {
        provider_id: PROVIDER,
        product: Some(PRODUCT),
        auto_approve: true,
        plans: &SOLD_PLANS,
    }),
    ..GUARD_SKU
};

static WATCHED_SKU: Sku = Sku {
    id: "ingress_guard_watched",
    entitlement_required: true,
    marketplace: Some(MarketplaceDef {
        provider_id: PROVIDER,
        product: None,
        auto_approve: false,
        plans: &SOLD_PLANS,
    }),
    ..GUARD_SKU
};

/// Like [`GUARD`], sold on Google Cloud Marketplace with `auto_approve`
/// (entitlement required).
pub static SOLD: TablePack = TablePack(&SOLD_SKU);
/// Like [`SOLD`] without `auto_approve`: the governor only follows.
pub static WATCHED: TablePack = TablePack(&WATCHED_SKU);

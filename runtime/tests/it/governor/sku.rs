//! A small test SKU as static tables, and its `PolicyPack`.

use ggen_runtime::sku::{
    ActionDef, ActionId, Adapter, Direction, GovernorTiming, IngressDef, ProfileDef, ProfileId,
    Rule, SignalDef, SignalId, Sku, TablePack,
};

/// `load`: higher is worse.
pub const LOAD: SignalId = SignalId(0);
/// `avail`: lower is worse.
pub const AVAIL: SignalId = SignalId(1);
/// `throttle`, undone by `unthrottle`.
pub const THROTTLE: ActionId = ActionId(0);
/// `unthrottle`.
pub const UNTHROTTLE: ActionId = ActionId(1);
/// `page`, no undo.
pub const PAGE: ActionId = ActionId(2);

static SIGNALS: [SignalDef; 2] = [
    SignalDef {
        name: "load",
        unit: "percent",
        description: "load",
        min: Some(0.0),
        max: None,
        direction: Direction::Above,
    },
    SignalDef {
        name: "avail",
        unit: "percent",
        description: "availability",
        min: Some(0.0),
        max: Some(100.0),
        direction: Direction::Below,
    },
];

static ACTIONS: [ActionDef; 3] = [
    ActionDef {
        name: "throttle",
        adapter: Adapter::Log,
        undo: Some(UNTHROTTLE),
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
    ActionDef {
        name: "page",
        adapter: Adapter::Log,
        undo: None,
        params: "{}",
        timeout_ms: 1000,
        retries: 0,
    },
];

static STANDARD_RULES: [Rule; 2] = [
    Rule {
        signal: LOAD,
        direction: Direction::Above,
        warn: Some(50.0),
        intervene: Some(100.0),
        refuse: Some(500.0),
        clear: 40.0,
        dwell: 2,
        actions: &[THROTTLE],
    },
    Rule {
        signal: AVAIL,
        direction: Direction::Below,
        warn: Some(99.0),
        intervene: Some(95.0),
        refuse: None,
        clear: 99.5,
        dwell: 1,
        actions: &[THROTTLE, PAGE],
    },
];

static RELAXED_RULES: [Rule; 1] = [Rule {
    signal: LOAD,
    direction: Direction::Above,
    warn: Some(250.0),
    intervene: Some(400.0),
    refuse: None,
    clear: 200.0,
    dwell: 1,
    actions: &[PAGE],
}];

static PROFILES: [ProfileDef; 2] = [
    ProfileDef {
        name: "standard",
        rules: &STANDARD_RULES,
        cooldown_s: 60,
        max_actions_per_hour: Some(4),
    },
    ProfileDef {
        name: "relaxed",
        rules: &RELAXED_RULES,
        cooldown_s: 0,
        max_actions_per_hour: None,
    },
];

const fn sku(id: &'static str, entitlement_required: bool, max_tenants: u32) -> Sku {
    Sku {
        id,
        name: "Test Guard",
        version: "1.0.0",
        spec_sha256: "00ff",
        tenant_attribute: "tenant_id",
        max_tenants,
        signals: &SIGNALS,
        actions: &ACTIONS,
        profiles: &PROFILES,
        default_profile: ProfileId(0),
        governor: GovernorTiming {
            intervention_timeout_s: 30,
            recovery_evaluations: 2,
            degraded_retry_s: 120,
        },
        entitlement_required,
        marketplace: None,
        ingress: IngressDef {
            pubsub_audience: None,
            max_body_bytes: 1 << 20,
        },
    }
}

/// A policy pack over one of the test SKUs.
/// The test SKUs' policy pack.
pub type TestPack = TablePack;

static OPEN_SKU: Sku = sku("test_guard", false, 1000);
static ENTITLED_SKU: Sku = sku("test_guard_paid", true, 1000);
static TINY_SKU: Sku = sku("test_guard_tiny", false, 3);

/// Entitlement not required.
pub static OPEN: TestPack = TablePack(&OPEN_SKU);
/// Entitlement required.
pub static ENTITLED: TestPack = TablePack(&ENTITLED_SKU);
/// At most three tenants.
pub static TINY: TestPack = TablePack(&TINY_SKU);

//! Memory of idle tenants: creates N tenants (default 100 000) through the
//! registry on a file ledger (one signal each with a message id, as Pub/Sub
//! push would deliver it, so the dedupe window holds one id each), then
//! prints the process RSS (`VmRSS`) and the registry's own estimate.
//!
//! `cargo run --release -p ggen-runtime --example idle_tenants -- 100000`

use std::sync::Arc;

use ggen_runtime::clock::Timestamp;
use ggen_runtime::ledger::Ledger;
use ggen_runtime::ledger::file::{FileLedger, FileOptions};
use ggen_runtime::receipt::Input;
use ggen_runtime::registry::Registry;
use ggen_runtime::sku::{
    ActionDef, ActionId, Adapter, Direction, GovernorTiming, IngressDef, ProfileDef, ProfileId,
    Rule, SignalDef, SignalId, Sku, TablePack,
};
use ggen_runtime::tenant::TenantId;

static SIGNALS: [SignalDef; 1] = [SignalDef {
    name: "spend_rate",
    unit: "usd_per_hour",
    description: "burn rate",
    min: Some(0.0),
    max: None,
    direction: Direction::Above,
}];

static ACTIONS: [ActionDef; 1] = [ActionDef {
    name: "throttle",
    adapter: Adapter::Log,
    undo: None,
    params: "{}",
    timeout_ms: 1000,
    retries: 0,
}];

static RULES: [Rule; 1] = [Rule {
    signal: SignalId(0),
    direction: Direction::Above,
    warn: Some(50.0),
    intervene: Some(100.0),
    refuse: Some(500.0),
    clear: 40.0,
    dwell: 2,
    actions: &[ActionId(0)],
}];

static PROFILES: [ProfileDef; 1] = [ProfileDef {
    name: "standard",
    rules: &RULES,
    cooldown_s: 300,
    max_actions_per_hour: Some(6),
}];

static SKU: Sku = Sku {
    id: "idle_bench",
    name: "Idle tenants",
    version: "1.0.0",
    spec_sha256: "00",
    tenant_attribute: "tenant_id",
    max_tenants: 1_000_000,
    signals: &SIGNALS,
    actions: &ACTIONS,
    profiles: &PROFILES,
    default_profile: ProfileId(0),
    governor: GovernorTiming {
        intervention_timeout_s: 120,
        recovery_evaluations: 3,
        degraded_retry_s: 600,
    },
    entitlement_required: false,
    marketplace: None,
    ingress: IngressDef {
        pubsub_audience: None,
        max_body_bytes: 1 << 20,
    },
};

static PACK: TablePack = TablePack(&SKU);

fn rss_kib() -> u64 {
    fs_err::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let before = rss_kib();
    let ledger = Arc::new(FileLedger::open(dir.path(), FileOptions::default())?);
    let registry = Registry::new(&PACK, ledger.clone());
    registry.recover()?;
    let at = Timestamp::parse("2026-01-01T00:00:00Z")?;
    let mut last = None;
    for i in 0..n {
        let tenant = TenantId::new(&format!("tenant-{i:07}"))?;
        let input = Input::Signal {
            via: Default::default(),
            observed: None,
            signal: SignalId(0),
            value: 10.0,
            id: Some(format!("message-{i:016}")),
        };
        last = registry.apply(&tenant, input, at)?.ticket;
    }
    if let Some(ticket) = last {
        ticket.wait()?;
    }
    ledger.flush()?;
    let after = rss_kib();
    let sample = TenantId::new("tenant-0000000")?;
    println!(
        "tenants={n} rss_mib={:.1} rss_before_mib={:.1} bytes_per_tenant={:.0} registry_estimate_bytes={}",
        after as f64 / 1024.0,
        before as f64 / 1024.0,
        (after.saturating_sub(before) * 1024) as f64 / n as f64,
        registry.tenant_bytes(&sample).unwrap_or(0)
    );
    Ok(())
}

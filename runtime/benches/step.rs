//! The governor core on one core: policy evaluation, the pure FSM step
//! (policy + transition, no ledger), and `Registry::apply` over the memory
//! ledger (step + canonical receipt + SHA-256 chain append).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ggen_runtime::clock::Timestamp;
use ggen_runtime::fsm::{Event, Governor};
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::policy::PolicyMemory;
use ggen_runtime::receipt::Input;
use ggen_runtime::registry::Registry;
use ggen_runtime::sku::{
    ActionDef, ActionId, Adapter, Direction, GovernorTiming, IngressDef, ProfileDef, ProfileId,
    Rule, SignalDef, SignalId, Sku, TablePack,
};
use ggen_runtime::tenant::TenantId;

const SPEND: SignalId = SignalId(0);
const SPIKE: SignalId = SignalId(1);

static SIGNALS: [SignalDef; 2] = [
    SignalDef {
        name: "spend_rate",
        unit: "usd_per_hour",
        description: "burn rate",
        min: Some(0.0),
        max: None,
        direction: Direction::Above,
    },
    SignalDef {
        name: "spend_spike",
        unit: "percent",
        description: "rise over baseline",
        min: Some(0.0),
        max: None,
        direction: Direction::Above,
    },
];

static ACTIONS: [ActionDef; 3] = [
    ActionDef {
        name: "throttle",
        adapter: Adapter::Log,
        undo: Some(ActionId(1)),
        params: "{}",
        timeout_ms: 5000,
        retries: 3,
    },
    ActionDef {
        name: "unthrottle",
        adapter: Adapter::Log,
        undo: None,
        params: "{}",
        timeout_ms: 5000,
        retries: 3,
    },
    ActionDef {
        name: "pause_jobs",
        adapter: Adapter::Log,
        undo: None,
        params: "{}",
        timeout_ms: 5000,
        retries: 0,
    },
];

static RULES: [Rule; 2] = [
    Rule {
        signal: SPEND,
        direction: Direction::Above,
        warn: Some(50.0),
        intervene: Some(100.0),
        refuse: Some(500.0),
        clear: 40.0,
        dwell: 2,
        actions: &[ActionId(0)],
    },
    Rule {
        signal: SPIKE,
        direction: Direction::Above,
        warn: Some(30.0),
        intervene: Some(80.0),
        refuse: None,
        clear: 30.0,
        dwell: 1,
        actions: &[ActionId(0), ActionId(2)],
    },
];

static PROFILES: [ProfileDef; 1] = [ProfileDef {
    name: "standard",
    rules: &RULES,
    cooldown_s: 300,
    max_actions_per_hour: Some(6),
}];

static SKU: Sku = Sku {
    id: "cost_guard",
    name: "Cost Circuit Breaker",
    version: "1.2.0",
    spec_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
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

/// A mixed reading pattern: calm, warning, intervening, recovering.
const VALUES: [f64; 16] = [
    10.0, 20.0, 60.0, 70.0, 120.0, 130.0, 90.0, 45.0, 35.0, 30.0, 20.0, 10.0, 5.0, 55.0, 10.0, 5.0,
];
const T0: i64 = 1_767_225_600_000;

fn policy(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy");
    group.throughput(Throughput::Elements(VALUES.len() as u64));
    group.bench_function("evaluate", |b| {
        let mut memory = PolicyMemory::default();
        b.iter(|| {
            for &v in &VALUES {
                black_box(memory.evaluate(&PROFILES[0], SPEND, black_box(v)));
            }
        });
    });
    group.finish();
}

fn fsm(c: &mut Criterion) {
    let mut group = c.benchmark_group("fsm");
    const STEPS: u64 = 1024;
    group.throughput(Throughput::Elements(STEPS));
    group.bench_function("step_signal", |b| {
        let mut governor = Governor::new(&PACK);
        let mut now = T0;
        let mut seq = 0u64;
        b.iter(|| {
            for i in 0..STEPS {
                now += 1000;
                seq += 1;
                let value = VALUES[(i % 16) as usize];
                let step = governor.step(
                    &PACK,
                    Event::Signal {
                        signal: SPEND,
                        value,
                    },
                    Timestamp(now),
                    seq,
                );
                // Confirm what was dispatched, like an actuator would.
                if let Some(step) = black_box(step)
                    && step.dispatch.iter().any(|d| !d.undo)
                {
                    let decided = seq;
                    for d in step.dispatch {
                        seq += 1;
                        black_box(governor.step(
                            &PACK,
                            Event::ActionResult {
                                decided,
                                action: d.action,
                                ok: true,
                            },
                            Timestamp(now),
                            seq,
                        ));
                    }
                }
            }
        });
    });
    group.finish();
}

fn registry(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry");
    const TENANTS: usize = 1000;
    // Fresh ledger per chunk so memory stays bounded; only applies are timed.
    const CHUNK: u64 = 20_000;
    let tenants: Vec<TenantId> = (0..TENANTS)
        .map(|i| TenantId::new(&format!("tenant-{i:05}")).unwrap())
        .collect();
    group.throughput(Throughput::Elements(1));
    group.bench_function("apply_memory_ledger", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let n = CHUNK.min(iters - done);
                let registry = Registry::new(&PACK, Arc::new(MemoryLedger::new()));
                let start = Instant::now();
                for i in 0..n {
                    let tenant = &tenants[(i as usize) % TENANTS];
                    let value = VALUES[((i as usize) / TENANTS) % VALUES.len()];
                    let applied = registry
                        .apply(
                            tenant,
                            Input::Signal {
                                via: Default::default(),
                                observed: None,
                                signal: SPEND,
                                value,
                                id: None,
                            },
                            Timestamp(T0 + i as i64),
                        )
                        .unwrap();
                    black_box(applied);
                }
                total += start.elapsed();
                done += n;
                drop(registry);
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, policy, fsm, registry);
criterion_main!(benches);

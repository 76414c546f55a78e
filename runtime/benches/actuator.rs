//! The dispatcher end to end: a signal over the intervene threshold for each
//! of N tenants → one dispatch each → the action runs → its result is
//! applied to the registry (memory ledger). `log_only` measures the
//! dispatcher's own overhead (task, permit, result receipt); `webhook`
//! adds a real HTTP POST to an axum server on loopback answering 204.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ggen_runtime::actuator::webhook::WebhookConfig;
use ggen_runtime::actuator::{ActuatorMode, Actuators, Dispatcher, DispatcherOptions};
use ggen_runtime::clock::Timestamp;
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::receipt::Input;
use ggen_runtime::registry::Registry;
use ggen_runtime::sku::{
    ActionDef, ActionId, Adapter, Direction, GovernorTiming, IngressDef, ProfileDef, ProfileId,
    Rule, SignalDef, SignalId, Sku, TablePack,
};
use ggen_runtime::tenant::TenantId;
use tokio::runtime::Runtime;

const LOAD: SignalId = SignalId(0);
const TENANTS: usize = 500;

static SIGNALS: [SignalDef; 1] = [SignalDef {
    name: "load",
    unit: "percent",
    description: "load",
    min: None,
    max: None,
    direction: Direction::Above,
}];

static ACTIONS: [ActionDef; 1] = [ActionDef {
    name: "throttle",
    adapter: Adapter::Webhook,
    undo: None,
    params: "{}",
    timeout_ms: 5000,
    retries: 0,
}];

static RULES: [Rule; 1] = [Rule {
    signal: LOAD,
    direction: Direction::Above,
    warn: Some(50.0),
    intervene: Some(100.0),
    refuse: None,
    clear: 40.0,
    dwell: 1,
    actions: &[ActionId(0)],
}];

static PROFILES: [ProfileDef; 1] = [ProfileDef {
    name: "standard",
    rules: &RULES,
    cooldown_s: 0,
    max_actions_per_hour: None,
}];

static SKU: Sku = Sku {
    id: "bench_guard",
    name: "Bench Guard",
    version: "1.0.0",
    spec_sha256: "00",
    tenant_attribute: "tenant_id",
    max_tenants: 100_000,
    signals: &SIGNALS,
    actions: &ACTIONS,
    profiles: &PROFILES,
    default_profile: ProfileId(0),
    governor: GovernorTiming {
        intervention_timeout_s: 120,
        recovery_evaluations: 1,
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

/// Dispatches one action per tenant and waits until every result is applied.
fn run_round(rt: &Runtime, dispatcher: &Dispatcher, tenants: &[TenantId]) {
    let registry = Arc::new(Registry::new(&PACK, Arc::new(MemoryLedger::new())));
    rt.block_on(async {
        for tenant in tenants {
            let input = Input::Signal {
                via: Default::default(),
                observed: None,
                signal: LOAD,
                value: 150.0,
                id: None,
            };
            let applied = registry.apply(tenant, input, Timestamp(0)).unwrap();
            dispatcher.spawn_all(&registry, applied.dispatches);
        }
        dispatcher.drain(Duration::from_secs(60)).await.unwrap();
    });
}

fn dispatcher(rt: &Runtime, mode: ActuatorMode, url: Option<String>) -> Dispatcher {
    let actuators = Actuators::new(WebhookConfig {
        default_url: url,
        secret: Some(b"bench-secret".to_vec()),
    })
    .unwrap();
    Dispatcher::new(
        rt.handle().clone(),
        actuators,
        DispatcherOptions {
            mode,
            ..DispatcherOptions::default()
        },
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tenants: Vec<TenantId> = (0..TENANTS)
        .map(|i| TenantId::new(&format!("tenant-{i}")).unwrap())
        .collect();
    let url = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(|| async { StatusCode::NO_CONTENT });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/hook")
    });

    let mut group = c.benchmark_group("actuator");
    group.throughput(Throughput::Elements(TENANTS as u64));
    group.sample_size(20);
    let log = dispatcher(&rt, ActuatorMode::LogOnly, None);
    group.bench_function("log_only", |b| {
        b.iter_batched(
            || (),
            |()| run_round(&rt, &log, &tenants),
            BatchSize::PerIteration,
        )
    });
    let live = dispatcher(&rt, ActuatorMode::Live, Some(url));
    group.bench_function("webhook", |b| {
        b.iter_batched(
            || (),
            |()| run_round(&rt, &live, &tenants),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

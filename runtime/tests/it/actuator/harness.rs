//! A registry on a memory ledger plus a dispatcher on the test's runtime,
//! with a manual clock.

use std::sync::Arc;
use std::time::Duration;

use ggen_runtime::actuator::{
    Actuators, Backoff, Clock, Dispatcher, DispatcherOptions, webhook::WebhookConfig,
};
use ggen_runtime::clock::Timestamp;
use ggen_runtime::fsm::State;
use ggen_runtime::ledger::Ledger;
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::receipt::Input;
use ggen_runtime::registry::{Applied, Registry};
use ggen_runtime::tenant::TenantId;
use serde_json::Value;

use super::pack::{LOAD, TestPack};

/// 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600_000;

/// `T0 + secs`.
pub fn at(secs: i64) -> Timestamp {
    Timestamp(T0 + secs * 1000)
}

/// Backoff short enough for tests.
pub const FAST: Backoff = Backoff {
    base: Duration::from_millis(5),
    cap: Duration::from_millis(40),
};

pub struct Harness {
    pub ledger: Arc<MemoryLedger>,
    pub registry: Arc<Registry>,
    pub dispatcher: Dispatcher,
    pub clock: Clock,
}

impl Harness {
    /// Webhooks go to `url` (as `GOVERNOR_WEBHOOK_URL` would say), signed with `secret`.
    pub fn new(pack: &'static TestPack, url: Option<&str>, secret: Option<&[u8]>) -> Harness {
        Harness::with_options(pack, url, secret, DispatcherOptions::default())
    }

    pub fn with_options(
        pack: &'static TestPack,
        url: Option<&str>,
        secret: Option<&[u8]>,
        options: DispatcherOptions,
    ) -> Harness {
        let ledger = Arc::new(MemoryLedger::new());
        let registry = Arc::new(Registry::new(pack, ledger.clone()));
        let clock = Clock::manual(at(0));
        let dispatcher = dispatcher(url, secret, &clock, options);
        Harness {
            ledger,
            registry,
            dispatcher,
            clock,
        }
    }

    /// Feeds `load = value` for `tenant` at `at(secs)` and spawns its dispatches.
    pub fn signal(&self, tenant: &TenantId, value: f64, secs: i64) -> Applied {
        self.clock.advance_to(at(secs));
        let input = Input::Signal {
            via: Default::default(),
            observed: None,
            signal: LOAD,
            value,
            id: None,
        };
        let applied = self.registry.apply(tenant, input, at(secs)).unwrap();
        self.dispatcher
            .spawn_all(&self.registry, applied.dispatches.clone());
        applied
    }

    /// Waits for every action (a few seconds at most).
    pub async fn settle(&self) {
        self.dispatcher
            .drain(Duration::from_secs(20))
            .await
            .unwrap();
    }

    /// The tenant's state now.
    pub fn state(&self, tenant: &TenantId) -> State {
        self.registry.view(tenant).unwrap().state
    }

    /// The tenant's receipts as JSON.
    pub fn receipts(&self, tenant: &TenantId) -> Vec<Value> {
        self.ledger
            .read(tenant, 0, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(&r.bytes).unwrap())
            .collect()
    }

    /// The tenant's receipts of `kind`.
    pub fn receipts_of(&self, tenant: &TenantId, kind: &str) -> Vec<Value> {
        self.receipts(tenant)
            .into_iter()
            .filter(|r| r["kind"] == kind)
            .collect()
    }
}

/// A dispatcher on the test's runtime with [`FAST`] backoff and `clock`,
/// its webhooks going to `url`, signed with `secret`.
pub fn dispatcher(
    url: Option<&str>,
    secret: Option<&[u8]>,
    clock: &Clock,
    options: DispatcherOptions,
) -> Dispatcher {
    let actuators = Actuators::new(WebhookConfig {
        default_url: url.map(str::to_owned),
        secret: secret.map(<[u8]>::to_vec),
    })
    .unwrap();
    Dispatcher::new(
        tokio::runtime::Handle::current(),
        actuators,
        DispatcherOptions {
            backoff: FAST,
            clock: clock.clone(),
            ..options
        },
    )
}

pub fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

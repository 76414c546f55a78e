//! Prometheus metrics of one service instance.
//!
//! The recorder is not installed globally: each [`Metrics`] owns its own
//! `PrometheusRecorder` and pre-registers every series as a handle, so the hot
//! path only bumps atomics and several services (tests) can share a process.
//! Every family carries a `# HELP` line ([`FAMILIES`]).
//!
//! Series (all prefixed `governor_`):
//! Every series carries `sku="<id>"` (a global label), so one Prometheus
//! can tell the SKUs it scrapes apart.
//!
//! - `build_info{sku, version, spec_sha256, runtime}`: always 1; the SKU's
//!   id and version, the SHA-256 of the spec the crate was generated from,
//!   and the `ggen-runtime` version;
//! - `ready`: 1 while `/readyz` would answer 200, else 0 (sampled when scraped);
//! - `http_requests_total{route, status}`: every answer, by route template
//!   ([`ROUTES`], `other` when none matched) and status class (`2xx`,
//!   `3xx`, `4xx`, `5xx`), admission's refusals included;
//! - `http_request_duration_seconds{route}`: from routing until the answer
//!   is ready (for ingest: the receipt is durable), by route template, for
//!   every answer but a 4xx;
//! - `ledger_verifications_total`, `ledger_verify_failures_total`: whole-
//!   ledger verifications (`GET /v1/ledger/verify`, `--verify-every`), and
//!   those that found a receipt that does not verify or a checkpoint that
//!   contradicts the chains, or could not complete;
//!   `ledger_last_verify_ok` (1 unless the last one failed) and
//!   `ledger_last_verify_timestamp_seconds` (when the last one finished);
//! - `signals_total{signal, outcome}`: `accepted`, `duplicate`, `rejected`;
//! - `decisions_total{level}`: the tenant's level after each accepted signal;
//! - `transitions_total{from, to}`: every state change the registry wrote
//!   (signals, timers, action results, entitlement events, resets), sampled
//!   from the registry when scraped; only the pairs the FSM's transition
//!   table ([`crate::fsm::transitions`]) allows for this SKU are exported
//!   before they happen;
//! - `actions_total{action}`: actions dispatched;
//! - `action_results_total{action, outcome}`: `ok`, `failed`, `rejected`
//!   (the actuator's queue was full: never run), one outcome per dispatch,
//!   sampled from the actuator when scraped;
//! - `ledger_durable_seconds`: append → durable latency (histogram);
//! - `tenants{state}`: tenants by FSM state (sampled when scraped);
//! - SKUs sold on Google Cloud Marketplace only: `entitlements{state}`,
//!   tenants by entitlement state (sampled when scraped);
//!   `marketplace_notifications_total{outcome}`: `applied`, `duplicate`,
//!   `rejected` (receipted on the `marketplace` chain), `unavailable`
//!   (answered 503 for Pub/Sub to redeliver); and
//!   `procurement_calls_total{call, outcome}`: `ok`, `failed` (a permanent
//!   error, receipted), `unavailable` (transient errors to the last attempt);
//! - `requests_shed_total`: requests refused by the in-flight limit;
//! - `ledger_bytes`, `ledger_disk_free_bytes`, `ledger_disk_size_bytes`:
//!   the ledger's files and its file system, sampled when scraped (a
//!   PostgreSQL ledger: `ledger_bytes` is its tables' size, read at most
//!   every 30 s; its disk is the database's to watch); `ledger_disk_low` (free space under `--min-free`) and
//!   `ledger_disk_full` (writes waiting for space), 0 or 1.

use std::time::Duration;

use axum::http::StatusCode;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use super::ROUTES;
use super::disk::DiskStatus;
use crate::actuator::Dispatcher;
use crate::entitlement::EntitlementState;
use crate::fsm::State;
use crate::marketplace::Call;
use crate::policy::Level;
use crate::registry::Registry;
use crate::sku::{ActionId, SignalId, Sku};

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// A value sampled or set.
    Gauge,
    /// Buckets of observations.
    Histogram,
}

/// Every family this module exports: name, kind, help text.
pub const FAMILIES: [(&str, Kind, &str); 24] = [
    (
        BUILD_INFO,
        Kind::Gauge,
        "Always 1: the SKU id and version, the SHA-256 of the spec the crate was generated from, the ggen-runtime version.",
    ),
    (
        HTTP_REQUESTS,
        Kind::Counter,
        "HTTP answers by route template (other: no route matched) and status class, refusals by authentication, body limits and shedding included.",
    ),
    (
        HTTP_DURATION,
        Kind::Histogram,
        "Seconds from routing a request until its answer is ready (for signals and pushes: until the receipt is durable), by route template; 4xx answers are not timed.",
    ),
    (
        READY,
        Kind::Gauge,
        "1 while /readyz answers 200 (recovered, ledger working, disk neither full nor under --min-free, not shutting down), else 0.",
    ),
    (
        VERIFICATIONS,
        Kind::Counter,
        "Whole-ledger verifications run (GET /v1/ledger/verify and --verify-every).",
    ),
    (
        VERIFY_FAILURES,
        Kind::Counter,
        "Ledger verifications that found a receipt that does not verify or a checkpoint that contradicts the chains, or could not complete.",
    ),
    (
        VERIFY_OK,
        Kind::Gauge,
        "1 unless the last ledger verification failed (found a problem or could not complete): stays 0 until one passes.",
    ),
    (
        VERIFY_TIME,
        Kind::Gauge,
        "Unix time of the last ledger verification that ran to its end (0: none since start).",
    ),
    (
        "governor_signals_total",
        Kind::Counter,
        "Signals received, by signal (_unknown: a name the spec lacks) and outcome (accepted, duplicate, rejected).",
    ),
    (
        "governor_decisions_total",
        Kind::Counter,
        "Accepted signals by the level the policy evaluated them to.",
    ),
    (
        TRANSITIONS,
        Kind::Counter,
        "Governor state changes written to the ledger, by from and to state (signals, timers, action results, entitlement events, resets).",
    ),
    (
        "governor_actions_total",
        Kind::Counter,
        "Actions dispatched, by action.",
    ),
    (
        ACTION_RESULTS,
        Kind::Counter,
        "Final results of dispatched actions, by action and outcome (ok, failed, rejected: never run because the actuator's queue was full).",
    ),
    (
        DURABLE,
        Kind::Histogram,
        "Seconds from a request's ledger append until its receipt is durable.",
    ),
    (
        "governor_tenants",
        Kind::Gauge,
        "Tenants held in memory, by governor state.",
    ),
    (
        ENTITLEMENTS,
        Kind::Gauge,
        "Tenants held in memory, by entitlement state (SKUs sold on Google Cloud Marketplace).",
    ),
    (
        NOTIFICATIONS,
        Kind::Counter,
        "Marketplace notifications by outcome (applied, duplicate, rejected: receipted on the marketplace chain, unavailable: answered 503 for Pub/Sub to redeliver).",
    ),
    (
        PROCUREMENT,
        Kind::Counter,
        "Procurement API calls by call and outcome (ok, failed: a permanent error, unavailable: transient errors to the last attempt).",
    ),
    (
        "governor_requests_shed_total",
        Kind::Counter,
        "Requests refused with 503 because every in-flight slot was taken.",
    ),
    (
        "governor_ledger_bytes",
        Kind::Gauge,
        "Bytes of the ledger: a file ledger's files (segments, index files, checkpoint), or a PostgreSQL ledger's tables.",
    ),
    (
        "governor_ledger_disk_free_bytes",
        Kind::Gauge,
        "Free bytes (for an unprivileged writer) on the file ledger's file system.",
    ),
    (
        "governor_ledger_disk_size_bytes",
        Kind::Gauge,
        "Size in bytes of the file ledger's file system.",
    ),
    (
        "governor_ledger_disk_low",
        Kind::Gauge,
        "1 while free space on the ledger's disk is under --min-free (readiness fails), else 0.",
    ),
    (
        "governor_ledger_disk_full",
        Kind::Gauge,
        "1 while ledger writes wait for disk space (ingest answers 503 ledger_full), else 0.",
    ),
];

const BUILD_INFO: &str = "governor_build_info";
const HTTP_DURATION: &str = "governor_http_request_duration_seconds";
const READY: &str = "governor_ready";
const VERIFICATIONS: &str = "governor_ledger_verifications_total";
const VERIFY_FAILURES: &str = "governor_ledger_verify_failures_total";
const VERIFY_OK: &str = "governor_ledger_last_verify_ok";
const VERIFY_TIME: &str = "governor_ledger_last_verify_timestamp_seconds";
/// Histogram buckets of request durations, in seconds (the ingest latency
/// objective, 250 ms, is one of them).
const HTTP_BUCKETS: [f64; 14] = [
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const HTTP_REQUESTS: &str = "governor_http_requests_total";
const TRANSITIONS: &str = "governor_transitions_total";
const ACTION_RESULTS: &str = "governor_action_results_total";
/// The `route` label of requests no route matched.
const OTHER_ROUTE: &str = "other";
/// Status classes, indexed by `status / 100 - 2` (1xx counts as 2xx).
const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];
/// Outcomes counted per signal.
const SIGNAL_OUTCOMES: [&str; 3] = ["accepted", "duplicate", "rejected"];
/// Final outcomes of actions, in [`ActionResults`](crate::actuator::ActionResults) order.
const ACTION_OUTCOMES: [&str; 3] = ["ok", "failed", "rejected"];
/// Every level, in order.
const LEVELS: [Level; 4] = [Level::Normal, Level::Warn, Level::Intervene, Level::Refuse];
/// Histogram buckets of the durability latency, in seconds.
const DURABLE_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];
const DURABLE: &str = "governor_ledger_durable_seconds";
const ENTITLEMENTS: &str = "governor_entitlements";
const NOTIFICATIONS: &str = "governor_marketplace_notifications_total";
const PROCUREMENT: &str = "governor_procurement_calls_total";
/// Outcomes of Marketplace notifications.
const NOTIFICATION_OUTCOMES: [&str; 4] = ["applied", "duplicate", "rejected", "unavailable"];
/// Outcomes of Procurement API calls.
const CALL_OUTCOMES: [&str; 3] = ["ok", "failed", "unavailable"];

/// What became of a Marketplace notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationOutcome {
    /// Receipted on its tenant's chain.
    Applied,
    /// A redelivered `eventId`: acknowledged, nothing more.
    Duplicate,
    /// Receipted as rejected on the `marketplace` chain.
    Rejected,
    /// Answered 503 (the Procurement API or the token endpoint failed for now).
    Unavailable,
}

/// What became of a Procurement API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// It succeeded.
    Ok,
    /// A permanent error (receipted).
    Failed,
    /// Transient errors to its last attempt (the notification answered 503).
    Unavailable,
}

/// The Marketplace series of a SKU sold there.
struct MarketplaceSeries {
    /// Tenants by entitlement state, in [`EntitlementState::ALL`] order.
    entitlements: [Gauge; 6],
    /// By [`NotificationOutcome`].
    notifications: [Counter; 4],
    /// `[call][outcome]`, in [`Call::ALL`] order.
    calls: [[Counter; 3]; 5],
}

/// Which outcome of a signal to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalOutcome {
    /// Receipted as a decision.
    Accepted,
    /// Dropped as a duplicate id.
    Duplicate,
    /// Receipted as `rejected`.
    Rejected,
}

/// The series of one service, pre-registered.
pub struct Metrics {
    /// Kept to register a transition the table does not chart, should one happen.
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// `[route][status class]`, indexed like [`ROUTES`], then `other`.
    http: Vec<[Counter; 4]>,
    /// Request durations, indexed like `http`.
    http_seconds: Vec<Histogram>,
    ready: Gauge,
    /// Finished verifications, and those that failed.
    verifications: [Counter; 2],
    /// The last verification's result (1 ok) and its Unix time.
    last_verify: [Gauge; 2],
    /// `[signal][outcome]`.
    signals: Vec<[Counter; 3]>,
    /// Signals whose name the SKU does not know (rejected).
    unknown_signals: Counter,
    decisions: [Counter; 4],
    /// `[from][to]`, indexed by [`State::index`]: the pairs the FSM can
    /// make for this SKU (the rest are registered if they ever happen).
    transitions: [[Option<Counter>; 6]; 6],
    /// Dispatches per action.
    actions: Vec<Counter>,
    /// `[action][outcome]`, set from the actuator's stats.
    results: Vec<[Counter; 3]>,
    durable: Histogram,
    tenants: [Gauge; 6],
    shed: Counter,
    /// Bytes, free, size, low, full.
    disk: [Gauge; 5],
    /// Only for SKUs sold on Google Cloud Marketplace.
    marketplace: Option<MarketplaceSeries>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The index in [`State::NAMES`] of the state `name`.
fn state_index(name: &str) -> Option<usize> {
    State::NAMES.iter().position(|n| *n == name)
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels.iter().map(|&(k, v)| Label::new(k, v)).collect();
    Key::from_parts(name, labels)
}

impl Metrics {
    /// Registers every series of `sku` with a fresh recorder.
    pub fn new(sku: &'static Sku) -> Metrics {
        let recorder = PrometheusBuilder::new()
            .add_global_label("sku", sku.id)
            .set_buckets_for_metric(Matcher::Full(DURABLE.to_owned()), &DURABLE_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), &HTTP_BUCKETS)
            })
            .unwrap_or_else(|_| PrometheusBuilder::new().add_global_label("sku", sku.id))
            .build_recorder();
        for (name, kind, help) in FAMILIES {
            let name = KeyName::from_const_str(name);
            match kind {
                Kind::Counter => recorder.describe_counter(name, None, help.into()),
                Kind::Gauge => recorder.describe_gauge(name, None, help.into()),
                Kind::Histogram => recorder.describe_histogram(name, None, help.into()),
            }
        }
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
        let counter = |name, labels: &[(&'static str, &'static str)]| {
            recorder.register_counter(&key(name, labels), &meta)
        };
        recorder
            .register_gauge(
                // `sku` is the global label.
                &key(
                    BUILD_INFO,
                    &[
                        ("version", sku.version),
                        ("spec_sha256", sku.spec_sha256),
                        ("runtime", crate::VERSION),
                    ],
                ),
                &meta,
            )
            .set(1.0);
        let http = ROUTES
            .iter()
            .chain([&OTHER_ROUTE])
            .map(|route| {
                STATUS_CLASSES
                    .map(|status| counter(HTTP_REQUESTS, &[("route", *route), ("status", status)]))
            })
            .collect();
        let http_seconds = ROUTES
            .iter()
            .chain([&OTHER_ROUTE])
            .map(|route| {
                recorder.register_histogram(&key(HTTP_DURATION, &[("route", *route)]), &meta)
            })
            .collect();
        let ready = recorder.register_gauge(&key(READY, &[]), &meta);
        let verifications = [VERIFICATIONS, VERIFY_FAILURES].map(|name| counter(name, &[]));
        let last_verify =
            [VERIFY_OK, VERIFY_TIME].map(|name| recorder.register_gauge(&key(name, &[]), &meta));
        last_verify[0].set(1.0);
        let signals = sku
            .signals
            .iter()
            .map(|s| {
                SIGNAL_OUTCOMES.map(|outcome| {
                    counter(
                        "governor_signals_total",
                        &[("signal", s.name), ("outcome", outcome)],
                    )
                })
            })
            .collect();
        let unknown_signals = counter(
            "governor_signals_total",
            &[("signal", "_unknown"), ("outcome", "rejected")],
        );
        let decisions =
            LEVELS.map(|level| counter("governor_decisions_total", &[("level", level.as_str())]));
        let mut transitions: [[Option<Counter>; 6]; 6] = Default::default();
        for transition in crate::fsm::transitions(sku.entitlement_required) {
            let (Some(from), Some(to)) = (state_index(transition.from), state_index(transition.to))
            else {
                continue;
            };
            // Steps that stay put are charted but change no state.
            if from != to && transitions[from][to].is_none() {
                transitions[from][to] = Some(counter(
                    TRANSITIONS,
                    &[("from", transition.from), ("to", transition.to)],
                ));
            }
        }
        let actions = sku
            .actions
            .iter()
            .map(|a| counter("governor_actions_total", &[("action", a.name)]))
            .collect();
        let results = sku
            .actions
            .iter()
            .map(|a| {
                ACTION_OUTCOMES.map(|outcome| {
                    counter(ACTION_RESULTS, &[("action", a.name), ("outcome", outcome)])
                })
            })
            .collect();
        let durable = recorder.register_histogram(&key(DURABLE, &[]), &meta);
        let tenants = State::NAMES.map(|state| {
            recorder.register_gauge(&key("governor_tenants", &[("state", state)]), &meta)
        });
        let shed = counter("governor_requests_shed_total", &[]);
        let disk = [
            "governor_ledger_bytes",
            "governor_ledger_disk_free_bytes",
            "governor_ledger_disk_size_bytes",
            "governor_ledger_disk_low",
            "governor_ledger_disk_full",
        ]
        .map(|name| recorder.register_gauge(&key(name, &[]), &meta));
        let marketplace = sku.marketplace.is_some().then(|| MarketplaceSeries {
            entitlements: EntitlementState::ALL.map(|state| {
                recorder.register_gauge(&key(ENTITLEMENTS, &[("state", state.as_str())]), &meta)
            }),
            notifications: NOTIFICATION_OUTCOMES
                .map(|outcome| counter(NOTIFICATIONS, &[("outcome", outcome)])),
            calls: Call::ALL.map(|call| {
                CALL_OUTCOMES.map(|outcome| {
                    counter(
                        PROCUREMENT,
                        &[("call", call.as_str()), ("outcome", outcome)],
                    )
                })
            }),
        });
        Metrics {
            handle: recorder.handle(),
            recorder,
            http,
            http_seconds,
            ready,
            verifications,
            last_verify,
            signals,
            unknown_signals,
            decisions,
            transitions,
            actions,
            results,
            durable,
            tenants,
            shed,
            disk,
            marketplace,
        }
    }

    /// Counts one Marketplace notification.
    pub fn notification(&self, outcome: NotificationOutcome) {
        if let Some(m) = &self.marketplace {
            m.notifications[outcome as usize].increment(1);
        }
    }

    /// Counts one Procurement API call.
    pub fn procurement(&self, call: Call, outcome: CallOutcome) {
        if let Some(m) = &self.marketplace {
            let index = Call::ALL.iter().position(|c| *c == call).unwrap_or(0);
            m.calls[index][outcome as usize].increment(1);
        }
    }

    /// Counts one signal (`None`: a name the SKU does not know).
    pub fn signal(&self, signal: Option<SignalId>, outcome: SignalOutcome) {
        let Some(row) = signal.and_then(|s| self.signals.get(usize::from(s.0))) else {
            self.unknown_signals.increment(1);
            return;
        };
        row[outcome as usize].increment(1);
    }

    /// Counts one decision at `level`.
    pub fn decision(&self, level: Level) {
        let index = LEVELS.iter().position(|l| *l == level).unwrap_or(0);
        self.decisions[index].increment(1);
    }

    /// Counts one dispatched action.
    pub fn dispatched(&self, action: ActionId) {
        if let Some(counter) = self.actions.get(usize::from(action.0)) {
            counter.increment(1);
        }
    }

    /// Records how long an append took to become durable.
    pub fn durable(&self, elapsed: Duration) {
        self.durable.record(elapsed.as_secs_f64());
    }

    /// Counts one HTTP answer on the route at `route` in [`ROUTES`] (`None`:
    /// no route matched), ready `elapsed` after routing.
    pub fn http(&self, route: Option<usize>, status: StatusCode, elapsed: Duration) {
        let row = route.map_or(ROUTES.len(), |r| r.min(ROUTES.len()));
        let class = usize::from(status.as_u16() / 100).clamp(2, 5) - 2;
        if let Some(counters) = self.http.get(row) {
            counters[class].increment(1);
        }
        // A client's mistakes (401s, 400s) say nothing of the service's
        // speed, and a flood of them must not dilute the latency objective.
        if class != 2
            && let Some(histogram) = self.http_seconds.get(row)
        {
            histogram.record(elapsed.as_secs_f64());
        }
    }

    /// Counts one ledger verification: `ok` false when it found a problem
    /// or could not complete; `finished` is when it ran to its end, if it did.
    pub fn verified(&self, ok: bool, finished: Option<std::time::SystemTime>) {
        let [runs, failures] = &self.verifications;
        runs.increment(1);
        if !ok {
            failures.increment(1);
        }
        let [last_ok, last_time] = &self.last_verify;
        last_ok.set(f64::from(u8::from(ok)));
        if let Some(at) = finished.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()) {
            last_time.set(at.as_secs_f64().floor());
        }
    }

    /// Counts one shed request.
    pub fn shed(&self) {
        self.shed.increment(1);
    }

    /// Folds pending histogram samples into their buckets, so memory stays
    /// bounded however rarely `/metrics` is scraped.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Samples the tenant gauges from `registry` and the action results
    /// from `actuator`, and renders the text exposition.
    pub fn render(
        &self,
        registry: &Registry,
        actuator: Option<&Dispatcher>,
        disk: Option<DiskStatus>,
        stored: Option<u64>,
        ready: bool,
    ) -> String {
        self.ready.set(f64::from(u8::from(ready)));
        // A database ledger: its tables' size (its disk is the database's).
        if let (None, Some(bytes)) = (disk, stored) {
            self.disk[0].set(bytes as f64);
        }
        if let Some(status) = disk {
            let space = status.space;
            let values = [
                space.bytes as f64,
                space.free as f64,
                space.total as f64,
                f64::from(u8::from(status.low())),
                f64::from(u8::from(space.full)),
            ];
            for (gauge, value) in self.disk.iter().zip(values) {
                gauge.set(value);
            }
        }
        for (gauge, (_, count)) in self.tenants.iter().zip(registry.states_count()) {
            gauge.set(count as f64);
        }
        if let Some(m) = &self.marketplace {
            for (gauge, (_, count)) in m.entitlements.iter().zip(registry.entitlements_count()) {
                gauge.set(count as f64);
            }
        }
        for (from, (row, counts)) in self
            .transitions
            .iter()
            .zip(registry.transitions())
            .enumerate()
        {
            for (to, (counter, count)) in row.iter().zip(counts).enumerate() {
                match counter {
                    Some(counter) => counter.absolute(count),
                    // Not in the table, yet it happened: export it rather than lose it.
                    None if count > 0 => {
                        let labels = [("from", State::NAMES[from]), ("to", State::NAMES[to])];
                        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
                        self.recorder
                            .register_counter(&key(TRANSITIONS, &labels), &meta)
                            .absolute(count);
                    }
                    None => {}
                }
            }
        }
        if let Some(actuator) = actuator {
            for (counters, results) in self.results.iter().zip(actuator.results_by_action()) {
                let [ok, failed, rejected] = counters;
                ok.absolute(results.ok);
                failed.absolute(results.failed);
                rejected.absolute(results.rejected);
            }
        }
        self.handle.render()
    }
}

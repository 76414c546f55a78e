//! Prometheus metrics of one service instance.
//!
//! The recorder is not installed globally: each [`Metrics`] owns its own
//! `PrometheusRecorder` and pre-registers every series as a handle, so the hot
//! path only bumps atomics and several services (tests) can share a process.
//!
//! Series (all prefixed `governor_`):
//! - `signals_total{signal, outcome}`: `accepted`, `duplicate`, `rejected`;
//! - `decisions_total{level}`: the tenant's level after each accepted signal;
//! - `transitions_total{from, to}`: every state change the registry wrote
//!   (signals, timers, action results, entitlement events, resets), sampled
//!   from the registry when scraped;
//! - `actions_total{action}`: actions dispatched;
//! - `action_results_total{outcome}`: `ok`, `failed`, `rejected` (queue
//!   full), sampled from the actuator when scraped;
//! - `ledger_durable_seconds`: append → durable latency (histogram);
//! - `tenants{state}`: tenants by FSM state (sampled when scraped);
//! - `requests_shed_total`: requests refused by the in-flight limit;
//! - `ledger_bytes`, `ledger_disk_free_bytes`, `ledger_disk_size_bytes`:
//!   the ledger's files and its file system (file ledger only), sampled
//!   when scraped; `ledger_disk_low` (free space under `--min-free`) and
//!   `ledger_disk_full` (writes waiting for space), 0 or 1.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::disk::DiskStatus;
use crate::actuator::Dispatcher;
use crate::fsm::State;
use crate::policy::Level;
use crate::registry::Registry;
use crate::sku::{ActionId, SignalId, Sku};

/// Outcomes counted per signal.
const SIGNAL_OUTCOMES: [&str; 3] = ["accepted", "duplicate", "rejected"];
/// Final outcomes of actions.
const ACTION_OUTCOMES: [&str; 3] = ["ok", "failed", "rejected"];
/// Every level, in order.
const LEVELS: [Level; 4] = [Level::Normal, Level::Warn, Level::Intervene, Level::Refuse];
/// Histogram buckets of the durability latency, in seconds.
const DURABLE_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];
const DURABLE: &str = "governor_ledger_durable_seconds";

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
    handle: PrometheusHandle,
    /// `[signal][outcome]`.
    signals: Vec<[Counter; 3]>,
    /// Signals whose name the SKU does not know (rejected).
    unknown_signals: Counter,
    decisions: [Counter; 4],
    /// `[from][to]`, indexed by [`State::index`].
    transitions: Vec<Vec<Counter>>,
    /// Dispatches per action.
    actions: Vec<Counter>,
    /// Final outcomes, set from the actuator's stats.
    results: [Counter; 3],
    durable: Histogram,
    tenants: [Gauge; 6],
    shed: Counter,
    /// Bytes, free, size, low, full.
    disk: [Gauge; 5],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels.iter().map(|&(k, v)| Label::new(k, v)).collect();
    Key::from_parts(name, labels)
}

impl Metrics {
    /// Registers every series of `sku` with a fresh recorder.
    pub fn new(sku: &'static Sku) -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DURABLE.to_owned()), &DURABLE_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
        let counter = |name, labels: &[(&'static str, &'static str)]| {
            recorder.register_counter(&key(name, labels), &meta)
        };
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
        let transitions = State::NAMES
            .iter()
            .map(|from| {
                State::NAMES
                    .iter()
                    .map(|to| counter("governor_transitions_total", &[("from", from), ("to", to)]))
                    .collect()
            })
            .collect();
        let actions = sku
            .actions
            .iter()
            .map(|a| counter("governor_actions_total", &[("action", a.name)]))
            .collect();
        let results = ACTION_OUTCOMES
            .map(|outcome| counter("governor_action_results_total", &[("outcome", outcome)]));
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
        Metrics {
            handle: recorder.handle(),
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
    ) -> String {
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
        for (row, counts) in self.transitions.iter().zip(registry.transitions()) {
            for (counter, count) in row.iter().zip(counts) {
                counter.absolute(count);
            }
        }
        if let Some(stats) = actuator.map(Dispatcher::stats) {
            let [ok, failed, rejected] = &self.results;
            ok.absolute(stats.succeeded);
            failed.absolute(stats.failed);
            rejected.absolute(stats.rejected);
        }
        self.handle.render()
    }
}

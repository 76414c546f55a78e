//! The dispatcher: runs dispatched actions off the request path and feeds
//! their results back to the registry.
//!
//! [`Dispatcher::spawn`] never blocks: it starts a task on the tokio runtime
//! that runs the action through [`perform`] (bounded attempts, each bounded
//! in time and holding one of `concurrency` permits), then applies the
//! `action_result` to the registry and spawns whatever that returns (the
//! `undo` actions on recovery). Past `max_queued` actions queued or running,
//! a new dispatch is failed at once (`actuator queue full`) so the tenant
//! degrades instead of piling up work. Whatever happens to a target, the
//! tenant never stays stuck: every attempt is bounded, and the FSM's
//! intervention timeout (fired by [`Dispatcher::run_timers`]) degrades it.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};
use tokio::time::MissedTickBehavior;

use super::command::CommandActuator;
use super::lanes::{self, Lanes, Turn};
use super::log::LogActuator;
use super::turns;
use super::webhook::{WebhookActuator, WebhookConfig};
use super::{ActionCall, Actuator, ActuatorError, Backoff, Report, perform_until};
use crate::clock::Timestamp;
use crate::ledger::{LedgerError, Ticket};
use crate::receipt::Input;
use crate::registry::{Applied, DECISION_ATTEMPTS, Dispatch, Registry};
use crate::sku::{ActionId, Adapter};
use crate::tenant::TenantId;

/// Whether actions really run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActuatorMode {
    /// Each action runs through the adapter its spec names.
    #[default]
    Live,
    /// Every action runs through the `log` adapter (no side effects).
    LogOnly,
}

/// The time the dispatcher stamps on actions and their results.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock (a live service).
    #[default]
    System,
    /// A clock moved by its owner (replay takes time from the signals; tests inject it).
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock starting at `at`.
    pub fn manual(at: Timestamp) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(at.as_millis())))
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Manual(ms) => Timestamp(ms.load(Ordering::Acquire)),
        }
    }

    /// Moves a manual clock forward to `at` (never backwards); no-op for the system clock.
    pub fn advance_to(&self, at: Timestamp) {
        if let Clock::Manual(ms) = self {
            ms.fetch_max(at.as_millis(), Ordering::AcqRel);
        }
    }
}

/// The adapters a dispatcher runs actions through, one per [`Adapter`].
#[derive(Debug, Clone)]
pub struct Actuators {
    /// For `log` actions (and every action in [`ActuatorMode::LogOnly`]).
    pub log: Arc<dyn Actuator>,
    /// For `webhook` actions.
    pub webhook: Arc<dyn Actuator>,
    /// For `command` actions.
    pub command: Arc<dyn Actuator>,
}

impl Actuators {
    /// The standard adapters, the webhook configured by `config`.
    pub fn new(config: WebhookConfig) -> Result<Actuators, ActuatorError> {
        Ok(Actuators {
            log: Arc::new(LogActuator),
            webhook: Arc::new(WebhookActuator::new(config)?),
            command: Arc::new(CommandActuator),
        })
    }

    /// The standard adapters, the webhook configured from the environment.
    pub fn from_env() -> Result<Actuators, ActuatorError> {
        Actuators::new(WebhookConfig::from_env())
    }

    /// The adapter for `adapter`.
    pub fn get(&self, adapter: Adapter) -> &Arc<dyn Actuator> {
        match adapter {
            Adapter::Log => &self.log,
            Adapter::Webhook => &self.webhook,
            Adapter::Command => &self.command,
        }
    }
}

/// How a [`Dispatcher`] runs.
#[derive(Debug, Clone)]
pub struct DispatcherOptions {
    /// Live adapters or log only.
    pub mode: ActuatorMode,
    /// Attempts running at once (a retry's backoff, or a wait for its turn
    /// on a shared ledger, holds no permit).
    pub concurrency: usize,
    /// Actions queued or running past which new dispatches fail at once.
    pub max_queued: usize,
    /// Backoff between retries.
    pub backoff: Backoff,
    /// Time for action bodies, results and timers.
    pub clock: Clock,
    /// How often [`Dispatcher::run_timers`] ticks the registry.
    pub timer_period: Duration,
}

impl Default for DispatcherOptions {
    fn default() -> Self {
        DispatcherOptions {
            mode: ActuatorMode::Live,
            concurrency: 64,
            max_queued: 10_000,
            backoff: Backoff::default(),
            clock: Clock::System,
            timer_period: Duration::from_millis(500),
        }
    }
}

/// Counters of a dispatcher since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Dispatches accepted by [`Dispatcher::spawn`].
    pub dispatched: u64,
    /// Actions whose final result was ok.
    pub succeeded: u64,
    /// Actions whose final result was a failure (retries exhausted or permanent).
    pub failed: u64,
    /// Dispatches failed at once because the queue was full.
    pub rejected: u64,
    /// Attempts made over all actions.
    pub attempts: u64,
    /// Results the registry could not record (ledger failure).
    pub unrecorded: u64,
}

/// Final results of one action since the dispatcher started; each
/// dispatch is counted under exactly one outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionResults {
    /// The final result was ok.
    pub ok: u64,
    /// The final result was a failure (retries exhausted, or permanent).
    pub failed: u64,
    /// Failed without running: the queue was full.
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct Counters {
    dispatched: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    attempts: AtomicU64,
    unrecorded: AtomicU64,
    /// Indexed by [`ActionId`]; grown on the first result of an action
    /// (results are rare next to requests: a lock is cheap enough).
    by_action: Mutex<Vec<ActionResults>>,
}

#[derive(Debug)]
struct Inner {
    handle: Handle,
    actuators: Actuators,
    options: DispatcherOptions,
    permits: Arc<Semaphore>,
    /// Actions queued or running.
    pending: watch::Sender<usize>,
    counters: Counters,
    /// Each tenant's actions queued or running, so that an action and its
    /// undo never overtake each other.
    lanes: Arc<Lanes>,
}

/// Decrements the pending count when an action task ends (even by panic).
struct PendingGuard(Arc<Inner>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Runs dispatched actions on a tokio runtime and applies their results.
///
/// Cheap to clone; clones share the queue, permits and counters.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    /// A dispatcher spawning onto `handle`'s runtime.
    pub fn new(handle: Handle, actuators: Actuators, options: DispatcherOptions) -> Dispatcher {
        let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
        Dispatcher {
            inner: Arc::new(Inner {
                handle,
                actuators,
                options,
                permits,
                pending: watch::Sender::new(0),
                counters: Counters::default(),
                lanes: Arc::default(),
            }),
        }
    }

    /// The options it runs with.
    pub fn options(&self) -> &DispatcherOptions {
        &self.inner.options
    }

    /// Its clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.options.clock
    }

    /// Actions queued or running.
    pub fn in_flight(&self) -> usize {
        *self.inner.pending.borrow()
    }

    /// The counters so far.
    pub fn stats(&self) -> DispatchStats {
        let c = &self.inner.counters;
        DispatchStats {
            dispatched: c.dispatched.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            attempts: c.attempts.load(Ordering::Relaxed),
            unrecorded: c.unrecorded.load(Ordering::Relaxed),
        }
    }

    /// Final results per action, indexed by [`ActionId`] (actions with no
    /// result yet past the end of the list, or zero).
    pub fn results_by_action(&self) -> Vec<ActionResults> {
        self.inner
            .counters
            .by_action
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `dispatch` in the background and applies its result to `registry`.
    ///
    /// Never blocks on the action; with the queue full, records the action as
    /// failed right away (one registry apply) instead.
    pub fn spawn(&self, registry: &Arc<Registry>, dispatch: Dispatch) {
        Inner::spawn(&self.inner, registry, dispatch);
    }

    /// [`Dispatcher::spawn`] for each of `dispatches`, in order, once
    /// `ticket` (the receipt that decided them, if any) is durable; counted
    /// as pending meanwhile.
    pub fn spawn_when_durable(
        &self,
        registry: &Arc<Registry>,
        dispatches: Vec<Dispatch>,
        ticket: Option<Ticket>,
    ) {
        Inner::spawn_when_durable(&self.inner, registry, dispatches, ticket);
    }

    /// [`Dispatcher::spawn`] for each of `dispatches`, in order.
    pub fn spawn_all(&self, registry: &Arc<Registry>, dispatches: Vec<Dispatch>) {
        for dispatch in dispatches {
            self.spawn(registry, dispatch);
        }
    }

    /// Waits until no action is queued or running, at most `timeout`;
    /// once it returns `Ok`, no task of this dispatcher holds a registry.
    pub async fn drain(&self, timeout: Duration) -> Result<(), ActuatorError> {
        let mut pending = self.inner.pending.subscribe();
        match tokio::time::timeout(timeout, pending.wait_for(|n| *n == 0)).await {
            // The sender lives in `self`, so `wait_for` cannot see it closed.
            Ok(_) => Ok(()),
            Err(_) => Err(ActuatorError::DrainTimeout {
                pending: self.in_flight(),
            }),
        }
    }

    /// Fires due FSM timers every `timer_period` (`registry.tick` at the
    /// clock's now) and spawns the dispatches they return, until `shutdown`
    /// completes.
    pub async fn run_timers(&self, registry: Arc<Registry>, shutdown: impl Future<Output = ()>) {
        let mut interval = tokio::time::interval(self.inner.options.timer_period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = interval.tick() => self.tick(&registry),
            }
        }
    }

    /// One timer pass: `registry.tick(now)` and spawn what it dispatches.
    pub fn tick(&self, registry: &Arc<Registry>) {
        match registry.tick(self.inner.options.clock.now()) {
            Ok(fired) => {
                for applied in fired {
                    self.spawn_when_durable(registry, applied.dispatches, applied.ticket);
                }
            }
            // A full disk: the timers fire once it has space again.
            Err(crate::registry::RegistryError::Ledger(crate::ledger::LedgerError::Full {
                ..
            })) => {}
            Err(error) => ::tracing::error!(
                error = &error as &dyn std::error::Error,
                "firing governor timers failed"
            ),
        }
    }
}

impl Inner {
    /// Spawns `dispatches` once `ticket` (the last receipt that decided
    /// them) is durable: an action must never run for a decision a crash
    /// could still lose (its key would be reused by another one). Counted as
    /// pending meanwhile, so `drain` waits for it; nothing the caller drops
    /// cancels it.
    fn spawn_when_durable(
        this: &Arc<Inner>,
        registry: &Arc<Registry>,
        dispatches: Vec<Dispatch>,
        ticket: Option<Ticket>,
    ) {
        if dispatches.is_empty() && registry.ledger().shared().is_none() {
            return;
        }
        let Some(ticket) = ticket else {
            for dispatch in dispatches {
                Inner::spawn(this, registry, dispatch);
            }
            return;
        };
        this.pending.send_modify(|n| *n += 1);
        let guard = PendingGuard(Arc::clone(this));
        let registry = Arc::clone(registry);
        this.handle.spawn(async move {
            let inner = Arc::clone(&guard.0);
            let kept = ticket.clone();
            match ticket.durable().await {
                Ok(()) => {
                    // A shared ledger may have committed another decision
                    // in this one's place: its dispatches run instead.
                    let dispatches = Registry::retaken(&kept).map_or(dispatches, |a| a.dispatches);
                    for dispatch in dispatches {
                        Inner::spawn(&inner, &registry, dispatch);
                    }
                }
                // A timer another replica fired first (or overtook): its
                // decision stands, this one was never written.
                Err(LedgerError::Rejected(why)) => ::tracing::debug!(
                    %why,
                    "decision not committed: actions not run"
                ),
                Err(error) => ::tracing::error!(
                    error = &error as &dyn std::error::Error,
                    "the ledger failed before the deciding receipt was durable: actions not run"
                ),
            }
            // The registry goes before the pending count does: once
            // `drain` returns, no dispatch task holds it.
            drop(registry);
            drop(guard);
        });
    }

    fn spawn(this: &Arc<Inner>, registry: &Arc<Registry>, dispatch: Dispatch) {
        this.counters.dispatched.fetch_add(1, Ordering::Relaxed);
        let mut admitted = false;
        this.pending.send_modify(|n| {
            if *n < this.options.max_queued {
                *n += 1;
                admitted = true;
            }
        });
        if !admitted {
            this.counters.rejected.fetch_add(1, Ordering::Relaxed);
            ::tracing::warn!(
                tenant = %dispatch.key.tenant,
                key = %dispatch.key,
                "actuator queue full: action failed without running"
            );
            let report = Report {
                ok: false,
                attempts: 0,
                detail: "actuator queue full: not run".to_owned(),
            };
            // A failure dispatches nothing further, so this cannot recurse.
            this.record(registry, dispatch, report, true);
            return;
        }
        let guard = PendingGuard(this.clone());
        let registry = registry.clone();
        let at = this.options.clock.now();
        // Joined here, in the order the tenant's decisions are spawned.
        let turn = this.lanes.join(registry.pack().sku(), &dispatch);
        this.handle.spawn(async move {
            let inner = &guard.0;
            let report = match turn {
                Turn::Run {
                    after,
                    mut stop,
                    place,
                } => {
                    for earlier in after {
                        lanes::ended(earlier).await;
                    }
                    let report = inner.run(&registry, &dispatch, at, &mut stop).await;
                    // Those waiting on this one may run now.
                    drop(place);
                    report
                }
                Turn::Superseded(why) => Report {
                    ok: false,
                    attempts: 0,
                    detail: format!("{why}: not run"),
                },
            };
            inner.record(&registry, dispatch, report, false);
            // The registry goes before the pending count does: once
            // `drain` returns, no dispatch task holds it.
            drop(registry);
            drop(guard);
        });
    }

    /// Runs one dispatch to its final report (no further attempt once
    /// `stop` says why).
    async fn run(
        &self,
        registry: &Arc<Registry>,
        dispatch: &Dispatch,
        at: Timestamp,
        stop: &mut watch::Receiver<lanes::StopReason>,
    ) -> Report {
        let call = match ActionCall::new(registry.pack().sku(), dispatch, at) {
            Ok(call) => call,
            Err(error) => {
                return Report {
                    ok: false,
                    attempts: 0,
                    detail: error.to_string(),
                };
            }
        };
        let adapter = match self.options.mode {
            ActuatorMode::Live => call.action.adapter,
            ActuatorMode::LogOnly => Adapter::Log,
        };
        // Log-only, no action reaches anything: nothing to order.
        let turn = match self.options.mode {
            ActuatorMode::Live => turns::Turn::of(registry, dispatch),
            ActuatorMode::LogOnly => None,
        };
        perform_until(
            self.actuators.get(adapter).as_ref(),
            &call,
            self.options.backoff,
            stop,
            turn.as_ref(),
            Some(&self.permits),
        )
        .await
    }

    /// On a shared ledger: waits until the action result `applied` decided
    /// on is committed, then spawns its follow-up dispatches; a decision
    /// another replica overtook is taken again on the tenant's latest
    /// state (the result's key names the deciding receipt, so any replica
    /// applies it the same way), at most [`DECISION_ATTEMPTS`] times.
    fn settle_result(
        this: &Arc<Inner>,
        registry: &Arc<Registry>,
        tenant: TenantId,
        input: Input,
        mut applied: Applied,
    ) {
        this.pending.send_modify(|n| *n += 1);
        let guard = PendingGuard(Arc::clone(this));
        let registry = Arc::clone(registry);
        this.handle.spawn(async move {
            let inner = Arc::clone(&guard.0);
            let mut attempts = 1;
            loop {
                let ticket = applied.ticket.take();
                let kept = ticket.clone();
                let durable = match ticket {
                    Some(ticket) => ticket.durable().await,
                    None => Ok(()),
                };
                let error = match durable {
                    Ok(()) => {
                        if let Some(retaken) = kept.as_ref().and_then(Registry::retaken) {
                            applied = retaken;
                        }
                        for dispatch in std::mem::take(&mut applied.dispatches) {
                            Inner::spawn(&inner, &registry, dispatch);
                        }
                        break;
                    }
                    Err(LedgerError::Rejected(why)) if attempts < DECISION_ATTEMPTS => {
                        attempts += 1;
                        let now = inner.options.clock.now();
                        let again = crate::pg::shared::patiently_again(|| {
                            registry.apply_again(&tenant, input.clone(), now, why, applied.epoch)
                        });
                        match again {
                            Ok(again) => {
                                applied = again;
                                continue;
                            }
                            Err(error) => Box::new(error) as Box<dyn std::error::Error + Send>,
                        }
                    }
                    Err(error) => Box::new(error),
                };
                inner.counters.unrecorded.fetch_add(1, Ordering::Relaxed);
                // The cache may hold the refused decision: drop it.
                registry.forget(&tenant, applied.epoch);
                ::tracing::error!(
                    tenant = %tenant,
                    error = &*error as &dyn std::error::Error,
                    "recording an action result failed"
                );
                break;
            }
            // The registry goes before the pending count does: once
            // `drain` returns, no dispatch task holds it.
            drop(registry);
            drop(guard);
        });
    }

    /// Counts one final result of `action` (`rejected`: never run, the
    /// queue was full).
    fn count(&self, action: ActionId, ok: bool, rejected: bool) {
        let c = &self.counters;
        if ok { &c.succeeded } else { &c.failed }.fetch_add(1, Ordering::Relaxed);
        let mut by_action = c.by_action.lock().unwrap_or_else(PoisonError::into_inner);
        let index = usize::from(action.0);
        if by_action.len() <= index {
            by_action.resize(index + 1, ActionResults::default());
        }
        let results = &mut by_action[index];
        match (ok, rejected) {
            (true, _) => results.ok += 1,
            (false, true) => results.rejected += 1,
            (false, false) => results.failed += 1,
        }
    }

    /// Applies `report` to the registry and spawns the follow-up dispatches
    /// (`rejected`: the action never ran, the queue was full).
    fn record(
        self: &Arc<Inner>,
        registry: &Arc<Registry>,
        dispatch: Dispatch,
        report: Report,
        rejected: bool,
    ) {
        let c = &self.counters;
        c.attempts
            .fetch_add(u64::from(report.attempts), Ordering::Relaxed);
        self.count(dispatch.key.action, report.ok, rejected);
        let action = registry.pack().sku().action(dispatch.key.action).name;
        // A failure is what an operator acts on: a warning, not info.
        if report.ok {
            ::tracing::info!(
                tenant = %dispatch.key.tenant,
                action,
                key = %dispatch.key,
                ok = true,
                attempts = report.attempts,
                detail = %report.detail,
                "action finished"
            );
        } else {
            ::tracing::warn!(
                tenant = %dispatch.key.tenant,
                action,
                key = %dispatch.key,
                ok = false,
                attempts = report.attempts,
                detail = %report.detail,
                "action failed"
            );
        }
        let tenant = dispatch.key.tenant.clone();
        let input = Input::ActionResult {
            key: dispatch.key,
            ok: report.ok,
            detail: Some(report.detail),
        };
        // No one sends an action's result again: it waits for a slow
        // database, and for one that cannot be reached for a while.
        let applied = crate::pg::shared::patiently_again(|| {
            registry.apply(&tenant, input.clone(), self.options.clock.now())
        });
        match applied {
            Ok(applied) if applied.ticket.is_some() && registry.ledger().shared().is_some() => {
                Inner::settle_result(self, registry, tenant, input, applied);
            }
            Ok(applied) => {
                Inner::spawn_when_durable(self, registry, applied.dispatches, applied.ticket);
            }
            Err(error) => {
                c.unrecorded.fetch_add(1, Ordering::Relaxed);
                ::tracing::error!(
                    tenant = %tenant,
                    error = &error as &dyn std::error::Error,
                    "recording an action result failed"
                );
            }
        }
    }
}

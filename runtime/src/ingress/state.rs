//! The state every handler shares: the registry, auth, metrics, the
//! in-flight limit, health flags, and where decided actions go.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::Auth;
use super::disk::{Disk, DiskStatus, MinFree};
use super::error::IngressError;
use super::metrics::Metrics;
use super::observe::RefusalLog;
use crate::actuator::Dispatcher;
use crate::clock::Timestamp;
use crate::ledger::{LedgerError, Rejection, Ticket};
use crate::marketplace::Marketplace;
use crate::receipt::Input;
use crate::registry::{Applied, DECISION_ATTEMPTS, Registry, RegistryError};
use crate::tenant::TenantId;

/// How long a database ledger's size is reused (`governor_ledger_bytes`).
const STORED_SAMPLE_FOR: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest a scrape waits for a new size; past it, it answers with the
/// last one while the reading goes on (a stalled database must not stall
/// `/metrics`).
const STORED_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The last size of a database ledger's tables, and who waits for the
/// next.
#[derive(Debug, Default)]
struct StoredSize {
    sample: Mutex<StoredSample>,
    /// Told when a reading ends.
    read: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct StoredSample {
    /// When it was read (`None`: never).
    at: Option<std::time::Instant>,
    bytes: Option<u64>,
    /// A reading is under way.
    reading: bool,
}

impl StoredSize {
    fn sample(&self) -> std::sync::MutexGuard<'_, StoredSample> {
        self.sample
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A reading of the tables' size under way: ends it when dropped.
struct Reading(Arc<StoredSize>);

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.sample().reading = false;
        self.0.read.notify_waiters();
    }
}
/// How waiting for a decision's receipts ended, when not durable.
#[derive(Debug)]
pub(crate) enum Settled {
    /// A shared ledger refused the decision: nothing of it was written.
    Rejected(Rejection),
    /// The ledger failed (or the wait did).
    Failed(IngressError),
}

/// Marketplace events handled at once (their own slots, see [`AppState`]).
pub const SIGNED_IN_FLIGHT: usize = 16;
/// Tenant reads with a read token that only the database can check (on a
/// replica) handled at once: their own slots, so forged tokens can take
/// neither the slots of signals nor more than this many database reads.
pub const UNVERIFIED_READS_IN_FLIGHT: usize = 8;

/// Which in-flight slots a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slots {
    /// The `--max-in-flight` slots: every authenticated request.
    General,
    /// [`SIGNED_IN_FLIGHT`]: marketplace events, whose signature needs
    /// the body.
    Signed,
    /// [`UNVERIFIED_READS_IN_FLIGHT`]: a read token on a replica, checked
    /// by the route against the tenant's state in the database.
    UnverifiedRead,
}
/// The largest marketplace event body: an entitlement event is a few dozen
/// bytes, so a forger cannot make the service read more than this.
pub const MARKETPLACE_MAX_BODY: usize = 16 * 1024;

/// Longest a request may hold an in-flight slot unless
/// [`Options::request_timeout`] says otherwise (`serve` keeps it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Tunables of the ingress.
#[derive(Clone)]
pub struct Options {
    /// Requests handled at once; more are refused with 503 at once (default 1024).
    pub max_in_flight: usize,
    /// Items accepted in one `POST /v1/signals` batch (default 1000).
    pub max_batch: usize,
    /// Longest a request may hold an in-flight slot, body upload included (default 30 s).
    pub request_timeout: Duration,
    /// Connections served at once; past it, [`serve`](super::serve) stops
    /// accepting until one closes (default 4096).
    pub max_connections: usize,
    /// Longest a connection may take to send a request's headers, and so
    /// also to stay idle between requests (default 10 s).
    pub header_read_timeout: Duration,
    /// Longest [`serve`](super::serve) waits for open requests once
    /// shutdown begins; then the remaining connections are dropped (default 30 s).
    pub shutdown_timeout: Duration,
    /// Runs decided actions once their deciding receipt is durable (`None`:
    /// they stay in flight until their timeout, and a warning is logged).
    pub actuator: Option<Dispatcher>,
    /// Free space on the ledger's disk under which `/readyz` fails (default
    /// 5% of the file system, at most 1 GiB).
    pub min_free: MinFree,
    /// Authentication refusals are logged at most once per route and reason
    /// per this interval, with the count suppressed meanwhile (default 10 s).
    pub auth_log_interval: Duration,
    /// `/pubsub/push` refuses every push with 403 (`--no-pubsub`).
    pub no_pubsub: bool,
    /// The Procurement API `/marketplace/pubsub` reads and calls (`None`:
    /// notifications are answered 503).
    pub marketplace: Option<Marketplace>,
    /// Signs and publishes checkpoints of the ledger's tree; inclusion
    /// proofs are made against its latest (`None`: no proofs).
    pub transparency: Option<Arc<crate::transparency::publish::Publisher>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_in_flight: 1024,
            max_batch: 1000,
            request_timeout: REQUEST_TIMEOUT,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            actuator: None,
            min_free: MinFree::default(),
            auth_log_interval: Duration::from_secs(10),
            no_pubsub: false,
            marketplace: None,
            transparency: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("max_in_flight", &self.max_in_flight)
            .field("max_batch", &self.max_batch)
            .field("request_timeout", &self.request_timeout)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("actuator", &self.actuator.is_some())
            .field("min_free", &self.min_free)
            .field("auth_log_interval", &self.auth_log_interval)
            .field("no_pubsub", &self.no_pubsub)
            .field("marketplace", &self.marketplace.is_some())
            .finish()
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] shares.
pub struct Inner {
    pub(crate) registry: Arc<Registry>,
    pub(crate) auth: Auth,
    pub(crate) metrics: Metrics,
    pub(crate) max_batch: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    /// `--no-pubsub`: every push is refused.
    pub(crate) no_pubsub: bool,
    refusals: RefusalLog,
    max_in_flight: usize,
    limiter: Arc<Semaphore>,
    /// Slots of marketplace events: their signature needs the body, so a
    /// forger holds a slot until the body is read; these slots are apart
    /// from the ones signals use.
    signed_limiter: Arc<Semaphore>,
    /// Slots of reads whose token only the database can check.
    unverified_limiter: Arc<Semaphore>,
    /// Held while `GET /v1/ledger/verify` runs: one at a time.
    verifying: Arc<Semaphore>,
    /// Why the ledger stopped, once it has.
    failed: Mutex<Option<String>>,
    failed_flag: AtomicBool,
    draining: AtomicBool,
    actuator: Option<Dispatcher>,
    marketplace: Option<Marketplace>,
    pub(crate) transparency: Option<Arc<crate::transparency::publish::Publisher>>,
    disk: Disk,
    /// The last size of a database ledger's tables, and when it was read.
    stored: Arc<StoredSize>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("registry", &self.registry)
            .field("auth", &self.auth)
            .field("max_in_flight", &self.max_in_flight)
            .field("actuator", &self.actuator.is_some())
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Whether `error` (or one of its causes) is a ledger's full disk.
fn is_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(ledger) = error.downcast_ref::<LedgerError>() {
            return matches!(ledger, LedgerError::Full { .. });
        }
        if let Some(RegistryError::Ledger(ledger)) = error.downcast_ref::<RegistryError>() {
            return matches!(ledger, LedgerError::Full { .. });
        }
        cause = error.source();
    }
    false
}

impl AppState {
    /// The state of a service over `registry` (already recovered).
    pub fn new(registry: Arc<Registry>, auth: Auth, options: Options) -> AppState {
        let max_in_flight = options.max_in_flight.max(1);
        AppState(Arc::new(Inner {
            metrics: Metrics::new(registry.pack().sku()),
            registry,
            auth,
            max_batch: options.max_batch.max(1),
            request_timeout: options.request_timeout,
            max_connections: options.max_connections.max(1),
            header_read_timeout: options.header_read_timeout,
            shutdown_timeout: options.shutdown_timeout,
            no_pubsub: options.no_pubsub,
            refusals: RefusalLog::new(options.auth_log_interval),
            max_in_flight,
            limiter: Arc::new(Semaphore::new(max_in_flight)),
            signed_limiter: Arc::new(Semaphore::new(SIGNED_IN_FLIGHT)),
            unverified_limiter: Arc::new(Semaphore::new(UNVERIFIED_READS_IN_FLIGHT)),
            verifying: Arc::new(Semaphore::new(1)),
            failed: Mutex::new(None),
            failed_flag: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            actuator: options.actuator,
            marketplace: options.marketplace,
            transparency: options.transparency,
            disk: Disk::new(options.min_free),
            stored: Arc::default(),
        }))
    }

    /// The largest marketplace event body: [`MARKETPLACE_MAX_BODY`], or the
    /// SKU's own limit if that is smaller (the route's body limit and its 413
    /// message both use this).
    pub(crate) fn marketplace_max_body(&self) -> usize {
        MARKETPLACE_MAX_BODY.min(self.registry.pack().sku().ingress.max_body_bytes)
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.0.registry
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Where authentication refusals are logged.
    pub(crate) fn refusals(&self) -> &RefusalLog {
        &self.0.refusals
    }

    /// The Procurement API client of `/marketplace/pubsub`, if configured.
    pub fn marketplace(&self) -> Option<&Marketplace> {
        self.0.marketplace.as_ref()
    }

    /// The actuator's dispatcher, if one is attached.
    pub fn actuator(&self) -> Option<&Dispatcher> {
        self.0.actuator.as_ref()
    }

    /// Marks the service as draining: `/readyz` fails and new ingest is refused.
    pub fn begin_shutdown(&self) {
        self.0.draining.store(true, Ordering::Release);
    }

    /// Why the ledger stopped, once it has (`None` while it works).
    pub fn ledger_failure(&self) -> Option<String> {
        if !self.0.failed_flag.load(Ordering::Acquire) {
            return None;
        }
        let why = self.0.failed.lock().unwrap_or_else(PoisonError::into_inner);
        Some(format!(
            "ledger failed: {}",
            why.as_deref().unwrap_or("unknown")
        ))
    }

    /// Why the service is not ready to serve, or `None` when it is: the
    /// ledger failed, or shutdown began. Momentary shedding is not a reason:
    /// a full in-flight limit answers 503 per request, and failing readiness
    /// for it would let anyone who fills the slots pull the replica out of
    /// its load balancer.
    pub fn not_ready(&self) -> Option<String> {
        if let Some(why) = self.ledger_failure() {
            return Some(why);
        }
        if self.0.draining.load(Ordering::Acquire) {
            return Some("shutting down".to_owned());
        }
        // Live, not from the (up to a second old) disk sample.
        if let Err(full) = self.0.registry.ledger().check_writable() {
            return Some(crate::report::error_chain(&full));
        }
        self.disk_status().and_then(|status| status.not_ready())
    }

    /// The bytes a database ledger's tables hold, read at most every
    /// `STORED_SAMPLE_FOR` (off the async threads, one reading at a time);
    /// `None` for a file ledger or when the database cannot say (logged).
    /// A reading that takes longer than `STORED_WAIT` is not waited for:
    /// the last size is answered meanwhile.
    pub async fn stored_bytes(&self) -> Option<u64> {
        let read = self.0.stored.read.notified();
        {
            let mut sample = self.0.stored.sample();
            if sample.at.is_some_and(|at| at.elapsed() < STORED_SAMPLE_FOR) {
                return sample.bytes;
            }
            if !sample.reading {
                sample.reading = true;
                let ledger = Arc::clone(self.0.registry.ledger());
                // Ends the reading however it ends (dropped unrun at
                // shutdown, or panicking), so the next scrape starts one.
                let reading = Reading(Arc::clone(&self.0.stored));
                tokio::task::spawn_blocking(move || {
                    let bytes = match ledger.stored_bytes() {
                        Some(Ok(bytes)) => Some(bytes),
                        Some(Err(error)) => {
                            tracing::warn!(error = %crate::report::error_chain(&error), "sizing the ledger's tables failed");
                            // The last size is shown until one is read.
                            return;
                        }
                        None => None,
                    };
                    let mut sample = reading.0.sample();
                    sample.at = Some(std::time::Instant::now());
                    sample.bytes = bytes;
                });
            }
        }
        let _ = tokio::time::timeout(STORED_WAIT, read).await;
        self.0.stored.sample().bytes
    }

    /// The ledger's disk (for a ledger on a local file system), sampled at
    /// most once a second; a change of readiness is logged.
    pub fn disk_status(&self) -> Option<DiskStatus> {
        self.0.disk.status(self.0.registry.ledger().as_ref())
    }

    /// Takes an in-flight slot of the kind `slots` names, or refuses (503)
    /// when all of that kind are taken.
    pub(crate) fn admit_request(&self, slots: Slots) -> Result<OwnedSemaphorePermit, IngressError> {
        let (limiter, limit) = match slots {
            Slots::General => (&self.0.limiter, self.0.max_in_flight),
            Slots::Signed => (&self.0.signed_limiter, SIGNED_IN_FLIGHT),
            Slots::UnverifiedRead => (&self.0.unverified_limiter, UNVERIFIED_READS_IN_FLIGHT),
        };
        Arc::clone(limiter).try_acquire_owned().map_err(|_| {
            self.0.metrics.shed();
            IngressError::Overloaded { limit }
        })
    }

    /// The one ledger verification slot, or an error if one runs already.
    pub(crate) fn verifying(&self) -> Result<OwnedSemaphorePermit, tokio::sync::TryAcquireError> {
        Arc::clone(&self.0.verifying).try_acquire_owned()
    }

    /// Refuses ingest once the ledger failed or shutdown began.
    pub(crate) fn check_writable(&self) -> Result<(), IngressError> {
        if self.0.failed_flag.load(Ordering::Acquire) {
            return Err(IngressError::Unavailable {
                detail: self
                    .0
                    .failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .unwrap_or_default(),
            });
        }
        if self.0.draining.load(Ordering::Acquire) {
            return Err(IngressError::ShuttingDown);
        }
        self.0
            .registry
            .ledger()
            .check_writable()
            .map_err(|e| self.ledger_failed(&e))
    }

    /// Records that the ledger failed (readyz fails from now on).
    /// A full disk is not a failure: it is answered `ledger_full` and
    /// passes once space is freed.
    pub(crate) fn ledger_failed(&self, error: &(dyn std::error::Error + 'static)) -> IngressError {
        if is_full(error) {
            return IngressError::ledger_full(error);
        }
        let failure = IngressError::unavailable(error);
        if let IngressError::Unavailable { detail } = &failure {
            let mut slot = self.0.failed.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                tracing::error!(error = %detail, "ledger failed: refusing further ingest");
                *slot = Some(detail.clone());
            }
            self.0.failed_flag.store(true, Ordering::Release);
        }
        failure
    }

    /// Maps a registry error: the tenant limit and a full dedupe window are
    /// the caller's problem, one tenant's inconsistency that tenant's
    /// (nothing was written; the rest of the service keeps serving),
    /// anything else the ledger's.
    pub(crate) fn registry_error(&self, error: RegistryError) -> IngressError {
        match error {
            RegistryError::TooManyTenants { max, tenant } => IngressError::TenantLimit {
                max,
                tenant: tenant.to_string(),
            },
            error @ (RegistryError::DedupeFull { retry_after, .. }
            | RegistryError::DedupeTotalFull { retry_after, .. }) => IngressError::DedupeFull {
                detail: error.to_string(),
                retry_after: retry_after.as_secs().max(1),
            },
            // One tenant's problem (on a shared ledger also: its stored
            // state or receipts cannot be loaded, or another spec wrote
            // them): that tenant is refused, the service keeps serving.
            error @ (RegistryError::ChainMismatch { .. }
            | RegistryError::Quarantined { .. }
            | RegistryError::Checkpoint(_)
            | RegistryError::CheckpointSku { .. }
            | RegistryError::Receipt { .. }
            | RegistryError::Gap { .. }) => {
                let detail = crate::report::error_chain(&error);
                tracing::error!(error = %detail, "tenant refused: its state disagrees with its ledger chain");
                IngressError::TenantInconsistent { detail }
            }
            // A shared ledger that could not load a tenant (a read that
            // failed) has not stopped: this request fails, the next may not.
            error @ RegistryError::Ledger(LedgerError::Database { .. }) => {
                IngressError::unavailable(&error)
            }
            error @ RegistryError::Ledger(LedgerError::Rejected(_)) => IngressError::Contended {
                detail: crate::report::error_chain(&error),
            },
            other => self.ledger_failed(&other),
        }
    }

    /// Applies `input` for `tenant` at the server's clock, dispatches what
    /// it decided once durable, and waits until its receipts are durable.
    /// On a shared ledger, a decision another replica overtook (nothing of
    /// it written) is taken again on the tenant's latest state, up to
    /// [`DECISION_ATTEMPTS`] times; then the request is answered `contended`.
    pub(crate) async fn decide(
        &self,
        tenant: &TenantId,
        input: Input,
        started: Instant,
    ) -> Result<Applied, IngressError> {
        let applied = self
            .0
            .registry
            .apply(tenant, input.clone(), Timestamp::now())
            .map_err(|e| self.registry_error(e))?;
        self.settle_input(tenant, input, applied, started).await
    }

    /// The settling of an `applied` decision on `input`, taking it
    /// again while a shared ledger refuses it (see [`AppState::decide`]).
    pub(crate) async fn settle_input(
        &self,
        tenant: &TenantId,
        input: Input,
        mut applied: Applied,
        started: Instant,
    ) -> Result<Applied, IngressError> {
        let mut attempts = 1;
        loop {
            let epoch = applied.epoch;
            match self.settle(applied, started).await {
                Err(Settled::Rejected(why)) if attempts < DECISION_ATTEMPTS => {
                    attempts += 1;
                    applied = self
                        .0
                        .registry
                        .apply_again(tenant, input.clone(), Timestamp::now(), why, epoch)
                        .map_err(|e| self.registry_error(e))?;
                }
                Err(Settled::Rejected(why)) => {
                    // The cache holds the refused decision: drop it.
                    self.0.registry.forget(tenant, epoch);
                    return Err(IngressError::Contended {
                        detail: format!(
                            "tenant `{tenant}`: {why} ({attempts} attempts); nothing was written: retry"
                        ),
                    });
                }
                Err(Settled::Failed(error)) => return Err(error),
                // A duplicate found in this replica's window: its original
                // may have been refused and never taken again (its request
                // gone). Acknowledge only one the ledger holds.
                Ok(duplicate) if duplicate.duplicate && attempts < DECISION_ATTEMPTS => {
                    let registry = &self.0.registry;
                    let recorded = registry
                        .duplicate_recorded(tenant, &input, Timestamp::now())
                        .map_err(|e| self.registry_error(e))?;
                    if recorded {
                        return Ok(duplicate);
                    }
                    attempts += 1;
                    registry.forget(tenant, epoch);
                    applied = registry
                        .apply(tenant, input.clone(), Timestamp::now())
                        .map_err(|e| self.registry_error(e))?;
                }
                Ok(applied) => return Ok(applied),
            }
        }
    }

    /// Waits until `ticket`'s receipt is durable (recording the latency).
    pub(crate) async fn durable(
        &self,
        ticket: Option<Ticket>,
        started: Instant,
    ) -> Result<(), Settled> {
        match ticket {
            Some(ticket) => {
                ticket.durable().await.map_err(|e: LedgerError| match e {
                    LedgerError::Rejected(why) => Settled::Rejected(why),
                    e => Settled::Failed(self.ledger_failed(&e)),
                })?;
                self.0.metrics.durable(started.elapsed());
                Ok(())
            }
            // A duplicate appends nothing, but the original may still be on
            // its way to disk: acknowledge only once everything is durable.
            // Awaited, not waited for on a thread: duplicates arriving
            // while the writer is held up (a locked table) must not use up
            // the blocking threads the rest of the service needs.
            None => self
                .0
                .registry
                .ledger()
                .flushed()
                .durable()
                .await
                .map_err(|e| Settled::Failed(self.ledger_failed(&e))),
        }
    }

    /// Hands `applied`'s dispatches to the actuator, which runs them once
    /// their deciding receipt is durable (in its own task: a client that
    /// hangs up, or a request that times out, after the decision was
    /// appended cannot leave a receipted dispatch that never runs, and
    /// shutdown's drain waits for it), then waits until the receipts are
    /// durable to acknowledge.
    async fn settle(&self, mut applied: Applied, started: Instant) -> Result<Applied, Settled> {
        let ticket = applied.ticket.take();
        let dispatches = std::mem::take(&mut applied.dispatches);
        // On a shared ledger the writer may commit another decision in
        // this one's place, with dispatches of its own: the actuator waits
        // for the ticket whatever this one decided.
        let retakable = ticket.is_some() && self.0.registry.ledger().shared().is_some();
        match (&self.0.actuator, dispatches.first()) {
            (Some(actuator), Some(_)) => {
                actuator.spawn_when_durable(&self.0.registry, dispatches.clone(), ticket.clone());
            }
            (Some(actuator), None) if retakable => {
                actuator.spawn_when_durable(&self.0.registry, Vec::new(), ticket.clone());
            }
            (None, Some(first)) => tracing::warn!(
                tenant = %first.key.tenant,
                key = %first.key,
                actions = dispatches.len(),
                "no actuator attached: actions stay in flight until their timeout"
            ),
            _ => {}
        }
        let kept = ticket.clone();
        self.durable(ticket, started).await?;
        applied.dispatches = dispatches;
        // The ledger took the decision again on the latest state (another
        // replica had moved the tenant on): report that one.
        if let Some(retaken) = kept.as_ref().and_then(Registry::retaken) {
            applied = retaken;
        }
        for dispatch in &applied.dispatches {
            self.0.metrics.dispatched(dispatch.key.action);
        }
        Ok(applied)
    }
}

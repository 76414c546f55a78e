//! The policy lab: a spec's interpreted pack ([`crate::pack`]) driven by
//! written or recorded inputs, with no crate compiled. `ggen test` runs the
//! scenario files beside the specs ([`scenario`]).
//!
//! [`Sim`] is the clock the lab runs on: inputs in time order, each timer
//! (intervention timeout, degraded retry) fired at the moment it falls due
//! in between, and dispatched actions settled as the run says ([`Settle`]).
//! Everything goes through the runtime's own [`Registry`], so a decision in
//! the lab is the decision the service takes.

pub mod backtest;
pub mod recorded;
pub mod scenario;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use ggen_runtime_core::clock::Timestamp;
use ggen_runtime_core::ledger::Ledger;
use ggen_runtime_core::ledger::{
    Appended, Entry, GENESIS, Head, LedgerError, Mark, Record, Recovered, Ticket, VerifyOptions,
    VerifyReport,
};
use ggen_runtime_core::receipt::Input;
use ggen_runtime_core::registry::{Applied, DedupeOptions, Dispatch, Registry, RegistryError};
use ggen_runtime_core::sku::{ActionId, PolicyPack};
use ggen_runtime_core::tenant::TenantId;
use serde::{Deserialize, Serialize};

/// How dispatched actions end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settle {
    /// Every action succeeds the moment it is dispatched (as `replay`'s
    /// `log` adapter).
    #[default]
    Succeed,
    /// Every action fails the moment it is dispatched.
    Fail,
    /// Actions wait for a result input, or for the intervention timeout.
    Manual,
}

/// Where a [`Sim`] hands each step it takes, as it takes it (so a long
/// run of timers costs no memory).
pub type Sink<'a> = dyn FnMut(Stepped) + 'a;

/// Why a [`Sim`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The registry failed or refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// More timers fell due before `to` than the simulation allows
    /// ([`Sim::limit_timers`]).
    #[error(
        "more than {limit} timers fall due before {to} (a tenant retrying every few minutes for months?): move the clock in smaller steps"
    )]
    Timers {
        /// The limit.
        limit: usize,
        /// Where the clock was going.
        to: Timestamp,
    },
}

/// One step the registry took, and when.
#[derive(Debug)]
pub struct Stepped {
    /// The time it was decided at.
    pub at: Timestamp,
    /// What it did.
    pub applied: Applied,
}

/// A registry on a clock that moves only forward, with its timers.
pub struct Sim {
    registry: Registry,
    settle: Settle,
    /// Tenants with a timer, by when it falls due.
    schedule: BTreeSet<(Timestamp, TenantId)>,
    /// Each scheduled tenant's entry in `schedule`.
    due: HashMap<TenantId, Timestamp>,
    /// Dispatches waiting for a result ([`Settle::Manual`]), oldest first.
    waiting: HashMap<TenantId, VecDeque<Dispatch>>,
    /// Most timers one move of the clock may fire.
    max_timers: usize,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("settle", &self.settle)
            .field("timers", &self.schedule.len())
            .finish_non_exhaustive()
    }
}

/// Whether a registry error refuses one input, as the service refuses it
/// (429 and the like: a tenant past `max_tenants`, a full dedupe window,
/// the service-wide dedupe limit, a quarantined tenant), rather than a
/// fault of the simulation: the backtest and scenarios count it against
/// the input and go on, as `replay` does.
pub fn refuses_input(error: &RegistryError) -> bool {
    matches!(
        error,
        RegistryError::TooManyTenants { .. }
            | RegistryError::DedupeFull { .. }
            | RegistryError::DedupeTotalFull { .. }
            | RegistryError::Quarantined { .. }
    )
}

impl Sim {
    /// A simulation of `pack` writing to `ledger`.
    pub fn new(pack: &'static dyn PolicyPack, ledger: Arc<dyn Ledger>, settle: Settle) -> Sim {
        Sim::with_dedupe(pack, ledger, settle, DedupeOptions::default())
    }

    /// [`Sim::new`] remembering event ids as `dedupe` says (the service's
    /// `--dedupe-window`, `--dedupe-capacity` and `--dedupe-max-ids`).
    pub fn with_dedupe(
        pack: &'static dyn PolicyPack,
        ledger: Arc<dyn Ledger>,
        settle: Settle,
        dedupe: DedupeOptions,
    ) -> Sim {
        Sim {
            registry: Registry::with_dedupe(pack, ledger, dedupe),
            settle,
            schedule: BTreeSet::new(),
            due: HashMap::new(),
            waiting: HashMap::new(),
            max_timers: usize::MAX,
        }
    }

    /// Refuses ([`SimError::Timers`]) a move of the clock that would fire
    /// more than `limit` timers.
    pub fn limit_timers(&mut self, limit: usize) {
        self.max_timers = limit;
    }

    /// The registry: tenants' views, the pack, the ledger.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Fires every timer due at or before `to`, each at its own due time,
    /// earliest first; each step is handed to `out`.
    pub fn advance(&mut self, to: Timestamp, out: &mut Sink<'_>) -> Result<(), SimError> {
        let mut fired = 0usize;
        while let Some((due, tenant)) = self.schedule.first().cloned()
            && due <= to
        {
            fired += 1;
            if fired > self.max_timers {
                return Err(SimError::Timers {
                    limit: self.max_timers,
                    to,
                });
            }
            self.schedule.pop_first();
            self.due.remove(&tenant);
            if let Some(applied) = self.registry.tick_tenant(&tenant, due)? {
                self.settle(applied, due, out)?;
            }
            self.reschedule(&tenant);
        }
        Ok(())
    }

    /// Applies `input` for `tenant` at `at`, after the timers due by then.
    /// Each step is handed to `out`, the input's own step first among
    /// its consequences; returns why an entitlement event was refused.
    pub fn apply(
        &mut self,
        tenant: &TenantId,
        input: Input,
        at: Timestamp,
        out: &mut Sink<'_>,
    ) -> Result<Option<String>, SimError> {
        self.advance(at, out)?;
        let applied = self.registry.apply(tenant, input, at)?;
        let refused = applied.refused.as_ref().map(ToString::to_string);
        self.settle(applied, at, out)?;
        self.reschedule(tenant);
        Ok(refused)
    }

    /// Applies the result of `tenant`'s dispatch of `action` that is in
    /// flight, or else of the oldest one still waiting for a result (a late
    /// result, receipted as stale) ([`Settle::Manual`]); `false` when none waits.
    pub fn result(
        &mut self,
        tenant: &TenantId,
        action: ActionId,
        ok: bool,
        at: Timestamp,
        out: &mut Sink<'_>,
    ) -> Result<bool, SimError> {
        self.advance(at, out)?;
        let in_flight: Vec<String> = self
            .registry
            .view(tenant)
            .map(|v| v.in_flight.into_iter().map(|f| f.idempotency_key).collect())
            .unwrap_or_default();
        let Some(queue) = self.waiting.get_mut(tenant) else {
            return Ok(false);
        };
        let of_action = |d: &Dispatch| d.key.action == action;
        let Some(dispatch) = queue
            .iter()
            .position(|d| of_action(d) && in_flight.contains(&d.key.to_string()))
            .or_else(|| queue.iter().position(of_action))
            .and_then(|i| queue.remove(i))
        else {
            return Ok(false);
        };
        let input = Input::ActionResult {
            key: dispatch.key,
            ok,
            detail: None,
        };
        let applied = self.registry.apply(tenant, input, at)?;
        self.settle(applied, at, out)?;
        self.reschedule(tenant);
        Ok(true)
    }

    /// Settles the dispatches of `applied` as the run says: at once (and
    /// whatever those results dispatch in turn), or later by a result input.
    fn settle(
        &mut self,
        applied: Applied,
        at: Timestamp,
        out: &mut Sink<'_>,
    ) -> Result<(), SimError> {
        let ok = match self.settle {
            Settle::Succeed => true,
            Settle::Fail => false,
            Settle::Manual => {
                self.waiting
                    .entry(applied.tenant.clone())
                    .or_default()
                    .extend(applied.dispatches.iter().cloned());
                out(Stepped { at, applied });
                return Ok(());
            }
        };
        let mut queue: VecDeque<Dispatch> = applied.dispatches.iter().cloned().collect();
        out(Stepped { at, applied });
        while let Some(dispatch) = queue.pop_front() {
            let tenant = dispatch.key.tenant.clone();
            let result = Input::ActionResult {
                key: dispatch.key,
                ok,
                detail: None,
            };
            let next = self.registry.apply(&tenant, result, at)?;
            queue.extend(next.dispatches.iter().cloned());
            out(Stepped { at, applied: next });
        }
        Ok(())
    }

    /// Puts `tenant`'s timer where it now falls due (or nowhere).
    fn reschedule(&mut self, tenant: &TenantId) {
        let due = self.registry.due(tenant);
        if self.due.get(tenant) == due.as_ref() {
            return;
        }
        if let Some(old) = self.due.remove(tenant) {
            self.schedule.remove(&(old, tenant.clone()));
        }
        if let Some(due) = due {
            self.due.insert(tenant.clone(), due);
            self.schedule.insert((due, tenant.clone()));
        }
    }
}

/// A ledger that keeps each tenant's head and drops the receipts: what a
/// simulation that only counts needs, with memory bounded by its tenants.
/// Nothing is hashed (every head hash is [`GENESIS`]): no receipt is kept to
/// be verified, and the chain rules (`seq` in order) still hold.
#[derive(Debug, Default)]
pub struct Discard {
    heads: std::sync::Mutex<HashMap<TenantId, u64>>,
}

impl Discard {
    fn heads(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, u64>> {
        self.heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Ledger for Discard {
    fn append(&self, entry: Entry) -> Result<Appended, LedgerError> {
        let mut heads = self.heads();
        let seq = heads.get(&entry.tenant).copied().unwrap_or(0);
        ggen_runtime_core::ledger::check_extends(&Head { seq, hash: GENESIS }, &entry)?;
        heads.insert(entry.tenant, entry.seq);
        Ok(Appended {
            hash: GENESIS,
            ticket: Ticket::ready(),
        })
    }

    fn head(&self, tenant: &TenantId) -> Head {
        Head {
            seq: self.heads().get(tenant).copied().unwrap_or(0),
            hash: GENESIS,
        }
    }

    fn read(&self, _: &TenantId, _: u64, _: usize) -> Result<Vec<Record>, LedgerError> {
        Ok(Vec::new())
    }

    fn mark(&self) -> Result<Mark, LedgerError> {
        Ok(Mark::new(0, 0))
    }

    fn checkpoint(&self, _: Mark, _: &[u8]) -> Result<(), LedgerError> {
        Ok(())
    }

    fn recover(
        &self,
        _: &mut dyn FnMut(Recovered<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        Ok(())
    }

    fn scan(
        &self,
        _: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        Ok(())
    }

    fn verify_with(&self, _: &VerifyOptions<'_>) -> Result<VerifyReport, LedgerError> {
        Ok(VerifyReport::default())
    }

    fn flushed(&self) -> ggen_runtime_core::ledger::Ticket {
        ggen_runtime_core::ledger::Ticket::ready()
    }
}

//! The registry over a [`SharedLedger`]: several replicas decide for the
//! same tenants, and the ledger, not a cache, says what is committed.
//!
//! - A tenant is loaded when first needed: its committed state (stored
//!   with its receipts) and the receipts the state is behind, replayed.
//! - A decision is taken on the cached state, which another replica may
//!   have overtaken: its receipts, the tenant's new state and its event id
//!   go to the ledger together ([`Registry::submit`]), which commits them
//!   only if the chain still ends where the decision started. A refused
//!   decision's ticket says so; the caller forgets that load of the tenant
//!   and decides again ([`Registry::apply_again`]) on the latest state.
//!   A decision on a stale state can be taken, never committed.
//! - Timers come from the ledger: [`Registry::tick_shared`] claims due
//!   tenants for a lease, reloads them and fires; a second firing of the
//!   same timer loses the conditional append, and a dead replica's claims
//!   expire.
//! - Checkpoints and start-up recovery are not used: the per-tenant states
//!   in the ledger are the snapshot, and a start loads nothing.

use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::apply::{Applied, decision_time};
use super::{Recent, RecoveryStats, Registry, RegistryError, Shard, Tenant, TenantState, seen};
use crate::clock::Timestamp;
use crate::ledger::{
    Decision, Head, LedgerError, Redecide, Redo, Rejection, Retaken, SharedLedger, Stored, Ticket,
};
use crate::receipt::Input;
use crate::tenant::TenantId;
use std::sync::Arc;

/// How long a replica's claim on a due timer keeps the others away: a
/// replica that dies with a claim delays that timer by at most this.
pub const TIMER_LEASE_MS: i64 = 5_000;
/// How many times a caller takes a decision a shared ledger keeps
/// refusing before giving up (each refusal means another decision on the
/// tenant was committed meanwhile).
pub const DECISION_ATTEMPTS: u32 = 16;
/// Most due tenants one tick claims.
const CLAIM_LIMIT: usize = 256;
/// Receipts read per query while a loaded state catches up with its chain.
const CATCH_UP_CHUNK: u64 = 4_096;
/// Version of the stored state format.
const STATE_VERSION: u32 = 1;

/// A tenant's state as a shared ledger stores it with its receipts.
#[derive(Debug, Serialize, Deserialize)]
struct StoredState {
    v: u32,
    /// The SKU and spec that wrote it: another's state is not this one's.
    sku: String,
    spec_sha256: String,
    /// The state, without its dedupe ids (the ledger checks those).
    state: TenantState,
}

impl Registry {
    /// Locks the shard holding `tenant`, loading the tenant first if it is
    /// not cached (a new tenant counts against `max_tenants`).
    pub(super) fn cached(
        &self,
        shared: &dyn SharedLedger,
        tenant: &TenantId,
    ) -> Result<MutexGuard<'_, Shard>, RegistryError> {
        {
            let shard = self.shard(tenant);
            if shard.contains_key(tenant) {
                return Ok(shard);
            }
        }
        // Loaded without the shard lock: other tenants keep deciding.
        let loaded = self.load(shared, tenant)?;
        let mut shard = self.shard(tenant);
        if shard.contains_key(tenant) {
            self.discard(loaded);
        } else {
            self.install(&mut shard, tenant, loaded, false)?;
        }
        Ok(shard)
    }

    /// Puts a loaded tenant into `shard` as a new load (a new epoch),
    /// replacing the cached one; returns the epoch. A new tenant counts
    /// against `max_tenants` unless `reserved` says it already did.
    fn install(
        &self,
        shard: &mut Shard,
        tenant: &TenantId,
        mut loaded: Tenant,
        reserved: bool,
    ) -> Result<u64, RegistryError> {
        self.evict(shard, tenant);
        if reserved {
            // Counted by the caller's `reserve`.
        } else if loaded.head.seq == 0 {
            self.reserve(tenant)?;
        } else {
            // A tenant the ledger has is never refused (as in recovery).
            self.count.fetch_add(1, Ordering::AcqRel);
        }
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed);
        loaded.epoch = epoch;
        shard.insert(tenant.clone(), Box::new(loaded));
        Ok(epoch)
    }

    /// Drops `tenant` from the cache (its next input loads it again).
    pub(super) fn evict(&self, shard: &mut Shard, tenant: &TenantId) {
        if let Some(mut t) = shard.remove(tenant) {
            self.with_recent(&mut t, |recent| *recent = Recent::default());
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Forgets the cached `tenant` if it is still the load `epoch` (a
    /// newer load already reflects the ledger).
    pub fn forget(&self, tenant: &TenantId, epoch: u64) {
        let mut shard = self.shard(tenant);
        if shard.get(tenant).is_some_and(|t| t.epoch == epoch) {
            self.evict(&mut shard, tenant);
        }
    }

    /// After a shared ledger refused the decision an [`Applied`] of load
    /// `epoch` reported (its ticket's [`Rejection`]): forgets that load and
    /// takes the decision again under the tenant's lock, on its latest
    /// committed state (so it cannot be overtaken again); for a duplicate
    /// event id, reports the input as a duplicate; for a new tenant the
    /// ledger had no room for, refuses it ([`RegistryError::TooManyTenants`]).
    pub fn apply_again(
        &self,
        tenant: &TenantId,
        input: Input,
        at: Timestamp,
        why: Rejection,
        epoch: u64,
    ) -> Result<Applied, RegistryError> {
        self.forget(tenant, epoch);
        let Some(shared) = self.ledger.shared() else {
            return self.apply(tenant, input, at);
        };
        match why {
            Rejection::TenantLimit => Err(self.tenant_limit(tenant)),
            Rejection::Overtaken => self.apply_locked(shared, tenant, input, at),
            Rejection::Duplicate => {
                // The cache may hold a decision never written (one taken
                // again in the writer, then refused there as the duplicate
                // it was): answer with the tenant as committed.
                self.refresh(shared, tenant)?;
                let mut shard = self.cached(shared, tenant)?;
                let t = shard
                    .get_mut(tenant)
                    .expect("`cached` returns the shard holding the tenant");
                if let Some(seen) = seen(&input, decision_time(tenant, t.last_at, at)) {
                    self.with_recent(t, |recent| recent.insert(seen, &self.dedupe));
                }
                let mut applied = Applied::before(tenant, t);
                applied.duplicate = true;
                Ok(applied)
            }
        }
    }

    /// Whether the event id of `input` (a duplicate this replica's window
    /// found) is recorded in the ledger inside the dedupe window before
    /// `now`; always true without a shared ledger or an id. A duplicate
    /// whose original was refused and never taken again is not.
    pub fn duplicate_recorded(
        &self,
        tenant: &TenantId,
        input: &Input,
        now: Timestamp,
    ) -> Result<bool, RegistryError> {
        let (Some(shared), Some(id)) = (self.ledger.shared(), input.id()) else {
            return Ok(true);
        };
        let window = i64::try_from(self.dedupe.window.as_millis()).unwrap_or(i64::MAX);
        shared
            .recorded(
                tenant,
                super::dedupe::id_key(input.id_space(), id),
                now.as_millis().saturating_sub(window),
            )
            .map_err(RegistryError::Ledger)
    }

    /// Hands the decision `applied` staged for `t` to the ledger with the
    /// tenant's new state, next timer and event id; sets its ticket.
    pub(super) fn submit(
        &self,
        shared: &dyn SharedLedger,
        tenant: &TenantId,
        t: &Tenant,
        applied: &mut Applied,
        redo: Option<Redo>,
    ) -> Result<(), RegistryError> {
        if applied.staged.is_empty() {
            return Ok(());
        }
        let decision = self.decision(tenant, t, applied, redo)?;
        let appended = shared
            .append_decision(decision)
            .map_err(RegistryError::Ledger)?;
        applied.ticket = Some(appended.ticket);
        Ok(())
    }

    /// The staged receipts of `applied` as one [`Decision`], with `t`'s
    /// state after them, its next timer and the input's event id.
    fn decision(
        &self,
        tenant: &TenantId,
        t: &Tenant,
        applied: &mut Applied,
        redo: Option<Redo>,
    ) -> Result<Decision, RegistryError> {
        let sku = self.pack.sku();
        let mut state = t.export();
        state.recent = Vec::new();
        let state = serde_json::to_vec(&StoredState {
            v: STATE_VERSION,
            sku: sku.id.to_owned(),
            spec_sha256: sku.spec_sha256.to_owned(),
            state,
        })
        .map_err(RegistryError::Checkpoint)?;
        Ok(Decision {
            tenant: tenant.clone(),
            entries: std::mem::take(&mut applied.staged),
            state,
            due: t.governor.due().map(Timestamp::as_millis),
            ids: applied.id.iter().map(|seen| (seen.key, seen.at)).collect(),
            window_ms: i64::try_from(self.dedupe.window.as_millis()).unwrap_or(i64::MAX),
            redo,
            max_tenants: sku.max_tenants,
        })
    }

    /// Decides `input` under the tenant's lock, on its latest committed
    /// state, and commits it before returning (its ticket is ready). The
    /// tenant's cache is replaced by the result.
    fn apply_locked(
        &self,
        shared: &dyn SharedLedger,
        tenant: &TenantId,
        input: Input,
        at: Timestamp,
    ) -> Result<Applied, RegistryError> {
        let lock = shared.lock_tenant(tenant).map_err(RegistryError::Ledger)?;
        let new = lock.stored().head.seq == 0;
        if new {
            self.reserve(tenant)?;
        }
        let unreserve = |registry: &Registry| {
            if new {
                registry.count.fetch_sub(1, Ordering::AcqRel);
            }
        };
        let mut t = match self.tenant_of(tenant, lock.stored().clone()) {
            Ok(t) => t,
            Err(error) => {
                unreserve(self);
                return Err(error);
            }
        };
        let decided = self
            .decide_input(tenant, &mut t, input.clone(), at)
            .and_then(|mut applied| {
                if !applied.staged.is_empty() {
                    let decision = self.decision(tenant, &t, &mut applied, None)?;
                    lock.commit(decision).map_err(RegistryError::Ledger)?;
                    applied.ticket = Some(crate::ledger::Ticket::ready());
                }
                Ok(applied)
            });
        let mut applied = match decided {
            Ok(applied) => applied,
            Err(error) => {
                self.discard(t);
                unreserve(self);
                return match error {
                    RegistryError::Ledger(LedgerError::Rejected(Rejection::Duplicate)) => {
                        self.apply_again(tenant, input, at, Rejection::Duplicate, 0)
                    }
                    RegistryError::Ledger(LedgerError::Rejected(Rejection::TenantLimit)) => {
                        Err(self.tenant_limit(tenant))
                    }
                    other => Err(other),
                };
            }
        };
        let mut shard = self.shard(tenant);
        applied.epoch = self.install(&mut shard, tenant, t, true)?;
        Ok(applied)
    }

    /// Lets go of a loaded tenant that is not installed (its ids leave the
    /// service-wide count).
    fn discard(&self, mut t: Tenant) {
        self.with_recent(&mut t, |recent| *recent = Recent::default());
    }

    /// Loads `tenant` as the ledger has it committed: its stored state,
    /// then the receipts that state is behind, replayed. Checked: the
    /// state's head must be a receipt of the chain's, and its ids in range.
    fn load(&self, shared: &dyn SharedLedger, tenant: &TenantId) -> Result<Tenant, RegistryError> {
        let stored = shared.load(tenant).map_err(RegistryError::Ledger)?;
        self.tenant_of(tenant, stored)
    }

    /// The tenant `stored` describes (see [`Registry::load`]).
    fn tenant_of(&self, tenant: &TenantId, stored: Stored) -> Result<Tenant, RegistryError> {
        let mut t = match stored.state {
            None => Tenant::new(self.pack, Head::EMPTY),
            Some((seq, blob)) => {
                let decoded: StoredState =
                    serde_json::from_slice(&blob).map_err(RegistryError::Checkpoint)?;
                let sku = self.pack.sku();
                if decoded.sku != sku.id || decoded.spec_sha256 != sku.spec_sha256 {
                    return Err(RegistryError::CheckpointSku {
                        expected: format!("{} ({})", sku.id, sku.spec_sha256),
                        found: format!("{} ({})", decoded.sku, decoded.spec_sha256),
                    });
                }
                let state = decoded.state;
                let inconsistent = |reason: String| RegistryError::Quarantined {
                    tenant: tenant.clone(),
                    reason,
                };
                if decoded.v != STATE_VERSION || state.seq != seq || seq > stored.head.seq {
                    return Err(inconsistent(format!(
                        "its stored state (version {}, seq {}) does not belong to receipt {seq} of a chain at seq {}",
                        decoded.v, state.seq, stored.head.seq
                    )));
                }
                state
                    .governor
                    .check(self.pack, state.seq)
                    .map_err(inconsistent)?;
                Tenant::import(state)
            }
        };
        let caught_up = self.catch_up(tenant, &mut t, stored.head);
        if let Err(error) = caught_up {
            // Ids the replay counted in leave with the tenant.
            self.discard(t);
            return Err(error);
        }
        Ok(t)
    }

    /// Replays the receipts `t` is behind `head` (ids they carry are
    /// remembered and counted); checks it ends at `head`.
    fn catch_up(&self, tenant: &TenantId, t: &mut Tenant, head: Head) -> Result<(), RegistryError> {
        let mut stats = RecoveryStats::default();
        while t.head.seq < head.seq {
            let wanted = (head.seq - t.head.seq).min(CATCH_UP_CHUNK);
            let records = self
                .ledger
                .read(
                    tenant,
                    t.head.seq,
                    usize::try_from(wanted).unwrap_or(usize::MAX),
                )
                .map_err(RegistryError::Ledger)?;
            if records.is_empty() {
                break;
            }
            for record in &records {
                self.step_into(t, record, &mut stats)?;
            }
        }
        if t.head != head {
            return Err(RegistryError::ChainMismatch {
                tenant: tenant.clone(),
                source: LedgerError::ChainMismatch {
                    tenant: tenant.to_string(),
                    expected_seq: head.seq,
                    got_seq: t.head.seq,
                    expected_prev: hex::encode(head.hash),
                    got_prev: hex::encode(t.head.hash),
                },
            });
        }
        Ok(())
    }

    /// Replaces the cached `tenant` by the ledger's committed state when
    /// they differ (a cache ahead of the ledger holds decisions that are on
    /// their way or were refused: what is shown, and what timers fire on,
    /// is what was committed). An unknown tenant is not created.
    pub(super) fn refresh(
        &self,
        shared: &dyn SharedLedger,
        tenant: &TenantId,
    ) -> Result<(), RegistryError> {
        // The head first: a cache that is current (the usual case, for a
        // view or an admission) costs no decoding of the stored state.
        let stored = shared.load(tenant).map_err(RegistryError::Ledger)?;
        let current = match self.shard(tenant).get(tenant) {
            None => stored.head.seq == 0,
            Some(t) => t.head == stored.head,
        };
        if !current {
            let loaded = self.tenant_of(tenant, stored)?;
            self.install(&mut self.shard(tenant), tenant, loaded, false)?;
        }
        Ok(())
    }

    /// [`Registry::tick`] on a shared ledger: claims the tenants whose
    /// timer is due (across every replica), brings each up to date and
    /// fires its timer. A tenant that fails is passed over with a warning
    /// (its claim expires and another pass takes it again).
    pub(super) fn tick_shared(
        &self,
        shared: &dyn SharedLedger,
        now: Timestamp,
    ) -> Result<Vec<Applied>, RegistryError> {
        for shard in self.shards.iter() {
            let mut shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for t in shard.values_mut() {
                self.with_recent(t, |recent| recent.expire(now, &self.dedupe));
            }
        }
        let due = shared
            .claim_due(now.as_millis(), TIMER_LEASE_MS, CLAIM_LIMIT)
            .map_err(RegistryError::Ledger)?;
        let mut out = Vec::new();
        for tenant in due {
            if self.quarantined(&tenant).is_some() {
                continue;
            }
            match self.fire_shared(shared, &tenant, now) {
                Ok(Some(applied)) => out.push(applied),
                Ok(None) => {}
                Err(error) => tracing::warn!(
                    %tenant,
                    error = &error as &dyn std::error::Error,
                    "due timer not fired"
                ),
            }
        }
        Ok(out)
    }

    /// Fires `tenant`'s timer on its latest committed state, if it is due.
    fn fire_shared(
        &self,
        shared: &dyn SharedLedger,
        tenant: &TenantId,
        now: Timestamp,
    ) -> Result<Option<Applied>, RegistryError> {
        self.refresh(shared, tenant)?;
        let mut shard = self.cached(shared, tenant)?;
        let t = shard
            .get_mut(tenant)
            .expect("`cached` returns the shard holding the tenant");
        if t.governor.due().is_none_or(|due| now < due) {
            // The ledger's record of the timer was stale: set it right
            // (after letting the shard go: the write waits for a server).
            let (seq, due) = (t.head.seq, t.governor.due().map(Timestamp::as_millis));
            drop(shard);
            shared
                .store_due(tenant, seq, due)
                .map_err(RegistryError::Ledger)?;
            return Ok(None);
        }
        let mut applied = Applied::before(tenant, t);
        let at = decision_time(tenant, t.last_at, now);
        let fired = self
            .fire(tenant, t, at, &mut applied)
            .and_then(|()| self.submit(shared, tenant, t, &mut applied, None));
        if let Err(error) = fired {
            self.evict(&mut shard, tenant);
            return Err(error);
        }
        Ok((applied.receipts > 0).then_some(applied))
    }
}

impl Registry {
    /// Lets a shared ledger's writer take this registry's overtaken
    /// decisions again under the tenant's lock (see [`Redecide`]), instead
    /// of refusing them back to their callers; call once the registry is
    /// in its `Arc`. A no-op on other ledgers.
    pub fn attach(self: &Arc<Self>) {
        if let Some(shared) = self.ledger.shared() {
            let taker: Arc<dyn Redecide> = Arc::clone(self) as Arc<dyn Redecide>;
            shared.set_redecider(Arc::downgrade(&taker));
        }
    }

    /// What the decision the ledger took in place of `ticket`'s reported,
    /// once `ticket` resolved (see [`Registry::attach`]).
    pub fn retaken(ticket: &Ticket) -> Option<Applied> {
        ticket
            .retaken()
            .and_then(|outcome| outcome.downcast_ref::<Applied>().cloned())
    }
}

impl Redecide for Registry {
    fn redecide(
        &self,
        tenant: &TenantId,
        stored: Stored,
        redo: &Redo,
    ) -> Result<(Option<Decision>, Retaken), String> {
        let error = |e: RegistryError| crate::report::error_chain(&e);
        let mut t = self.tenant_of(tenant, stored).map_err(error)?;
        let decided = self
            .decide_input(tenant, &mut t, redo.input.clone(), redo.at)
            .and_then(|mut applied| {
                let decision = if applied.staged.is_empty() {
                    None
                } else {
                    Some(self.decision(tenant, &t, &mut applied, None)?)
                };
                Ok((decision, applied))
            });
        let (decision, mut applied) = match decided {
            Ok(decided) => decided,
            Err(e) => {
                self.discard(t);
                return Err(error(e));
            }
        };
        // The cache follows the decision about to be committed (a failed
        // commit leaves it ahead: the next decision on it is taken again).
        let mut shard = self.shard(tenant);
        applied.epoch = self.install(&mut shard, tenant, t, false).map_err(error)?;
        Ok((decision, Arc::new(applied)))
    }
}

/// Replays a shared ledger's receipts (`scan`, in append order) and
/// compares each tenant's stored state (`states`: its seq and blob, as
/// stored beside its head) with what its receipts replay to at that seq:
/// the check a load cannot make, for a state that keeps the head but
/// rewrites the governor or the entitlement. For `ledger verify`.
/// `Ok(Err(_))` names the first tenant, in id order, whose state the
/// receipts contradict.
pub fn replay_states(
    pack: &'static dyn crate::sku::PolicyPack,
    states: &std::collections::BTreeMap<TenantId, (u64, Vec<u8>)>,
    scan: impl FnOnce(
        &mut dyn FnMut(&crate::ledger::Record) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError>,
) -> Result<Result<(), super::CheckpointMismatch>, RegistryError> {
    let scratch = Registry::new(pack, Arc::new(crate::ledger::memory::MemoryLedger::new()));
    let sku = pack.sku();
    let mut stats = RecoveryStats::default();
    let mut failure = None;
    let mut wrong = std::collections::BTreeMap::<TenantId, String>::new();
    let scanned = scan(&mut |record| {
        if let Err(error) = scratch.replay(record, &mut stats) {
            failure = Some(error);
            return Err(LedgerError::Interrupted);
        }
        let Some((seq, blob)) = states.get(&record.tenant) else {
            return Ok(());
        };
        if *seq != record.seq || scratch.quarantined(&record.tenant).is_some() {
            return Ok(());
        }
        let shard = scratch.shard(&record.tenant);
        let Some(truth) = shard.get(&record.tenant) else {
            return Ok(());
        };
        let problem = match serde_json::from_slice::<StoredState>(blob) {
            Err(error) => Some(format!("its stored state does not decode: {error}")),
            Ok(stored) if stored.sku != sku.id || stored.spec_sha256 != sku.spec_sha256 => {
                Some(format!(
                    "its stored state was written by `{}` ({})",
                    stored.sku, stored.spec_sha256
                ))
            }
            Ok(stored) if stored.state.governor != truth.governor => Some(format!(
                "its stored governor's {} is not what its receipts replay to (state `{}` stored, `{}` replayed)",
                stored
                    .state
                    .governor
                    .difference(&truth.governor)
                    .unwrap_or("state"),
                stored.state.governor.state().name(),
                truth.governor.state().name()
            )),
            Ok(stored) if stored.state.entitlement != truth.entitlement => Some(format!(
                "its stored entitlement's {} is not what its receipts replay to (`{}` stored, `{}` replayed)",
                stored
                    .state
                    .entitlement
                    .difference(&truth.entitlement)
                    .unwrap_or("state"),
                stored.state.entitlement.state().as_str(),
                truth.entitlement.state().as_str()
            )),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            wrong.entry(record.tenant.clone()).or_insert(problem);
        }
        Ok(())
    });
    if let Some(error) = failure {
        return Err(error);
    }
    scanned.map_err(RegistryError::Ledger)?;
    Ok(match wrong.into_iter().next() {
        Some((tenant, reason)) => Err(super::CheckpointMismatch {
            tenant: Some(tenant),
            reason,
        }),
        None => Ok(()),
    })
}

//! The sharded registry of per-tenant governors.
//!
//! 64 mutex-guarded maps keyed by tenant hash, so every core works;
//! everything the FSM decides for a tenant is appended to the ledger under
//! that tenant's shard lock, so each chain stays ordered.
//!
//! Choices where DESIGN.md is silent:
//! - a tenant is created by its first input of any kind; `max_tenants`
//!   refuses new tenants past the limit (recovery loads every tenant the
//!   ledger has, even past it);
//! - dedupe keeps the last 32 event ids per tenant (signal and entitlement
//!   ids in separate namespaces) as 128-bit SHA-256 prefixes, so the memory
//!   per tenant stays fixed whatever the ids look like; a duplicate writes no
//!   receipt and returns no ticket;
//! - a plan on any valid entitlement event (not only `plan_changed`) sets
//!   the tenant's profile;
//! - an action result whose key does not name this tenant, the action and
//!   the in-flight set is receipted as stale (no transition);
//! - `checkpoint` holds every shard lock only while it takes the ledger's
//!   mark and copies the tenants' states (appends happen under shard locks,
//!   so the copy reflects exactly the records before the mark); serializing
//!   and storing the blob run with ingest flowing again;
//! - `recover` streams: the checkpoint's tenants are loaded first, then each
//!   later record is stepped as the ledger reads it, so memory stays bounded
//!   by the tenants, not by the log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::TenantId;
use crate::clock::Timestamp;
use crate::entitlement::{Entitlement, EntitlementError, EntitlementState};
use crate::fsm::Dispatched;
use crate::fsm::{Event, Governor, InFlight, State, Step};
use crate::ledger::{Entry, Hash, Head, Ledger, LedgerError, Record, Recovered, Ticket};
use crate::policy::Level;
use crate::receipt::{self, Body, Carried, Input, Kind, Receipt, ReceiptError};
use crate::sku::{ActionId, PolicyPack};

/// Number of shards; a power of two.
const SHARDS: usize = 64;
/// Event ids remembered per tenant for dedupe.
const RECENT_IDS: usize = 32;
/// Checkpoint blob format version.
const CHECKPOINT_VERSION: u32 = 1;

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A new tenant past `max_tenants`.
    #[error("tenant limit `{max}` reached: new tenant `{tenant}` refused")]
    TooManyTenants {
        /// The SKU's `max_tenants`.
        max: u32,
        /// The refused tenant.
        tenant: TenantId,
    },
    /// The ledger refused or failed an operation.
    #[error("ledger operation failed")]
    Ledger(#[source] LedgerError),
    /// A receipt could not be built or parsed.
    #[error("receipt of tenant `{tenant}` seq `{seq}` failed")]
    Receipt {
        /// The tenant.
        tenant: TenantId,
        /// The receipt's seq.
        seq: u64,
        /// The cause.
        #[source]
        source: ReceiptError,
    },
    /// The checkpoint blob could not be written or read.
    #[error("checkpoint blob is invalid")]
    Checkpoint(#[source] serde_json::Error),
    /// The checkpoint was taken by another SKU or spec.
    #[error("checkpoint belongs to sku `{found}`, this is `{expected}`")]
    CheckpointSku {
        /// This SKU's id and spec hash.
        expected: String,
        /// The checkpoint's.
        found: String,
    },
    /// A ledger record does not continue its tenant's chain.
    #[error("ledger record of tenant `{tenant}` has seq `{seq}`, expected `{expected}`")]
    Gap {
        /// The tenant.
        tenant: TenantId,
        /// The record's seq.
        seq: u64,
        /// The seq that should have come.
        expected: u64,
    },
}

/// One action for the actuator to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The tenant it acts on.
    pub tenant: TenantId,
    /// The action.
    pub action: ActionId,
    /// `{tenant}:{seq}:{action}` (seq of the deciding receipt): stable across retries.
    pub idempotency_key: String,
    /// Whether it undoes an earlier action.
    pub undo: bool,
}

/// What [`Registry::apply`] (or a timer) did.
#[derive(Debug)]
pub struct Applied {
    /// The tenant.
    pub tenant: TenantId,
    /// Its state before (before a due timer fired, too).
    pub from: State,
    /// Its state afterwards.
    pub state: State,
    /// Its level afterwards: the worst effective level over its rules.
    pub level: Level,
    /// Receipts appended (0 for a duplicate).
    pub receipts: u32,
    /// Seq of the tenant's last receipt afterwards.
    pub last_seq: u64,
    /// Actions to run, in order.
    pub dispatches: Vec<Dispatch>,
    /// Whether the input was a duplicate (dropped before the step).
    pub duplicate: bool,
    /// Why an entitlement event was refused (receipted; HTTP 409).
    pub refused: Option<EntitlementError>,
    /// The last append's ticket (durability is monotonic); wait on it before
    /// acknowledging. `None` when nothing was appended.
    pub ticket: Option<Ticket>,
}

impl Applied {
    /// Nothing done yet to `t`.
    fn before(tenant: &TenantId, t: &Tenant) -> Applied {
        Applied {
            tenant: tenant.clone(),
            from: t.governor.state(),
            state: t.governor.state(),
            level: t.governor.level(),
            receipts: 0,
            last_seq: t.head.seq,
            dispatches: Vec::new(),
            duplicate: false,
            refused: None,
            ticket: None,
        }
    }

    /// Records where `t` ended up.
    fn settle(&mut self, t: &Tenant) {
        self.state = t.governor.state();
        self.level = t.governor.level();
        self.last_seq = t.head.seq;
    }
}

/// What a protected service asks: may this tenant proceed?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Whether to let the tenant's work through.
    pub allow: bool,
    /// The tenant's state name.
    pub state: &'static str,
    /// Why, in snake_case.
    pub reason: &'static str,
}

/// One in-flight action, as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlightView {
    /// Action name.
    pub action: &'static str,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// Whether its success was confirmed.
    pub confirmed: bool,
}

/// A tenant as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantView {
    /// The tenant.
    pub tenant: TenantId,
    /// FSM state.
    pub state: State,
    /// Entitlement state.
    pub entitlement: EntitlementState,
    /// Profile name.
    pub profile: &'static str,
    /// The tenant's level (worst rule).
    pub level: Level,
    /// The in-flight action set.
    pub in_flight: Vec<InFlightView>,
    /// Seq of the last receipt.
    pub seq: u64,
    /// Hash of the last receipt, lowercase hex.
    pub hash: String,
}

/// The complete state of one tenant (for checkpoints and replay checks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantState {
    /// The governor.
    pub governor: Governor,
    /// The entitlement.
    pub entitlement: Entitlement,
    /// Seq of the tenant's last receipt.
    pub seq: u64,
    /// Hash of the tenant's last receipt.
    pub hash: Hash,
    /// Recent event ids (hashed), oldest first; at most 32.
    pub recent: Vec<[u8; 16]>,
}

/// Counts from [`Registry::recover`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Tenants loaded from the checkpoint blob.
    pub from_checkpoint: usize,
    /// Records the ledger returned after the checkpoint.
    pub records: u64,
    /// Records replayed through the step function.
    pub replayed: u64,
    /// Records skipped because the checkpoint already covered them.
    pub skipped: u64,
    /// Replayed records whose recorded `to` state differs from the replay's
    /// (the policy changed since they were written).
    pub diverged: u64,
    /// Tenants in the registry afterwards.
    pub tenants: usize,
}

/// One tenant in memory.
#[derive(Debug, Clone)]
struct Tenant {
    governor: Governor,
    entitlement: Entitlement,
    head: Head,
    /// Hashed recent event ids, oldest first; allocated on the first id.
    recent: VecDeque<[u8; 16]>,
}

impl Tenant {
    fn new(pack: &dyn PolicyPack, head: Head) -> Tenant {
        Tenant {
            governor: Governor::new(pack),
            entitlement: Entitlement::new(),
            head,
            recent: VecDeque::new(),
        }
    }

    fn seen(&self, id: &[u8; 16]) -> bool {
        self.recent.contains(id)
    }

    fn remember(&mut self, id: [u8; 16]) {
        if self.recent.capacity() == 0 {
            self.recent.reserve_exact(RECENT_IDS);
        }
        if self.recent.len() == RECENT_IDS {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    fn export(&self) -> TenantState {
        TenantState {
            governor: self.governor.clone(),
            entitlement: self.entitlement,
            seq: self.head.seq,
            hash: self.head.hash,
            recent: self.recent.iter().copied().collect(),
        }
    }

    fn import(state: TenantState) -> Tenant {
        let mut recent = VecDeque::new();
        if !state.recent.is_empty() {
            recent.reserve_exact(RECENT_IDS);
            let skip = state.recent.len().saturating_sub(RECENT_IDS);
            recent.extend(state.recent.into_iter().skip(skip));
        }
        Tenant {
            governor: state.governor,
            entitlement: state.entitlement,
            head: Head {
                seq: state.seq,
                hash: state.hash,
            },
            recent,
        }
    }

    /// Approximate bytes held (struct, id, heap).
    fn bytes(&self, id: &TenantId) -> usize {
        size_of::<Tenant>()
            + size_of::<TenantId>()
            + id.as_str().len()
            + 16
            + self.governor.heap_bytes()
            + self.recent.capacity() * 16
    }
}

/// The dedupe key of an input id: kind-separated, SHA-256, first 128 bits.
fn id_key(kind: Kind, id: &str) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(id.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// What an input decides, before anything is written.
struct Decided {
    /// The governor after the step (unchanged if no step ran).
    governor: Governor,
    /// The entitlement after a valid entitlement event.
    entitlement: Entitlement,
    /// Entitlement `(from, to)` for entitlement events.
    transition: Option<(EntitlementState, EntitlementState)>,
    /// The step, if one ran.
    step: Option<Step>,
    /// Why an entitlement event was refused.
    refused: Option<EntitlementError>,
}

type Shard = HashMap<TenantId, Tenant>;

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    v: u32,
    sku: String,
    spec_sha256: String,
    tenants: Vec<(TenantId, TenantState)>,
}

/// The per-tenant governors of one SKU, over one ledger.
pub struct Registry {
    pack: &'static dyn PolicyPack,
    ledger: Arc<dyn Ledger>,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Tenants across all shards.
    count: AtomicUsize,
    /// Receipts appended through this registry since it was created.
    appended: AtomicU64,
    /// Serializes checkpoints, so marks reach the ledger in order.
    checkpointing: Mutex<()>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("sku", &self.pack.sku().id)
            .field("tenants", &self.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry; call [`Registry::recover`] before serving.
    pub fn new(pack: &'static dyn PolicyPack, ledger: Arc<dyn Ledger>) -> Registry {
        Registry {
            pack,
            ledger,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            count: AtomicUsize::new(0),
            appended: AtomicU64::new(0),
            checkpointing: Mutex::new(()),
        }
    }

    /// The policy pack.
    pub fn pack(&self) -> &'static dyn PolicyPack {
        self.pack
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    fn shard(&self, tenant: &TenantId) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(tenant) as usize) & (SHARDS - 1);
        // A panic under the lock leaves the map consistent (tenants are
        // replaced only after their receipts are appended).
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Feeds `input` for `tenant` at `at`: fires a due timer first, then
    /// steps, appends the receipts and returns what to dispatch.
    pub fn apply(
        &self,
        tenant: &TenantId,
        input: Input,
        at: Timestamp,
    ) -> Result<Applied, RegistryError> {
        let mut shard = self.shard(tenant);
        let id = input.id().map(|id| id_key(input.kind(), id));
        let entry = match shard.get_mut(tenant) {
            Some(t) => {
                if id.as_ref().is_some_and(|id| t.seen(id)) {
                    let mut applied = Applied::before(tenant, t);
                    applied.duplicate = true;
                    return Ok(applied);
                }
                t
            }
            None => {
                self.reserve(tenant)?;
                let head = self.ledger.head(tenant);
                shard
                    .entry(tenant.clone())
                    .or_insert_with(|| Tenant::new(self.pack, head))
            }
        };
        let mut applied = Applied::before(tenant, entry);
        if let Some(due) = entry.governor.due()
            && at >= due
        {
            self.fire(tenant, entry, at, &mut applied)?;
        }
        let seq = entry.head.seq + 1;
        let decided = self.decide(entry, tenant, &input, at, seq);
        let prev = entry.head.hash;
        let start = applied.dispatches.len();
        let receipt = Receipt {
            tenant,
            seq,
            at,
            prev: &prev,
            from: entry.governor.state(),
            to: decided.governor.state(),
            level: decided.governor.level(),
            actions: &[],
            body: Body::Input {
                input: &input,
                decision: decided.step.as_ref().map(|s| &s.decision),
                entitlement: decided.transition,
                refused: decided.refused.as_ref(),
            },
        };
        let dispatch = decided.step.as_ref().map_or(&[][..], |s| &s.dispatch[..]);
        self.commit(entry, receipt, dispatch, &mut applied)?;
        entry.governor = decided.governor;
        entry.entitlement = decided.entitlement;
        if let Some(id) = id {
            entry.remember(id);
        }
        applied.refused = decided.refused;
        self.append_actions(entry, tenant, at, seq, start, &mut applied)?;
        applied.settle(entry);
        Ok(applied)
    }

    /// Counts a new tenant in, unless that passes `max_tenants`.
    fn reserve(&self, tenant: &TenantId) -> Result<(), RegistryError> {
        let max = self.pack.sku().max_tenants;
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| RegistryError::TooManyTenants {
                max,
                tenant: tenant.clone(),
            })
    }

    /// The FSM's decision on `input`, without writing anything.
    fn decide(
        &self,
        t: &Tenant,
        tenant: &TenantId,
        input: &Input,
        at: Timestamp,
        seq: u64,
    ) -> Decided {
        let mut decided = Decided {
            governor: t.governor.clone(),
            entitlement: t.entitlement,
            transition: None,
            step: None,
            refused: None,
        };
        let event = match input {
            Input::Signal { signal, value, .. } => Some(Event::Signal {
                signal: *signal,
                value: *value,
            }),
            Input::ActionResult {
                action,
                idempotency_key,
                ok,
                ..
            } => {
                let name = self.pack.sku().action(*action).name;
                let decided = receipt::parse_idempotency_key(idempotency_key)
                    .filter(|(t, _, a)| *t == tenant.as_str() && *a == name)
                    .map_or(0, |(_, seq, _)| seq);
                Some(Event::ActionResult {
                    decided,
                    action: *action,
                    ok: *ok,
                })
            }
            Input::Reset { .. } => Some(Event::Reset),
            Input::Entitlement { event, plan, .. } => {
                let from = t.entitlement.state();
                match decided.entitlement.apply(*event) {
                    Ok(to) => {
                        decided.transition = Some((from, to));
                        Some(Event::Entitlement {
                            active: decided.entitlement.is_active(),
                            profile: *plan,
                        })
                    }
                    Err(err) => {
                        decided.transition = Some((from, from));
                        decided.refused = Some(err);
                        None
                    }
                }
            }
            Input::Rejected { .. } => None,
        };
        if let Some(event) = event {
            decided.step = decided.governor.step(self.pack, event, at, seq);
        }
        decided
    }

    /// Appends `receipt` (and nothing else); updates the head and `applied`.
    fn commit(
        &self,
        t: &mut Tenant,
        receipt: Receipt<'_>,
        dispatch: &[Dispatched],
        applied: &mut Applied,
    ) -> Result<(), RegistryError> {
        let tenant = receipt.tenant;
        let seq = receipt.seq;
        let keys: Vec<(ActionId, String)> = dispatch
            .iter()
            .map(|d| {
                let name = self.pack.sku().action(d.action).name;
                (d.action, receipt::idempotency_key(tenant, seq, name))
            })
            .collect();
        let receipt = Receipt {
            actions: &keys,
            ..receipt
        };
        let bytes = receipt
            .encode(self.pack.sku())
            .map_err(|source| RegistryError::Receipt {
                tenant: tenant.clone(),
                seq,
                source,
            })?;
        let appended = self
            .ledger
            .append(Entry {
                tenant: tenant.clone(),
                seq,
                prev: t.head.hash,
                bytes,
            })
            .map_err(RegistryError::Ledger)?;
        t.head = Head {
            seq,
            hash: appended.hash,
        };
        self.appended.fetch_add(1, Ordering::Relaxed);
        applied.ticket = Some(appended.ticket);
        applied.receipts += 1;
        for (d, (action, key)) in dispatch.iter().zip(keys) {
            applied.dispatches.push(Dispatch {
                tenant: tenant.clone(),
                action,
                idempotency_key: key,
                undo: d.undo,
            });
        }
        Ok(())
    }

    /// Appends one `action` receipt per dispatch from `applied.dispatches[start..]`
    /// (those decided by receipt `decided`).
    fn append_actions(
        &self,
        t: &mut Tenant,
        tenant: &TenantId,
        at: Timestamp,
        decided: u64,
        start: usize,
        applied: &mut Applied,
    ) -> Result<(), RegistryError> {
        for index in start..applied.dispatches.len() {
            let d = &applied.dispatches[index];
            let (action, undo, key) = (d.action, d.undo, d.idempotency_key.clone());
            let state = t.governor.state();
            let prev = t.head.hash;
            let receipt = Receipt {
                tenant,
                seq: t.head.seq + 1,
                at,
                prev: &prev,
                from: state,
                to: state,
                level: t.governor.level(),
                actions: &[],
                body: Body::Action {
                    action,
                    key: &key,
                    undo,
                    decided,
                },
            };
            self.commit(t, receipt, &[], applied)?;
        }
        Ok(())
    }

    /// Fires `t`'s timer at `now` if it is due; appends its receipts.
    fn fire(
        &self,
        tenant: &TenantId,
        t: &mut Tenant,
        now: Timestamp,
        applied: &mut Applied,
    ) -> Result<(), RegistryError> {
        let Some(due) = t.governor.due() else {
            return Ok(());
        };
        let seq = t.head.seq + 1;
        let mut governor = t.governor.clone();
        let Some(step) = governor.step(self.pack, Event::Timer, now, seq) else {
            return Ok(());
        };
        let prev = t.head.hash;
        let start = applied.dispatches.len();
        let receipt = Receipt {
            tenant,
            seq,
            at: now,
            prev: &prev,
            from: step.from,
            to: step.to,
            level: governor.level(),
            actions: &[],
            body: Body::Timer {
                due,
                decision: &step.decision,
            },
        };
        self.commit(t, receipt, &step.dispatch, applied)?;
        t.governor = governor;
        self.append_actions(t, tenant, now, seq, start, applied)?;
        applied.settle(t);
        Ok(())
    }

    /// Fires the due timers of every tenant at `now`.
    pub fn tick(&self, now: Timestamp) -> Result<Vec<Applied>, RegistryError> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (tenant, t) in shard.iter_mut() {
                if t.governor.due().is_some_and(|due| now >= due) {
                    let mut applied = Applied::before(tenant, t);
                    self.fire(tenant, t, now, &mut applied)?;
                    if applied.receipts > 0 {
                        out.push(applied);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The earliest due timer over all tenants (for a scheduler).
    pub fn next_due(&self) -> Option<Timestamp> {
        self.shards
            .iter()
            .filter_map(|shard| {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                shard.values().filter_map(|t| t.governor.due()).min()
            })
            .min()
    }

    /// A tenant as operators see it.
    pub fn view(&self, tenant: &TenantId) -> Option<TenantView> {
        let shard = self.shard(tenant);
        let t = shard.get(tenant)?;
        let sku = self.pack.sku();
        let (seq, flight) = t.governor.in_flight();
        Some(TenantView {
            tenant: tenant.clone(),
            state: t.governor.state(),
            entitlement: t.entitlement.state(),
            profile: sku.profile(t.governor.profile()).name,
            level: t.governor.level(),
            in_flight: flight
                .iter()
                .map(|f: &InFlight| {
                    let name = sku.action(f.action).name;
                    InFlightView {
                        action: name,
                        idempotency_key: receipt::idempotency_key(tenant, seq, name),
                        confirmed: f.ok,
                    }
                })
                .collect(),
            seq: t.head.seq,
            hash: hex::encode(t.head.hash),
        })
    }

    /// Whether a protected service should let `tenant`'s work through.
    pub fn admit(&self, tenant: &TenantId) -> Admission {
        let shard = self.shard(tenant);
        let Some(t) = shard.get(tenant) else {
            return if self.pack.sku().entitlement_required {
                Admission {
                    allow: false,
                    state: State::Boot.name(),
                    reason: "unknown_tenant",
                }
            } else {
                Admission {
                    allow: true,
                    state: State::Boot.name(),
                    reason: "unknown_tenant",
                }
            };
        };
        let state = t.governor.state();
        let (allow, reason) = match state {
            State::Refusing if self.pack.sku().entitlement_required && !t.governor.entitled() => {
                (false, "entitlement_inactive")
            }
            State::Refusing => (false, "refusing"),
            State::Boot | State::Stable => (true, "stable"),
            State::Warning => (true, "warning"),
            State::Intervening { .. } => (true, "intervening"),
            State::Degraded { .. } => (true, "degraded"),
        };
        Admission {
            allow,
            state: state.name(),
            reason,
        }
    }

    /// Receipts appended through this registry since it was created (not
    /// those recovered); a scheduler compares it to decide when to checkpoint.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether there are no tenants.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tenants by state name, in [`State::NAMES`] order.
    pub fn states_count(&self) -> [(&'static str, usize); 6] {
        let mut counts = State::NAMES.map(|name| (name, 0));
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for t in shard.values() {
                counts[t.governor.state().index()].1 += 1;
            }
        }
        counts
    }

    /// Approximate bytes one tenant holds in memory.
    pub fn tenant_bytes(&self, tenant: &TenantId) -> Option<usize> {
        self.shard(tenant).get(tenant).map(|t| t.bytes(tenant))
    }

    /// The complete state of every tenant, ordered by tenant id.
    pub fn states(&self) -> BTreeMap<TenantId, TenantState> {
        let mut out = BTreeMap::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(shard.iter().map(|(id, t)| (id.clone(), t.export())));
        }
        out
    }

    /// Serializes every tenant's state and stores it as the ledger's
    /// checkpoint; returns the number of tenants.
    ///
    /// Appends wait only while the ledger's mark is taken and the states are
    /// copied: every shard is locked for the mark (appends happen under shard
    /// locks, so the copy reflects exactly the records before it) and each is
    /// released as soon as its tenants are copied. Sorting, serializing and the
    /// ledger's write and fsyncs run with ingest flowing.
    pub fn checkpoint(&self) -> Result<usize, RegistryError> {
        let _one_at_a_time = self
            .checkpointing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let guards: Vec<MutexGuard<'_, Shard>> = self
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let mark = self.ledger.mark().map_err(RegistryError::Ledger)?;
        let mut tenants: Vec<(TenantId, TenantState)> = Vec::with_capacity(self.len());
        for shard in guards {
            // This shard changed nothing since the mark: copy it and let it go.
            tenants.extend(shard.iter().map(|(id, t)| (id.clone(), t.export())));
        }
        tenants.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let count = tenants.len();
        let sku = self.pack.sku();
        let blob = serde_json::to_vec(&Checkpoint {
            v: CHECKPOINT_VERSION,
            sku: sku.id.to_owned(),
            spec_sha256: sku.spec_sha256.to_owned(),
            tenants,
        })
        .map_err(RegistryError::Checkpoint)?;
        self.ledger
            .checkpoint(mark, &blob)
            .map_err(RegistryError::Ledger)?;
        Ok(count)
    }

    /// Loads the ledger's latest checkpoint, then replays the records after
    /// it through the same step function as the ledger reads them (records a
    /// tenant's checkpointed head already covers are skipped). Recovered
    /// tenants resume their state; nothing is written.
    pub fn recover(&self) -> Result<RecoveryStats, RegistryError> {
        let mut stats = RecoveryStats::default();
        // The ledger's visitor speaks `LedgerError`; keep our own error here.
        let mut failure = None;
        let result = self.ledger.recover(&mut |item| {
            let outcome = match item {
                Recovered::Checkpoint(blob) => self.load_checkpoint(blob, &mut stats),
                Recovered::Record(record) => self.replay(record, &mut stats),
            };
            outcome.map_err(|error| {
                failure = Some(error);
                LedgerError::Interrupted
            })
        });
        if let Some(error) = failure {
            return Err(error);
        }
        result.map_err(RegistryError::Ledger)?;
        stats.tenants = self.len();
        Ok(stats)
    }

    /// Loads the tenants of a checkpoint blob (before any record is replayed).
    fn load_checkpoint(&self, blob: &[u8], stats: &mut RecoveryStats) -> Result<(), RegistryError> {
        let checkpoint: Checkpoint =
            serde_json::from_slice(blob).map_err(RegistryError::Checkpoint)?;
        let sku = self.pack.sku();
        if checkpoint.sku != sku.id || checkpoint.spec_sha256 != sku.spec_sha256 {
            return Err(RegistryError::CheckpointSku {
                expected: format!("{} ({})", sku.id, sku.spec_sha256),
                found: format!("{} ({})", checkpoint.sku, checkpoint.spec_sha256),
            });
        }
        stats.from_checkpoint = checkpoint.tenants.len();
        for (id, state) in checkpoint.tenants {
            let mut shard = self.shard(&id);
            if shard.insert(id, Tenant::import(state)).is_none() {
                self.count.fetch_add(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// Steps one recovered record into its tenant (skipped if the
    /// checkpoint already covers it).
    fn replay(&self, record: &Record, stats: &mut RecoveryStats) -> Result<(), RegistryError> {
        let pack = self.pack;
        let receipt_error = |source| RegistryError::Receipt {
            tenant: record.tenant.clone(),
            seq: record.seq,
            source,
        };
        let parsed = receipt::parse(pack, &record.bytes).map_err(receipt_error)?;
        if parsed.tenant != record.tenant || parsed.seq != record.seq {
            return Err(receipt_error(ReceiptError::Mismatch {
                tenant: parsed.tenant.to_string(),
                seq: parsed.seq,
                stored_tenant: record.tenant.to_string(),
                stored_seq: record.seq,
            }));
        }
        stats.records += 1;
        let mut shard = self.shard(&parsed.tenant);
        let t = match shard.get_mut(&parsed.tenant) {
            Some(t) => t,
            None => {
                self.count.fetch_add(1, Ordering::AcqRel);
                shard
                    .entry(parsed.tenant.clone())
                    .or_insert_with(|| Tenant::new(pack, Head::EMPTY))
            }
        };
        if parsed.seq <= t.head.seq {
            stats.skipped += 1;
            return Ok(());
        }
        if parsed.seq != t.head.seq + 1 {
            return Err(RegistryError::Gap {
                tenant: parsed.tenant,
                seq: parsed.seq,
                expected: t.head.seq + 1,
            });
        }
        let to = match parsed.carried {
            Carried::Effect => None,
            Carried::Timer => {
                let mut governor = t.governor.clone();
                governor.step(pack, Event::Timer, parsed.at, parsed.seq);
                t.governor = governor;
                Some(t.governor.state())
            }
            Carried::Input(input) => {
                let decided = self.decide(t, &parsed.tenant, &input, parsed.at, parsed.seq);
                t.governor = decided.governor;
                t.entitlement = decided.entitlement;
                if let Some(id) = input.id() {
                    t.remember(id_key(input.kind(), id));
                }
                Some(t.governor.state())
            }
        };
        if to.is_some_and(|to| Some(to.name()) != parsed.to) {
            stats.diverged += 1;
        }
        stats.replayed += 1;
        t.head = Head {
            seq: parsed.seq,
            hash: record.hash,
        };
        Ok(())
    }
}

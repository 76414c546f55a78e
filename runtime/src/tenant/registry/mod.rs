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
//!   by the tenants, not by the log;
//! - one tenant's inconsistency is that tenant's problem: an append its
//!   chain refuses is [`RegistryError::ChainMismatch`] (nothing written),
//!   and a tenant whose receipts recovery cannot replay is quarantined
//!   ([`RegistryError::Quarantined`] for its inputs until a restart replays
//!   it); the other tenants keep working.
//!
//! This file holds the registry, its tenants and the shared decision step;
//! `apply.rs` feeds inputs and timers, `views.rs` answers operators and
//! metrics, `recovery.rs` writes checkpoints and recovers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::TenantId;
use crate::clock::Timestamp;
use crate::entitlement::{Entitlement, EntitlementError, EntitlementState};
use crate::fsm::{Event, Governor, Step};
use crate::ledger::{Hash, Head, Ledger, LedgerError};
use crate::receipt::{self, Input, Kind, ReceiptError};
use crate::sku::{ActionId, PolicyPack};

mod apply;
mod recovery;
mod views;

pub use apply::Applied;
pub use recovery::{CheckpointMismatch, RecoveryStats, check_checkpoint};
pub use views::{Admission, InFlightView, TenantView};

/// Number of shards; a power of two.
const SHARDS: usize = 64;
/// Event ids remembered per tenant for dedupe.
const RECENT_IDS: usize = 32;

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
    /// The ledger refused an append because it does not extend the tenant's
    /// chain there: the tenant's state in memory disagrees with the ledger.
    /// Nothing was written; only this tenant is affected.
    #[error("tenant `{tenant}` is out of step with its ledger chain: run `ledger verify`")]
    ChainMismatch {
        /// The tenant.
        tenant: TenantId,
        /// The ledger's refusal.
        #[source]
        source: LedgerError,
    },
    /// Recovery could not replay the tenant's receipts: its inputs are
    /// refused until a restart replays them (the other tenants work).
    #[error("tenant `{tenant}` is quarantined: recovery could not replay its receipts: {reason}")]
    Quarantined {
        /// The tenant.
        tenant: TenantId,
        /// The first receipt that could not be replayed, and why.
        reason: String,
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
    /// Tenants whose receipts recovery could not replay, with why.
    quarantine: Mutex<BTreeMap<TenantId, String>>,
    /// Whether `quarantine` is non-empty (so inputs rarely lock it).
    any_quarantined: AtomicBool,
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
            quarantine: Mutex::new(BTreeMap::new()),
            any_quarantined: AtomicBool::new(false),
        }
    }

    /// Why `tenant` is quarantined, if it is.
    pub fn quarantined(&self, tenant: &TenantId) -> Option<String> {
        if !self.any_quarantined.load(Ordering::Acquire) {
            return None;
        }
        self.quarantine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    /// Quarantines `tenant` (keeping the first reason).
    fn quarantine(&self, tenant: &TenantId, reason: String) {
        self.quarantine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.clone())
            .or_insert(reason);
        self.any_quarantined.store(true, Ordering::Release);
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
}

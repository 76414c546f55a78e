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
//! - decisions are taken at the registry's clock, made monotonic per tenant
//!   (an input never decides before the tenant's last receipt), so neither
//!   a caller's clock nor a server clock stepping back can reorder a chain;
//! - dedupe remembers event ids for a window of decision time (`dedupe.rs`:
//!   signal and entitlement ids in separate namespaces, 128-bit SHA-256
//!   prefixes, a bound per tenant); a duplicate writes no receipt and
//!   returns no ticket;
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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::entitlement::{Entitlement, EntitlementError, EntitlementState};
use crate::fsm::{Event, Governor, State, Step};
use crate::ledger::{Hash, Head, Ledger, LedgerError};
use crate::marketplace;
use crate::receipt::{AccessChange, IdempotencyKey, Input, Kind, ReceiptError};
use crate::sku::PolicyPack;
use crate::tenant::TenantId;

mod apply;
mod dedupe;
mod recovery;
mod shared;
mod views;

pub use apply::Applied;
pub use dedupe::{
    DEFAULT_CAPACITY, DEFAULT_MAX_TOTAL, DEFAULT_WINDOW, DedupeOptions, Remember, Seen,
};
use dedupe::{Recent, id_key};
pub use recovery::{
    CheckpointMismatch, RecoveryStats, check_checkpoint, checkpoint_judge, replay_checkpoint,
};
pub use shared::{DECISION_ATTEMPTS, TIMER_LEASE_MS, replay_states};
pub use views::{Admission, InFlightView, TenantView};

/// Number of shards; a power of two.
const SHARDS: usize = 64;
/// Number of FSM states.
const STATES: usize = State::NAMES.len();

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
    /// A new signal id for a tenant whose dedupe window is full.
    #[error(
        "tenant `{tenant}` holds `{capacity}` event ids inside its dedupe window; retry in `{}` s",
        retry_after.as_secs().max(1)
    )]
    DedupeFull {
        /// The tenant.
        tenant: TenantId,
        /// The bound.
        capacity: usize,
        /// When room comes back.
        retry_after: std::time::Duration,
    },
    /// A new signal id while the service holds as many ids as it may in all
    /// tenants' windows (`--dedupe-max-ids`). Room comes back as ids expire
    /// anywhere, which is not tracked: the retry is a short one.
    #[error(
        "the service holds `{capacity}` event ids in all (its dedupe limit); a new one is refused until some expire; retry in `{}` s",
        retry_after.as_secs().max(1)
    )]
    DedupeTotalFull {
        /// The bound.
        capacity: usize,
        /// When to try again.
        retry_after: std::time::Duration,
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
    /// The checkpoint contradicts the ledger, and so does the older one
    /// the ledger keeps in its place; the log no longer starts at genesis
    /// (its oldest receipts were archived), so no replay can stand in.
    #[error(
        "the checkpoint contradicts the ledger ({rejected}), and so does the one kept at the retention cut ({fallback}): the receipts before the cut are archived, so the states cannot be replayed here; run `ledger verify --archive` to find the damage"
    )]
    NoUsableCheckpoint {
        /// How the latest checkpoint contradicts the ledger.
        rejected: CheckpointMismatch,
        /// How the one kept at the cut does.
        fallback: CheckpointMismatch,
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
    /// The tenant, the action and the deciding receipt's seq: stable across retries.
    pub key: IdempotencyKey,
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
    /// Decision time of the tenant's last receipt (decisions never go back).
    #[serde(with = "crate::clock::millis")]
    pub last_at: Timestamp,
    /// Event ids inside the dedupe window, oldest first.
    pub recent: Vec<Seen>,
    /// The tenant's read tokens: id → SHA-256 of the secret, lowercase hex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, String>,
}

/// The dedupe entry of `input`'s id, decided at `at` (`None`: no id).
fn seen(input: &Input, at: Timestamp) -> Option<Seen> {
    input.id().map(|id| Seen {
        key: id_key(input.id_space(), id),
        at: at.as_millis(),
        entitlement: input.kind() == Kind::Entitlement,
    })
}

/// One tenant in memory.
#[derive(Debug, Clone)]
struct Tenant {
    governor: Governor,
    entitlement: Entitlement,
    head: Head,
    /// Decision time of the last receipt; later decisions never go before it.
    last_at: Timestamp,
    /// Event ids inside the dedupe window.
    recent: Recent,
    /// Which load of the tenant this is (a shared ledger's conflicts
    /// forget only the load they were decided on).
    epoch: u64,
    /// Read tokens: id → SHA-256 of the secret, lowercase hex (boxed, and
    /// only while the tenant has one: few tenants do).
    #[expect(
        clippy::box_collection,
        reason = "the extra allocation is what takes 16 bytes off every tenant without tokens"
    )]
    tokens: Option<Box<BTreeMap<String, String>>>,
}

impl Tenant {
    fn new(pack: &dyn PolicyPack, head: Head) -> Tenant {
        Tenant {
            governor: Governor::new(pack),
            entitlement: Entitlement::new(),
            head,
            last_at: Timestamp::from_millis(i64::MIN),
            recent: Recent::default(),
            epoch: 0,
            tokens: None,
        }
    }

    fn export(&self) -> TenantState {
        TenantState {
            governor: self.governor.clone(),
            entitlement: self.entitlement.clone(),
            seq: self.head.seq,
            hash: self.head.hash,
            last_at: self.last_at,
            recent: self.recent.export(),
            tokens: self.tokens.as_deref().cloned().unwrap_or_default(),
        }
    }

    /// The tenant a checkpoint stored, without its recent ids: the caller
    /// imports those through [`Registry::with_recent`], so the
    /// service-wide id count sees them arrive.
    fn import(state: TenantState) -> Tenant {
        Tenant {
            governor: state.governor,
            entitlement: state.entitlement,
            head: Head {
                seq: state.seq,
                hash: state.hash,
            },
            last_at: state.last_at,
            recent: Recent::default(),
            epoch: 0,
            tokens: (!state.tokens.is_empty()).then(|| Box::new(state.tokens)),
        }
    }

    /// Approximate bytes held (struct, its box's pointer, id, heap).
    fn bytes(&self, id: &TenantId) -> usize {
        size_of::<Tenant>()
            + size_of::<Box<Tenant>>()
            + size_of::<TenantId>()
            + id.as_str().len()
            + 16
            + self.governor.heap_bytes()
            + self.recent.heap_bytes()
            + self
                .tokens
                .as_ref()
                .map_or(0, |t| size_of::<BTreeMap<String, String>>() + t.len() * 128)
    }

    /// Takes an access receipt's change to the tenant's read tokens.
    fn note_access(&mut self, input: &Input) {
        if let Input::Access {
            change,
            token,
            digest,
        } = input
        {
            match (change, digest) {
                (AccessChange::Issue, Some(digest)) => {
                    let tokens = self.tokens.get_or_insert_default();
                    tokens.insert(token.clone(), digest.clone());
                }
                _ => {
                    if let Some(tokens) = &mut self.tokens {
                        tokens.remove(token);
                        if tokens.is_empty() {
                            self.tokens = None;
                        }
                    }
                }
            }
        }
    }
}

/// What an input decides, before anything is written.
struct Decided {
    /// The governor after the step (unchanged if no step ran).
    governor: Governor,
    /// The entitlement after a valid entitlement event (`None`: unchanged;
    /// only entitlement inputs clone it).
    entitlement: Option<Entitlement>,
    /// Entitlement `(from, to)` for entitlement events.
    transition: Option<(EntitlementState, EntitlementState)>,
    /// The step, if one ran.
    step: Option<Step>,
    /// Why an entitlement event was refused.
    refused: Option<EntitlementError>,
}

/// A shard's tenants. Boxed: the map's slots (a quarter or more of them
/// empty at any size) then hold a pointer, not a whole tenant.
type Shard = HashMap<TenantId, Box<Tenant>>;

/// The per-tenant governors of one SKU, over one ledger.
pub struct Registry {
    pack: &'static dyn PolicyPack,
    ledger: Arc<dyn Ledger>,
    dedupe: DedupeOptions,
    /// Signal ids held in every tenant's dedupe window (bounded by
    /// [`DedupeOptions::max_total`]).
    dedupe_ids: AtomicUsize,
    /// State changes written through this registry, `[from][to]` by [`State::index`].
    transitions: [[AtomicU64; STATES]; STATES],
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
    /// Loads of tenants so far (each cached tenant's `epoch`).
    epochs: AtomicU64,
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
    /// An empty registry with the default dedupe window; call
    /// [`Registry::recover`] before serving.
    pub fn new(pack: &'static dyn PolicyPack, ledger: Arc<dyn Ledger>) -> Registry {
        Registry::with_dedupe(pack, ledger, DedupeOptions::default())
    }

    /// An empty registry remembering event ids as `dedupe` says.
    pub fn with_dedupe(
        pack: &'static dyn PolicyPack,
        ledger: Arc<dyn Ledger>,
        dedupe: DedupeOptions,
    ) -> Registry {
        Registry {
            pack,
            ledger,
            dedupe,
            dedupe_ids: AtomicUsize::new(0),
            transitions: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            count: AtomicUsize::new(0),
            appended: AtomicU64::new(0),
            checkpointing: Mutex::new(()),
            quarantine: Mutex::new(BTreeMap::new()),
            any_quarantined: AtomicBool::new(false),
            epochs: AtomicU64::new(1),
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

    /// How event ids are deduplicated.
    pub fn dedupe(&self) -> &DedupeOptions {
        &self.dedupe
    }

    /// Signal ids held in all tenants' dedupe windows.
    pub fn dedupe_ids(&self) -> usize {
        self.dedupe_ids.load(Ordering::Relaxed)
    }

    /// Runs `change` on `t`'s dedupe ids and follows the change of its
    /// signal id count in the service-wide total (every change of a
    /// tenant's ids goes through here, so the total cannot drift).
    fn with_recent<R>(&self, t: &mut Tenant, change: impl FnOnce(&mut Recent) -> R) -> R {
        let before = t.recent.signal_ids();
        let out = change(&mut t.recent);
        let after = t.recent.signal_ids();
        if after > before {
            self.dedupe_ids.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.dedupe_ids.fetch_sub(before - after, Ordering::Relaxed);
        }
        out
    }

    /// State changes written through this registry so far, `[from][to]`
    /// indexed by [`State::index`] (every kind of receipt: signals, timers,
    /// action results, entitlement events, resets; not recovery).
    pub fn transitions(&self) -> [[u64; STATES]; STATES] {
        self.transitions
            .each_ref()
            .map(|row| row.each_ref().map(|n| n.load(Ordering::Relaxed)))
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
            entitlement: None,
            transition: None,
            step: None,
            refused: None,
        };
        let event = match input {
            Input::Signal { signal, value, .. } => Some(Event::Signal {
                signal: *signal,
                value: *value,
            }),
            Input::ActionResult { key, ok, .. } => {
                // A key of another tenant is stale here (seq 0 matches no flight).
                let decided = if key.tenant == *tenant { key.seq } else { 0 };
                Some(Event::ActionResult {
                    decided,
                    action: key.action,
                    ok: *ok,
                })
            }
            Input::Reset { .. } => Some(Event::Reset),
            Input::Entitlement {
                event,
                plan,
                marketplace,
                ..
            } => {
                let from = t.entitlement.state();
                let mut entitlement = t.entitlement.clone();
                let moved = match marketplace.as_deref() {
                    // Google Cloud Marketplace: follow the state as read.
                    Some(notice) => entitlement.sync(
                        notice.entitlement.as_deref(),
                        notice.state.as_deref().and_then(marketplace::state_of),
                        *event,
                    ),
                    None => entitlement.apply(*event),
                };
                let active = entitlement.is_active();
                decided.entitlement = Some(entitlement);
                match moved {
                    Ok(to) => {
                        decided.transition = Some((from, to));
                        Some(Event::Entitlement {
                            active,
                            profile: plan.filter(|_| event.puts_plan_in_force()),
                        })
                    }
                    Err(err) => {
                        decided.transition = Some((from, from));
                        decided.refused = Some(err);
                        None
                    }
                }
            }
            Input::Rejected { .. } | Input::Procurement { .. } | Input::Access { .. } => None,
        };
        if let Some(event) = event {
            decided.step = decided.governor.step(self.pack, event, at, seq);
        }
        decided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tenant in memory is one of these (boxed, in its shard's map):
    /// the 100k-idle-tenant figure of docs/BENCHMARKS.md holds only while
    /// it stays this small. Rare parts (entitlement ids, read tokens, the
    /// in-flight and applied lists) live behind one pointer each.
    #[test]
    fn a_tenant_in_memory_stays_small() {
        assert!(
            size_of::<Tenant>() <= 216,
            "a tenant grew to {} bytes",
            size_of::<Tenant>()
        );
    }
}

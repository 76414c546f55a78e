//! Checkpoints and recovery: [`Registry::checkpoint`] stores every tenant's
//! state; [`Registry::recover`] checks it against the ledger, loads it and
//! replays the records after it, or replays the whole log when the
//! checkpoint contradicts the ledger or the pack.
//!
//! A checkpoint is a cache, not evidence: anyone who can write the ledger
//! directory can rewrite it (its CRC only catches accidents). What recovery
//! can check without replaying is checked: every tenant's (seq, hash)
//! against the ledger's own record at the mark, the tenant set against the
//! ledger's, and every id against the pack.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use super::{Recent, Registry, RegistryError, Shard, Tenant, TenantState};
use crate::fsm::Event;
use crate::ledger::memory::MemoryLedger;
use crate::ledger::{
    CheckpointProblem, Head, LedgerError, Record, Recovered, StoredCheckpoint, VerifyOptions,
    VerifyReport,
};
use crate::receipt::{self, Carried, ReceiptError};
use crate::report::error_chain;
use crate::sku::PolicyPack;
use crate::tenant::TenantId;

/// Checkpoint blob format version (2: dedupe ids carry their decision
/// time, tenants their last decision time).
const CHECKPOINT_VERSION: u32 = 2;

/// How a checkpoint contradicts the ledger or the policy pack: the first
/// contradiction, in tenant id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointMismatch {
    /// The tenant it is wrong about (`None`: the blob as a whole, e.g. unreadable).
    pub tenant: Option<TenantId>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for CheckpointMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(tenant) => write!(f, "tenant `{tenant}`: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl CheckpointMismatch {
    fn tenant(tenant: &TenantId, reason: impl Into<String>) -> CheckpointMismatch {
        CheckpointMismatch {
            tenant: Some(tenant.clone()),
            reason: reason.into(),
        }
    }

    fn blob(reason: impl Into<String>) -> CheckpointMismatch {
        CheckpointMismatch {
            tenant: None,
            reason: reason.into(),
        }
    }
}

impl From<CheckpointMismatch> for CheckpointProblem {
    fn from(mismatch: CheckpointMismatch) -> CheckpointProblem {
        CheckpointProblem {
            tenant: mismatch
                .tenant
                .as_ref()
                .map_or_else(String::new, ToString::to_string),
            reason: mismatch.reason,
        }
    }
}

/// Counts from [`Registry::recover`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Why the checkpoint was not used, when it contradicted the ledger or
    /// the pack (its first mismatch): every record was replayed from the
    /// start of the log instead, or, when the oldest receipts were
    /// archived, from the checkpoint kept at the retention cut (then
    /// `from_checkpoint` counts its tenants). `None` when it was used (or
    /// there was none).
    pub checkpoint_rejected: Option<CheckpointMismatch>,
    /// Tenants quarantined because one of their receipts could not be
    /// replayed (in the order found); see [`Registry::quarantined`].
    pub quarantined: Vec<TenantId>,
    /// Records of quarantined tenants that were not replayed, the first
    /// failing one of each included (never skipped silently).
    pub unreplayed: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    v: u32,
    sku: String,
    spec_sha256: String,
    tenants: Vec<(TenantId, TenantState)>,
}

impl Registry {
    /// Serializes every tenant's state and stores it as the ledger's
    /// checkpoint; returns the number of tenants.
    ///
    /// Appends wait only while the ledger's mark is taken and the states are
    /// copied: every shard is locked for the mark (appends happen under shard
    /// locks, so the copy reflects exactly the records before it) and each is
    /// released as soon as its tenants are copied. Sorting, serializing and the
    /// ledger's write and fsyncs run with ingest flowing.
    ///
    /// On a shared ledger every tenant's state is stored with its receipts:
    /// there is nothing to checkpoint (0).
    pub fn checkpoint(&self) -> Result<usize, RegistryError> {
        if self.ledger.shared().is_some() {
            return Ok(0);
        }
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
            // A tenant whose first append failed has no receipt: nothing to
            // recover, and the ledger would not vouch for it.
            tenants.extend(
                shard
                    .iter()
                    .filter(|(_, t)| t.head.seq > 0)
                    .map(|(id, t)| (id.clone(), t.export())),
            );
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
    ///
    /// The checkpoint is checked first (see [`check_checkpoint`]); if it
    /// contradicts the ledger or the pack, it is not used: every record is
    /// replayed from the start of the log (or, when the oldest receipts
    /// were archived, from the checkpoint kept at the retention cut, see
    /// [`crate::ledger::Ledger::recover_past_checkpoint`]), a warning names the first
    /// mismatch, and [`RecoveryStats::checkpoint_rejected`] holds it. When
    /// the kept checkpoint contradicts the ledger too, recovery refuses
    /// ([`RegistryError::NoUsableCheckpoint`]) instead of replaying a
    /// history that lacks its start. A checkpoint of another SKU or spec
    /// is refused ([`RegistryError::CheckpointSku`]): that is the wrong
    /// ledger.
    ///
    /// A tenant whose receipt cannot be replayed is quarantined (see
    /// [`RecoveryStats::quarantined`]); the ledger's own errors (damage it
    /// found) still fail recovery.
    pub fn recover(&self) -> Result<RecoveryStats, RegistryError> {
        let mut stats = RecoveryStats::default();
        if self.ledger.shared().is_some() {
            // Tenants load when first needed, from their stored states.
            return Ok(stats);
        }
        if let Some(mismatch) = self.recover_with(&mut stats, false)? {
            tracing::warn!(
                mismatch = %mismatch,
                "checkpoint contradicts the ledger: ignoring it and replaying from an older checkpoint or from the start of the log"
            );
            // Nothing was loaded: the blob is checked whole before any tenant is.
            stats = RecoveryStats {
                checkpoint_rejected: Some(mismatch.clone()),
                ..RecoveryStats::default()
            };
            if let Some(fallback) = self.recover_with(&mut stats, true)? {
                return Err(RegistryError::NoUsableCheckpoint {
                    rejected: mismatch,
                    fallback,
                });
            }
        }
        stats.tenants = self.len();
        Ok(stats)
    }

    /// One pass of [`Registry::recover`]: the ledger's recovery (`past`:
    /// the one that sets the latest checkpoint aside), loading a
    /// checkpoint that holds and replaying the records after it.
    /// `Ok(Some(_))`: the checkpoint visited contradicts the ledger, and
    /// nothing was loaded.
    fn recover_with(
        &self,
        stats: &mut RecoveryStats,
        past: bool,
    ) -> Result<Option<CheckpointMismatch>, RegistryError> {
        // The ledger's visitor speaks `LedgerError`; keep our own error here.
        let mut failure = None;
        let mut rejected = None;
        let mut visit = |item: Recovered<'_>| {
            let outcome = match item {
                Recovered::Checkpoint(stored) => match self.load_checkpoint(stored, stats) {
                    Ok(Err(mismatch)) => {
                        rejected = Some(mismatch);
                        return Err(LedgerError::Interrupted);
                    }
                    Ok(Ok(())) => Ok(()),
                    Err(error) => Err(error),
                },
                Recovered::Record(record) => self.replay(record, stats),
            };
            outcome.map_err(|error| {
                failure = Some(error);
                LedgerError::Interrupted
            })
        };
        let result = if past {
            self.ledger.recover_past_checkpoint(&mut visit)
        } else {
            self.ledger.recover(&mut visit)
        };
        if let Some(error) = failure {
            return Err(error);
        }
        if rejected.is_some() {
            return Ok(rejected);
        }
        result.map_err(RegistryError::Ledger)?;
        Ok(None)
    }

    /// Verifies every chain of the ledger and judges its checkpoint against
    /// them (see [`check_checkpoint`]); stops early once `cancel` is set.
    pub fn verify(&self, cancel: Option<&AtomicBool>) -> Result<VerifyReport, LedgerError> {
        let pack = self.pack;
        let judge = checkpoint_judge(pack);
        self.ledger.verify_with(&VerifyOptions {
            cancel,
            checkpoint: Some(&judge),
            sku: Some(pack.sku().id),
        })
    }

    /// Checks the checkpoint and, if it holds, loads its tenants (before any
    /// record is replayed); `Ok(Err(_))`: it does not hold, nothing loaded.
    fn load_checkpoint(
        &self,
        stored: &StoredCheckpoint,
        stats: &mut RecoveryStats,
    ) -> Result<Result<(), CheckpointMismatch>, RegistryError> {
        let checkpoint = match decode(self.pack, &stored.blob)? {
            Ok(checkpoint) => checkpoint,
            Err(mismatch) => return Ok(Err(mismatch)),
        };
        if let Err(mismatch) = check(self.pack, &checkpoint, &stored.heads) {
            return Ok(Err(mismatch));
        }
        stats.from_checkpoint = checkpoint.tenants.len();
        for (id, mut state) in checkpoint.tenants {
            let recent = std::mem::take(&mut state.recent);
            let mut tenant = Tenant::import(state);
            self.with_recent(&mut tenant, |r| *r = Recent::import(recent, &self.dedupe));
            let mut shard = self.shard(&id);
            if shard.insert(id, Box::new(tenant)).is_none() {
                self.count.fetch_add(1, Ordering::AcqRel);
            }
        }
        Ok(Ok(()))
    }

    /// Steps one recovered record into its tenant (skipped if the
    /// checkpoint already covers it). A record that cannot be replayed
    /// quarantines its tenant (the log itself is intact: the ledger checked
    /// every frame and chain); that tenant's later records are counted as
    /// unreplayed, and the other tenants recover normally.
    pub(super) fn replay(
        &self,
        record: &Record,
        stats: &mut RecoveryStats,
    ) -> Result<(), RegistryError> {
        stats.records += 1;
        if self.quarantined(&record.tenant).is_some() {
            stats.unreplayed += 1;
            return Ok(());
        }
        match self.step_record(record, stats) {
            // Not one tenant's damage: the wrong ledger. Refused whole.
            Err(
                error @ RegistryError::Receipt {
                    source: ReceiptError::OtherSku { .. },
                    ..
                },
            ) => Err(error),
            Err(error @ (RegistryError::Receipt { .. } | RegistryError::Gap { .. })) => {
                let reason = error_chain(&error);
                tracing::warn!(
                    tenant = %record.tenant,
                    seq = record.seq,
                    error = %reason,
                    "quarantining a tenant whose receipt cannot be replayed: its inputs are refused until a restart replays it; run `ledger verify`"
                );
                self.quarantine(&record.tenant, reason);
                stats.quarantined.push(record.tenant.clone());
                stats.unreplayed += 1;
                Ok(())
            }
            other => other,
        }
    }

    /// [`Registry::replay`] of a record whose tenant is not quarantined.
    fn step_record(&self, record: &Record, stats: &mut RecoveryStats) -> Result<(), RegistryError> {
        let mut shard = self.shard(&record.tenant);
        let t = match shard.get_mut(&record.tenant) {
            Some(t) => t,
            None => {
                self.count.fetch_add(1, Ordering::AcqRel);
                shard
                    .entry(record.tenant.clone())
                    .or_insert_with(|| Box::new(Tenant::new(self.pack, Head::EMPTY)))
            }
        };
        self.step_into(t, record, stats)
    }

    /// Steps `record` into its tenant `t` (skipped if `t` is already past it).
    pub(super) fn step_into(
        &self,
        t: &mut Tenant,
        record: &Record,
        stats: &mut RecoveryStats,
    ) -> Result<(), RegistryError> {
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
                t.governor.step(pack, Event::Timer, parsed.at, parsed.seq);
                Some(t.governor.state())
            }
            Carried::Input(input) => {
                let decided = self.decide(t, &parsed.tenant, &input, parsed.at, parsed.seq);
                t.governor = decided.governor;
                if let Some(entitlement) = decided.entitlement {
                    t.entitlement = entitlement;
                }
                t.note_access(&input);
                if let Some(seen) = super::seen(&input, parsed.at) {
                    self.with_recent(t, |recent| recent.insert(seen, &self.dedupe));
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
        // As `commit` does: the last receipt's decision time (after a clock
        // jump that may be earlier than an older receipt's).
        t.last_at = parsed.at;
        Ok(())
    }
}

/// Decodes a checkpoint blob: an error for another SKU or spec (the wrong
/// ledger), a mismatch for a blob that does not decode.
fn decode(
    pack: &dyn PolicyPack,
    blob: &[u8],
) -> Result<Result<Checkpoint, CheckpointMismatch>, RegistryError> {
    let checkpoint: Checkpoint = match serde_json::from_slice(blob) {
        Ok(checkpoint) => checkpoint,
        Err(error) => {
            return Ok(Err(CheckpointMismatch::blob(format!(
                "checkpoint blob does not decode: {error}"
            ))));
        }
    };
    let sku = pack.sku();
    if checkpoint.sku != sku.id || checkpoint.spec_sha256 != sku.spec_sha256 {
        return Err(RegistryError::CheckpointSku {
            expected: format!("{} ({})", sku.id, sku.spec_sha256),
            found: format!("{} ({})", checkpoint.sku, checkpoint.spec_sha256),
        });
    }
    if checkpoint.v != CHECKPOINT_VERSION {
        return Ok(Err(CheckpointMismatch::blob(format!(
            "checkpoint blob version `{}` is not `{CHECKPOINT_VERSION}`",
            checkpoint.v
        ))));
    }
    Ok(Ok(checkpoint))
}

/// Checks a decoded checkpoint against the ledger's `heads` at its mark and
/// against the pack: the same tenants, each with the ledger's (seq, hash),
/// every id in range. Returns the first mismatch in tenant id order.
fn check(
    pack: &dyn PolicyPack,
    checkpoint: &Checkpoint,
    heads: &BTreeMap<TenantId, Head>,
) -> Result<(), CheckpointMismatch> {
    let missing = |tenant: &TenantId, head: &Head| {
        CheckpointMismatch::tenant(
            tenant,
            format!(
                "the ledger has its receipts up to seq `{}` before the mark, the checkpoint lacks it",
                head.seq
            ),
        )
    };
    let mut log = heads.iter().peekable();
    let mut previous: Option<&TenantId> = None;
    for (tenant, state) in &checkpoint.tenants {
        if previous.is_some_and(|p| p >= tenant) {
            return Err(CheckpointMismatch::tenant(
                tenant,
                "listed out of order or twice in the checkpoint",
            ));
        }
        previous = Some(tenant);
        // Ledger tenants before this one are missing from the checkpoint.
        if let Some((id, head)) = log.next_if(|(id, _)| *id < tenant) {
            return Err(missing(id, head));
        }
        let Some((_, head)) = log.next_if(|(id, _)| *id == tenant) else {
            return Err(CheckpointMismatch::tenant(
                tenant,
                format!(
                    "the checkpoint has it at seq `{}`, the ledger has no receipt of it before the mark",
                    state.seq
                ),
            ));
        };
        if (state.seq, state.hash) != (head.seq, head.hash) {
            return Err(CheckpointMismatch::tenant(
                tenant,
                format!(
                    "the checkpoint has its head at seq `{}` hash `{}`, the ledger at seq `{}` hash `{}`",
                    state.seq,
                    hex::encode(state.hash),
                    head.seq,
                    hex::encode(head.hash)
                ),
            ));
        }
        state
            .governor
            .check(pack, state.seq)
            .map_err(|reason| CheckpointMismatch::tenant(tenant, reason))?;
    }
    match log.next() {
        Some((id, head)) => Err(missing(id, head)),
        None => Ok(()),
    }
}

/// [`check_checkpoint`] as a judge for [`VerifyOptions::checkpoint`]: the
/// problem it finds, if any.
pub fn checkpoint_judge(
    pack: &dyn PolicyPack,
) -> impl Fn(&StoredCheckpoint) -> Option<CheckpointProblem> + '_ {
    move |stored| {
        check_checkpoint(pack, stored)
            .err()
            .map(CheckpointProblem::from)
    }
}

/// Checks a stored checkpoint against the ledger's heads at its mark and
/// against `pack`, as [`Registry::recover`] does before using it (a blob of
/// another SKU or spec is a mismatch here). For `ledger verify`.
pub fn check_checkpoint(
    pack: &dyn PolicyPack,
    stored: &StoredCheckpoint,
) -> Result<(), CheckpointMismatch> {
    let checkpoint = match decode(pack, &stored.blob) {
        Ok(Ok(checkpoint)) => checkpoint,
        Ok(Err(mismatch)) => return Err(mismatch),
        Err(error) => return Err(CheckpointMismatch::blob(error.to_string())),
    };
    check(pack, &checkpoint, &stored.heads)
}

/// Replays the records before a stored checkpoint's mark through a scratch
/// registry and compares each tenant's recomputed governor and entitlement
/// with the checkpoint's: the check [`check_checkpoint`] cannot make, for a
/// blob that keeps every head and id valid but rewrites a tenant's state
/// (say, its entitlement to `cancelled`). It costs a full replay of the
/// log up to the mark, so `ledger verify` runs it and a restart does not.
///
/// `scan` visits the ledger's records in append order from the start; the
/// replay stops at the mark. `Ok(Err(_))` names the first tenant (in id
/// order) whose state the receipts contradict.
pub fn replay_checkpoint(
    pack: &'static dyn PolicyPack,
    stored: &StoredCheckpoint,
    scan: impl FnOnce(&mut dyn FnMut(&Record) -> Result<(), LedgerError>) -> Result<(), LedgerError>,
) -> Result<Result<(), CheckpointMismatch>, RegistryError> {
    let checkpoint = match decode(pack, &stored.blob)? {
        Ok(checkpoint) => checkpoint,
        Err(mismatch) => return Ok(Err(mismatch)),
    };
    // Every id any receipt carries is kept (whatever window or capacity the
    // service ran with), so a remembered id the receipts never carried is
    // a planted one.
    let keep_all = super::DedupeOptions {
        window: std::time::Duration::from_secs(100 * 365 * 86_400),
        capacity: usize::MAX,
        max_total: usize::MAX,
    };
    let scratch = Registry::with_dedupe(pack, std::sync::Arc::new(MemoryLedger::new()), keep_all);
    let mut stats = RecoveryStats::default();
    let mut seen = 0u64;
    let mut failure = None;
    let scanned = scan(&mut |record| {
        if seen == stored.records {
            return Err(LedgerError::Interrupted);
        }
        seen += 1;
        scratch.replay(record, &mut stats).map_err(|error| {
            failure = Some(error);
            LedgerError::Interrupted
        })
    });
    if let Some(error) = failure {
        return Err(error);
    }
    match scanned {
        Ok(()) | Err(LedgerError::Interrupted) => {}
        Err(error) => return Err(RegistryError::Ledger(error)),
    }
    let replayed = scratch.states();
    for (tenant, state) in &checkpoint.tenants {
        if scratch.quarantined(tenant).is_some() {
            continue;
        }
        let Some(truth) = replayed.get(tenant) else {
            return Ok(Err(CheckpointMismatch::tenant(
                tenant,
                "the receipts before the mark never create it",
            )));
        };
        if truth.governor != state.governor {
            return Ok(Err(CheckpointMismatch::tenant(
                tenant,
                format!(
                    "its governor's {} is not what its receipts replay to (state `{}` there, `{}` replayed)",
                    state
                        .governor
                        .difference(&truth.governor)
                        .unwrap_or("state"),
                    state.governor.state().name(),
                    truth.governor.state().name()
                ),
            )));
        }
        let carried: std::collections::HashSet<(super::dedupe::IdKey, bool)> = truth
            .recent
            .iter()
            .map(|seen| (seen.key, seen.entitlement))
            .collect();
        if let Some(planted) = state
            .recent
            .iter()
            .find(|seen| !carried.contains(&(seen.key, seen.entitlement)))
        {
            return Ok(Err(CheckpointMismatch::tenant(
                tenant,
                format!(
                    "it remembers an event id (decided at `{}`) that none of its receipts carries",
                    crate::clock::Timestamp::from_millis(planted.at)
                ),
            )));
        }
        if truth.entitlement != state.entitlement {
            return Ok(Err(CheckpointMismatch::tenant(
                tenant,
                format!(
                    "its entitlement's {} is not what its receipts replay to (`{}` there, `{}` replayed)",
                    state
                        .entitlement
                        .difference(&truth.entitlement)
                        .unwrap_or("state"),
                    state.entitlement.state().as_str(),
                    truth.entitlement.state().as_str()
                ),
            )));
        }
    }
    Ok(Ok(()))
}

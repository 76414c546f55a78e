//! Checkpoints and recovery: [`Registry::checkpoint`] stores every tenant's
//! state; [`Registry::recover`] loads it and replays the records after it.

use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use super::{Registry, RegistryError, Shard, Tenant, TenantState};
use crate::fsm::Event;
use crate::ledger::{Head, LedgerError, Record, Recovered};
use crate::receipt::{self, Carried, ReceiptError};
use crate::tenant::TenantId;

/// Checkpoint blob format version (2: dedupe ids carry their decision
/// time, tenants their last decision time).
const CHECKPOINT_VERSION: u32 = 2;

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
        /// The version alone, read before the rest (whose shape depends on it).
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let version: Version = serde_json::from_slice(blob).map_err(RegistryError::Checkpoint)?;
        if version.v != CHECKPOINT_VERSION {
            return Err(RegistryError::CheckpointVersion {
                found: version.v,
                expected: CHECKPOINT_VERSION,
            });
        }
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
            if shard
                .insert(id, Tenant::import(state, &self.dedupe))
                .is_none()
            {
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
                t.remember(&input, parsed.at, &self.dedupe);
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
        t.last_at = t.last_at.max(parsed.at);
        Ok(())
    }
}

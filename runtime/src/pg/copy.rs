//! `ledger copy`: every receipt from one ledger into an empty one (a file
//! ledger directory or a PostgreSQL database, either way round), so an
//! audit trail survives a move from one machine to many and back.
//!
//! Each receipt is checked on arrival: the source's chains are verified as
//! they stream, the destination recomputes every hash (which must equal the
//! source's), and the destination is verified in full at the end. The
//! receipts' bytes are copied as they are, so a copy and its copy back are
//! byte-identical. Checkpoints are not copied: the destination's first open
//! replays its log and the governor writes a new one.

use std::collections::HashMap;
use std::sync::Arc;

use super::PgLedger;
use crate::ledger::file;
use crate::ledger::{Entry, GENESIS, Hash, Ledger, LedgerError, Ticket, Verifier};
use crate::store::Location;
use crate::tenant::TenantId;

/// What a copy moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Tenant chains.
    pub tenants: usize,
    /// Receipts.
    pub receipts: u64,
}

/// Why a copy stopped; the destination then holds a verified prefix of the
/// source (whole receipts, each chain linked) and should be dropped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading or writing a ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The destination already holds receipts.
    #[error("`{0}` already holds receipts: copy into an empty ledger")]
    NotEmpty(String),
    /// The source does not verify.
    #[error("the source does not verify at tenant `{tenant}` seq {seq}: {reason}")]
    Tampered {
        /// The tenant.
        tenant: String,
        /// The first bad seq.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// The destination does not hold what was copied.
    #[error("the copy does not verify: {0}")]
    Mismatch(String),
}

/// Receipts appended between two waits for durability: bounds what is held
/// in memory when the destination commits slower than the source reads.
const IN_FLIGHT: u64 = 8192;

/// Copies every receipt of `from` into the empty ledger `to`.
pub fn copy(from: &Location, to: &Location) -> Result<Copied, CopyError> {
    let destination: Arc<dyn Ledger> = to.open(&mut |_| {})?;
    if destination.mark()?.records() > 0 {
        return Err(CopyError::NotEmpty(to.display()));
    }
    let mut verifier = Verifier::new();
    let mut heads: HashMap<TenantId, Hash> = HashMap::new();
    let mut waiting: Option<Ticket> = None;
    let mut failure: Option<CopyError> = None;
    let mut visit = |record: &crate::ledger::Record| -> Result<(), LedgerError> {
        verifier.feed(record);
        if let Some(bad) = verifier.first_bad() {
            failure = Some(CopyError::Tampered {
                tenant: bad.tenant.clone(),
                seq: bad.seq,
                reason: bad.reason.clone(),
            });
            return Err(LedgerError::Interrupted);
        }
        let prev = heads.get(&record.tenant).copied().unwrap_or(GENESIS);
        let appended = destination.append(Entry {
            tenant: record.tenant.clone(),
            seq: record.seq,
            prev,
            bytes: record.bytes.to_vec(),
        })?;
        if appended.hash != record.hash {
            failure = Some(CopyError::Mismatch(format!(
                "tenant `{}` seq {} hashes differently in the destination",
                record.tenant, record.seq
            )));
            return Err(LedgerError::Interrupted);
        }
        heads.insert(record.tenant.clone(), appended.hash);
        if verifier.receipts().is_multiple_of(IN_FLIGHT) {
            if let Some(ticket) = waiting.take() {
                ticket.wait()?;
            }
            waiting = Some(appended.ticket);
        }
        Ok(())
    };
    let scanned = match from {
        Location::Dir(dir) => file::scan_dir(dir, &mut visit),
        Location::Database(url) => PgLedger::open_read_only(url)?.scan(&mut visit),
    };
    if let Some(failure) = failure {
        return Err(failure);
    }
    scanned?;
    destination.flush()?;
    let source = verifier.report();
    let copied = destination.verify()?;
    if let Some(bad) = copied.first_bad {
        return Err(CopyError::Mismatch(format!(
            "tenant `{}` seq {}: {}",
            bad.tenant, bad.seq, bad.reason
        )));
    }
    if (copied.receipts, copied.tenants) != (source.receipts, source.tenants) {
        return Err(CopyError::Mismatch(format!(
            "{} receipts in {} chains read, {} in {} stored",
            source.receipts, source.tenants, copied.receipts, copied.tenants
        )));
    }
    Ok(Copied {
        tenants: copied.tenants,
        receipts: copied.receipts,
    })
}

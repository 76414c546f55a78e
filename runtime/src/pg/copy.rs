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

use std::path::Path;

use super::{PgLedger, PgOptions};
use crate::ledger::file::{self, FileLedger, FileOptions};
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
    /// No source there.
    #[error("no ledger at `{0}`")]
    NoSource(String),
    /// The destination folder is inside the source's.
    #[error("`{0}` is inside the source ledger's folder: copy to a folder of its own")]
    InsideSource(String),
    /// The destination folder holds files, but no ledger.
    #[error("`{0}` holds files but no ledger: copy into a new or empty folder")]
    NotALedger(String),
    /// The source and the destination are one ledger.
    #[error("`{0}` is both the source and the destination")]
    SameLedger(String),
    /// The source's oldest segments (or partitions) are archived: only its
    /// local tail is here.
    #[error(
        "`{0}` holds only the receipts after its archived segments or partitions (it has an anchor): copy a ledger whose whole history is local"
    )]
    Archived(String),
    /// Stopped after writing to the destination.
    #[error(
        "copy stopped after {copied} receipts: `{destination}` holds only that prefix; remove it (the directory, or the schema's ggen_ tables) before copying again"
    )]
    Partial {
        /// The destination, without credentials.
        destination: String,
        /// Receipts appended to it.
        copied: u64,
        /// Why it stopped.
        #[source]
        cause: Box<CopyError>,
    },
}

/// Receipts appended between two waits for durability: bounds what is held
/// in memory when the destination commits slower than the source reads.
const IN_FLIGHT: u64 = 8192;

/// Copies every receipt of `from` into the empty ledger `to`.
pub fn copy(from: &Location, to: &Location) -> Result<Copied, CopyError> {
    if from == to {
        return Err(CopyError::SameLedger(from.display()));
    }
    // The source first: nothing is created when it cannot be read. A
    // database is verified whole before anything is copied, since a chain
    // whose last receipts were deleted still links as it streams; only its
    // head rows and positions tell.
    let source = match from {
        Location::Dir(dir) if !dir.is_dir() => return Err(CopyError::NoSource(from.display())),
        Location::Dir(dir) if file::read_anchor(dir)?.is_some() => {
            return Err(CopyError::Archived(from.display()));
        }
        Location::Dir(dir) => Source::Dir(dir),
        Location::Database(url) => {
            let ledger = PgLedger::open_read_only(url)?;
            if ledger.anchor()?.is_some() {
                return Err(CopyError::Archived(from.display()));
            }
            if let Some(bad) = ledger.verify()?.first_bad {
                return Err(CopyError::Tampered {
                    tenant: bad.tenant,
                    seq: bad.seq,
                    reason: bad.reason,
                });
            }
            Source::Database(Box::new(ledger))
        }
    };
    if let (Location::Dir(source), Location::Dir(dir)) = (from, to) {
        check_destination_dir(source, dir, &to.display())?;
    }
    let destination = match to {
        Location::Dir(dir) => Destination::Dir(FileLedger::open(dir, FileOptions::default())?, dir),
        Location::Database(url) => {
            Destination::Database(Box::new(PgLedger::open(url, PgOptions::default())?))
        }
    };
    let ledger = destination.ledger();
    if ledger.mark()?.records() > 0 {
        return Err(CopyError::NotEmpty(to.display()));
    }
    // Marked unfinished until the copy verifies: a copy cut short (a
    // failure, or kill -9) is refused by a start and reported by verify,
    // never taken for the whole history.
    destination.mark(Some(&from.display()))?;
    let copied = into(&source, ledger).map_err(|cause| {
        match ledger.mark().map_or(0, |mark| mark.records()) {
            0 => cause,
            copied => CopyError::Partial {
                destination: to.display(),
                copied,
                cause: Box::new(cause),
            },
        }
    })?;
    destination.mark(None)?;
    Ok(copied)
}

/// Refuses a destination folder inside the source's (the copy would land
/// in the ledger it reads), and one that holds files but no ledger
/// (another program's folder, whose files a ledger must not mix with).
fn check_destination_dir(source: &Path, dir: &Path, name: &str) -> Result<(), CopyError> {
    let canonical = |path: &Path| fs_err::canonicalize(path).ok();
    // The destination may not exist yet: its nearest existing ancestor says where it lands.
    let landing = dir.ancestors().find_map(canonical);
    if let (Some(source), Some(landing)) = (canonical(source), landing)
        && landing.starts_with(&source)
    {
        return Err(CopyError::InsideSource(name.to_owned()));
    }
    if dir.is_dir()
        && fs_err::read_dir(dir)
            .map_err(|source| LedgerError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .next()
            .is_some()
        && !crate::ledger::inspect::is_ledger_dir(dir)?
    {
        return Err(CopyError::NotALedger(name.to_owned()));
    }
    Ok(())
}

/// The destination, open for writing.
enum Destination<'a> {
    Dir(FileLedger, &'a Path),
    Database(Box<PgLedger>),
}

impl Destination<'_> {
    fn ledger(&self) -> &dyn Ledger {
        match self {
            Destination::Dir(ledger, _) => ledger,
            Destination::Database(ledger) => &**ledger,
        }
    }

    /// Marks it an unfinished copy of `source`, or (`None`) finished; the
    /// mark is durable before the first receipt is written and after the
    /// last is verified.
    fn mark(&self, source: Option<&str>) -> Result<(), LedgerError> {
        match self {
            Destination::Database(ledger) => ledger.mark_copy(source),
            Destination::Dir(_, dir) => {
                let path = dir.join(file::COPYING_FILE);
                let io = |source| LedgerError::Io {
                    path: path.clone(),
                    source,
                };
                match source {
                    Some(source) => {
                        let marker = fs_err::File::create(&path).map_err(io)?;
                        std::io::Write::write_all(&mut &marker, source.as_bytes())
                            .and_then(|()| marker.sync_all())
                            .map_err(io)?;
                    }
                    None => fs_err::remove_file(&path).map_err(io)?,
                }
                fs_err::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io)
            }
        }
    }
}

/// A source, open (a database) or checked to exist (a directory).
enum Source<'a> {
    Dir(&'a std::path::Path),
    Database(Box<PgLedger>),
}

/// Appends every receipt of `source` to the empty `destination`, and
/// checks the result.
fn into(source: &Source<'_>, destination: &dyn Ledger) -> Result<Copied, CopyError> {
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
    let scanned = match source {
        Source::Dir(dir) => file::scan_dir(dir, &mut visit),
        Source::Database(database) => database.scan(&mut visit),
    };
    if let Some(failure) = failure {
        return Err(failure);
    }
    scanned?;
    destination.flush()?;
    let source = verifier.report();
    let copied = destination.verify()?;
    // The copy's own mark is reported last: alone, it means all else verifies.
    if let Some(bad) = copied
        .first_bad
        .filter(|bad| bad.reason != crate::ledger::inspect::INCOMPLETE_COPY)
    {
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

//! Read-only inspection of a file ledger directory: verify and scan it
//! without taking its lock or repairing anything, so an operator can look at
//! the ledger of a running (or crashed) governor.

use std::path::Path;

use super::file::{CHECKPOINT_FILE, io_err, list_segments, read_checkpoint, record_of};
use super::segment::{self, HEADER, Tail};
use super::verify::Verifier;
use super::{LedgerError, Record, VerifyOptions, VerifyReport};
use crate::tenant::TenantId;

/// Verifies a ledger directory read-only, without taking its lock: reports the
/// first bad (tenant, seq), or the damaged frame's file and offset, instead of failing.
///
/// A torn final record is reported too: it may be an unacknowledged write cut
/// by a crash (which [`FileLedger::open`](super::file::FileLedger::open) truncates) or a damaged last receipt;
/// from the bytes alone the two cannot be told apart.
pub fn verify_dir(dir: impl AsRef<Path>) -> Result<VerifyReport, LedgerError> {
    verify_up_to(dir.as_ref(), None, &VerifyOptions::default())
}

/// [`verify_dir`], cancellable, and judging the stored checkpoint against
/// every chain's head at its mark (see [`VerifyOptions`]).
pub fn verify_dir_with(
    dir: impl AsRef<Path>,
    options: &VerifyOptions<'_>,
) -> Result<VerifyReport, LedgerError> {
    verify_up_to(dir.as_ref(), None, options)
}

/// [`verify_dir_with`] over the log up to the packed position `end` (all of it if `None`).
pub(super) fn verify_up_to(
    dir: &Path,
    end: Option<u64>,
    options: &VerifyOptions<'_>,
) -> Result<VerifyReport, LedgerError> {
    let mut verifier = Verifier::new();
    let ids = match list_segments(dir) {
        Ok(ids) => ids,
        Err(LedgerError::Corrupt { path, reason, .. }) => {
            verifier.bad(String::new(), 0, format!("`{}`: {reason}", path.display()));
            return Ok(verifier.report());
        }
        Err(e) => return Err(e),
    };
    let checkpoint = match read_checkpoint(dir) {
        Ok(ck) => ck,
        Err(LedgerError::Corrupt { path, reason, .. }) => {
            verifier.bad(String::new(), 0, format!("`{}`: {reason}", path.display()));
            None
        }
        Err(e) => return Err(e),
    };
    let mut checkpoint_seen = checkpoint.as_ref().is_none_or(|c| c.records == 0);
    if let Some(ck) = checkpoint.as_ref().filter(|c| c.records == 0) {
        verifier.at_mark(options, 0, &ck.blob);
    }
    let mut records = 0u64;
    for (i, &id) in ids.iter().enumerate() {
        let path = dir.join(segment::segment_name(id));
        let mut buf = fs_err::read(&path).map_err(io_err(&path))?;
        if let Some((last, end_offset)) = end.map(segment::unpack) {
            if id > last {
                break;
            }
            if id == last {
                buf.truncate(end_offset as usize);
            }
        }
        let last = i + 1 == ids.len() || end.is_some_and(|e| segment::unpack(e).0 == id);
        let walked = segment::walk(&buf, 0, last, |offset, frame| {
            if let Some(ck) = checkpoint.as_ref().filter(|c| {
                c.records > 0
                    && c.records == records
                    && c.position == segment::pack(id, offset as u32)
            }) {
                checkpoint_seen = true;
                verifier.at_mark(options, records, &ck.blob);
            }
            if options.cancelled() {
                return Err(LedgerError::Cancelled { visited: records });
            }
            verifier.feed_parts(frame.tenant, frame.seq, &frame.hash, frame.bytes);
            records += 1;
            Ok(())
        });
        let end = match walked? {
            Tail::Clean => buf.len(),
            Tail::Preallocated { offset } => offset,
            Tail::Damaged {
                offset,
                reason,
                valid_after,
            } => {
                let (tenant, seq) = claimed(&buf[offset..]);
                let what = if !last || valid_after {
                    "corrupt frame"
                } else {
                    "torn or damaged final record (open would truncate it)"
                };
                verifier.bad(
                    tenant,
                    seq,
                    format!(
                        "{what} in `{}` at offset `{offset}`: {reason}",
                        path.display()
                    ),
                );
                return Ok(verifier.report());
            }
        };
        if let Some(ck) = checkpoint.as_ref().filter(|c| {
            c.records > 0 && c.records == records && c.position == segment::pack(id, end as u32)
        }) {
            checkpoint_seen = true;
            verifier.at_mark(options, records, &ck.blob);
        }
    }
    if !checkpoint_seen {
        verifier.bad(
            String::new(),
            0,
            format!(
                "checkpoint `{}` points past the end of the log: records were lost",
                dir.join(CHECKPOINT_FILE).display()
            ),
        );
    }
    Ok(verifier.report())
}

/// The (tenant, seq) a damaged frame header claims, when the tenant is a valid id.
fn claimed(buf: &[u8]) -> (String, u64) {
    if buf.len() < HEADER {
        return (String::new(), 0);
    }
    let tenant_len = usize::from(buf[52]);
    let tenant = buf
        .get(HEADER..HEADER + tenant_len)
        .and_then(|t| std::str::from_utf8(t).ok())
        .filter(|t| TenantId::new(t).is_ok());
    match tenant {
        Some(t) => {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&buf[12..20]);
            (t.to_owned(), u64::from_le_bytes(seq))
        }
        None => (String::new(), 0),
    }
}

/// Visits every intact record of a ledger directory in append order,
/// read-only and without the lock. Stops at the first damaged frame with
/// [`LedgerError::Corrupt`] naming the file and offset (a torn final record
/// of a crashed writer included: `open` would truncate it).
pub fn scan_dir(
    dir: impl AsRef<Path>,
    visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    let dir = dir.as_ref();
    let ids = list_segments(dir)?;
    let last = ids.last().copied();
    for id in ids {
        let path = dir.join(segment::segment_name(id));
        let buf = fs_err::read(&path).map_err(io_err(&path))?;
        let walked = segment::walk(&buf, 0, Some(id) == last, |_, frame| {
            visit(&record_of(&frame))
        })?;
        if let Tail::Damaged { offset, reason, .. } = walked {
            return Err(LedgerError::Corrupt {
                path,
                offset: offset as u64,
                reason: reason.to_string(),
            });
        }
    }
    Ok(())
}

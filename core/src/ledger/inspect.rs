//! Read-only inspection of a file ledger directory: verify and scan it
//! without taking its lock or repairing anything, so an operator can look at
//! the ledger of a running (or crashed) governor.

use std::path::Path;

use super::scan::{
    AfterDamage, Damage, Records, Span, Visitor, list_segments, read_checkpoint, scan,
};
use super::segment::{self, CHECKPOINT_FILE, Checkpoint, Frame};
use super::verify::Verifier;
use super::{LedgerError, Record, VerifyOptions, VerifyReport};
use crate::tenant::TenantId;

/// What `verify` reports for a ledger an interrupted `ledger copy` filled
/// (after every other check, so it is the first bad only when nothing else
/// is).
pub const INCOMPLETE_COPY: &str =
    "an interrupted `ledger copy` left this ledger holding only part of its source";

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
/// The segments an archive holds, by id (`None`: not there).
pub type Archived<'a> = dyn FnMut(u32) -> Result<Option<Vec<u8>>, LedgerError> + 'a;

/// Visits every record of a ledger whose oldest segments were archived,
/// from genesis: the archived segments before the anchor (`archived`
/// fetches each; a missing one is an error), then the local log, every
/// chain checked as [`verify_with_archive`] checks it (a record that does
/// not link stops the scan with [`LedgerError::BrokenChain`]).
pub fn scan_with_archive(
    dir: impl AsRef<Path>,
    archived: &mut Archived<'_>,
    visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    let dir = dir.as_ref();
    let Some(anchor) = super::file::read_anchor(dir)? else {
        return scan_dir(dir, visit);
    };
    let mut verifier = Verifier::new();
    for id in 1..anchor.segment {
        let name = segment::segment_name(id);
        let bytes = archived(id)?.ok_or_else(|| LedgerError::Corrupt {
            path: dir.join(&name),
            offset: 0,
            reason: "archived segment missing from the archive".to_owned(),
        })?;
        visit_archived_checked(&mut verifier, &dir.join(&name), &bytes, visit)?;
    }
    scan_checked(
        dir,
        &anchor_ids(dir, &anchor)?,
        anchor.records,
        verifier,
        visit,
    )
}

/// The local segments an anchor keeps (those from its first local segment
/// on), refusing a log that does not start there; segments before it are
/// not part of the log (see [`leftovers`]).
fn anchor_ids(dir: &Path, anchor: &super::file::Anchor) -> Result<Vec<u32>, LedgerError> {
    let ids: Vec<u32> = list_segments(dir)?
        .into_iter()
        .filter(|&id| id >= anchor.segment)
        .collect();
    if let Some(&first) = ids.first()
        && first != anchor.segment
    {
        return Err(LedgerError::Corrupt {
            path: dir.join(segment::segment_name(anchor.segment)),
            offset: 0,
            reason: format!(
                "the anchor says the local log starts at segment {}, but it starts at {first}",
                anchor.segment
            ),
        });
    }
    Ok(ids)
}

/// The segments in `dir` older than its anchor's first local one: not part
/// of the log (left by a retention cut interrupted after its anchor, which
/// the next open removes, or planted), so neither verified nor visited.
/// Empty without an anchor.
pub fn leftovers(dir: impl AsRef<Path>) -> Result<Vec<std::path::PathBuf>, LedgerError> {
    let dir = dir.as_ref();
    let Some(anchor) = super::file::read_anchor(dir)? else {
        return Ok(Vec::new());
    };
    let mut ids: Vec<u32> = Vec::new();
    for entry in fs_err::read_dir(dir).map_err(super::io_err(dir))? {
        let entry = entry.map_err(super::io_err(dir))?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_segment_name)
            .filter(|&id| id < anchor.segment)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids
        .into_iter()
        .map(|id| dir.join(segment::segment_name(id)))
        .collect())
}

/// Visits every record of the local log in append order, read-only, and
/// verifies each chain as it goes, as [`verify_dir`] does: from genesis, or
/// from the anchor's heads when the oldest segments were archived (their
/// records are not visited, nor are segments older than the anchor left in
/// the folder: see [`leftovers`]). A record that does not link, or whose
/// own `tenant`, `seq` or `prev` contradict its frame, stops the scan with
/// [`LedgerError::BrokenChain`] before it is visited; damage stops it as
/// [`scan_dir`] does.
pub fn scan_local(
    dir: impl AsRef<Path>,
    visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    scan_dir(dir, visit)
}

/// [`scan_local`] from `verifier`'s heads over segments `ids`, after `records` records.
fn scan_checked(
    dir: &Path,
    ids: &[u32],
    records: u64,
    verifier: Verifier,
    visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    let span = Span {
        records,
        ..Span::all(ids)
    };
    scan(dir, span, None, &mut Checked { verifier, visit })?;
    Ok(())
}

/// A scan visitor that checks every chain (as verify does) before handing
/// a record on, and fails at the first damage.
struct Checked<'a, 'v> {
    verifier: Verifier,
    visit: &'a mut (dyn FnMut(&Record) -> Result<(), LedgerError> + 'v),
}

impl Visitor for Checked<'_, '_> {
    fn record(&mut self, path: &Path, position: u64, frame: Frame<'_>) -> Result<(), LedgerError> {
        self.verifier
            .feed_parts(frame.tenant, frame.seq, &frame.hash, frame.bytes);
        if let Some(bad) = self.verifier.first_bad() {
            return Err(LedgerError::BrokenChain {
                tenant: bad.tenant.clone(),
                seq: bad.seq,
                path: path.to_owned(),
                offset: u64::from(segment::unpack(position).1),
                reason: bad.reason.clone(),
            });
        }
        (self.visit)(&frame.record())
    }

    fn damaged(&mut self, damage: &Damage<'_>) -> Result<AfterDamage, LedgerError> {
        Records(&mut *self.visit).damaged(damage)
    }
}

/// [`visit_archived`], each chain checked by `verifier` (fed before):
/// a record that does not link is [`LedgerError::BrokenChain`].
pub fn visit_archived_checked(
    verifier: &mut Verifier,
    path: &Path,
    bytes: &[u8],
    visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    let tail = segment::walk(bytes, 0, false, |offset, frame| {
        verifier.feed_parts(frame.tenant, frame.seq, &frame.hash, frame.bytes);
        if let Some(bad) = verifier.first_bad() {
            return Err(LedgerError::BrokenChain {
                tenant: bad.tenant.clone(),
                seq: bad.seq,
                path: path.to_owned(),
                offset: offset as u64,
                reason: format!("archived copy: {}", bad.reason),
            });
        }
        visit(&frame.record())
    })?;
    if let segment::Tail::Damaged { offset, reason, .. } = tail {
        return Err(LedgerError::Corrupt {
            path: path.to_owned(),
            offset: offset as u64,
            reason: format!("archived copy: {reason}"),
        });
    }
    Ok(())
}

/// Verifies a ledger whose oldest segments were archived as one log from
/// genesis: the archived segments (`archived` fetches each) up to the
/// anchor, checked to end exactly at the anchor's heads and record count,
/// then the local segments (as [`verify_dir_with`]). Without an anchor,
/// the whole log is local and the archive is not read.
pub fn verify_with_archive(
    dir: impl AsRef<Path>,
    options: &VerifyOptions<'_>,
    archived: &mut Archived<'_>,
) -> Result<VerifyReport, LedgerError> {
    verify_from(dir.as_ref(), None, options, Some(archived))
}

pub(super) fn verify_up_to(
    dir: &Path,
    end: Option<u64>,
    options: &VerifyOptions<'_>,
) -> Result<VerifyReport, LedgerError> {
    verify_from(dir, end, options, None)
}

/// Feeds the archived segments before `anchor` to `verifier`; `false` once
/// it found a problem (reported in it).
fn verify_archived(
    verifier: &mut Verifier,
    anchor: &super::file::Anchor,
    archived: &mut Archived<'_>,
) -> Result<bool, LedgerError> {
    let mut records = 0u64;
    for id in 1..anchor.segment {
        let name = segment::segment_name(id);
        let Some(bytes) = archived(id)? else {
            verifier.bad(
                String::new(),
                0,
                format!("archived segment `{name}` is missing from the archive"),
            );
            return Ok(false);
        };
        match feed_archived(verifier, &name, &bytes) {
            Some(fed) if !verifier.has_bad() => records += fed,
            _ => return Ok(false),
        }
    }
    Ok(ends_at_anchor(
        verifier,
        records,
        anchor.records,
        &anchor.heads,
    ))
}

/// Whether an archive whose `records` receipts were fed to `verifier` ends
/// exactly where an anchor (`anchor_records` receipts, `heads`) says the
/// local log starts; reported in `verifier` when not.
pub fn ends_at_anchor(
    verifier: &mut Verifier,
    records: u64,
    anchor_records: u64,
    heads: &std::collections::BTreeMap<TenantId, super::Head>,
) -> bool {
    if records != anchor_records {
        verifier.bad(
            String::new(),
            0,
            format!(
                "the archive holds {records} receipts before the anchor, which counts {anchor_records}"
            ),
        );
        return false;
    }
    for (tenant, head) in heads {
        if verifier.head(tenant.as_str()) != Some(*head) {
            verifier.bad(
                tenant.to_string(),
                head.seq,
                "the archive does not end at this tenant's head in the anchor".to_owned(),
            );
            return false;
        }
    }
    true
}

/// Feeds the receipts of the archived segment `bytes` (named `name` in
/// reports) to `verifier`; returns how many, or `None` when a frame is
/// damaged (reported in `verifier`).
pub fn feed_archived(verifier: &mut Verifier, name: &str, bytes: &[u8]) -> Option<u64> {
    let mut records = 0u64;
    let tail = segment::walk(bytes, 0, false, |_, frame| {
        verifier.feed_parts(frame.tenant, frame.seq, &frame.hash, frame.bytes);
        records += 1;
        Ok::<(), std::convert::Infallible>(())
    });
    match tail {
        Ok(segment::Tail::Damaged { offset, reason, .. }) => {
            let (tenant, seq) = claimed(&bytes[offset..]);
            verifier.bad(
                tenant,
                seq,
                format!("archived segment `{name}` at offset `{offset}`: {reason}"),
            );
            None
        }
        _ => Some(records),
    }
}

/// Visits the receipts of the archived segment `bytes` (named `name` in
/// errors) in order; a damaged frame is an error.
pub fn visit_archived(
    name: &str,
    bytes: &[u8],
    visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    let tail = segment::walk(bytes, 0, false, |_, frame| visit(&frame.record()))?;
    if let segment::Tail::Damaged { offset, reason, .. } = tail {
        return Err(LedgerError::Corrupt {
            path: std::path::PathBuf::from(name),
            offset: offset as u64,
            reason: format!("archived copy: {reason}"),
        });
    }
    Ok(())
}

fn verify_from(
    dir: &Path,
    end: Option<u64>,
    options: &VerifyOptions<'_>,
    archived: Option<&mut Archived<'_>>,
) -> Result<VerifyReport, LedgerError> {
    // Read before anything of the log: beside a running service a tree
    // synced later (a checkpoint) would count records the listing below
    // never saw. Records durable then are all in the log listed after.
    let synced = if end.is_none() {
        super::file::synced_size(dir)
    } else {
        None
    };
    // Chains continue from the anchor's heads (the archived segments
    // before it are `ledger verify --archive`'s).
    let anchor = match super::file::read_anchor(dir) {
        Ok(anchor) => anchor,
        Err(LedgerError::Corrupt { path, reason, .. }) => {
            let mut verifier = Verifier::new();
            verifier.bad(String::new(), 0, format!("`{}`: {reason}", path.display()));
            return Ok(verifier.report());
        }
        Err(e) => return Err(e),
    };
    let verifier = match (&anchor, archived) {
        (Some(anchor), Some(archived)) => {
            let mut verifier = Verifier::new().expecting(options);
            if !verify_archived(&mut verifier, anchor, archived)? {
                return Ok(verifier.report());
            }
            verifier
        }
        (Some(anchor), None) => Verifier::starting_at(&anchor.heads).expecting(options),
        (None, _) => Verifier::new().expecting(options),
    };
    let mut replay = Replay { verifier, options };
    let ids = match list_segments(dir) {
        Ok(ids) => ids,
        Err(LedgerError::Corrupt { path, reason, .. }) => {
            replay.bad_file(&path, &reason);
            return Ok(replay.verifier.report());
        }
        Err(e) => return Err(e),
    };
    let checkpoint = match read_checkpoint(dir) {
        Ok(ck) => ck,
        Err(LedgerError::Corrupt { path, reason, .. }) => {
            replay.bad_file(&path, &reason);
            None
        }
        Err(e) => return Err(e),
    };
    // Leftovers of a cut interrupted after its anchor (open removes them).
    let ids: Vec<u32> = match &anchor {
        Some(anchor) => ids.into_iter().filter(|&id| id >= anchor.segment).collect(),
        None => ids,
    };
    if let (Some(anchor), Some(&first)) = (&anchor, ids.first())
        && first != anchor.segment
    {
        replay.verifier.bad(
            String::new(),
            0,
            format!(
                "the anchor says the local log starts at segment {}, but it starts at {first}",
                anchor.segment
            ),
        );
        return Ok(replay.verifier.report());
    }
    let span = Span {
        end,
        records: anchor.as_ref().map_or(0, |a| a.records),
        ..Span::all(&ids)
    };
    let scanned = scan(dir, span, checkpoint.as_ref(), &mut replay)?;
    if !scanned.stopped && !scanned.checkpoint_found {
        replay.verifier.bad(
            String::new(),
            0,
            format!(
                "checkpoint `{}` points past the end of the log: records were lost",
                dir.join(CHECKPOINT_FILE).display()
            ),
        );
    }
    // The tree's leaves are appended only once their records are durable:
    // a synced size past the log's end means durable receipts are gone.
    if !scanned.stopped
        && let Some(synced) = synced
        && synced > scanned.records
    {
        replay.verifier.bad(
            String::new(),
            0,
            format!(
                "`{}` says {synced} receipts were durable when the Merkle tree was synced, but the log holds {}: receipts were lost (the log cut short, or restored from an older copy)",
                dir.join(super::file::TREE_DIR).join("SYNCED").display(),
                scanned.records
            ),
        );
    }
    // Last, so it is the first bad only when everything else verifies
    // (which is how `ledger copy` checks its copy before unmarking it).
    if dir.join(super::file::COPYING_FILE).exists() {
        replay
            .verifier
            .bad(String::new(), 0, INCOMPLETE_COPY.to_owned());
    }
    Ok(replay.verifier.report())
}

/// Verification as a scan visitor: replays every chain, judges the
/// checkpoint at its mark, reports damage instead of failing.
struct Replay<'a, 'o> {
    verifier: Verifier,
    options: &'a VerifyOptions<'o>,
}

impl Replay<'_, '_> {
    /// Reports an unreadable directory listing or checkpoint file.
    fn bad_file(&mut self, path: &Path, reason: &str) {
        self.verifier
            .bad(String::new(), 0, format!("`{}`: {reason}", path.display()));
    }
}

impl Visitor for Replay<'_, '_> {
    fn record(&mut self, _: &Path, _: u64, frame: Frame<'_>) -> Result<(), LedgerError> {
        if self.options.cancelled() {
            return Err(LedgerError::Cancelled {
                visited: self.verifier.receipts(),
            });
        }
        self.verifier
            .feed_parts(frame.tenant, frame.seq, &frame.hash, frame.bytes);
        Ok(())
    }

    fn at_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), LedgerError> {
        self.verifier
            .at_mark(self.options, checkpoint.records, &checkpoint.blob);
        Ok(())
    }

    fn damaged(&mut self, damage: &Damage<'_>) -> Result<AfterDamage, LedgerError> {
        let (tenant, seq) = claimed(damage.bytes);
        let what = if damage.torn {
            "torn or damaged final record (open cuts it if no durable mark covers it, and otherwise refuses to start)"
        } else {
            "corrupt frame"
        };
        self.verifier.bad(
            tenant,
            seq,
            format!(
                "{what} in `{}` at offset `{}`: {}",
                damage.path.display(),
                damage.offset,
                damage.reason
            ),
        );
        Ok(AfterDamage::Stop)
    }
}

/// The (tenant, seq) a damaged frame header claims, when the tenant is a valid id.
pub(super) fn claimed(buf: &[u8]) -> (String, u64) {
    segment::peek(buf)
        .and_then(|header| {
            let tenant = std::str::from_utf8(header.tenant?).ok()?;
            TenantId::new(tenant).ok()?;
            Some((tenant.to_owned(), header.seq))
        })
        .unwrap_or_default()
}

/// Visits every record of the local log of a ledger directory in append
/// order, read-only and without the lock, exactly what [`verify_dir`]
/// checks, checked as it does (see [`scan_local`]). Stops at the first
/// damaged frame with [`LedgerError::Corrupt`] naming the file and offset
/// (a torn final record of a crashed writer included: `open` would
/// truncate it), at the first record that does not link with
/// [`LedgerError::BrokenChain`].
pub fn scan_dir(
    dir: impl AsRef<Path>,
    visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    let dir = dir.as_ref();
    match super::file::read_anchor(dir)? {
        Some(anchor) => scan_checked(
            dir,
            &anchor_ids(dir, &anchor)?,
            anchor.records,
            Verifier::starting_at(&anchor.heads),
            visit,
        ),
        None => scan_checked(dir, &list_segments(dir)?, 0, Verifier::new(), visit),
    }
}

/// Whether `dir` holds a file ledger: its lock (made by the first open,
/// so an empty ledger a start created counts), a segment, a checkpoint,
/// an anchor, its Merkle tree or an unfinished copy's mark. A folder with
/// none of them (an empty one, or another program's) is not a ledger.
pub fn is_ledger_dir(dir: impl AsRef<Path>) -> Result<bool, LedgerError> {
    let dir = dir.as_ref();
    const MARKS: [&str; 5] = [
        super::file::LOCK_FILE,
        CHECKPOINT_FILE,
        super::file::ANCHOR_FILE,
        super::file::TREE_DIR,
        super::file::COPYING_FILE,
    ];
    for entry in fs_err::read_dir(dir).map_err(super::io_err(dir))? {
        let name = entry.map_err(super::io_err(dir))?.file_name();
        let Some(name) = name.to_str() else { continue };
        if MARKS.contains(&name) || segment::parse_segment_name(name).is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The checkpoint stored in a ledger directory, read-only: its record count
/// and blob, for a replay up to its mark (such as
/// [`crate::registry::replay_checkpoint`]) that runs beside [`verify_dir_with`].
/// Its `heads` are left empty: only a scan of the log can tell them, and
/// `verify_dir_with` hands its judge the full checkpoint.
pub fn stored_checkpoint(
    dir: impl AsRef<Path>,
) -> Result<Option<super::StoredCheckpoint>, LedgerError> {
    Ok(
        read_checkpoint(dir.as_ref())?.map(|checkpoint| super::StoredCheckpoint {
            records: checkpoint.records,
            blob: checkpoint.blob,
            heads: std::collections::BTreeMap::new(),
        }),
    )
}

//! The one pass over a file ledger directory, shared by
//! [`FileLedger::open`](super::file::FileLedger::open) and the read-only
//! [`inspect`](super::inspect) verify and scan.
//!
//! The scan walks every segment in order, validating each frame, and holds
//! the log's rules: only the last segment may end in (preallocated) zeros;
//! damage in the last segment with no valid frame after it is a torn tail,
//! any other damage is mid-log; the stored checkpoint's mark must be a record
//! boundary, reached with exactly its record count. What to make of a record,
//! of the checkpoint's mark and of damage (index, replay, cut, report) is the
//! [`Visitor`]'s.

use std::io;
use std::path::Path;

use super::segment::{self, CHECKPOINT_FILE, Checkpoint, Frame, Tail};
use super::{LedgerError, Record, io_err};

/// The segment ids in `dir`, sorted, checked to be contiguous.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u32>, LedgerError> {
    let mut ids = Vec::new();
    for entry in fs_err::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_segment_name)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(LedgerError::Corrupt {
            path: dir.join(segment::segment_name(w[0] + 1)),
            offset: 0,
            reason: "segment missing between two others".to_owned(),
        });
    }
    Ok(ids)
}

/// Reads the checkpoint file, if any.
pub(crate) fn read_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, LedgerError> {
    let path = dir.join(CHECKPOINT_FILE);
    let buf = match fs_err::read(&path) {
        Ok(buf) => buf,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    segment::decode_checkpoint(&buf)
        .map(Some)
        .map_err(|reason| LedgerError::Corrupt {
            path,
            offset: 0,
            reason: reason.to_owned(),
        })
}

/// A damaged frame found by [`scan`].
#[derive(Debug)]
pub(crate) struct Damage<'a> {
    /// The segment file.
    pub(crate) path: &'a Path,
    /// Where the damaged frame starts (the end of the valid frames before it).
    pub(crate) offset: u64,
    /// What is wrong with it.
    pub(crate) reason: &'static str,
    /// A torn final record: in the last segment, no valid frame after it.
    /// It may be an unacknowledged write cut by a crash or a damaged last
    /// receipt; from the bytes alone the two cannot be told apart.
    pub(crate) torn: bool,
    /// The segment's bytes from `offset` on.
    pub(crate) bytes: &'a [u8],
}

/// What the scan does after a [`Visitor`] saw damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterDamage {
    /// The visitor cut the segment file at a torn tail: the log ends there.
    Cut,
    /// The scan stops.
    Stop,
}

/// What a [`scan`] tells its caller, in log order.
pub(crate) trait Visitor {
    /// A valid frame at the packed log position `position` of the segment file `path`.
    fn record(&mut self, path: &Path, position: u64, frame: Frame<'_>) -> Result<(), LedgerError>;

    /// The records visited so far are exactly those before `checkpoint`'s
    /// mark. Called at most once, before the record at the mark.
    fn at_checkpoint(&mut self, _checkpoint: &Checkpoint) -> Result<(), LedgerError> {
        Ok(())
    }

    /// A damaged frame; nothing after it is visited.
    fn damaged(&mut self, damage: &Damage<'_>) -> Result<AfterDamage, LedgerError>;
}

/// A visitor handing every record to a closure and failing at the first
/// damage with [`LedgerError::Corrupt`] (a torn tail included).
pub(crate) struct Records<'a, 'v>(
    pub(crate) &'a mut (dyn FnMut(&Record) -> Result<(), LedgerError> + 'v),
);

impl Visitor for Records<'_, '_> {
    fn record(&mut self, _: &Path, _: u64, frame: Frame<'_>) -> Result<(), LedgerError> {
        (self.0)(&frame.record())
    }

    fn damaged(&mut self, damage: &Damage<'_>) -> Result<AfterDamage, LedgerError> {
        Err(LedgerError::Corrupt {
            path: damage.path.to_path_buf(),
            offset: damage.offset,
            reason: damage.reason.to_owned(),
        })
    }
}

/// The last segment a [`scan`] walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastSegment {
    /// Its id.
    pub(crate) id: u32,
    /// The end of its frames: where the next append goes.
    pub(crate) end: u64,
    /// Its file's length: past `end` by the preallocated zeros, if any.
    pub(crate) file_len: u64,
}

/// What a [`scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// Records visited.
    pub(crate) records: u64,
    /// Whether the checkpoint's mark was reached (true when there is none).
    pub(crate) checkpoint_found: bool,
    /// The last segment walked (`None` if there is none, or the scan stopped).
    pub(crate) last: Option<LastSegment>,
    /// Whether the visitor stopped the scan at damage.
    pub(crate) stopped: bool,
}

/// Where the stored checkpoint's mark is, until the scan reaches it.
struct Boundary<'a> {
    checkpoint: Option<&'a Checkpoint>,
    found: bool,
}

impl<'a> Boundary<'a> {
    /// The checkpoint, the first time `records` records ending at the packed
    /// `position` are exactly those before its mark: the checkpoint-boundary test.
    fn reached(&mut self, records: u64, position: u64) -> Option<&'a Checkpoint> {
        let checkpoint = self.checkpoint?;
        if self.found || checkpoint.records != records || checkpoint.position != position {
            return None;
        }
        self.found = true;
        Some(checkpoint)
    }
}

/// The part of the log a [`scan`] walks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span<'a> {
    /// The segment ids, sorted and contiguous.
    pub(crate) segments: &'a [u32],
    /// Where in the first segment the walk starts.
    pub(crate) start: u32,
    /// The packed position where the log is cut off (none: all of it).
    pub(crate) end: Option<u64>,
    /// Records before the span (in archived segments, say).
    pub(crate) records: u64,
}

impl<'a> Span<'a> {
    /// All of `segments`.
    pub(crate) fn all(segments: &'a [u32]) -> Span<'a> {
        Span {
            segments,
            start: 0,
            end: None,
            records: 0,
        }
    }
}

/// Walks `span` of the segments of `dir` in log order, telling `visitor`
/// about every valid frame, the `checkpoint`'s mark and the first damage.
pub(crate) fn scan(
    dir: &Path,
    span: Span<'_>,
    checkpoint: Option<&Checkpoint>,
    visitor: &mut impl Visitor,
) -> Result<Scanned, LedgerError> {
    let Span {
        segments,
        start,
        end,
        records,
    } = span;
    let mut mark = Boundary {
        checkpoint,
        found: false,
    };
    let mut scanned = Scanned {
        records,
        checkpoint_found: checkpoint.is_none(),
        last: None,
        stopped: false,
    };
    // A checkpoint of no records sits at the start of the log, even one
    // without segments yet.
    let first = segment::pack(segments.first().copied().unwrap_or(1), start);
    if let Some(ck) = mark.reached(records, first) {
        visitor.at_checkpoint(ck)?;
    }
    let end = end.map(segment::unpack);
    for (i, &id) in segments.iter().enumerate() {
        // Past the end: stop before reading a segment that is not scanned.
        if end.is_some_and(|(end_id, _)| id > end_id) {
            break;
        }
        let path = dir.join(segment::segment_name(id));
        let mut buf = fs_err::read(&path).map_err(io_err(&path))?;
        if let Some((end_id, end_offset)) = end
            && id == end_id
        {
            buf.truncate(end_offset as usize);
        }
        let last = i + 1 == segments.len() || end.is_some_and(|(end_id, _)| end_id == id);
        let records = &mut scanned.records;
        let from = if i == 0 { start as usize } else { 0 };
        let tail = segment::walk(&buf, from, last, |offset, frame| {
            let position = segment::pack(id, offset as u32);
            if let Some(ck) = mark.reached(*records, position) {
                visitor.at_checkpoint(ck)?;
            }
            visitor.record(&path, position, frame)?;
            // Counted from an anchor's `records`, which a crafted file may set anywhere.
            *records = records.checked_add(1).ok_or_else(|| LedgerError::Corrupt {
                path: path.clone(),
                offset: offset as u64,
                reason: "the log counts more records than a ledger can hold (the anchor's `records` is wrong)".to_owned(),
            })?;
            Ok(())
        })?;
        let (frames_end, file_len) = match tail {
            Tail::Clean => (buf.len(), buf.len()),
            Tail::Preallocated { offset } => (offset, buf.len()),
            Tail::Damaged {
                offset,
                reason,
                valid_after,
            } => {
                let damage = Damage {
                    path: &path,
                    offset: offset as u64,
                    reason,
                    torn: last && !valid_after,
                    bytes: &buf[offset..],
                };
                match visitor.damaged(&damage)? {
                    AfterDamage::Cut => (offset, offset),
                    AfterDamage::Stop => {
                        scanned.checkpoint_found |= mark.found;
                        scanned.last = None;
                        scanned.stopped = true;
                        return Ok(scanned);
                    }
                }
            }
        };
        if let Some(ck) = mark.reached(scanned.records, segment::pack(id, frames_end as u32)) {
            visitor.at_checkpoint(ck)?;
        }
        scanned.last = Some(LastSegment {
            id,
            end: frames_end as u64,
            file_len: file_len as u64,
        });
    }
    scanned.checkpoint_found |= mark.found;
    Ok(scanned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::file::{FileLedger, FileOptions, verify_dir};
    use crate::ledger::{Entry, GENESIS, Ledger, chain_hash};
    use crate::tenant::TenantId;

    /// A ledger of two receipts of tenant `a`; returns the first frame's length.
    fn two_records(dir: &Path) -> u32 {
        let ledger = FileLedger::open(dir, FileOptions::default()).unwrap();
        let mut prev = GENESIS;
        for seq in 1..=2 {
            let bytes = format!(
                r#"{{"prev":"{}","seq":{seq},"tenant":"a"}}"#,
                hex::encode(prev)
            )
            .into_bytes();
            let entry = Entry {
                tenant: TenantId::new("a").unwrap(),
                seq,
                prev,
                bytes,
            };
            prev = chain_hash(&prev, &entry.bytes);
            ledger.append(entry).unwrap();
        }
        ledger.flush().unwrap();
        let buf = fs_err::read(dir.join(segment::segment_name(1))).unwrap();
        segment::decode(&buf).unwrap().len as u32
    }

    #[test]
    fn a_checkpoint_of_no_records_belongs_at_the_start_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let first = two_records(dir.path());
        let write = |position| {
            let ck = segment::encode_checkpoint(0, position, b"");
            fs_err::write(dir.path().join(CHECKPOINT_FILE), ck).unwrap();
        };
        write(segment::pack(1, 0));
        assert_eq!(verify_dir(dir.path()).unwrap().first_bad, None);
        drop(FileLedger::open(dir.path(), FileOptions::default()).unwrap());

        // A record boundary, but one record in: open refuses it, so verify must too.
        write(segment::pack(1, first));
        let bad = verify_dir(dir.path()).unwrap().first_bad.unwrap();
        assert!(bad.reason.contains("points past the end"), "{}", bad.reason);
        let refused = FileLedger::open(dir.path(), FileOptions::default()).unwrap_err();
        assert!(
            matches!(&refused, LedgerError::Corrupt { reason, .. } if reason.contains("not a record boundary")),
            "{refused}"
        );
    }

    #[test]
    fn damage_is_reported_against_the_frame_its_header_claims() {
        let dir = tempfile::tempdir().unwrap();
        let first = two_records(dir.path()) as usize;
        let seg = dir.path().join(segment::segment_name(1));
        let clean = fs_err::read(&seg).unwrap();
        // The writer zero-fills ahead of its appends.
        let end = first + segment::decode(&clean[first..]).unwrap().len;

        // A flipped receipt byte in the first frame: valid frames follow.
        let mut flipped = clean.clone();
        flipped[first - 2] ^= 0x01;
        fs_err::write(&seg, &flipped).unwrap();
        let bad = verify_dir(dir.path()).unwrap().first_bad.unwrap();
        assert_eq!((bad.tenant.as_str(), bad.seq), ("a", 1), "{}", bad.reason);
        assert!(bad.reason.starts_with("corrupt frame"), "{}", bad.reason);
        assert!(
            bad.reason.contains("at offset `0`: crc mismatch"),
            "{}",
            bad.reason
        );

        // The last frame cut short: a torn tail, still named by its header.
        fs_err::write(&seg, &clean[..end - 3]).unwrap();
        let bad = verify_dir(dir.path()).unwrap().first_bad.unwrap();
        assert_eq!((bad.tenant.as_str(), bad.seq), ("a", 2), "{}", bad.reason);
        assert!(
            bad.reason.starts_with("torn or damaged final record"),
            "{}",
            bad.reason
        );

        // A header cut inside its tenant bytes claims nothing.
        fs_err::write(&seg, &clean[..first + segment::HEADER]).unwrap();
        let bad = verify_dir(dir.path()).unwrap().first_bad.unwrap();
        assert_eq!((bad.tenant.as_str(), bad.seq), ("", 0), "{}", bad.reason);
    }
}

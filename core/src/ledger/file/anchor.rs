//! Where a file ledger's local log starts once its oldest segments are
//! archived: the `ANCHOR` file.
//!
//! Retention removes closed segments from the front of the log, only after
//! a verified copy of each is in the archive (the caller's part, see
//! [`FileLedger::cut`](super::FileLedger::cut)). What is left must still
//! verify on its own, so the anchor records, at the cut: the first local
//! segment, how many records came before it, and every tenant's head there
//! (each local chain continues from it). It also keeps a copy of the
//! checkpoint current at the cut, which covers everything before it:
//! recovery falls back to that copy if `CHECKPOINT` itself is ever
//! unreadable, since the log before the cut can no longer be replayed.
//!
//! The file: magic `GGENANC1` | length u32 | JSON | crc32c u32, written to a
//! temporary, synced and renamed (the directory synced too), before any
//! segment it lets go is removed.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::ledger::segment::{self, Checkpoint};
use crate::ledger::{Head, LedgerError, io_err};
use crate::tenant::TenantId;

/// The anchor's file name in a ledger directory.
pub const ANCHOR_FILE: &str = "ANCHOR";
const MAGIC: [u8; 8] = *b"GGENANC1";
/// The most records (and so the largest seq) an anchor may count: what a
/// PostgreSQL ledger's `bigint` positions hold, far past any log.
const MAX_COUNT: u64 = i64::MAX as u64;

/// Where the local log starts (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The first local segment: every one before it is archived.
    pub segment: u32,
    /// Records in the archived segments.
    pub records: u64,
    /// Every tenant's head at the cut (its last archived record).
    pub heads: BTreeMap<TenantId, Head>,
    /// The `CHECKPOINT` file (its bytes) current when the cut was made: its
    /// mark is at or past the cut.
    pub checkpoint: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    segment: u32,
    records: u64,
    /// tenant → [seq, hash hex].
    heads: BTreeMap<String, (u64, String)>,
    /// Base64 of the checkpoint file.
    checkpoint: String,
}

impl Anchor {
    /// The checkpoint it keeps, decoded.
    pub(crate) fn checkpoint(&self) -> Result<Checkpoint, &'static str> {
        segment::decode_checkpoint(&self.checkpoint)
    }

    fn encode(&self) -> Vec<u8> {
        let stored = Stored {
            v: 1,
            segment: self.segment,
            records: self.records,
            heads: self
                .heads
                .iter()
                .map(|(t, h)| (t.to_string(), (h.seq, hex::encode(h.hash))))
                .collect(),
            checkpoint: base64::engine::general_purpose::STANDARD.encode(&self.checkpoint),
        };
        let json = serde_json::to_vec(&stored).unwrap_or_default();
        let mut out = Vec::with_capacity(json.len() + 16);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Anchor, String> {
        let (body, crc) = bytes
            .split_last_chunk::<4>()
            .ok_or("anchor file too short")?;
        if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
            return Err("anchor file CRC mismatch".to_owned());
        }
        if body.len() < 12 || body[..8] != MAGIC {
            return Err("not an anchor file".to_owned());
        }
        let len = u32::from_le_bytes(body[8..12].try_into().unwrap_or_default()) as usize;
        if body.len() != 12 + len {
            return Err("anchor file length mismatch".to_owned());
        }
        let stored: Stored =
            serde_json::from_slice(&body[12..]).map_err(|e| format!("anchor file: {e}"))?;
        if stored.v != 1 || stored.segment == 0 {
            return Err("anchor file of an unknown version".to_owned());
        }
        // Counts no log reaches (a crafted file) would overflow what is
        // counted on from them.
        if stored.records > MAX_COUNT {
            return Err(format!(
                "anchor file: `records` {} is more than a ledger can hold",
                stored.records
            ));
        }
        let mut heads = BTreeMap::new();
        for (tenant, (seq, hash)) in stored.heads {
            if seq > MAX_COUNT || seq > stored.records {
                return Err(format!(
                    "anchor file: tenant `{tenant}`'s head seq {seq} is more than the {} records before the anchor",
                    stored.records
                ));
            }
            let tenant = TenantId::new(&tenant).map_err(|e| format!("anchor file: {e}"))?;
            let hash = hex::decode(&hash)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or("anchor file: a head hash is not 32 bytes of hex")?;
            heads.insert(tenant, Head { seq, hash });
        }
        let checkpoint = base64::engine::general_purpose::STANDARD
            .decode(stored.checkpoint)
            .map_err(|e| format!("anchor file: {e}"))?;
        Ok(Anchor {
            segment: stored.segment,
            records: stored.records,
            heads,
            checkpoint,
        })
    }
}

/// Reads `dir`'s anchor, if it has one.
pub fn read_anchor(dir: &Path) -> Result<Option<Anchor>, LedgerError> {
    let path = dir.join(ANCHOR_FILE);
    let bytes = match fs_err::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    Anchor::decode(&bytes)
        .map(Some)
        .map_err(|reason| LedgerError::Corrupt {
            path,
            offset: 0,
            reason,
        })
}

/// Replaces `dir`'s anchor with `anchor`, durably.
pub(super) fn write_anchor(dir: &Path, anchor: &Anchor) -> Result<(), LedgerError> {
    super::replace_durably(dir, ANCHOR_FILE, &anchor.encode())
}

/// The anchor after segment `id` (whose bytes are `bytes`) is cut too:
/// its records' heads replace those before.
pub(super) fn advance(
    before: Option<&Anchor>,
    id: u32,
    bytes: &[u8],
    checkpoint: Vec<u8>,
    path: &Path,
) -> Result<Anchor, LedgerError> {
    let mut heads = before.map(|a| a.heads.clone()).unwrap_or_default();
    let mut records = before.map_or(0, |a| a.records);
    let corrupt = |reason: String| LedgerError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    };
    let tail = segment::walk(bytes, 0, false, |_, frame| {
        let tenant = TenantId::new(frame.tenant).map_err(|e| corrupt(e.to_string()))?;
        heads.insert(
            tenant,
            Head {
                seq: frame.seq,
                hash: frame.hash,
            },
        );
        records += 1;
        Ok::<(), LedgerError>(())
    })?;
    if !matches!(tail, segment::Tail::Clean) {
        return Err(corrupt("a segment to archive is not whole".to_owned()));
    }
    Ok(Anchor {
        segment: id + 1,
        records,
        heads,
        checkpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::file::{FileLedger, FileOptions, verify_dir};

    /// An anchor whose counts are crafted past any log (`records` or a head
    /// seq at `u64::MAX`) is refused with a clear error by verify and open,
    /// never an overflow.
    #[test]
    fn an_anchor_counting_past_any_log_is_refused_not_overflowed() {
        let head = |seq| Head { seq, hash: [7; 32] };
        let cases = [
            (u64::MAX, BTreeMap::new(), "more than a ledger can hold"),
            (
                10,
                BTreeMap::from([(TenantId::new("a").unwrap(), head(u64::MAX))]),
                "tenant `a`'s head seq",
            ),
        ];
        for (records, heads, reason) in cases {
            let dir = tempfile::tempdir().unwrap();
            drop(FileLedger::open(dir.path(), FileOptions::default()).unwrap());
            let anchor = Anchor {
                segment: 1,
                records,
                heads,
                checkpoint: Vec::new(),
            };
            write_anchor(dir.path(), &anchor).unwrap();
            let bad = verify_dir(dir.path()).unwrap().first_bad.unwrap();
            assert!(bad.reason.contains(reason), "{}", bad.reason);
            let refused = FileLedger::open(dir.path(), FileOptions::default()).unwrap_err();
            assert!(refused.to_string().contains(reason), "{refused}");
        }
    }
}

//! The on-disk format of the file ledger: segment names, record frames and
//! the checkpoint file. Pure encoding and decoding; no I/O.
//!
//! A frame (little-endian) is
//!
//! ```text
//! magic "GRC1" | crc32c u32 | len u32 | seq u64 | hash [32] | tenant_len u8 | tenant | receipt bytes
//! ```
//!
//! where the CRC32C covers everything after itself. The header carries the
//! tenant, seq and hash so that opening a ledger rebuilds every head without
//! parsing JSON.

use std::sync::Arc;

use crate::tenant::TenantId;

use super::{Hash, Record};

/// Frame magic, `GRC1`.
pub(crate) const MAGIC: [u8; 4] = *b"GRC1";
/// Fixed part of a frame header, before the tenant bytes.
pub(crate) const HEADER: usize = 53;
/// Largest receipt one frame holds.
pub const MAX_RECORD: usize = 16 << 20;
/// Longest tenant id (see [`TenantId`]).
const MAX_TENANT: usize = 128;

/// Packs a (segment, offset) log position so that log order is `u64` order.
pub(crate) fn pack(segment: u32, offset: u32) -> u64 {
    (u64::from(segment) << 32) | u64::from(offset)
}

/// Unpacks a log position.
pub(crate) fn unpack(position: u64) -> (u32, u32) {
    ((position >> 32) as u32, position as u32)
}

/// The file name of segment `id`.
pub(crate) fn segment_name(id: u32) -> String {
    format!("{id:010}.seg")
}

/// The segment id a file name denotes, if it is a segment.
pub(crate) fn parse_segment_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

// Where each field of a frame header starts.
const AT_CRC: usize = 4;
const AT_LEN: usize = 8;
const AT_SEQ: usize = 12;
const AT_HASH: usize = 20;
const AT_TENANT_LEN: usize = 52;

/// The header of a frame holding `bytes`, with its CRC filled in; the frame
/// is this header followed by `bytes`.
pub(crate) fn encode_header(
    tenant: &TenantId,
    seq: u64,
    hash: &Hash,
    bytes: &[u8],
) -> ([u8; HEADER + MAX_TENANT], usize) {
    let mut header = [0u8; HEADER + MAX_TENANT];
    let tenant = tenant.as_str().as_bytes();
    header[0..AT_CRC].copy_from_slice(&MAGIC);
    // Callers check MAX_RECORD; tenant ids are at most 128 bytes.
    header[AT_LEN..AT_SEQ].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    header[AT_SEQ..AT_HASH].copy_from_slice(&seq.to_le_bytes());
    header[AT_HASH..AT_TENANT_LEN].copy_from_slice(hash);
    header[AT_TENANT_LEN] = tenant.len() as u8;
    let used = HEADER + tenant.len();
    header[HEADER..used].copy_from_slice(tenant);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[AT_LEN..used]), bytes);
    header[AT_CRC..AT_LEN].copy_from_slice(&crc.to_le_bytes());
    (header, used)
}

/// Appends to `out` the frame of a receipt: the bytes a segment holds for
/// it (how a PostgreSQL ledger's archived partitions are written, so that
/// every archive reads the same way).
pub fn encode_frame(out: &mut Vec<u8>, tenant: &TenantId, seq: u64, hash: &Hash, bytes: &[u8]) {
    let (header, used) = encode_header(tenant, seq, hash, bytes);
    out.extend_from_slice(&header[..used]);
    out.extend_from_slice(bytes);
}

/// The fields of a frame header as they stand, unchecked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header<'a> {
    pub(crate) magic: [u8; 4],
    pub(crate) crc: u32,
    /// Receipt length as claimed.
    pub(crate) len: u32,
    pub(crate) seq: u64,
    pub(crate) hash: Hash,
    /// The tenant bytes as claimed (`None` when the buffer ends first).
    pub(crate) tenant: Option<&'a [u8]>,
    /// Where the tenant bytes end and the receipt starts.
    pub(crate) body: usize,
}

/// Reads the header at the start of `buf` without checking it (`None` if
/// `buf` is shorter than the fixed part): the one place that knows where
/// each header field lives.
pub(crate) fn peek(buf: &[u8]) -> Option<Header<'_>> {
    let fixed = buf.get(..HEADER)?;
    let word =
        |at: usize| u32::from_le_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&fixed[AT_SEQ..AT_HASH]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&fixed[AT_HASH..AT_TENANT_LEN]);
    let body = HEADER + usize::from(fixed[AT_TENANT_LEN]);
    Some(Header {
        magic: [fixed[0], fixed[1], fixed[2], fixed[3]],
        crc: word(AT_CRC),
        len: word(AT_LEN),
        seq: u64::from_le_bytes(seq),
        hash,
        tenant: buf.get(HEADER..body),
        body,
    })
}

/// A decoded frame borrowing from the segment buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    pub(crate) seq: u64,
    pub(crate) hash: Hash,
    pub(crate) tenant: &'a str,
    pub(crate) bytes: &'a [u8],
    /// Total frame length in bytes.
    pub(crate) len: usize,
}

impl Frame<'_> {
    /// The record this frame holds.
    pub(crate) fn record(&self) -> Record {
        Record {
            tenant: TenantId::new(self.tenant)
                .unwrap_or_else(|_| unreachable!("decode checks ids")),
            seq: self.seq,
            hash: self.hash,
            bytes: Arc::from(self.bytes),
        }
    }
}

/// Why no frame could be decoded at an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The buffer ends inside the frame.
    Short,
    /// The bytes are not a valid frame.
    Bad(&'static str),
}

/// Decodes the frame at the start of `buf`.
pub(crate) fn decode(buf: &[u8]) -> Result<Frame<'_>, FrameError> {
    let Some(header) = peek(buf) else {
        return Err(FrameError::Short);
    };
    if header.magic != MAGIC {
        return Err(FrameError::Bad("bad frame magic"));
    }
    let len = header.len as usize;
    let tenant_len = header.body - HEADER;
    if len > MAX_RECORD {
        return Err(FrameError::Bad("frame length exceeds the record limit"));
    }
    if tenant_len == 0 || tenant_len > MAX_TENANT {
        return Err(FrameError::Bad("bad tenant length"));
    }
    let total = header.body + len;
    if buf.len() < total {
        return Err(FrameError::Short);
    }
    if crc32c::crc32c(&buf[AT_LEN..total]) != header.crc {
        return Err(FrameError::Bad("crc mismatch"));
    }
    let tenant = std::str::from_utf8(&buf[HEADER..header.body])
        .map_err(|_| FrameError::Bad("tenant is not utf-8"))?;
    if TenantId::new(tenant).is_err() {
        return Err(FrameError::Bad("invalid tenant id"));
    }
    Ok(Frame {
        seq: header.seq,
        hash: header.hash,
        tenant,
        bytes: &buf[header.body..total],
        len: total,
    })
}

/// How a segment buffer ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Every byte belongs to a valid frame.
    Clean,
    /// Valid frames end at `offset` and only zero bytes follow: space the
    /// writer filled ahead of its appends (only the last segment has any; a
    /// closed segment is cut to its last frame).
    Preallocated { offset: usize },
    /// Damage at `offset`; `valid_after` says whether any valid frame follows it.
    Damaged {
        offset: usize,
        reason: &'static str,
        valid_after: bool,
    },
}

/// Walks the frames of `buf` from `start`, calling `visit(offset, frame)`
/// until the end or the first damage; a `visit` error stops the walk.
/// `last`: whether `buf` is the last segment, the only one whose frames may
/// be followed by preallocated zeros (elsewhere zeros would hide records).
pub(crate) fn walk<'a, E>(
    buf: &'a [u8],
    start: usize,
    last: bool,
    mut visit: impl FnMut(usize, Frame<'a>) -> Result<(), E>,
) -> Result<Tail, E> {
    let mut at = start;
    while at < buf.len() {
        match decode(&buf[at..]) {
            Ok(frame) => {
                visit(at, frame)?;
                at += frame.len;
            }
            Err(_) if buf[at..].iter().all(|&b| b == 0) => {
                return Ok(if last {
                    Tail::Preallocated { offset: at }
                } else {
                    Tail::Damaged {
                        offset: at,
                        reason: "zero-filled space before the next segment",
                        valid_after: false,
                    }
                });
            }
            Err(err) => {
                let reason = match err {
                    FrameError::Short => "frame cut short",
                    FrameError::Bad(reason) => reason,
                };
                return Ok(Tail::Damaged {
                    offset: at,
                    reason,
                    valid_after: valid_frame_after(buf, at + 1),
                });
            }
        }
    }
    Ok(Tail::Clean)
}

/// Whether a valid frame starts anywhere at or after `from`.
fn valid_frame_after(buf: &[u8], from: usize) -> bool {
    let mut at = from;
    while let Some(found) = buf
        .get(at..)
        .and_then(|rest| rest.windows(MAGIC.len()).position(|w| w == MAGIC))
    {
        if decode(&buf[at + found..]).is_ok() {
            return true;
        }
        at += found + 1;
    }
    false
}

/// Name of the checkpoint file inside a ledger directory.
pub const CHECKPOINT_FILE: &str = "CHECKPOINT";
/// Checkpoint file magic.
const CHECKPOINT_MAGIC: [u8; 8] = *b"GGENCKP1";

/// A decoded checkpoint: the blob and the log position it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Number of records before `position`.
    pub(crate) records: u64,
    /// Packed log position just after the last record it covers.
    pub(crate) position: u64,
    /// The caller's snapshot.
    pub(crate) blob: Arc<[u8]>,
}

/// Encodes a checkpoint file: magic, records, position, blob length, blob, CRC32C.
pub(crate) fn encode_checkpoint(records: u64, position: u64, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(36 + blob.len());
    out.extend_from_slice(&CHECKPOINT_MAGIC);
    out.extend_from_slice(&records.to_le_bytes());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&(blob.len() as u64).to_le_bytes());
    out.extend_from_slice(blob);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a checkpoint file.
pub(crate) fn decode_checkpoint(buf: &[u8]) -> Result<Checkpoint, &'static str> {
    if buf.len() < 36 || buf[0..8] != CHECKPOINT_MAGIC {
        return Err("not a checkpoint file");
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err("checkpoint crc mismatch");
    }
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let blob_len = u64_at(24);
    if blob_len != (body.len() - 32) as u64 {
        return Err("checkpoint length mismatch");
    }
    Ok(Checkpoint {
        records: u64_at(8),
        position: u64_at(16),
        blob: Arc::from(&body[32..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tenant: &str, seq: u64, bytes: &[u8]) -> Vec<u8> {
        let (header, used) = encode_header(
            &TenantId::new(tenant).unwrap(),
            seq,
            &[seq as u8; 32],
            bytes,
        );
        let mut out = header[..used].to_vec();
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn frames_round_trip() {
        let buf = frame("acme", 7, b"{\"x\":1}");
        let f = decode(&buf).unwrap();
        assert_eq!(
            (f.tenant, f.seq, f.bytes, f.len),
            ("acme", 7, &b"{\"x\":1}"[..], buf.len())
        );
        assert_eq!(f.hash, [7; 32]);
    }

    #[test]
    fn every_single_byte_flip_is_caught() {
        let buf = frame("acme", 1, b"payload");
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at {i} undetected");
        }
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut]).err(),
                Some(FrameError::Short),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn walk_distinguishes_torn_tail_from_corruption() {
        let mut buf = frame("a", 1, b"one");
        let second = buf.len();
        buf.extend(frame("a", 2, b"two"));
        buf.extend(frame("a", 3, b"three"));
        let count = |buf: &[u8]| {
            let mut n = 0;
            let tail = walk::<()>(buf, 0, true, |_, _| {
                n += 1;
                Ok(())
            })
            .unwrap();
            (n, tail)
        };
        assert_eq!(count(&buf), (3, Tail::Clean));
        let (n, tail) = count(&buf[..buf.len() - 2]);
        assert_eq!(n, 2);
        assert!(matches!(
            tail,
            Tail::Damaged {
                valid_after: false,
                ..
            }
        ));
        let mut corrupt = buf.clone();
        corrupt[second + HEADER + 2] ^= 0xff;
        let (n, tail) = count(&corrupt);
        assert_eq!(n, 1);
        assert_eq!(
            tail,
            Tail::Damaged {
                offset: second,
                reason: "crc mismatch",
                valid_after: true
            }
        );
    }

    #[test]
    fn checkpoints_round_trip_and_detect_damage() {
        let buf = encode_checkpoint(5, pack(2, 99), b"snapshot");
        let ck = decode_checkpoint(&buf).unwrap();
        assert_eq!(
            (ck.records, unpack(ck.position), &ck.blob[..]),
            (5, (2, 99), &b"snapshot"[..])
        );
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(decode_checkpoint(&bad).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_name(3), "0000000003.seg");
        assert_eq!(parse_segment_name("0000000003.seg"), Some(3));
        for bad in ["3.seg", "000000000x.seg", "0000000003.log", "CHECKPOINT"] {
            assert_eq!(parse_segment_name(bad), None);
        }
    }
}

//! The file ledger's read index, with a memory cost bounded by tenants,
//! not by receipts.
//!
//! In memory each tenant keeps its head, the locations of its records in
//! the segment being written ([`Chain::recent`]), and where its newest
//! sealed run starts ([`Chain::sealed`]). Once a segment is closed its
//! locations move to its index file (`NNNNNNNNNN.idx` beside
//! `NNNNNNNNNN.seg`): for each tenant with records there, the first seq
//! of that run, each record's offset and length, and where the tenant's
//! previous run starts. A tenant's history is so a list linked backwards
//! through index files: its recent receipts are one or two lookups away,
//! an old one costs a lookup per segment it has records in since.
//!
//! Index files are derived data, never the authority: open rebuilds any
//! that is missing or differs from what its scan of the segments found (and
//! removes those of segments it did not seal), and a read checks the file's
//! CRC, the segment and length it names, and the record it points at.
//!
//! The format (little-endian):
//!
//! ```text
//! magic "GGENIDX1" | segment u32 | segment length u64 | tenants u32
//! per tenant, by tenant id: id_len u8 | id | first seq u64
//!     | previous run's segment u32 (0: none) | its first seq u64
//!     | count u32 | count × (offset u32 | frame length u32)
//! crc32c u32 of everything before it
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Loc, lock};
use crate::ledger::segment;
use crate::ledger::{Head, LedgerError, io_err};
use crate::tenant::TenantId;

const MAGIC: [u8; 8] = *b"GGENIDX1";
/// How many index files reads keep parsed.
const CACHED: usize = 4;

/// The file name of segment `id`'s index.
pub(crate) fn index_name(id: u32) -> String {
    format!("{id:010}.idx")
}

/// The segment id an index file name (or its temporary) denotes.
fn parse_index_name(name: &str) -> Option<u32> {
    let stem = name
        .strip_suffix(".idx")
        .or_else(|| name.strip_suffix(".idx.tmp"))?;
    segment::parse_segment_name(&format!("{stem}.seg"))
}

/// Where a tenant's run of records in one sealed segment starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RunStart {
    pub(super) segment: u32,
    pub(super) first: u64,
}

/// One tenant's head and the records the index keeps in memory.
#[derive(Debug)]
pub(super) struct Chain {
    pub(super) head: Head,
    /// Its newest run in a sealed segment, if any.
    pub(super) sealed: Option<RunStart>,
    /// Locations of its records not yet sealed (the newest `recent.len()`
    /// records, ending at `head.seq`), in log order.
    pub(super) recent: Vec<Loc>,
    /// Its records up to this seq are archived (see [`super::anchor`]).
    pub(super) base: u64,
}

impl Default for Chain {
    fn default() -> Chain {
        Chain {
            head: Head::EMPTY,
            sealed: None,
            recent: Vec::new(),
            base: 0,
        }
    }
}

impl Chain {
    /// Adds the location of its newest record. The first one since a seal
    /// takes room for itself alone (most tenants of a large fleet append
    /// one record or a few per segment), later ones grow as a `Vec` does.
    pub(super) fn push_recent(&mut self, loc: Loc) {
        if self.recent.capacity() == 0 {
            self.recent.reserve_exact(1);
        }
        self.recent.push(loc);
    }

    /// The seq of `recent[0]`.
    pub(super) fn recent_first(&self) -> u64 {
        self.head.seq + 1 - self.recent.len() as u64
    }
}

/// One tenant's records in one sealed segment, as sealing builds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) first: u64,
    pub(super) prev: Option<RunStart>,
    /// (offset, frame length) of seqs `first`, `first + 1`, …
    pub(super) locs: Vec<(u32, u32)>,
}

/// Where every tenant's records in one sealed segment are: the index
/// file's bytes, checked once and then read in place (a lookup is a binary
/// search of the tenant table; nothing is allocated per tenant).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SegmentIndex {
    pub(super) segment: u32,
    /// The segment file's length: the end of its last frame.
    pub(super) len: u64,
    tenants: usize,
    bytes: Vec<u8>,
}

/// The fixed part of the file before the tenant table.
const HEAD: usize = 24;
/// The fixed part of a tenant's entry after its id.
const ENTRY: usize = 24;

/// One tenant's run, read in place from a [`SegmentIndex`].
#[derive(Debug, Clone, Copy)]
pub(super) struct RunView<'a> {
    pub(super) first: u64,
    pub(super) prev: Option<RunStart>,
    locs: &'a [u8],
}

impl RunView<'_> {
    pub(super) fn len(&self) -> usize {
        self.locs.len() / 8
    }

    /// (offset, frame length) of seq `first + i`.
    pub(super) fn loc(&self, i: usize) -> (u32, u32) {
        let at = &self.locs[i * 8..i * 8 + 8];
        (le32(&at[..4]), le32(&at[4..]))
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap_or_default())
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or_default())
}

impl SegmentIndex {
    /// Encodes the runs of segment `segment` (`len` bytes long).
    pub(super) fn build(segment: u32, len: u64, runs: &BTreeMap<Box<str>, Run>) -> SegmentIndex {
        let records: usize = runs.values().map(|r| r.locs.len()).sum();
        let mut bytes = Vec::with_capacity(HEAD + 4 + runs.len() * 44 + records * 8);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&segment.to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&(runs.len() as u32).to_le_bytes());
        let table = bytes.len();
        bytes.resize(table + runs.len() * 4, 0);
        for (i, (tenant, run)) in runs.iter().enumerate() {
            let at = bytes.len() as u32;
            bytes[table + i * 4..table + i * 4 + 4].copy_from_slice(&at.to_le_bytes());
            bytes.push(tenant.len() as u8);
            bytes.extend_from_slice(tenant.as_bytes());
            bytes.extend_from_slice(&run.first.to_le_bytes());
            let prev = run.prev.unwrap_or(RunStart {
                segment: 0,
                first: 0,
            });
            bytes.extend_from_slice(&prev.segment.to_le_bytes());
            bytes.extend_from_slice(&prev.first.to_le_bytes());
            bytes.extend_from_slice(&(run.locs.len() as u32).to_le_bytes());
            for (offset, len) in &run.locs {
                bytes.extend_from_slice(&offset.to_le_bytes());
                bytes.extend_from_slice(&len.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        SegmentIndex {
            segment,
            len,
            tenants: runs.len(),
            bytes,
        }
    }

    /// The file's bytes.
    fn encoded(&self) -> &[u8] {
        &self.bytes
    }

    /// Checks an index file whole (CRC, structure, tenant order), so that
    /// lookups in it cannot go out of bounds.
    fn decode(bytes: Vec<u8>) -> Result<SegmentIndex, &'static str> {
        let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
            return Err("index file too short");
        };
        if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
            return Err("index file CRC mismatch");
        }
        if body.len() < HEAD || body[..8] != MAGIC {
            return Err("not an index file");
        }
        let segment = le32(&body[8..12]);
        let len = le64(&body[12..20]);
        let tenants = le32(&body[20..24]) as usize;
        let table_end = tenants
            .checked_mul(4)
            .and_then(|t| t.checked_add(HEAD))
            .filter(|&end| end <= body.len())
            .ok_or("index tenant table out of range")?;
        let mut expected = table_end;
        let mut last: Option<&[u8]> = None;
        for i in 0..tenants {
            let at = le32(&body[HEAD + i * 4..HEAD + i * 4 + 4]) as usize;
            if at != expected || at >= body.len() {
                return Err("index entry out of place");
            }
            let id_len = usize::from(body[at]);
            let fixed = at + 1 + id_len;
            if id_len == 0 || fixed + ENTRY > body.len() {
                return Err("index entry truncated");
            }
            let id = &body[at + 1..fixed];
            if std::str::from_utf8(id).is_err() || last.is_some_and(|l| l >= id) {
                return Err("index tenant ids not sorted");
            }
            last = Some(id);
            let count = le32(&body[fixed + 20..fixed + 24]) as usize;
            if count == 0 {
                return Err("index run empty");
            }
            expected = count
                .checked_mul(8)
                .and_then(|n| n.checked_add(fixed + ENTRY))
                .filter(|&end| end <= body.len())
                .ok_or("index run out of range")?;
        }
        if expected != body.len() {
            return Err("trailing bytes in index file");
        }
        Ok(SegmentIndex {
            segment,
            len,
            tenants,
            bytes,
        })
    }

    fn id_at(&self, i: usize) -> (&[u8], usize) {
        let at = le32(&self.bytes[HEAD + i * 4..HEAD + i * 4 + 4]) as usize;
        let id_len = usize::from(self.bytes[at]);
        (&self.bytes[at + 1..at + 1 + id_len], at + 1 + id_len)
    }

    /// Every tenant's run in this segment, by tenant id.
    pub(super) fn runs(&self) -> impl Iterator<Item = (&str, RunView<'_>)> {
        (0..self.tenants).filter_map(|i| {
            let (id, _) = self.id_at(i);
            let tenant = std::str::from_utf8(id).ok()?;
            Some((tenant, self.run(tenant)?))
        })
    }

    /// `tenant`'s run in this segment, if it has one.
    pub(super) fn run(&self, tenant: &str) -> Option<RunView<'_>> {
        let (mut lo, mut hi) = (0, self.tenants);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (id, fixed) = self.id_at(mid);
            match id.cmp(tenant.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let b = &self.bytes[fixed..fixed + ENTRY];
                    let count = le32(&b[20..24]) as usize;
                    let prev = match le32(&b[8..12]) {
                        0 => None,
                        segment => Some(RunStart {
                            segment,
                            first: le64(&b[12..20]),
                        }),
                    };
                    return Some(RunView {
                        first: le64(&b[..8]),
                        prev,
                        locs: &self.bytes[fixed + ENTRY..fixed + ENTRY + count * 8],
                    });
                }
            }
        }
        None
    }
}

/// Moves every chain's locations in segments before `below` out of
/// memory: returns the index of each segment they were in.
pub(super) fn seal(
    chains: &mut HashMap<TenantId, Chain>,
    below: u32,
) -> BTreeMap<u32, SegmentIndex> {
    // Per segment: its length and every tenant's run, by tenant id.
    let mut sealed: BTreeMap<u32, (u64, BTreeMap<Box<str>, Run>)> = BTreeMap::new();
    for (tenant, chain) in chains.iter_mut() {
        let n = chain
            .recent
            .partition_point(|l| segment::unpack(l.position).0 < below);
        if n == 0 {
            continue;
        }
        let mut first = chain.recent_first();
        // A fresh vector: the old one's capacity (a busy segment's worth
        // of locations) is given back.
        let rest = chain.recent.split_off(n);
        let old = std::mem::replace(&mut chain.recent, rest);
        for group in
            old.chunk_by(|a, b| segment::unpack(a.position).0 == segment::unpack(b.position).0)
        {
            let id = segment::unpack(group[0].position).0;
            let (len, runs) = sealed.entry(id).or_default();
            let locs: Vec<(u32, u32)> = group
                .iter()
                .map(|l| (segment::unpack(l.position).1, l.len))
                .collect();
            if let Some(&(offset, frame)) = locs.last() {
                *len = (*len).max(u64::from(offset) + u64::from(frame));
            }
            runs.insert(
                Box::from(tenant.as_str()),
                Run {
                    first,
                    prev: chain.sealed,
                    locs,
                },
            );
            chain.sealed = Some(RunStart { segment: id, first });
            first += group.len() as u64;
        }
    }
    sealed
        .into_iter()
        .map(|(id, (len, runs))| (id, SegmentIndex::build(id, len, &runs)))
        .collect()
}

/// The sealed segments' index files: those not yet written (kept until
/// they are), and a few recently read.
#[derive(Debug)]
pub(super) struct Indexes {
    dir: PathBuf,
    unwritten: Mutex<BTreeMap<u32, Arc<SegmentIndex>>>,
    cache: Mutex<VecDeque<Arc<SegmentIndex>>>,
}

impl Indexes {
    pub(super) fn new(dir: PathBuf) -> Indexes {
        Indexes {
            dir,
            unwritten: Mutex::new(BTreeMap::new()),
            cache: Mutex::new(VecDeque::new()),
        }
    }

    /// Holds `sealed` for reads until [`Indexes::write_out`] stores it.
    pub(super) fn hold(&self, sealed: BTreeMap<u32, SegmentIndex>) {
        let mut unwritten = lock(&self.unwritten);
        for (id, index) in sealed {
            unwritten.insert(id, Arc::new(index));
        }
    }

    /// Writes every held index file; one that fails stays held (and is
    /// tried again next time).
    pub(super) fn write_out(&self) {
        let held: Vec<Arc<SegmentIndex>> = lock(&self.unwritten).values().cloned().collect();
        for index in held {
            match write(&self.dir, &index) {
                Ok(()) => {
                    lock(&self.unwritten).remove(&index.segment);
                }
                Err(error) => {
                    tracing::warn!(error = %error, "writing a ledger index file failed: kept in memory");
                }
            }
        }
    }

    /// Drops what is held or cached of segment `id` (cut from the log).
    pub(super) fn forget(&self, id: u32) {
        lock(&self.unwritten).remove(&id);
        lock(&self.cache).retain(|i| i.segment != id);
    }

    /// Segment `id`'s index: held, cached, or read and checked.
    pub(super) fn get(&self, id: u32) -> Result<Arc<SegmentIndex>, LedgerError> {
        if let Some(index) = lock(&self.unwritten).get(&id) {
            return Ok(Arc::clone(index));
        }
        if let Some(index) = lock(&self.cache).iter().find(|i| i.segment == id) {
            return Ok(Arc::clone(index));
        }
        let path = self.dir.join(index_name(id));
        let corrupt = |reason: String| LedgerError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason,
        };
        let bytes = fs_err::read(&path).map_err(io_err(&path))?;
        let index = SegmentIndex::decode(bytes).map_err(|r| corrupt(r.to_owned()))?;
        let seg = self.dir.join(segment::segment_name(id));
        let seg_len = fs_err::metadata(&seg).map_err(io_err(&seg))?.len();
        if index.segment != id || index.len != seg_len {
            return Err(corrupt(format!(
                "index names segment {} of {} bytes, not segment {id} of {seg_len}",
                index.segment, index.len
            )));
        }
        let index = Arc::new(index);
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHED {
            cache.pop_front();
        }
        cache.push_back(Arc::clone(&index));
        Ok(index)
    }
}

/// Writes `index`'s file (a temporary, then a rename). Not synced: a file
/// a crash damaged fails its CRC and open rebuilds it.
fn write(dir: &Path, index: &SegmentIndex) -> io::Result<()> {
    let path = dir.join(index_name(index.segment));
    let tmp = dir.join(format!("{}.tmp", index_name(index.segment)));
    let written = super::create_no_link(&tmp)
        .and_then(|mut file| io::Write::write_all(&mut file, index.encoded()))
        .and_then(|()| fs_err::rename(&tmp, &path));
    if written.is_err() {
        // A full disk keeps no half-written temporary.
        let _ = fs_err::remove_file(&tmp);
    }
    written
}

/// Open's part: makes segment `index.segment`'s file hold exactly `index`
/// (rewritten if missing or different). Returns the index when the write
/// failed, to be held in memory instead.
pub(super) fn ensure(dir: &Path, index: SegmentIndex) -> Option<SegmentIndex> {
    let path = dir.join(index_name(index.segment));
    if fs_err::read(&path).is_ok_and(|stored| stored == index.encoded()) {
        return None;
    }
    match write(dir, &index) {
        Ok(()) => None,
        Err(error) => {
            tracing::warn!(error = %error, "writing a ledger index file failed: kept in memory");
            Some(index)
        }
    }
}

/// Open's part: removes index files (and temporaries) of segments open did
/// not seal (the segment being written, or one that is gone).
pub(super) fn remove_others(dir: &Path, sealed: &dyn Fn(u32) -> bool) -> Result<(), LedgerError> {
    for entry in fs_err::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(parse_index_name) else {
            continue;
        };
        if name.to_str().is_some_and(|n| n.ends_with(".tmp")) || !sealed(id) {
            let path = entry.path();
            fs_err::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// The locations of seqs `from`, `from + 1`, … (at most `limit`) of a
/// tenant whose newest sealed run is `sealed`, followed by `recent` (its
/// unsealed locations, the first of them seq `recent_first`): follows the
/// runs back through the index files to the one holding `from`.
pub(super) fn locate(
    indexes: &Indexes,
    tenant: &str,
    from: u64,
    limit: usize,
    sealed: Option<RunStart>,
    recent_first: u64,
    recent: &[Loc],
) -> Result<Vec<(u64, Loc)>, LedgerError> {
    // The runs from the one holding `from` on, newest first: where each
    // is (its index is read again below, one at a time, so a walk through
    // many segments holds one index file, not all of them).
    let mut runs: Vec<(u32, u64)> = Vec::new();
    let mut next = sealed;
    let mut end = recent_first;
    while from < end {
        let Some(start) = next else {
            return Err(LedgerError::Corrupt {
                path: indexes.dir.clone(),
                offset: 0,
                reason: format!(
                    "tenant `{tenant}`: seqs {from} to {} are in no index",
                    end - 1
                ),
            });
        };
        let index = indexes.get(start.segment)?;
        let run = linked(indexes, &index, tenant, start, end)?;
        end = run.first;
        next = run.prev;
        runs.push((start.segment, run.first));
    }
    let mut out = Vec::with_capacity(limit.min(1024));
    for &(segment, first) in runs.iter().rev() {
        if out.len() == limit {
            return Ok(out);
        }
        let index = indexes.get(segment)?;
        let Some(run) = index.run(tenant).filter(|r| r.first == first) else {
            return Err(LedgerError::Corrupt {
                path: indexes.dir.join(index_name(segment)),
                offset: 0,
                reason: format!("tenant `{tenant}`: its run changed while it was read"),
            });
        };
        let skip = usize::try_from(from.saturating_sub(run.first)).unwrap_or(usize::MAX);
        for i in skip..run.len() {
            if out.len() == limit {
                return Ok(out);
            }
            let (offset, len) = run.loc(i);
            out.push((
                run.first + i as u64,
                Loc {
                    position: segment::pack(index.segment, offset),
                    len,
                },
            ));
        }
    }
    let skip = usize::try_from(from.saturating_sub(recent_first)).unwrap_or(usize::MAX);
    for (i, loc) in recent.iter().enumerate().skip(skip) {
        if out.len() == limit {
            break;
        }
        out.push((recent_first + i as u64, *loc));
    }
    Ok(out)
}

/// `tenant`'s run in `index`, checked to be the one `start` names and to
/// end right before seq `end` (where the newer run starts): a list that
/// does not link, or loops, is refused.
fn linked<'a>(
    indexes: &Indexes,
    index: &'a SegmentIndex,
    tenant: &str,
    start: RunStart,
    end: u64,
) -> Result<RunView<'a>, LedgerError> {
    let broken = |reason: &str| LedgerError::Corrupt {
        path: indexes.dir.join(index_name(start.segment)),
        offset: 0,
        reason: format!("tenant `{tenant}`: {reason}"),
    };
    let run = index
        .run(tenant)
        .ok_or_else(|| broken("no run where the newer one says"))?;
    if run.first != start.first
        || run.first.checked_add(run.len() as u64) != Some(end)
        || run.prev.is_some_and(|p| p.segment >= start.segment)
    {
        return Err(broken("run does not link to the newer one"));
    }
    Ok(run)
}

/// The location and seq of a tenant's last record before the log position
/// `position`, among its sealed runs (newest `sealed`, ending before seq
/// `end`), if it has one.
pub(super) fn last_before(
    indexes: &Indexes,
    tenant: &str,
    position: u64,
    sealed: Option<RunStart>,
    end: u64,
    floor: u32,
) -> Result<Option<(u64, Loc)>, LedgerError> {
    let (at_segment, at_offset) = segment::unpack(position);
    let mut next = sealed;
    let mut end = end;
    // Runs in archived segments (before `floor`) are not local.
    while let Some(start) = next.filter(|s| s.segment >= floor) {
        let index = indexes.get(start.segment)?;
        let run = linked(indexes, &index, tenant, start, end)?;
        let covered = match start.segment.cmp(&at_segment) {
            std::cmp::Ordering::Less => run.len(),
            std::cmp::Ordering::Equal => {
                let (mut lo, mut hi) = (0, run.len());
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if run.loc(mid).0 < at_offset {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                lo
            }
            std::cmp::Ordering::Greater => 0,
        };
        if covered > 0 {
            let (offset, len) = run.loc(covered - 1);
            return Ok(Some((
                run.first + covered as u64 - 1,
                Loc {
                    position: segment::pack(start.segment, offset),
                    len,
                },
            )));
        }
        end = run.first;
        next = run.prev;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(segment: u32, offset: u32) -> Loc {
        Loc {
            position: segment::pack(segment, offset),
            len: 10,
        }
    }

    #[test]
    fn encode_decode_round_trip_and_damage_is_refused() {
        let mut chains: HashMap<TenantId, Chain> = HashMap::new();
        chains.insert(
            TenantId::new("a").unwrap(),
            Chain {
                head: Head {
                    seq: 3,
                    hash: [1; 32],
                },
                sealed: None,
                recent: vec![loc(1, 0), loc(1, 20), loc(2, 0)],
                base: 0,
            },
        );
        let sealed = seal(&mut chains, 2);
        let index = &sealed[&1];
        assert_eq!(index.len, 30);
        let run = index.run("a").unwrap();
        assert_eq!((run.first, run.prev, run.len()), (1, None, 2));
        assert_eq!((run.loc(0), run.loc(1)), ((0, 10), (20, 10)));
        assert!(index.run("b").is_none());
        let chain = &chains["a"];
        assert_eq!(chain.recent.len(), 1);
        assert_eq!(chain.recent_first(), 3);
        assert_eq!(
            chain.sealed,
            Some(RunStart {
                segment: 1,
                first: 1
            })
        );
        let bytes = index.encoded().to_vec();
        assert_eq!(SegmentIndex::decode(bytes.clone()).as_ref(), Ok(index));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(SegmentIndex::decode(bad).is_err(), "flip at {at}");
        }
        assert!(SegmentIndex::decode(bytes[..bytes.len() - 1].to_vec()).is_err());
    }

    #[test]
    fn index_names() {
        assert_eq!(index_name(7), "0000000007.idx");
        assert_eq!(parse_index_name("0000000007.idx"), Some(7));
        assert_eq!(parse_index_name("0000000007.idx.tmp"), Some(7));
        assert_eq!(parse_index_name("0000000007.seg"), None);
        assert_eq!(parse_index_name("7.idx"), None);
    }
}

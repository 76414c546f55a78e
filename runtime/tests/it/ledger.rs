//! The receipt ledger: memory and file backends, on real files in temp dirs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ggen_runtime::canonical;
use ggen_runtime::ledger::file::{FileLedger, FileOptions, verify_dir};
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::ledger::{
    Entry, GENESIS, Hash, Head, Ledger, LedgerError, Record, Recovered, chain_hash,
};
use ggen_runtime::tenant::TenantId;
use serde_json::json;

mod archive;
mod checkpoint;
mod cli;
mod index;
pub(crate) mod postgres;
mod postgres_retention;
mod postgres_tree;
pub(crate) mod postgres_turns;
mod proptests;
mod retention;
mod transparency;

/// Frame header size before the tenant bytes (pinned on-disk format).
const FRAME_HEADER: usize = 53;

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

/// Canonical receipt bytes for the next receipt of `t` after `head`.
fn receipt(t: &TenantId, head: Head, note: &str) -> Vec<u8> {
    canonical::to_vec(&json!({
        "v": 1,
        // The SKU of the test packs `ledger verify` runs with.
        "sku": "test_guard",
        "tenant": t,
        "seq": head.seq + 1,
        "kind": "signal",
        "prev": hex::encode(head.hash),
        "decision": { "level": "warn", "value": "120.5", "note": note },
    }))
    .unwrap()
}

/// The entry that extends `t`'s chain at its current head.
fn next_entry(ledger: &dyn Ledger, t: &TenantId, note: &str) -> Entry {
    let head = ledger.head(t);
    Entry {
        tenant: t.clone(),
        seq: head.seq + 1,
        prev: head.hash,
        bytes: receipt(t, head, note),
    }
}

/// Appends the next receipt of `t`; returns its bytes.
fn append_next(ledger: &dyn Ledger, t: &TenantId, note: &str) -> Vec<u8> {
    let entry = next_entry(ledger, t, note);
    let (prev, bytes) = (entry.prev, entry.bytes.clone());
    let appended = ledger.append(entry).unwrap();
    assert_eq!(appended.hash, chain_hash(&prev, &bytes));
    appended.ticket.wait().unwrap();
    bytes
}

fn fast_options() -> FileOptions {
    FileOptions {
        sync: Arc::new(|_| Ok(())),
        ..FileOptions::default()
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    files_ending(dir, "seg")
}

/// The files of `dir` with extension `ext`, sorted.
fn files_ending(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

/// Frames of a segment file: (offset, length, tenant, seq).
fn frames(path: &Path) -> Vec<(usize, usize, String, u64)> {
    frames_in(&fs_err::read(path).unwrap())
}

/// Where the frames of a segment end: its preallocated zeros start there.
fn data_end(path: &Path) -> usize {
    frames(path).last().map_or(0, |(at, len, ..)| at + len)
}

/// Frames of a segment's bytes, up to its zero-filled tail.
fn frames_in(buf: &[u8]) -> Vec<(usize, usize, String, u64)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at + FRAME_HEADER <= buf.len() && buf[at..].iter().any(|&b| b != 0) {
        let len = u32::from_le_bytes(buf[at + 8..at + 12].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(buf[at + 12..at + 20].try_into().unwrap());
        let tl = usize::from(buf[at + 52]);
        let tenant =
            String::from_utf8(buf[at + FRAME_HEADER..at + FRAME_HEADER + tl].to_vec()).unwrap();
        let total = FRAME_HEADER + tl + len;
        out.push((at, total, tenant, seq));
        at += total;
    }
    out
}

/// Rewrites the receipt of the frame at `at` (`len` bytes) in `buf`:
/// `from` replaced by `to` (of the same length), the frame's CRC recomputed,
/// and with `prev` also its header hash (SHA-256(prev ‖ bytes)): what anyone
/// who can write the ledger folder can do.
fn forge_frame(buf: &mut [u8], at: usize, len: usize, from: &str, to: &str, prev: Option<Hash>) {
    assert_eq!(from.len(), to.len());
    let frame = &mut buf[at..at + len];
    let body = FRAME_HEADER + usize::from(frame[52]);
    let found = frame[body..]
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .expect("text to forge not in the receipt");
    frame[body + found..body + found + to.len()].copy_from_slice(to.as_bytes());
    if let Some(prev) = prev {
        let hash = chain_hash(&prev, &frame[body..]);
        frame[20..52].copy_from_slice(&hash);
    }
    let crc = crc32c::crc32c(&frame[8..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// A file ledger in a temp dir with `per_tenant` receipts for each of `tenants`, interleaved.
fn populated(tenants: &[&str], per_tenant: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ledger = FileLedger::open(dir.path(), fast_options()).unwrap();
    for i in 0..per_tenant {
        for t in tenants {
            append_next(&ledger, &tenant(t), &format!("r{i}"));
        }
    }
    dir
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    copy_into(from, to.path());
    to
}

/// Copies `from`'s files and folders (the Merkle tree's) into `to`.
fn copy_into(from: &Path, to: &Path) {
    for entry in fs_err::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            fs_err::create_dir(&target).unwrap();
            copy_into(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), target).unwrap();
        }
    }
}

fn collect_scan(ledger: &dyn Ledger) -> Vec<Record> {
    let mut out = Vec::new();
    ledger
        .scan(&mut |r| {
            out.push(r.clone());
            Ok(())
        })
        .unwrap();
    out
}

fn backends() -> Vec<(Box<dyn Ledger>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    vec![
        (Box::new(MemoryLedger::new()), None),
        (
            Box::new(FileLedger::open(dir.path(), fast_options()).unwrap()),
            Some(dir),
        ),
    ]
}

#[test]
fn chains_append_read_and_verify_on_both_backends() {
    for (ledger, _dir) in backends() {
        let (a, b) = (tenant("acme"), tenant("beta"));
        assert_eq!(ledger.head(&a), Head::EMPTY);
        for i in 0..5 {
            append_next(&*ledger, &a, &format!("a{i}"));
            if i % 2 == 0 {
                append_next(&*ledger, &b, &format!("b{i}"));
            }
        }
        assert_eq!(ledger.head(&a).seq, 5);
        assert_eq!(ledger.head(&b).seq, 3);
        let page = ledger.read(&a, 1, 2).unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
        assert!(page.iter().all(|r| r.tenant == a));
        assert_eq!(ledger.read(&a, 4, 10).unwrap().len(), 1);
        assert!(ledger.read(&a, 5, 10).unwrap().is_empty());
        assert!(ledger.read(&tenant("nobody"), 0, 10).unwrap().is_empty());
        let all = ledger.read(&a, 0, usize::MAX).unwrap();
        assert_eq!(all[0].hash, chain_hash(&GENESIS, &all[0].bytes));
        assert_eq!(all[4].hash, ledger.head(&a).hash);
        assert_eq!(collect_scan(&*ledger).len(), 8);
        let report = ledger.verify().unwrap();
        assert_eq!(
            (report.tenants, report.receipts, report.first_bad),
            (2, 8, None)
        );
        ledger.flush().unwrap();
    }
}

#[test]
fn append_with_wrong_seq_or_prev_is_refused() {
    for (ledger, _dir) in backends() {
        let t = tenant("acme");
        append_next(&*ledger, &t, "first");
        let head = ledger.head(&t);
        let bytes = receipt(&t, head, "x");
        for (seq, prev) in [
            (head.seq, head.hash),
            (head.seq + 2, head.hash),
            (head.seq + 1, GENESIS),
        ] {
            let err = ledger
                .append(Entry {
                    tenant: t.clone(),
                    seq,
                    prev,
                    bytes: bytes.clone(),
                })
                .unwrap_err();
            assert!(
                matches!(err, LedgerError::ChainMismatch { expected_seq: 2, got_seq, .. } if got_seq == seq),
                "{err}"
            );
        }
        assert_eq!(
            ledger.head(&t),
            head,
            "a refused append must not move the head"
        );
        assert_eq!(ledger.verify().unwrap().first_bad, None);
    }
}

#[test]
fn verify_reports_receipts_whose_fields_lie() {
    let ledger = MemoryLedger::new();
    let t = tenant("acme");
    append_next(&ledger, &t, "ok");
    let head = ledger.head(&t);
    // Chain-correct frame, but the bytes claim another seq.
    let bytes = receipt(&t, Head { seq: 5, ..head }, "lie");
    ledger
        .append(Entry {
            tenant: t.clone(),
            seq: 2,
            prev: head.hash,
            bytes,
        })
        .unwrap();
    let bad = ledger.verify().unwrap().first_bad.unwrap();
    assert_eq!((bad.tenant.as_str(), bad.seq), ("acme", 2));
    assert!(bad.reason.contains("names seq `6`"), "{}", bad.reason);
}

#[test]
fn reopen_preserves_heads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions {
        segment_bytes: 4096,
        ..fast_options()
    };
    let heads: Vec<(TenantId, Head)> = {
        let ledger = FileLedger::open(dir.path(), options.clone()).unwrap();
        for i in 0..60 {
            append_next(&ledger, &tenant(["a", "b", "c"][i % 3]), &format!("n{i}"));
        }
        ["a", "b", "c"]
            .iter()
            .map(|t| (tenant(t), ledger.head(&tenant(t))))
            .collect()
    };
    assert!(segments(dir.path()).len() > 2, "segments did not rotate");
    let ledger = FileLedger::open(dir.path(), options).unwrap();
    assert!(ledger.repair().is_none());
    for (t, head) in &heads {
        assert_eq!(ledger.head(t), *head);
        assert_eq!(ledger.read(t, 0, usize::MAX).unwrap().len(), 20);
    }
    append_next(&ledger, &tenant("a"), "after reopen");
    assert_eq!(ledger.head(&tenant("a")).seq, 21);
    assert_eq!(ledger.verify().unwrap().receipts, 61);
    drop(ledger);
    assert_eq!(verify_dir(dir.path()).unwrap().first_bad, None);
}

#[test]
fn two_opens_of_one_dir_are_locked() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileLedger::open(dir.path(), fast_options()).unwrap();
    let err = FileLedger::open(dir.path(), fast_options()).unwrap_err();
    assert!(matches!(err, LedgerError::Locked { .. }), "{err}");
    drop(first);
    FileLedger::open(dir.path(), fast_options()).unwrap();
}

#[test]
fn flipping_any_byte_is_detected() {
    let original = populated(&["acme", "beta"], 3);
    let seg = &segments(original.path())[0];
    let clean = fs_err::read(seg).unwrap();
    let last = frames(seg).last().unwrap().0;
    let end = data_end(seg);
    assert!(clean.len() > end, "the segment is zero-filled ahead");
    // Every byte of every frame, and the start of the preallocated zeros.
    for at in 0..end + 64 {
        let dir = copy_dir(original.path());
        let path = dir.path().join(seg.file_name().unwrap());
        let mut bytes = clean.clone();
        bytes[at] ^= 0x20;
        fs_err::write(&path, &bytes).unwrap();
        let report = verify_dir(dir.path()).unwrap();
        assert!(
            report.first_bad.is_some(),
            "flip at {at} not reported by verify_dir"
        );
        match FileLedger::open(dir.path(), fast_options()) {
            Err(LedgerError::Corrupt { offset, .. }) if at < last => {
                assert!(offset as usize <= at);
            }
            // The final record looks like a torn write, but the tree was
            // synced with it: acknowledged, so refused and left as it is.
            Err(LedgerError::Corrupt { offset, reason, .. }) => {
                assert!(at < end && offset as usize == last, "flip at {at}");
                assert!(reason.contains("acknowledged"), "{reason}");
                assert_eq!(fs_err::read(&path).unwrap(), bytes, "flip at {at}");
            }
            Err(err) => panic!("unexpected error for flip at {at}: {err}"),
            // A flip past the last frame is garbage after the end: cut.
            Ok(ledger) => {
                assert!(at >= end, "open accepted a flip at {at}");
                assert_eq!(ledger.repair().map(|r| r.offset as usize), Some(end));
            }
        }
    }
}

#[test]
fn dropped_or_reordered_records_are_detected() {
    let original = populated(&["acme", "beta"], 4);
    let seg = &segments(original.path())[0];
    let clean = fs_err::read(seg).unwrap();
    let fr = frames(seg);
    // Frame 2 is acme seq 2; frame 4 is acme seq 3.
    assert_eq!((fr[2].2.as_str(), fr[2].3, fr[4].3), ("acme", 2, 3));
    let slice = |i: usize| &clean[fr[i].0..fr[i].0 + fr[i].1];

    let mut dropped = clean[..fr[2].0].to_vec();
    dropped.extend_from_slice(&clean[fr[3].0..]);
    let mut reordered = clean[..fr[2].0].to_vec();
    reordered.extend_from_slice(slice(4));
    reordered.extend_from_slice(slice(3));
    reordered.extend_from_slice(slice(2));
    reordered.extend_from_slice(&clean[fr[5].0..]);

    for (name, bytes, bad_seq) in [("dropped", dropped, 3), ("reordered", reordered, 3)] {
        let dir = copy_dir(original.path());
        fs_err::write(dir.path().join(seg.file_name().unwrap()), &bytes).unwrap();
        let bad = verify_dir(dir.path()).unwrap().first_bad.expect(name);
        assert_eq!(
            (bad.tenant.as_str(), bad.seq),
            ("acme", bad_seq),
            "{name}: {}",
            bad.reason
        );
        let err = FileLedger::open(dir.path(), fast_options()).unwrap_err();
        assert!(
            matches!(&err, LedgerError::BrokenChain { tenant, seq, .. } if tenant == "acme" && *seq == bad_seq),
            "{name}: {err}"
        );
    }
}

#[test]
fn truncation_before_the_checkpoint_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = FileLedger::open(dir.path(), fast_options()).unwrap();
        for i in 0..6 {
            append_next(&ledger, &tenant("acme"), &format!("{i}"));
        }
        ledger.checkpoint(ledger.mark().unwrap(), b"state").unwrap();
    }
    let seg = &segments(dir.path())[0];
    let fr = frames(seg);
    // Cut at a record boundary: the frames are intact, but the checkpoint says more existed.
    let file = fs_err::OpenOptions::new().write(true).open(seg).unwrap();
    file.set_len(fr[4].0 as u64).unwrap();
    drop(file);
    let bad = verify_dir(dir.path()).unwrap().first_bad.unwrap();
    assert!(bad.reason.contains("points past the end"), "{}", bad.reason);
    let err = FileLedger::open(dir.path(), fast_options()).unwrap_err();
    assert!(matches!(err, LedgerError::Corrupt { .. }), "{err}");
}

#[test]
fn truncated_middle_segment_refuses_open() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions {
        segment_bytes: 4096,
        ..fast_options()
    };
    {
        let ledger = FileLedger::open(dir.path(), options.clone()).unwrap();
        for i in 0..60 {
            append_next(&ledger, &tenant("acme"), &format!("{i}"));
        }
    }
    let first = &segments(dir.path())[0];
    let len = fs_err::metadata(first).unwrap().len();
    let file = fs_err::OpenOptions::new().write(true).open(first).unwrap();
    file.set_len(len - 10).unwrap();
    drop(file);
    assert!(verify_dir(dir.path()).unwrap().first_bad.is_some());
    let err = FileLedger::open(dir.path(), options).unwrap_err();
    assert!(
        matches!(err, LedgerError::Corrupt { ref path, .. } if path == first),
        "{err}"
    );
}

#[test]
fn torn_tail_at_every_offset_is_truncated_and_the_chain_continues() {
    let original = populated(&["acme", "beta"], 3);
    let seg = &segments(original.path())[0];
    let (last_at, last_len, last_tenant, last_seq) = frames(seg).last().cloned().unwrap();
    let t = tenant(&last_tenant);
    // A crash tears only a record that was never durable, so never in the
    // Merkle tree either: the tree synced when the ledger closed goes.
    fs_err::remove_dir_all(original.path().join("tree")).unwrap();
    for cut in last_at + 1..last_at + last_len {
        let dir = copy_dir(original.path());
        let path = dir.path().join(seg.file_name().unwrap());
        let file = fs_err::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(cut as u64).unwrap();
        drop(file);
        let ledger = FileLedger::open(dir.path(), fast_options()).unwrap();
        let repair = ledger.repair().cloned().expect("torn tail not repaired");
        assert_eq!(
            (repair.offset as usize, repair.dropped as usize),
            (last_at, cut - last_at)
        );
        assert_eq!(fs_err::metadata(&path).unwrap().len() as usize, last_at);
        assert_eq!(ledger.head(&t).seq, last_seq - 1);
        assert_eq!(ledger.verify().unwrap().first_bad, None);
        append_next(&ledger, &t, "after the tear");
        assert_eq!(ledger.head(&t).seq, last_seq);
        drop(ledger);
        let report = verify_dir(dir.path()).unwrap();
        assert_eq!(
            (report.receipts, report.first_bad),
            (6, None),
            "cut at {cut}"
        );
    }
    // A tear inside preallocated space: the rest of the record reads as zeros.
    for cut in [last_at + 1, last_at + FRAME_HEADER, last_at + last_len - 1] {
        let dir = copy_dir(original.path());
        let path = dir.path().join(seg.file_name().unwrap());
        let mut bytes = fs_err::read(&path).unwrap();
        let file_len = bytes.len();
        bytes[cut..].fill(0);
        fs_err::write(&path, &bytes).unwrap();
        let ledger = FileLedger::open(dir.path(), fast_options()).unwrap();
        let repair = ledger.repair().cloned().expect("torn tail not repaired");
        assert_eq!(
            (repair.offset as usize, repair.dropped as usize),
            (last_at, file_len - last_at)
        );
        assert_eq!(ledger.head(&t).seq, last_seq - 1);
        append_next(&ledger, &t, "after the tear");
        drop(ledger);
        assert_eq!(verify_dir(dir.path()).unwrap().receipts, 6, "cut at {cut}");
    }
}

/// A damaged last record that durable evidence covers (the checkpoint's
/// mark, or the tree's synced size) was acknowledged: open refuses it and
/// changes nothing, instead of cutting it as a torn write; verify says
/// receipts were lost when the log is shorter than the synced tree.
#[test]
fn a_damaged_acknowledged_last_record_is_refused_not_cut() {
    let original = populated(&["acme", "beta"], 3);
    let seg = &segments(original.path())[0];
    let (last_at, last_len, ..) = frames(seg).last().cloned().unwrap();
    let damaged = |dir: &Path| {
        let path = dir.join(seg.file_name().unwrap());
        let mut bytes = fs_err::read(&path).unwrap();
        bytes[last_at + last_len - 2] ^= 0x20;
        fs_err::write(&path, &bytes).unwrap();
        bytes
    };
    // The tree synced with all six (the ledger closed cleanly).
    let synced = copy_dir(original.path());
    // The checkpoint covering all six, and no tree.
    let checkpointed = copy_dir(original.path());
    fs_err::remove_dir_all(checkpointed.path().join("tree")).unwrap();
    {
        let options = FileOptions {
            tree: false,
            ..fast_options()
        };
        let ledger = FileLedger::open(checkpointed.path(), options).unwrap();
        ledger.checkpoint(ledger.mark().unwrap(), b"six").unwrap();
    }
    for (dir, evidence) in [(&synced, "SYNCED"), (&checkpointed, "CHECKPOINT")] {
        let bytes = damaged(dir.path());
        let err = FileLedger::open(dir.path(), fast_options()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("acknowledged") && text.contains(evidence) && text.contains("beta"),
            "{text}"
        );
        let path = dir.path().join(seg.file_name().unwrap());
        assert_eq!(
            fs_err::read(&path).unwrap(),
            bytes,
            "{evidence}: the segment was changed"
        );
    }
    // Cut short at a frame boundary: the chains link, the tree says six.
    let cut = copy_dir(original.path());
    let path = cut.path().join(seg.file_name().unwrap());
    let file = fs_err::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(last_at as u64).unwrap();
    drop(file);
    let bad = verify_dir(cut.path()).unwrap().first_bad.unwrap();
    assert!(
        bad.reason.contains("says 6 receipts were durable") && bad.reason.contains("holds 5"),
        "{}",
        bad.reason
    );
    // Open refuses it too and changes nothing: building the tree again
    // from the shorter log would erase the only evidence of the loss.
    let _ = fs_err::remove_file(cut.path().join(ggen_runtime::ledger::file::CHECKPOINT_FILE));
    let synced = cut.path().join("tree").join("SYNCED");
    let before = fs_err::read(&synced).unwrap();
    let err = FileLedger::open(cut.path(), fast_options()).unwrap_err();
    assert!(
        err.to_string()
            .contains("acknowledged receipts are missing"),
        "{err}"
    );
    assert_eq!(fs_err::read(&synced).unwrap(), before);
    assert_eq!(fs_err::metadata(&path).unwrap().len(), last_at as u64);
}

/// A receipt whose own `prev` no longer names its predecessor, its header
/// hash recomputed so the header chain links: verify reports it, so open
/// refuses to extend it, past the checkpoint's mark (replayed) and as the
/// head of a tenant whose last receipt is before the mark.
#[test]
fn open_checks_the_fields_of_the_receipts_it_replays_and_extends() {
    for checkpointed in [false, true] {
        let dir = populated(&["acme", "beta"], 3);
        if checkpointed {
            let ledger = FileLedger::open(dir.path(), fast_options()).unwrap();
            ledger.checkpoint(ledger.mark().unwrap(), b"all").unwrap();
        }
        let seg = &segments(dir.path())[0];
        let mut bytes = fs_err::read(seg).unwrap();
        let all = frames(seg);
        let (at, len, ..) = all[4].clone();
        assert_eq!((all[4].2.as_str(), all[4].3), ("acme", 3));
        let prev: Hash = bytes[all[2].0 + 20..all[2].0 + 52].try_into().unwrap();
        let text = hex::encode(prev);
        let other = format!(
            "{}{}",
            if text.starts_with('0') { "1" } else { "0" },
            &text[1..]
        );
        forge_frame(&mut bytes, at, len, &text, &other, Some(prev));
        fs_err::write(seg, &bytes).unwrap();
        let bad = verify_dir(dir.path()).unwrap().first_bad.unwrap();
        assert_eq!((bad.tenant.as_str(), bad.seq), ("acme", 3));
        match FileLedger::open(dir.path(), fast_options()) {
            Err(LedgerError::BrokenChain {
                tenant,
                seq,
                reason,
                ..
            }) => {
                assert_eq!((tenant.as_str(), seq), ("acme", 3), "{reason}");
                assert!(reason.contains("receipt names prev"), "{reason}");
            }
            Err(other) => panic!("checkpointed {checkpointed}: {other}"),
            Ok(_) => panic!("checkpointed {checkpointed}: open extends a chain verify reports"),
        }
    }
}

#[test]
fn a_preallocated_tail_is_the_end_of_the_log_not_damage() {
    let dir = populated(&["acme", "beta"], 3);
    let seg = &segments(dir.path())[0];
    let end = data_end(seg);
    assert!(fs_err::metadata(seg).unwrap().len() as usize > end);
    let report = verify_dir(dir.path()).unwrap();
    assert_eq!((report.receipts, report.first_bad), (6, None));
    let ledger = FileLedger::open(dir.path(), fast_options()).unwrap();
    assert!(ledger.repair().is_none(), "zeros are not a torn tail");
    let t = tenant("acme");
    append_next(&ledger, &t, "after reopening");
    drop(ledger);
    // The append went right after the last frame, into the zeros.
    assert_eq!(frames(seg)[6].0, end);
    assert_eq!(verify_dir(dir.path()).unwrap().receipts, 7);
}

#[test]
fn closed_segments_are_cut_to_their_last_frame() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions {
        segment_bytes: 4096,
        ..fast_options()
    };
    let ledger = FileLedger::open(dir.path(), options.clone()).unwrap();
    let t = tenant("acme");
    for i in 0..40 {
        append_next(&ledger, &t, &format!("r{i}"));
    }
    drop(ledger);
    let segs = segments(dir.path());
    assert!(segs.len() > 2, "{} segments", segs.len());
    for seg in &segs[..segs.len() - 1] {
        assert_eq!(fs_err::metadata(seg).unwrap().len() as usize, data_end(seg));
    }
    // Zeros at the end of a closed segment are not preallocation: refused.
    let first = &segs[0];
    let mut bytes = fs_err::read(first).unwrap();
    bytes.extend_from_slice(&[0; 100]);
    fs_err::write(first, &bytes).unwrap();
    assert!(matches!(
        FileLedger::open(dir.path(), options),
        Err(LedgerError::Corrupt { .. })
    ));
    assert!(verify_dir(dir.path()).unwrap().first_bad.is_some());
}

#[test]
fn corruption_followed_by_valid_records_refuses_open() {
    let original = populated(&["acme"], 5);
    let seg = &segments(original.path())[0];
    let fr = frames(seg);
    let mut bytes = fs_err::read(seg).unwrap();
    bytes[fr[1].0 + fr[1].1 - 3] ^= 0xff; // inside seq 2's receipt bytes
    fs_err::write(seg, &bytes).unwrap();
    let err = FileLedger::open(original.path(), fast_options()).unwrap_err();
    match err {
        LedgerError::Corrupt {
            path,
            offset,
            reason,
        } => {
            assert_eq!((path, offset as usize), (seg.clone(), fr[1].0));
            assert!(reason.contains("crc"), "{reason}");
        }
        other => panic!("expected corruption, got {other}"),
    }
    let bad = verify_dir(original.path()).unwrap().first_bad.unwrap();
    assert!(
        bad.reason.contains(&format!("offset `{}`", fr[1].0)),
        "{}",
        bad.reason
    );
}

/// A sync function that counts calls, remembers the synced length, and can be made to fail.
#[derive(Default)]
struct SyncProbe {
    calls: AtomicU64,
    synced_len: AtomicU64,
    fail: AtomicBool,
}

impl SyncProbe {
    fn options(self: &Arc<Self>, delay: std::time::Duration) -> FileOptions {
        let probe = Arc::clone(self);
        FileOptions {
            sync: Arc::new(move |file| {
                if probe.fail.load(Ordering::SeqCst) {
                    return Err(std::io::Error::other("injected fsync failure"));
                }
                // What the sync covers: everything written, up to the zero-filled tail.
                let mut buf = vec![0; usize::try_from(file.metadata()?.len()).unwrap()];
                std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, 0)?;
                let len = frames_in(&buf).last().map_or(0, |(at, len, ..)| at + len) as u64;
                std::thread::sleep(delay);
                probe.calls.fetch_add(1, Ordering::SeqCst);
                probe.synced_len.fetch_max(len, Ordering::SeqCst);
                Ok(())
            }),
            ..FileOptions::default()
        }
    }
}

#[test]
fn group_commit_covers_many_appends_with_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Arc::new(SyncProbe::default());
    let ledger = Arc::new(
        FileLedger::open(
            dir.path(),
            probe.options(std::time::Duration::from_millis(2)),
        )
        .unwrap(),
    );
    const THREADS: usize = 4;
    const BURSTS: usize = 10;
    const BURST: usize = 50;
    let resolved: Vec<Vec<(u64, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let ledger = Arc::clone(&ledger);
                let probe = Arc::clone(&probe);
                s.spawn(move || {
                    let t = tenant(&format!("tenant-{i}"));
                    let mut seen = Vec::new();
                    for _ in 0..BURSTS {
                        let mut tickets = Vec::new();
                        for _ in 0..BURST {
                            let head = ledger.head(&t);
                            let appended = ledger
                                .append(Entry {
                                    tenant: t.clone(),
                                    seq: head.seq + 1,
                                    prev: head.hash,
                                    bytes: receipt(&t, head, "burst"),
                                })
                                .unwrap();
                            tickets.push((head.seq + 1, appended.ticket));
                        }
                        for (seq, ticket) in tickets {
                            ticket.wait().unwrap();
                            // What was synced when this ticket resolved.
                            seen.push((seq, probe.synced_len.load(Ordering::SeqCst)));
                        }
                    }
                    seen
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let appends = (THREADS * BURSTS * BURST) as u64;
    let syncs = probe.calls.load(Ordering::SeqCst);
    assert!(syncs * 10 <= appends, "{syncs} syncs for {appends} appends");
    // Every ticket resolved only once a sync covered the end of its record.
    let ends: HashMap<(String, u64), u64> = frames(&segments(dir.path())[0])
        .into_iter()
        .map(|(at, len, t, seq)| ((t, seq), (at + len) as u64))
        .collect();
    assert_eq!(ends.len() as u64, appends);
    for (i, seen) in resolved.iter().enumerate() {
        for (seq, synced) in seen {
            let end = ends[&(format!("tenant-{i}"), *seq)];
            assert!(
                end <= *synced,
                "tenant-{i} seq {seq} resolved before its sync"
            );
        }
    }
}

#[test]
fn a_failed_sync_poisons_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Arc::new(SyncProbe::default());
    let ledger = FileLedger::open(dir.path(), probe.options(std::time::Duration::ZERO)).unwrap();
    let t = tenant("acme");
    append_next(&ledger, &t, "durable");
    let early = ledger.mark().unwrap();
    let head = ledger.head(&t);
    let durable_before = ledger.read(&t, 0, 1).unwrap();
    probe.fail.store(true, Ordering::SeqCst);
    let appended = ledger
        .append(Entry {
            tenant: t.clone(),
            seq: 2,
            prev: head.hash,
            bytes: receipt(&t, head, "doomed"),
        })
        .unwrap();
    let err = appended.ticket.wait().unwrap_err();
    assert!(matches!(err, LedgerError::Poisoned { .. }), "{err}");
    // Stopped for good, even if the disk recovers: no retry.
    probe.fail.store(false, Ordering::SeqCst);
    let head = ledger.head(&t);
    let err = ledger
        .append(Entry {
            tenant: t.clone(),
            seq: head.seq + 1,
            prev: head.hash,
            bytes: receipt(&t, head, "later"),
        })
        .unwrap_err();
    assert!(matches!(err, LedgerError::Poisoned { .. }), "{err}");
    assert!(matches!(ledger.flush(), Err(LedgerError::Poisoned { .. })));
    assert!(matches!(ledger.mark(), Err(LedgerError::Poisoned { .. })));
    assert!(matches!(
        ledger.checkpoint(early, b"x"),
        Err(LedgerError::Poisoned { .. })
    ));
    assert_eq!(durable_before.len(), 1);
}

/// What `wait` returns, waited for on its own thread; panics if it has not
/// returned within 30 s (a wait that hangs).
fn answered<T: Send + 'static>(wait: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, waited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(wait());
    });
    waited
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the wait did not end within 30 s")
}

/// `answer` is the error of a ledger whose writer thread panicked.
fn assert_writer_stopped(answer: &Result<(), LedgerError>) {
    assert!(
        matches!(answer, Err(LedgerError::Poisoned { .. })),
        "{answer:?}"
    );
    assert!(
        format!("{answer:?}").contains("writer thread stopped"),
        "{answer:?}"
    );
}

/// A bug that panics the writer thread (here: inside the sync) fails the
/// ledger as a write error does: waiters get an error, not a hang, and
/// later appends are refused.
#[test]
fn a_panicking_writer_fails_the_ledger_instead_of_hanging_its_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let panics = Arc::new(AtomicBool::new(false));
    let options = FileOptions {
        sync: {
            let panics = Arc::clone(&panics);
            Arc::new(move |_| {
                assert!(!panics.load(Ordering::SeqCst), "injected writer bug");
                Ok(())
            })
        },
        ..FileOptions::default()
    };
    let ledger = Arc::new(FileLedger::open(dir.path(), options).unwrap());
    let t = tenant("acme");
    append_next(&*ledger, &t, "durable");
    panics.store(true, Ordering::SeqCst);
    let err = answered({
        let (ledger, t) = (Arc::clone(&ledger), t.clone());
        move || {
            let appended = ledger.append(next_entry(&*ledger, &t, "doomed"));
            appended.and_then(|a| a.ticket.wait())
        }
    });
    assert_writer_stopped(&err);
    let refused = ledger.append(next_entry(&*ledger, &t, "later"));
    assert!(
        matches!(refused, Err(LedgerError::Poisoned { .. })),
        "{refused:?}"
    );
}

#[test]
fn tickets_resolve_asynchronously() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = FileLedger::open(dir.path(), FileOptions::default()).unwrap();
    let t = tenant("acme");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let head = ledger.head(&t);
    let appended = ledger
        .append(Entry {
            tenant: t.clone(),
            seq: 1,
            prev: head.hash,
            bytes: receipt(&t, head, "async"),
        })
        .unwrap();
    runtime.block_on(appended.ticket.durable()).unwrap();
    // Durable means on disk: a fresh read-only verify sees it.
    assert_eq!(verify_dir(dir.path()).unwrap().receipts, 1);
}

#[test]
fn canonical_receipts_are_stable_bytes() {
    // The bytes the ledger hashes are exactly RFC 8785 output: sorted keys, no spaces.
    let t = tenant("acme");
    let bytes = receipt(&t, Head::EMPTY, "n");
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(
        text,
        format!(
            "{{\"decision\":{{\"level\":\"warn\",\"note\":\"n\",\"value\":\"120.5\"}},\"kind\":\"signal\",\"prev\":\"{}\",\"seq\":1,\"sku\":\"test_guard\",\"tenant\":\"acme\",\"v\":1}}",
            "0".repeat(64)
        )
    );
}

#[test]
fn an_unreadable_checkpoint_is_set_aside_and_the_whole_log_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = FileLedger::open(dir.path(), fast_options()).unwrap();
        for i in 0..6 {
            append_next(&ledger, &tenant("acme"), &format!("{i}"));
        }
        ledger.checkpoint(ledger.mark().unwrap(), b"state").unwrap();
    }
    // A flipped byte in the blob: the CRC no longer matches.
    let path = dir.path().join("CHECKPOINT");
    let mut bytes = fs_err::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs_err::write(&path, bytes).unwrap();

    let ledger = FileLedger::open(dir.path(), fast_options()).unwrap();
    assert!(
        ledger
            .rejected_checkpoint()
            .is_some_and(|why| why.contains("crc") || why.contains("CRC")),
        "{:?}",
        ledger.rejected_checkpoint()
    );
    // Recovery sees no checkpoint, only every record from the start.
    let mut checkpoints = 0;
    let mut records = 0;
    ledger
        .recover(&mut |item| {
            match item {
                Recovered::Checkpoint(_) => checkpoints += 1,
                Recovered::Record(_) => records += 1,
            }
            Ok(())
        })
        .unwrap();
    assert_eq!((checkpoints, records), (0, 6));
    // A new checkpoint replaces the file and is used again.
    ledger.checkpoint(ledger.mark().unwrap(), b"fresh").unwrap();
    let mut blob = None;
    ledger
        .recover(&mut |item| {
            if let Recovered::Checkpoint(stored) = item {
                blob = Some(stored.blob.to_vec());
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(blob.as_deref(), Some(&b"fresh"[..]));
}

/// A link planted in the ledger's folder (by whoever else can write it)
/// is never written through: not a segment whose "torn tail" open would
/// cut, nor a temporary it would create.
#[test]
fn links_planted_in_the_ledger_folder_are_never_written_through() {
    let original = populated(&["acme"], 2);
    let seg = segments(original.path())[0].clone();
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = elsewhere.path().join("victim");
    fs_err::write(&victim, "precious, and no ledger frame").unwrap();

    // The last segment replaced by a link to the victim: its bytes read as
    // a torn tail, which open would cut to length 0.
    let dir = copy_dir(original.path());
    fs_err::remove_dir_all(dir.path().join("tree")).unwrap();
    let path = dir.path().join(seg.file_name().unwrap());
    fs_err::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    assert!(FileLedger::open(dir.path(), fast_options()).is_err());
    assert_eq!(
        fs_err::read_to_string(&victim).unwrap(),
        "precious, and no ledger frame"
    );

    // A link where the next checkpoint's temporary goes.
    let dir = copy_dir(original.path());
    std::os::unix::fs::symlink(&victim, dir.path().join("CHECKPOINT.tmp")).unwrap();
    let ledger = FileLedger::open(dir.path(), fast_options()).unwrap();
    assert!(ledger.checkpoint(ledger.mark().unwrap(), b"state").is_err());
    assert_eq!(
        fs_err::read_to_string(&victim).unwrap(),
        "precious, and no ledger frame"
    );
}

//! Cutting archived segments from the front of a file ledger: what is left
//! verifies from the anchor, reads start at the first local receipt, a
//! start after a cut interrupted at any step finds a whole log, and
//! recovery falls back to the checkpoint the anchor keeps.

use ggen_runtime::ledger::file::{ANCHOR_FILE, read_anchor};

use super::*;

fn small() -> FileOptions {
    FileOptions {
        segment_bytes: 4096,
        ..fast_options()
    }
}

/// 120 receipts of four tenants over many 4 KiB segments, and a
/// checkpoint at the end; the bytes of every receipt per tenant.
fn filled(dir: &Path) -> HashMap<String, Vec<Vec<u8>>> {
    let ledger = FileLedger::open(dir, small()).unwrap();
    let mut model: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for i in 0..120 {
        let name = format!("t{}", i % 4);
        let bytes = append_next(&ledger, &tenant(&name), &"x".repeat(i % 5 * 30));
        model.entry(name).or_default().push(bytes);
    }
    ledger.checkpoint(ledger.mark().unwrap(), b"all").unwrap();
    model
}

/// [`filled`], then its first segment cut.
fn filled_and_cut_once() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path());
    let ledger = FileLedger::open(dir.path(), small()).unwrap();
    let first = ledger.segments().unwrap().0[0];
    assert!(ledger.cut(first).unwrap());
    dir
}

/// Every local receipt reads back as appended, archived ones are skipped.
fn check_local(ledger: &FileLedger, model: &HashMap<String, Vec<Vec<u8>>>) {
    let anchor = ledger.anchor();
    for (name, records) in model {
        let base = anchor
            .as_ref()
            .and_then(|a| a.heads.get(&tenant(name)))
            .map_or(0, |h| h.seq as usize);
        let got = ledger.read(&tenant(name), 0, usize::MAX).unwrap();
        assert_eq!(got.len(), records.len() - base, "{name}");
        for (record, bytes) in got.iter().zip(&records[base..]) {
            assert_eq!(&record.bytes[..], &bytes[..]);
        }
        assert_eq!(ledger.head(&tenant(name)).seq as usize, records.len());
    }
}

#[test]
fn cut_segments_leave_a_log_that_verifies_reads_reopens_and_grows() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = filled(dir.path());
    let ledger = FileLedger::open(dir.path(), small()).unwrap();
    let (ids, current) = ledger.segments().unwrap();
    assert!(ids.len() > 6, "{ids:?}");
    // Not the front of the log, and not the segment being written: refused.
    assert!(!ledger.cut(ids[1]).unwrap());
    assert!(!ledger.cut(current).unwrap());
    for &id in &ids[..4] {
        assert!(ledger.cut(id).unwrap(), "cut {id}");
        assert!(!ledger.segment_path(id).exists());
        check_local(&ledger, &model);
        assert_eq!(ledger.verify().unwrap().first_bad, None);
        assert_eq!(verify_dir(dir.path()).unwrap().first_bad, None);
    }
    let anchor = ledger.anchor().unwrap();
    assert_eq!(anchor.segment, ids[4]);
    // Receipts before the anchor plus those verified locally: all of them.
    let local = ledger.verify().unwrap().receipts;
    assert_eq!(anchor.records + local, 120);
    drop(ledger);

    let ledger = FileLedger::open(dir.path(), small()).unwrap();
    check_local(&ledger, &model);
    for i in 0..8 {
        let name = format!("t{}", i % 4);
        let bytes = append_next(&ledger, &tenant(&name), "after");
        model.entry(name).or_default().push(bytes);
    }
    check_local(&ledger, &model);
    assert_eq!(ledger.verify().unwrap().first_bad, None);
    // A checkpoint written after the cut, and recovery from it.
    ledger.checkpoint(ledger.mark().unwrap(), b"later").unwrap();
    let mut seen = None;
    ledger
        .recover(&mut |item| {
            if let Recovered::Checkpoint(stored) = item {
                seen = Some(stored.blob.to_vec());
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(seen.as_deref(), Some(&b"later"[..]));
}

#[test]
fn a_cut_interrupted_after_its_anchor_is_finished_by_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let model = filled(dir.path());
    let first = {
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        let first = ledger.segments().unwrap().0[0];
        assert!(ledger.cut_anchor_only(first).unwrap());
        first
    };
    // The anchor is written, the segment still here: verify skips it...
    assert!(dir.path().join(format!("{first:010}.seg")).exists());
    // A second cut of it in the same process only finishes the removal
    // (the segment is counted once).
    {
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        assert!(ledger.cut(first).unwrap());
        let again = read_anchor(dir.path()).unwrap().unwrap();
        assert_eq!(again.segment, first + 1);
        assert_eq!(ledger.verify().unwrap().first_bad, None);
    }
    let anchor = read_anchor(dir.path()).unwrap().unwrap();
    let records = anchor.records;
    drop(anchor);
    assert_eq!(verify_dir(dir.path()).unwrap().first_bad, None);
    // ...and open removes it.
    let ledger = FileLedger::open(dir.path(), small()).unwrap();
    assert!(!dir.path().join(format!("{first:010}.seg")).exists());
    assert_eq!(ledger.anchor().unwrap().segment, first + 1);
    assert_eq!(ledger.anchor().unwrap().records, records);
    check_local(&ledger, &model);
    assert_eq!(ledger.verify().unwrap().first_bad, None);
}

#[test]
fn recovery_falls_back_to_the_checkpoint_the_anchor_keeps() {
    let dir = filled_and_cut_once();
    // An unreadable CHECKPOINT: the log before the cut cannot be replayed.
    let ck = dir.path().join("CHECKPOINT");
    let mut bytes = fs_err::read(&ck).unwrap();
    bytes[20] ^= 1;
    fs_err::write(&ck, bytes).unwrap();
    let ledger = FileLedger::open(dir.path(), small()).unwrap();
    assert!(ledger.rejected_checkpoint().is_some());
    let mut blob = None;
    let mut records = 0;
    ledger
        .recover(&mut |item| {
            match item {
                Recovered::Checkpoint(stored) => blob = Some(stored.blob.to_vec()),
                Recovered::Record(_) => records += 1,
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(blob.as_deref(), Some(&b"all"[..]));
    assert_eq!(records, 0, "the kept checkpoint covers every record");
}

#[test]
fn an_altered_or_missing_anchor_is_refused() {
    let dir = filled_and_cut_once();
    let clean = fs_err::read(dir.path().join(ANCHOR_FILE)).unwrap();
    assert!(read_anchor(dir.path()).unwrap().is_some());
    // A flipped byte: the CRC.
    let mut flipped = clean.clone();
    flipped[30] ^= 1;
    fs_err::write(dir.path().join(ANCHOR_FILE), &flipped).unwrap();
    assert!(matches!(
        FileLedger::open(dir.path(), small()),
        Err(LedgerError::Corrupt { .. })
    ));
    assert!(verify_dir(dir.path()).unwrap().first_bad.is_some());
    // Gone: the log no longer starts at segment 1, and says so.
    fs_err::remove_file(dir.path().join(ANCHOR_FILE)).unwrap();
    assert!(FileLedger::open(dir.path(), small()).is_err());
    assert!(verify_dir(dir.path()).unwrap().first_bad.is_some());
    fs_err::write(dir.path().join(ANCHOR_FILE), &clean).unwrap();
    assert!(FileLedger::open(dir.path(), small()).is_ok());
}

/// A segment older than the anchor (left by a cut interrupted after its
/// anchor, here with a receipt forged and its CRC recomputed) is not part
/// of the log: `ledger show`'s scan visits exactly the receipts verify
/// checks, and the leftover is named, not shown.
#[test]
fn a_segment_older_than_the_anchor_is_neither_verified_nor_shown() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path());
    let first = {
        let ledger = FileLedger::open(dir.path(), small()).unwrap();
        let first = ledger.segments().unwrap().0[0];
        assert!(ledger.cut_anchor_only(first).unwrap());
        first
    };
    let leftover = dir.path().join(format!("{first:010}.seg"));
    let mut bytes = fs_err::read(&leftover).unwrap();
    let (at, len, ..) = frames_in(&bytes)[0].clone();
    forge_frame(&mut bytes, at, len, "120.5", "999.5", None);
    fs_err::write(&leftover, &bytes).unwrap();

    let report = verify_dir(dir.path()).unwrap();
    assert_eq!(report.first_bad, None);
    let mut shown = 0;
    ggen_runtime::ledger::file::scan_dir(dir.path(), &mut |record| {
        assert!(
            !std::str::from_utf8(&record.bytes)
                .unwrap()
                .contains("999.5"),
            "a receipt of the leftover segment was shown"
        );
        shown += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(shown, report.receipts);
    assert_eq!(
        ggen_runtime::ledger::inspect::leftovers(dir.path()).unwrap(),
        [leftover]
    );
}

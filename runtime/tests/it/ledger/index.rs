//! The file ledger's read index: record locations of closed segments live in
//! index files, not in memory; reads through them return exactly the
//! records appended, and an index file that lies is refused.

use proptest::prelude::*;

use super::*;

fn small_segments() -> FileOptions {
    FileOptions {
        segment_bytes: 4096,
        ..fast_options()
    }
}

fn index_files(dir: &Path) -> Vec<PathBuf> {
    files_ending(dir, "idx")
}

/// Checks every (after, limit) read of `model`'s tenants against it.
fn check_reads(
    ledger: &FileLedger,
    model: &HashMap<String, Vec<Vec<u8>>>,
    reads: &[(usize, usize, usize)],
) {
    for &(t, after, limit) in reads {
        let name = format!("t{}", t % 5);
        let Some(expected) = model.get(&name) else {
            continue;
        };
        let after = after % (expected.len() + 2);
        let got = ledger.read(&tenant(&name), after as u64, limit).unwrap();
        let want: Vec<&Vec<u8>> = expected.iter().skip(after).take(limit).collect();
        assert_eq!(got.len(), want.len(), "{name} after {after} limit {limit}");
        for (i, (record, bytes)) in got.iter().zip(want).enumerate() {
            assert_eq!(record.seq, (after + i + 1) as u64);
            assert_eq!(&record.bytes[..], &bytes[..]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Reads through sealed segments, before and after a reopen, match
    /// what was appended; every closed segment has its index file.
    #[test]
    fn reads_through_sealed_segments_match_the_appends(
        appends in proptest::collection::vec((0usize..5, 0usize..300), 1..120),
        reads in proptest::collection::vec((0usize..5, 0usize..200, 1usize..40), 1..30),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut model: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        {
            let ledger = FileLedger::open(dir.path(), small_segments()).unwrap();
            for (t, len) in &appends {
                let name = format!("t{t}");
                let bytes = append_next(&ledger, &tenant(&name), &"x".repeat(*len));
                model.entry(name).or_default().push(bytes);
            }
            check_reads(&ledger, &model, &reads);
        }
        // The writer sealed every closed segment before it stopped.
        prop_assert_eq!(index_files(dir.path()).len(), segments(dir.path()).len() - 1);
        let ledger = FileLedger::open(dir.path(), small_segments()).unwrap();
        prop_assert_eq!(index_files(dir.path()).len(), segments(dir.path()).len() - 1);
        check_reads(&ledger, &model, &reads);
        // Appends after the reopen extend the same chains.
        for (t, len) in appends.iter().take(20) {
            let name = format!("t{t}");
            let bytes = append_next(&ledger, &tenant(&name), &"y".repeat(*len));
            model.entry(name).or_default().push(bytes);
        }
        check_reads(&ledger, &model, &reads);
    }
}

/// Sixty receipts of three tenants over several 4 KiB segments.
fn sealed_ledger() -> (tempfile::TempDir, HashMap<String, Vec<Vec<u8>>>) {
    let dir = tempfile::tempdir().unwrap();
    let mut model: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let ledger = FileLedger::open(dir.path(), small_segments()).unwrap();
    for i in 0..60 {
        let name = ["a", "b", "c"][i % 3];
        let bytes = append_next(&ledger, &tenant(name), &"n".repeat(i % 7 * 20));
        model.entry(name.to_owned()).or_default().push(bytes);
    }
    assert!(index_files(dir.path()).len() >= 3);
    (dir, model)
}

#[test]
fn missing_damaged_or_stale_index_files_are_rebuilt_on_open() {
    let (dir, model) = sealed_ledger();
    let files = index_files(dir.path());
    let clean: Vec<Vec<u8>> = files.iter().map(|f| fs_err::read(f).unwrap()).collect();
    fs_err::remove_file(&files[0]).unwrap();
    let mut bytes = clean[1].clone();
    bytes[20] ^= 1;
    fs_err::write(&files[1], bytes).unwrap();
    // Another segment's (valid) index under this one's name.
    fs_err::write(&files[2], &clean[0]).unwrap();
    // One for the segment being written, and a leftover temporary.
    let last = segments(dir.path()).len();
    fs_err::write(dir.path().join(format!("{last:010}.idx")), &clean[0]).unwrap();
    fs_err::write(dir.path().join("0000000001.idx.tmp"), b"junk").unwrap();

    let ledger = FileLedger::open(dir.path(), small_segments()).unwrap();
    for (file, bytes) in files.iter().zip(&clean) {
        assert_eq!(&fs_err::read(file).unwrap(), bytes, "{}", file.display());
    }
    assert_eq!(index_files(dir.path()), files);
    assert!(!dir.path().join("0000000001.idx.tmp").exists());
    for (name, records) in &model {
        let got = ledger.read(&tenant(name), 0, usize::MAX).unwrap();
        let bytes: Vec<&[u8]> = got.iter().map(|r| &r.bytes[..]).collect();
        assert_eq!(bytes, records.iter().map(|r| &r[..]).collect::<Vec<_>>());
    }
}

#[test]
fn an_index_file_altered_under_a_running_ledger_is_refused_not_believed() {
    let (dir, _) = sealed_ledger();
    let files = index_files(dir.path());
    let clean: Vec<Vec<u8>> = files.iter().map(|f| fs_err::read(f).unwrap()).collect();
    let mut flipped = clean[0].clone();
    flipped[30] ^= 4;
    let alterations = [
        ("a flipped byte", flipped),
        ("another segment's index", clean[1].clone()),
        ("truncated", clean[0][..clean[0].len() / 2].to_vec()),
    ];
    for (what, altered) in alterations {
        let ledger = FileLedger::open(dir.path(), small_segments()).unwrap();
        fs_err::write(&files[0], altered).unwrap();
        // Seq 1 of `a` is in the first segment.
        let error = ledger.read(&tenant("a"), 0, 1).unwrap_err();
        assert!(
            matches!(error, LedgerError::Corrupt { .. }),
            "{what}: {error}"
        );
        drop(ledger);
    }
}

#[test]
fn an_index_that_points_at_another_record_is_refused() {
    // Two ledgers whose first segments hold the same frames with `a` and
    // `b` swapped: the second's index passes every check of the file
    // itself, and the records it points at give it away.
    let build = |order: [&str; 2]| {
        let dir = tempfile::tempdir().unwrap();
        let ledger = FileLedger::open(dir.path(), small_segments()).unwrap();
        for i in 0..12 {
            append_next(&ledger, &tenant(order[i % 2]), "same");
        }
        // Too large for what is left of the first segment: starts the second.
        append_next(&ledger, &tenant("c"), &"z".repeat(2000));
        drop(ledger);
        dir
    };
    let (one, two) = (build(["a", "b"]), build(["b", "a"]));
    let first = |d: &Path| index_files(d)[0].clone();
    assert_ne!(
        fs_err::read(first(one.path())).unwrap(),
        fs_err::read(first(two.path())).unwrap()
    );
    let ledger = FileLedger::open(one.path(), small_segments()).unwrap();
    assert_eq!(ledger.read(&tenant("b"), 0, 3).unwrap().len(), 3);
    drop(ledger);
    let ledger = FileLedger::open(one.path(), small_segments()).unwrap();
    fs_err::copy(first(two.path()), first(one.path())).unwrap();
    let error = ledger.read(&tenant("b"), 0, 3).unwrap_err();
    assert!(matches!(error, LedgerError::Corrupt { .. }), "{error}");
    assert!(
        error.to_string().contains("which holds `a` seq 1"),
        "{error}"
    );
}

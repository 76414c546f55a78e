//! Checkpoints at a mark, and recovery handing the blob over before exactly
//! the records after that mark, on both backends.

use ggen_runtime::ledger::Recovered;

use super::*;

/// One thing recovery handed over.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Blob(Vec<u8>),
    Record(String, u64),
}

fn blob(bytes: &[u8]) -> Seen {
    Seen::Blob(bytes.to_vec())
}

fn rec(t: &str, seq: u64) -> Seen {
    Seen::Record(t.to_owned(), seq)
}

/// Everything `recover` hands over, in order.
fn recovered(ledger: &dyn Ledger) -> Vec<Seen> {
    let mut seen = Vec::new();
    ledger
        .recover(&mut |item| {
            seen.push(match item {
                Recovered::Checkpoint(stored) => blob(&stored.blob),
                Recovered::Record(r) => rec(r.tenant.as_str(), r.seq),
            });
            Ok(())
        })
        .unwrap();
    seen
}

#[test]
fn checkpoint_then_recover_visits_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mem = MemoryLedger::new();
    {
        let file = FileLedger::open(dir.path(), fast_options()).unwrap();
        for ledger in [&file as &dyn Ledger, &mem] {
            assert_eq!(recovered(ledger), []);
            for i in 0..10 {
                append_next(ledger, &tenant(["a", "b"][i % 2]), "before");
            }
            ledger
                .checkpoint(ledger.mark().unwrap(), b"snapshot-1")
                .unwrap();
            for i in 0..5 {
                append_next(ledger, &tenant(["a", "b"][i % 2]), "after");
            }
        }
    }
    let file = FileLedger::open(dir.path(), fast_options()).unwrap();
    for ledger in [&file as &dyn Ledger, &mem] {
        assert_eq!(
            recovered(ledger),
            [
                blob(b"snapshot-1"),
                rec("a", 6),
                rec("b", 6),
                rec("a", 7),
                rec("b", 7),
                rec("a", 8),
            ]
        );
        assert_eq!(collect_scan(ledger).len(), 15);
    }
    // A visitor error stops recovery and is returned: on the blob, or on a record.
    let err = file
        .recover(&mut |_| Err(LedgerError::Interrupted))
        .unwrap_err();
    assert!(matches!(err, LedgerError::Interrupted), "{err}");
    let mut records = 0;
    let err = file
        .recover(&mut |item| match item {
            Recovered::Checkpoint(_) => Ok(()),
            Recovered::Record(r) => {
                records += 1;
                Err(LedgerError::Visitor {
                    tenant: r.tenant.to_string(),
                    seq: r.seq,
                    source: "no".into(),
                })
            }
        })
        .unwrap_err();
    assert!(matches!(err, LedgerError::Visitor { seq: 6, .. }), "{err}");
    assert_eq!(records, 1);
}

/// The heads recovery hands over beside the blob.
fn heads_at_mark(ledger: &dyn Ledger) -> Vec<(String, Head)> {
    let mut heads = None;
    ledger
        .recover(&mut |item| {
            if let Recovered::Checkpoint(stored) = item {
                heads = Some(
                    stored
                        .heads
                        .iter()
                        .map(|(t, h)| (t.to_string(), *h))
                        .collect(),
                );
            }
            Ok(())
        })
        .unwrap();
    heads.expect("no checkpoint")
}

/// Tenant `t`'s head after its receipt `seq`, read back from the ledger.
fn head_of(ledger: &dyn Ledger, t: &str, seq: u64) -> (String, Head) {
    let record = &ledger.read(&tenant(t), seq - 1, 1).unwrap()[0];
    (
        t.to_owned(),
        Head {
            seq,
            hash: record.hash,
        },
    )
}

#[test]
fn a_checkpoint_at_an_earlier_mark_replays_every_record_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mem = MemoryLedger::new();
    let expected = || {
        vec![
            blob(b"at-4"),
            rec("a", 3),
            rec("b", 3),
            rec("a", 4),
            rec("c", 1),
        ]
    };
    {
        let file = FileLedger::open(dir.path(), fast_options()).unwrap();
        for ledger in [&file as &dyn Ledger, &mem] {
            for i in 0..4 {
                append_next(ledger, &tenant(["a", "b"][i % 2]), "before");
            }
            let mark = ledger.mark().unwrap();
            assert_eq!(mark.records(), 4);
            for t in ["a", "b", "a", "c"] {
                append_next(ledger, &tenant(t), "after the mark");
            }
            // Stored after the later appends, it still stands for the 4 before the mark.
            ledger.checkpoint(mark, b"at-4").unwrap();
            assert_eq!(recovered(ledger), expected());
            // The heads beside the blob are those at the mark, not the current ones
            // (`c` had no receipt yet).
            let at_mark = vec![head_of(ledger, "a", 2), head_of(ledger, "b", 2)];
            assert_eq!(heads_at_mark(ledger), at_mark);
        }
    }
    // The file checkpoint's position is a record boundary the reopened log agrees with.
    let file = FileLedger::open(dir.path(), fast_options()).unwrap();
    assert_eq!(recovered(&file), expected());
    // Noted by open's scan this time, and the same.
    drop(file);
    let file = FileLedger::open(dir.path(), fast_options()).unwrap();
    let at_mark = vec![head_of(&file, "a", 2), head_of(&file, "b", 2)];
    assert_eq!(heads_at_mark(&file), at_mark);
    // A second recovery (open's note is used up) computes them again.
    assert_eq!(heads_at_mark(&file), at_mark);
    assert_eq!(verify_dir(dir.path()).unwrap().first_bad, None);
}

#[test]
fn a_mark_at_the_end_of_a_segment_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions {
        segment_bytes: 4096,
        ..fast_options()
    };
    let t = tenant("acme");
    let at = {
        let ledger = FileLedger::open(dir.path(), options.clone()).unwrap();
        // The mark taken just before the append that started a new segment.
        let mut at_end = None;
        while at_end.is_none() {
            let mark = ledger.mark().unwrap();
            assert!(mark.records() < 1000, "no second segment");
            let before = segments(dir.path()).len();
            append_next(&ledger, &t, "filling the first segment");
            if before > 0 && segments(dir.path()).len() > before {
                at_end = Some(mark);
            }
        }
        let mark = at_end.unwrap();
        for _ in 0..3 {
            append_next(&ledger, &t, "after");
        }
        ledger.checkpoint(mark, b"segment-end").unwrap();
        mark.records()
    };
    let ledger = FileLedger::open(dir.path(), options).unwrap();
    let mut expected = vec![blob(b"segment-end")];
    expected.extend((at + 1..=at + 4).map(|seq| rec("acme", seq)));
    assert_eq!(recovered(&ledger), expected);
    assert_eq!(verify_dir(dir.path()).unwrap().first_bad, None);
}

#[test]
fn stale_and_foreign_marks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = tenant("acme");
    let old = {
        let file = FileLedger::open(dir.path(), fast_options()).unwrap();
        let mem = MemoryLedger::new();
        let mut old = None;
        for ledger in [&file as &dyn Ledger, &mem] {
            append_next(ledger, &t, "1");
            let stale = ledger.mark().unwrap();
            append_next(ledger, &t, "2");
            let newer = ledger.mark().unwrap();
            ledger.checkpoint(newer, b"newer").unwrap();
            let err = ledger.checkpoint(stale, b"stale").unwrap_err();
            assert!(
                matches!(err, LedgerError::StaleMark { mark: 1, stored: 2 }),
                "{err}"
            );
            // The stored checkpoint is untouched; the same mark again is fine.
            assert_eq!(recovered(ledger), [blob(b"newer")]);
            ledger.checkpoint(newer, b"newer-2").unwrap();
            assert_eq!(recovered(ledger), [blob(b"newer-2")]);
            old = Some(stale);
        }
        // A mark past the end of a shorter log was not issued by it.
        let far = file.mark().unwrap();
        let short = MemoryLedger::new();
        append_next(&short, &t, "only one");
        let err = short.checkpoint(far, b"far").unwrap_err();
        assert!(
            matches!(err, LedgerError::ForeignMark { mark: 2, end: 1 }),
            "{err}"
        );
        old.unwrap()
    };
    // Reopened, the file ledger still knows how far its checkpoint reaches.
    let file = FileLedger::open(dir.path(), fast_options()).unwrap();
    let err = file.checkpoint(old, b"stale").unwrap_err();
    assert!(matches!(err, LedgerError::StaleMark { .. }), "{err}");
    assert_eq!(recovered(&file), [blob(b"newer-2")]);
}

#[test]
fn verification_stops_at_the_next_record_once_cancelled() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use ggen_runtime::ledger::{CheckpointProblem, StoredCheckpoint, VerifyOptions};

    let dir = tempfile::tempdir().unwrap();
    let file = FileLedger::open(dir.path(), fast_options()).unwrap();
    let mem = MemoryLedger::new();
    for ledger in [&file as &dyn Ledger, &mem] {
        for i in 0..4 {
            append_next(ledger, &tenant(["a", "b"][i % 2]), "before");
        }
        ledger.checkpoint(ledger.mark().unwrap(), b"at-4").unwrap();
        for i in 0..6 {
            append_next(ledger, &tenant(["a", "b"][i % 2]), "after");
        }
        // Cancelled before it starts: not one record is read.
        let cancel = AtomicBool::new(true);
        let options = VerifyOptions {
            cancel: Some(&cancel),
            checkpoint: None,
            sku: None,
        };
        let err = ledger.verify_with(&options).unwrap_err();
        assert!(
            matches!(err, LedgerError::Cancelled { visited: 0 }),
            "{err}"
        );
        // Cancelled midway (by the judge, called at the checkpoint's mark):
        // it stops there, 4 records in, not at the end of the log.
        let cancel = AtomicBool::new(false);
        let judge = |stored: &StoredCheckpoint| -> Option<CheckpointProblem> {
            assert_eq!((stored.records, &stored.blob[..]), (4, &b"at-4"[..]));
            cancel.store(true, Ordering::Relaxed);
            None
        };
        let options = VerifyOptions {
            cancel: Some(&cancel),
            checkpoint: Some(&judge),
            sku: None,
        };
        let err = ledger.verify_with(&options).unwrap_err();
        assert!(
            matches!(err, LedgerError::Cancelled { visited: 4 }),
            "{err}"
        );
        // Not cancelled: all 10, and the judge's verdict in the report.
        let judge = |_: &StoredCheckpoint| {
            Some(CheckpointProblem {
                tenant: "a".into(),
                reason: "judged".into(),
            })
        };
        let report = ledger
            .verify_with(&VerifyOptions {
                cancel: None,
                checkpoint: Some(&judge),
                sku: None,
            })
            .unwrap();
        assert_eq!((report.receipts, report.first_bad), (10, None));
        assert_eq!(report.checkpoint.unwrap().reason, "judged");
    }
}

/// `keygen` writes a private key only its owner reads and a public key
/// that verifies what the private one signs; it never overwrites a key.
#[test]
fn keygen_makes_a_signing_key_and_its_public_half() {
    use std::os::unix::fs::PermissionsExt as _;

    use ggen_runtime::note::{Checkpoint, NoteSigner, NoteVerifier};

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("checkpoint.key");
    let run = |name: Option<&str>| {
        let mut args = vec!["governor", "keygen", "--out", key.to_str().unwrap()];
        if let Some(name) = name {
            args.extend(["--name", name]);
        }
        ggen_runtime::cli::run(&crate::governor::sku::OPEN, args)
    };
    assert_eq!(
        run(Some("governor.test/ledger")),
        std::process::ExitCode::SUCCESS
    );
    let private = fs_err::read_to_string(&key).unwrap();
    let public = fs_err::read_to_string(dir.path().join("checkpoint.key.pub")).unwrap();
    let mode = fs_err::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key is its owner's alone");
    assert!(
        private.starts_with("PRIVATE+KEY+governor.test/ledger+"),
        "{private}"
    );
    let signer = NoteSigner::from_text(&private).unwrap();
    let verifier = NoteVerifier::from_text(&public).unwrap();
    let checkpoint = Checkpoint {
        origin: "governor.test/ledger".to_owned(),
        size: 3,
        root: [7; 32],
    };
    let note = checkpoint.sign(&signer).unwrap();
    assert_eq!(Checkpoint::open(&note, &verifier), Ok(checkpoint));
    // Run again: refused, the key is kept.
    assert_ne!(run(None), std::process::ExitCode::SUCCESS);
    assert_eq!(fs_err::read_to_string(&key).unwrap(), private);
}

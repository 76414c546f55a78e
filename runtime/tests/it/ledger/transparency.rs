//! The operator attacks a hash chain alone cannot see, each caught by
//! `ledger verify --checkpoints` against checkpoints published before it:
//! a tail truncated at a frame boundary (checkpoint file deleted), one
//! tenant's frames deleted, a tenant's chain rewritten and re-hashed, two
//! segments swapped, an older backup restored.

use std::path::Path;
use std::process::ExitCode;

use ggen_runtime::ledger::file::{CHECKPOINT_FILE, FileLedger, FileOptions, verify_dir};
use ggen_runtime::note::NoteSigner;
use ggen_runtime::store::Location;
use ggen_runtime::transparency;

use super::{
    append_next, copy_dir, fast_options, forge_frame, frames, populated, segments, tenant,
};
use crate::governor::sku::OPEN;

const ORIGIN: &str = "governor.test/ledger";

/// Publishes the checkpoint of the ledger in `dir` now into `published`.
fn publish(dir: &Path, published: &Path, signer: &NoteSigner) -> u64 {
    let (size, note) = transparency::checkpoint(&Location::Dir(dir.to_path_buf()), signer).unwrap();
    fs_err::write(published.join(format!("{size:08}.checkpoint")), note).unwrap();
    size
}

/// `ledger verify --ledger DIR --checkpoints PUBLISHED --key KEY`.
fn cli(dir: &Path, published: &Path, key: &Path) -> ExitCode {
    ggen_runtime::cli::run(
        &OPEN,
        [
            "governor",
            "ledger",
            "verify",
            "--ledger",
            dir.to_str().unwrap(),
            "--checkpoints",
            published.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    )
}

/// The check's verdict on `dir`: `Ok(count)` or the error text.
fn check(dir: &Path, published: &Path, signer: &NoteSigner) -> Result<usize, String> {
    transparency::check(
        &Location::Dir(dir.to_path_buf()),
        published,
        &signer.verifier(),
    )
    .map_err(|e| ggen_runtime::report::error_chain(&e))
}

struct Setup {
    ledger: tempfile::TempDir,
    published: tempfile::TempDir,
    key: tempfile::TempDir,
    signer: NoteSigner,
}

/// acme and beta, 4 receipts each, interleaved; checkpoints published at
/// 8 receipts and, after 2 more of acme, at 10.
fn setup() -> Setup {
    let ledger = populated(&["acme", "beta"], 4);
    let published = tempfile::tempdir().unwrap();
    let key = tempfile::tempdir().unwrap();
    let signer = NoteSigner::from_seed(ORIGIN, [11; 32]).unwrap();
    fs_err::write(key.path().join("key.pub"), signer.verifier().to_text()).unwrap();
    assert_eq!(publish(ledger.path(), published.path(), &signer), 8);
    {
        let file = FileLedger::open(ledger.path(), fast_options()).unwrap();
        append_next(&file, &tenant("acme"), "r4");
        append_next(&file, &tenant("acme"), "r5");
    }
    assert_eq!(publish(ledger.path(), published.path(), &signer), 10);
    Setup {
        ledger,
        published,
        key,
        signer,
    }
}

#[test]
fn an_untouched_ledger_extends_every_published_checkpoint() {
    let s = setup();
    assert_eq!(check(s.ledger.path(), s.published.path(), &s.signer), Ok(2));
    assert_eq!(
        cli(
            s.ledger.path(),
            s.published.path(),
            &s.key.path().join("key.pub")
        ),
        ExitCode::SUCCESS
    );
    // Growing further is fine.
    {
        let file = FileLedger::open(s.ledger.path(), fast_options()).unwrap();
        append_next(&file, &tenant("beta"), "r4");
    }
    assert_eq!(check(s.ledger.path(), s.published.path(), &s.signer), Ok(2));
}

#[test]
fn a_truncated_tail_without_its_checkpoint_file_is_caught() {
    let s = setup();
    let seg = &segments(s.ledger.path())[0];
    let cut = frames(seg)[7].0;
    let file = fs_err::OpenOptions::new().write(true).open(seg).unwrap();
    file.set_len(cut as u64).unwrap();
    drop(file);
    let _ = fs_err::remove_file(s.ledger.path().join(CHECKPOINT_FILE));
    // The Merkle tree, synced with 10 leaves, says receipts were lost...
    let bad = verify_dir(s.ledger.path()).unwrap().first_bad.unwrap();
    assert!(bad.reason.contains("receipts were lost"), "{}", bad.reason);
    // ...the chains alone, once it is removed too, say nothing is wrong...
    fs_err::remove_dir_all(s.ledger.path().join("tree")).unwrap();
    assert_eq!(verify_dir(s.ledger.path()).unwrap().first_bad, None);
    // ...the published checkpoints do.
    let err = check(s.ledger.path(), s.published.path(), &s.signer).unwrap_err();
    assert!(
        err.contains("00000008.checkpoint") && err.contains("holds only 7"),
        "{err}"
    );
    assert_ne!(
        cli(
            s.ledger.path(),
            s.published.path(),
            &s.key.path().join("key.pub")
        ),
        ExitCode::SUCCESS
    );
}

#[test]
fn a_deleted_tenant_is_caught() {
    let s = setup();
    let seg = &segments(s.ledger.path())[0];
    let bytes = fs_err::read(seg).unwrap();
    let mut kept = Vec::new();
    for (at, len, t, _) in frames(seg) {
        if t != "beta" {
            kept.extend_from_slice(&bytes[at..at + len]);
        }
    }
    kept.resize(bytes.len(), 0);
    fs_err::write(seg, kept).unwrap();
    let _ = fs_err::remove_file(s.ledger.path().join(CHECKPOINT_FILE));
    // (The Merkle tree would say receipts were lost: removed too.)
    fs_err::remove_dir_all(s.ledger.path().join("tree")).unwrap();
    assert_eq!(verify_dir(s.ledger.path()).unwrap().first_bad, None);
    let err = check(s.ledger.path(), s.published.path(), &s.signer).unwrap_err();
    assert!(err.contains("00000008.checkpoint"), "{err}");
}

#[test]
fn a_rewritten_and_rehashed_chain_is_caught() {
    let s = setup();
    // The operator rebuilds the whole ledger from scratch with acme's
    // receipts changed: every chain verifies, the counts are the same.
    let forged = tempfile::tempdir().unwrap();
    {
        let file = FileLedger::open(forged.path(), fast_options()).unwrap();
        for i in 0..4 {
            append_next(&file, &tenant("acme"), &format!("forged{i}"));
            append_next(&file, &tenant("beta"), &format!("r{i}"));
        }
        append_next(&file, &tenant("acme"), "r4");
        append_next(&file, &tenant("acme"), "r5");
    }
    assert_eq!(verify_dir(forged.path()).unwrap().first_bad, None);
    let err = check(forged.path(), s.published.path(), &s.signer).unwrap_err();
    assert!(
        err.contains("00000008.checkpoint") && err.contains("changed, removed or reordered"),
        "{err}"
    );
}

#[test]
fn swapped_segments_are_caught() {
    let s = setup();
    // The same receipts in small segments, then two segments swapped.
    let small = tempfile::tempdir().unwrap();
    let options = FileOptions {
        segment_bytes: 4096,
        ..fast_options()
    };
    {
        let file = FileLedger::open(small.path(), options).unwrap();
        for i in 0..4 {
            append_next(&file, &tenant("acme"), &format!("r{i}"));
            append_next(&file, &tenant("beta"), &format!("r{i}"));
        }
        append_next(&file, &tenant("acme"), "r4");
        append_next(&file, &tenant("acme"), "r5");
        // More receipts after them: several segments.
        for i in 6..60 {
            append_next(&file, &tenant("acme"), &format!("r{i}"));
        }
    }
    // Same receipts, same order: the published checkpoints hold.
    assert_eq!(check(small.path(), s.published.path(), &s.signer), Ok(2));
    let segs = segments(small.path());
    assert!(segs.len() >= 3, "{segs:?}");
    let (a, b) = (
        fs_err::read(&segs[0]).unwrap(),
        fs_err::read(&segs[1]).unwrap(),
    );
    fs_err::write(&segs[0], b).unwrap();
    fs_err::write(&segs[1], a).unwrap();
    let _ = fs_err::remove_file(small.path().join(CHECKPOINT_FILE));
    let verdict = check(small.path(), s.published.path(), &s.signer);
    assert!(verdict.is_err(), "{verdict:?}");
}

#[test]
fn an_older_backup_restored_is_caught() {
    let s = setup();
    let backup = copy_dir(s.ledger.path());
    {
        let file = FileLedger::open(s.ledger.path(), fast_options()).unwrap();
        append_next(&file, &tenant("beta"), "r4");
    }
    assert_eq!(publish(s.ledger.path(), s.published.path(), &s.signer), 11);
    // The backup taken at 10 receipts is put back.
    let err = check(backup.path(), s.published.path(), &s.signer).unwrap_err();
    assert!(
        err.contains("00000011.checkpoint") && err.contains("holds only 10"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_signed_by_another_key_is_refused() {
    let s = setup();
    let stranger = NoteSigner::from_seed(ORIGIN, [12; 32]).unwrap();
    publish(s.ledger.path(), s.published.path(), &stranger);
    let err = check(s.ledger.path(), s.published.path(), &s.signer).unwrap_err();
    assert!(err.contains("no valid signature"), "{err}");
}

#[test]
fn a_receipt_proves_against_a_published_checkpoint_and_a_later_one_extends_it() {
    let s = setup();
    let location = Location::Dir(s.ledger.path().to_path_buf());
    let old = fs_err::read_to_string(s.published.path().join("00000008.checkpoint")).unwrap();
    let new = fs_err::read_to_string(s.published.path().join("00000010.checkpoint")).unwrap();
    let key = s.signer.verifier().to_text();
    // beta's receipt 3, against the checkpoint of 8 receipts.
    let (proof, bytes) = transparency::prove(&location, &tenant("beta"), 3, Some(8)).unwrap();
    assert_eq!(
        proof.leaf_index, 5,
        "interleaved: acme 1, beta 1, acme 2, beta 2, acme 3, beta 3"
    );
    let proof = serde_json::to_string(&proof).unwrap();
    let (checkpoint, index) =
        ggen_runtime::audit::verify_receipt(&bytes, &proof, &old, &key).unwrap();
    assert_eq!((checkpoint.size, index), (8, 5));
    // The later checkpoint extends the earlier one.
    let consistency =
        serde_json::to_string(&transparency::consistency(&location, 8, 10).unwrap()).unwrap();
    assert!(ggen_runtime::audit::verify_consistency(&old, &new, &consistency, &key).is_ok());
    // A receipt that does not exist.
    let err = transparency::prove(&location, &tenant("beta"), 9, None).unwrap_err();
    assert!(err.to_string().contains("no receipt 9"), "{err}");
}

#[test]
fn nothing_to_check_against_and_a_ledger_not_from_genesis_are_errors() {
    let s = setup();
    let empty = tempfile::tempdir().unwrap();
    let err = check(s.ledger.path(), empty.path(), &s.signer).unwrap_err();
    assert!(err.contains("holds no checkpoint file"), "{err}");
    // A stray file among the checkpoints is refused, not skipped.
    fs_err::write(s.published.path().join("README"), "notes\n").unwrap();
    assert!(check(s.ledger.path(), s.published.path(), &s.signer).is_err());
    fs_err::remove_file(s.published.path().join("README")).unwrap();
    // The oldest frames gone without an anchor (deleted): the chain does
    // not start at genesis, refused before any checkpoint is compared.
    let seg = &segments(s.ledger.path())[0];
    let bytes = fs_err::read(seg).unwrap();
    let first = frames(seg)[0].1;
    let mut rest = bytes[first..].to_vec();
    rest.resize(bytes.len(), 0);
    fs_err::write(seg, rest).unwrap();
    let _ = fs_err::remove_file(s.ledger.path().join(CHECKPOINT_FILE));
    let err = check(s.ledger.path(), s.published.path(), &s.signer).unwrap_err();
    assert!(
        err.contains("tenant `acme` breaks at seq `2`") && err.contains("expected seq `1`"),
        "{err}"
    );
}

/// `replay --checkpoint-key --publish-checkpoints` publishes the
/// checkpoint of the whole ledger at its end; a second replay publishes
/// the next one, and the ledger extends both. Without a sink, or with a
/// sink that is not a directory, it refuses before writing anything.
#[test]
fn replay_publishes_a_checkpoint_at_its_end() {
    let work = tempfile::tempdir().unwrap();
    let ledger = work.path().join("ledger");
    let published = work.path().join("published");
    fs_err::create_dir(&published).unwrap();
    let signer = NoteSigner::from_seed(ORIGIN, [12; 32]).unwrap();
    let key = work.path().join("key");
    fs_err::write(&key, signer.to_text()).unwrap();
    fs_err::write(work.path().join("key.pub"), signer.verifier().to_text()).unwrap();
    let signals = |name: &str, from: usize| {
        let path = work.path().join(name);
        let lines: String = (from..from + 12)
            .map(|i| {
                format!(
                    "{{\"tenant\":\"t{}\",\"signal\":\"load\",\"value\":{},\"at\":\"2026-01-01T00:00:{:02}Z\",\"id\":\"m-{i}\"}}\n",
                    i % 3,
                    i * 3,
                    i
                )
            })
            .collect();
        fs_err::write(&path, lines).unwrap();
        path
    };
    let run = |args: &[&str]| ggen_runtime::cli::run(&OPEN, [&["governor"], args].concat());
    let replay = |signals: &Path, extra: &[&str]| {
        let base = [
            "replay",
            "--signals",
            signals.to_str().unwrap(),
            "--ledger",
            ledger.to_str().unwrap(),
        ];
        run(&[&base[..], extra].concat())
    };
    let key_arg = ["--checkpoint-key", key.to_str().unwrap()];
    // Refused before anything is written: a key and no sink, a sink that
    // is not a directory.
    let first = signals("first.jsonl", 0);
    assert_ne!(replay(&first, &key_arg), ExitCode::SUCCESS);
    let file_sink = work.path().join("key.pub");
    let not_a_dir = [
        &key_arg[..],
        &["--publish-checkpoints", file_sink.to_str().unwrap()],
    ]
    .concat();
    assert_ne!(replay(&first, &not_a_dir), ExitCode::SUCCESS);
    assert!(!ledger.exists());

    let with_sink = [
        &key_arg[..],
        &["--publish-checkpoints", published.to_str().unwrap()],
    ]
    .concat();
    assert_eq!(replay(&first, &with_sink), ExitCode::SUCCESS);
    let second = signals("second.jsonl", 12);
    assert_eq!(replay(&second, &with_sink), ExitCode::SUCCESS);
    let mut names: Vec<String> = fs_err::read_dir(&published)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let receipts = verify_dir(&ledger).unwrap().receipts;
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(
        names.last().unwrap(),
        &ggen_runtime::transparency::publish::file_name(receipts)
    );
    assert_eq!(check(&ledger, &published, &signer), Ok(2));
    assert_eq!(
        cli(&ledger, &published, &work.path().join("key.pub")),
        ExitCode::SUCCESS
    );
}

/// The frame of `tenant`'s receipt `seq` in the ledger's only segment, and
/// the header hash of its previous receipt.
fn frame_of(dir: &Path, name: &str, seq: u64) -> (usize, usize, [u8; 32]) {
    let seg = &segments(dir)[0];
    let bytes = fs_err::read(seg).unwrap();
    let all = frames(seg);
    let (at, len, ..) = *all
        .iter()
        .find(|(_, _, t, s)| t == name && *s == seq)
        .unwrap();
    let prev = all
        .iter()
        .find(|(_, _, t, s)| t == name && *s + 1 == seq)
        .map_or([0; 32], |(at, ..)| {
            bytes[at + 20..at + 52].try_into().unwrap()
        });
    (at, len, prev)
}

/// A receipt forged in place (its CRC recomputed; or its JSON `prev`
/// changed and its header hash recomputed) fails verify, so it is never
/// signed or proved: checkpoint, prove and consistency refuse the ledger
/// naming the tenant and seq; so they do an unfinished copy.
#[test]
fn a_ledger_that_fails_verify_is_never_signed_or_proved() {
    let s = setup();
    let signer = &s.signer;
    let location = |dir: &Path| Location::Dir(dir.to_path_buf());
    let refusals = |dir: &Path| {
        let error = |e: transparency::TransparencyError| ggen_runtime::report::error_chain(&e);
        [
            transparency::checkpoint(&location(dir), signer)
                .map(|_| ())
                .map_err(error),
            transparency::prove(&location(dir), &tenant("beta"), 1, None)
                .map(|_| ())
                .map_err(error),
            transparency::consistency(&location(dir), 1, 2)
                .map(|_| ())
                .map_err(error),
        ]
    };
    for (what, prev) in [("body", false), ("prev", true)] {
        let forged = copy_dir(s.ledger.path());
        let seg = &segments(forged.path())[0];
        let mut bytes = fs_err::read(seg).unwrap();
        let (at, len, before) = frame_of(forged.path(), "acme", 6);
        if prev {
            // The receipt's own `prev` no longer names its predecessor,
            // while the header chain links.
            let text = hex::encode(before);
            let mut other = text.clone().into_bytes();
            other[0] = if other[0] == b'0' { b'1' } else { b'0' };
            let other = String::from_utf8(other).unwrap();
            forge_frame(&mut bytes, at, len, &text, &other, Some(before));
        } else {
            forge_frame(&mut bytes, at, len, "120.5", "999.5", None);
        }
        fs_err::write(seg, &bytes).unwrap();
        assert!(verify_dir(forged.path()).unwrap().first_bad.is_some());
        for refused in refusals(forged.path()) {
            let err = refused.expect_err(what);
            assert!(
                err.contains("tenant `acme`") && err.contains("seq `6`"),
                "{what}: {err}"
            );
        }
    }
    // An unfinished copy: refused, as serve and replay refuse it.
    let copying = copy_dir(s.ledger.path());
    fs_err::write(copying.path().join("COPYING"), "elsewhere").unwrap();
    for refused in refusals(copying.path()) {
        let err = refused.unwrap_err();
        assert!(err.contains("unfinished copy"), "{err}");
    }
    // The untouched ledger is still signed and proved.
    assert!(refusals(s.ledger.path()).iter().all(Result::is_ok));
}

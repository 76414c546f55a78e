//! Retention with archiving on real files: segments are archived, checked
//! and cut; a run interrupted at any step of the sequence, many times over,
//! loses nothing (every receipt is local or archived) and `ledger verify
//! --archive` passes from genesis; a damaged or missing archived segment is
//! reported.

use std::process::ExitCode;
use std::time::SystemTime;

use ggen_runtime::archive::{self, Archive, Retain, Step};
use ggen_runtime::clock::Timestamp;
use ggen_runtime::ledger::file::{scan_with_archive, verify_with_archive};
use ggen_runtime::ledger::{VerifyOptions, VerifyReport};
use ggen_runtime::receipt::Input;
use ggen_runtime::registry::Registry;

use super::*;
use crate::governor::sku::{LOAD, OPEN};

mod bucket;

const T0: i64 = 1_767_225_600_000;

fn small() -> FileOptions {
    FileOptions {
        segment_bytes: 4096,
        ..fast_options()
    }
}

fn open(dir: &Path) -> (Arc<dyn Ledger>, Registry) {
    let ledger: Arc<dyn Ledger> = Arc::new(FileLedger::open(dir, small()).unwrap());
    let registry = Registry::new(&OPEN, Arc::clone(&ledger));
    registry.recover().unwrap();
    (ledger, registry)
}

/// Applies `n` signals (ids `from..from + n`) over five tenants; checkpoints.
pub(super) fn load(registry: &Registry, from: usize, n: usize) {
    signals(registry, from, n);
    registry.checkpoint().unwrap();
}

/// [`load`] without the checkpoint.
pub(super) fn signals(registry: &Registry, from: usize, n: usize) {
    for i in from..from + n {
        let input = Input::Signal {
            via: Default::default(),
            observed: None,
            signal: LOAD,
            value: (i % 7) as f64,
            id: Some(format!("m{i}")),
        };
        let at = Timestamp(T0 + i as i64 * 1000);
        let applied = registry
            .apply(&tenant(&format!("t{}", i % 5)), input, at)
            .unwrap();
        if let Some(ticket) = applied.ticket {
            ticket.wait().unwrap();
        }
    }
}

fn verify_all(dir: &Path, archive: &Archive) -> VerifyReport {
    let mut fetch = archive.fetcher().unwrap();
    verify_with_archive(dir, &VerifyOptions::default(), &mut fetch).unwrap()
}

/// Every receipt, archived then local: (tenant, seq) in log order.
fn everything(dir: &Path, archive: &Archive) -> Vec<(String, u64)> {
    let mut fetch = archive.fetcher().unwrap();
    let mut out = Vec::new();
    scan_with_archive(dir, &mut fetch, &mut |r| {
        out.push((r.tenant.to_string(), r.seq));
        Ok(())
    })
    .unwrap();
    out
}

/// Each tenant's seqs run 1, 2, 3, … with no gap or repeat.
pub(super) fn assert_gapless(all: &[(String, u64)]) {
    let mut next: HashMap<&str, u64> = HashMap::new();
    for (tenant, seq) in all {
        let n = next.entry(tenant).or_insert(0);
        *n += 1;
        assert_eq!(*seq, *n, "tenant {tenant}");
    }
}

/// A work folder, its ledger and archive directories, the archive.
pub(super) fn places() -> (tempfile::TempDir, PathBuf, PathBuf, Archive) {
    let work = tempfile::tempdir().unwrap();
    let (dir, archive_dir) = (work.path().join("ledger"), work.path().join("archive"));
    let archive = Archive::open(archive_dir.to_str().unwrap()).unwrap();
    (work, dir, archive_dir, archive)
}

/// `ledger verify --ledger DIR [--archive DIR]` on the command line.
fn cli_verify(dir: &Path, archive: Option<&Path>) -> ExitCode {
    let mut args = vec![
        "governor",
        "ledger",
        "verify",
        "--ledger",
        dir.to_str().unwrap(),
    ];
    if let Some(archive) = archive {
        args.extend(["--archive", archive.to_str().unwrap()]);
    }
    ggen_runtime::cli::run(&OPEN, args)
}

/// A retention round that keeps 8 KiB locally; how many segments it cut.
fn keep_8_kib(rt: &tokio::runtime::Runtime, ledger: &Arc<dyn Ledger>, archive: &Archive) -> usize {
    rt.block_on(archive::archive_due(
        ledger,
        archive,
        Retain::Bytes(8 << 10),
        SystemTime::now(),
    ))
    .unwrap()
}

/// A ledger at `dir` of 200 signals, of which retention archived and cut
/// at least three segments.
fn archive_200(dir: &Path, archive: &Archive) {
    let (ledger, registry) = open(dir);
    load(&registry, 0, 200);
    let cut = keep_8_kib(&runtime(), &ledger, archive);
    assert!(cut >= 3, "{cut}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_long_run_interrupted_at_every_step_of_archiving_loses_nothing() {
    let (_work, dir, archive_dir, archive) = places();
    let rt = runtime();
    let steps = [
        None,
        Some(Step::Uploaded),
        Some(Step::Verified),
        Some(Step::Anchored),
    ];
    let mut appended = 0;
    for round in 0..24 {
        let (ledger, registry) = open(&dir);
        load(&registry, appended, 40);
        appended += 40;
        // Interrupted at one step of the oldest segment's archiving (a
        // crash there), or not at all; then the process "dies".
        let (ids, current) = ledger.as_file().unwrap().segments().unwrap();
        if let Some(&first) = ids.first().filter(|&&id| id < current) {
            rt.block_on(archive::archive_segment(
                &ledger,
                &archive,
                first,
                steps[round % 4],
            ))
            .unwrap();
        }
        drop(registry);
        drop(ledger);
        // The next start, and a retention round that keeps 8 KiB locally.
        let (ledger, registry) = open(&dir);
        let cut = keep_8_kib(&rt, &ledger, &archive);
        assert!(round < 2 || cut > 0 || ledger.as_file().unwrap().segments().unwrap().0.len() <= 3);
        assert_eq!(ledger.verify().unwrap().first_bad, None, "round {round}");
        drop(registry);
        drop(ledger);
        assert_eq!(verify_all(&dir, &archive).first_bad, None, "round {round}");
    }
    let anchor = ggen_runtime::ledger::file::read_anchor(&dir)
        .unwrap()
        .unwrap();
    assert!(
        anchor.segment > 10,
        "archived only {} segments",
        anchor.segment - 1
    );
    // Every receipt, once, in order: per tenant 1, 2, 3, …
    let all = everything(&dir, &archive);
    assert_eq!(all.len(), appended);
    assert_gapless(&all);
    // The command line agrees, and replays the checkpoint's states.
    assert_eq!(cli_verify(&dir, Some(&archive_dir)), ExitCode::SUCCESS);
    // Without the archive: the local log from the anchor.
    assert_eq!(cli_verify(&dir, None), ExitCode::SUCCESS);
    // The service keeps going on what is left.
    let (_ledger, registry) = open(&dir);
    load(&registry, appended, 10);
}

#[test]
fn a_damaged_or_missing_archived_segment_is_reported() {
    let (_work, dir, archive_dir, archive) = places();
    archive_200(&dir, &archive);
    assert_eq!(verify_all(&dir, &archive).first_bad, None);
    let second = archive_dir.join("0000000002.seg");
    let clean = fs_err::read(&second).unwrap();
    let mut flipped = clean.clone();
    flipped[100] ^= 1;
    fs_err::write(&second, &flipped).unwrap();
    let bad = verify_all(&dir, &archive).first_bad.unwrap();
    assert!(
        bad.reason.contains("0000000002.seg") || bad.reason.contains("hash"),
        "{}",
        bad.reason
    );
    assert_eq!(cli_verify(&dir, Some(&archive_dir)), ExitCode::from(1));
    fs_err::remove_file(&second).unwrap();
    let bad = verify_all(&dir, &archive).first_bad.unwrap();
    assert!(bad.reason.contains("missing"), "{}", bad.reason);
    fs_err::write(&second, &clean).unwrap();
    assert_eq!(verify_all(&dir, &archive).first_bad, None);
}

#[test]
fn a_segment_whose_copy_cannot_be_stored_stays_local() {
    let (_work, dir, archive_dir, archive) = places();
    // The object's name is taken by a directory: every store of it fails.
    fs_err::create_dir_all(archive_dir.join("0000000001.seg/blocked")).unwrap();
    let (ledger, registry) = open(&dir);
    load(&registry, 0, 100);
    let error = runtime()
        .block_on(archive::archive_due(
            &ledger,
            &archive,
            Retain::Bytes(1),
            SystemTime::now(),
        ))
        .unwrap_err();
    assert!(
        matches!(error, archive::ArchiveError::Store { .. }),
        "{error}"
    );
    assert!(ledger.as_file().unwrap().segment_path(1).exists());
    assert!(ledger.as_file().unwrap().anchor().is_none());
    assert_eq!(ledger.verify().unwrap().first_bad, None);
}

/// Signed checkpoints across retention: the ledger keeps the leaves of
/// the segments it archives, so the checkpoint it signs after a cut still
/// extends the one before; `ledger verify --checkpoints` and `ledger
/// prove` read the archived segments with `--archive` (and say to give it
/// without).
#[test]
fn checkpoints_published_before_and_after_archiving_verify_with_the_archive() {
    use ggen_runtime::audit::verify_receipt;
    use ggen_runtime::note::{Checkpoint, NoteSigner};
    use ggen_runtime::store::Location;
    let (work, dir, archive_dir, archive) = places();
    let published = work.path().join("published");
    fs_err::create_dir(&published).unwrap();
    let signer = NoteSigner::from_seed("governor.test/archive", [5; 32]).unwrap();
    let key = work.path().join("key.pub");
    fs_err::write(&key, signer.verifier().to_text()).unwrap();
    let rt = runtime();
    let publish = |ledger: &Arc<dyn Ledger>| {
        let (size, root) = ledger.tree().unwrap().latest().unwrap();
        let note = Checkpoint {
            origin: signer.name().to_owned(),
            size,
            root,
        }
        .sign(&signer)
        .unwrap();
        fs_err::write(
            published.join(ggen_runtime::transparency::publish::file_name(size)),
            &note,
        )
        .unwrap();
        (size, note)
    };
    let (first_size, _) = {
        let (ledger, registry) = open(&dir);
        load(&registry, 0, 60);
        let first = publish(&ledger);
        assert!(keep_8_kib(&rt, &ledger, &archive) > 0, "nothing archived");
        load(&registry, 60, 40);
        publish(&ledger);
        first
    };
    let (ledger, registry) = open(&dir);
    load(&registry, 100, 5);
    let (size, note) = publish(&ledger);
    drop((ledger, registry));
    let run = |args: &[&str]| ggen_runtime::cli::run(&OPEN, [&["governor"], args].concat());
    let (ledger_arg, archive_arg) = (dir.to_str().unwrap(), archive_dir.to_str().unwrap());
    let checks = [
        "ledger",
        "verify",
        "--ledger",
        ledger_arg,
        "--checkpoints",
        published.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    // Without the archive the tree cannot be rebuilt from genesis...
    assert_ne!(run(&checks), ExitCode::SUCCESS);
    // ...with it, every published checkpoint is a prefix of the ledger.
    assert_eq!(
        run(&[&checks[..], &["--archive", archive_arg]].concat()),
        ExitCode::SUCCESS
    );
    let count = ggen_runtime::transparency::check(
        ggen_runtime::transparency::Source {
            location: &Location::Dir(dir.clone()),
            archive: Some(&archive),
        },
        &published,
        &signer.verifier(),
    )
    .unwrap();
    assert_eq!(count, 3);
    // An archived receipt (t0's first, in the first segment) proved offline
    // against the latest checkpoint.
    let (proof, receipt) = ggen_runtime::transparency::prove(
        ggen_runtime::transparency::Source {
            location: &Location::Dir(dir.clone()),
            archive: Some(&archive),
        },
        &tenant("t0"),
        1,
        Some(size),
    )
    .unwrap();
    assert!(proof.leaf_index < first_size);
    let proof = serde_json::to_string(&proof).unwrap();
    verify_receipt(&receipt, &proof, &note, &signer.verifier().to_text()).unwrap();
}

#[test]
fn an_anchor_without_its_segments_is_refused_not_written_past() {
    let (_work, dir, _archive_dir, archive) = places();
    archive_200(&dir, &archive);
    // Every local segment gone, and the checkpoint and the tree, whose
    // checks would otherwise notice.
    fs_err::remove_dir_all(dir.join("tree")).unwrap();
    for entry in fs_err::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".seg") || name.ends_with(".idx") || name == "CHECKPOINT" {
            fs_err::remove_file(&path).unwrap();
        }
    }
    let Err(error) = FileLedger::open(&dir, small()).map(drop) else {
        panic!("a ledger whose anchor's segments are gone was opened");
    };
    let error = error.to_string();
    assert!(error.contains("no segment is left"), "{error}");
    // Nothing was started in their place.
    assert!(
        fs_err::read_dir(&dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".seg"))
    );
}

#[test]
fn an_archived_segment_is_never_overwritten_by_another_ledger_s() {
    let (work, dir, archive_dir, archive) = places();
    archive_200(&dir, &archive);
    let first = archive_dir.join("0000000001.seg");
    let kept = fs_err::read(&first).unwrap();
    // Another ledger (or this one started afresh) archiving to the same
    // place: its segment 1 is another history.
    let other = work.path().join("other");
    let (ledger, registry) = open(&other);
    load(&registry, 1_000, 200);
    let error = runtime()
        .block_on(archive::archive_due(
            &ledger,
            &archive,
            Retain::Bytes(8 << 10),
            SystemTime::now(),
        ))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("already holds a different segment 1"),
        "{error}"
    );
    assert_eq!(fs_err::read(&first).unwrap(), kept);
    // Its segment stays local, the first ledger's archive still verifies.
    assert!(other.join("0000000001.seg").is_file());
    assert_eq!(verify_all(&dir, &archive).first_bad, None);
}

//! Retention of a PostgreSQL ledger on a real server: full partitions are
//! archived, checked, recorded in the anchor, then detached and dropped.
//! Runs interrupted at every step lose nothing (every receipt is local or
//! archived) and `ledger verify --archive` passes from genesis, for a
//! single writer and for replicas; a damaged or missing archived partition
//! is reported; what recovery still needs is never cut.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use ggen_runtime::archive::{Archive, Retain, Step};
use ggen_runtime::ledger::VerifyOptions;
use ggen_runtime::merkle::Nodes as _;
use ggen_runtime::pg::retention::{PgRetention, Recovery};
use ggen_runtime::pg::shared::SharedPgLedger;
use ggen_runtime::pg::{PgLedger, PgOptions};
use ggen_runtime::registry::Registry;

use super::archive::{assert_gapless, load, places, signals};
use super::postgres::fresh_schema;
use super::*;
use crate::governor::sku::OPEN;

/// Receipts per partition: small, so a test makes and drops many.
const PARTITION: u64 = 20;

fn options() -> PgOptions {
    PgOptions {
        partition_receipts: PARTITION,
        ..PgOptions::default()
    }
}

/// A single writer's ledger and registry, recovered.
fn single(url: &str) -> (Arc<dyn Ledger>, Registry) {
    let ledger: Arc<dyn Ledger> = Arc::new(PgLedger::open(url, options()).unwrap());
    let registry = Registry::new(&OPEN, Arc::clone(&ledger));
    registry.recover().unwrap();
    (ledger, registry)
}

/// A replica's ledger and registry.
fn replica(url: &str) -> Arc<Registry> {
    let ledger = SharedPgLedger::open(url, options()).unwrap();
    let registry = Arc::new(Registry::new(&OPEN, Arc::new(ledger)));
    registry.attach();
    registry
}

/// Retention keeping nothing it may let go.
fn retention(url: &str, archive: &Archive, recovery: Recovery) -> PgRetention {
    PgRetention::new(url, archive.clone(), Retain::Bytes(1), recovery).unwrap()
}

/// Every receipt from genesis, archived then local: (tenant, seq).
fn everything(url: &str, archive: &Archive) -> Vec<(String, u64)> {
    let ledger = PgLedger::open_read_only(url).unwrap();
    let mut fetch = archive.fetcher().unwrap();
    let mut out = Vec::new();
    ledger
        .scan_with_archive(&mut fetch, &mut |r| {
            out.push((r.tenant.to_string(), r.seq));
            Ok(())
        })
        .unwrap();
    out
}

fn verify_all(url: &str, archive: &Archive) -> Option<String> {
    let ledger = PgLedger::open_read_only(url).unwrap();
    let mut fetch = archive.fetcher().unwrap();
    ledger
        .verify_with_archive(&VerifyOptions::default(), &mut fetch)
        .unwrap()
        .first_bad
        .map(|bad| bad.reason)
}

/// `ledger verify --database-url URL [--archive DIR]` on the command line.
fn cli_verify(url: &str, archive: Option<&Path>) -> ExitCode {
    let mut args = vec!["governor", "ledger", "verify", "--database-url", url];
    if let Some(archive) = archive {
        args.extend(["--archive", archive.to_str().unwrap()]);
    }
    ggen_runtime::cli::run(&OPEN, args)
}

/// The partitions still attached to the receipts table.
fn attached(url: &str) -> i64 {
    ::postgres::Client::connect(url, ::postgres::NoTls)
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'ggen_receipts'::regclass",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_single_writer_interrupted_at_every_step_of_archiving_loses_nothing() {
    let Some(url) = fresh_schema() else { return };
    let (_work, _dir, archive_dir, archive) = places();
    let steps = [
        None,
        Some(Step::Uploaded),
        Some(Step::Verified),
        Some(Step::Anchored),
    ];
    let mut appended = 0;
    for round in 0..12 {
        // A start, a run, and a retention round interrupted at one step
        // (a crash there) or not at all; then the process "dies".
        {
            let (ledger, registry) = single(&url);
            load(&registry, appended, 30);
            appended += 30;
            retention(&url, &archive, Recovery::Checkpoint)
                .round(SystemTime::now(), steps[round % 4])
                .unwrap();
            assert_eq!(ledger.verify().unwrap().first_bad, None, "round {round}");
        }
        assert_eq!(verify_all(&url, &archive), None, "round {round}");
    }
    // A round after the last start finishes whatever was interrupted.
    retention(&url, &archive, Recovery::Checkpoint)
        .round(SystemTime::now(), None)
        .unwrap();
    let anchor = PgLedger::open_read_only(&url)
        .unwrap()
        .anchor()
        .unwrap()
        .unwrap();
    assert!(
        anchor.partition > 10,
        "archived only {} partitions",
        anchor.partition - 1
    );
    // Only the partitions not yet full or not yet covered stay.
    assert!(
        attached(&url) <= 4,
        "{} partitions attached",
        attached(&url)
    );
    let all = everything(&url, &archive);
    assert_eq!(all.len(), appended);
    assert_gapless(&all);
    // The command line agrees, from genesis and from the anchor.
    assert_eq!(cli_verify(&url, Some(&archive_dir)), ExitCode::SUCCESS);
    assert_eq!(cli_verify(&url, None), ExitCode::SUCCESS);
    // The governor goes on with what is left.
    let (ledger, registry) = single(&url);
    load(&registry, appended, 10);
    // Retention extended the Merkle tree over every partition before it
    // dropped it: the tree still covers every receipt, archived or not.
    let (size, _) = ledger.tree().unwrap().latest().unwrap();
    assert_eq!(size, appended as u64 + 10);
    ledger.tree().unwrap().check_buildable().unwrap();
    // Retention pruned it: of the nodes over archived receipts only the one
    // left of the first local receipt's ancestor per level is kept, and
    // every local receipt's proof is still the whole log's.
    retention(&url, &archive, Recovery::Checkpoint)
        .round(SystemTime::now(), None)
        .unwrap();
    let first = PgLedger::open_read_only(&url)
        .unwrap()
        .anchor()
        .unwrap()
        .unwrap()
        .records;
    let db = || ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let before_kept: i64 = db()
        .query_one(
            "SELECT count(*) FROM ggen_tree WHERE idx < greatest(($1::bigint >> level) - 1, 0)",
            &[&(first as i64)],
        )
        .unwrap()
        .get(0);
    assert_eq!(before_kept, 0);
    let rows: i64 = db()
        .query_one("SELECT count(*) FROM ggen_tree", &[])
        .unwrap()
        .get(0);
    assert!(
        (rows as u64) < 2 * (size - first) + 2 * 64,
        "{rows} nodes for {} local receipts",
        size - first
    );
    let location = ggen_runtime::store::Location::Database(url.clone());
    let mut at = Vec::new();
    let expected = ggen_runtime::transparency::tree(
        ggen_runtime::transparency::Source {
            location: &location,
            archive: Some(&archive),
        },
        &mut |_, record| at.push((record.tenant.clone(), record.seq)),
    )
    .unwrap();
    let tree = ledger.tree().unwrap();
    assert_eq!(tree.latest().unwrap(), (expected.size(), expected.root()));
    for index in first..size {
        let (tenant, seq) = &at[index as usize];
        assert_eq!(tree.leaf_index(tenant, *seq).unwrap(), Some(index));
        assert_eq!(
            tree.inclusion_proof(index, size).unwrap(),
            expected.inclusion_proof(index, size).unwrap()
        );
    }
    assert_eq!(
        tree.consistency_proof(first + 1, size).unwrap(),
        expected.consistency_proof(first + 1, size).unwrap()
    );
    // A tree lost after partitions were dropped can never be built again:
    // said at once (`serve --checkpoint-key` refuses to start on it).
    super::postgres_tree::forget_tree(&url);
    let error = ledger.tree().unwrap().check_buildable().unwrap_err();
    assert!(
        error.to_string().contains("can never be") || format!("{error:?}").contains("can never be"),
        "{error:?}"
    );
}

#[test]
fn a_partition_the_checkpoint_does_not_cover_is_not_cut() {
    let Some(url) = fresh_schema() else { return };
    let (_work, _dir, _archive_dir, archive) = places();
    let (_ledger, registry) = single(&url);
    // A checkpoint at 30 receipts, then 60 more: of the four full
    // partitions only the first is covered.
    load(&registry, 0, 30);
    signals(&registry, 30, 60);
    let cut = retention(&url, &archive, Recovery::Checkpoint)
        .round(SystemTime::now(), None)
        .unwrap();
    assert_eq!(cut, 1);
    // Age retention waits until a partition was full for that long.
    let mut by_age = PgRetention::new(
        &url,
        archive.clone(),
        Retain::Age(Duration::from_secs(3600)),
        Recovery::Checkpoint,
    )
    .unwrap();
    let later = SystemTime::now() + Duration::from_secs(7200);
    assert_eq!(by_age.round(later, None).unwrap(), 0);
    registry.checkpoint().unwrap();
    assert_eq!(by_age.round(SystemTime::now(), None).unwrap(), 0);
    // Positions 21 to 80: three partitions; the fifth is not full.
    assert_eq!(by_age.round(later, None).unwrap(), 3);
    assert_eq!(verify_all(&url, &archive), None);
}

#[test]
fn a_single_writer_refuses_a_forged_checkpoint_once_partitions_were_archived() {
    let Some(url) = fresh_schema() else { return };
    let (_work, _dir, _archive_dir, archive) = places();
    {
        let (_ledger, registry) = single(&url);
        load(&registry, 0, 90);
    }
    let cut = retention(&url, &archive, Recovery::Checkpoint)
        .round(SystemTime::now(), None)
        .unwrap();
    assert!(cut > 0);
    // A checkpoint row whose blob contradicts the receipts: the receipts
    // before the anchor are gone, so no replay from genesis can replace it.
    let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    db.execute(
        "UPDATE ggen_checkpoint SET blob = $1",
        &[&b"{\"v\": 1}".to_vec()],
    )
    .unwrap();
    let ledger: Arc<dyn Ledger> = Arc::new(PgLedger::open(&url, options()).unwrap());
    let registry = Registry::new(&OPEN, Arc::clone(&ledger));
    let error = registry.recover().unwrap_err();
    let text = ggen_runtime::report::error_chain(&error);
    assert!(
        text.contains("receipts were archived") && text.contains("serve this ledger with replicas"),
        "{text}"
    );
    assert_eq!(registry.len(), 0, "nothing half-loaded");
}

#[test]
fn a_damaged_or_missing_archived_partition_is_reported() {
    let Some(url) = fresh_schema() else { return };
    let (_work, _dir, archive_dir, archive) = places();
    {
        let (_ledger, registry) = single(&url);
        load(&registry, 0, 100);
        let cut = retention(&url, &archive, Recovery::Checkpoint)
            .round(SystemTime::now(), None)
            .unwrap();
        assert!(cut >= 3, "{cut}");
        signals(&registry, 100, 10);
    }
    assert_eq!(verify_all(&url, &archive), None);
    let second = archive_dir.join("0000000002.seg");
    let clean = fs_err::read(&second).unwrap();
    // A frame rewritten whole (its CRC made to match) is still caught: the
    // copy is not the one recorded when the partition was archived.
    let mut flipped = clean.clone();
    flipped[100] ^= 1;
    fs_err::write(&second, &flipped).unwrap();
    let bad = verify_all(&url, &archive).unwrap();
    assert!(bad.contains("0000000002.seg"), "{bad}");
    assert_eq!(cli_verify(&url, Some(&archive_dir)), ExitCode::from(1));
    fs_err::remove_file(&second).unwrap();
    let bad = verify_all(&url, &archive).unwrap();
    assert!(bad.contains("missing"), "{bad}");
    fs_err::write(&second, &clean).unwrap();
    assert_eq!(verify_all(&url, &archive), None);
    // A local receipt altered after the cut is still caught without the archive.
    ::postgres::Client::connect(&url, ::postgres::NoTls)
        .unwrap()
        .execute(
            "UPDATE ggen_receipts SET bytes = overlay(bytes placing 'X' from 5 for 1)
             WHERE position = (SELECT max(position) FROM ggen_receipts)",
            &[],
        )
        .unwrap();
    assert_eq!(cli_verify(&url, None), ExitCode::from(1));
}

#[test]
fn replicas_archive_what_every_tenant_state_is_past_and_keep_serving() {
    let Some(url) = fresh_schema() else { return };
    let (_work, _dir, archive_dir, archive) = places();
    let steps = [
        None,
        Some(Step::Uploaded),
        Some(Step::Verified),
        Some(Step::Anchored),
    ];
    let mut appended = 0;
    for round in 0..8 {
        {
            let (a, b) = (replica(&url), replica(&url));
            load(&a, appended, 15);
            load(&b, appended + 15, 15);
            appended += 30;
            // Both replicas run retention; one archives at a time.
            let mut first = retention(&url, &archive, Recovery::TenantStates);
            let mut second = retention(&url, &archive, Recovery::TenantStates);
            first.round(SystemTime::now(), steps[round % 4]).unwrap();
            assert_eq!(second.round(SystemTime::now(), None).unwrap(), 0);
        }
        assert_eq!(verify_all(&url, &archive), None, "round {round}");
    }
    retention(&url, &archive, Recovery::TenantStates)
        .round(SystemTime::now(), None)
        .unwrap();
    let all = everything(&url, &archive);
    assert_eq!(all.len(), appended);
    assert_gapless(&all);
    assert!(
        attached(&url) <= 4,
        "{} partitions attached",
        attached(&url)
    );
    assert_eq!(cli_verify(&url, Some(&archive_dir)), ExitCode::SUCCESS);
    // A fresh replica loads every tenant from its stored state and goes on.
    let again = replica(&url);
    load(&again, appended, 10);
    // A single writer cannot: its checkpoint does not cover what was cut.
    drop(again);
    let refused = PgLedger::open(&url, options()).unwrap_err().to_string();
    assert!(refused.contains("with replicas"), "{refused}");
}

#[test]
fn an_archived_partition_is_never_overwritten_by_another_ledger_s() {
    let Some(url) = fresh_schema() else { return };
    let (_work, _dir, archive_dir, archive) = places();
    // Another history already archived under the first partition's name.
    let first = archive_dir.join("0000000001.seg");
    fs_err::create_dir_all(&archive_dir).unwrap();
    fs_err::write(&first, b"another ledger's segment 1").unwrap();
    let (_ledger, registry) = single(&url);
    load(&registry, 0, 100);
    let error = retention(&url, &archive, Recovery::Checkpoint)
        .round(SystemTime::now(), None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("already holds a different segment 1"),
        "{error}"
    );
    assert_eq!(fs_err::read(&first).unwrap(), b"another ledger's segment 1");
    // Nothing was cut: every receipt is still in the database.
    let ledger = PgLedger::open_read_only(&url).unwrap();
    assert_eq!(ledger.verify().unwrap().first_bad, None);
    let mut receipts = 0;
    ledger
        .scan(&mut |_| {
            receipts += 1;
            Ok(())
        })
        .unwrap();
    assert!(receipts >= 100, "{receipts}");
}

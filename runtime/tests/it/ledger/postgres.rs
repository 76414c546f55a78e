//! The PostgreSQL ledger on a real server (started by `./scripts/test`,
//! which exports `GGEN_TEST_DATABASE_URL`): the file ledger's chain, group
//! commit and checkpoint behaviour, migrations, the writer lock, tampering
//! in the tables, and `ledger copy` both ways.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize};

use ggen_runtime::pg::copy::copy;
use ggen_runtime::pg::{PgLedger, PgOptions};
use ggen_runtime::store::Location;

use ggen_runtime::ledger::{Decision, Mark, Redecide, Redo, Retaken, SharedLedger as _, Stored};

use super::*;

/// A fresh schema in the test database, as a URL whose `search_path`
/// names it; `None` (said loudly) only when `GGEN_SKIP_POSTGRES=1`.
pub(crate) fn fresh_schema() -> Option<String> {
    let Ok(url) = std::env::var("GGEN_TEST_DATABASE_URL") else {
        if std::env::var("GGEN_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("SKIPPED: a PostgreSQL test (GGEN_SKIP_POSTGRES=1)");
            return None;
        }
        panic!(
            "GGEN_TEST_DATABASE_URL is not set: run the tests with ./scripts/test, which starts a throwaway PostgreSQL server, or set GGEN_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
        );
    };
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let schema = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .unwrap();
    let joiner = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{joiner}options=-c%20search_path%3D{schema}"))
}

/// A plain client on the schema of `url`, to inspect or tamper with the tables.
fn client(url: &str) -> ::postgres::Client {
    ::postgres::Client::connect(url, ::postgres::NoTls).unwrap()
}

/// Changes one byte near the end of the receipts `which` selects (an SQL
/// condition), leaving their stored hashes as they were.
fn alter_bytes(url: &str, which: &str) {
    client(url)
        .execute(
            &format!(
                "UPDATE ggen_receipts SET bytes = overlay(bytes placing 'X' from length(bytes) - 3 for 1)
                 WHERE {which}"
            ),
            &[],
        )
        .unwrap();
}

fn open(url: &str) -> PgLedger {
    PgLedger::open(url, PgOptions::default()).unwrap()
}

#[test]
fn chains_append_read_verify_and_survive_a_reopen() {
    let Some(url) = fresh_schema() else { return };
    let (a, b) = (tenant("acme"), tenant("beta"));
    {
        let ledger = open(&url);
        assert_eq!(ledger.head(&a), Head::EMPTY);
        for i in 0..5 {
            append_next(&ledger, &a, &format!("a{i}"));
            if i % 2 == 0 {
                append_next(&ledger, &b, &format!("b{i}"));
            }
        }
        let page = ledger.read(&a, 1, 2).unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
        assert!(ledger.read(&tenant("nobody"), 0, 10).unwrap().is_empty());
        let all = ledger.read(&a, 0, usize::MAX).unwrap();
        assert_eq!(all[0].hash, chain_hash(&GENESIS, &all[0].bytes));
        assert_eq!(all[4].hash, ledger.head(&a).hash);
        let report = ledger.verify().unwrap();
        assert_eq!(
            (report.tenants, report.receipts, report.first_bad),
            (2, 8, None)
        );
    }
    let ledger = open(&url);
    assert_eq!((ledger.head(&a).seq, ledger.head(&b).seq), (5, 3));
    assert_eq!(ledger.mark().unwrap().records(), 8);
    append_next(&ledger, &b, "after reopen");
    let order: Vec<(String, u64)> = collect_scan(&ledger)
        .iter()
        .map(|r| (r.tenant.to_string(), r.seq))
        .collect();
    assert_eq!(order.len(), 9);
    assert_eq!(
        order[..3],
        [("acme".into(), 1), ("beta".into(), 1), ("acme".into(), 2)]
    );
    assert_eq!(order[8], ("beta".into(), 4));
    assert_eq!(ledger.verify().unwrap().first_bad, None);
}

#[test]
fn appends_that_do_not_extend_the_chain_are_refused() {
    let Some(url) = fresh_schema() else { return };
    let ledger = open(&url);
    let t = tenant("acme");
    append_next(&ledger, &t, "first");
    let head = ledger.head(&t);
    for (seq, prev) in [(1, head.hash), (3, head.hash), (2, GENESIS)] {
        let err = ledger
            .append(Entry {
                tenant: t.clone(),
                seq,
                prev,
                bytes: receipt(&t, head, "x"),
            })
            .unwrap_err();
        assert!(matches!(err, LedgerError::ChainMismatch { .. }), "{err}");
    }
    assert_eq!(ledger.head(&t), head);
    drop(ledger);
    assert_eq!(open(&url).verify().unwrap().receipts, 1);
}

#[test]
fn one_writer_per_schema_and_readers_beside_it() {
    let Some(url) = fresh_schema() else { return };
    let first = open(&url);
    append_next(&first, &tenant("acme"), "one");
    let err = PgLedger::open(&url, PgOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("another governor process"),
        "{err}"
    );
    let reader = PgLedger::open_read_only(&url).unwrap();
    assert_eq!(reader.verify().unwrap().receipts, 1);
    let refused = reader.append(Entry {
        tenant: tenant("acme"),
        seq: 2,
        prev: first.head(&tenant("acme")).hash,
        bytes: receipt(&tenant("acme"), first.head(&tenant("acme")), "no"),
    });
    assert!(refused.unwrap_err().to_string().contains("read-only"));
    drop(first);
    // The lock went with the first writer's connection.
    let second = open(&url);
    append_next(&second, &tenant("acme"), "two");
    assert_eq!(second.head(&tenant("acme")).seq, 2);
}

#[test]
fn concurrent_first_starts_migrate_once() {
    let Some(url) = fresh_schema() else { return };
    let opened: Vec<Result<PgLedger, LedgerError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PgLedger::open(&url, PgOptions::default())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let writers = opened.iter().filter(|r| r.is_ok()).count();
    assert_eq!(writers, 1, "exactly one writer: {opened:?}");
    for refused in opened.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            refused.to_string().contains("another governor"),
            "{refused}"
        );
    }
    drop(opened);
    let versions: Vec<i32> = client(&url)
        .query(
            "SELECT version FROM ggen_schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8]);
    // Reopening applies nothing and keeps the data.
    let ledger = open(&url);
    append_next(&ledger, &tenant("acme"), "after");
    assert_eq!(ledger.verify().unwrap().receipts, 1);
}

#[test]
fn a_newer_schema_is_refused() {
    let Some(url) = fresh_schema() else { return };
    drop(open(&url));
    client(&url)
        .execute(
            "INSERT INTO ggen_schema_migrations (version, description) VALUES (99, 'future')",
            &[],
        )
        .unwrap();
    let err = PgLedger::open(&url, PgOptions::default()).unwrap_err();
    assert!(
        ggen_runtime::report::error_chain(&err).contains("version 99, newer"),
        "{}",
        ggen_runtime::report::error_chain(&err)
    );
    let err = PgLedger::open_read_only(&url).unwrap_err();
    assert!(err.to_string().contains("version 99"), "{err}");
}

/// Undoes migrations 8 and 7: the schema as a version-6 governor left it.
fn back_to_schema_6(url: &str) {
    client(url)
        .batch_execute(
            "DROP TRIGGER ggen_heads_counted ON ggen_heads;
             DROP TRIGGER ggen_heads_emptied ON ggen_heads;
             DROP FUNCTION ggen_count_tenants();
             DROP TABLE ggen_tenant_count;
             ALTER TABLE ggen_action_turns DROP COLUMN attempt_until;
             DELETE FROM ggen_schema_migrations WHERE version >= 7",
        )
        .unwrap();
}

/// `ggen_tenant_count` as stored.
fn tenant_count(url: &str) -> i64 {
    client(url)
        .query_one("SELECT tenants FROM ggen_tenant_count", &[])
        .unwrap()
        .get(0)
}

#[test]
fn the_tenant_count_follows_the_heads_is_counted_at_upgrade_and_checked_by_verify() {
    let Some(url) = fresh_schema() else { return };
    let ledger = open(&url);
    for (t, receipts) in [("acme", 3), ("beta", 1), ("gamma", 2)] {
        for i in 0..receipts {
            append_next(&ledger, &tenant(t), &format!("r{i}"));
        }
    }
    ledger.flush().unwrap();
    // Counted by the trigger: once per tenant, not per receipt.
    assert_eq!(tenant_count(&url), 3);
    drop(ledger);
    // A schema at version 6 with tenants: the upgrade counts them.
    back_to_schema_6(&url);
    let ledger = open(&url);
    assert_eq!(tenant_count(&url), 3);
    append_next(&ledger, &tenant("delta"), "new");
    ledger.flush().unwrap();
    assert_eq!(tenant_count(&url), 4);
    assert_eq!(ledger.verify().unwrap().first_bad, None);
    // Heads deleted or truncated by hand are counted out (`verify` reports
    // the chains that lost them); rolled back here.
    let mut other = client(&url);
    let mut tx = other.transaction().unwrap();
    let mut counted_after = |sql: &str| -> i64 {
        tx.batch_execute(sql).unwrap();
        tx.query_one("SELECT tenants FROM ggen_tenant_count", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(
        counted_after("DELETE FROM ggen_heads WHERE tenant = 'delta'"),
        3
    );
    assert_eq!(counted_after("TRUNCATE ggen_heads"), 0);
    tx.rollback().unwrap();
    assert_eq!(tenant_count(&url), 4);
    // An altered count is reported, and a deleted one.
    client(&url)
        .batch_execute("UPDATE ggen_tenant_count SET tenants = 9")
        .unwrap();
    let bad = ledger.verify().unwrap().first_bad.unwrap();
    assert!(
        bad.reason
            .contains("counts 9 tenants with a chain where the heads are 4"),
        "{bad:?}"
    );
    client(&url)
        .batch_execute("DELETE FROM ggen_tenant_count")
        .unwrap();
    let bad = ledger.verify().unwrap().first_bad.unwrap();
    assert!(bad.reason.contains("has no row"), "{bad:?}");
}

#[test]
fn a_schema_before_the_tenant_count_verifies_read_only_whatever_else_is_on_the_path() {
    let Some(url) = fresh_schema() else { return };
    let ledger = open(&url);
    for t in ["acme", "beta"] {
        append_next(&ledger, &tenant(t), "r0");
    }
    drop(ledger);
    back_to_schema_6(&url);
    // Another schema later on the path has a count of its own.
    let other = format!("{}_other", url.rsplit("%3D").next().unwrap());
    client(&url)
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {other} CASCADE; CREATE SCHEMA {other};
             CREATE TABLE {other}.ggen_tenant_count (tenants bigint);
             INSERT INTO {other}.ggen_tenant_count VALUES (7)"
        ))
        .unwrap();
    for url in [url.clone(), format!("{url}%2C{other}")] {
        let report = PgLedger::open_read_only(&url).unwrap().verify().unwrap();
        assert_eq!((report.receipts, report.first_bad), (2, None), "{url}");
    }
}

#[test]
fn checkpoint_then_recover_visits_only_the_tail_after_a_reopen() {
    let Some(url) = fresh_schema() else { return };
    {
        let ledger = open(&url);
        for i in 0..10 {
            append_next(&ledger, &tenant(["a", "b"][i % 2]), "before");
        }
        ledger
            .checkpoint(ledger.mark().unwrap(), b"snapshot-1")
            .unwrap();
        for i in 0..5 {
            append_next(&ledger, &tenant(["a", "b"][i % 2]), "after");
        }
        // A mark older than the stored checkpoint is refused.
        let stale = Mark::new(3, 3);
        assert!(matches!(
            ledger.checkpoint(stale, b"old"),
            Err(LedgerError::StaleMark { .. })
        ));
    }
    let ledger = open(&url);
    let mut seen = Vec::new();
    ledger
        .recover(&mut |item| {
            seen.push(match item {
                Recovered::Checkpoint(stored) => {
                    assert_eq!(stored.records, 10);
                    assert_eq!(stored.heads[&tenant("a")].seq, 5);
                    format!("blob {}", String::from_utf8_lossy(&stored.blob))
                }
                Recovered::Record(r) => format!("{} {}", r.tenant, r.seq),
            });
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, ["blob snapshot-1", "a 6", "b 6", "a 7", "b 7", "a 8"]);
}

#[test]
fn tampered_tables_are_reported_and_never_extended() {
    let Some(url) = fresh_schema() else { return };
    let setup = || {
        let ledger = open(&url);
        for i in 0..4 {
            append_next(&ledger, &tenant("acme"), &format!("{i}"));
            append_next(&ledger, &tenant("beta"), &format!("{i}"));
        }
    };
    setup();
    let mut db = client(&url);
    // One byte of acme seq 2 changed: its hash no longer matches.
    alter_bytes(&url, "tenant = 'acme' AND seq = 2");
    let report = PgLedger::open_read_only(&url).unwrap().verify().unwrap();
    let bad = report.first_bad.expect("tampered bytes not reported");
    assert_eq!(
        (bad.tenant.as_str(), bad.seq),
        ("acme", 2),
        "{}",
        bad.reason
    );
    let ledger = open(&url);
    let err = ledger.recover(&mut |_| Ok(())).unwrap_err();
    assert!(
        err.to_string().contains("breaks at seq `2`") && err.to_string().contains("refusing"),
        "{err}"
    );
    drop(ledger);

    // The last receipt of a chain deleted: the chain still links, the head does not.
    db.batch_execute("TRUNCATE ggen_receipts, ggen_heads, ggen_checkpoint")
        .unwrap();
    setup();
    db.execute(
        "DELETE FROM ggen_receipts WHERE tenant = 'beta' AND seq = 4",
        &[],
    )
    .unwrap();
    let err = PgLedger::open(&url, PgOptions::default()).unwrap_err();
    assert!(err.to_string().contains("refusing to extend"), "{err}");
    let bad = PgLedger::open_read_only(&url)
        .unwrap()
        .verify()
        .unwrap()
        .first_bad
        .expect("a deleted tail not reported");
    assert_eq!(bad.tenant, "beta", "{}", bad.reason);

    // A receipt in the middle of the log deleted: a gap in the positions.
    db.batch_execute("TRUNCATE ggen_receipts, ggen_heads, ggen_checkpoint")
        .unwrap();
    setup();
    db.execute(
        "DELETE FROM ggen_receipts WHERE tenant = 'acme' AND seq = 3",
        &[],
    )
    .unwrap();
    let bad = PgLedger::open_read_only(&url)
        .unwrap()
        .verify()
        .unwrap()
        .first_bad
        .expect("a deleted receipt not reported");
    assert!(bad.reason.contains("missing"), "{}", bad.reason);
}

/// Terminates the connection holding `url`'s writer lock; how many there were.
fn kill_the_writer(url: &str) -> i64 {
    client(url)
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
               AND classid = 1734829422
               AND objid::bigint = (SELECT oid::bigint FROM pg_namespace
                                    WHERE nspname = current_schema())",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_lost_writer_connection_is_resumed_without_loss_or_duplicates() {
    let Some(url) = fresh_schema() else { return };
    let ledger = open(&url);
    let t = tenant("acme");
    append_next(&ledger, &t, "before");
    assert_eq!(kill_the_writer(&url), 1);
    // The next commit finds the connection gone, connects again, takes the
    // lock back, sees the batch was not committed and commits it.
    append_next(&ledger, &t, "across the reconnect");
    append_next(&ledger, &t, "after");
    drop(ledger);
    let report = PgLedger::open_read_only(&url).unwrap().verify().unwrap();
    assert_eq!((report.receipts, report.first_bad), (3, None));
    assert_eq!(open(&url).head(&t).seq, 3);
}

#[test]
fn a_writer_that_cannot_take_its_lock_back_fails_every_ticket() {
    let Some(url) = fresh_schema() else { return };
    let ledger = open(&url);
    let t = tenant("acme");
    append_next(&ledger, &t, "committed");
    assert_eq!(kill_the_writer(&url), 1);
    // Someone else takes the lock as soon as the dead backend lets it go.
    let mut rival = client(&url);
    let started = std::time::Instant::now();
    loop {
        let taken: bool = rival
            .query_one(
                "SELECT pg_try_advisory_lock(1734829422,
                     (SELECT oid::bigint FROM pg_namespace WHERE nspname = current_schema())::int)",
                &[],
            )
            .unwrap()
            .get(0);
        if taken {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let head = ledger.head(&t);
    let outcome = ledger.append(Entry {
        tenant: t.clone(),
        seq: 2,
        prev: head.hash,
        bytes: receipt(&t, head, "never acknowledged"),
    });
    // Either refused at once or its ticket fails: never reported durable.
    if let Ok(appended) = outcome {
        let err = appended.ticket.wait().unwrap_err();
        assert!(matches!(err, LedgerError::Poisoned { .. }), "{err}");
        let chain = ggen_runtime::report::error_chain(&err);
        assert!(chain.contains("another governor process"), "{chain}");
    }
    assert!(ledger.flush().is_err());
    drop(ledger);
    let report = PgLedger::open_read_only(&url).unwrap().verify().unwrap();
    assert_eq!((report.receipts, report.first_bad), (1, None));
}

#[test]
fn group_commit_batches_concurrent_appends() {
    let Some(url) = fresh_schema() else { return };
    let ledger = Arc::new(open(&url));
    std::thread::scope(|s| {
        for i in 0..4 {
            let ledger = Arc::clone(&ledger);
            s.spawn(move || {
                let t = tenant(&format!("tenant-{i}"));
                for _ in 0..20 {
                    let mut tickets = Vec::new();
                    for _ in 0..25 {
                        let head = ledger.head(&t);
                        let appended = ledger
                            .append(Entry {
                                tenant: t.clone(),
                                seq: head.seq + 1,
                                prev: head.hash,
                                bytes: receipt(&t, head, "burst"),
                            })
                            .unwrap();
                        tickets.push(appended.ticket);
                    }
                    for ticket in tickets {
                        ticket.wait().unwrap();
                    }
                }
            });
        }
    });
    let report = ledger.verify().unwrap();
    assert_eq!(
        (report.tenants, report.receipts, report.first_bad),
        (4, 2000, None)
    );
    // Far fewer commits than receipts: PostgreSQL counts them per database.
    let commits: i64 = client(&url)
        .query_one(
            "SELECT count(*) FROM (SELECT DISTINCT xmin FROM ggen_receipts) t",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        commits * 5 <= 2000,
        "{commits} transactions for 2000 receipts"
    );
}

#[test]
fn copy_to_postgres_and_back_is_byte_identical() {
    let Some(url) = fresh_schema() else { return };
    const RECEIPTS: usize = 100_000;
    let source = tempfile::tempdir().unwrap();
    {
        let ledger = FileLedger::open(source.path(), fast_options()).unwrap();
        let tenants: Vec<TenantId> = (0..100).map(|i| tenant(&format!("t{i:03}"))).collect();
        let mut tickets = Vec::new();
        for i in 0..RECEIPTS {
            let t = &tenants[(i * 7) % tenants.len()];
            let head = ledger.head(t);
            let appended = ledger
                .append(Entry {
                    tenant: t.clone(),
                    seq: head.seq + 1,
                    prev: head.hash,
                    bytes: receipt(t, head, &format!("n{i}")),
                })
                .unwrap();
            tickets.push(appended.ticket);
        }
        ledger.flush().unwrap();
    }
    let back = tempfile::tempdir().unwrap();
    let there = copy(
        &Location::Dir(source.path().to_path_buf()),
        &Location::Database(url.clone()),
    )
    .unwrap();
    assert_eq!((there.tenants, there.receipts), (100, RECEIPTS as u64));
    let again = copy(
        &Location::Database(url.clone()),
        &Location::Dir(back.path().to_path_buf()),
    )
    .unwrap();
    assert_eq!(again, there);
    let scan = |dir: &Path| {
        let mut out = Vec::new();
        ggen_runtime::ledger::file::scan_dir(dir, &mut |r| {
            out.push((r.tenant.clone(), r.seq, r.hash, r.bytes.clone()));
            Ok(())
        })
        .unwrap();
        out
    };
    // Finished copies carry no mark: both open for writing.
    drop(open(&url));
    drop(FileLedger::open(back.path(), fast_options()).unwrap());
    let (original, returned) = (scan(source.path()), scan(back.path()));
    assert_eq!(original.len(), RECEIPTS);
    assert!(original == returned, "the round trip changed receipts");
    // A second copy into a ledger that holds receipts is refused.
    let err = copy(
        &Location::Dir(source.path().to_path_buf()),
        &Location::Database(url),
    )
    .unwrap_err();
    assert!(err.to_string().contains("already holds receipts"), "{err}");
}

#[test]
fn copy_refuses_a_tampered_source() {
    let Some(url) = fresh_schema() else { return };
    let source = populated(&["acme", "beta"], 4);
    let seg = &segments(source.path())[0];
    let fr = frames(seg);
    // acme seq 2 and 3 swapped: every frame intact, the chain broken.
    let clean = fs_err::read(seg).unwrap();
    let mut bytes = clean[..fr[2].0].to_vec();
    bytes.extend_from_slice(&clean[fr[4].0..fr[4].0 + fr[4].1]);
    bytes.extend_from_slice(&clean[fr[3].0..fr[3].0 + fr[3].1]);
    bytes.extend_from_slice(&clean[fr[2].0..fr[2].0 + fr[2].1]);
    bytes.extend_from_slice(&clean[fr[5].0..]);
    fs_err::write(seg, &bytes).unwrap();
    let err = copy(
        &Location::Dir(source.path().to_path_buf()),
        &Location::Database(url.clone()),
    )
    .unwrap_err();
    let chain = ggen_runtime::report::error_chain(&err);
    // The source's chains are checked as they are read: the copy stops at
    // the first record that does not extend its chain.
    assert!(
        chain.contains("hash chain of tenant `acme` breaks at seq `3`"),
        "{chain}"
    );
    // acme 1 and beta 1 were copied before the break: the error says the
    // destination holds only that prefix, and the destination says so too.
    assert!(chain.contains("copy stopped after 2 receipts"), "{chain}");
    let err = PgLedger::open(&url, PgOptions::default()).unwrap_err();
    assert!(matches!(err, LedgerError::IncompleteCopy { .. }), "{err}");
    let bad = first_bad(&url);
    assert!(bad.reason.contains("interrupted `ledger copy`"), "{bad:?}");

    // The same into a directory.
    let into = tempfile::tempdir().unwrap();
    let dir = into.path().join("copy");
    let err = copy(
        &Location::Dir(source.path().to_path_buf()),
        &Location::Dir(dir.clone()),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("copy stopped after 2 receipts"),
        "{err}"
    );
    let err = FileLedger::open(&dir, fast_options()).unwrap_err();
    assert!(matches!(err, LedgerError::IncompleteCopy { .. }), "{err}");
    let bad = verify_dir(&dir).unwrap().first_bad.unwrap();
    assert!(bad.reason.contains("interrupted `ledger copy`"), "{bad:?}");
}

/// A schema filled with acme and beta seq 1..=3 and a checkpoint, stopped.
fn six_receipts() -> Option<String> {
    let url = fresh_schema()?;
    let ledger = open(&url);
    for i in 0..3 {
        append_next(&ledger, &tenant("acme"), &format!("{i}"));
        append_next(&ledger, &tenant("beta"), &format!("{i}"));
    }
    ledger.checkpoint(ledger.mark().unwrap(), b"state").unwrap();
    Some(url)
}

/// What `verify` of the schema says is first bad (it must say something).
fn first_bad(url: &str) -> ggen_runtime::ledger::BadRecord {
    PgLedger::open_read_only(url)
        .unwrap()
        .verify()
        .unwrap()
        .first_bad
        .expect("the alteration was not reported")
}

/// A writer's open, then recovery: the error that refuses the tables.
fn refused(url: &str) -> String {
    let outcome =
        PgLedger::open(url, PgOptions::default()).and_then(|l| l.recover(&mut |_| Ok(())));
    match outcome {
        Ok(()) => panic!("a writer accepted altered tables"),
        Err(err) => ggen_runtime::report::error_chain(&err),
    }
}

#[test]
fn altered_heads_and_checkpoints_are_reported_and_refused() {
    // A head row deleted: the chain has no head.
    let Some(url) = six_receipts() else { return };
    client(&url)
        .execute("DELETE FROM ggen_heads WHERE tenant = 'acme'", &[])
        .unwrap();
    let bad = first_bad(&url);
    assert!(
        bad.tenant == "acme" && bad.reason.contains("no recorded head"),
        "{bad:?}"
    );
    assert!(refused(&url).contains("tenant `acme` has receipts but no head"));

    // A head's position moved.
    let Some(url) = six_receipts() else { return };
    client(&url)
        .execute(
            "UPDATE ggen_heads SET position = 999 WHERE tenant = 'beta'",
            &[],
        )
        .unwrap();
    assert_eq!(first_bad(&url).tenant, "beta");
    assert!(refused(&url).contains("head of tenant `beta` does not match"));

    // A receipt appended by hand for a new tenant (a valid first receipt).
    let Some(url) = six_receipts() else { return };
    let bytes = receipt(&tenant("mallory"), Head::EMPTY, "forged");
    let hash = chain_hash(&GENESIS, &bytes);
    client(&url)
        .execute(
            "INSERT INTO ggen_receipts (position, tenant, seq, hash, bytes)
             VALUES (7, 'mallory', 1, $1, $2)",
            &[&&hash[..], &bytes],
        )
        .unwrap();
    assert_eq!(first_bad(&url).tenant, "mallory");
    assert!(refused(&url).contains("tenant `mallory` has receipts but no head"));

    // A checkpoint claiming receipts the log does not hold.
    let Some(url) = six_receipts() else { return };
    client(&url)
        .execute("UPDATE ggen_checkpoint SET records = 1000", &[])
        .unwrap();
    assert!(
        first_bad(&url)
            .reason
            .contains("points past the end of the log")
    );
    assert!(refused(&url).contains("points past the end of the log"));
}

#[test]
fn a_set_aside_checkpoint_does_not_let_a_tampered_receipt_through() {
    use ggen_runtime::registry::Registry;
    let Some(url) = six_receipts() else { return };
    alter_bytes(&url, "tenant = 'acme' AND seq = 2");
    client(&url)
        .execute("UPDATE ggen_checkpoint SET blob = 'garbage'", &[])
        .unwrap();
    // The registry sets the unreadable checkpoint aside and replays every
    // receipt through `scan`, which checks each chain as it streams.
    let registry = Registry::new(&crate::governor::sku::OPEN, Arc::new(open(&url)));
    let err = registry.recover().unwrap_err();
    let chain = ggen_runtime::report::error_chain(&err);
    assert!(chain.contains("tenant `acme` breaks at seq `2`"), "{chain}");
}

#[test]
fn unreadable_columns_are_a_tamper_report_not_a_panic() {
    let Some(url) = six_receipts() else { return };
    client(&url)
        .batch_execute(
            "ALTER TABLE ggen_receipts ALTER COLUMN bytes DROP NOT NULL;
             UPDATE ggen_receipts SET bytes = NULL WHERE position = 3;
             DELETE FROM ggen_checkpoint",
        )
        .unwrap();
    let err = PgLedger::open_read_only(&url)
        .unwrap()
        .verify()
        .unwrap_err();
    assert!(
        err.to_string().contains("column bytes is unreadable"),
        "{err}"
    );
    // Without a checkpoint a start replays every receipt, and stops there.
    let err = refused(&url);
    assert!(err.contains("unreadable"), "{err}");
}

#[test]
fn copy_checks_a_database_source_whole_and_creates_nothing_on_refusal() {
    let Some(url) = six_receipts() else { return };
    // The last receipt of beta deleted: every chain still links.
    client(&url)
        .execute(
            "DELETE FROM ggen_receipts WHERE tenant = 'beta' AND seq = 3",
            &[],
        )
        .unwrap();
    let parent = tempfile::tempdir().unwrap();
    let to = parent.path().join("copy");
    let err = copy(&Location::Database(url.clone()), &Location::Dir(to.clone())).unwrap_err();
    assert!(err.to_string().contains("source does not verify"), "{err}");
    assert!(!to.exists(), "a refused copy created its destination");
    // A missing source directory creates nothing either.
    let missing = Location::Dir(parent.path().join("missing"));
    let err = copy(&missing, &Location::Dir(to.clone())).unwrap_err();
    assert!(err.to_string().contains("no ledger at"), "{err}");
    assert!(!to.exists());
    // Nor may a ledger be copied onto itself.
    let err = copy(&Location::Database(url.clone()), &Location::Database(url)).unwrap_err();
    assert!(
        err.to_string()
            .contains("both the source and the destination"),
        "{err}"
    );
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any one altered row (a byte of a receipt or of its hash flipped,
        /// a row deleted, a receipt moved to another tenant) is reported by
        /// `verify`, and a writer refuses to recover from it.
        #[test]
        fn any_altered_row_is_detected_and_never_extended(
            appends in proptest::collection::vec((0usize..4, "[a-z ]{0,20}"), 1..30),
            pick in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            xor in 1u8..=255,
            how in 0usize..4,
        ) {
            let Some(url) = fresh_schema() else { return Ok(()) };
            {
                let ledger = open(&url);
                for (t, note) in &appends {
                    append_next(&ledger, &tenant(&format!("t{t}")), note);
                }
            }
            let mut db = client(&url);
            let position = pick.index(appends.len()) as i64 + 1;
            let row = db
                .query_one("SELECT tenant, bytes, hash FROM ggen_receipts WHERE position = $1", &[&position])
                .unwrap();
            let (owner, mut bytes, mut hash): (String, Vec<u8>, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
            let changed = match how {
                0 => {
                    let i = at.index(bytes.len());
                    bytes[i] ^= xor;
                    db.execute("UPDATE ggen_receipts SET bytes = $1 WHERE position = $2", &[&bytes, &position])
                }
                1 => {
                    let i = at.index(hash.len());
                    hash[i] ^= xor;
                    db.execute("UPDATE ggen_receipts SET hash = $1 WHERE position = $2", &[&hash, &position])
                }
                2 => db.execute("DELETE FROM ggen_receipts WHERE position = $1", &[&position]),
                _ => {
                    let other = format!("t{}", (owner[1..].parse::<usize>().unwrap() + 1) % 4);
                    db.execute("UPDATE ggen_receipts SET tenant = $1 WHERE position = $2", &[&other, &position])
                }
            };
            // Moving a receipt onto a (tenant, seq) that exists is refused by the key.
            prop_assume!(changed.is_ok());
            let report = PgLedger::open_read_only(&url).unwrap().verify().unwrap();
            prop_assert!(report.first_bad.is_some(), "row {} altered ({}), not reported", position, how);
            let refused = PgLedger::open(&url, PgOptions::default())
                .and_then(|ledger| ledger.recover(&mut |_| Ok(())));
            prop_assert!(refused.is_err(), "a writer recovered from row {} altered ({})", position, how);
        }
    }
}

/// The governor's command line on a database, in-process (`cli::run`):
/// replay into it, verify, show, copy out and verify the copy, and the
/// exit codes of a tampered ledger and of a command naming no ledger.
#[test]
fn the_command_line_replays_verifies_shows_and_copies_a_database() {
    use std::process::ExitCode;
    let Some(url) = fresh_schema() else { return };
    let pack = &crate::governor::sku::OPEN;
    let run = |args: &[&str]| ggen_runtime::cli::run(pack, [&["governor"], args].concat());
    let work = tempfile::tempdir().unwrap();
    let signals = work.path().join("signals.jsonl");
    let lines: String = (0..40)
        .map(|i| {
            format!(
                "{{\"tenant\":\"t{}\",\"signal\":\"load\",\"value\":{},\"at\":\"2026-01-01T00:00:{:02}Z\",\"id\":\"m-{i}\"}}\n",
                i % 4,
                i * 3,
                i
            )
        })
        .collect();
    fs_err::write(&signals, lines).unwrap();
    let signals = signals.to_str().unwrap();
    let copy_dir = work.path().join("copy");
    let copy_dir = copy_dir.to_str().unwrap();

    assert_eq!(
        run(&["replay", "--signals", signals, "--database-url", &url]),
        ExitCode::SUCCESS
    );
    assert_eq!(
        run(&["ledger", "verify", "--database-url", &url]),
        ExitCode::SUCCESS
    );
    assert_eq!(
        run(&["ledger", "show", "--database-url", &url, "--tenant", "t1"]),
        ExitCode::SUCCESS
    );
    assert_eq!(
        run(&["ledger", "copy", "--from", &url, "--to", copy_dir]),
        ExitCode::SUCCESS
    );
    assert_eq!(
        run(&["ledger", "verify", "--ledger", copy_dir]),
        ExitCode::SUCCESS
    );
    let copied = verify_dir(copy_dir).unwrap();
    assert_eq!((copied.tenants, &copied.first_bad), (4, &None));
    assert!(copied.receipts >= 40, "{copied:?}");
    // A second copy into the same place is refused (exit 1), as is an
    // unknown scheme.
    assert_eq!(
        run(&["ledger", "copy", "--from", &url, "--to", copy_dir]),
        ExitCode::from(1)
    );
    assert_eq!(
        run(&[
            "ledger",
            "copy",
            "--from",
            copy_dir,
            "--to",
            "mysql://u:p@h/db"
        ]),
        ExitCode::from(1)
    );
    // A receipt altered in the table: verify exits 1.
    alter_bytes(&url, "position = 5");
    assert_eq!(
        run(&["ledger", "verify", "--database-url", &url]),
        ExitCode::from(1)
    );
    // No ledger named at all (unless the caller exported the variable).
    if std::env::var_os(ggen_runtime::store::DATABASE_URL_ENV).is_none() {
        assert_eq!(run(&["ledger", "verify"]), ExitCode::from(1));
    }
}

/// A URL's password never reaches a message: not when the server cannot be
/// reached, not when it refuses the login, not from `ledger copy`.
#[test]
fn errors_name_the_database_without_its_password() {
    let Some(url) = fresh_schema() else { return };
    // The test server on a port nothing listens on, then with a password
    // for a role that does not exist.
    let port = url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .unwrap();
    let unreachable = "postgres://ggen:s3cret-pw@127.0.0.1:1/ggen_test".to_owned();
    let refused = format!("postgres://nobody:s3cret-pw@127.0.0.1:{port}/ggen_test");
    for url in [&unreachable, &refused] {
        for err in [
            PgLedger::open(url, PgOptions::default()).unwrap_err(),
            PgLedger::open_read_only(url).unwrap_err(),
        ] {
            let chain = ggen_runtime::report::error_chain(&err);
            assert!(!chain.contains("s3cret"), "{chain}");
            assert!(chain.contains("127.0.0.1"), "{chain}");
        }
        let dir = tempfile::tempdir().unwrap();
        let err = copy(
            &Location::Dir(dir.path().to_path_buf()),
            &Location::Database(url.clone()),
        )
        .unwrap_err();
        let chain = ggen_runtime::report::error_chain(&err);
        assert!(!chain.contains("s3cret"), "{chain}");
    }
}

/// Takes every overtaken decision again by panicking: a bug on the
/// shared writer's thread, where decisions are taken again.
struct PanickingTaker;

impl Redecide for PanickingTaker {
    fn redecide(
        &self,
        _tenant: &TenantId,
        _stored: Stored,
        _redo: &Redo,
    ) -> Result<(Option<Decision>, Retaken), String> {
        panic!("injected bug in a taker");
    }
}

/// The receipt after `head` as a decision a replica took on `t`'s chain
/// ending there.
fn decision_after(t: &TenantId, head: Head, note: &str) -> Decision {
    Decision {
        tenant: t.clone(),
        entries: vec![Entry {
            tenant: t.clone(),
            seq: head.seq + 1,
            prev: head.hash,
            bytes: receipt(t, head, note),
        }],
        state: Vec::new(),
        due: None,
        ids: Vec::new(),
        window_ms: 0,
        redo: Some(Redo {
            input: ggen_runtime::receipt::Input::Reset {
                reason: note.to_owned(),
            },
            at: ggen_runtime::clock::Timestamp::now(),
        }),
        max_tenants: u32::MAX,
    }
}

#[test]
fn a_panicking_shared_writer_fails_the_ledger_instead_of_hanging_its_waiters() {
    use ggen_runtime::pg::shared::SharedPgLedger;
    let Some(url) = fresh_schema() else { return };
    let first = Arc::new(SharedPgLedger::open(&url, PgOptions::default()).unwrap());
    let second = Arc::new(SharedPgLedger::open(&url, PgOptions::default()).unwrap());
    let taker: Arc<dyn Redecide> = Arc::new(PanickingTaker);
    second.set_redecider(Arc::downgrade(&taker));
    let t = tenant("acme");
    first
        .append_decision(decision_after(&t, Head::EMPTY, "first"))
        .unwrap()
        .ticket
        .wait()
        .unwrap();
    // The second replica decided on the empty chain the first overtook:
    // its writer takes the decision again, and the taker panics.
    let err = answered({
        let (second, t) = (Arc::clone(&second), t.clone());
        move || {
            let appended = second.append_decision(decision_after(&t, Head::EMPTY, "overtaken"));
            appended.and_then(|a| a.ticket.wait())
        }
    });
    assert_writer_stopped(&err);
    let refused = second.append_decision(decision_after(&t, Head::EMPTY, "later"));
    assert!(
        matches!(refused, Err(LedgerError::Poisoned { .. })),
        "{refused:?}"
    );
    // The other replica is untouched, and so is the chain; the panicked
    // transaction let go of the tenant's lock (its connection closed), or
    // this append would wait for it.
    let head = first.load(&t).unwrap().head;
    assert_eq!(head.seq, 1);
    let next = decision_after(&t, head, "after");
    let appended = answered({
        let first = Arc::clone(&first);
        move || first.append_decision(next).and_then(|a| a.ticket.wait())
    });
    appended.unwrap();
    assert_eq!(first.load(&t).unwrap().head.seq, 2);
    drop(taker);
}

/// Takes every overtaken decision again on the stored head (one receipt
/// saying so), counting how often it was asked.
#[derive(Default)]
struct RetakingTaker(AtomicUsize);

impl Redecide for RetakingTaker {
    fn redecide(
        &self,
        tenant: &TenantId,
        stored: Stored,
        _redo: &Redo,
    ) -> Result<(Option<Decision>, Retaken), String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let report: Retaken = Arc::new("taken again");
        Ok((
            Some(decision_after(tenant, stored.head, "taken again")),
            report,
        ))
    }
}

/// A TCP proxy in front of the test server. Once armed, it cuts the first
/// connection that sends a `COMMIT` after writing receipts (a writer's):
/// the `COMMIT` reaches the server, but its answer never reaches the
/// client. Every other byte passes through. Armed with [`CommitCutter::arm_restart`],
/// it then cuts every other open connection too, as a server restart or a
/// failover would; new connections go through as before.
struct CommitCutter {
    port: u16,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    relays: Relays,
}

/// The client side of every connection relayed so far, and whether an
/// armed cut takes them all.
#[derive(Clone, Default)]
struct Relays {
    clients: Arc<std::sync::Mutex<Vec<TcpStream>>>,
    all: Arc<AtomicBool>,
}

impl Relays {
    /// Cuts every connection relayed so far when the cut takes them all.
    fn cut_if_all(&self) {
        if self.all.swap(false, Ordering::SeqCst) {
            for client in self.clients.lock().unwrap().drain(..) {
                let _ = client.shutdown(Shutdown::Both);
            }
        }
    }
}

impl CommitCutter {
    /// A cutter in front of the server `url` names.
    fn start(url: &str) -> CommitCutter {
        let upstream = authority(url).to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let cutter = CommitCutter {
            port: listener.local_addr().unwrap().port(),
            armed: Arc::default(),
            cuts: Arc::default(),
            relays: Relays::default(),
        };
        let (armed, cuts) = (Arc::clone(&cutter.armed), Arc::clone(&cutter.cuts));
        let relays = cutter.relays.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(&upstream)) else {
                    return;
                };
                relays
                    .clients
                    .lock()
                    .unwrap()
                    .push(client.try_clone().unwrap());
                relay(
                    client,
                    server,
                    Arc::clone(&armed),
                    Arc::clone(&cuts),
                    relays.clone(),
                );
            }
        });
        cutter
    }

    /// `url` through the cutter.
    fn url(&self, url: &str) -> String {
        url.replacen(authority(url), &format!("127.0.0.1:{}", self.port), 1)
    }

    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// [`CommitCutter::arm`], and the cut takes every open connection.
    fn arm_restart(&self) {
        self.relays.all.store(true, Ordering::SeqCst);
        self.arm();
    }

    /// Cuts every open connection now, as a server restart would.
    fn restart(&self) {
        self.relays.all.store(true, Ordering::SeqCst);
        self.relays.cut_if_all();
    }

    /// Connections cut so far.
    fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

/// The `host:port` of a `postgres://user@host:port/db…` URL.
fn authority(url: &str) -> &str {
    let rest = &url[url.find('@').expect("a user in the test URL") + 1..];
    &rest[..rest.find('/').expect("a database in the test URL")]
}

/// Relays one connection both ways (see [`CommitCutter`]).
fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    relays: Relays,
) {
    // Set once the armed `COMMIT` went to the server: its answer is dropped.
    let hold = Arc::new(AtomicBool::new(false));
    let (mut from_server, mut to_client) =
        (server.try_clone().unwrap(), client.try_clone().unwrap());
    let holding = Arc::clone(&hold);
    std::thread::spawn(move || {
        let mut buf = vec![0; 1 << 16];
        while let Ok(n @ 1..) = from_server.read(&mut buf) {
            if holding.load(Ordering::SeqCst) {
                break;
            }
            if to_client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_client.shutdown(Shutdown::Both);
        let _ = from_server.shutdown(Shutdown::Both);
    });
    let (mut from_client, mut to_server) = (client, server);
    std::thread::spawn(move || {
        let mut buf = vec![0; 1 << 16];
        // The end of the last read, so a marker split between reads is found.
        let mut seen: Vec<u8> = Vec::new();
        let mut writer = false;
        while let Ok(n @ 1..) = from_client.read(&mut buf) {
            seen.drain(..seen.len().saturating_sub(16));
            let tail = seen.len();
            seen.extend_from_slice(&buf[..n]);
            // A marker ending in this read's bytes (one wholly in the kept
            // tail was seen last time).
            let has = |marker: &[u8]| {
                let first = tail.saturating_sub(marker.len() - 1);
                seen.len() >= marker.len()
                    && (first..=seen.len() - marker.len()).any(|at| seen[at..].starts_with(marker))
            };
            writer |= has(b"UPDATE ggen_log");
            let cut = writer && has(b"COMMIT\0") && armed.swap(false, Ordering::SeqCst);
            if cut {
                hold.store(true, Ordering::SeqCst);
                cuts.fetch_add(1, Ordering::SeqCst);
            }
            if to_server.write_all(&buf[..n]).is_err() {
                break;
            }
            if cut {
                relays.cut_if_all();
            }
        }
        let _ = to_server.shutdown(Shutdown::Both);
    });
}

#[test]
fn a_commit_whose_answer_is_lost_counts_the_decisions_it_took_again_once() {
    use ggen_runtime::pg::shared::SharedPgLedger;
    let Some(url) = fresh_schema() else { return };
    let cutter = CommitCutter::start(&url);
    let first = Arc::new(SharedPgLedger::open(&cutter.url(&url), PgOptions::default()).unwrap());
    let second = SharedPgLedger::open(&url, PgOptions::default()).unwrap();
    let taker = Arc::new(RetakingTaker::default());
    let attached: Arc<dyn Redecide> = Arc::clone(&taker) as Arc<dyn Redecide>;
    first.set_redecider(Arc::downgrade(&attached));
    let t = tenant("acme");
    let committed = |ledger: &SharedPgLedger, decision| {
        ledger
            .append_decision(decision)
            .unwrap()
            .ticket
            .wait()
            .unwrap();
    };
    committed(&first, decision_after(&t, Head::EMPTY, "first"));
    let one = first.load(&t).unwrap().head;
    committed(&second, decision_after(&t, one, "second"));
    // The first replica decides on the head the second overtook: its writer
    // takes the decision again and commits it, and the answer to that
    // `COMMIT` is lost with the connection.
    cutter.arm();
    let ticket = first
        .append_decision(decision_after(&t, one, "overtaken"))
        .unwrap()
        .ticket;
    let waiting = ticket.clone();
    answered(move || waiting.wait()).unwrap();
    assert_eq!(cutter.cuts(), 1, "no connection was cut after its COMMIT");
    let report = ticket.retaken().expect("the decision was not taken again");
    assert_eq!(report.downcast_ref::<&str>(), Some(&"taken again"));
    // Written once: the resumed writer saw its decision stored, and did not
    // take the input again on top of it.
    assert_eq!(taker.0.load(Ordering::SeqCst), 1, "taken again twice");
    let head = second.load(&t).unwrap().head;
    assert_eq!(head.seq, 3);
    let third = second.read(&t, 2, 10).unwrap();
    assert_eq!(third.len(), 1);
    assert!(String::from_utf8_lossy(&third[0].bytes).contains("taken again"));
    drop((first, second));
    let report = PgLedger::open_read_only(&url).unwrap().verify().unwrap();
    assert_eq!((report.receipts, report.first_bad), (3, None));
    drop(attached);
}

#[test]
fn a_decision_under_a_lock_whose_commit_answer_is_lost_is_reported_as_written() {
    use ggen_runtime::pg::shared::SharedPgLedger;
    let Some(url) = fresh_schema() else { return };
    let cutter = CommitCutter::start(&url);
    let ledger = SharedPgLedger::open(&cutter.url(&url), PgOptions::default()).unwrap();
    let t = tenant("acme");
    let locked = ledger.lock_tenant(&t).unwrap();
    let head = locked.stored().head;
    // The `COMMIT` goes through; its answer is lost with the connection.
    cutter.arm();
    let decision = decision_after(&t, head, "under the lock");
    let committed = locked.commit(decision);
    assert_eq!(cutter.cuts(), 1, "no connection was cut after its COMMIT");
    // Reported as the server has it: written. Refused, the caller would
    // take the input again on top of it.
    committed.unwrap();
    assert_eq!(ledger.load(&t).unwrap().head.seq, 1);
    drop(ledger);
    let report = PgLedger::open_read_only(&url).unwrap().verify().unwrap();
    assert_eq!((report.receipts, report.first_bad), (1, None));
}

/// Makes every reader thread of `ledger` (on the schema of `url`) hold a
/// connection: four loads held together by a lock on the heads, so each
/// takes a reader of its own.
fn connect_every_reader(url: &str, ledger: &Arc<ggen_runtime::pg::shared::SharedPgLedger>) {
    let mut other = client(url);
    let mut held = other.transaction().unwrap();
    held.batch_execute("LOCK TABLE ggen_heads IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let loads: Vec<_> = (0..4)
        .map(|i| {
            let ledger = Arc::clone(ledger);
            std::thread::spawn(move || ledger.load(&tenant(&format!("r{i}"))).unwrap())
        })
        .collect();
    let waiting = || {
        client(url)
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ggen-read' AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
    };
    while waiting() < 4 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    held.commit().unwrap();
    for load in loads {
        assert_eq!(load.join().unwrap().head.seq, 0);
    }
}

/// A replica's ledger on the schema of `url` through a [`CommitCutter`],
/// every reader connected.
fn cut_replica(url: &str) -> (CommitCutter, Arc<ggen_runtime::pg::shared::SharedPgLedger>) {
    let cutter = CommitCutter::start(url);
    let ledger =
        ggen_runtime::pg::shared::SharedPgLedger::open(&cutter.url(url), PgOptions::default());
    let ledger = Arc::new(ledger.unwrap());
    connect_every_reader(url, &ledger);
    (cutter, ledger)
}

/// `t` as stored, loaded as a caller that rides out lost connections.
fn patient_load(ledger: &ggen_runtime::pg::shared::SharedPgLedger, t: &TenantId) -> Stored {
    ggen_runtime::pg::shared::patiently_again(|| {
        ledger
            .load(t)
            .map_err(ggen_runtime::registry::RegistryError::Ledger)
    })
    .unwrap()
}

/// A caller that must not lose its work (an action's result) rides out a
/// restart of the server: every reader fails once on its dead
/// connection, where a request gets its error at once.
#[test]
fn a_patient_caller_rides_out_every_connection_lost_at_once() {
    let Some(url) = fresh_schema() else { return };
    let (cutter, ledger) = cut_replica(&url);
    cutter.restart();
    let t = tenant("acme");
    let error = ledger.load(&t).unwrap_err().to_string();
    assert!(error.ends_with("loading a tenant"), "{error}");
    assert_eq!(patient_load(&ledger, &t).head.seq, 0);
}

/// As above, when the connection went with all the others (a restart, a
/// failover): every reader first fails on its dead connection, and the
/// question is asked again until a reader connected anew answers it.
#[test]
fn a_locked_commit_whose_answer_went_with_every_connection_is_reported_as_written() {
    let Some(url) = fresh_schema() else { return };
    let (cutter, ledger) = cut_replica(&url);
    let t = tenant("acme");
    let locked = ledger.lock_tenant(&t).unwrap();
    let head = locked.stored().head;
    cutter.arm_restart();
    let committed = locked.commit(decision_after(&t, head, "under the lock"));
    assert_eq!(cutter.cuts(), 1, "no connection was cut after its COMMIT");
    committed.unwrap();
    // (A reader not asked yet still fails once on its dead connection.)
    assert_eq!(patient_load(&ledger, &t).head.seq, 1);
    drop(ledger);
    let report = PgLedger::open_read_only(&url).unwrap().verify().unwrap();
    assert_eq!((report.receipts, report.first_bad), (1, None));
}

//! Two governor processes on one PostgreSQL schema, over real sockets:
//! the same 100 tenants hammered through both (signals, redeliveries,
//! marketplace events, resets, action results), a `kill -9` of one under
//! load, the timers a killed replica held, and a storm spread over both.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ggen_runtime::clock::Timestamp;
use ggen_runtime::ingress::auth::SigningKey;
use ggen_runtime::ledger::Ledger;
use ggen_runtime::pg::PgLedger;
use ggen_runtime::tenant::TenantId;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::task::block_in_place as blocking;

use super::client::Connection;
use super::durability::{
    CHILD_ARCHIVE, CHILD_PARTITION, CHILD_REPLICA, CHILD_RETAIN, Child, signal_id,
    spawn_governor_env,
};
use super::harness::{ADMIN, SECRET, TOKEN, signal};
use crate::ledger::postgres::fresh_schema;

const TENANTS: usize = 100;

fn tenant_of(i: usize) -> String {
    format!("f{}", i % TENANTS)
}

/// A governor child on `url` that accepts marketplace events and resets.
fn governor(url: &str, extra: &[(&str, String)]) -> (Child, SocketAddr) {
    let mut env = vec![
        (
            "GOVERNOR_MARKETPLACE_SECRET",
            String::from_utf8(SECRET.to_vec()).unwrap(),
        ),
        ("GOVERNOR_ADMIN_TOKEN", ADMIN.to_owned()),
    ];
    env.extend(extra.iter().cloned());
    spawn_governor_env(Path::new(url), &env)
}

/// Every receipt of every tenant named `f0`…, parsed, checking that each
/// chain's seqs run 1, 2, 3… without a gap.
fn all_receipts(
    url: &str,
    replica_sku: bool,
    tenants: impl Iterator<Item = String>,
) -> BTreeMap<String, Vec<Value>> {
    let ledger = PgLedger::open_read_only(url).unwrap();
    let report = ledger.verify().unwrap();
    assert_eq!(report.first_bad, None, "{report:?}");
    // And the auditor's `ledger verify`: every stored tenant state is what
    // its receipts replay to.
    let pack: &'static dyn ggen_runtime::sku::PolicyPack = if replica_sku {
        &super::sku::REPLICA
    } else {
        &super::sku::GUARD
    };
    let (text, ok) = ggen_runtime::cli::verify_database_report(pack, url, None).unwrap();
    assert!(ok, "{text}");
    tenants
        .map(|t| {
            let records = ledger
                .read(&TenantId::new(&t).unwrap(), 0, usize::MAX)
                .unwrap();
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r.seq, i as u64 + 1, "{t}: receipts are not sequential");
            }
            let parsed = records
                .iter()
                .map(|r| serde_json::from_slice(&r.bytes).unwrap())
                .collect();
            (t, parsed)
        })
        .collect()
}

/// One request of the mix for request number `i` of `worker`; returns the
/// signal id when an acknowledged signal was sent.
async fn one(
    connection: &mut Connection,
    worker: usize,
    i: usize,
) -> std::io::Result<(u16, String, Option<String>)> {
    let tenant = tenant_of(worker * 7 + i);
    match i % 50 {
        7 => {
            let event = if i % 100 == 7 { "created" } else { "approved" };
            let body =
                format!(r#"{{"tenant":"{tenant}","event":"{event}","id":"m-{worker}-{i}"}}"#);
            let signature = SigningKey::new(SECRET).sign(body.as_bytes(), Timestamp::now());
            let (status, text) = connection
                .request_with(
                    "POST",
                    "/v1/marketplace/events",
                    &[("x-ggen-signature", &signature)],
                    &body,
                )
                .await?;
            Ok((status, text, None))
        }
        23 => {
            let path = format!("/v1/tenants/{tenant}/reset");
            let (status, text) = connection
                .request("POST", &path, Some(ADMIN), r#"{"reason":"fleet test"}"#)
                .await?;
            Ok((status, text, None))
        }
        _ => {
            let id = format!("s-{worker}-{i}");
            let value = if i.is_multiple_of(4) { 150.0 } else { 20.0 };
            let (status, text) = connection
                .request(
                    "POST",
                    "/v1/signals",
                    Some(TOKEN),
                    &signal(&tenant, value, &id),
                )
                .await?;
            Ok((status, text, Some(id)))
        }
    }
}

/// Whether `status` answers a request of the mix well: 2xx, a reset of a
/// tenant no input created yet (404), a refused entitlement event (409).
fn fine(status: u16) -> bool {
    (200..300).contains(&status) || status == 404 || status == 409
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_governors_share_100_tenants_and_one_serves_on_when_the_other_is_killed() {
    let Some(url) = blocking(fresh_schema) else {
        return;
    };
    let (mut a, addr_a) = governor(&url, &[]);
    let (_b, addr_b) = governor(&url, &[]);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..8usize {
        let (acked, killed, done) = (Arc::clone(&acked), Arc::clone(&killed), Arc::clone(&done));
        let (mine, other) = if worker.is_multiple_of(2) {
            (addr_a, addr_b)
        } else {
            (addr_b, addr_a)
        };
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(mine).await.unwrap();
            let mut redeliver = Connection::open(other).await.unwrap();
            for i in 0..300 {
                let outcome = one(&mut connection, worker, i).await;
                let (status, text, id) = match outcome {
                    Ok(reply) => reply,
                    // Only replica A dies, and only its clients see it.
                    Err(_) if mine == addr_a && killed.load(Ordering::Acquire) => break,
                    Err(error) => panic!("worker {worker}: {error}"),
                };
                assert!(fine(status), "worker {worker} request {i}: {status} {text}");
                if let Some(id) = id {
                    assert_eq!(status, 204, "{text}");
                    acked.lock().await.push(id.clone());
                    // Every tenth signal again, through the other replica:
                    // acknowledged, never recorded twice.
                    if i % 10 == 1 && !(other == addr_a && killed.load(Ordering::Acquire)) {
                        let tenant = tenant_of(worker * 7 + i);
                        let body =
                            signal(&tenant, if i.is_multiple_of(4) { 150.0 } else { 20.0 }, &id);
                        match redeliver
                            .request("POST", "/v1/signals", Some(TOKEN), &body)
                            .await
                        {
                            Ok((status, text)) => assert_eq!(status, 204, "{text}"),
                            Err(_) if other == addr_a => {
                                if let Ok(c) = Connection::open(mine).await {
                                    redeliver = c;
                                }
                            }
                            Err(error) => panic!("redelivery: {error}"),
                        }
                    }
                }
            }
            done.fetch_add(1, Ordering::AcqRel);
        }));
    }
    // Kill A under load, once both have acknowledged a good share.
    let started = Instant::now();
    while acked.lock().await.len() < 600 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    killed.store(true, Ordering::Release);
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        done.load(Ordering::Acquire),
        8,
        "every worker finished (B's never saw a failure)"
    );
    // A comes back and serves the same tenants.
    let (_a, addr_a) = governor(&url, &[]);
    let mut connection = Connection::open(addr_a).await.unwrap();
    for i in 0..50 {
        let id = format!("after-{i}");
        let body = signal(&tenant_of(i), 20.0, &id);
        let (status, text) = connection
            .request("POST", "/v1/signals", Some(TOKEN), &body)
            .await
            .unwrap();
        assert_eq!(status, 204, "{text}");
        acked.lock().await.push(id);
    }
    let acked = std::mem::take(&mut *acked.lock().await);
    blocking(|| {
        let receipts = all_receipts(&url, false, (0..TENANTS).map(tenant_of));
        let mut recorded = BTreeMap::<String, usize>::new();
        let mut kinds = BTreeSet::new();
        for r in receipts.values().flatten() {
            kinds.insert(r["kind"].as_str().unwrap().to_owned());
            if r["kind"] == "signal" {
                let id = r["event"]["id"].as_str().unwrap().to_owned();
                *recorded.entry(id).or_default() += 1;
            }
        }
        for id in &acked {
            assert_eq!(recorded.get(id), Some(&1), "acknowledged `{id}`");
        }
        assert!(
            recorded.values().all(|n| *n == 1),
            "a signal recorded twice"
        );
        for kind in ["signal", "entitlement", "reset", "action", "action_result"] {
            assert!(kinds.contains(kind), "no `{kind}` receipt: {kinds:?}");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_a_killed_governor_held_fire_at_the_other() {
    let Some(url) = blocking(fresh_schema) else {
        return;
    };
    let replica = [(CHILD_REPLICA, "1".to_owned())];
    let (mut a, addr_a) = governor(&url, &replica);
    let (_b, _addr_b) = governor(&url, &replica);
    // A decides every breach: its failing actions leave each tenant
    // degraded with a retry timer every 2 s.
    let mut connection = Connection::open(addr_a).await.unwrap();
    let tenants: Vec<String> = (0..10).map(|i| format!("timer{i}")).collect();
    for (i, t) in tenants.iter().enumerate() {
        let (status, text) = connection
            .request(
                "POST",
                "/v1/signals",
                Some(TOKEN),
                &signal(t, 150.0, &format!("b{i}")),
            )
            .await
            .unwrap();
        assert_eq!(status, 204, "{text}");
    }
    let timeouts = |receipts: &BTreeMap<String, Vec<Value>>, after: i64| {
        receipts
            .iter()
            .filter(|(_, rs)| {
                rs.iter().any(|r| {
                    r["kind"] == "timeout"
                        && Timestamp::parse(r["at"].as_str().unwrap())
                            .unwrap()
                            .as_millis()
                            > after
                })
            })
            .count()
    };
    // Timers are running (fired by either replica) before the kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let receipts = blocking(|| all_receipts(&url, true, tenants.iter().cloned()));
        if timeouts(&receipts, 0) == tenants.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timers never fired: {receipts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    let killed_at = Timestamp::now().as_millis();
    // B alone fires every tenant's timer again, A's claims included once
    // their lease runs out.
    let deadline = Instant::now() + Duration::from_secs(40);
    let receipts = loop {
        let receipts = blocking(|| all_receipts(&url, true, tenants.iter().cloned()));
        if timeouts(&receipts, killed_at + 3_000) == tenants.len() {
            break receipts;
        }
        assert!(
            Instant::now() < deadline,
            "timers stopped after the kill: {receipts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Each timer fired once: no two timeout receipts of a tenant for the
    // same due time.
    for (t, rs) in &receipts {
        let dues: Vec<&Value> = rs
            .iter()
            .filter(|r| r["kind"] == "timeout")
            .map(|r| &r["event"]["due"])
            .collect();
        let distinct: BTreeSet<String> = dues.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            distinct.len(),
            dues.len(),
            "{t}: a timer fired twice: {dues:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_over_two_governors_dispatches_one_action_per_cooldown() {
    let Some(url) = blocking(fresh_schema) else {
        return;
    };
    let (_a, addr_a) = governor(&url, &[]);
    let (_b, addr_b) = governor(&url, &[]);
    let mut tasks = Vec::new();
    for worker in 0..8usize {
        let addr = if worker.is_multiple_of(2) {
            addr_a
        } else {
            addr_b
        };
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(addr).await.unwrap();
            for n in 0..60 {
                let body = signal("storm", 150.0 + f64::from(n), &format!("s-{worker}-{n}"));
                let (status, text) = connection
                    .request("POST", "/v1/signals", Some(TOKEN), &body)
                    .await
                    .unwrap();
                assert_eq!(status, 204, "{text}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    blocking(|| {
        let receipts = all_receipts(&url, false, std::iter::once("storm".to_owned()));
        let storm = &receipts["storm"];
        let signals = storm.iter().filter(|r| r["kind"] == "signal").count();
        assert_eq!(signals, 480);
        // One cooldown (300 s) covers the whole storm: one dispatch, over
        // both replicas together.
        let actions = storm
            .iter()
            .filter(|r| r["kind"] == "action" && r["undo"] != true)
            .count();
        assert_eq!(actions, 1, "{storm:?}");
    });
}

/// Replicas running retention (partitions of 40 receipts, everything full
/// and past every state archived each second) under load, one of them
/// `kill -9`ed, so mid-way through an archiving round at some step: every
/// acknowledged signal is local or archived, once, and `ledger verify
/// --archive` passes from genesis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_archive_under_load_and_a_kill_9_loses_nothing() {
    let Some(url) = blocking(fresh_schema) else {
        return;
    };
    let archive_dir = tempfile::tempdir().unwrap();
    let retention = [
        (CHILD_RETAIN, "1B".to_owned()),
        (
            CHILD_ARCHIVE,
            archive_dir.path().to_str().unwrap().to_owned(),
        ),
        (CHILD_PARTITION, "40".to_owned()),
    ];
    let (mut a, addr_a) = governor(&url, &retention);
    let (b, addr_b) = governor(&url, &retention);
    let mut acked = Vec::new();
    let mut connections = [
        Connection::open(addr_a).await.unwrap(),
        Connection::open(addr_b).await.unwrap(),
    ];
    for i in 0..900usize {
        // Paced over a few seconds, so retention rounds run in between.
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if i == 450 {
            a.0.kill().unwrap();
            let _ = a.0.wait();
        }
        let side = if i < 450 { i % 2 } else { 1 };
        let id = format!("r-{i}");
        let (status, text) = connections[side]
            .request(
                "POST",
                "/v1/signals",
                Some(TOKEN),
                &signal(&tenant_of(i), 20.0, &id),
            )
            .await
            .unwrap();
        assert_eq!(status, 204, "{i}: {text}");
        acked.push(id);
    }
    // B's next rounds archive what is due, then it stops; its tables' size
    // is a metric (what is left locally: partitions of ~40 receipts).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, metrics) = connections[1]
        .request("GET", "/metrics", None, "")
        .await
        .unwrap();
    assert_eq!(status, 200, "{metrics}");
    let bytes: f64 = metrics
        .lines()
        .find(|line| line.starts_with("governor_ledger_bytes{"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no governor_ledger_bytes: {metrics}"));
    assert!(bytes > 8192.0, "{bytes}");
    drop(b);
    let archive =
        ggen_runtime::archive::Archive::open(archive_dir.path().to_str().unwrap()).unwrap();
    let (ids, anchor) = blocking(|| {
        let ledger = PgLedger::open_read_only(&url).unwrap();
        let mut fetch = archive.fetcher().unwrap();
        let mut ids = Vec::new();
        ledger
            .scan_with_archive(&mut fetch, &mut |record| {
                ids.extend(signal_id(&record.bytes));
                Ok(())
            })
            .unwrap();
        (ids, ledger.anchor().unwrap())
    });
    let anchor = anchor.expect("nothing was archived");
    assert!(
        anchor.partition > 5,
        "archived only {} partitions",
        anchor.partition - 1
    );
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a signal recorded twice");
    for id in &acked {
        assert!(unique.contains(id), "acknowledged signal {id} is lost");
    }
    let (text, ok) = blocking(|| {
        ggen_runtime::cli::verify_database_report(&super::sku::GUARD, &url, Some(&archive))
    })
    .unwrap();
    assert!(ok, "{text}");
}

//! Ledger throughput: append to memory, append to file with group commit, verify.
//!
//! Receipts are realistic canonical JSON of about 400 bytes.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ggen_runtime::canonical;
use ggen_runtime::ledger::file::{FileLedger, FileOptions, verify_dir};
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::ledger::{Entry, Head, Ledger, Recovered, chain_hash};
use ggen_runtime::tenant::TenantId;
use serde_json::json;

const TENANTS: usize = 64;
const BATCH: u64 = 10_000;

fn tenants() -> Vec<TenantId> {
    (0..TENANTS)
        .map(|i| TenantId::new(&format!("tenant-{i:04}")).unwrap())
        .collect()
}

/// A ~400-byte signal receipt.
fn receipt(t: &TenantId, head: Head) -> Vec<u8> {
    canonical::to_vec(&json!({
        "v": 1,
        "tenant": t,
        "seq": head.seq + 1,
        "kind": "signal",
        "at": "2026-01-01T00:00:00.250Z",
        "sku": "cost_guard",
        "spec_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "from": "stable",
        "to": "warning",
        "event": { "id": "m-1234567", "signal": "spend_rate", "value": "120.5" },
        "decision": { "level": "warn", "rule": "spend_rate", "threshold": "100", "dwell": 1 },
        "actions": [],
        "prev": hex::encode(head.hash),
    }))
    .unwrap()
}

/// `n` entries round-robin over the tenants, forming valid chains from empty.
fn entries(tenants: &[TenantId], n: u64) -> Vec<Entry> {
    let mut heads = vec![Head::EMPTY; tenants.len()];
    (0..n)
        .map(|i| {
            let k = i as usize % tenants.len();
            let t = &tenants[k];
            let head = heads[k];
            let bytes = receipt(t, head);
            heads[k] = Head {
                seq: head.seq + 1,
                hash: chain_hash(&head.hash, &bytes),
            };
            Entry {
                tenant: t.clone(),
                seq: head.seq + 1,
                prev: head.hash,
                bytes,
            }
        })
        .collect()
}

/// Appends every entry, then waits until all are durable.
fn append_all(ledger: &dyn Ledger, batch: Vec<Entry>) {
    for entry in batch {
        // Tickets are dropped: the flush below covers them all.
        drop(ledger.append(entry).unwrap().ticket);
    }
    ledger.flush().unwrap();
}

fn bench_ledger(c: &mut Criterion) {
    let tenants = tenants();
    let sample = receipt(&tenants[0], Head::EMPTY);
    eprintln!("receipt size: {} bytes", sample.len());

    let mut group = c.benchmark_group("canonical");
    group.throughput(Throughput::Elements(1));
    let value = serde_json::from_slice::<serde_json::Value>(&sample).unwrap();
    group.bench_function("receipt_to_vec", |b| {
        b.iter(|| canonical::to_vec(black_box(&value)).unwrap());
    });
    // Reference point: plain (non-canonical) serde_json of the same value.
    group.bench_function("receipt_serde_json_to_vec", |b| {
        b.iter(|| serde_json::to_vec(black_box(&value)).unwrap());
    });
    group.finish();

    let batch = entries(&tenants, BATCH);
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);

    group.bench_function("append_memory", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let ledger = MemoryLedger::new();
                let owned = batch.clone();
                let start = Instant::now();
                append_all(&ledger, owned);
                total += start.elapsed();
            }
            total
        });
    });

    group.bench_function("append_file_group_commit", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let ledger = FileLedger::open(dir.path(), FileOptions::default()).unwrap();
                let owned = batch.clone();
                let start = Instant::now();
                append_all(&ledger, owned);
                total += start.elapsed();
            }
            total
        });
    });

    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = FileLedger::open(
            dir.path(),
            FileOptions {
                sync: Arc::new(|_| Ok(())),
                ..FileOptions::default()
            },
        )
        .unwrap();
        append_all(&ledger, batch.clone());
    }
    group.bench_function("verify_dir", |b| {
        b.iter(|| {
            let report = verify_dir(dir.path()).unwrap();
            assert!(report.first_bad.is_none());
            report
        });
    });
    group.finish();

    // Restart cost: open (frame scan, heads rebuilt) of a larger ledger.
    let mut group = c.benchmark_group("ledger_open");
    const OPEN_RECORDS: u64 = 200_000;
    group.throughput(Throughput::Elements(OPEN_RECORDS));
    group.sample_size(10);
    let big = tempfile::tempdir().unwrap();
    {
        let ledger = FileLedger::open(
            big.path(),
            FileOptions {
                sync: Arc::new(|_| Ok(())),
                ..FileOptions::default()
            },
        )
        .unwrap();
        append_all(&ledger, entries(&tenants, OPEN_RECORDS));
        ledger
            .checkpoint(ledger.mark().unwrap(), b"snapshot")
            .unwrap();
    }
    group.bench_function("open_and_recover", |b| {
        b.iter(|| {
            let ledger = FileLedger::open(big.path(), FileOptions::default()).unwrap();
            let (mut blob, mut tail) = (None, 0u64);
            ledger
                .recover(&mut |item| {
                    match item {
                        Recovered::Checkpoint(stored) => blob = Some(stored.blob.to_vec()),
                        Recovered::Record(_) => tail += 1,
                    }
                    Ok(())
                })
                .unwrap();
            assert_eq!((blob.as_deref(), tail), (Some(&b"snapshot"[..]), 0));
        });
    });
    group.finish();
}

criterion_group!(benches, bench_ledger);
criterion_main!(benches);

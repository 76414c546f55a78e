//! The PostgreSQL ledger's Merkle tree (`pg::tree::PgTree`): building it
//! over a backlog of receipts, and proofs read from its stored nodes (one
//! query each). Needs `GGEN_BENCH_DATABASE_URL` (`scripts/postgres start DIR`
//! prints one for a throwaway server); `GGEN_TREE_LEAVES` receipts (default 1,000,000) are
//! written straight into a fresh schema's receipts table (the tree reads
//! only positions and bytes).

mod common;

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use ggen_runtime::ledger::LogTree;
use ggen_runtime::merkle::Nodes;
use ggen_runtime::pg::tree::PgTree;
use ggen_runtime::pg::{PgLedger, PgOptions};

fn bench(c: &mut Criterion) {
    let Ok(base) = std::env::var("GGEN_BENCH_DATABASE_URL") else {
        eprintln!("pg_tree skipped: set GGEN_BENCH_DATABASE_URL");
        return;
    };
    let n: i64 = std::env::var("GGEN_TREE_LEAVES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    admin
        .batch_execute("DROP SCHEMA IF EXISTS bench_tree CASCADE; CREATE SCHEMA bench_tree")
        .unwrap();
    let joiner = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{joiner}options=-c%20search_path%3Dbench_tree");
    // The schema, with one partition holding every position.
    drop(
        PgLedger::open(
            &url,
            PgOptions {
                partition_receipts: n as u64 + 1,
                ..PgOptions::default()
            },
        )
        .unwrap(),
    );
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .execute(
            "INSERT INTO ggen_receipts (position, tenant, seq, hash, bytes)
             SELECT p, 't' || (p % 1000), p / 1000 + 1, sha256(p::text::bytea),
                    convert_to(repeat('{\"receipt\":' || p || '}', 12), 'UTF8')
             FROM generate_series(1, $1::bigint) AS p",
            &[&n],
        )
        .unwrap();
    let tree = PgTree::new(&url, "bench");
    let started = Instant::now();
    let (size, _) = tree.latest().unwrap();
    eprintln!(
        "built the tree of {size} receipts in {:.1} s ({:.0} receipts/s)",
        started.elapsed().as_secs_f64(),
        size as f64 / started.elapsed().as_secs_f64()
    );
    let mut group = c.benchmark_group("pg_tree");
    let mut state = 3;
    group.bench_function("inclusion_proof", |b| {
        b.iter(|| {
            let index = common::next(&mut state) % size;
            black_box(tree.inclusion_proof(index, size).unwrap())
        });
    });
    group.bench_function("leaf_index", |b| {
        b.iter(|| {
            let p = 1 + common::next(&mut state) % size;
            let tenant = ggen_runtime::tenant::TenantId::new(&format!("t{}", p % 1000)).unwrap();
            black_box(tree.leaf_index(&tenant, p / 1000 + 1).unwrap())
        });
    });
    group.finish();
    admin
        .batch_execute("DROP SCHEMA IF EXISTS bench_tree CASCADE")
        .unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The ledger's Merkle tree (`core::merkle`, RFC 9162): appending a leaf,
//! and proofs made from stored nodes on a 10M-leaf tree (`GGEN_MERKLE_LEAVES`
//! to change), and their verification as the standalone verifier runs it.

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ggen_runtime::merkle::{MemoryTree, Nodes, leaf_hash, verify_consistency, verify_inclusion};

/// Leaves of the tree proofs are made on.
fn leaves() -> u64 {
    std::env::var("GGEN_MERKLE_LEAVES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

fn bench(c: &mut Criterion) {
    let n = leaves();
    let mut tree = MemoryTree::new();
    for i in 0..n {
        tree.push(leaf_hash(&i.to_le_bytes()));
    }
    // A size that is not a power of two, so proofs cross ragged edges.
    let size = n - 3;
    let root = tree.root_at(size).unwrap();
    let mut group = c.benchmark_group("merkle");
    group.bench_function("append", |b| {
        let mut grown = MemoryTree::new();
        let mut i = 0u64;
        b.iter(|| {
            grown.push(leaf_hash(&i.to_le_bytes()));
            i += 1;
        });
    });
    let mut state = 7;
    group.bench_function("inclusion_proof", |b| {
        b.iter(|| {
            let index = common::next(&mut state) % size;
            black_box(tree.inclusion_proof(index, size).unwrap())
        });
    });
    group.bench_function("consistency_proof", |b| {
        b.iter(|| {
            let first = 1 + common::next(&mut state) % size;
            black_box(tree.consistency_proof(first, size).unwrap())
        });
    });
    let index = size / 3 + 1;
    let proof = tree.inclusion_proof(index, size).unwrap();
    let leaf = tree.node(0, index).unwrap();
    group.bench_function("verify_inclusion", |b| {
        b.iter(|| verify_inclusion(index, size, black_box(&leaf), &proof, &root).unwrap());
    });
    let first = size / 2 + 5;
    let old = tree.root_at(first).unwrap();
    let consistency = tree.consistency_proof(first, size).unwrap();
    group.bench_function("verify_consistency", |b| {
        b.iter(|| verify_consistency(first, size, black_box(&consistency), &old, &root).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The Merkle tree a file ledger keeps on disk (`ledger::file::FileTree`):
//! appending leaves, and proofs read from its stored nodes on a 100M-leaf
//! tree (`GGEN_TREE_LEAVES` to change), built once into `GGEN_TREE_DIR`
//! (default `target/bench-tree`; about 7.2 GB at 100M leaves) and reused
//! by later runs.

mod common;

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use ggen_runtime::ledger::file::FileTree;
use ggen_runtime::merkle::{Nodes, leaf_hash};

fn leaves() -> u64 {
    std::env::var("GGEN_TREE_LEAVES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000_000)
}

fn dir() -> PathBuf {
    std::env::var_os("GGEN_TREE_DIR").map_or_else(
        || {
            PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
                .join("bench-tree")
        },
        PathBuf::from,
    )
}

/// Leaf `i` and its (made up, ascending) log position.
fn leaf(i: u64) -> ([u8; 32], u64) {
    (leaf_hash(&i.to_le_bytes()), i * 3 + 1)
}

fn bench(c: &mut Criterion) {
    let n = leaves();
    let dir = dir();
    let (tree, trusted) = FileTree::open(&dir).unwrap();
    if trusted != n {
        drop(tree);
        let _ = fs_err::remove_dir_all(dir.join("tree"));
        let (tree, _) = FileTree::open(&dir).unwrap();
        let started = std::time::Instant::now();
        let mut batch = Vec::with_capacity(1 << 16);
        for i in 0..n {
            batch.push(leaf(i));
            if batch.len() == batch.capacity() {
                tree.push(&batch);
                batch.clear();
            }
        }
        tree.push(&batch);
        tree.sync().unwrap();
        eprintln!(
            "built a tree of {n} leaves in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let (tree, trusted) = FileTree::open(&dir).unwrap();
    assert_eq!(trusted, n);
    let size = n - 3;
    if std::env::var_os("GGEN_TREE_COLD").is_some() {
        cold(&tree, size);
    }
    let mut group = c.benchmark_group("file_tree");
    let mut state = 11;
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
    group.bench_function("leaf_index", |b| {
        b.iter(|| {
            let i = common::next(&mut state) % n;
            assert_eq!(tree.leaf_at(leaf(i).1).unwrap(), Some(i));
        });
    });
    drop(tree);
    // Appends, a batch of 256 leaves at a time (as the ledger's writer
    // hands over what one sync covered), onto a fresh tree.
    let fresh = tempfile::tempdir().unwrap();
    let (grown, _) = FileTree::open(fresh.path()).unwrap();
    let mut i = 0u64;
    group.throughput(criterion::Throughput::Elements(256));
    group.bench_function("append_256", |b| {
        b.iter(|| {
            let batch: Vec<_> = (i..i + 256).map(leaf).collect();
            grown.push(&batch);
            i += 256;
        });
    });
    group.finish();
}

/// Inclusion proofs from a cold page cache (`GGEN_TREE_COLD=1`, as root):
/// the kernel's caches are dropped before each of 40 proofs, so every
/// node is read from the disk.
fn cold(tree: &FileTree, size: u64) {
    let mut times = Vec::new();
    let mut state = 5;
    for _ in 0..40 {
        let dropped = fs_err::write("/proc/sys/vm/drop_caches", "3");
        if let Err(error) = dropped {
            eprintln!("cold proofs skipped: cannot drop the page cache ({error})");
            return;
        }
        let index = common::next(&mut state) % size;
        let started = std::time::Instant::now();
        black_box(tree.inclusion_proof(index, size).unwrap());
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!(
        "cold inclusion proofs (40, page cache dropped before each): min {:?}, median {:?}, max {:?}",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

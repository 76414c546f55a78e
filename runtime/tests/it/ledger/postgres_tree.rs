//! The PostgreSQL ledger's Merkle tree: stored in the schema, extended over
//! committed receipts by whichever governor needs it, equal to the tree an
//! auditor rebuilds offline, and the same for every replica.

use std::sync::Arc;

use ggen_runtime::ledger::{Entry, Ledger, LogTree};
use ggen_runtime::merkle::{MemoryTree, Nodes};
use ggen_runtime::pg::shared::SharedPgLedger;
use ggen_runtime::pg::{PgLedger, PgOptions};
use ggen_runtime::store::Location;
use ggen_runtime::tenant::TenantId;
use ggen_runtime::transparency;

use super::postgres::fresh_schema;
use super::receipt;

/// Appends `n` receipts over five tenants without waiting for each, then
/// waits for all.
fn append_many(ledger: &dyn Ledger, n: usize, note: &str) {
    for i in 0..n {
        let t = TenantId::new(&format!("t{}", i % 5)).unwrap();
        let head = ledger.head(&t);
        let bytes = receipt(&t, head, &format!("{note}{i}"));
        ledger
            .append(Entry {
                tenant: t.clone(),
                seq: head.seq + 1,
                prev: head.hash,
                bytes,
            })
            .unwrap();
    }
    ledger.flush().unwrap();
}

/// The tree an auditor builds offline from the database, and where each
/// (tenant, seq) is in it.
fn offline(url: &str) -> (MemoryTree, Vec<(TenantId, u64)>) {
    let mut at = Vec::new();
    let tree = transparency::tree(&Location::Database(url.to_owned()), &mut |_, record| {
        at.push((record.tenant.clone(), record.seq));
    })
    .unwrap();
    (tree, at)
}

fn assert_matches(tree: &dyn LogTree, url: &str) {
    let (expected, at) = offline(url);
    assert_eq!(tree.latest().unwrap(), (expected.size(), expected.root()));
    let size = expected.size();
    for index in (0..size).step_by(997).chain([size - 1]) {
        assert_eq!(
            tree.inclusion_proof(index, size).unwrap(),
            expected.inclusion_proof(index, size).unwrap()
        );
        let (tenant, seq) = &at[index as usize];
        assert_eq!(tree.leaf_index(tenant, *seq).unwrap(), Some(index));
    }
    for first in [1, size / 3, size - 1] {
        assert_eq!(
            tree.consistency_proof(first, size).unwrap(),
            expected.consistency_proof(first, size).unwrap()
        );
    }
    assert_eq!(
        tree.leaf_index(&TenantId::new("nobody").unwrap(), 1)
            .unwrap(),
        None
    );
    assert_eq!(tree.leaf_index(&at[0].0, u64::MAX).unwrap(), None);
}

#[test]
fn the_database_tree_is_the_offline_tree_and_proves_from_stored_nodes() {
    let Some(url) = fresh_schema() else { return };
    let ledger = PgLedger::open(&url, PgOptions::default()).unwrap();
    // Past one extension batch (10,000 receipts), then a little more.
    append_many(&ledger, 12_345, "a");
    let tree = ledger
        .tree()
        .expect("a writable database ledger keeps a tree");
    assert_matches(tree, &url);
    append_many(&ledger, 77, "b");
    assert_matches(tree, &url);
    drop(ledger);
    // Another open continues from the stored nodes.
    let ledger = PgLedger::open(&url, PgOptions::default()).unwrap();
    append_many(&ledger, 5, "c");
    assert_matches(ledger.tree().unwrap(), &url);
    // A read-only open (verify, show) writes no tree.
    assert!(PgLedger::open_read_only(&url).unwrap().tree().is_none());
}

#[test]
fn replicas_extending_at_once_build_one_tree() {
    let Some(url) = fresh_schema() else { return };
    // A backlog no tree covers yet (written by a governor that never
    // needed its tree)...
    {
        let ledger = PgLedger::open(&url, PgOptions::default()).unwrap();
        append_many(&ledger, 23_456, "a");
    }
    // ...then two replicas, two threads each, extending it at once: the
    // advisory lock makes them take turns, none writes a node twice.
    let replicas: Vec<Arc<SharedPgLedger>> = (0..2)
        .map(|_| Arc::new(SharedPgLedger::open(&url, PgOptions::default()).unwrap()))
        .collect();
    std::thread::scope(|scope| {
        for replica in &replicas {
            for _ in 0..2 {
                let replica = Arc::clone(replica);
                scope.spawn(move || {
                    for _ in 0..3 {
                        replica.tree().unwrap().latest().unwrap();
                    }
                });
            }
        }
    });
    for replica in &replicas {
        assert_matches(replica.tree().unwrap(), &url);
    }
}

/// Deletes the stored tree of the schema at `url` (a test's damage).
pub(super) fn forget_tree(url: &str) {
    let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
    client
        .batch_execute("DELETE FROM ggen_tree; DELETE FROM ggen_tree_size")
        .unwrap();
}

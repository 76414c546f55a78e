//! The standalone verifier: `ggen verify-receipt` and `ggen
//! verify-consistency` on files alone, as an auditor runs them.

use std::path::Path;

use ggen_runtime_core::audit::{ConsistencyProof, InclusionProof};
use ggen_runtime_core::merkle::{MemoryTree, Nodes, leaf_hash};
use ggen_runtime_core::note::{Checkpoint, NoteSigner};

use crate::support::ggen;

const ORIGIN: &str = "governor.test/cost_guard";

/// Writes `name` in `dir`; its path as text.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    fs_err::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A ledger of `n` receipts, its tree and the governor's key.
fn ledger(n: u64) -> (Vec<Vec<u8>>, MemoryTree, NoteSigner) {
    let mut tree = MemoryTree::new();
    let receipts: Vec<Vec<u8>> = (0..n)
        .map(|i| format!(r#"{{"kind":"signal","seq":{i},"tenant":"acme"}}"#).into_bytes())
        .collect();
    for receipt in &receipts {
        tree.push(leaf_hash(receipt));
    }
    (
        receipts,
        tree,
        NoteSigner::from_seed(ORIGIN, [5; 32]).unwrap(),
    )
}

/// The consistency proof of `tree` from `first` to `second` leaves, as
/// the file `name` in `dir`; its path.
fn consistency_file(dir: &Path, name: &str, tree: &MemoryTree, first: u64, second: u64) -> String {
    let proof = ConsistencyProof {
        first,
        second,
        hashes: tree
            .consistency_proof(first, second)
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect(),
    };
    write(dir, name, serde_json::to_string(&proof).unwrap().as_bytes())
}

fn checkpoint(tree: &MemoryTree, signer: &NoteSigner, size: u64) -> String {
    let root = tree.root_at(size).unwrap();
    Checkpoint {
        origin: ORIGIN.to_owned(),
        size,
        root,
    }
    .sign(signer)
    .unwrap()
}

#[test]
fn an_auditor_checks_a_receipt_and_a_later_checkpoint_with_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (receipts, tree, signer) = ledger(11);
    let key = write(d, "governor.pub", signer.verifier().to_text().as_bytes());
    let old = write(
        d,
        "old.checkpoint",
        checkpoint(&tree, &signer, 6).as_bytes(),
    );
    let new = write(
        d,
        "new.checkpoint",
        checkpoint(&tree, &signer, 11).as_bytes(),
    );
    let receipt = write(d, "receipt.json", &receipts[4]);
    let inclusion = InclusionProof {
        leaf_index: 4,
        tree_size: 11,
        hashes: tree
            .inclusion_proof(4, 11)
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect(),
    };
    let proof = write(
        d,
        "proof.json",
        serde_json::to_string(&inclusion).unwrap().as_bytes(),
    );
    let args = [
        "verify-receipt",
        "--receipt",
        &receipt,
        "--proof",
        &proof,
        "--checkpoint",
        &new,
        "--key",
        &key,
    ];
    let (stdout, _) = ggen(d, &args, 0);
    assert!(
        stdout.contains("entry 4 of `governor.test/cost_guard`"),
        "{stdout}"
    );

    // A changed byte in the receipt: refused, naming the receipt.
    let mut forged = receipts[4].clone();
    forged[10] ^= 1;
    let bad = write(d, "forged.json", &forged);
    let args = [
        "verify-receipt",
        "--receipt",
        &bad,
        "--proof",
        &proof,
        "--checkpoint",
        &new,
        "--key",
        &key,
    ];
    let (_, stderr) = ggen(d, &args, 1);
    assert!(stderr.contains("error: receipt:"), "{stderr}");
    // Another governor's key: refused, naming the checkpoint.
    let stranger = NoteSigner::from_seed(ORIGIN, [6; 32]).unwrap();
    let other_key = write(d, "other.pub", stranger.verifier().to_text().as_bytes());
    let args = [
        "verify-receipt",
        "--receipt",
        &receipt,
        "--proof",
        &proof,
        "--checkpoint",
        &new,
        "--key",
        &other_key,
    ];
    let (_, stderr) = ggen(d, &args, 1);
    assert!(stderr.contains("error: checkpoint:"), "{stderr}");

    // The later checkpoint extends the earlier one.
    let cproof = consistency_file(d, "consistency.json", &tree, 6, 11);
    let (stdout, _) = ggen(
        d,
        &[
            "--format",
            "json",
            "verify-consistency",
            &old,
            &new,
            &cproof,
            "--key",
            &key,
        ],
        0,
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            doc["ok"].as_bool(),
            doc["first"].as_u64(),
            doc["second"].as_u64()
        ),
        (Some(true), Some(6), Some(11))
    );

    // The operator rewrote entry 2 and signed a new checkpoint: caught.
    let (mut rewritten, _, _) = ledger(11);
    rewritten[2] = b"{\"kind\":\"signal\",\"seq\":2,\"tenant\":\"nobody\"}".to_vec();
    let mut tree2 = MemoryTree::new();
    for r in &rewritten {
        tree2.push(leaf_hash(r));
    }
    let forged_new = write(
        d,
        "forged.checkpoint",
        checkpoint(&tree2, &signer, 11).as_bytes(),
    );
    let fproof = consistency_file(d, "forged-consistency.json", &tree2, 6, 11);
    let (_, stderr) = ggen(
        d,
        &[
            "verify-consistency",
            &old,
            &forged_new,
            &fproof,
            "--key",
            &key,
        ],
        1,
    );
    assert!(stderr.contains("does not extend"), "{stderr}");
    // A missing file is named.
    let (_, stderr) = ggen(
        d,
        &[
            "verify-consistency",
            &old,
            "nope.checkpoint",
            &cproof,
            "--key",
            &key,
        ],
        1,
    );
    assert!(stderr.contains("nope.checkpoint"), "{stderr}");
}

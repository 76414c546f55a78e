//! What an auditor checks with nothing but files: a receipt against a
//! signed checkpoint (an inclusion proof), and a newer checkpoint against
//! an older one (a consistency proof). The standalone verifier (`ggen
//! verify-receipt`, `ggen verify-consistency`) is these two functions; each
//! refusal says which input is at fault.
//!
//! Proof files are JSON: `{"leaf_index", "tree_size", "hashes"}` for an
//! inclusion proof, `{"first", "second", "hashes"}` for a consistency proof,
//! hashes in lowercase hex, in RFC 9162 order.

use serde::{Deserialize, Serialize};

use crate::merkle::{self, Hash};
use crate::note::{Checkpoint, NoteError, NoteVerifier};

/// An inclusion proof as a file carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// The receipt's position among all the ledger's receipts (from 0).
    pub leaf_index: u64,
    /// The tree size the proof is for (the checkpoint's).
    pub tree_size: u64,
    /// The sibling hashes, leaf side first.
    pub hashes: Vec<String>,
}

/// A consistency proof as a file carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// The older tree size.
    pub first: u64,
    /// The newer tree size.
    pub second: u64,
    /// The proof's hashes.
    pub hashes: Vec<String>,
}

/// Which input a verification refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The public key file is not a verifier key.
    #[error("key: {0}")]
    Key(NoteError),
    /// A checkpoint is malformed or not signed by the key.
    #[error("checkpoint{which}: {error}")]
    Checkpoint {
        /// ` (old)`, ` (new)` or nothing.
        which: &'static str,
        /// Why.
        error: NoteError,
    },
    /// The proof file is malformed or does not fit the checkpoints.
    #[error("proof: {0}")]
    Proof(String),
    /// The receipt is not the leaf the proof and checkpoint name.
    #[error("receipt: {0}")]
    Receipt(String),
}

fn hashes(texts: &[String]) -> Result<Vec<Hash>, AuditError> {
    texts
        .iter()
        .map(|text| {
            hex::decode(text)
                .ok()
                .and_then(|bytes| Hash::try_from(bytes).ok())
                .ok_or_else(|| AuditError::Proof(format!("`{text:.70}` is not a hex SHA-256 hash")))
        })
        .collect()
}

/// The checkpoint of `note`, signed by `key` and naming `key`'s log as its
/// origin (one key signs one ledger).
fn checkpoint(
    which: &'static str,
    note: &str,
    key: &NoteVerifier,
) -> Result<Checkpoint, AuditError> {
    let checkpoint =
        Checkpoint::open(note, key).map_err(|error| AuditError::Checkpoint { which, error })?;
    if checkpoint.origin != key.name() {
        return Err(AuditError::Checkpoint {
            which,
            error: NoteError::BadCheckpoint("its origin is not the key's log"),
        });
    }
    Ok(checkpoint)
}

/// Checks that `receipt` (its bytes exactly as the ledger stores them) is
/// in the ledger `checkpoint` (a signed note) commits to, by `proof` (an
/// [`InclusionProof`] as JSON), `key` being the governor's verifier key.
pub fn verify_receipt(
    receipt: &[u8],
    proof: &str,
    checkpoint_note: &str,
    key: &str,
) -> Result<(Checkpoint, u64), AuditError> {
    let key = NoteVerifier::from_text(key).map_err(AuditError::Key)?;
    let checkpoint = checkpoint("", checkpoint_note, &key)?;
    let proof: InclusionProof =
        serde_json::from_str(proof).map_err(|e| AuditError::Proof(e.to_string()))?;
    if proof.tree_size != checkpoint.size {
        return Err(AuditError::Proof(format!(
            "it is for a tree of {} receipts, the checkpoint's has {}",
            proof.tree_size, checkpoint.size
        )));
    }
    let path = hashes(&proof.hashes)?;
    let leaf = merkle::leaf_hash(receipt);
    merkle::verify_inclusion(
        proof.leaf_index,
        proof.tree_size,
        &leaf,
        &path,
        &checkpoint.root,
    )
    .map_err(|error| match error {
        merkle::VerifyError::RootMismatch => AuditError::Receipt(format!(
            "it is not receipt {} of the checkpoint's ledger (or the proof is not its)",
            proof.leaf_index
        )),
        other => AuditError::Proof(other.to_string()),
    })?;
    Ok((checkpoint, proof.leaf_index))
}

/// Checks that the ledger `new` (a signed checkpoint) extends the ledger
/// `old` (an earlier one): nothing `old` committed to was changed, removed
/// or reordered, by `proof` (a [`ConsistencyProof`] as JSON).
pub fn verify_consistency(
    old: &str,
    new: &str,
    proof: &str,
    key: &str,
) -> Result<(Checkpoint, Checkpoint), AuditError> {
    let key = NoteVerifier::from_text(key).map_err(AuditError::Key)?;
    let old = checkpoint(" (old)", old, &key)?;
    let new = checkpoint(" (new)", new, &key)?;
    if old.origin != new.origin {
        return Err(AuditError::Checkpoint {
            which: " (new)",
            error: NoteError::BadCheckpoint("its origin is another log's"),
        });
    }
    let proof: ConsistencyProof =
        serde_json::from_str(proof).map_err(|e| AuditError::Proof(e.to_string()))?;
    if (proof.first, proof.second) != (old.size, new.size) {
        return Err(AuditError::Proof(format!(
            "it is from {} to {} receipts, the checkpoints are at {} and {}",
            proof.first, proof.second, old.size, new.size
        )));
    }
    let path = hashes(&proof.hashes)?;
    merkle::verify_consistency(old.size, new.size, &path, &old.root, &new.root).map_err(
        |error| match error {
            merkle::VerifyError::FirstRootMismatch | merkle::VerifyError::RootMismatch => {
                AuditError::Proof(
                    "the new checkpoint's ledger does not extend the old one's: history was rewritten, or the proof is not theirs"
                        .to_owned(),
                )
            }
            other => AuditError::Proof(other.to_string()),
        },
    )?;
    Ok((old, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{MemoryTree, Nodes};
    use crate::note::NoteSigner;

    struct Log {
        tree: MemoryTree,
        receipts: Vec<Vec<u8>>,
        signer: NoteSigner,
    }

    impl Log {
        fn new(n: u64) -> Log {
            let mut tree = MemoryTree::new();
            let mut receipts = Vec::new();
            for i in 0..n {
                let receipt = format!(r#"{{"seq":{i},"tenant":"acme"}}"#).into_bytes();
                tree.push(merkle::leaf_hash(&receipt));
                receipts.push(receipt);
            }
            let signer = NoteSigner::from_seed("governor.test/cost_guard", [3; 32]).unwrap();
            Log {
                tree,
                receipts,
                signer,
            }
        }

        fn checkpoint(&self, size: u64) -> String {
            Checkpoint {
                origin: "governor.test/cost_guard".to_owned(),
                size,
                root: self.tree.root_at(size).unwrap(),
            }
            .sign(&self.signer)
            .unwrap()
        }

        fn inclusion(&self, index: u64, size: u64) -> String {
            let hashes = self.tree.inclusion_proof(index, size).unwrap();
            serde_json::to_string(&InclusionProof {
                leaf_index: index,
                tree_size: size,
                hashes: hashes.iter().map(hex::encode).collect(),
            })
            .unwrap()
        }

        fn consistency(&self, first: u64, second: u64) -> String {
            let hashes = self.tree.consistency_proof(first, second).unwrap();
            serde_json::to_string(&ConsistencyProof {
                first,
                second,
                hashes: hashes.iter().map(hex::encode).collect(),
            })
            .unwrap()
        }

        fn key(&self) -> String {
            self.signer.verifier().to_text()
        }
    }

    #[test]
    fn a_receipt_verifies_and_each_tampered_input_is_named() {
        let log = Log::new(13);
        let (note, proof, key) = (log.checkpoint(13), log.inclusion(5, 13), log.key());
        let (checkpoint, index) = verify_receipt(&log.receipts[5], &proof, &note, &key).unwrap();
        assert_eq!((checkpoint.size, index), (13, 5));

        let mut receipt = log.receipts[5].clone();
        receipt[3] ^= 1;
        let err = verify_receipt(&receipt, &proof, &note, &key).unwrap_err();
        assert!(matches!(err, AuditError::Receipt(_)), "{err}");

        let other = log.inclusion(6, 13);
        let err = verify_receipt(&log.receipts[5], &other, &note, &key).unwrap_err();
        assert!(err.to_string().starts_with("receipt:"), "{err}");

        let bad_proof = proof.replacen("\"hashes\":[\"", "\"hashes\":[\"0", 1);
        let err = verify_receipt(&log.receipts[5], &bad_proof, &note, &key).unwrap_err();
        assert!(err.to_string().starts_with("proof:"), "{err}");

        let tampered = note.replacen("\n13\n", "\n12\n", 1);
        let err = verify_receipt(&log.receipts[5], &proof, &tampered, &key).unwrap_err();
        assert!(err.to_string().starts_with("checkpoint:"), "{err}");

        let stranger = NoteSigner::from_seed("governor.test/cost_guard", [4; 32]).unwrap();
        let err = verify_receipt(
            &log.receipts[5],
            &proof,
            &note,
            &stranger.verifier().to_text(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("checkpoint:"), "{err}");
        let err = verify_receipt(&log.receipts[5], &proof, &note, "not a key").unwrap_err();
        assert!(err.to_string().starts_with("key:"), "{err}");

        // A proof for another tree size than the checkpoint's.
        let old = log.inclusion(5, 9);
        let err = verify_receipt(&log.receipts[5], &old, &note, &key).unwrap_err();
        assert!(err.to_string().contains("tree of 9 receipts"), "{err}");
    }

    #[test]
    fn a_rewritten_history_is_caught_by_consistency() {
        let log = Log::new(20);
        let key = log.key();
        let (old, new) = (log.checkpoint(7), log.checkpoint(20));
        assert!(verify_consistency(&old, &new, &log.consistency(7, 20), &key).is_ok());

        // The operator rewrites receipt 3 and re-signs a new checkpoint.
        let mut forged = Log::new(20);
        forged.receipts[3] = b"{\"seq\":3,\"tenant\":\"forged\"}".to_vec();
        forged.tree = MemoryTree::new();
        for receipt in &forged.receipts {
            forged.tree.push(merkle::leaf_hash(receipt));
        }
        let forged_new = forged.checkpoint(20);
        let err =
            verify_consistency(&old, &forged_new, &forged.consistency(7, 20), &key).unwrap_err();
        assert!(err.to_string().contains("does not extend"), "{err}");
        // Truncation: a newer checkpoint smaller than the older one.
        let err = verify_consistency(&new, &old, &log.consistency(7, 20), &key).unwrap_err();
        assert!(err.to_string().starts_with("proof:"), "{err}");
    }
}

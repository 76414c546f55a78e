//! A Merkle tree over the whole ledger, as Certificate Transparency builds
//! them (RFC 9162 §2.1): leaf hash `SHA-256(0x00 ‖ receipt bytes)`, node
//! hash `SHA-256(0x01 ‖ left ‖ right)`, the tree of `n` leaves split at
//! the largest power of two below `n`.
//!
//! The tree is kept as its perfect subtrees ([`Nodes`]): level 0 holds the
//! leaf hashes, level `l` the hashes of the aligned subtrees of `2^l`
//! leaves. Appending a leaf adds at most one node per level (O(log n),
//! amortized O(1)), and every root, inclusion proof and consistency proof
//! of any tree size up to the current one reads O(log n) stored nodes: a
//! ledger backend that stores the same nodes answers proofs without
//! rebuilding anything. [`MemoryTree`] keeps them in memory.
//!
//! The verifiers ([`verify_inclusion`], [`verify_consistency`]) follow the
//! RFC's algorithms (§2.1.3.2, §2.1.4.2) and need nothing but hashes: they
//! are what an auditor runs, with no access to the ledger.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The root of the empty tree: `SHA-256()`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The hash of a leaf: `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    hasher.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// Why a proof could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf is not in a tree of that size.
    #[error("leaf {index} is not in a tree of {size} leaves")]
    NoSuchLeaf {
        /// The leaf's index (from 0).
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The sizes are not `0 < first ≤ second ≤` the tree's size.
    #[error("no consistency proof from {first} to {second} leaves in a tree of {size}")]
    BadSizes {
        /// The older size.
        first: u64,
        /// The newer size.
        second: u64,
        /// The tree's size.
        size: u64,
    },
    /// A tree size past the tree's.
    #[error("the tree has {size} leaves, not {asked}")]
    TooLarge {
        /// The size asked for.
        asked: u64,
        /// The tree's size.
        size: u64,
    },
    /// The node store could not answer.
    #[error("the tree's node `{level}/{index}` cannot be read: {detail}")]
    Store {
        /// The node's level.
        level: u32,
        /// Its index on the level.
        index: u64,
        /// Why.
        detail: String,
    },
}

/// The perfect subtrees of a tree: `node(level, index)` is the hash of
/// leaves `index·2^level .. (index+1)·2^level`, for every such range that
/// lies within the tree.
pub trait Nodes {
    /// The tree's size (leaves appended).
    fn size(&self) -> u64;

    /// The hash of the perfect subtree `index` of `level`.
    fn node(&self, level: u32, index: u64) -> Result<Hash, ProofError>;

    /// `MTH(D[start..end])` for `start < end ≤ size` where the range is
    /// one the RFC's recursion reaches (`start` a multiple of the largest
    /// power of two not above `end - start`): O(log n) stored nodes.
    fn range(&self, start: u64, end: u64) -> Result<Hash, ProofError> {
        if start >= end || end > self.size() {
            return Err(ProofError::TooLarge {
                asked: end,
                size: self.size(),
            });
        }
        let width = end - start;
        if width.is_power_of_two() && start.is_multiple_of(width) {
            let level = width.trailing_zeros();
            return self.node(level, start >> level);
        }
        let k = split(width);
        let left = self.range(start, start + k)?;
        let right = self.range(start + k, end)?;
        Ok(node_hash(&left, &right))
    }

    /// The root of the tree's first `size` leaves (RFC 9162 `MTH`).
    fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size() {
            return Err(ProofError::TooLarge {
                asked: size,
                size: self.size(),
            });
        }
        if size == 0 {
            return Ok(empty_root());
        }
        self.range(0, size)
    }

    /// The inclusion proof of leaf `index` in the tree of its first `size`
    /// leaves (RFC 9162 `PATH`), leaf-side first.
    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if index >= size {
            return Err(ProofError::NoSuchLeaf { index, size });
        }
        if size > self.size() {
            return Err(ProofError::TooLarge {
                asked: size,
                size: self.size(),
            });
        }
        let mut proof = Vec::new();
        // PATH(m, D[start..end]), iteratively from the root down; the
        // proof lists siblings from the leaf up, so collect then reverse.
        let (mut start, mut end, mut m) = (0, size, index);
        while end - start > 1 {
            let k = split(end - start);
            if m < k {
                proof.push(self.range(start + k, end)?);
                end = start + k;
            } else {
                proof.push(self.range(start, start + k)?);
                start += k;
                m -= k;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// The consistency proof between the tree of its first `first` leaves
    /// and that of its first `second` (RFC 9162 `PROOF`).
    fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ProofError> {
        if first == 0 && second <= self.size() {
            // The empty tree is a prefix of every tree: nothing to prove.
            return Ok(Vec::new());
        }
        if first == 0 || first > second || second > self.size() {
            return Err(ProofError::BadSizes {
                first,
                second,
                size: self.size(),
            });
        }
        // SUBPROOF(m, D[start..end], b), iteratively; siblings collected
        // root-down, then reversed.
        let mut proof = Vec::new();
        let (mut start, mut end, mut m, mut whole) = (0, second, first, true);
        loop {
            if m == end - start {
                if !whole {
                    proof.push(self.range(start, end)?);
                }
                break;
            }
            let k = split(end - start);
            if m <= k {
                proof.push(self.range(start + k, end)?);
                end = start + k;
            } else {
                proof.push(self.range(start, start + k)?);
                start += k;
                m -= k;
                whole = false;
            }
        }
        proof.reverse();
        Ok(proof)
    }
}

/// The largest power of two strictly below `n` (`n ≥ 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The right edge of a tree being built: the root of each perfect subtree
/// its size is made of, O(log n) hashes. Enough for the root at every
/// size it passes (what a checkpoint needs), not for proofs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Perfect subtree roots, largest (leftmost) first.
    peaks: Vec<Hash>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The right edge of a stored tree of `size` leaves, its peaks read
    /// by `node(level, index)`.
    pub fn load<E>(
        size: u64,
        mut node: impl FnMut(u32, u64) -> Result<Hash, E>,
    ) -> Result<Frontier, E> {
        let mut peaks = Vec::new();
        for level in (0..64u32).rev() {
            if size >> level & 1 == 1 {
                peaks.push(node(level, (size >> level) - 1)?);
            }
        }
        Ok(Frontier { size, peaks })
    }

    /// Appends a leaf by its hash ([`leaf_hash`]).
    pub fn push(&mut self, leaf: Hash) {
        self.push_with(leaf, |_, _, _| {});
    }

    /// Appends a leaf, handing `emit(level, index, hash)` the leaf (level
    /// 0) and every perfect subtree it completes, bottom up: what a tree
    /// that stores its nodes writes.
    pub fn push_with(&mut self, leaf: Hash, mut emit: impl FnMut(u32, u64, &Hash)) {
        let index = self.size;
        let mut hash = leaf;
        let mut level = 0;
        emit(0, index, &hash);
        // Each trailing one bit of the size is a peak this leaf completes.
        while index >> level & 1 == 1 {
            let left = self.peaks.pop().expect("one peak per one bit of the size");
            hash = node_hash(&left, &hash);
            level += 1;
            emit(level, index >> level, &hash);
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// The root of the leaves appended so far (RFC 9162 `MTH`).
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&last) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(last, |right, left| node_hash(left, &right))
    }
}

/// A tree whose nodes are held in memory: 2n hashes for n leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryTree {
    /// `levels[l][i]`: the perfect subtree `i` of level `l`.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// Appends a leaf by its hash ([`leaf_hash`]); O(log n).
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(hash);
            let nodes = &self.levels[level];
            if nodes.len() % 2 == 1 {
                return;
            }
            hash = node_hash(&nodes[nodes.len() - 2], &nodes[nodes.len() - 1]);
            level += 1;
        }
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.root_at(self.size()).unwrap_or_else(|_| empty_root())
    }
}

impl Nodes for MemoryTree {
    fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        self.levels
            .get(level as usize)
            .and_then(|nodes| nodes.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or_else(|| ProofError::Store {
                level,
                index,
                detail: "not in the tree".to_owned(),
            })
    }
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The leaf index is not below the tree size.
    #[error("leaf {index} cannot be in a tree of {size} leaves")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The size.
        size: u64,
    },
    /// The proof has more or fewer hashes than the sizes call for.
    #[error("the proof has the wrong number of hashes for these sizes")]
    WrongLength,
    /// The sizes cannot have a consistency proof.
    #[error("no consistency proof exists from {first} to {second} leaves")]
    BadSizes {
        /// The older size.
        first: u64,
        /// The newer size.
        second: u64,
    },
    /// The proof leads to another root than the one given.
    #[error("the proof leads to another root than the checkpoint's")]
    RootMismatch,
    /// A consistency proof leads to another older root than the one given.
    #[error("the proof leads to another older root than the older checkpoint's")]
    FirstRootMismatch,
}

/// After hashing in a left sibling: skip the levels where the node is a
/// left child on the tree's right edge (RFC 9162: "right-shift both fn and
/// sn equally until either LSB(fn) is set or fn is 0").
fn climb(fn_: &mut u64, sn: &mut u64) {
    while *fn_ & 1 == 0 && *fn_ != 0 {
        *fn_ >>= 1;
        *sn >>= 1;
    }
}

/// Checks that `leaf` (a [`leaf_hash`]) is leaf `index` of the tree of
/// `size` leaves whose root is `root`, by `proof` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(VerifyError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            climb(&mut fn_, &mut sn);
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(VerifyError::WrongLength);
    }
    if &r != root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `second` leaves with root `second_root` extends
/// the tree of `first` leaves with root `first_root`, by `proof` (RFC 9162
/// §2.1.4.2): nothing of the older tree was changed, removed or reordered.
pub fn verify_consistency(
    first: u64,
    second: u64,
    proof: &[Hash],
    first_root: &Hash,
    second_root: &Hash,
) -> Result<(), VerifyError> {
    if first == 0 {
        // The empty tree: a prefix of any tree, with an empty proof.
        if !proof.is_empty() {
            return Err(VerifyError::WrongLength);
        }
        return if *first_root == empty_root() {
            Ok(())
        } else {
            Err(VerifyError::FirstRootMismatch)
        };
    }
    if first > second {
        return Err(VerifyError::BadSizes { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(VerifyError::WrongLength);
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(VerifyError::RootMismatch)
        };
    }
    // A first tree that is a perfect subtree is its own first node.
    let mut path = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((head, rest)) = path.split_first() else {
        return Err(VerifyError::WrongLength);
    };
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if sn == 0 {
            return Err(VerifyError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            climb(&mut fn_, &mut sn);
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(VerifyError::WrongLength);
    }
    if &fr != first_root {
        return Err(VerifyError::FirstRootMismatch);
    }
    if &sr != second_root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The leaves of RFC 6962's reference tree (Certificate Transparency's
    /// published test vectors, also Trillian's).
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    /// The roots of its first 0..=8 leaves.
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// `(leaf index from 1, tree size, proof)`.
    const INCLUSION: [(u64, u64, &[&str]); 4] = [
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            3,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            2,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];

    /// `(first size, second size, proof)`.
    const CONSISTENCY: [(u64, u64, &[&str]); 4] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];

    fn h(text: &str) -> Hash {
        hex::decode(text).unwrap().try_into().unwrap()
    }

    fn reference() -> MemoryTree {
        let mut tree = MemoryTree::new();
        for leaf in LEAVES {
            tree.push(leaf_hash(&hex::decode(leaf).unwrap()));
        }
        tree
    }

    /// `MTH` exactly as RFC 9162 defines it, over leaf hashes: the
    /// independent model the stored-node tree is checked against.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn roots_match_the_published_vectors() {
        let tree = reference();
        for (size, root) in ROOTS.iter().enumerate() {
            assert_eq!(tree.root_at(size as u64).unwrap(), h(root), "size {size}");
        }
        assert_eq!(tree.root(), h(ROOTS[8]));
        assert_eq!(MemoryTree::new().root(), h(ROOTS[0]));
    }

    #[test]
    fn inclusion_proofs_match_the_published_vectors_and_verify() {
        let tree = reference();
        for (leaf, size, proof) in INCLUSION {
            let index = leaf - 1;
            let want: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
            assert_eq!(
                tree.inclusion_proof(index, size).unwrap(),
                want,
                "{leaf}/{size}"
            );
            let leaf_hash = tree.node(0, index).unwrap();
            let root = h(ROOTS[size as usize]);
            assert_eq!(
                verify_inclusion(index, size, &leaf_hash, &want, &root),
                Ok(())
            );
            // Any other root, leaf, position or size is refused.
            assert_eq!(
                verify_inclusion(index, size, &leaf_hash, &want, &h(ROOTS[0])),
                Err(VerifyError::RootMismatch)
            );
            let other = tree.node(0, (index + 1) % size).unwrap();
            if other != leaf_hash {
                assert!(verify_inclusion(index, size, &other, &want, &root).is_err());
            }
            assert_eq!(
                verify_inclusion(size, size, &leaf_hash, &want, &root),
                Err(VerifyError::IndexOutOfRange { index: size, size })
            );
        }
    }

    #[test]
    fn consistency_proofs_match_the_published_vectors_and_verify() {
        let tree = reference();
        for (first, second, proof) in CONSISTENCY {
            let want: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
            assert_eq!(
                tree.consistency_proof(first, second).unwrap(),
                want,
                "{first}→{second}"
            );
            let (old, new) = (h(ROOTS[first as usize]), h(ROOTS[second as usize]));
            assert_eq!(verify_consistency(first, second, &want, &old, &new), Ok(()));
            if first != second {
                // A rewritten history (another older root) is caught.
                assert!(verify_consistency(first, second, &want, &new, &new).is_err());
                assert!(verify_consistency(first, second, &want, &old, &old).is_err());
            }
        }
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        let tree = reference();
        assert!(tree.inclusion_proof(8, 8).is_err());
        assert!(tree.inclusion_proof(0, 9).is_err());
        assert_eq!(tree.consistency_proof(0, 4), Ok(Vec::new()));
        assert_eq!(
            verify_consistency(0, 4, &[], &h(ROOTS[0]), &h(ROOTS[4])),
            Ok(())
        );
        assert!(verify_consistency(0, 4, &[], &h(ROOTS[1]), &h(ROOTS[4])).is_err());
        assert!(tree.range(3, 3).is_err() && tree.range(0, 9).is_err());
        assert!(tree.consistency_proof(5, 4).is_err());
        assert!(tree.consistency_proof(4, 9).is_err());
        assert!(tree.root_at(9).is_err());
        assert_eq!(
            verify_consistency(4, 3, &[], &h(ROOTS[4]), &h(ROOTS[3])),
            Err(VerifyError::BadSizes {
                first: 4,
                second: 3
            })
        );
        assert_eq!(
            verify_consistency(3, 3, &[h(ROOTS[1])], &h(ROOTS[3]), &h(ROOTS[3])),
            Err(VerifyError::WrongLength)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every root, inclusion proof and consistency proof of every size
        /// agrees with the RFC's recursive definition, and verifies; a
        /// changed leaf anywhere in the older tree breaks consistency.
        #[test]
        fn stored_nodes_agree_with_the_definition(
            data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 1..34),
            flip in any::<prop::sample::Index>(),
        ) {
            let leaves: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
            let mut tree = MemoryTree::new();
            for leaf in &leaves {
                tree.push(*leaf);
            }
            let n = leaves.len() as u64;
            let mut frontier = Frontier::new();
            for size in 1..=n {
                let root = mth(&leaves[..size as usize]);
                prop_assert_eq!(tree.root_at(size).unwrap(), root);
                // Every node a leaf completes is the stored tree's, and a
                // frontier loaded from the stored peaks is the same.
                let mut emitted = Vec::new();
                frontier.push_with(leaves[size as usize - 1], |level, index, hash| {
                    emitted.push((level, index, *hash));
                });
                prop_assert_eq!(emitted[0], (0, size - 1, leaves[size as usize - 1]));
                prop_assert_eq!(emitted.len() as u32, (size - 1).trailing_ones() + 1);
                for (level, index, hash) in emitted {
                    prop_assert_eq!(tree.node(level, index).unwrap(), hash);
                }
                prop_assert_eq!(&Frontier::load(size, |l, i| tree.node(l, i)).unwrap(), &frontier);
                prop_assert_eq!(frontier.root(), root);
                for index in 0..size {
                    let proof = tree.inclusion_proof(index, size).unwrap();
                    prop_assert_eq!(verify_inclusion(index, size, &leaves[index as usize], &proof, &root), Ok(()));
                }
                for first in 1..=size {
                    let proof = tree.consistency_proof(first, size).unwrap();
                    let old = mth(&leaves[..first as usize]);
                    prop_assert_eq!(verify_consistency(first, size, &proof, &old, &root), Ok(()));
                }
            }
            // Rewrite one leaf of the older tree: its root no longer
            // follows from the newer tree's.
            let at = flip.index(leaves.len());
            let mut forged = leaves.clone();
            forged[at] = leaf_hash(b"forged");
            let first = at as u64 + 1;
            let proof = tree.consistency_proof(first, n).unwrap();
            let forged_old = mth(&forged[..first as usize]);
            prop_assert!(verify_consistency(first, n, &proof, &forged_old, &tree.root()).is_err());
        }
    }
}

//! The ledger as a transparency log, offline: its RFC 9162 tree (every
//! receipt a leaf, in append order, across tenants) built by one scan of a
//! ledger directory or database, signed checkpoints of it, inclusion and
//! consistency proofs, and the check of a ledger against the checkpoints
//! published earlier (`ledger verify --checkpoints`).
//!
//! A scan costs O(n): these are the operator's and auditor's tools. A
//! running service proves from the tree its file ledger keeps as it
//! appends (`ggen_runtime_core::ledger::LogTree`), and publishes signed
//! checkpoints of it ([`publish`]).

use std::path::{Path, PathBuf};

pub mod publish;

use crate::audit::{ConsistencyProof, InclusionProof};
use crate::ledger::file;
use crate::ledger::{Ledger as _, LedgerError, Record};
use crate::merkle::{Frontier, Hash, MemoryTree, Nodes, ProofError, leaf_hash};
use crate::note::{Checkpoint, NoteError, NoteSigner, NoteVerifier};
use crate::pg::PgLedger;
use crate::store::Location;
use crate::tenant::TenantId;

/// Why a transparency command failed.
#[derive(Debug, thiserror::Error)]
pub enum TransparencyError {
    /// The ledger could not be read.
    #[error("the ledger cannot be read")]
    Ledger(#[source] LedgerError),
    /// A proof cannot be made for these sizes or that receipt.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The tenant has no receipt with that seq.
    #[error("tenant `{tenant}` has no receipt {seq}")]
    NoReceipt {
        /// The tenant.
        tenant: TenantId,
        /// The seq asked for.
        seq: u64,
    },
    /// A key or checkpoint file could not be read.
    #[error("cannot read `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key or checkpoint is not what it should be.
    #[error("`{path}`: {error}")]
    Note {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: NoteError,
    },
    /// The ledger does not start at genesis: its oldest receipts were
    /// archived by retention (or removed), so its tree would not be the
    /// one earlier checkpoints committed to.
    #[error(
        "the ledger does not start at its genesis: tenant `{tenant}` begins at receipt {seq} (its oldest receipts were archived or removed); the tree needs every receipt from the first: give `--archive URL` for archived ones"
    )]
    NotFromGenesis {
        /// The first tenant found without its first receipt.
        tenant: TenantId,
        /// The seq its chain starts at here.
        seq: u64,
    },
    /// No checkpoint file to check against.
    #[error("`{path}` holds no checkpoint file: nothing to check the ledger against")]
    NoCheckpoints {
        /// The directory.
        path: PathBuf,
    },
    /// The ledger contradicts a published checkpoint.
    #[error("the ledger contradicts checkpoint `{path}` ({size} receipts): {why}")]
    Contradicts {
        /// The checkpoint file.
        path: PathBuf,
        /// Its tree size.
        size: u64,
        /// How.
        why: String,
    },
}

fn read(path: &Path) -> Result<String, TransparencyError> {
    fs_err::read_to_string(path).map_err(|source| TransparencyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A ledger read from its genesis: where it is, and the archive retention
/// moved its oldest segments (a PostgreSQL ledger: partitions) to, if any.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The ledger.
    pub location: &'a Location,
    /// Its archive (`ledger … --archive URL`).
    pub archive: Option<&'a crate::archive::Archive>,
}

impl<'a> From<&'a Location> for Source<'a> {
    fn from(location: &'a Location) -> Source<'a> {
        Source {
            location,
            archive: None,
        }
    }
}

/// Every record of the ledger `source` names, in append order, the
/// archived ones first (read-only), each chain checked: the first receipt
/// that does not link (or an unfinished copy) is an error.
fn scan(
    source: Source<'_>,
    visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
) -> Result<(), TransparencyError> {
    let fetcher = |archive: &crate::archive::Archive| {
        archive.fetcher().map_err(|e| LedgerError::Io {
            path: PathBuf::from(archive.url()),
            source: std::io::Error::other(crate::report::error_chain(&e)),
        })
    };
    // An unfinished copy holds only part of its source: signing or
    // proving it would commit to a history that is not the ledger's
    // (serve and replay refuse it too).
    if let Location::Dir(dir) = source.location
        && dir.join(file::COPYING_FILE).exists()
    {
        return Err(TransparencyError::Ledger(LedgerError::IncompleteCopy {
            ledger: dir.display().to_string(),
        }));
    }
    // Every chain is checked as the scan goes (as `ledger verify` does):
    // a receipt that does not link is refused, never signed or proved.
    match (source.location, source.archive) {
        (Location::Dir(dir), None) => file::scan_dir(dir, visit),
        (Location::Dir(dir), Some(archive)) => {
            fetcher(archive).and_then(|mut fetch| file::scan_with_archive(dir, &mut fetch, visit))
        }
        (Location::Database(url), None) => {
            PgLedger::open_read_only(url).and_then(|ledger| ledger.scan(visit))
        }
        (Location::Database(url), Some(archive)) => {
            PgLedger::open_read_only(url).and_then(|ledger| {
                let mut fetch = fetcher(archive)?;
                ledger.scan_with_archive(&mut fetch, visit)
            })
        }
    }
    .map_err(TransparencyError::Ledger)
}

/// Every record of the ledger at `location` in append order, with its
/// leaf index and hash; an error if the ledger does not start at genesis.
fn leaves(
    source: Source<'_>,
    visit: &mut dyn FnMut(u64, &Record, Hash),
) -> Result<(), TransparencyError> {
    let mut index = 0;
    let mut started = std::collections::HashSet::new();
    let mut gap = None;
    scan(source, &mut |record| {
        if gap.is_none() && !started.contains(&record.tenant) {
            if record.seq != 1 {
                gap = Some((record.tenant.clone(), record.seq));
            }
            started.insert(record.tenant.clone());
        }
        visit(index, record, leaf_hash(&record.bytes));
        index += 1;
        Ok(())
    })?;
    match gap {
        Some((tenant, seq)) => Err(TransparencyError::NotFromGenesis { tenant, seq }),
        None => Ok(()),
    }
}

/// The tree of the ledger at `location`, every node kept (for proofs);
/// `visit` sees each record with its leaf index.
pub fn tree<'a>(
    source: impl Into<Source<'a>>,
    visit: &mut dyn FnMut(u64, &Record),
) -> Result<MemoryTree, TransparencyError> {
    let mut tree = MemoryTree::new();
    leaves(source.into(), &mut |index, record, leaf| {
        visit(index, record);
        tree.push(leaf);
    })?;
    Ok(tree)
}

/// Reads the signing key at `path` (`PRIVATE+KEY+…`, from `keygen`).
pub fn signer(path: &Path) -> Result<NoteSigner, TransparencyError> {
    NoteSigner::from_text(&read(path)?).map_err(|error| TransparencyError::Note {
        path: path.to_path_buf(),
        error,
    })
}

/// Reads the public key at `path` (`<name>+<id>+<key>`).
pub fn verifier(path: &Path) -> Result<NoteVerifier, TransparencyError> {
    NoteVerifier::from_text(&read(path)?).map_err(|error| TransparencyError::Note {
        path: path.to_path_buf(),
        error,
    })
}

/// The ledger's checkpoint now, signed by `signer` (its origin is the
/// key's name): `(size, note)`.
pub fn checkpoint<'a>(
    source: impl Into<Source<'a>>,
    signer: &NoteSigner,
) -> Result<(u64, String), TransparencyError> {
    // Only the root: the tree's right edge, not every node.
    let mut frontier = Frontier::new();
    leaves(source.into(), &mut |_, _, leaf| frontier.push(leaf))?;
    let checkpoint = Checkpoint {
        origin: signer.name().to_owned(),
        size: frontier.size(),
        root: frontier.root(),
    };
    let note = checkpoint
        .sign(signer)
        .map_err(|error| TransparencyError::Note {
            path: PathBuf::from("(checkpoint)"),
            error,
        })?;
    Ok((checkpoint.size, note))
}

/// The inclusion proof of `tenant`'s receipt `seq` in the tree of `size`
/// receipts (default: all), with the receipt's stored bytes.
pub fn prove<'a>(
    source: impl Into<Source<'a>>,
    tenant: &TenantId,
    seq: u64,
    size: Option<u64>,
) -> Result<(InclusionProof, Vec<u8>), TransparencyError> {
    let mut found = None;
    let tree = tree(source, &mut |index, record| {
        if found.is_none() && record.tenant == *tenant && record.seq == seq {
            found = Some((index, record.bytes.to_vec()));
        }
    })?;
    let (index, bytes) = found.ok_or_else(|| TransparencyError::NoReceipt {
        tenant: tenant.clone(),
        seq,
    })?;
    let size = size.unwrap_or(tree.size());
    let hashes = tree.inclusion_proof(index, size)?;
    Ok((
        InclusionProof {
            leaf_index: index,
            tree_size: size,
            hashes: hashes.iter().map(hex::encode).collect(),
        },
        bytes,
    ))
}

/// The consistency proof between the trees of `first` and `second` receipts.
pub fn consistency<'a>(
    source: impl Into<Source<'a>>,
    first: u64,
    second: u64,
) -> Result<ConsistencyProof, TransparencyError> {
    let tree = tree(source, &mut |_, _| {})?;
    let hashes = tree.consistency_proof(first, second)?;
    Ok(ConsistencyProof {
        first,
        second,
        hashes: hashes.iter().map(hex::encode).collect(),
    })
}

/// Checks the ledger at `location` against every checkpoint file in `dir`
/// signed by `verifier`, smallest first: each must be a prefix of the
/// ledger as it is now (same root at its size). The number checked, or the
/// first checkpoint the ledger contradicts.
pub fn check<'a>(
    source: impl Into<Source<'a>>,
    dir: &Path,
    verifier: &NoteVerifier,
) -> Result<usize, TransparencyError> {
    let source = source.into();
    let mut checkpoints = Vec::new();
    let entries = fs_err::read_dir(dir).map_err(|source| TransparencyError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| TransparencyError::Read {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        // A publisher's temporary (`.NAME.tmp`, renamed once complete) is
        // not a checkpoint yet.
        if path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        // Every other entry is a checkpoint: a stray file or folder is
        // refused by `open` below rather than skipped unread.
        let checkpoint =
            Checkpoint::open(&read(&path)?, verifier).map_err(|error| TransparencyError::Note {
                path: path.clone(),
                error,
            })?;
        if checkpoint.origin != verifier.name() {
            return Err(TransparencyError::Note {
                path,
                error: NoteError::BadCheckpoint("its origin is another log's"),
            });
        }
        checkpoints.push((checkpoint, path));
    }
    if checkpoints.is_empty() {
        return Err(TransparencyError::NoCheckpoints {
            path: dir.to_path_buf(),
        });
    }
    checkpoints.sort_by(|(a, pa), (b, pb)| a.size.cmp(&b.size).then(pa.cmp(pb)));
    // The roots at the checkpoints' sizes, smallest first, as the scan
    // passes them: the tree's right edge is all it keeps.
    let mut frontier = Frontier::new();
    let mut next = 0;
    let mut contradicted = None;
    let mut compare = |frontier: &Frontier, next: &mut usize| {
        while let Some((checkpoint, path)) = checkpoints.get(*next)
            && checkpoint.size == frontier.size()
        {
            if contradicted.is_none() && frontier.root() != checkpoint.root {
                contradicted = Some((path.clone(), checkpoint.size));
            }
            *next += 1;
        }
    };
    compare(&frontier, &mut next);
    leaves(source, &mut |_, _, leaf| {
        frontier.push(leaf);
        compare(&frontier, &mut next);
    })?;
    if let Some((path, size)) = contradicted {
        return Err(TransparencyError::Contradicts {
            path,
            size,
            why: "its first receipts are not the ones the checkpoint committed to: receipts were changed, removed or reordered".to_owned(),
        });
    }
    if let Some((checkpoint, path)) = checkpoints.get(next) {
        return Err(TransparencyError::Contradicts {
            path: path.clone(),
            size: checkpoint.size,
            why: format!(
                "the ledger holds only {} receipts: it was truncated, or restored from an older copy",
                frontier.size()
            ),
        });
    }
    Ok(checkpoints.len())
}

//! Plan stage: compare the files a build produced (in memory) with the disk
//! and with the previous manifest, and decide per file what to do.
//!
//! Rules: a file on disk is overwritten only if the previous manifest owns it
//! and its bytes still hash as recorded (otherwise it was edited by hand and
//! is refused unless forced); a file is deleted only if the previous manifest
//! owns it, the build no longer produces it and its hash still matches (an
//! edited stale file is kept and reported). The manifest itself is always
//! ggen's to rewrite.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::digest;
use crate::manifest::{self, Manifest, ManifestError};
use crate::owned::{self, Contents, OwnedError};

/// Why the disk could not be compared.
#[derive(Debug, Error)]
pub enum PlanError {
    /// A path in the crate folder is a link, a misplaced folder or file, or unreadable.
    #[error(transparent)]
    Owned(#[from] OwnedError),
    /// The previous manifest names a file outside its crate folder.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The folder's manifest is another SKU's (a crate folder copied or
    /// renamed by hand): ggen neither updates nor prunes it.
    #[error(
        "`{manifest}` is the manifest of sku `{claims}`, not of `{folder}`: ggen does not update or prune a crate folder named for another sku (rename the folder to `{claims}`, or move it out of the output folder)"
    )]
    Foreign {
        /// The manifest's path.
        manifest: String,
        /// The `sku.id` it records.
        claims: String,
        /// The folder's name (the SKU id the folder stands for).
        folder: String,
    },
}

impl PlanError {
    /// 1 for what is on disk (rejected input), 2 for a failing file system.
    pub const fn exit_code(&self) -> u8 {
        match self {
            PlanError::Owned(e) => e.exit_code(),
            PlanError::Manifest(_) | PlanError::Foreign { .. } => 1,
        }
    }
}

/// What happens to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Produced, absent on disk: written.
    Create,
    /// Produced, differs from an unedited owned file: rewritten.
    Update,
    /// Produced, identical on disk: left alone.
    Unchanged,
    /// Owned, no longer produced, unedited: removed.
    Delete,
    /// Produced, but the file on disk was edited by hand (or is not owned): refused without `--force`.
    Refuse,
    /// Produced and edited by hand, overwritten because of `--force`.
    Overwrite,
    /// Owned, no longer produced, but edited by hand: kept and reported.
    Keep,
    /// In the crate folder of a produced crate, but neither produced nor
    /// owned (a hand-added `build.rs`, `src/bin/x.rs`, …): left alone, but
    /// drift, since cargo or a review would take it for generated code.
    Unowned,
}

impl Op {
    /// The plan's spelling (`create`, `update`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Unchanged => "unchanged",
            Op::Delete => "delete",
            Op::Refuse => "refuse",
            Op::Overwrite => "overwrite",
            Op::Keep => "keep",
            Op::Unowned => "unowned",
        }
    }

    /// Whether the disk differs from what the build wants (drift for `--check`).
    pub const fn is_drift(self) -> bool {
        !matches!(self, Op::Unchanged)
    }

    /// Whether applying the plan writes this file.
    pub const fn writes(self) -> bool {
        matches!(self, Op::Create | Op::Update | Op::Overwrite)
    }
}

/// The decision for one file.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Path inside the crate folder, `/`-separated.
    pub path: String,
    /// What happens.
    pub op: Op,
    /// SHA-256 of the bytes on disk, if the file exists.
    pub sha256_before: Option<String>,
    /// SHA-256 of the produced bytes, if the build produces the file.
    pub sha256_after: Option<String>,
    /// The size of the file on disk when it is larger than
    /// [`owned::MAX_READ`]: then it was not read (no hash, no bytes) and is
    /// never taken as ggen's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_size: Option<u64>,
    /// The bytes on disk (for diffs and deletion checks).
    #[serde(skip)]
    pub before: Option<Vec<u8>>,
    /// The produced text.
    #[serde(skip)]
    pub after: Option<String>,
}

/// The plan for one crate folder.
#[derive(Debug, Clone, Serialize)]
pub struct CratePlan {
    /// SKU id of the crate (`None` when only a stale folder is being cleaned up).
    pub id: String,
    /// The folder as shown to users: relative to the project root, `/`-separated.
    pub dir: String,
    /// The folder on disk.
    #[serde(skip)]
    pub path: PathBuf,
    /// One change per produced or previously owned file, manifest last.
    pub changes: Vec<Change>,
}

impl CratePlan {
    /// Whether anything differs from the disk.
    pub fn has_drift(&self) -> bool {
        self.changes.iter().any(|c| c.op.is_drift())
    }

    /// The changes refused without `--force`.
    pub fn refused(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.op == Op::Refuse)
    }
}

/// A file of the crate folder `dir`: its bytes (`None` when absent) and,
/// when too large to read, its size.
fn read_owned(dir: &Path, name: &str) -> Result<(Option<Vec<u8>>, Option<u64>), PlanError> {
    Ok(match owned::read(dir, name)? {
        Contents::Absent => (None, None),
        Contents::Bytes(bytes) => (Some(bytes), None),
        Contents::TooLarge(size) => (None, Some(size)),
    })
}

/// The previous manifest of a crate folder, if it has a readable one.
///
/// A manifest that is not valid JSON of a manifest, or too large, counts as
/// none: nothing is then owned, so every differing file is refused rather
/// than silently replaced. One that parses but names a file outside its
/// folder is an error: it was edited to make ggen read or delete elsewhere.
pub fn previous_manifest(dir: &Path) -> Result<Option<Manifest>, PlanError> {
    let (Some(bytes), _) = read_owned(dir, manifest::FILE_NAME)? else {
        return Ok(None);
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return Ok(None);
    };
    let shown = dir
        .join(manifest::FILE_NAME)
        .to_string_lossy()
        .replace(std::path::MAIN_SEPARATOR, "/");
    match Manifest::parse(&shown, &text) {
        Ok(manifest) => Ok(Some(manifest)),
        Err(ManifestError::Parse { .. }) => Ok(None),
        Err(unsafe_path) => Err(unsafe_path.into()),
    }
}

/// What may be in a crate folder besides ggen's files: cargo's output of a
/// crate built on its own (outside a workspace), never compiled.
const BESIDE: [&str; 2] = ["target", "Cargo.lock"];

/// Every file (or link, or special file) below the crate folder `dir`
/// that is not in `known` nor [`BESIDE`], `/`-separated and sorted. Links
/// are listed, not followed.
fn unowned_files(dir: &Path, known: &BTreeSet<&str>) -> Result<Vec<String>, PlanError> {
    let mut found = Vec::new();
    let mut pending = vec![(dir.to_owned(), String::new())];
    while let Some((folder, prefix)) = pending.pop() {
        let list = |source| OwnedError::Io {
            path: folder.to_string_lossy().into_owned(),
            source,
        };
        let entries = match fs_err::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(list(e).into()),
        };
        for entry in entries {
            let entry = entry.map_err(list)?;
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if prefix.is_empty() && BESIDE.contains(&name.as_str()) {
                continue;
            }
            if entry.file_type().map_err(list)?.is_dir() {
                pending.push((entry.path(), format!("{name}/")));
            } else if !known.contains(name.as_str()) && name != manifest::FILE_NAME {
                found.push(name);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Plans one crate folder. `produced` maps paths inside the folder to their
/// final text and includes the manifest; `None` means the spec is gone and
/// the whole folder is stale.
pub fn plan_crate(
    id: &str,
    dir: &str,
    path: &Path,
    produced: Option<&BTreeMap<String, String>>,
    force: bool,
) -> Result<CratePlan, PlanError> {
    let previous = previous_manifest(path)?;
    if let Some(claims) = previous.as_ref().map(|m| &m.sku.id)
        && claims != id
    {
        return Err(PlanError::Foreign {
            manifest: format!("{dir}/{}", manifest::FILE_NAME),
            claims: claims.clone(),
            folder: id.to_owned(),
        });
    }
    let empty = BTreeMap::new();
    let produced = produced.unwrap_or(&empty);
    let mut changes = Vec::new();

    for (name, text) in produced {
        if name == manifest::FILE_NAME {
            continue;
        }
        let (before, unread_size) = read_owned(path, name)?;
        let after_sha = digest::sha256_hex(text.as_bytes());
        let before_sha = before.as_deref().map(digest::sha256_hex);
        let op = match &before_sha {
            // Too large to read: not what ggen wrote.
            None if unread_size.is_some() => {
                if force {
                    Op::Overwrite
                } else {
                    Op::Refuse
                }
            }
            None => Op::Create,
            Some(sha) if *sha == after_sha => Op::Unchanged,
            Some(sha) => {
                let owned_clean = previous
                    .as_ref()
                    .and_then(|m| m.file(name))
                    .is_some_and(|entry| entry.sha256 == *sha);
                match (owned_clean, force) {
                    (true, _) => Op::Update,
                    (false, true) => Op::Overwrite,
                    (false, false) => Op::Refuse,
                }
            }
        };
        changes.push(Change {
            path: name.clone(),
            op,
            sha256_before: before_sha,
            sha256_after: Some(after_sha),
            unread_size,
            before,
            after: Some(text.clone()),
        });
    }

    let mut kept = false;
    if let Some(previous) = &previous {
        for entry in &previous.files {
            if produced.contains_key(&entry.path) {
                continue;
            }
            let (before, unread_size) = read_owned(path, &entry.path)?;
            if before.is_none() && unread_size.is_none() {
                continue;
            }
            let sha = before.as_deref().map(digest::sha256_hex);
            let op = if sha.as_deref() == Some(entry.sha256.as_str()) {
                Op::Delete
            } else {
                kept = true;
                Op::Keep
            };
            changes.push(Change {
                path: entry.path.clone(),
                op,
                sha256_before: sha,
                sha256_after: None,
                unread_size,
                before,
                after: None,
            });
        }
    }

    if !produced.is_empty() {
        let mut known: BTreeSet<&str> = produced.keys().map(String::as_str).collect();
        if let Some(previous) = &previous {
            known.extend(previous.files.iter().map(|f| f.path.as_str()));
        }
        for name in unowned_files(path, &known)? {
            changes.push(Change {
                path: name,
                op: Op::Unowned,
                sha256_before: None,
                sha256_after: None,
                unread_size: None,
                before: None,
                after: None,
            });
        }
    }

    // The manifest goes last: applied last, it only ever describes files
    // that are already in place.
    let (manifest_before, manifest_unread) = read_owned(path, manifest::FILE_NAME)?;
    let manifest_before_sha = manifest_before.as_deref().map(digest::sha256_hex);
    match produced.get(manifest::FILE_NAME) {
        Some(text) => {
            let after_sha = digest::sha256_hex(text.as_bytes());
            let op = match &manifest_before_sha {
                None if manifest_unread.is_some() => Op::Update,
                None => Op::Create,
                Some(sha) if *sha == after_sha => Op::Unchanged,
                Some(_) => Op::Update,
            };
            changes.push(Change {
                path: manifest::FILE_NAME.to_owned(),
                op,
                sha256_before: manifest_before_sha,
                sha256_after: Some(after_sha),
                unread_size: manifest_unread,
                before: manifest_before,
                after: Some(text.clone()),
            });
        }
        None if manifest_before.is_some() || manifest_unread.is_some() => {
            // A stale folder keeps its manifest while it still owns edited files.
            changes.push(Change {
                path: manifest::FILE_NAME.to_owned(),
                op: if kept { Op::Keep } else { Op::Delete },
                sha256_before: manifest_before_sha,
                sha256_after: None,
                unread_size: manifest_unread,
                before: manifest_before,
                after: None,
            });
        }
        None => {}
    }

    Ok(CratePlan {
        id: id.to_owned(),
        dir: dir.to_owned(),
        path: path.to_owned(),
        changes,
    })
}

/// A unified diff of one change (`a/` = disk, `b/` = generated); empty when unchanged.
pub fn diff(plan: &CratePlan, change: &Change) -> String {
    if !change.op.is_drift() {
        return String::new();
    }
    let before = change
        .before
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let after = change.after.as_deref().unwrap_or_default();
    let name = format!("{}/{}", plan.dir, change.path);
    if change.op == Op::Unowned {
        return format!(
            "Only in {}: {} (not generated by ggen: move it out of the crate folder)\n",
            plan.dir, change.path
        );
    }
    if let Some(size) = change.unread_size {
        return format!(
            "Files a/{name} and b/{name} differ (the file on disk is {size} bytes: not read)\n"
        );
    }
    let old = if change.before.is_some() {
        format!("a/{name}")
    } else {
        "/dev/null".to_owned()
    };
    let new = if change.after.is_some() {
        format!("b/{name}")
    } else {
        "/dev/null".to_owned()
    };
    similar::TextDiff::from_lines(before.as_ref(), after)
        .unified_diff()
        .context_radius(3)
        .header(&old, &new)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FileEntry, Generator, Sku, SpecFile, Templates};

    fn manifest_of(files: &[(&str, &str)]) -> String {
        Manifest {
            generator: Generator {
                name: "ggen".to_owned(),
                version: "0".to_owned(),
            },
            runtime: None,
            sku: Sku {
                id: "a".to_owned(),
                version: "1.0.0".to_owned(),
            },
            spec: SpecFile {
                path: "specs/a.json".to_owned(),
                sha256: String::new(),
            },
            templates: Templates {
                sha256: String::new(),
                overrides: vec![],
            },
            files: files
                .iter()
                .map(|(p, t)| FileEntry::of(p, t.as_bytes()))
                .collect(),
        }
        .to_json()
    }

    fn produced(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> = files
            .iter()
            .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
            .collect();
        map.insert(manifest::FILE_NAME.to_owned(), manifest_of(files));
        map
    }

    fn ops(plan: &CratePlan) -> Vec<(String, Op)> {
        plan.changes
            .iter()
            .map(|c| (c.path.clone(), c.op))
            .collect()
    }

    #[test]
    fn fresh_edited_and_stale_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = [("a.rs", "old a\n"), ("b.rs", "b\n"), ("gone.rs", "gone\n")];
        for (p, t) in old {
            fs_err::write(dir.path().join(p), t).expect("write");
        }
        fs_err::write(dir.path().join(manifest::FILE_NAME), manifest_of(&old)).expect("write");

        let new = produced(&[("a.rs", "new a\n"), ("b.rs", "b\n"), ("c.rs", "c\n")]);
        let plan = plan_crate("a", "out/a", dir.path(), Some(&new), false).expect("plan");
        assert_eq!(
            ops(&plan),
            vec![
                ("a.rs".to_owned(), Op::Update),
                ("b.rs".to_owned(), Op::Unchanged),
                ("c.rs".to_owned(), Op::Create),
                ("gone.rs".to_owned(), Op::Delete),
                (manifest::FILE_NAME.to_owned(), Op::Update),
            ]
        );
        let a = &plan.changes[0];
        assert!(diff(&plan, a).contains("-old a\n+new a\n"));

        // A hand edit is refused, or overwritten with force; an edited stale file is kept.
        fs_err::write(dir.path().join("a.rs"), "hand edit\n").expect("write");
        fs_err::write(dir.path().join("gone.rs"), "edited\n").expect("write");
        let plan = plan_crate("a", "out/a", dir.path(), Some(&new), false).expect("plan");
        assert_eq!(plan.changes[0].op, Op::Refuse);
        assert_eq!(plan.changes[3].op, Op::Keep);
        let plan = plan_crate("a", "out/a", dir.path(), Some(&new), true).expect("plan");
        assert_eq!(plan.changes[0].op, Op::Overwrite);
    }

    #[test]
    fn a_removed_spec_makes_its_folder_stale() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = [("a.rs", "a\n")];
        fs_err::write(dir.path().join("a.rs"), "a\n").expect("write");
        fs_err::write(dir.path().join("mine.txt"), "not ggen's\n").expect("write");
        fs_err::write(dir.path().join(manifest::FILE_NAME), manifest_of(&old)).expect("write");
        let plan = plan_crate("a", "out/a", dir.path(), None, false).expect("plan");
        assert_eq!(
            ops(&plan),
            vec![
                ("a.rs".to_owned(), Op::Delete),
                (manifest::FILE_NAME.to_owned(), Op::Delete),
            ]
        );
    }

    #[test]
    fn a_folder_whose_manifest_is_another_skus_is_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = [("a.rs", "a\n")];
        fs_err::write(dir.path().join("a.rs"), "a\n").expect("write");
        // `manifest_of` records sku `a`: this is the folder `b`.
        fs_err::write(dir.path().join(manifest::FILE_NAME), manifest_of(&old)).expect("write");
        for produced in [None, Some(&produced(&[("a.rs", "new\n")]))] {
            let error = plan_crate("b", "out/b", dir.path(), produced, false).expect_err("foreign");
            assert!(matches!(error, PlanError::Foreign { .. }), "{error}");
            assert_eq!(error.exit_code(), 1);
            assert!(
                error.to_string().starts_with(
                    "`out/b/ggen-manifest.json` is the manifest of sku `a`, not of `b`"
                ),
                "{error}"
            );
        }
    }

    #[test]
    fn files_not_owned_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs_err::write(dir.path().join("a.rs"), "someone else's\n").expect("write");
        let new = produced(&[("a.rs", "a\n")]);
        let plan = plan_crate("a", "out/a", dir.path(), Some(&new), false).expect("plan");
        assert_eq!(plan.changes[0].op, Op::Refuse);
    }
}

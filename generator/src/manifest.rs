//! The manifest of a generated crate, `ggen-manifest.json`: what generated
//! it (generator version, the runtime version and API level it generates
//! for, spec path and hash, template set and overrides)
//! and every file it owns (path, SHA-256, size). Written as canonical JSON
//! (sorted keys, two-space indentation). It drives `--check`, safe deletion
//! and edit detection in [`crate::plan`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::canonical;
use crate::model::Model;
use crate::owned;
use crate::render::TemplateSet;

/// File name of the manifest inside a crate folder.
pub const FILE_NAME: &str = "ggen-manifest.json";

/// The generator's version, recorded in every manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why a manifest could not be read.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// The text is not a manifest.
    #[error("`{path}` is not a ggen manifest")]
    Parse {
        /// The manifest's path.
        path: String,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// A file entry names a path outside the crate folder (absolute, with
    /// `..`, …): refused, never read or deleted.
    #[error(
        "`{path}`: {pointer}: `{entry}` {problem}; a ggen manifest only names files inside its crate folder (restore the manifest ggen wrote)"
    )]
    UnsafePath {
        /// The manifest's path.
        path: String,
        /// JSON pointer of the entry (`/files/3/path`).
        pointer: String,
        /// The path as written (escaped for display).
        entry: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Two file entries name the same path: ggen never writes such a
    /// manifest, and each would be read (and deleted) again.
    #[error(
        "`{path}`: {pointer}: `{entry}` is listed twice (first at {first}); restore the manifest ggen wrote"
    )]
    DuplicatePath {
        /// The manifest's path.
        path: String,
        /// JSON pointer of the second entry.
        pointer: String,
        /// JSON pointer of the first.
        first: String,
        /// The path as written (escaped for display).
        entry: String,
    },
}

/// What produced a generated crate and which files it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The generator that wrote it.
    pub generator: Generator,
    /// The runtime the crate was generated for (absent in manifests of
    /// ggen versions that did not record it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeTarget>,
    /// The SKU the crate implements.
    pub sku: Sku,
    /// The spec file it was generated from.
    pub spec: SpecFile,
    /// The templates it was rendered with.
    pub templates: Templates,
    /// Every owned file except the manifest itself, sorted by path.
    pub files: Vec<FileEntry>,
}

/// Generator name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generator {
    /// Always `ggen`.
    pub name: String,
    /// The generator's crate version.
    pub version: String,
}

/// The `ggen-runtime` a crate was generated for; the generated `lib.rs`
/// asserts the same `api_level` at compile time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeTarget {
    /// `ggen_runtime::API_LEVEL` (from `ggen-runtime-core`) that ggen generates for.
    pub api_level: u32,
    /// That runtime's crate version.
    pub version: String,
}

/// SKU id and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sku {
    /// `sku.id`.
    pub id: String,
    /// `sku.version`.
    pub version: String,
}

/// A spec file by path (relative to the project root) and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// `/`-separated, relative to the folder of `ggen.toml`.
    pub path: String,
    /// SHA-256 (hex) of the file's bytes.
    pub sha256: String,
}

/// The template set and its overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Templates {
    /// SHA-256 (hex) of the effective template set.
    pub sha256: String,
    /// Templates shadowed by the project's override folder.
    pub overrides: Vec<TemplateOverride>,
}

/// One template override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateOverride {
    /// Template name (`src/lib.rs.tera`).
    pub name: String,
    /// SHA-256 (hex) of the override's bytes.
    pub sha256: String,
}

/// One owned file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path inside the crate folder, `/`-separated.
    pub path: String,
    /// SHA-256 (hex) of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

impl FileEntry {
    /// The entry describing `bytes` at `path`.
    pub fn of(path: &str, bytes: &[u8]) -> FileEntry {
        FileEntry {
            path: path.to_owned(),
            sha256: sha256_hex(bytes),
            size: bytes.len() as u64,
        }
    }
}

use crate::digest::sha256_hex;

impl Manifest {
    /// The manifest of the crate generated from `model` with `templates`,
    /// owning `files` (path inside the crate folder → text, manifest excluded).
    pub fn new(
        model: &Model,
        templates: &TemplateSet,
        files: &BTreeMap<String, String>,
    ) -> Manifest {
        Manifest {
            generator: Generator {
                name: "ggen".to_owned(),
                version: VERSION.to_owned(),
            },
            runtime: Some(RuntimeTarget {
                api_level: ggen_runtime_core::API_LEVEL,
                version: ggen_runtime_core::VERSION.to_owned(),
            }),
            sku: Sku {
                id: model.id.clone(),
                version: model.version.clone(),
            },
            spec: SpecFile {
                path: model.spec_path.clone(),
                sha256: model.spec_sha256.clone(),
            },
            templates: Templates {
                sha256: templates.sha256.clone(),
                overrides: templates
                    .overrides
                    .iter()
                    .map(|o| TemplateOverride {
                        name: o.name.clone(),
                        sha256: o.sha256.clone(),
                    })
                    .collect(),
            },
            files: files
                .iter()
                .map(|(path, text)| FileEntry::of(path, text.as_bytes()))
                .collect(),
        }
    }

    /// The canonical text: sorted keys, two-space indentation, final newline.
    pub fn to_json(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        canonical::to_string_pretty(&value)
    }

    /// Parses a manifest read from `path` (named in the error); every file
    /// entry must name a path inside the crate folder
    /// ([`owned::path_problem`]).
    pub fn parse(path: &str, text: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest =
            serde_json::from_str(text).map_err(|source| ManifestError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let mut seen = std::collections::BTreeMap::new();
        for (i, file) in manifest.files.iter().enumerate() {
            if let Some(problem) = owned::path_problem(&file.path) {
                return Err(ManifestError::UnsafePath {
                    path: path.to_owned(),
                    pointer: format!("/files/{i}/path"),
                    entry: file.path.escape_debug().to_string(),
                    problem,
                });
            }
            if let Some(first) = seen.insert(file.path.as_str(), i) {
                return Err(ManifestError::DuplicatePath {
                    path: path.to_owned(),
                    pointer: format!("/files/{i}/path"),
                    first: format!("/files/{first}/path"),
                    entry: file.path.escape_debug().to_string(),
                });
            }
        }
        Ok(manifest)
    }

    /// The entry for `path`, if the manifest owns it.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_canonical_json() {
        let manifest = Manifest {
            generator: Generator {
                name: "ggen".to_owned(),
                version: "0.1.0".to_owned(),
            },
            runtime: Some(RuntimeTarget {
                api_level: 1,
                version: "0.1.0".to_owned(),
            }),
            sku: Sku {
                id: "a".to_owned(),
                version: "1.0.0".to_owned(),
            },
            spec: SpecFile {
                path: "specs/a.json".to_owned(),
                sha256: sha256_hex(b"{}"),
            },
            templates: Templates {
                sha256: sha256_hex(b""),
                overrides: vec![],
            },
            files: vec![FileEntry::of("Cargo.toml", b"[package]\n")],
        };
        let text = manifest.to_json();
        assert!(text.starts_with("{\n  \"files\": [\n"), "{text}");
        assert_eq!(Manifest::parse("m", &text).expect("parses"), manifest);
        assert!(Manifest::parse("m", "{}").is_err());
        // Manifests written before the runtime was recorded still read.
        let old = text.replace(
            ",\n  \"runtime\": {\n    \"api_level\": 1,\n    \"version\": \"0.1.0\"\n  }",
            "",
        );
        assert_ne!(old, text);
        assert_eq!(Manifest::parse("m", &old).expect("parses").runtime, None);
    }

    #[test]
    fn entries_outside_the_crate_folder_are_refused() {
        let mut manifest = Manifest::parse(
            "m",
            r#"{"files": [], "generator": {"name": "ggen", "version": "0"},
                "sku": {"id": "a", "version": "1.0.0"},
                "spec": {"path": "specs/a.json", "sha256": ""},
                "templates": {"sha256": "", "overrides": []}}"#,
        )
        .expect("parses");
        for bad in [
            "/etc/passwd",
            "../../.env",
            "src/../../x",
            "..\\x",
            "/dev/zero",
        ] {
            manifest.files = vec![
                FileEntry::of("Cargo.toml", b""),
                FileEntry::of(bad, b"secret"),
            ];
            let error =
                Manifest::parse("out/a/ggen-manifest.json", &manifest.to_json()).expect_err(bad);
            let text = error.to_string();
            assert!(
                matches!(error, ManifestError::UnsafePath { .. }),
                "{bad}: {text}"
            );
            assert!(
                text.starts_with("`out/a/ggen-manifest.json`: /files/1/path: `"),
                "{text}"
            );
        }
        // The same file twice (a manifest edited to make ggen read one
        // large file over and over).
        manifest.files = vec![
            FileEntry::of("Cargo.toml", b""),
            FileEntry::of("src/lib.rs", b"x"),
            FileEntry::of("src/lib.rs", b"x"),
        ];
        let error = Manifest::parse("out/a/ggen-manifest.json", &manifest.to_json())
            .expect_err("a path listed twice");
        assert_eq!(
            error.to_string(),
            "`out/a/ggen-manifest.json`: /files/2/path: `src/lib.rs` is listed twice (first at /files/1/path); restore the manifest ggen wrote"
        );
    }
}

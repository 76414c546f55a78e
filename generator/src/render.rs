//! Render stage: a [`Model`] becomes the in-memory files of one governor
//! crate, through Tera templates.
//!
//! The templates under `templates/` are embedded into the binary
//! ([`EMBEDDED`]); a project may shadow any of them, file by file, with an
//! override folder (`templates = "…"` in ggen.toml). Templates receive a
//! typed [`Context`] (see [`crate::view`]): text already escaped for their
//! language and pieces of Rust that are computed rather than templated (the
//! exhaustive `(Profile, Signal)` match), built with `quote`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::digest::sha256_hex;
use crate::model::Model;
use crate::view::Context;
use crate::workspace::PackageSettings;

/// The embedded template set: `(template name, source)`; the output path is
/// the name without `.tera`.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "Cargo.toml.tera",
        include_str!("../templates/Cargo.toml.tera"),
    ),
    (
        "README.md.tera",
        include_str!("../templates/README.md.tera"),
    ),
    (
        "deploy/Containerfile.tera",
        include_str!("../templates/deploy/Containerfile.tera"),
    ),
    (
        "deploy/Containerfile.dockerignore.tera",
        include_str!("../templates/deploy/Containerfile.dockerignore.tera"),
    ),
    (
        "deploy/kubernetes.yaml.tera",
        include_str!("../templates/deploy/kubernetes.yaml.tera"),
    ),
    (
        "deploy/secret.yaml.example.tera",
        include_str!("../templates/deploy/secret.yaml.example.tera"),
    ),
    (
        "monitoring/dashboard.json.tera",
        include_str!("../templates/monitoring/dashboard.json.tera"),
    ),
    (
        "monitoring/prometheus-rule.yaml.tera",
        include_str!("../templates/monitoring/prometheus-rule.yaml.tera"),
    ),
    (
        "monitoring/rules.test.yaml.tera",
        include_str!("../templates/monitoring/rules.test.yaml.tera"),
    ),
    (
        "monitoring/rules.yaml.tera",
        include_str!("../templates/monitoring/rules.yaml.tera"),
    ),
    (
        "src/actions.rs.tera",
        include_str!("../templates/src/actions.rs.tera"),
    ),
    (
        "src/lib.rs.tera",
        include_str!("../templates/src/lib.rs.tera"),
    ),
    (
        "src/main.rs.tera",
        include_str!("../templates/src/main.rs.tera"),
    ),
    (
        "src/policy.rs.tera",
        include_str!("../templates/src/policy.rs.tera"),
    ),
    (
        "src/signals.rs.tera",
        include_str!("../templates/src/signals.rs.tera"),
    ),
    (
        "tests/cli.rs.tera",
        include_str!("../templates/tests/cli.rs.tera"),
    ),
    (
        "tests/policy.rs.tera",
        include_str!("../templates/tests/policy.rs.tera"),
    ),
];

/// Templates that other templates import (`{% import "macros.tera" as … %}`):
/// embedded and overridable like [`EMBEDDED`], part of the template set's
/// hash, but rendered to no file of their own.
pub const EMBEDDED_MACROS: &[(&str, &str)] = &[
    ("macros.tera", include_str!("../templates/macros.tera")),
    (
        "monitoring/dashboard.tera",
        include_str!("../templates/monitoring/dashboard.tera"),
    ),
    (
        "monitoring/groups.tera",
        include_str!("../templates/monitoring/groups.tera"),
    ),
];

/// Every embedded template, rendered or imported, in no particular order.
fn embedded_all() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    EMBEDDED.iter().chain(EMBEDDED_MACROS)
}

/// Why templates could not be loaded or rendered.
#[derive(Debug, Error)]
pub enum RenderError {
    /// The override folder could not be read.
    #[error("cannot read template overrides in `{dir}`")]
    OverrideDir {
        /// The override folder.
        dir: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// An override file does not shadow any embedded template.
    #[error(
        "`{file}` in the template override folder shadows no template (expected one of {expected})"
    )]
    UnknownOverride {
        /// The override file.
        file: String,
        /// The embedded template names, listed.
        expected: String,
    },
    /// A template does not parse.
    #[error("template `{name}` does not parse")]
    Parse {
        /// The template.
        name: String,
        /// Tera's error.
        #[source]
        source: tera::Error,
    },
    /// A template failed while rendering.
    #[error("template `{name}` failed to render for spec `{spec}`")]
    Render {
        /// The template.
        name: String,
        /// The spec rendered.
        spec: String,
        /// Tera's error.
        #[source]
        source: tera::Error,
    },
    /// The template context could not be built from the model.
    #[error("cannot build the template context")]
    View(#[from] crate::view::ViewError),
}

/// A template that a project's override folder supplies instead of the embedded one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Override {
    /// Template name (`src/lib.rs.tera`), `/`-separated.
    pub name: String,
    /// SHA-256 (hex) of the override's bytes.
    pub sha256: String,
}

/// The compiled templates a build renders with.
#[derive(Debug)]
pub struct TemplateSet {
    tera: tera::Tera,
    /// SHA-256 (hex) over every effective template's name and text, in name order.
    pub sha256: String,
    /// The overrides in effect, by name.
    pub overrides: Vec<Override>,
}

impl TemplateSet {
    /// The embedded templates only.
    pub fn embedded() -> Result<TemplateSet, RenderError> {
        TemplateSet::build(BTreeMap::new())
    }

    /// The embedded templates, shadowed file by file by those in `dir`.
    pub fn with_overrides(dir: &Path) -> Result<TemplateSet, RenderError> {
        let mut found = BTreeMap::new();
        collect_overrides(dir, dir, &mut found)?;
        TemplateSet::build(found)
    }

    fn build(overrides: BTreeMap<String, String>) -> Result<TemplateSet, RenderError> {
        let known: Vec<&str> = embedded_all().map(|(name, _)| *name).collect();
        if let Some(unknown) = overrides.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(RenderError::UnknownOverride {
                file: unknown.clone(),
                expected: known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let effective: BTreeMap<&str, &str> = embedded_all()
            .map(|(name, text)| {
                let text = overrides.get(*name).map_or(*text, String::as_str);
                (*name, text)
            })
            .collect();
        let mut hasher = Sha256::new();
        for (name, text) in &effective {
            // Length-prefixed so that no two template sets hash alike.
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![]);
        // Imported templates first: Tera checks on every addition that the
        // templates a template imports are present.
        let (macros, rest): (Vec<_>, Vec<_>) = effective
            .iter()
            .partition(|(name, _)| EMBEDDED_MACROS.iter().any(|(m, _)| m == *name));
        for (name, text) in macros.into_iter().chain(rest) {
            tera.add_raw_template(name, text)
                .map_err(|source| RenderError::Parse {
                    name: (*name).to_owned(),
                    source,
                })?;
        }
        Ok(TemplateSet {
            tera,
            sha256: hex::encode(hasher.finalize()),
            overrides: overrides
                .iter()
                .map(|(name, text)| Override {
                    name: name.clone(),
                    sha256: sha256_hex(text.as_bytes()),
                })
                .collect(),
        })
    }
}

fn collect_overrides(
    root: &Path,
    dir: &Path,
    found: &mut BTreeMap<String, String>,
) -> Result<(), RenderError> {
    let io = |source| RenderError::OverrideDir {
        dir: root.to_owned(),
        source,
    };
    for entry in fs_err::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_overrides(root, &path, found)?;
        } else {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            found.insert(name, fs_err::read_to_string(&path).map_err(io)?);
        }
    }
    Ok(())
}

/// One rendered (not yet formatted) output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Path inside the crate folder, `/`-separated.
    pub path: String,
    /// The template it came from.
    pub template: String,
    /// The rendered text.
    pub text: String,
}

/// Renders every template of `templates` for `model` with the package
/// `settings` of its `Cargo.toml`, in template-name order.
pub fn render(
    model: &Model,
    templates: &TemplateSet,
    settings: &PackageSettings,
) -> Result<Vec<RenderedFile>, RenderError> {
    let context =
        tera::Context::from_serialize(Context::new(model, settings)?).map_err(|source| {
            RenderError::Render {
                name: "<context>".to_owned(),
                spec: model.spec_path.clone(),
                source,
            }
        })?;
    EMBEDDED
        .iter()
        .map(|(name, _)| {
            let text =
                templates
                    .tera
                    .render(name, &context)
                    .map_err(|source| RenderError::Render {
                        name: (*name).to_owned(),
                        spec: model.spec_path.clone(),
                        source,
                    })?;
            Ok(RenderedFile {
                path: name.trim_end_matches(".tera").to_owned(),
                template: (*name).to_owned(),
                text,
            })
        })
        .collect()
}

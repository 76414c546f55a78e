//! Render stage: a [`Model`] becomes the in-memory files of one governor
//! crate, through Tera templates.
//!
//! The templates under `templates/` are embedded into the binary
//! ([`EMBEDDED`]); a project may shadow any of them, file by file, with an
//! override folder (`templates = "…"` in ggen.toml). Templates receive text
//! already escaped for their language (see [`crate::escape`]) and pieces of
//! Rust that are computed rather than templated (the exhaustive
//! `(Profile, Signal)` match) built with `quote` and handed over as strings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proc_macro2::{Literal, TokenStream};
use quote::quote;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::escape;
use crate::explain;
use crate::manifest::sha256_hex;
use crate::model::Model;
use crate::spec::{Adapter, Direction};

/// The embedded template set: `(template name, source)`; the output path is
/// the name without `.tera`.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "Cargo.toml.tera",
        include_str!("../../templates/Cargo.toml.tera"),
    ),
    (
        "README.md.tera",
        include_str!("../../templates/README.md.tera"),
    ),
    (
        "deploy/Containerfile.tera",
        include_str!("../../templates/deploy/Containerfile.tera"),
    ),
    (
        "deploy/kubernetes.yaml.tera",
        include_str!("../../templates/deploy/kubernetes.yaml.tera"),
    ),
    (
        "src/actions.rs.tera",
        include_str!("../../templates/src/actions.rs.tera"),
    ),
    (
        "src/lib.rs.tera",
        include_str!("../../templates/src/lib.rs.tera"),
    ),
    (
        "src/main.rs.tera",
        include_str!("../../templates/src/main.rs.tera"),
    ),
    (
        "src/policy.rs.tera",
        include_str!("../../templates/src/policy.rs.tera"),
    ),
    (
        "src/signals.rs.tera",
        include_str!("../../templates/src/signals.rs.tera"),
    ),
    (
        "tests/cli.rs.tera",
        include_str!("../../templates/tests/cli.rs.tera"),
    ),
    (
        "tests/policy.rs.tera",
        include_str!("../../templates/tests/policy.rs.tera"),
    ),
];

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
    /// A computed identifier is not a Rust identifier (names should have prevented this).
    #[error("`{ident}` is not a rust identifier")]
    Ident {
        /// The identifier.
        ident: String,
        /// syn's error.
        #[source]
        source: syn::Error,
    },
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
        let known: Vec<&str> = EMBEDDED.iter().map(|(name, _)| *name).collect();
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
        let effective: BTreeMap<&str, &str> = EMBEDDED
            .iter()
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
        for (name, text) in &effective {
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

/// Renders every template of `templates` for `model`, in template-name order.
pub fn render(model: &Model, templates: &TemplateSet) -> Result<Vec<RenderedFile>, RenderError> {
    let context =
        tera::Context::from_value(context(model)?).map_err(|source| RenderError::Render {
            name: "<context>".to_owned(),
            spec: model.spec_path.clone(),
            source,
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

fn ident(text: &str) -> Result<syn::Ident, RenderError> {
    syn::parse_str::<syn::Ident>(text).map_err(|source| RenderError::Ident {
        ident: text.to_owned(),
        source,
    })
}

/// The body of `policy::rule`: `match (profile, signal) { … }` with one arm
/// per pair and no wildcard, so a new signal or profile cannot be forgotten.
fn rule_match(model: &Model) -> Result<TokenStream, RenderError> {
    let mut arms = Vec::new();
    for profile in &model.profiles {
        let pv = ident(&profile.variant)?;
        let pm = ident(&profile.module)?;
        for signal in &model.signals {
            let sv = ident(&signal.variant)?;
            let target = match profile
                .rules
                .iter()
                .position(|r| r.signal == usize::from(signal.id))
            {
                Some(i) => {
                    let i = Literal::usize_unsuffixed(i);
                    quote! { Some(&#pm::RULES[#i]) }
                }
                None => quote! { None },
            };
            arms.push(quote! {
                (Profile::#pv, crate::signals::Signal::#sv) => #target
            });
        }
    }
    Ok(quote! {
        match (profile, signal) {
            #(#arms,)*
        }
    })
}

fn direction_variant(direction: Direction) -> &'static str {
    match direction {
        Direction::Above => "Above",
        Direction::Below => "Below",
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Above => "above",
        Direction::Below => "below",
    }
}

fn adapter_name(adapter: Adapter) -> &'static str {
    match adapter {
        Adapter::Log => "log",
        Adapter::Webhook => "webhook",
        Adapter::Command => "command",
    }
}

fn adapter_variant(adapter: Adapter) -> &'static str {
    match adapter {
        Adapter::Log => "Log",
        Adapter::Webhook => "Webhook",
        Adapter::Command => "Command",
    }
}

fn range_md(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!("{min} … {max}"),
        (Some(min), None) => format!("≥ {min}"),
        (None, Some(max)) => format!("≤ {max}"),
        (None, None) => "any".to_owned(),
    }
}

/// `f64::next_down(v)` / `f64::next_up(v)` as a Rust expression.
fn good_side_expr(direction: Direction, value: f64) -> String {
    let step = match direction {
        Direction::Above => "next_down",
        Direction::Below => "next_up",
    };
    format!("f64::{step}({})", escape::rust_f64(value))
}

/// The template context: model data plus escaped and computed text.
fn context(model: &Model) -> Result<Value, RenderError> {
    let signals: Vec<Value> = model
        .signals
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "name": s.name,
                "variant": s.variant,
                "module": s.module,
                "direction": direction_name(s.direction),
                "direction_variant": direction_variant(s.direction),
                "doc": {
                    "unit": escape::doc_line(&s.unit, "no unit"),
                    "description": escape::doc_line(&s.description, "no description"),
                },
                "lit": {
                    "name": escape::rust_str(&s.name),
                    "unit": escape::rust_str(&s.unit),
                    "description": escape::rust_str(&s.description),
                    "min": escape::rust_opt_f64(s.min),
                    "max": escape::rust_opt_f64(s.max),
                },
                "md": {
                    "unit": escape::md(&s.unit),
                    "description": escape::md(&s.description),
                    "range": range_md(s.min, s.max),
                },
            })
        })
        .collect();
    let actions: Vec<Value> = model
        .actions
        .iter()
        .map(|a| {
            let undo = a.undo.map(|u| &model.actions[u]);
            json!({
                "id": a.id,
                "name": a.name,
                "variant": a.variant,
                "adapter": adapter_name(a.adapter),
                "adapter_variant": adapter_variant(a.adapter),
                "undo_name": undo.map(|u| u.name.clone()),
                "undo_variant": undo.map(|u| u.variant.clone()),
                "timeout_ms": a.timeout_ms,
                "retries": a.retries,
                "lit": {
                    "name": escape::rust_str(&a.name),
                    "params": escape::rust_str(&a.params),
                },
                "md": { "params": format!("<code>{}</code>", escape::md(&a.params)) },
            })
        })
        .collect();
    let undo_pairs: Vec<Value> = model
        .actions
        .iter()
        .filter_map(|a| a.undo.map(|u| json!([a.variant, model.actions[u].variant])))
        .collect();
    let profiles: Vec<Value> = model
        .profiles
        .iter()
        .map(|p| {
            let rules: Vec<Value> = p
                .rules
                .iter()
                .map(|r| {
                    let signal = &model.signals[r.signal];
                    let edges: Vec<Value> = r
                        .edges()
                        .into_iter()
                        .enumerate()
                        .map(|(i, e)| {
                            // Even positions are thresholds, odd ones their good side.
                            let threshold = [r.warn, r.intervene, r.refuse]
                                .into_iter()
                                .flatten()
                                .nth(i / 2)
                                .unwrap_or(e.value);
                            let value = if i % 2 == 0 {
                                escape::rust_f64(e.value)
                            } else {
                                good_side_expr(r.direction, threshold)
                            };
                            json!({ "value": value, "level": e.level.variant() })
                        })
                        .collect();
                    json!({
                        "signal_name": signal.name,
                        "signal_variant": signal.variant,
                        "signal_module": signal.module,
                        "direction_variant": direction_variant(r.direction),
                        "defined_in": r.defined_in,
                        "dwell": r.dwell,
                        "doc_unit": escape::doc_line(&signal.unit, "no unit"),
                        "action_variants": r.actions.iter().map(|a| model.actions[*a].variant.clone()).collect::<Vec<_>>(),
                        "lit": {
                            "warn": r.warn.map(escape::rust_f64),
                            "intervene": r.intervene.map(escape::rust_f64),
                            "refuse": r.refuse.map(escape::rust_f64),
                            "clear": escape::rust_f64(r.clear),
                        },
                        "edges": edges,
                        "clear_edge": {
                            "at": escape::rust_f64(r.clear),
                            "good": good_side_expr(r.direction, r.clear),
                        },
                    })
                })
                .collect();
            json!({
                "id": p.id,
                "name": p.name,
                "variant": p.variant,
                "module": p.module,
                "extends": p.extends,
                "is_default": usize::from(p.id) == model.default_profile,
                "cooldown_s": p.cooldown_s,
                "covered": p.rules.iter().map(|r| model.signals[r.signal].variant.clone()).collect::<Vec<_>>(),
                "rules": rules,
                "lit": {
                    "name": escape::rust_str(&p.name),
                    "max_actions_per_hour": p.max_actions_per_hour.map_or_else(|| "None".to_owned(), |n| format!("Some({n})")),
                },
            })
        })
        .collect();
    let default_variant = model
        .profiles
        .get(model.default_profile)
        .map(|p| p.variant.clone())
        .unwrap_or_default();
    let sku = json!({
        "id": model.id,
        "version": model.version,
        "crate_name": model.crate_name,
        "lib_name": model.lib_name,
        "spec_path": model.spec_path,
        "spec_sha256": model.spec_sha256,
        "max_tenants": model.max_tenants,
        "intervention_timeout_s": model.intervention_timeout_s,
        "recovery_evaluations": model.recovery_evaluations,
        "degraded_retry_s": model.degraded_retry_s,
        "entitlement_required": model.entitlement_required,
        "max_body_bytes": model.max_body_bytes,
        "default_variant": default_variant,
        "port": model.deploy.port,
        "replicas": model.deploy.replicas,
        "tenant_attribute_md": escape::md(&model.tenant_attribute),
        "doc": {
            "name": escape::doc_line(&model.name, &model.id),
            "description": escape::doc_line(&model.description, "No description in the spec."),
        },
        "lit": {
            "id": escape::rust_str(&model.id),
            "name": escape::rust_str(&model.name),
            "version": escape::rust_str(&model.version),
            "tenant_attribute": escape::rust_str(&model.tenant_attribute),
            "pubsub_audience": model.pubsub_audience.as_deref().map_or_else(|| "None".to_owned(), |a| format!("Some({})", escape::rust_str(a))),
        },
        "md": {
            "name": escape::md(&model.name),
            "description": escape::md(&model.description),
            "publisher": escape::md(&model.publisher),
        },
        "toml": { "description": escape::quoted(&escape::doc_line(&model.description, &model.name)) },
        "yaml": {
            "version": escape::quoted(&model.version),
            "description": escape::quoted(&model.description),
            "image_ref": escape::quoted(&format!("{}:{}", model.deploy.image, model.version)),
            "cpu": escape::quoted(&model.deploy.cpu),
            "memory": escape::quoted(&model.deploy.memory),
        },
        "containerfile": {
            "name": escape::containerfile(&model.name),
            "description": escape::containerfile(&model.description),
            "version": escape::containerfile(&model.version),
        },
    });
    Ok(json!({
        "sku": sku,
        "signals": signals,
        "actions": actions,
        "undo_pairs": undo_pairs,
        "profiles": profiles,
        "pieces": { "rule_match": rule_match(model)?.to_string() },
        "docs": {
            "thresholds": explain::thresholds_markdown(model),
            "fsm": explain::fsm_mermaid(model),
        },
    }))
}

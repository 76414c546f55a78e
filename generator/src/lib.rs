//! `ggen`: turns SKU specs into governor service crates.
//!
//! # Layout
//! - [`spec`]: the spec as written (serde types).
//! - [`load`]: reading spec files; JSON pointer → line:column.
//! - [`diagnostic`]: located problems (`FILE:LINE:COL: /pointer: message`).
//! - [`validate`]: JSON Schema + semantic rules (the only home of spec
//!   rules), every violation in one run; yields a [`validate::Checked`] spec.
//! - [`names`]: Rust identifiers from spec names.
//! - [`config`]: the project config, `ggen.toml`.
//! - [`init`]: starter specs.
//! - [`model`]: the resolved model (`lower`, from a checked spec; no rules of its own).
//! - [`view`]: the typed template context built from a model.
//! - [`render`]: Tera templates (embedded, overridable) → in-memory files.
//! - [`format`](mod@format): syn + prettyplease, `@generated` headers.
//! - [`digest`]: the SHA-256 hex digests ggen records.
//! - [`manifest`]: the `ggen-manifest.json` of a generated crate.
//! - [`owned`]: paths inside a crate folder, checked (no links, no `..`) and read bounded.
//! - [`plan`]: in-memory output vs disk vs previous manifest; diffs.
//! - [`write`](mod@write): atomic writes of changed files only.
//! - [`workspace`]: cargo workspace membership check.
//! - [`pipeline`]: the stages chained, one function per command.
//! - [`explain`]: thresholds tables and the FSM as Mermaid.
//! - [`escape`], [`canonical`]: text safe for each output language; canonical JSON.
//! - [`cli`]: the command line (the only module that prints).
#![warn(missing_docs)]

pub mod bundle;
pub mod canonical;
pub mod cli;
pub mod config;
pub mod diagnostic;
pub mod digest;
pub mod escape;
pub mod explain;
pub mod format;
pub mod init;
pub mod lab;
pub mod load;
pub mod manifest;
pub mod model;
pub mod names;
pub mod owned;
pub mod pack;
pub mod pipeline;
pub mod plan;
pub mod render;
pub mod sizing;
pub mod spec;
pub mod validate;
pub mod verify;
pub mod view;
pub mod workspace;
pub mod write;

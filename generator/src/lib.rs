//! `ggen`: turns SKU specs into governor service crates.
//!
//! # Layout
//! - [`spec`]: the spec as written (serde types).
//! - [`load`]: reading spec files; JSON pointer → line:column.
//! - [`diagnostic`]: located problems (`FILE:LINE:COL: /pointer: message`).
//! - [`validate`]: JSON Schema + semantic rules, every violation in one run.
//! - [`names`]: Rust identifiers from spec names.
//! - [`config`]: the project config, `ggen.toml`.
//! - [`init`]: starter specs.
pub mod config;
pub mod diagnostic;
pub mod init;
pub mod load;
pub mod names;
pub mod spec;
pub mod validate;

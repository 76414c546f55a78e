//! `ggen`: turns SKU specs into governor service crates.
//!
//! # Layout
//! - [`spec`]: the spec as written (serde types).
pub mod spec;

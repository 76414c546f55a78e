//! `ggen-runtime`: the service every ggen-generated governor links: the
//! HTTP ingress, the actuators and the binary's command line, on top of the
//! decision core `ggen-runtime-core` (whose modules it re-exports, so a generated
//! crate depends on this one crate).
//!
//! A request flows like this: [`ingress`] authenticates it from its headers
//! and takes an in-flight slot → the reading is classified ([`reading`]) and
//! applied to the [`registry`] (policy, FSM, a receipt appended to the
//! [`ledger`]) → the request waits until the receipt is durable → the
//! decided actions go to the [`actuator`] → the caller is acknowledged.
//!
//! # Layout
//! - [`ingress`]: the HTTP service (axum on hyper): routes, auth, metrics, `serve`.
//! - [`logging`]: log lines on stderr, text or JSON as Cloud Logging reads it.
//! - [`actuator`]: running dispatched actions (`log`, `webhook`, `command`) and the dispatcher.
//! - [`preflight`]: what `serve` checks before it starts (actions, Pub/Sub), and `serve --check`.
//! - [`pg`]: the PostgreSQL ledger, and `ledger copy` between ledgers.
//! - [`replay`]: the core's replay, plus replay with live actions.
//! - [`store`]: which ledger a command works on (`--ledger` or `--database-url`).
//! - [`cli`]: the command line of a generated governor binary.
//! - [`testing`]: end-to-end checks every generated crate's `tests/cli.rs` runs against its binary.
//! - re-exported from `ggen-runtime-core`: [`sku`], [`clock`], [`tenant`], [`policy`],
//!   [`fsm`], [`entitlement`], [`reading`], [`receipt`], [`canonical`],
//!   [`ledger`], [`registry`], [`signature`], [`report`].

#![warn(missing_docs)]

pub mod actuator;
pub mod archive;
pub mod cli;
pub mod ingress;
pub mod logging;
pub mod marketplace;
pub mod pg;
pub mod preflight;
pub mod replay;
pub mod store;
pub mod testing;
pub mod transparency;

pub use ggen_runtime_core::{
    audit, canonical, clock, entitlement, fsm, ledger, merkle, note, policy, reading, receipt,
    registry, report, signature, sku, tenant,
};

/// The global allocator every generated binary installs: the service
/// allocates small, short-lived buffers per request (bodies, receipts),
/// where mimalloc is markedly cheaper than the system allocator.
pub use mimalloc::MiMalloc;

/// This runtime's version (its `Cargo.toml` version; `ggen-runtime-core` is released
/// with the same one).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The interface level generated crates are written against (see
/// [`ggen_runtime_core::API_LEVEL`]); every generated `lib.rs` asserts it.
pub use ggen_runtime_core::API_LEVEL;

//! `ggen-runtime`: the library every ggen-generated governor links.
//!
//! A generated crate describes its SKU as static data ([`sku::Sku`]) and
//! implements [`sku::PolicyPack`] with exhaustive matches; this crate does the
//! rest. A signal flows through it like this:
//!
//! ingress → [`tenant`] registry (one governor per tenant) → [`policy`]
//! evaluates the value into a level → [`fsm::step`] decides the transition and
//! effects → a [`receipt`] is appended to the hash-chained [`ledger`] → the
//! caller is acknowledged once the receipt is durable.
//!
//! # Layout
//! - [`sku`]: the static SKU description and the `PolicyPack` trait.
//! - [`actuator`]: running dispatched actions (`log`, `webhook`, `command`) and the dispatcher.
//! - [`cli`]: the command line of a generated governor binary.
//! - [`clock`]: injected time (`Timestamp`).
//! - [`policy`]: levels, thresholds, hysteresis, dwell, cooldown, budget.
//! - [`fsm`]: the governor state machine, a pure `step`.
//! - [`entitlement`]: the marketplace entitlement state machine.
//! - [`reading`]: one classifier of incoming readings for every path.
//! - [`receipt`]: what a decision looks like on the ledger.
//! - [`report`]: an error and its causes, for logs and messages.
//! - [`signature`]: timestamped HMAC signatures (`X-Ggen-Signature`).
//! - [`replay`]: recorded signals (JSON Lines) through the live code path.
//! - [`canonical`]: RFC 8785 canonical JSON.
//! - [`ledger`]: per-tenant hash chains; `memory` and `file` backends.
//! - [`tenant`]: tenant ids and the sharded registry of governors.
//! - [`ingress`]: the HTTP service (axum): routes, auth, metrics, `serve`.

pub mod actuator;
pub mod canonical;
pub mod cli;
pub mod clock;
pub mod entitlement;
pub mod fsm;
pub mod ingress;
pub mod ledger;
pub mod policy;
pub mod reading;
pub mod receipt;
pub mod replay;
pub mod report;
pub mod signature;
pub mod sku;
pub mod tenant;
pub mod testing;

/// The global allocator every generated binary installs: the service
/// allocates small, short-lived buffers per request (bodies, receipts),
/// where mimalloc is markedly cheaper than the system allocator.
pub use mimalloc::MiMalloc;

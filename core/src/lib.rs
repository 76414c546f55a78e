//! `ggen-core`: the decision core of every ggen governor, with no async
//! runtime and no network: what a SKU is, how a reading becomes a decision,
//! and the hash-chained ledger that records it.
//!
//! A generated crate describes its SKU as static data ([`sku::Sku`]) and
//! implements [`sku::PolicyPack`]; a reading flows through this crate like
//! this: [`reading`] classifies it → the [`registry`] (one governor per
//! tenant) → [`policy`] evaluates the value into a level → [`fsm::step`]
//! decides the transition and effects → a [`receipt`] is appended to the
//! [`ledger`], whose ticket says when it is durable.
//!
//! The service (`ggen-runtime`: HTTP ingress, actuators, the binary's CLI)
//! sits on top and re-exports these modules; `ggen` uses this crate alone to
//! read the state machine, and an offline verifier needs nothing more.
//!
//! # Layout
//! - [`sku`]: the static SKU description and the `PolicyPack` trait.
//! - [`clock`]: injected time (`Timestamp`).
//! - [`tenant`]: validated tenant ids.
//! - [`policy`]: levels, thresholds, hysteresis, dwell, cooldown, budget.
//! - [`fsm`]: the governor state machine, a pure `step`, and its transition table.
//! - [`entitlement`]: the marketplace entitlement state machine.
//! - [`reading`]: one classifier of incoming readings for every path.
//! - [`receipt`]: what a decision looks like on the ledger.
//! - [`canonical`]: RFC 8785 canonical JSON.
//! - [`ledger`]: per-tenant hash chains; `memory` and `file` backends.
//! - [`registry`]: the sharded registry of per-tenant governors over a ledger.
//! - [`replay`]: recorded signals (JSON Lines) through the registry.
//! - [`signature`]: timestamped HMAC signatures (`X-Ggen-Signature`).
//! - [`report`]: an error and its causes, for logs and messages.

#![warn(missing_docs)]

pub mod canonical;
pub mod clock;
pub mod entitlement;
pub mod fsm;
pub mod ledger;
pub mod policy;
pub mod reading;
pub mod receipt;
pub mod registry;
pub mod replay;
pub mod report;
pub mod signature;
pub mod sku;
pub mod tenant;

//! Google Cloud Marketplace: the Partner Procurement API client and the
//! Google access tokens it authenticates with.
//!
//! Issue 15 in progress: the spec's `entitlement.marketplace` is compiled
//! into [`Sku::marketplace`](crate::sku::Sku::marketplace) and this client
//! is tested against a Procurement API and a token endpoint on loopback; the
//! `POST /marketplace/pubsub` route that will drive it from Marketplace
//! notifications is not built yet, so nothing in the service calls it.

pub mod procurement;
pub mod token;

pub use procurement::{Account, Approval, CallError, Entitlement, PROCUREMENT_URL, Procurement};
pub use token::{METADATA_TOKEN_URL, TokenError, Tokens};

//! Google Cloud Marketplace: the Partner Procurement API client, the Google
//! access tokens it authenticates with, and the retries its calls run under.
//!
//! `POST /marketplace/pubsub` ([`crate::ingress`]) drives them from
//! Marketplace notifications; what a notification decides is pure and
//! lives in the core ([`ggen_runtime_core::marketplace`], re-exported here).

pub mod procurement;
pub mod retry;
pub mod token;

pub use ggen_runtime_core::marketplace::{
    Call, EVENT_TYPES, MAX_FIELD, Notice, Planned, Read, bounded, decide, decide_account,
    known_event_type, state_of,
};
pub use procurement::{
    Account, Approval, CallError, Entitlement, PROCUREMENT_URL, Procurement, plain_id,
};
pub use retry::{Marketplace, Retry};
pub use token::{KeyFileError, METADATA_TOKEN_URL, TokenError, Tokens};

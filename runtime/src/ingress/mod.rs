//! The HTTP ingress of a governor service (axum on hyper).
//!
//! [`router`] builds the routes over an [`AppState`]; [`serve`] runs them on a
//! listener until a shutdown future resolves, then drains in-flight requests
//! up to a deadline. Tests drive [`router`] with `tower::ServiceExt::oneshot`
//! or bind port 0.
//!
//! | route | auth (checked from the headers, before a slot or the body) | answers |
//! |---|---|---|
//! | `POST /pubsub/push` | spec with a Pub/Sub audience: a verified OIDC token only (403 without a JWKS); else bearer | 204 once durable |
//! | `POST /v1/signals` | bearer | 204 (one) / 200 with per-item results (array) |
//! | `POST /v1/marketplace/events` | `X-Ggen-Signature` present and well-formed; its HMAC verified over the body in the handler | 204, 409 invalid transition |
//! | `GET /v1/tenants/{t}` | bearer | tenant view |
//! | `GET /v1/tenants/{t}/admit` | bearer | `{allow, state, reason}` |
//! | `GET /v1/tenants/{t}/receipts` | bearer | a page of receipts |
//! | `POST /v1/tenants/{t}/reset` | admin token | new state |
//! | `GET /v1/ledger/verify` | bearer | verify report |
//! | `GET /healthz`, `/readyz`, `/metrics` | none | probes |
//!
//! Every error is JSON `{"error", "detail"}` (see [`error`]). Every route but
//! the probes sits behind one admission layer per auth group (`shed`): the
//! credential is checked from the headers (401/403 at once, the body never
//! read), then the request takes an in-flight slot (503 when all are taken)
//! for at most the request timeout (408). Connections are capped, must send
//! their headers within the header-read timeout, and are dropped at the
//! shutdown deadline (`server`).
//!
//! # Layout
//! - [`state`]: shared state, health flags, handing actions to the actuator.
//! - [`auth`]: tokens, HMAC, OIDC, and which routes need which ([`auth::Guard`]).
//! - [`error`]: errors and their status codes.
//! - `body`: content type, size limit, JSON parsing.
//! - `signals`: `/v1/signals` and the signal path Pub/Sub shares.
//! - `pubsub`: the push envelope.
//! - `marketplace`: entitlement events.
//! - `tenants`: tenant reads, receipts, reset, ledger verify.
//! - `health`: probes, metrics, fallbacks.
//! - [`metrics`]: Prometheus series.
//! - `observe`: the outermost layer: requests counted by route and status
//!   class, authentication failures logged (rate-limited).
//! - `shed`: admission: header auth, the in-flight limit, the request deadline.
//! - `server`: connections: the cap, the header-read timeout, the shutdown deadline.
//! - [`service`]: the `serve` command: startup, signals, graceful shutdown.

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;

pub mod access;
pub mod auth;
mod body;
pub mod disk;
pub mod error;
mod health;
mod marketplace;
pub mod metrics;
pub mod notifications;
mod observe;
mod path;
mod pubsub;
mod server;
pub mod service;
mod shed;
mod signals;
pub mod state;
mod tenants;

use auth::Guard;

pub use auth::Auth;
pub use disk::MinFree;
pub use error::IngressError;
pub use state::{AppState, Options};

/// `GET /healthz`.
pub const HEALTHZ: &str = "/healthz";
/// `GET /readyz`.
pub const READYZ: &str = "/readyz";
/// `GET /metrics`.
pub const METRICS: &str = "/metrics";
/// `POST /v1/signals`.
pub const SIGNALS: &str = "/v1/signals";
/// `GET /v1/tenants/{tenant}`.
pub const TENANT: &str = "/v1/tenants/{tenant}";
/// `GET /v1/tenants/{tenant}/admit`.
pub const ADMIT: &str = "/v1/tenants/{tenant}/admit";
/// `GET /v1/tenants/{tenant}/receipts`.
pub const RECEIPTS: &str = "/v1/tenants/{tenant}/receipts";
/// `GET /v1/tenants/{tenant}/receipts/{seq}/proof`.
pub const PROOF: &str = "/v1/tenants/{tenant}/receipts/{seq}/proof";
/// `POST` (issue) and `GET` (list) `/v1/tenants/{tenant}/tokens`.
pub const TOKENS: &str = "/v1/tenants/{tenant}/tokens";
/// `DELETE /v1/tenants/{tenant}/tokens/{id}`.
pub const TOKEN: &str = "/v1/tenants/{tenant}/tokens/{id}";
/// `GET /v1/ledger/verify`.
pub const VERIFY: &str = "/v1/ledger/verify";
/// `POST /v1/tenants/{tenant}/reset`.
pub const RESET: &str = "/v1/tenants/{tenant}/reset";
/// `POST /pubsub/push`.
pub const PUSH: &str = "/pubsub/push";
/// `POST /v1/marketplace/events`.
pub const MARKETPLACE: &str = "/v1/marketplace/events";
/// `POST /marketplace/pubsub`.
pub const MARKETPLACE_PUSH: &str = "/marketplace/pubsub";

/// Every route template [`router`] serves, as metrics and logs name them
/// (a request no route matches is named `other`).
pub const ROUTES: [&str; 15] = [
    HEALTHZ,
    READYZ,
    METRICS,
    SIGNALS,
    TENANT,
    ADMIT,
    RECEIPTS,
    PROOF,
    VERIFY,
    RESET,
    TOKENS,
    TOKEN,
    PUSH,
    MARKETPLACE,
    MARKETPLACE_PUSH,
];

/// Every route of the service over `state`.
pub fn router(state: AppState) -> Router {
    let limit = state.registry().pack().sku().ingress.max_body_bytes;
    // Each group authenticates from the headers before it takes an
    // in-flight slot or reads a body (see `shed`).
    let admit = |guard| shed::ShedLayer::new(state.clone(), guard);
    let api = Router::new()
        .route(SIGNALS, post(signals::post))
        .route(TENANT, get(tenants::get))
        .route(ADMIT, get(tenants::admit))
        .route(VERIFY, get(tenants::verify))
        .route_layer(admit(Guard::Api));
    // A customer's read token opens these two, for its own tenant only.
    let reads = Router::new()
        .route(RECEIPTS, get(tenants::receipts))
        .route(PROOF, get(tenants::proof))
        .route_layer(admit(Guard::TenantRead));
    let admin = Router::new()
        .route(RESET, post(tenants::reset))
        .route(TOKENS, post(access::issue).get(access::list))
        .route(TOKEN, delete(access::revoke))
        .route_layer(admit(Guard::Admin));
    let pubsub = Router::new()
        .route(PUSH, post(pubsub::push))
        .route_layer(admit(Guard::PubSub));
    let marketplace = Router::new()
        .route(MARKETPLACE, post(marketplace::post))
        .route_layer(admit(Guard::Marketplace))
        .layer(DefaultBodyLimit::max(state.marketplace_max_body()));
    let notifications = Router::new()
        .route(MARKETPLACE_PUSH, post(notifications::push))
        .route_layer(admit(Guard::MarketplacePush))
        .layer(DefaultBodyLimit::max(notifications::MAX_BODY));
    Router::new()
        .route(HEALTHZ, get(health::healthz))
        .route(READYZ, get(health::readyz))
        .route(METRICS, get(health::metrics))
        .merge(api)
        .merge(reads)
        .merge(admin)
        .merge(pubsub)
        .merge(marketplace)
        .merge(notifications)
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        // Last, so outermost: it sees every answer, admission's refusals
        // (401/403/503/408) and the fallbacks' included.
        .layer(observe::ObserveLayer::new(state.clone()))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then stops
/// accepting and lets in-flight requests finish, dropping the connections
/// still open after the state's shutdown timeout (see `server` for the
/// connection cap and the header-read timeout).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Histogram samples pile up in the recorder until they are folded into
    // their buckets: do that on a timer, not only when /metrics is scraped.
    let upkeep = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(METRICS_UPKEEP);
            loop {
                every.tick().await;
                state.metrics().run_upkeep();
                // Logs a change of the disk's readiness even unprobed.
                let _ = state.disk_status();
            }
        })
    };
    let limits = server::Limits {
        max_connections: state.max_connections,
        header_read_timeout: state.header_read_timeout,
        shutdown_timeout: state.shutdown_timeout,
    };
    server::run(listener, router(state), limits, shutdown).await;
    upkeep.abort();
    Ok(())
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

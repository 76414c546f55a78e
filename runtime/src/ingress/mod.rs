//! The HTTP ingress of a governor service (axum).
//!
//! [`router`] builds the routes over an [`AppState`]; [`serve`] runs them on a
//! listener until a shutdown future resolves, then drains in-flight requests.
//! Tests drive [`router`] with `tower::ServiceExt::oneshot` or bind port 0.
//!
//! | route | auth | answers |
//! |---|---|---|
//! | `POST /pubsub/push` | bearer or Pub/Sub OIDC | 204 once durable |
//! | `POST /v1/signals` | bearer | 204 (one) / 200 with per-item results (array) |
//! | `POST /v1/marketplace/events` | `X-Ggen-Signature` HMAC | 204, 409 invalid transition |
//! | `GET /v1/tenants/{t}` | bearer | tenant view |
//! | `GET /v1/tenants/{t}/admit` | bearer | `{allow, state, reason}` |
//! | `GET /v1/tenants/{t}/receipts` | bearer | a page of receipts |
//! | `POST /v1/tenants/{t}/reset` | admin token | new state |
//! | `GET /v1/ledger/verify` | bearer | verify report |
//! | `GET /healthz`, `/readyz`, `/metrics` | none | probes |
//!
//! Every error is JSON `{"error", "detail"}` (see [`error`]); every route but
//! the probes is behind the in-flight limit (503 when it is full) and the
//! request timeout (408).
//!
//! # Layout
//! - [`state`]: shared state, health flags, handing actions to the actuator.
//! - [`auth`]: tokens, HMAC, OIDC.
//! - [`error`]: errors and their status codes.
//! - `body`: content type, size limit, JSON parsing.
//! - `signals`: `/v1/signals` and the signal path Pub/Sub shares.
//! - `pubsub`: the push envelope.
//! - `marketplace`: entitlement events.
//! - `tenants`: tenant reads, receipts, reset, ledger verify.
//! - `health`: probes, metrics, fallbacks.
//! - [`metrics`]: Prometheus series.
//! - `shed`: the in-flight limit and request deadline.
//! - [`service`]: the `serve` command: startup, signals, graceful shutdown.

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;

pub mod auth;
mod body;
pub mod error;
mod health;
mod marketplace;
pub mod metrics;
mod pubsub;
pub mod service;
mod shed;
mod signals;
pub mod state;
mod tenants;

pub use auth::Auth;
pub use error::IngressError;
pub use state::{AppState, Options};

/// Every route of the service over `state`.
pub fn router(state: AppState) -> Router {
    let limit = state.registry().pack().sku().ingress.max_body_bytes;
    let api = Router::new()
        .route("/pubsub/push", post(pubsub::push))
        .route("/v1/signals", post(signals::post))
        .route("/v1/marketplace/events", post(marketplace::post))
        .route("/v1/tenants/{tenant}", get(tenants::get))
        .route("/v1/tenants/{tenant}/admit", get(tenants::admit))
        .route("/v1/tenants/{tenant}/receipts", get(tenants::receipts))
        .route("/v1/tenants/{tenant}/reset", post(tenants::reset))
        .route("/v1/ledger/verify", get(tenants::verify))
        .route_layer(shed::ShedLayer::new(state.clone()));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(api)
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then stops
/// accepting and waits for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|stream| {
        // Acks are small and latency-bound: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
    });
    // Histogram samples pile up in the recorder until they are folded into
    // their buckets: do that on a timer, not only when /metrics is scraped.
    let upkeep = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(METRICS_UPKEEP);
            loop {
                every.tick().await;
                state.metrics().run_upkeep();
            }
        })
    };
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    upkeep.abort();
    served
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

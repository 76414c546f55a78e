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

use std::convert::Infallible;
use std::future::Future;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::handler::Handler;
use axum::response::Response;
use axum::routing::{MethodRouter, delete_service, get_service, post_service};
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceBuilder};

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
///
/// Each route is one service per method: its handler with the state, then
/// (inside out) admission (`shed`), the body limit and the counting of its
/// answers (`observe`), composed by `Compose` rather than added with
/// `Router::layer` or `route_layer`. Axum boxes a route again for each such
/// layer, and a request clones every box below the one it enters: three
/// layers that way cost each request 13 allocations more.
pub fn router(state: AppState) -> Router {
    let c = Compose {
        state: &state,
        limit: state.registry().pack().sku().ingress.max_body_bytes,
    };
    let api = Guard::Api;
    // A customer's read token opens receipts and proofs, for its own tenant only.
    let reads = Guard::TenantRead;
    let admin = Guard::Admin;
    let tokens = post_service(c.guarded(admin, access::issue));
    let tokens = tokens.get_service(c.guarded(admin, access::list));
    let token = delete_service(c.guarded(admin, access::revoke));
    let marketplace = c.guarded_within(
        state.marketplace_max_body(),
        Guard::Marketplace,
        marketplace::post,
    );
    let notifications = c.guarded_within(
        notifications::MAX_BODY,
        Guard::MarketplacePush,
        notifications::push,
    );
    Router::new()
        .route(HEALTHZ, c.probe(health::healthz))
        .route(READYZ, c.probe(health::readyz))
        .route(METRICS, c.probe(health::metrics))
        .route(SIGNALS, c.post(api, signals::post))
        .route(TENANT, c.get(api, tenants::get))
        .route(ADMIT, c.get(api, tenants::admit))
        .route(VERIFY, c.get(api, tenants::verify))
        .route(RECEIPTS, c.get(reads, tenants::receipts))
        .route(PROOF, c.get(reads, tenants::proof))
        .route(RESET, c.post(admin, tenants::reset))
        .route(TOKENS, c.methods(tokens))
        .route(TOKEN, c.methods(token))
        .route(PUSH, c.post(Guard::PubSub, pubsub::push))
        .route(MARKETPLACE, c.methods(post_service(marketplace)))
        .route(MARKETPLACE_PUSH, c.methods(post_service(notifications)))
        .fallback_service(c.observed(health::not_found))
}

/// A service of the router: a request in, an answer out, never an error.
trait Answers:
    Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Answers for S where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Puts handlers together with the state and the layers of their route.
struct Compose<'a> {
    state: &'a AppState,
    /// The SKU's `max_body_bytes`.
    limit: usize,
}

impl Compose<'_> {
    /// `GET` of an unauthenticated probe.
    fn probe<H: Handler<T, AppState>, T: 'static>(&self, handler: H) -> MethodRouter {
        self.methods(get_service(self.observed(handler)))
    }

    /// `GET` behind `guard` (see [`Compose::guarded`]).
    fn get<H: Handler<T, AppState>, T: 'static>(&self, guard: Guard, handler: H) -> MethodRouter {
        self.methods(get_service(self.guarded(guard, handler)))
    }

    /// `POST` behind `guard` (see [`Compose::guarded`]).
    fn post<H: Handler<T, AppState>, T: 'static>(&self, guard: Guard, handler: H) -> MethodRouter {
        self.methods(post_service(self.guarded(guard, handler)))
    }

    /// `route` answering 405 to the methods it lacks, counted like every answer.
    fn methods(&self, route: MethodRouter) -> MethodRouter {
        route.fallback_service(self.observed(health::method_not_allowed))
    }

    /// `handler` with its state, its answers counted (`observe`).
    fn observed<H: Handler<T, AppState>, T: 'static>(
        &self,
        handler: H,
    ) -> impl Answers + use<H, T> {
        observe::ObserveLayer::new(self.state.clone()).layer(handler.with_state(self.state.clone()))
    }

    /// `handler` with its state behind admission for `guard` (the
    /// credential checked from the headers before a slot is taken or the
    /// body read) and the SKU's body limit, its answers counted
    /// (`observe`), admission's refusals (401/403/503/408) included.
    fn guarded<H: Handler<T, AppState>, T: 'static>(
        &self,
        guard: Guard,
        handler: H,
    ) -> impl Answers + use<H, T> {
        self.guarded_within(self.limit, guard, handler)
    }

    /// [`Compose::guarded`] with a body limit of `max_body` bytes.
    fn guarded_within<H: Handler<T, AppState>, T: 'static>(
        &self,
        max_body: usize,
        guard: Guard,
        handler: H,
    ) -> impl Answers + use<H, T> {
        ServiceBuilder::new()
            .layer(observe::ObserveLayer::new(self.state.clone()))
            .layer(DefaultBodyLimit::max(max_body))
            .layer(shed::ShedLayer::new(self.state.clone(), guard))
            .service(handler.with_state(self.state.clone()))
    }
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

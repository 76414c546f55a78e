//! Unauthenticated probes and fallbacks: `GET /healthz`, `GET /readyz`,
//! `GET /metrics`, and the JSON 404 / 405 answers.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::IngressError;
use super::state::AppState;

/// `GET /healthz`: 200 while the process can serve; 503 once its ledger has
/// stopped (a failed write or sync, a database lost for good), which only a
/// restart undoes: the liveness probe then restarts the process, which
/// recovers from the ledger. Overload, a full disk (which passes once space
/// is freed) and shutdown do not fail it.
pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    match state.ledger_failure() {
        None => Json(json!({ "status": "ok" })).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "ledger_failed", "detail": why })),
        )
            .into_response(),
    }
}

/// `GET /readyz`: 200 once the ledger is recovered (the state exists only
/// after recovery) while the ledger works, its disk is neither full nor
/// under `--min-free`, and shutdown has not begun; 503 otherwise. Shedding
/// (a full in-flight limit) does not fail readiness.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    match state.not_ready() {
        None => {
            Json(json!({ "status": "ready", "tenants": state.registry().len() })).into_response()
        }
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "not_ready", "detail": why })),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let stored = state.stored_bytes().await;
    let text = state.metrics().render(
        state.registry(),
        state.actuator(),
        state.disk_status(),
        stored,
        state.not_ready().is_none(),
    );
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Any route not listed: 404 JSON.
pub(crate) async fn not_found(uri: Uri) -> IngressError {
    IngressError::NotFound {
        detail: format!(
            "no route `{}`",
            uri.path().chars().take(128).collect::<String>()
        ),
    }
}

/// A listed route with another method: 405 JSON.
pub(crate) async fn method_not_allowed(method: Method) -> IngressError {
    IngressError::MethodNotAllowed {
        method: method.as_str().chars().take(32).collect(),
    }
}

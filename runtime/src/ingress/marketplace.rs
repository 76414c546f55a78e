//! `POST /v1/marketplace/events`: signed entitlement events.
//!
//! Body `{"tenant":…,"event":…,"id":…,"at"?:…,"plan"?:…}` (at most
//! 16 KiB), signed with `X-Ggen-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "<t>." ‖ raw body>` keyed by `GOVERNOR_MARKETPLACE_SECRET`
//! (see [`crate::signature`]): the header's shape and `t` are checked before
//! the body is read, the HMAC before anything is parsed.
//! Answered 204 once the receipt is durable; an event that is not valid in
//! the tenant's entitlement state is receipted and answered 409; a repeated
//! `id` is a duplicate (204, no receipt).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::body;
use super::error::IngressError;
use super::signals;
use super::state::AppState;
use crate::entitlement::EntitlementEvent;
use crate::receipt::Input;

/// A marketplace event as posted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    tenant: String,
    event: String,
    id: String,
    at: Option<String>,
    plan: Option<String>,
}

/// `POST /v1/marketplace/events`.
pub(crate) async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, IngressError> {
    let raw = body::bytes(raw, state.marketplace_max_body())?;
    // The signature covers the raw bytes: check it before parsing anything.
    state.auth.marketplace(&headers, &raw)?;
    body::require_json(&headers)?;
    state.check_writable()?;
    let started = Instant::now();
    let event: EventBody = body::parse(&raw)?;
    signals::check_id(Some(&event.id))?;
    let tenant = signals::parse_tenant(&event.tenant)?;
    let observed = signals::parse_at(event.at.as_deref())?;
    let kind: EntitlementEvent = event
        .event
        .parse()
        .map_err(|e: crate::entitlement::EntitlementError| IngressError::bad(e.to_string()))?;
    let pack = state.registry.pack();
    let plan = match event.plan.as_deref() {
        None => None,
        Some(name) => Some(pack.profile_by_name(name).ok_or_else(|| {
            IngressError::bad(format!(
                "unknown plan `{}`",
                name.chars().take(64).collect::<String>()
            ))
        })?),
    };
    let input = Input::Entitlement {
        event: kind,
        id: Some(event.id),
        plan,
        observed,
        marketplace: None,
    };
    let applied = state.decide(&tenant, input, started).await?;
    match applied.refused {
        Some(refused) => Err(IngressError::Conflict {
            detail: refused.to_string(),
        }),
        None => Ok(StatusCode::NO_CONTENT),
    }
}

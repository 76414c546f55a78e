//! `POST /v1/signals` and the signal path shared with Pub/Sub push.
//!
//! A signal is applied to the registry (which appends its receipt), then the
//! request waits for the receipt to be durable (group commit: concurrent
//! requests share one fdatasync), then the decided actions are dispatched,
//! then the request is acknowledged. Input refused after authentication for
//! a valid tenant (unknown signal, non-numeric or out-of-range value) is
//! receipted as `rejected` and answered 400 once that receipt is durable.
//!
//! A body is one signal object (answered 204) or an array of them (answered
//! 200 with one result per item, in order: `{"status":204}` or
//! `{"status":400,"error":…,"detail":…}`); a batch is refused as a whole only
//! when the body itself is bad or the ledger fails.

use std::borrow::Cow;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::body;
use super::error::IngressError;
use super::metrics::SignalOutcome;
use super::state::AppState;
use crate::clock::Timestamp;
use crate::reading;
use crate::receipt::{Input, Via};
use crate::registry::Applied;
use crate::tenant::TenantId;

/// Longest accepted dedupe id, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// One signal as `POST /v1/signals` takes it (its strings borrowed from
/// the body unless they hold escapes).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalBody<'a> {
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    signal: Cow<'a, str>,
    value: serde_json::Value,
    #[serde(borrow)]
    at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
}

/// A signal whose tenant, time and id are valid, from either route.
#[derive(Debug)]
pub(crate) struct Reading<'a> {
    /// The tenant.
    pub(crate) tenant: TenantId,
    /// The signal name as sent.
    pub(crate) signal: Cow<'a, str>,
    /// The value as sent (checked here).
    pub(crate) value: serde_json::Value,
    /// When the sender says it was measured (recorded, never decided on).
    pub(crate) observed: Option<Timestamp>,
    /// Dedupe id.
    pub(crate) id: Option<Cow<'a, str>>,
    /// The door it came in by (ids are deduplicated per door).
    pub(crate) via: Via,
}

/// A signal applied to the registry whose receipt may not be durable yet.
#[derive(Debug)]
pub(crate) struct Pending {
    tenant: TenantId,
    /// Kept to decide again if a shared ledger refuses the decision.
    input: Input,
    applied: Applied,
    started: Instant,
    /// Set when the signal was receipted as `rejected`.
    refusal: Option<IngressError>,
}

/// Parses an optional RFC 3339 time.
pub(crate) fn parse_at(at: Option<&str>) -> Result<Option<Timestamp>, IngressError> {
    at.map(|text| Timestamp::parse(text).map_err(|e| IngressError::bad(e.to_string())))
        .transpose()
}

/// Validates a tenant id from input.
pub(crate) fn parse_tenant(text: &str) -> Result<TenantId, IngressError> {
    TenantId::new(text).map_err(|e| IngressError::bad(e.to_string()))
}

/// Validates a dedupe id's length: not empty (every later input with the
/// same empty id would be dropped as its duplicate), at most
/// [`MAX_ID_BYTES`].
pub(crate) fn check_id(id: Option<&str>) -> Result<(), IngressError> {
    match id {
        Some("") => Err(IngressError::bad(
            "`id` is empty: leave it out, or send an id that names this input".to_owned(),
        )),
        Some(id) if id.len() > MAX_ID_BYTES => Err(IngressError::bad(format!(
            "`id` is `{}` bytes long; at most `{MAX_ID_BYTES}` allowed",
            id.len()
        ))),
        _ => Ok(()),
    }
}

/// Applies one reading (appending its receipt); does not wait for durability.
pub(crate) fn apply(state: &AppState, reading: Reading<'_>) -> Result<Pending, IngressError> {
    let started = Instant::now();
    let registry = &state.registry;
    let classified = reading::classify(
        registry.pack(),
        &reading::Reading {
            signal: &reading.signal,
            value: &reading.value,
            id: reading.id.as_deref(),
            observed: reading.observed,
            via: reading.via,
        },
    );
    let signal = classified.signal;
    let refusal = classified
        .rejected
        .map(|reason| IngressError::Rejected { reason });
    let input = classified.input;
    // Decided on the server's clock: a sender's `at` must not move
    // cooldowns, budgets or timers (it is recorded as `observed_at`).
    let applied = registry
        .apply(&reading.tenant, input.clone(), Timestamp::now())
        .map_err(|e| state.registry_error(e))?;
    let metrics = &state.metrics;
    if refusal.is_some() {
        metrics.signal(signal, SignalOutcome::Rejected);
    } else if applied.duplicate {
        metrics.signal(signal, SignalOutcome::Duplicate);
    } else {
        metrics.signal(signal, SignalOutcome::Accepted);
        metrics.decision(applied.level);
    }
    Ok(Pending {
        tenant: reading.tenant,
        input,
        applied,
        started,
        refusal,
    })
}

/// Waits for the receipt to be durable, dispatches its actions, and returns
/// the refusal (if the reading was receipted as `rejected`).
pub(crate) async fn finish(state: &AppState, pending: Pending) -> Result<(), IngressError> {
    let Pending {
        tenant,
        input,
        applied,
        started,
        refusal,
    } = pending;
    state.settle_input(&tenant, input, applied, started).await?;
    refusal.map_or(Ok(()), Err)
}

/// Turns one `/v1/signals` item into a reading.
fn reading(item: SignalBody<'_>) -> Result<Reading<'_>, IngressError> {
    check_id(item.id.as_deref())?;
    Ok(Reading {
        tenant: parse_tenant(&item.tenant)?,
        observed: parse_at(item.at.as_deref())?,
        signal: item.signal,
        value: item.value,
        id: item.id,
        via: Via::Api,
    })
}

/// `POST /v1/signals`.
pub(crate) async fn post(
    State(state): State<AppState>,
    body::JsonBytes(raw): body::JsonBytes,
) -> Result<Response, IngressError> {
    state.check_writable()?;
    let batch = raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if batch {
        let items: Vec<serde_json::Value> = body::parse(&raw)?;
        {
            if items.len() > state.max_batch {
                return Err(IngressError::bad(format!(
                    "batch of `{}` signals; at most `{}` allowed",
                    items.len(),
                    state.max_batch
                )));
            }
            // Apply everything first so the whole batch shares one sync.
            let mut pending = Vec::with_capacity(items.len());
            for item in items {
                let item = SignalBody::deserialize(&item).map_err(IngressError::from);
                pending.push(item.and_then(reading).and_then(|r| apply(&state, r)));
            }
            let mut results = Vec::with_capacity(pending.len());
            for item in pending {
                let outcome = match item {
                    Ok(p) => finish(&state, p).await,
                    Err(e) => Err(e),
                };
                results.push(match outcome {
                    Ok(()) => serde_json::json!({ "status": 204 }),
                    Err(e @ (IngressError::Unavailable { .. } | IngressError::Internal { .. })) => {
                        return Err(e);
                    }
                    Err(e) => {
                        let mut body = e.to_json();
                        body["status"] = e.status().as_u16().into();
                        body
                    }
                });
            }
            Ok(axum::Json(serde_json::json!({ "results": results })).into_response())
        }
    } else {
        let pending = apply(&state, reading(body::parse(&raw)?)?)?;
        finish(&state, pending).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

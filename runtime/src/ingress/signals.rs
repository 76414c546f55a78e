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

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::body;
use super::error::IngressError;
use super::metrics::SignalOutcome;
use super::state::AppState;
use crate::clock::Timestamp;
use crate::receipt::{Input, decimal};
use crate::sku::SignalId;
use crate::tenant::{Applied, TenantId};

/// Longest accepted dedupe id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest signal name quoted back in receipts and errors, in characters.
const MAX_QUOTED: usize = 128;

/// One signal as `POST /v1/signals` takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalBody {
    tenant: String,
    signal: String,
    value: serde_json::Value,
    at: Option<String>,
    id: Option<String>,
}

/// A signal whose tenant, time and id are valid, from either route.
#[derive(Debug)]
pub(crate) struct Reading {
    /// The tenant.
    pub(crate) tenant: TenantId,
    /// The signal name as sent.
    pub(crate) signal: String,
    /// The value as sent (checked here).
    pub(crate) value: serde_json::Value,
    /// When it was measured.
    pub(crate) at: Timestamp,
    /// Dedupe id.
    pub(crate) id: Option<String>,
}

/// A signal applied to the registry whose receipt may not be durable yet.
#[derive(Debug)]
pub(crate) struct Pending {
    applied: Applied,
    started: Instant,
    /// Set when the signal was receipted as `rejected`.
    refusal: Option<IngressError>,
}

/// Parses an optional RFC 3339 time; `default` when absent.
pub(crate) fn parse_at(at: Option<&str>, default: Timestamp) -> Result<Timestamp, IngressError> {
    match at {
        None => Ok(default),
        Some(text) => Timestamp::parse(text).map_err(|e| IngressError::bad(e.to_string())),
    }
}

/// Validates a tenant id from input.
pub(crate) fn parse_tenant(text: &str) -> Result<TenantId, IngressError> {
    TenantId::new(text).map_err(|e| IngressError::bad(e.to_string()))
}

/// Validates a dedupe id's length.
pub(crate) fn check_id(id: Option<&str>) -> Result<(), IngressError> {
    match id {
        Some(id) if id.len() > MAX_ID_BYTES => Err(IngressError::bad(format!(
            "`id` is `{}` bytes long; at most `{MAX_ID_BYTES}` allowed",
            id.len()
        ))),
        _ => Ok(()),
    }
}

fn quoted(text: &str) -> String {
    text.chars().take(MAX_QUOTED).collect()
}

/// What a reading means to the SKU: a signal input, or why it is rejected.
fn classify(state: &AppState, reading: &Reading) -> Result<(SignalId, f64), String> {
    let pack = state.registry.pack();
    let Some(signal) = pack.signal_by_name(&reading.signal) else {
        return Err(format!("unknown signal `{}`", quoted(&reading.signal)));
    };
    let def = pack.sku().signal(signal);
    let Some(value) = reading.value.as_f64() else {
        return Err(format!("value of signal `{}` is not a number", def.name));
    };
    if !def.accepts(value) {
        return Err(format!(
            "value `{}` is out of range for signal `{}`",
            decimal(value),
            def.name
        ));
    }
    Ok((signal, value))
}

/// The `rejected` receipt's record of what came in (no floats: decimals as strings).
fn rejected_event(reading: &Reading) -> serde_json::Value {
    let value = match &reading.value {
        serde_json::Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), decimal),
        other => quoted(&other.to_string()),
    };
    let mut event = serde_json::Map::new();
    event.insert("signal".into(), quoted(&reading.signal).into());
    event.insert("value".into(), value.into());
    if let Some(id) = &reading.id {
        event.insert("id".into(), id.clone().into());
    }
    event.into()
}

/// Applies one reading (appending its receipt); does not wait for durability.
pub(crate) fn apply(state: &AppState, reading: Reading) -> Result<Pending, IngressError> {
    let started = Instant::now();
    let registry = &state.registry;
    let (input, signal, refusal) = match classify(state, &reading) {
        Ok((signal, value)) => (
            Input::Signal {
                signal,
                value,
                id: reading.id.clone(),
            },
            Some(signal),
            None,
        ),
        Err(reason) => {
            let signal = registry.pack().signal_by_name(&reading.signal);
            let input = Input::Rejected {
                reason: reason.clone(),
                event: rejected_event(&reading),
            };
            (input, signal, Some(IngressError::Rejected { reason }))
        }
    };
    let applied = registry
        .apply(&reading.tenant, input, reading.at)
        .map_err(|e| state.registry_error(e))?;
    let metrics = &state.metrics;
    if refusal.is_some() {
        metrics.signal(signal, SignalOutcome::Rejected);
    } else if applied.duplicate {
        metrics.signal(signal, SignalOutcome::Duplicate);
    } else {
        metrics.signal(signal, SignalOutcome::Accepted);
        metrics.decision(applied.level);
        metrics.transition(applied.from, applied.state);
    }
    Ok(Pending {
        applied,
        started,
        refusal,
    })
}

/// Waits for the receipt to be durable, dispatches its actions, and returns
/// the refusal (if the reading was receipted as `rejected`).
pub(crate) async fn finish(state: &AppState, pending: Pending) -> Result<(), IngressError> {
    let Pending {
        mut applied,
        started,
        refusal,
    } = pending;
    state.durable(applied.ticket.take(), started).await?;
    state.dispatch(&mut applied);
    refusal.map_or(Ok(()), Err)
}

/// Turns one `/v1/signals` item into a reading.
fn reading(item: SignalBody, now: Timestamp) -> Result<Reading, IngressError> {
    check_id(item.id.as_deref())?;
    Ok(Reading {
        tenant: parse_tenant(&item.tenant)?,
        at: parse_at(item.at.as_deref(), now)?,
        signal: item.signal,
        value: item.value,
        id: item.id,
    })
}

/// `POST /v1/signals`.
pub(crate) async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, IngressError> {
    body::require_json(&headers)?;
    let raw = body::bytes(raw, state.registry.pack().sku().ingress.max_body_bytes)?;
    state.check_writable()?;
    let now = Timestamp::now();
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
                let item = serde_json::from_value(item).map_err(IngressError::from);
                pending.push(
                    item.and_then(|i| reading(i, now))
                        .and_then(|r| apply(&state, r)),
                );
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
        let pending = apply(&state, reading(body::parse(&raw)?, now)?)?;
        finish(&state, pending).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

//! Operator and client reads of tenants, resets, and ledger verification:
//! `GET /v1/tenants/{t}`, `GET /v1/tenants/{t}/admit`,
//! `GET /v1/tenants/{t}/receipts?after=SEQ&limit=N`,
//! `GET /v1/tenants/{t}/receipts/{seq}/proof?size=N`,
//! `POST /v1/tenants/{t}/reset`, `GET /v1/ledger/verify`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::access::Reader;
use super::body;
use super::error::IngressError;
use super::path::Params;
use super::signals;
use super::state::AppState;
use crate::ledger::{LedgerError, Record, VerifyReport};
use crate::receipt::Input;
use crate::registry::TenantView;
use crate::tenant::TenantId;

/// Receipts returned per page when `limit` is absent.
pub const DEFAULT_PAGE: usize = 100;
/// Largest page of receipts.
pub const MAX_PAGE: usize = 1000;

fn tenant_json(view: &TenantView, receipt: Option<serde_json::Value>) -> serde_json::Value {
    let in_flight: Vec<_> = view
        .in_flight
        .iter()
        .map(|f| {
            json!({
                "action": f.action,
                "idempotency_key": f.idempotency_key,
                "confirmed": f.confirmed,
            })
        })
        .collect();
    json!({
        "tenant": view.tenant.as_str(),
        "state": view.state.name(),
        "entitlement": view.entitlement.as_str(),
        "profile": view.profile,
        "level": view.level.as_str(),
        "in_flight": in_flight,
        "seq": view.seq,
        "hash": view.hash,
        "last_receipt": receipt,
    })
}

pub(super) fn unknown(tenant: &TenantId) -> IngressError {
    IngressError::NotFound {
        detail: format!("unknown tenant `{tenant}`"),
    }
}

/// Reads `tenant`'s receipts after `after` on a blocking thread: a read may
/// wait for the writer's next sync and reads files, which must not stall the
/// async workers.
async fn read_off_workers(
    state: &AppState,
    tenant: &TenantId,
    after: u64,
    limit: usize,
) -> Result<Vec<Record>, IngressError> {
    let registry = Arc::clone(state.registry());
    let reader = tenant.clone();
    tokio::task::spawn_blocking(move || registry.ledger().read(&reader, after, limit))
        .await?
        .map_err(|e| IngressError::unavailable(&e))
}

/// `GET /v1/tenants/{t}`: state, entitlement, in-flight actions, last receipt.
pub(crate) async fn get(
    State(state): State<AppState>,
    Params(tenant): Params<String>,
) -> Result<Json<serde_json::Value>, IngressError> {
    let tenant = signals::parse_tenant(&tenant)?;
    let view = state
        .registry
        .view(&tenant)
        .ok_or_else(|| unknown(&tenant))?;
    let last = match view.seq {
        0 => None,
        seq => read_off_workers(&state, &tenant, seq - 1, 1)
            .await?
            .first()
            .map(|r| serde_json::from_slice(&r.bytes))
            .transpose()
            .map_err(|e| IngressError::Internal {
                detail: format!("stored receipt is not json: {e}"),
            })?,
    };
    Ok(Json(tenant_json(&view, last)))
}

/// `GET /v1/tenants/{t}/admit`: `{allow, state, reason}`.
pub(crate) async fn admit(
    State(state): State<AppState>,
    Params(tenant): Params<String>,
) -> Result<Json<serde_json::Value>, IngressError> {
    let tenant = signals::parse_tenant(&tenant)?;
    let admission = state.registry.admit(&tenant);
    Ok(Json(json!({
        "allow": admission.allow,
        "state": admission.state,
        "reason": admission.reason,
    })))
}

/// Query of the receipts page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/tenants/{t}/receipts?after=SEQ&limit=N`: stored receipts in seq
/// order, as stored (canonical JSON), with `next_after` for the next page.
pub(crate) async fn receipts(
    _reader: Reader,
    State(state): State<AppState>,
    Params(tenant): Params<String>,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<Response, IngressError> {
    let tenant = signals::parse_tenant(&tenant)?;
    let Query(page) = query.map_err(|e| IngressError::bad(e.body_text()))?;
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(IngressError::bad(format!(
            "`limit` must be between 1 and `{MAX_PAGE}`, got `{limit}`"
        )));
    }
    if state.registry.view(&tenant).is_none() {
        return Err(unknown(&tenant));
    }
    let after = page.after.unwrap_or(0);
    let records = read_off_workers(&state, &tenant, after, limit).await?;
    // The stored bytes are canonical JSON: splice them in as they are.
    let mut out = format!(r#"{{"tenant":"{}","receipts":["#, tenant.as_str());
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"seq":{},"hash":"{}","receipt":"#,
            record.seq,
            hex::encode(record.hash)
        );
        out.push_str(&String::from_utf8_lossy(&record.bytes));
        out.push('}');
    }
    let next = records.last().map_or(after, |r| r.seq);
    let _ = write!(out, r#"],"next_after":{next}}}"#);
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Body of a reset (optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    reason: Option<String>,
}

/// `POST /v1/tenants/{t}/reset`: back to stable, receipted (the admin
/// token is checked by the route's admission layer).
pub(crate) async fn reset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(tenant): Params<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, IngressError> {
    let raw = body::bytes(raw, state.registry.pack().sku().ingress.max_body_bytes)?;
    let reason = if raw.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        body::require_json(&headers)?;
        body::parse::<ResetBody>(&raw)?.reason
    };
    state.check_writable()?;
    let tenant = signals::parse_tenant(&tenant)?;
    if state.registry.view(&tenant).is_none() {
        return Err(unknown(&tenant));
    }
    let started = Instant::now();
    let reason = reason
        .unwrap_or_else(|| "operator reset".to_owned())
        .chars()
        .take(256)
        .collect();
    let applied = state
        .decide(&tenant, Input::Reset { reason }, started)
        .await?;
    Ok(Json(json!({
        "tenant": tenant.as_str(),
        "state": applied.state.name(),
        "seq": applied.last_seq,
    })))
}

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `GET /v1/ledger/verify`: replays every chain and judges the checkpoint
/// against them; `ok` is false (still 200) when a receipt does not verify
/// (`first_bad` names the first) or the checkpoint contradicts the chains
/// (`checkpoint` names the first tenant it is wrong about).
///
/// Runs on a blocking thread, and stops at the next record once this
/// handler is dropped (its request timed out, or the client went away).
pub(crate) async fn verify(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, IngressError> {
    // One verification at a time: each reads the whole ledger, and the
    // blocking threads it runs on also serve receipt reads and flushes.
    let _one = state.verifying().map_err(|_| IngressError::Busy {
        detail: "a ledger verification is already running; retry when it is done".to_owned(),
    })?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(Arc::clone(&cancel));
    let report = verify_ledger(&state, cancel).await?;
    let first_bad = report
        .first_bad
        .as_ref()
        .map(|bad| json!({ "tenant": bad.tenant, "seq": bad.seq, "reason": bad.reason }));
    let checkpoint = report
        .checkpoint
        .as_ref()
        .map(|problem| json!({ "tenant": problem.tenant, "reason": problem.reason }));
    let ok = first_bad.is_none() && checkpoint.is_none();
    Ok(Json(json!({
        "ok": ok,
        "tenants": report.tenants,
        "receipts": report.receipts,
        "first_bad": first_bad,
        "checkpoint": checkpoint,
    })))
}

/// Verifies the whole ledger on a blocking thread (the caller holds the
/// verification slot, [`AppState::verifying`]); stops at the next record
/// once `cancel` is set. The run is counted in the metrics, and a problem
/// found is logged at ERROR.
pub(crate) async fn verify_ledger(
    state: &AppState,
    cancel: Arc<AtomicBool>,
) -> Result<VerifyReport, IngressError> {
    let registry = Arc::clone(state.registry());
    let result = tokio::task::spawn_blocking(move || registry.verify(Some(&cancel))).await?;
    let report = match result {
        Ok(report) => report,
        // Stopped on purpose: neither a pass nor a failure.
        Err(error @ LedgerError::Cancelled { .. }) => {
            return Err(IngressError::unavailable(&error));
        }
        Err(error) => {
            state.metrics().verified(false, None);
            tracing::error!(error = %error, "ledger verification could not complete");
            return Err(IngressError::unavailable(&error));
        }
    };
    let ok = report.first_bad.is_none() && report.checkpoint.is_none();
    state
        .metrics()
        .verified(ok, Some(std::time::SystemTime::now()));
    if ok {
        tracing::info!(
            tenants = report.tenants,
            receipts = report.receipts,
            "ledger verified"
        );
    } else {
        tracing::error!(
            first_bad_tenant = report.first_bad.as_ref().map(|bad| bad.tenant.as_str()),
            first_bad_seq = report.first_bad.as_ref().map(|bad| bad.seq),
            checkpoint_tenant = report.checkpoint.as_ref().map(|p| p.tenant.as_str()),
            "ledger verification failed"
        );
    }
    Ok(report)
}

/// Query of `GET /v1/tenants/{t}/receipts/{seq}/proof`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProofQuery {
    /// The tree size to prove against (a checkpoint the client holds);
    /// default the latest signed checkpoint's.
    size: Option<u64>,
}

/// `GET /v1/tenants/{t}/receipts/{seq}/proof[?size=N]`: the receipt's
/// exact bytes, its inclusion proof (RFC 9162) and the signed checkpoint
/// it is proved against, for `ggen verify-receipt`.
pub(crate) async fn proof(
    _reader: Reader,
    State(state): State<AppState>,
    Params((tenant, seq)): Params<(String, String)>,
    query: Result<Query<ProofQuery>, QueryRejection>,
) -> Result<Response, IngressError> {
    let tenant = signals::parse_tenant(&tenant)?;
    let seq = Some(seq.as_str())
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0'))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| IngressError::bad("the receipt's seq must be a whole number from 1"))?;
    let Query(query) = query.map_err(|e| IngressError::bad(e.body_text()))?;
    let Some(publisher) = state.transparency.clone() else {
        return Err(IngressError::Conflict {
            detail: "this governor signs no checkpoints (start it with `--checkpoint-key` and `--publish-checkpoints`): no proofs".to_owned(),
        });
    };
    let latest = publisher.latest();
    let signed = latest.as_ref().map(|l| l.size);
    let ledger = Arc::clone(state.registry().ledger());
    let reader = tenant.clone();
    // One trip to a blocking thread: the lookups and the proof read files
    // or the database.
    let (index, size, record, hashes) = tokio::task::spawn_blocking(move || {
        let unavailable = |e: LedgerError| IngressError::unavailable(&e);
        let missing = || IngressError::NotFound {
            detail: format!(
                "tenant `{reader}` has no receipt {seq} here (archived receipts have no proof over HTTP)"
            ),
        };
        let tree = ledger.tree().ok_or_else(missing)?;
        // What the tree holds now (never extended by a request); a tree
        // that failed answers here (503), not as an empty one.
        let tree_size = tree.stored_size().map_err(unavailable)?;
        let index = tree.leaf_index(&reader, seq).map_err(unavailable)?.ok_or_else(missing)?;
        let record = ledger
            .read(&reader, seq - 1, 1)
            .map_err(unavailable)?
            .pop()
            .ok_or_else(missing)?;
        let size = query.size.or(signed).ok_or_else(|| IngressError::Conflict {
            detail: "no checkpoint has been signed yet: retry shortly".to_owned(),
        })?;
        if size == 0 {
            return Err(IngressError::bad("`size` must be a tree size from 1"));
        }
        if size > tree_size {
            return Err(IngressError::bad(format!(
                "`size` {size} is past the tree's {tree_size} receipts"
            )));
        }
        if index >= size {
            return Err(IngressError::Conflict {
                detail: format!(
                    "receipt {seq} is leaf {index}, after the checkpoint of {size} receipts: retry once the next checkpoint is signed"
                ),
            });
        }
        let hashes = tree
            .inclusion_proof(index, size)
            .map_err(|e| IngressError::unavailable(&e))?;
        Ok((index, size, record, hashes))
    })
    .await??;
    let checkpoint = latest.filter(|l| l.size == size).map(|l| l.note);
    let body = json!({
        "tenant": tenant.as_str(),
        "seq": seq,
        // The exact bytes the leaf hashes, as a string: `jq -j .receipt`.
        "receipt": String::from_utf8_lossy(&record.bytes),
        "proof": {
            "leaf_index": index,
            "tree_size": size,
            "hashes": hashes.iter().map(hex::encode).collect::<Vec<_>>(),
        },
        "checkpoint": checkpoint,
    });
    Ok(Json(body).into_response())
}

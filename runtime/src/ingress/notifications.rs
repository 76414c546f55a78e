//! `POST /marketplace/pubsub`: Google Cloud Marketplace notifications,
//! pushed by a Pub/Sub subscription on the provider's Marketplace topic.
//!
//! The push envelope is `/pubsub/push`'s; `message.data` decodes to
//! `{"eventId", "eventType", "providerId", "entitlement": {"id", …}}` or
//! `{…, "account": {"id", …}}`. The route is authenticated (before the body
//! is read) with an OIDC token for the Marketplace audience and service
//! accounts, apart from `/pubsub/push`'s.
//!
//! Handling one notification:
//! 1. A type Google does not document, or another provider's id, is
//!    receipted as rejected on the `marketplace` chain and acknowledged;
//!    so is an entitlement of another product (when the spec names its
//!    `product`), once read.
//! 2. The entitlement (or account) is read from the Procurement API: the
//!    notification is a hint, the read state the truth, so late, repeated
//!    or reordered notifications converge. The tenant is the entitlement's
//!    account. A read that fails for now is answered 503 (nothing written:
//!    Pub/Sub redelivers later); an entitlement that is gone (404) is
//!    receipted on the `marketplace` chain.
//! 3. A redelivered `eventId` (inside the dedupe window) is acknowledged
//!    with no further effect.
//! 4. With `auto_approve`, the call [`decide`] names runs (approve, reject,
//!    approve or reject a plan change, approve the account's sign-up),
//!    retried on transient failures; if it keeps failing transiently, 503
//!    and nothing written, so the redelivery tries again.
//! 5. The notification is applied to the tenant's entitlement (an
//!    `entitlement` receipt carrying `event.marketplace`), then the call's
//!    outcome as a `procurement` receipt whose key names it; 204 once both
//!    are durable.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::body;
use super::error::{AuthReason, IngressError};
use super::metrics::{CallOutcome, NotificationOutcome};
use super::pubsub::{Envelope, decode_bytes};
use super::signals;
use super::state::AppState;
use crate::entitlement::EntitlementEvent;
use crate::marketplace::{
    Account, CallError, Marketplace, Notice, Planned, bounded, decide, decide_account,
    known_event_type, plain_id, state_of,
};
use crate::receipt::Input;
use crate::sku::MarketplaceDef;
use crate::tenant::TenantId;

/// The chain notifications that belong to no tenant are receipted on.
pub const CHAIN: &str = "marketplace";

/// The largest notification envelope read (they are a few hundred bytes).
pub const MAX_BODY: usize = 16 * 1024;

/// A Marketplace notification (unknown fields are ignored: Google adds some).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    event_id: String,
    event_type: Option<String>,
    provider_id: Option<String>,
    entitlement: Option<Subject>,
    account: Option<Subject>,
}

/// `entitlement` or `account` of a notification.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subject {
    id: String,
    update_time: Option<String>,
}

/// What became of a notification (for the metrics).
type Handled = Result<NotificationOutcome, IngressError>;

/// `POST /marketplace/pubsub`.
pub(crate) async fn push(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, IngressError> {
    match handle(&state, &headers, raw).await {
        Ok(outcome) => {
            state.metrics().notification(outcome);
            Ok(StatusCode::NO_CONTENT)
        }
        Err(error) => {
            if matches!(error, IngressError::Upstream { .. }) {
                state
                    .metrics()
                    .notification(NotificationOutcome::Unavailable);
            }
            Err(error)
        }
    }
}

/// Handles one push (see the module's documentation).
async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Handled {
    let sku = state.registry.pack().sku();
    let Some(def) = sku.marketplace.as_ref() else {
        return Err(IngressError::Forbidden {
            reason: AuthReason::Disabled,
            detail: "`/marketplace/pubsub` is disabled: the spec has no `entitlement.marketplace` section".to_owned(),
        });
    };
    body::require_json(headers)?;
    let raw = body::bytes(raw, MAX_BODY)?;
    state.check_writable()?;
    let started = Instant::now();
    let envelope: Envelope = body::parse(&raw)?;
    let published = signals::parse_at(envelope.message.publish_time())?;
    let data = envelope
        .message
        .data
        .as_deref()
        .ok_or_else(|| IngressError::bad("`message.data` is missing"))?;
    let data = decode_bytes(data)?;
    let notification: Notification =
        serde_json::from_slice(&data).map_err(|e| IngressError::BadJson {
            detail: format!("`message.data` is not a marketplace notification: {e}"),
        })?;
    signals::check_id(Some(&notification.event_id))?;
    if notification.event_id.is_empty() {
        return Err(IngressError::bad("`eventId` is empty"));
    }
    let Some(client) = state.marketplace() else {
        return Err(IngressError::Upstream {
            detail: "no Procurement API client is configured".to_owned(),
        });
    };
    let event_type = notification.event_type.as_deref().unwrap_or("");
    if !event_type.is_empty() && !known_event_type(event_type) {
        let reason = format!(
            "unknown marketplace event type `{}`: acknowledged, not acted on",
            bounded(event_type)
        );
        return reject(state, &notification, reason, started).await;
    }
    if let Some(provider) = notification.provider_id.as_deref()
        && provider != def.provider_id
    {
        let reason = format!(
            "notification for provider `{}`; this governor serves provider `{}`",
            bounded(provider),
            def.provider_id
        );
        return reject(state, &notification, reason, started).await;
    }
    let (subject, what) = match (&notification.entitlement, &notification.account) {
        (Some(subject), _) => (subject, "entitlement"),
        (None, Some(subject)) => (subject, "account"),
        (None, None) => {
            let reason = "a notification with neither `entitlement` nor `account`: acknowledged, not acted on".to_owned();
            return reject(state, &notification, reason, started).await;
        }
    };
    // Ids go into the Procurement API's paths: one that is not a plain
    // segment could address another resource.
    if !plain_id(&subject.id) {
        let reason = format!(
            "{what} id `{}` is not a plain path segment",
            bounded(&subject.id).escape_debug()
        );
        return reject(state, &notification, reason, started).await;
    }
    let observed = signals::parse_at(subject.update_time.as_deref())?.or(published);
    let notice = Notified {
        state,
        def,
        client,
        notification: &notification,
        subject,
        observed,
        started,
    };
    if what == "account" {
        account(notice).await
    } else {
        entitlement(notice).await
    }
}

/// A notification being handled, with what handling it needs.
struct Notified<'a> {
    state: &'a AppState,
    def: &'a MarketplaceDef,
    client: &'a Marketplace,
    notification: &'a Notification,
    subject: &'a Subject,
    observed: Option<crate::clock::Timestamp>,
    started: Instant,
}

/// Receipts `notification` as rejected on the [`CHAIN`] (deduplicated on
/// its `eventId`) and acknowledges it.
async fn reject(
    state: &AppState,
    notification: &Notification,
    reason: String,
    started: Instant,
) -> Handled {
    tracing::warn!(event_id = %bounded(&notification.event_id), %reason, "marketplace notification not acted on");
    let event = json!({
        "id": notification.event_id,
        "via": "marketplace",
        "event_type": notification.event_type.as_deref().map(bounded),
        "provider_id": notification.provider_id.as_deref().map(bounded),
        "entitlement": notification.entitlement.as_ref().map(|s| bounded(&s.id)),
        "account": notification.account.as_ref().map(|s| bounded(&s.id)),
    });
    let chain = TenantId::new(CHAIN).expect("a valid tenant id");
    let applied = state
        .decide(&chain, Input::Rejected { reason, event }, started)
        .await?;
    Ok(if applied.duplicate {
        NotificationOutcome::Duplicate
    } else {
        NotificationOutcome::Rejected
    })
}

/// A call that failed for now on every attempt: 503, nothing written.
fn upstream(what: &str, error: CallError, attempts: u32) -> IngressError {
    IngressError::Upstream {
        detail: format!("{what}: {error} (attempt {attempts}/{attempts})"),
    }
}

/// A failed read of the `what` `id`: the reason to receipt it as rejected
/// (a permanent failure: redelivering changes nothing), or 503.
fn unreadable(
    what: &str,
    id: &str,
    error: CallError,
    attempts: u32,
) -> Result<String, IngressError> {
    match error {
        CallError::Permanent(detail) => {
            Ok(format!("{what} `{}` cannot be read: {detail}", bounded(id)))
        }
        error => Err(upstream(&format!("reading the {what}"), error, attempts)),
    }
}

/// An entitlement notification: read it, follow its state, maybe call.
async fn entitlement(n: Notified<'_>) -> Handled {
    let Notified {
        state,
        def,
        client,
        notification,
        subject,
        observed,
        started,
    } = n;
    let id = subject.id.as_str();
    let found = client
        .retry
        .run(id, |_| client.procurement.find_entitlement(id))
        .await;
    let read = match found {
        Ok((Some(read), _)) => read,
        Ok((None, _)) => {
            let reason = format!(
                "entitlement `{}` is not found at the Procurement API (deleted, or not this provider's)",
                bounded(id)
            );
            return reject(state, notification, reason, started).await;
        }
        Err((error, attempts)) => {
            let reason = unreadable("entitlement", id, error, attempts)?;
            return reject(state, notification, reason, started).await;
        }
    };
    if let Some(product) = def.product
        && read.product_name() != Some(product)
    {
        let reason = format!(
            "entitlement `{}` is of product `{}`; this governor serves product `{product}`",
            bounded(id),
            bounded(read.product_name().unwrap_or(""))
        );
        return reject(state, notification, reason, started).await;
    }
    let tenant = read
        .account_id()
        .filter(|account| *account != CHAIN)
        .and_then(|account| TenantId::new(account).ok());
    let Some(tenant) = tenant else {
        let reason = format!(
            "entitlement `{}` names no account usable as a tenant id",
            bounded(id)
        );
        return reject(state, notification, reason, started).await;
    };
    let notice = Notice {
        event_type: bounded(notification.event_type.as_deref().unwrap_or("")),
        entitlement: Some(bounded(id)),
        account: Some(tenant.to_string()),
        state: Some(bounded(&read.state)),
        plan: read.plan.as_deref().map(bounded),
    };
    let profile = read.plan.as_deref().and_then(|plan| def.profile(plan));
    let mut input = Input::Entitlement {
        event: EntitlementEvent::Noted,
        id: Some(notification.event_id.clone()),
        plan: profile,
        observed,
        marketplace: Some(Box::new(notice)),
    };
    let (current, current_profile, seen) = state.registry.entitlement_of(&tenant, &input);
    let plan_differs = profile.is_some_and(|p| p != current_profile);
    let event = state_of(&read.state).map_or(EntitlementEvent::Noted, |target| {
        current.toward(target, plan_differs)
    });
    if let Input::Entitlement { event: e, .. } = &mut input {
        *e = event;
    }
    // Another entitlement of an account whose tenant follows a live one is
    // refused by the registry too (and, activation requested, rejected).
    let accepted = current.check_follow(id).is_ok();
    let planned = decide(def, &read.read(id), accepted);
    let recheck = Recheck::Entitlement { def, id, accepted };
    settle(
        state, client, tenant, input, planned, seen, recheck, started,
    )
    .await
}

/// An account notification: read the account, maybe approve its sign-up.
async fn account(n: Notified<'_>) -> Handled {
    let Notified {
        state,
        def,
        client,
        notification,
        subject,
        observed,
        started,
    } = n;
    let id = subject.id.as_str();
    let Some(tenant) = TenantId::new(id).ok().filter(|t| t.as_str() != CHAIN) else {
        let reason = format!("account `{}` is not usable as a tenant id", bounded(id));
        return reject(state, notification, reason, started).await;
    };
    let found = client
        .retry
        .run(id, |_| client.procurement.find_account(id))
        .await;
    let read = match found {
        Ok((read, _)) => read,
        Err((error, attempts)) => {
            let reason = unreadable("account", id, error, attempts)?;
            return reject(state, notification, reason, started).await;
        }
    };
    let signup = read.as_ref().and_then(Account::signup);
    let notice = Notice {
        event_type: bounded(notification.event_type.as_deref().unwrap_or("")),
        entitlement: None,
        account: Some(tenant.to_string()),
        state: Some(match &read {
            Some(account) => bounded(account.state.as_deref().unwrap_or("")),
            None => "NOT_FOUND".to_owned(),
        }),
        plan: None,
    };
    let input = Input::Entitlement {
        event: EntitlementEvent::Noted,
        id: Some(notification.event_id.clone()),
        plan: None,
        observed,
        marketplace: Some(Box::new(notice)),
    };
    let (_, _, seen) = state.registry.entitlement_of(&tenant, &input);
    let planned = decide_account(def, id, signup);
    let recheck = Recheck::Account { def, id };
    settle(
        state, client, tenant, input, planned, seen, recheck, started,
    )
    .await
}

/// Runs `planned` (if any; not for a notification already `seen`), then
/// receipts the notification and the call's outcome on `tenant`'s chain.
/// A notification seen before goes through the registry all the same: if
/// the first delivery's receipt turns out not to be on record (it failed
/// after its id was noted), this one takes its place and makes the call.
#[allow(clippy::too_many_arguments)]
async fn settle(
    state: &AppState,
    client: &Marketplace,
    tenant: TenantId,
    input: Input,
    planned: Option<Planned>,
    seen: bool,
    recheck: Recheck<'_>,
    started: Instant,
) -> Handled {
    let mut outcome = match (&planned, seen) {
        (Some(planned), false) => Some(call(state, client, planned, &recheck).await?),
        _ => None,
    };
    let applied = state.decide(&tenant, input, started).await?;
    if applied.duplicate {
        return Ok(NotificationOutcome::Duplicate);
    }
    if let (Some(planned), None) = (&planned, &outcome) {
        outcome = Some(call(state, client, planned, &recheck).await?);
    }
    if let (Some(planned), Some((ok, detail))) = (planned, outcome) {
        let key = format!("{tenant}:{}:{}", applied.last_seq, planned.call);
        tracing::info!(%tenant, call = %planned.call, %key, ok, %detail, "procurement call finished");
        let result = Input::Procurement {
            call: planned.call,
            target: planned.target,
            key,
            ok,
            detail: Some(detail),
        };
        state.decide(&tenant, result, started).await?;
    }
    Ok(NotificationOutcome::Applied)
}

/// How to read again whether a call is still called for.
enum Recheck<'a> {
    /// Read the entitlement and decide again.
    Entitlement {
        def: &'a MarketplaceDef,
        id: &'a str,
        accepted: bool,
    },
    /// Read the account and decide again.
    Account {
        def: &'a MarketplaceDef,
        id: &'a str,
    },
}

impl Recheck<'_> {
    /// Whether `planned` is still what a fresh read calls for (a failed
    /// read says yes: the call is tried again).
    async fn still_needed(&self, client: &Marketplace, planned: &Planned) -> bool {
        let again = match *self {
            Recheck::Entitlement { def, id, accepted } => {
                match client.procurement.find_entitlement(id).await {
                    Ok(Some(read)) => decide(def, &read.read(id), accepted),
                    Ok(None) => None,
                    Err(_) => return true,
                }
            }
            Recheck::Account { def, id } => match client.procurement.find_account(id).await {
                Ok(Some(read)) => decide_account(def, id, read.signup()),
                Ok(None) => None,
                Err(_) => return true,
            },
        };
        again.as_ref() == Some(planned)
    }
}

/// Makes `planned`'s call under the retry (attempts bounded in time,
/// backoff between transient failures); before another attempt, `recheck`
/// reads again whether the call is still called for (a timed-out attempt
/// may have taken effect, and is not made twice). Its success and what the
/// API said, or 503 when every attempt failed transiently.
async fn call(
    state: &AppState,
    client: &Marketplace,
    planned: &Planned,
    recheck: &Recheck<'_>,
) -> Result<(bool, String), IngressError> {
    let total = client.retry.attempts.max(1);
    let key = format!("{}:{}", planned.target, planned.call);
    // `Ok(false)`: the read no longer calls for it, an earlier attempt did it.
    let attempt = |attempt: u32| async move {
        if attempt > 1 && !recheck.still_needed(client, planned).await {
            return Ok(false);
        }
        client.procurement.execute(planned).await.map(|()| true)
    };
    let (ok, outcome, detail) = match client.retry.run(&key, attempt).await {
        Ok((true, made)) => (
            true,
            CallOutcome::Ok,
            format!("ok (attempt {made}/{total})"),
        ),
        Ok((false, made)) => (
            true,
            CallOutcome::Ok,
            format!(
                "ok: an earlier attempt took effect, the read no longer calls for it (attempt {made}/{total})"
            ),
        ),
        Err((CallError::Permanent(detail), made)) => (
            false,
            CallOutcome::Failed,
            format!("{detail} (attempt {made}/{total})"),
        ),
        Err((error, made)) => {
            state
                .metrics()
                .procurement(planned.call, CallOutcome::Unavailable);
            return Err(upstream(
                &format!("procurement call `{}`", planned.call),
                error,
                made,
            ));
        }
    };
    state.metrics().procurement(planned.call, outcome);
    Ok((ok, detail))
}

//! The Partner Procurement API (`cloudcommerceprocurement.googleapis.com`,
//! v1) as a Marketplace SaaS provider uses it: read an entitlement or an
//! account, approve or reject an entitlement, approve a plan change,
//! approve an account's sign-up.
//!
//! Every call carries a bearer token from [`Tokens`]. Failures are sorted
//! the way the actuator retries them ([`CallError::into_outcome`]): 408,
//! 429, 5xx, connection failures and a token endpoint that cannot answer
//! are worth another attempt; other 4xx are not. Ids come from
//! notifications, which are input: one that is not a plain path segment is
//! refused before any request is made.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::token::{TokenError, Tokens};
use crate::actuator::Outcome;
use crate::actuator::webhook::{redacted, retryable_status};
use crate::report::error_chain;
use ggen_runtime_core::marketplace::{Call, Planned, Read};

/// Google's endpoint of the API.
pub const PROCUREMENT_URL: &str = "https://cloudcommerceprocurement.googleapis.com/";

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Longest error body kept in a message.
const DETAIL_BYTES: usize = 512;

/// An entitlement, as `providers.entitlements.get` answers (fields ggen
/// uses; the others are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entitlement {
    /// `providers/{provider}/entitlements/{id}`.
    pub name: String,
    /// The account's resource name (`providers/{p}/accounts/{id}`).
    #[serde(default)]
    pub account: Option<String>,
    /// The provider.
    #[serde(default)]
    pub provider: Option<String>,
    /// The product's external name (`guard.endpoints.provider.cloud.goog`).
    #[serde(default)]
    pub product_external_name: Option<String>,
    /// The product (deprecated by Google in favour of `productExternalName`).
    #[serde(default)]
    pub product: Option<String>,
    /// The plan.
    #[serde(default)]
    pub plan: Option<String>,
    /// The plan a requested change moves to.
    #[serde(default)]
    pub new_pending_plan: Option<String>,
    /// `ENTITLEMENT_ACTIVATION_REQUESTED`, `ENTITLEMENT_ACTIVE`, …
    pub state: String,
    /// The Service Control consumer id, for usage-based plans.
    #[serde(default)]
    pub usage_reporting_id: Option<String>,
}

impl Entitlement {
    /// The product: `productExternalName`, else the deprecated `product`.
    pub fn product_name(&self) -> Option<&str> {
        self.product_external_name
            .as_deref()
            .or(self.product.as_deref())
    }

    /// What [`decide`](ggen_runtime_core::marketplace::decide) reads of it,
    /// `id` being the entitlement's id.
    pub fn read<'a>(&'a self, id: &'a str) -> Read<'a> {
        Read {
            id,
            state: &self.state,
            plan: self.plan.as_deref(),
            new_pending_plan: self.new_pending_plan.as_deref(),
        }
    }

    /// The account id: the last segment of [`Entitlement::account`].
    pub fn account_id(&self) -> Option<&str> {
        self.account
            .as_deref()?
            .rsplit('/')
            .next()
            .filter(|id| !id.is_empty())
    }
}

/// An account, as `providers.accounts.get` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// Its resource name.
    pub name: String,
    /// `ACCOUNT_ACTIVE`, …
    #[serde(default)]
    pub state: Option<String>,
    /// Its approvals (`signup`).
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

impl Account {
    /// The state of its `signup` approval (`PENDING`, `APPROVED`, `REJECTED`).
    pub fn signup(&self) -> Option<&str> {
        self.approvals
            .iter()
            .find(|approval| approval.name == "signup")
            .map(|approval| approval.state.as_str())
    }
}

/// One approval of an account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Approval {
    /// Its name (`signup`).
    pub name: String,
    /// `PENDING`, `APPROVED`, `REJECTED`.
    pub state: String,
}

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Worth another attempt (408, 429, 5xx, no connection).
    #[error("{0}")]
    Transient(String),
    /// Not worth another attempt (another 4xx, an id that is not one, an
    /// answer that is not the documented shape).
    #[error("{0}")]
    Permanent(String),
    /// No access token could be had (retried: the endpoint may recover).
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl CallError {
    /// The actuator's view of it: transient failures are retried.
    pub fn into_outcome(self) -> Outcome {
        match self {
            CallError::Permanent(detail) => Outcome::permanent(detail),
            CallError::Transient(detail) => Outcome::transient(detail),
            CallError::Token(e) => Outcome::transient(e.to_string()),
        }
    }
}

/// The Procurement API of one provider.
#[derive(Debug, Clone)]
pub struct Procurement {
    base: String,
    provider: String,
    tokens: Arc<Tokens>,
    client: reqwest::Client,
}

/// Whether `id` may stand in a URL path as one segment.
pub fn plain_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && id != "."
        && id != ".."
}

/// Whether an error answer may well succeed later, though its status is
/// not one retried by default: 401 (a token that expired or was revoked:
/// a fresh one is fetched), 403 (the provider's access or the service
/// account's link is not in place yet: fixed by the operator, after which
/// Pub/Sub's redelivery succeeds), and Google's `FAILED_PRECONDITION` and
/// `ABORTED` (say, an entitlement approved before its account's sign-up
/// was, as Pub/Sub does not keep order).
fn later(status: u16, body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Answer {
        error: Status,
    }
    #[derive(Deserialize)]
    struct Status {
        status: Option<String>,
    }
    let google_status = serde_json::from_slice::<Answer>(body)
        .ok()
        .and_then(|a| a.error.status);
    matches!(status, 401 | 403)
        || matches!(
            google_status.as_deref(),
            Some("FAILED_PRECONDITION" | "ABORTED")
        )
}

/// `text`, cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn checked<'a>(what: &str, id: &'a str) -> Result<&'a str, CallError> {
    if plain_id(id) {
        Ok(id)
    } else {
        Err(CallError::Permanent(format!(
            "{what} id `{}` is not a plain path segment",
            id.chars().take(64).collect::<String>().escape_debug()
        )))
    }
}

impl Procurement {
    /// The API at `base` (see [`PROCUREMENT_URL`]) for `provider`,
    /// authenticated by `tokens`.
    pub fn new(base: &str, provider: &str, tokens: Arc<Tokens>) -> Result<Procurement, CallError> {
        let provider = checked("provider", provider)?.to_owned();
        crate::actuator::webhook::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .user_agent(concat!("ggen-runtime/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CallError::Permanent(error_chain(&e)))?;
        let base = if base.ends_with('/') {
            base.to_owned()
        } else {
            format!("{base}/")
        };
        Ok(Procurement {
            base,
            provider,
            tokens,
            client,
        })
    }

    fn url(&self, collection: &str, id: &str, verb: Option<&str>) -> String {
        let verb = verb.map(|v| format!(":{v}")).unwrap_or_default();
        format!(
            "{}v1/providers/{}/{collection}/{id}{verb}",
            self.base, self.provider
        )
    }

    /// One call: the body of a 2xx answer, or why not.
    async fn call(&self, url: String, body: Option<Value>) -> Result<Vec<u8>, CallError> {
        self.call_status(url, body).await.map_err(|(_, e)| e)
    }

    /// [`Procurement::call`], an error answer's status kept apart.
    async fn call_status(
        &self,
        url: String,
        body: Option<Value>,
    ) -> Result<Vec<u8>, (Option<u16>, CallError)> {
        let token = self.tokens.token().await.map_err(|e| (None, e.into()))?;
        let target = redacted(&self.base);
        let request = match body {
            Some(body) => self
                .client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string()),
            None => self.client.get(&url),
        };
        let response = request.bearer_auth(token).send().await.map_err(|e| {
            let detail = format!(
                "the Procurement API at `{target}` could not be reached: {}",
                error_chain(&e.without_url())
            );
            (None, CallError::Transient(detail))
        })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| {
            let detail = format!(
                "the Procurement API's answer could not be read: {}",
                error_chain(&e.without_url())
            );
            (Some(status), CallError::Transient(detail))
        })?;
        if (200..300).contains(&status) {
            return Ok(bytes.to_vec());
        }
        let path = url.strip_prefix(&self.base).unwrap_or(&url);
        let body = String::from_utf8_lossy(&bytes[..bytes.len().min(DETAIL_BYTES)]);
        let detail = format!("the Procurement API answered `{status}` to `{path}`: {body}");
        if status == 401 {
            // The token was refused: the next attempt gets a fresh one.
            self.tokens.invalidate().await;
        }
        let error = if retryable_status(status) || later(status, &bytes) {
            CallError::Transient(detail)
        } else {
            CallError::Permanent(detail)
        };
        Err((Some(status), error))
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, url: String) -> Result<T, CallError> {
        self.find(url).await?.ok_or_else(|| {
            CallError::Permanent("the Procurement API answered `404`: not found".to_owned())
        })
    }

    /// A GET whose `404` is `None`.
    async fn find<T: for<'de> Deserialize<'de>>(
        &self,
        url: String,
    ) -> Result<Option<T>, CallError> {
        let bytes = match self.call_status(url, None).await {
            Ok(bytes) => bytes,
            Err((Some(404), _)) => return Ok(None),
            Err((_, error)) => return Err(error),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            CallError::Permanent(format!(
                "the Procurement API answered what is not the documented resource: {e}"
            ))
        })
    }

    /// Where its access tokens come from.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The provider id the calls are made for.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// [`Procurement::entitlement`], a `404` (deleted, or never ours) being `None`.
    pub async fn find_entitlement(&self, id: &str) -> Result<Option<Entitlement>, CallError> {
        let id = checked("entitlement", id)?;
        self.find(self.url("entitlements", id, None)).await
    }

    /// [`Procurement::account`], a `404` being `None`.
    pub async fn find_account(&self, id: &str) -> Result<Option<Account>, CallError> {
        let id = checked("account", id)?;
        self.find(self.url("accounts", id, None)).await
    }

    /// `GET v1/providers/{p}/entitlements/{id}`.
    pub async fn entitlement(&self, id: &str) -> Result<Entitlement, CallError> {
        let id = checked("entitlement", id)?;
        self.get(self.url("entitlements", id, None)).await
    }

    /// `GET v1/providers/{p}/accounts/{id}`.
    pub async fn account(&self, id: &str) -> Result<Account, CallError> {
        let id = checked("account", id)?;
        self.get(self.url("accounts", id, None)).await
    }

    /// `POST …/entitlements/{id}:approve`.
    pub async fn approve(&self, id: &str) -> Result<(), CallError> {
        let id = checked("entitlement", id)?;
        self.call(
            self.url("entitlements", id, Some("approve")),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// `POST …/entitlements/{id}:reject` with `reason` (at most 256 bytes
    /// are kept, as the API does).
    pub async fn reject(&self, id: &str, reason: &str) -> Result<(), CallError> {
        let id = checked("entitlement", id)?;
        let body = json!({ "reason": cut(reason, 256) });
        self.call(self.url("entitlements", id, Some("reject")), Some(body))
            .await
            .map(drop)
    }

    /// `POST …/entitlements/{id}:approvePlanChange` to `pending_plan`.
    pub async fn approve_plan_change(&self, id: &str, pending_plan: &str) -> Result<(), CallError> {
        let id = checked("entitlement", id)?;
        let body = json!({ "pendingPlanName": pending_plan });
        self.call(
            self.url("entitlements", id, Some("approvePlanChange")),
            Some(body),
        )
        .await
        .map(drop)
    }

    /// `POST …/entitlements/{id}:rejectPlanChange` of `pending_plan`, with
    /// `reason` (at most 256 bytes kept).
    pub async fn reject_plan_change(
        &self,
        id: &str,
        pending_plan: &str,
        reason: &str,
    ) -> Result<(), CallError> {
        let id = checked("entitlement", id)?;
        let body = json!({ "pendingPlanName": pending_plan, "reason": cut(reason, 256) });
        self.call(
            self.url("entitlements", id, Some("rejectPlanChange")),
            Some(body),
        )
        .await
        .map(drop)
    }

    /// Runs the call `planned` says (see [`ggen_runtime_core::marketplace::decide`]).
    pub async fn execute(&self, planned: &Planned) -> Result<(), CallError> {
        let target = planned.target.as_str();
        let argument = planned.argument.as_deref().unwrap_or("");
        match planned.call {
            Call::Approve => self.approve(target).await,
            Call::Reject => self.reject(target, argument).await,
            Call::ApprovePlanChange => self.approve_plan_change(target, argument).await,
            Call::RejectPlanChange => {
                let reason = format!("plan `{argument}` is not offered by this product's governor");
                self.reject_plan_change(target, argument, &reason).await
            }
            Call::ApproveAccount => self.approve_account(target, argument).await,
        }
    }

    /// `POST …/accounts/{id}:approve` for the approval `approval` (`signup`).
    pub async fn approve_account(&self, id: &str, approval: &str) -> Result<(), CallError> {
        let id = checked("account", id)?;
        let body = json!({ "approvalName": approval });
        self.call(self.url("accounts", id, Some("approve")), Some(body))
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_plain_path_segments() {
        for ok in ["a", "ENTITLEMENT_ID", "DEMO-project.1", "x_y-z"] {
            assert!(plain_id(ok), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:approve",
            "a?x=1",
            "a#b",
            "a b",
            "é",
            long.as_str(),
        ] {
            assert!(!plain_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_account_id_is_the_last_segment() {
        let mut e = Entitlement {
            name: "providers/p/entitlements/e".to_owned(),
            account: Some("providers/p/accounts/acct-1".to_owned()),
            provider: None,
            product_external_name: None,
            product: None,
            plan: None,
            new_pending_plan: None,
            state: "ENTITLEMENT_ACTIVE".to_owned(),
            usage_reporting_id: None,
        };
        assert_eq!(e.account_id(), Some("acct-1"));
        e.account = Some("accounts/acct-2".to_owned());
        assert_eq!(e.account_id(), Some("acct-2"));
        e.account = Some("providers/p/accounts/".to_owned());
        assert_eq!(e.account_id(), None);
        e.account = None;
        assert_eq!(e.account_id(), None);
    }
}

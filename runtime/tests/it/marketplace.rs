//! The Procurement API client and its Google access tokens, against a fake
//! Procurement API and a fake metadata-server token endpoint on loopback,
//! built from Google's documented request and response shapes; every call
//! they receive is recorded and asserted (method, path, body, headers).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use ggen_runtime::marketplace::{CallError, Procurement, TokenError, Tokens};

/// One request a fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    method: String,
    path: String,
    body: String,
    authorization: Option<String>,
    metadata_flavor: Option<String>,
}

/// A server on loopback answering with `script`, in order (then 500),
/// and recording every request.
struct Fake {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Fake {
    async fn start(script: Vec<(u16, &str)>) -> Fake {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<VecDeque<(u16, String)>>> = Arc::new(Mutex::new(
            script.into_iter().map(|(s, b)| (s, b.to_owned())).collect(),
        ));
        let recorded = Arc::clone(&calls);
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let recorded = Arc::clone(&recorded);
                let script = Arc::clone(&script);
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    recorded.lock().unwrap().push(Call {
                        method: method.to_string(),
                        path: uri.path().to_owned(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        authorization: header("authorization"),
                        metadata_flavor: header("metadata-flavor"),
                    });
                    let (status, body) = script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or((500, "unscripted".to_owned()));
                    (StatusCode::from_u16(status).unwrap(), body)
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { addr, calls }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

fn token(value: &str, expires_in: u64) -> String {
    format!(r#"{{"access_token":"{value}","expires_in":{expires_in},"token_type":"Bearer"}}"#)
}

#[tokio::test]
async fn a_token_is_reused_until_it_nears_expiry() {
    let answer = token("ya29.one", 3599);
    let fake = Fake::start(vec![(200, &answer)]).await;
    let tokens = Tokens::new(fake.url(TOKEN_PATH)).unwrap();
    assert_eq!(tokens.token().await.unwrap(), "ya29.one");
    assert_eq!(tokens.token().await.unwrap(), "ya29.one");
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "the second call used the cached token");
    assert_eq!(calls[0].method, "GET");
    assert_eq!(calls[0].path, TOKEN_PATH);
    assert_eq!(calls[0].metadata_flavor.as_deref(), Some("Google"));
}

#[tokio::test]
async fn a_failed_refresh_keeps_a_valid_token_and_an_expired_one_is_an_error() {
    // 200 s left: inside the refresh margin, so every call refreshes.
    let (near, fresh) = (token("near", 200), token("fresh", 3600));
    let fake = Fake::start(vec![(200, &near), (503, "busy"), (200, &fresh)]).await;
    let tokens = Tokens::new(fake.url(TOKEN_PATH)).unwrap();
    assert_eq!(tokens.token().await.unwrap(), "near");
    assert_eq!(
        tokens.token().await.unwrap(),
        "near",
        "503: the old one is still valid"
    );
    assert_eq!(tokens.token().await.unwrap(), "fresh");
    assert_eq!(fake.calls().len(), 3);

    // A token that has expired is not handed out when the refresh fails.
    let expired = token("gone", 0);
    let fake = Fake::start(vec![(200, &expired), (503, "busy")]).await;
    let tokens = Tokens::new(fake.url(TOKEN_PATH)).unwrap();
    assert_eq!(tokens.token().await.unwrap(), "gone");
    let error = tokens.token().await.unwrap_err();
    assert!(
        matches!(error, TokenError::Status { status: 503, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn what_is_not_a_token_is_refused() {
    for (status, body, want) in [
        (200, "not json", "what is not a token"),
        (
            200,
            r#"{"access_token":"","expires_in":10}"#,
            "empty `access_token`",
        ),
        (
            200,
            r#"{"access_token":"t","expires_in":10,"token_type":"MAC"}"#,
            "other than `Bearer`",
        ),
        (404, "no such service account", "answered `404`"),
    ] {
        let fake = Fake::start(vec![(status, body)]).await;
        let tokens = Tokens::new(fake.url(TOKEN_PATH)).unwrap();
        let error = tokens.token().await.unwrap_err().to_string();
        assert!(error.contains(want), "{body}: {error}");
        // The endpoint is named by scheme, host and port only.
        assert!(!error.contains(TOKEN_PATH), "{error}");
    }
    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}{TOKEN_PATH}", closed.local_addr().unwrap());
    drop(closed);
    let error = Tokens::new(url).unwrap().token().await.unwrap_err();
    assert!(matches!(error, TokenError::Unreachable { .. }), "{error:?}");
}

/// An entitlement as the API documents it (fields ggen does not read included).
const ENTITLEMENT: &str = r#"{
  "name": "providers/DEMO-project/entitlements/E-1",
  "account": "providers/DEMO-project/accounts/acct-7",
  "provider": "DEMO-project",
  "product": "guard.endpoints.example.cloud.goog",
  "productExternalName": "guard.endpoints.example.cloud.goog",
  "plan": "standard-monthly",
  "newPendingPlan": "enterprise-annual",
  "state": "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL",
  "usageReportingId": "project_number:123456789",
  "consumers": [ { "project": "projects/123456789" } ],
  "createTime": "2026-01-01T00:00:00Z",
  "updateTime": "2026-06-01T00:00:00Z"
}"#;

async fn client(api: &Fake, token_fake: &Fake) -> Procurement {
    let tokens = Arc::new(Tokens::new(token_fake.url(TOKEN_PATH)).unwrap());
    Procurement::new(&api.url("/"), "DEMO-project", tokens).unwrap()
}

#[tokio::test]
async fn every_call_is_the_documented_request() {
    let answer = token("ya29.t", 3600);
    let tokens = Fake::start(vec![(200, &answer)]).await;
    let account = r#"{"name":"providers/DEMO-project/accounts/acct-7","state":"ACCOUNT_ACTIVE","approvals":[{"name":"signup","state":"PENDING"}]}"#;
    let api = Fake::start(vec![
        (200, ENTITLEMENT),
        (200, "{}"),
        (200, "{}"),
        (200, "{}"),
        (200, account),
        (200, "{}"),
    ])
    .await;
    let procurement = client(&api, &tokens).await;
    let entitlement = procurement.entitlement("E-1").await.unwrap();
    assert_eq!(entitlement.account_id(), Some("acct-7"));
    assert_eq!(entitlement.plan.as_deref(), Some("standard-monthly"));
    assert_eq!(
        entitlement.new_pending_plan.as_deref(),
        Some("enterprise-annual")
    );
    assert_eq!(
        entitlement.state,
        "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL"
    );
    procurement.approve("E-1").await.unwrap();
    procurement
        .approve_plan_change("E-1", "enterprise-annual")
        .await
        .unwrap();
    let long = "é".repeat(200);
    procurement.reject("E-1", &long).await.unwrap();
    let account = procurement.account("acct-7").await.unwrap();
    assert_eq!(account.approvals[0].state, "PENDING");
    procurement
        .approve_account("acct-7", "signup")
        .await
        .unwrap();

    let calls = api.calls();
    let seen: Vec<(&str, &str, &str)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str(), c.body.as_str()))
        .collect();
    let reason: String = "é".repeat(128); // 256 bytes: the API's limit, on a char boundary
    let reject_body = format!(r#"{{"reason":"{reason}"}}"#);
    assert_eq!(
        seen,
        [
            ("GET", "/v1/providers/DEMO-project/entitlements/E-1", ""),
            (
                "POST",
                "/v1/providers/DEMO-project/entitlements/E-1:approve",
                "{}"
            ),
            (
                "POST",
                "/v1/providers/DEMO-project/entitlements/E-1:approvePlanChange",
                r#"{"pendingPlanName":"enterprise-annual"}"#
            ),
            (
                "POST",
                "/v1/providers/DEMO-project/entitlements/E-1:reject",
                reject_body.as_str()
            ),
            ("GET", "/v1/providers/DEMO-project/accounts/acct-7", ""),
            (
                "POST",
                "/v1/providers/DEMO-project/accounts/acct-7:approve",
                r#"{"approvalName":"signup"}"#
            ),
        ]
    );
    assert!(
        calls
            .iter()
            .all(|c| c.authorization.as_deref() == Some("Bearer ya29.t")),
        "{calls:?}"
    );
    assert_eq!(tokens.calls().len(), 1, "one token for every call");
}

#[tokio::test]
async fn failures_are_sorted_into_retry_or_not() {
    let answer = token("t", 3600);
    // One token for `procurement`, one for `down` below.
    let tokens = Fake::start(vec![(200, &answer), (200, &answer)]).await;
    let api = Fake::start(vec![
        (
            429,
            r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#,
        ),
        (503, "unavailable"),
        (404, r#"{"error":{"code":404,"status":"NOT_FOUND"}}"#),
        (400, r#"{"error":{"code":400,"status":"INVALID_ARGUMENT"}}"#),
        (200, "not an entitlement"),
    ])
    .await;
    let procurement = client(&api, &tokens).await;
    let transient = |r: Result<(), CallError>| matches!(r, Err(CallError::Transient(_)));
    let permanent = |r: Result<(), CallError>| matches!(r, Err(CallError::Permanent(_)));
    assert!(transient(procurement.approve("E-1").await));
    assert!(transient(procurement.approve("E-1").await));
    let not_found = procurement.approve("E-1").await;
    assert!(
        matches!(&not_found, Err(CallError::Permanent(d)) if d.contains("`404`") && d.contains("entitlements/E-1:approve")),
        "{not_found:?}"
    );
    assert!(permanent(procurement.approve("E-1").await));
    assert!(matches!(
        procurement.entitlement("E-1").await,
        Err(CallError::Permanent(_))
    ));
    // An id from a notification that would change the path: refused
    // before any request.
    let before = api.calls().len();
    for id in ["../accounts/x", "E-1:approve", "E 1", ""] {
        assert!(permanent(procurement.approve(id).await), "{id}");
    }
    assert_eq!(api.calls().len(), before);
    // Retryable failures stay retryable through the actuator's eyes.
    let outcome = CallError::Transient("503".to_owned()).into_outcome();
    assert!(matches!(
        outcome,
        ggen_runtime::actuator::Outcome::Failed {
            retryable: true,
            ..
        }
    ));

    // No API listening, and no token endpoint: both worth another attempt.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let down = Procurement::new(
        &nowhere,
        "DEMO-project",
        Arc::new(Tokens::new(tokens.url(TOKEN_PATH)).unwrap()),
    )
    .unwrap();
    assert!(transient(down.approve("E-1").await));
    let no_tokens = Procurement::new(
        &api.url("/"),
        "DEMO-project",
        Arc::new(Tokens::new(format!("{nowhere}token")).unwrap()),
    )
    .unwrap();
    let error = no_tokens.approve("E-1").await.unwrap_err();
    assert!(matches!(error, CallError::Token(_)), "{error:?}");
    assert!(matches!(
        error.into_outcome(),
        ggen_runtime::actuator::Outcome::Failed {
            retryable: true,
            ..
        }
    ));
}

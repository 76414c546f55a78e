//! The Procurement API client and its Google access tokens, against a fake
//! Procurement API and fake token endpoints on loopback (metadata server,
//! and OAuth token endpoint for service-account key files), built from
//! Google's documented request and response shapes; every call they
//! receive is recorded and asserted (method, path, body, headers).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use ggen_runtime::marketplace::token::KeyFileError;
use ggen_runtime::marketplace::{CallError, Procurement, TokenError, Tokens};
use ggen_runtime::report::error_chain;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

/// One request a fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    method: String,
    path: String,
    body: String,
    authorization: Option<String>,
    metadata_flavor: Option<String>,
    content_type: Option<String>,
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
                        content_type: header("content-type"),
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

/// A file of the OIDC fixtures: `oidc_key.pem` is an RSA private key,
/// `jwks.json` its public half, `jwks_rotated.json` another key's.
fn key_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/ingress/fixtures")
        .join(name)
}

/// The public half of `oidc_key.pem` (`openssl rsa -pubout`): RSA, PEM,
/// and unable to sign.
const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAspB9Nx0/7M8gun9tGeOf
l0ZXnl+NHOpI2oMhBDH+DYPflLooAOxiwJOesQtfuwTAHwMKoDJB5OqWKu+0TEm1
3Yhp+mpdr3apXMjurctnPOV/DBGefa6yQjdO+s7IcmEZBam1+Ixr4ypKQu7CPNk0
h6+8BBK4fobNxrOenzs4x3TDf9FJlciArn7Jjnr/WsJ8SyULVB4YNSeXMw+KA5e/
Xi5sgnnow3wKf4xvmnXpWQk9pND/8heXzyVlqGGJXniAP+WpGAWr4zYLzzbfDVM3
R4QQ+zRN0jSerJI3LHu3vJ8n0Wl+DIDuPODnYBmVqzEw3PtaIDSPE6/QUH3/i0qp
2QIDAQAB
-----END PUBLIC KEY-----
";

const CLIENT_EMAIL: &str = "governor@demo-project.iam.gserviceaccount.com";
const KEY_ID: &str = "1f2e3d4c5b6a79880716253443526170f9e8d7c6";
const OAUTH_PATH: &str = "/token";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

fn private_pem() -> String {
    fs_err::read_to_string(key_fixture("oidc_key.pem")).unwrap()
}

/// A service-account key file as Google's console downloads it, for the
/// fixture key, exchanged at `token_uri`.
fn key_file(token_uri: &str) -> Value {
    json!({
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": KEY_ID,
        "private_key": private_pem(),
        "client_email": CLIENT_EMAIL,
        "client_id": "112233445566778899001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/governor%40demo-project.iam.gserviceaccount.com",
        "universe_domain": "googleapis.com"
    })
}

/// `contents` as `name` in `dir`.
fn write_key(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
    let path = dir.path().join(name);
    fs_err::write(&path, contents).unwrap();
    path
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The claims of `assertion`, if its signature verifies with the public key
/// in `jwks` and it is for `audience` from [`CLIENT_EMAIL`].
fn verified(
    assertion: &str,
    jwks: &str,
    audience: &str,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let jwks: JwkSet = serde_json::from_slice(&fs_err::read(key_fixture(jwks)).unwrap()).unwrap();
    let key = DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "aud", "iss"]);
    jsonwebtoken::decode::<Value>(assertion, &key, &validation).map(|data| data.claims)
}

#[tokio::test]
async fn a_key_file_exchanges_a_signed_assertion_for_a_token_and_caches_it() {
    let answer = token("ya29.sa", 3599);
    let fake = Fake::start(vec![(200, &answer)]).await;
    let token_uri = fake.url(OAUTH_PATH);
    let dir = tempfile::tempdir().unwrap();
    let path = write_key(&dir, "key.json", &key_file(&token_uri).to_string());
    let tokens = Tokens::from_key_file(&path).unwrap();
    assert!(
        fake.calls().is_empty(),
        "nothing is asked before a token is"
    );

    let before = unix_now();
    assert_eq!(tokens.token().await.unwrap(), "ya29.sa");
    let after = unix_now();
    assert_eq!(tokens.token().await.unwrap(), "ya29.sa");
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "the second call used the cached token");

    let call = &calls[0];
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", OAUTH_PATH)
    );
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!((&call.authorization, &call.metadata_flavor), (&None, &None));
    // Decoded as a form, as the token endpoint reads it.
    let form: Vec<(String, String)> =
        reqwest::Url::parse(&format!("http://form.invalid/?{}", call.body))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
    let [(grant, grant_type), (name, assertion)] = form.as_slice() else {
        panic!("not two form fields: {}", call.body);
    };
    assert_eq!(
        (grant.as_str(), grant_type.as_str(), name.as_str()),
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion"
        )
    );

    let header = jsonwebtoken::decode_header(assertion).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some(KEY_ID));
    let claims = verified(assertion, "jwks.json", &token_uri).unwrap();
    let iat = claims["iat"].as_u64().unwrap();
    assert!((before..=after).contains(&iat), "{claims}");
    assert_eq!(
        claims,
        json!({
            "iss": CLIENT_EMAIL,
            "scope": CLOUD_PLATFORM,
            "aud": token_uri,
            "iat": iat,
            "exp": iat + 3600,
        })
    );
    // The check above tells keys apart: another key's does not verify it.
    let other = verified(assertion, "jwks_rotated.json", &token_uri).unwrap_err();
    assert_eq!(
        other.kind(),
        &jsonwebtoken::errors::ErrorKind::InvalidSignature
    );
}

#[tokio::test]
async fn a_token_endpoint_refusing_a_key_files_assertion_is_a_token_error() {
    let dir = tempfile::tempdir().unwrap();
    let refusal = r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
    let fake = Fake::start(vec![(400, refusal), (200, "not json"), (500, "oops")]).await;
    let path = write_key(
        &dir,
        "key.json",
        &key_file(&fake.url(OAUTH_PATH)).to_string(),
    );
    let tokens = Tokens::from_key_file(&path).unwrap();
    let error = tokens.token().await.unwrap_err();
    assert!(
        matches!(error, TokenError::Status { status: 400, .. }),
        "{error:?}"
    );
    let error = tokens.token().await.unwrap_err();
    assert!(matches!(error, TokenError::Malformed { .. }), "{error:?}");
    let error = tokens.token().await.unwrap_err();
    assert!(
        matches!(error, TokenError::Status { status: 500, .. }),
        "{error:?}"
    );
    // The endpoint is named by scheme, host and port only.
    assert!(
        error.to_string().contains(&format!("`{}`", fake.url(""))),
        "{error}"
    );
    assert_eq!(fake.calls().len(), 3, "no token, so every call asks again");

    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}{OAUTH_PATH}", closed.local_addr().unwrap());
    drop(closed);
    let path = write_key(&dir, "nowhere.json", &key_file(&nowhere).to_string());
    let error = Tokens::from_key_file(&path)
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::Unreachable { .. }), "{error:?}");
}

#[test]
fn an_unusable_key_file_is_refused_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = key_file("https://oauth2.googleapis.com/token");
    let with = |field: &str, value: Value| {
        let mut file = good.clone();
        file[field] = value;
        file.to_string()
    };
    let without = |field: &str| {
        let mut file = good.clone();
        file.as_object_mut().unwrap().remove(field);
        file.to_string()
    };
    let unusable_key = "is not a usable RSA private key in PEM";
    let in_the_clear = "is not an `https://` URL: an assertion sent in the clear could be replayed";
    let cases = [
        ("{\"type\": ", "is not a JSON object"),
        ("[\"service_account\"]", "is not a JSON object"),
        (
            &with("type", json!("authorized_user")),
            "holds credentials of type `authorized_user`, not `service_account`",
        ),
        (&without("type"), "has no `type`"),
        (&without("client_email"), "has no `client_email`"),
        (&without("private_key_id"), "has no `private_key_id`"),
        (&with("private_key", json!("")), "has no `private_key`"),
        (&with("token_uri", json!(443)), "has no `token_uri`"),
        (&with("private_key", json!("not a pem")), unusable_key),
        (
            &with(
                "private_key",
                json!("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"),
            ),
            unusable_key,
        ),
        // Unwraps as RSA PEM, but cannot sign.
        (&with("private_key", json!(PUBLIC_PEM)), unusable_key),
        (
            &with("token_uri", json!("http://oauth2.googleapis.com/token")),
            in_the_clear,
        ),
        (
            &with("token_uri", json!("http://192.0.2.1:8080/token")),
            in_the_clear,
        ),
        (
            &with("token_uri", json!("ftp://127.0.0.1/token")),
            in_the_clear,
        ),
        (&with("token_uri", json!("not a url")), in_the_clear),
    ];
    let pem = private_pem();
    for (i, (contents, want)) in cases.iter().enumerate() {
        let path = write_key(&dir, &format!("key-{i}.json"), contents);
        let error = Tokens::from_key_file(&path).unwrap_err();
        let shown = error.to_string();
        assert!(shown.contains(want), "{contents}: {shown}");
        assert!(
            shown.contains(&format!("`{}`", path.display())),
            "{contents}: {shown}"
        );
        // Never the private key, however the error is shown.
        for shown in [error_chain(&error), format!("{error:?}")] {
            for line in pem.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!shown.contains(line), "{shown}");
            }
        }
    }
    // The `token_uri` is named by scheme, host and port only.
    let path = write_key(
        &dir,
        "clear.json",
        &with(
            "token_uri",
            json!("http://user:pw@192.0.2.1:8080/token?x=1"),
        ),
    );
    let shown = Tokens::from_key_file(&path).unwrap_err().to_string();
    assert!(shown.contains("`http://192.0.2.1:8080`"), "{shown}");
    // The key file's own (random) path may hold any of these letters.
    let shown = shown.replace(&path.display().to_string(), "");
    for hidden in ["pw", "/token", "x=1"] {
        assert!(!shown.contains(hidden), "{shown}");
    }

    let missing = dir.path().join("absent.json");
    let error = Tokens::from_key_file(&missing).unwrap_err();
    assert!(matches!(error, KeyFileError::Read { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&format!(
            "the service-account key file `{}` could not be read",
            missing.display()
        )),
        "{error}"
    );

    // Plain http is fine to loopback (a local stand-in for the endpoint).
    for token_uri in [
        "http://127.0.0.1:9/token",
        "http://localhost:9/token",
        "http://[::1]:9/token",
    ] {
        let path = write_key(&dir, "loopback.json", &key_file(token_uri).to_string());
        assert!(Tokens::from_key_file(&path).is_ok(), "{token_uri}");
    }
}

#[test]
fn a_key_file_source_shows_its_account_and_endpoint_never_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = key_file("https://oauth2.googleapis.com:8443/token?x=1");
    let path = write_key(&dir, "key.json", &file.to_string());
    let tokens = Tokens::from_key_file(&path).unwrap();
    let shown = format!("{tokens:?}");
    assert!(shown.contains(CLIENT_EMAIL), "{shown}");
    assert!(
        shown.contains("https://oauth2.googleapis.com:8443"),
        "{shown}"
    );
    for hidden in ["/token", "x=1", "PRIVATE KEY"] {
        assert!(!shown.contains(hidden), "{shown}");
    }
    let pem = private_pem();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(line), "{shown}");
    }
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
    // Two tokens for `procurement` (the first is refused with 401), one
    // for `down` below.
    let tokens = Fake::start(vec![(200, &answer), (200, &answer), (200, &answer)]).await;
    let api = Fake::start(vec![
        (
            429,
            r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#,
        ),
        (503, "unavailable"),
        (404, r#"{"error":{"code":404,"status":"NOT_FOUND"}}"#),
        (400, r#"{"error":{"code":400,"status":"INVALID_ARGUMENT"}}"#),
        (
            403,
            r#"{"error":{"code":403,"status":"PERMISSION_DENIED"}}"#,
        ),
        (
            400,
            r#"{"error":{"code":400,"status":"FAILED_PRECONDITION"}}"#,
        ),
        (401, r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#),
        (200, "{}"),
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
    // Fixed later, by the operator or by Google: worth Pub/Sub's redelivery.
    for status in ["`403`", "`400`", "`401`"] {
        let later = procurement.approve("E-1").await;
        assert!(
            matches!(&later, Err(CallError::Transient(d)) if d.contains(status)),
            "{status}: {later:?}"
        );
    }
    // The refused token is not used again.
    let used = tokens.calls().len();
    procurement.approve("E-1").await.unwrap();
    assert_eq!(tokens.calls().len(), used + 1, "a fresh token after a 401");
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

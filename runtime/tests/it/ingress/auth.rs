//! Authentication: every route refuses missing or wrong credentials; Pub/Sub
//! OIDC tokens are verified (signature, audience, issuer, expiry, email).

use axum::body::Body;
use axum::http::{Request, header};
use ggen_runtime::ingress::auth::{Auth, JwksSource, Oidc, Secret};
use ggen_runtime::ingress::{IngressError, Options};
use ggen_runtime::ledger::memory::MemoryLedger;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::sync::Arc;

use super::harness::{ADMIN, Service, TOKEN, envelope, fixture, marketplace, request, signal};
use super::sku::{AUDIENCE, GUARD};

/// Every authenticated route with a plausible body.
fn routes() -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("POST", "/v1/signals", signal("acme", 1.0, "a")),
        (
            "POST",
            "/pubsub/push",
            envelope("acme", r#"{"signal":"load","value":1}"#, "a"),
        ),
        ("GET", "/v1/tenants/acme", String::new()),
        ("GET", "/v1/tenants/acme/admit", String::new()),
        ("GET", "/v1/tenants/acme/receipts", String::new()),
        ("GET", "/v1/ledger/verify", String::new()),
        ("POST", "/v1/tenants/acme/reset", String::new()),
        (
            "POST",
            "/v1/marketplace/events",
            r#"{"tenant":"acme","event":"created","id":"e"}"#.to_owned(),
        ),
    ]
}

#[tokio::test]
async fn every_route_refuses_missing_and_wrong_credentials() {
    let service = Service::memory(&GUARD);
    for (method, path, body) in routes() {
        let missing = service
            .send(request(method, path, None, body.clone()))
            .await;
        missing.assert_error(401, "unauthorized");
        for token in ["wrong", "api-token-012345678", "api-token-01234567890"] {
            let wrong = service
                .send(request(method, path, Some(token), body.clone()))
                .await;
            wrong.assert_error(401, "unauthorized");
        }
        let basic = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        service.send(basic).await.assert_error(401, "unauthorized");
    }
    // Nothing was written.
    assert_eq!(service.assert_verifies().receipts, 0);
}

#[tokio::test]
async fn resets_need_the_admin_token_and_marketplace_events_a_valid_hmac() {
    let service = Service::memory(&GUARD);
    let reply = service
        .send(request(
            "POST",
            "/v1/signals",
            Some(TOKEN),
            signal("acme", 1.0, "a"),
        ))
        .await;
    assert_eq!(reply.status, 204);
    let with_api_token = service
        .send(request(
            "POST",
            "/v1/tenants/acme/reset",
            Some(TOKEN),
            Body::empty(),
        ))
        .await;
    with_api_token.assert_error(403, "forbidden");
    let with_admin = service
        .send(request(
            "POST",
            "/v1/tenants/acme/reset",
            Some(ADMIN),
            Body::empty(),
        ))
        .await;
    assert_eq!(with_admin.status, 200, "{with_admin:?}");
    // The admin token is not an api token.
    let reply = service
        .send(request(
            "GET",
            "/v1/tenants/acme",
            Some(ADMIN),
            Body::empty(),
        ))
        .await;
    reply.assert_error(401, "unauthorized");

    let body = r#"{"tenant":"acme","event":"created","id":"e-1"}"#;
    let signed = marketplace(body);
    let signature = signed.headers()["x-ggen-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let forged = |signature: String, body: &str| {
        Request::builder()
            .method("POST")
            .uri("/v1/marketplace/events")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-ggen-signature", signature)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let tampered = r#"{"tenant":"acme","event":"cancelled","id":"e-1"}"#;
    let mut flipped = signature.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    for (signature, body) in [
        (signature.clone(), tampered),
        (String::from_utf8(flipped).unwrap(), body),
        (signature.split_once(",v1=").unwrap().1.to_owned(), body),
        (signature.replace("v1=", "v0="), body),
        (signature.split_once(',').unwrap().0.to_owned(), body),
        ("t=1,v1=".to_owned(), body),
        ("t=1,v1=not-hex".to_owned(), body),
        (
            format!("sha256={}", signature.split_once(",v1=").unwrap().1),
            body,
        ),
    ] {
        service
            .send(forged(signature, body))
            .await
            .assert_error(401, "unauthorized");
    }
    // A bearer token does not replace the signature.
    let bearer = request("POST", "/v1/marketplace/events", Some(TOKEN), body);
    service.send(bearer).await.assert_error(401, "unauthorized");
    assert_eq!(service.send(signed).await.status, 204);
    assert_eq!(service.receipts_of("acme", "entitlement").len(), 1);
    service.assert_verifies();
}

#[tokio::test]
async fn routes_without_a_configured_secret_are_forbidden() {
    let auth = Auth {
        token: Some(Secret::new(TOKEN)),
        ..Auth::default()
    };
    let service = Service::over(
        &GUARD,
        Arc::new(MemoryLedger::new()),
        auth,
        Options::default(),
    );
    let reset = request("POST", "/v1/tenants/acme/reset", Some(TOKEN), Body::empty());
    service.send(reset).await.assert_error(403, "forbidden");
    let event = marketplace(r#"{"tenant":"acme","event":"created","id":"e-1"}"#);
    service.send(event).await.assert_error(403, "forbidden");
}

#[tokio::test]
async fn serve_refuses_to_start_without_auth() {
    // No GOVERNOR_* variables are set in the test environment.
    let error = Auth::from_env(Some(AUDIENCE), None, None, false)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--insecure-no-auth"), "{error}");
    let insecure = Auth::from_env(Some(AUDIENCE), None, None, true)
        .await
        .unwrap();
    assert!(insecure.insecure);
    let file = JwksSource::File(fixture("jwks.json"));
    let oidc = Auth::from_env(Some(AUDIENCE), Some(&file), None, false)
        .await
        .unwrap();
    assert!(oidc.oidc.is_some());
    // A file's keys are fixed: there is nothing to refresh.
    assert!(oidc.oidc.unwrap().spawn_refresher().is_none());
    assert!(
        Auth::from_env(None, Some(&file), None, false)
            .await
            .is_err()
    );
}

/// Claims of a Pub/Sub push token.
pub(super) fn claims(aud: &str, iss: &str, exp_in: i64, email: &str) -> serde_json::Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    json!({
        "aud": aud,
        "iss": iss,
        "iat": now - 10,
        "exp": now + exp_in,
        "sub": "1234567890",
        "email": email,
        "email_verified": true,
    })
}

pub(super) const EMAIL: &str = "pusher@project.iam.gserviceaccount.com";

/// A token signed with the key in fixture `key`, naming `kid`.
pub(super) fn token(key: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let pem = fs_err::read(fixture(key)).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

/// Valid claims for the test SKU's audience.
pub(super) fn good() -> serde_json::Value {
    claims(AUDIENCE, "https://accounts.google.com", 600, EMAIL)
}

#[tokio::test]
async fn pubsub_accepts_only_valid_google_oidc_tokens() {
    let service = Service::memory(&GUARD);
    let push = |token: &str, id: &str| {
        request(
            "POST",
            "/pubsub/push",
            Some(token),
            envelope("acme", r#"{"signal":"load","value":1}"#, id),
        )
    };
    let ok = token("oidc_key.pem", Some("test-key-1"), &good());
    assert_eq!(service.send(push(&ok, "1")).await.status, 204);
    let short_issuer = claims(AUDIENCE, "accounts.google.com", 600, EMAIL);
    let ok = token("oidc_key.pem", Some("test-key-1"), &short_issuer);
    assert_eq!(service.send(push(&ok, "2")).await.status, 204);
    // The static bearer token works too.
    assert_eq!(service.send(push(TOKEN, "3")).await.status, 204);

    let bad = [
        (
            "wrong audience",
            token(
                "oidc_key.pem",
                Some("test-key-1"),
                &claims(
                    "https://other.example",
                    "https://accounts.google.com",
                    600,
                    EMAIL,
                ),
            ),
        ),
        (
            "wrong issuer",
            token(
                "oidc_key.pem",
                Some("test-key-1"),
                &claims(AUDIENCE, "https://evil.example", 600, EMAIL),
            ),
        ),
        (
            "expired",
            token(
                "oidc_key.pem",
                Some("test-key-1"),
                &claims(AUDIENCE, "https://accounts.google.com", -3600, EMAIL),
            ),
        ),
        (
            "bad signature",
            token("other_key.pem", Some("test-key-1"), &good()),
        ),
        (
            "unknown key",
            token("oidc_key.pem", Some("other-kid"), &good()),
        ),
        ("not a jwt", "a.b.c".to_owned()),
    ];
    for (name, token) in bad {
        let reply = service.send(push(&token, name)).await;
        assert_eq!(reply.status, 401, "{name}: {reply:?}");
        assert_eq!(reply.json["error"], "unauthorized", "{name}");
    }
    // An OIDC token is not an api token.
    let ok = token("oidc_key.pem", Some("test-key-1"), &good());
    let reply = service
        .send(request("GET", "/v1/tenants/acme", Some(&ok), Body::empty()))
        .await;
    reply.assert_error(401, "unauthorized");
    assert_eq!(service.receipts_of("acme", "signal").len(), 3);
}

#[test]
fn oidc_email_must_match_when_configured() {
    let oidc = Oidc::from_file(&fixture("jwks.json"), AUDIENCE, Some(EMAIL.to_owned())).unwrap();
    assert!(
        oidc.verify(&token("oidc_key.pem", Some("test-key-1"), &good()))
            .is_ok()
    );
    let other = claims(
        AUDIENCE,
        "https://accounts.google.com",
        600,
        "someone@else.example",
    );
    let error: IngressError = oidc
        .verify(&token("oidc_key.pem", Some("test-key-1"), &other))
        .unwrap_err();
    assert_eq!(error.code(), "unauthorized");
    // A token without `kid` is checked against the only key.
    assert!(oidc.verify(&token("oidc_key.pem", None, &good())).is_ok());
}

//! Authentication: every route refuses missing or wrong credentials; Pub/Sub
//! OIDC tokens are verified (signature, audience, issuer, expiry, not-before,
//! issued-at, a verified email among the allowed service accounts); with a
//! Pub/Sub audience only OIDC opens `/pubsub/push`; unsafe configurations
//! refuse to start.

use axum::body::Body;
use axum::http::{Request, header};
use ggen_runtime::ingress::auth::{Auth, AuthConfig, AuthError, JwksSource, Oidc, Secret};
use ggen_runtime::ingress::{IngressError, Options};
use ggen_runtime::ledger::memory::MemoryLedger;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::sync::Arc;

use super::harness::{
    ADMIN, Service, TOKEN, envelope, fixture, marketplace, oidc_token, request, signal,
};
use super::sku::{AUDIENCE, GUARD, PLAIN};

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
async fn head_on_a_guarded_route_is_refused_like_get() {
    // Each route is composed per method: HEAD, which axum answers with the
    // GET service, must meet the same admission.
    let service = Service::memory(&GUARD);
    for (method, path, _) in routes() {
        if method != "GET" {
            continue;
        }
        let head = service
            .send(request("HEAD", path, None, Body::empty()))
            .await;
        assert_eq!(head.status, 401, "HEAD {path}: {head:?}");
        let with_token = service
            .send(request("HEAD", path, Some(TOKEN), Body::empty()))
            .await;
        assert_ne!(with_token.status, 401, "HEAD {path}: {with_token:?}");
    }
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
    let error = Auth::from_env(Some(AUDIENCE), None, Vec::new(), false, Default::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--insecure-no-auth"), "{error}");
    let insecure = Auth::from_env(Some(AUDIENCE), None, Vec::new(), true, Default::default())
        .await
        .unwrap();
    assert!(insecure.insecure);
    let file = JwksSource::File(fixture("jwks.json"));
    let oidc = Auth::from_env(
        Some(AUDIENCE),
        Some(&file),
        vec![EMAIL.to_owned()],
        false,
        Default::default(),
    )
    .await
    .unwrap();
    assert!(oidc.oidc.is_some());
    // A file's keys are fixed: there is nothing to refresh.
    assert!(oidc.oidc.unwrap().spawn_refresher().is_none());
    assert!(
        Auth::from_env(
            None,
            Some(&file),
            vec![EMAIL.to_owned()],
            false,
            Default::default()
        )
        .await
        .is_err()
    );
}

/// `config` for the test SKU's audience.
async fn configure(config: AuthConfig) -> Result<Auth, AuthError> {
    Auth::configure(Some(AUDIENCE), config).await
}

fn jwks_file() -> Option<JwksSource> {
    Some(JwksSource::File(fixture("jwks.json")))
}

#[tokio::test]
async fn oidc_without_the_service_account_email_refuses_to_start() {
    // The audience is public: without an email, any Google identity could push.
    let error = configure(AuthConfig {
        jwks: jwks_file(),
        ..AuthConfig::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(error, AuthError::NoOidcEmail), "{error:?}");
    let text = error.to_string();
    for hint in ["--oidc-email", "GOVERNOR_OIDC_EMAIL"] {
        assert!(text.contains(hint), "{text}");
    }
    for bad in [
        "",
        "pusher",
        "@project.iam.gserviceaccount.com",
        "a b@c",
        "a@",
    ] {
        let error = configure(AuthConfig {
            jwks: jwks_file(),
            emails: vec![EMAIL.to_owned(), bad.to_owned()],
            ..AuthConfig::default()
        })
        .await
        .unwrap_err();
        assert!(
            matches!(error, AuthError::BadOidcEmail { .. }),
            "{bad}: {error:?}"
        );
    }
    // Emails without a jwks are a half-done configuration.
    let error = configure(AuthConfig {
        token: Some(TOKEN.to_owned()),
        emails: vec![EMAIL.to_owned()],
        ..AuthConfig::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(error, AuthError::EmailWithoutJwks), "{error:?}");
    // Several service accounts may push.
    let auth = configure(AuthConfig {
        jwks: jwks_file(),
        emails: vec![
            "other@project.iam.gserviceaccount.com".to_owned(),
            EMAIL.to_owned(),
        ],
        ..AuthConfig::default()
    })
    .await
    .unwrap();
    let oidc = auth.oidc.unwrap();
    oidc.verify(&token("oidc_key.pem", Some("test-key-1"), &good()))
        .unwrap();
}

#[tokio::test]
async fn insecure_no_auth_with_a_token_or_oidc_refuses_to_start() {
    let with_token = AuthConfig {
        token: Some(TOKEN.to_owned()),
        insecure: true,
        ..AuthConfig::default()
    };
    let with_oidc = AuthConfig {
        jwks: jwks_file(),
        emails: vec![EMAIL.to_owned()],
        insecure: true,
        ..AuthConfig::default()
    };
    let with_both = AuthConfig {
        token: Some(TOKEN.to_owned()),
        ..with_oidc.clone()
    };
    for (config, names) in [
        (with_token, &["GOVERNOR_AUTH_TOKEN"][..]),
        (with_oidc, &["--jwks"][..]),
        (with_both, &["GOVERNOR_AUTH_TOKEN", "--jwks"][..]),
    ] {
        let error = configure(config).await.unwrap_err();
        assert!(
            matches!(error, AuthError::InsecureWithAuth { .. }),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(text.contains("--insecure-no-auth"), "{text}");
        for name in names {
            assert!(text.contains(name), "{text}");
        }
    }
    // Alone, or beside the per-route secrets, it still starts (and is open).
    let insecure = configure(AuthConfig {
        admin: Some(ADMIN.to_owned()),
        insecure: true,
        ..AuthConfig::default()
    })
    .await
    .unwrap();
    assert!(insecure.insecure);
}

#[tokio::test]
async fn with_a_pubsub_audience_the_api_token_does_not_open_pubsub_push() {
    // Bearer token, no jwks: `/pubsub/push` says what to configure; `/v1` works.
    let auth = configure(AuthConfig {
        token: Some(TOKEN.to_owned()),
        ..AuthConfig::default()
    })
    .await
    .unwrap();
    let service = Service::over(
        &GUARD,
        Arc::new(MemoryLedger::new()),
        auth,
        Options::default(),
    );
    let body = envelope("acme", r#"{"signal":"load","value":1}"#, "p-1");
    for token in [Some(TOKEN), Some(oidc_token()), None] {
        let reply = service
            .send(request("POST", "/pubsub/push", token, body.clone()))
            .await;
        reply.assert_error(403, "forbidden");
        let detail = reply.json["detail"].as_str().unwrap();
        for hint in [AUDIENCE, "--jwks", "GOVERNOR_OIDC_JWKS", "--oidc-email"] {
            assert!(detail.contains(hint), "{detail}");
        }
    }
    let reply = service
        .send(request(
            "POST",
            "/v1/signals",
            Some(TOKEN),
            signal("acme", 1.0, "s-1"),
        ))
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert_eq!(service.receipts_of("acme", "signal").len(), 1);

    // With a jwks too, the api token is refused there (401) and OIDC accepted.
    let service = Service::memory(&GUARD);
    let reply = service
        .send(request("POST", "/pubsub/push", Some(TOKEN), body.clone()))
        .await;
    reply.assert_error(401, "unauthorized");
    assert!(
        reply.json["detail"].as_str().unwrap().contains("oidc"),
        "{reply:?}"
    );
    let reply = service
        .send(request(
            "POST",
            "/pubsub/push",
            Some(oidc_token()),
            body.clone(),
        ))
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");

    // Without an audience in the spec, the api token is how pushes authenticate.
    let plain = Service::memory(&PLAIN);
    let reply = plain
        .send(request("POST", "/pubsub/push", Some(TOKEN), body))
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
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
    // The spec sets an audience: the static bearer token is not enough.
    service
        .send(push(TOKEN, "3"))
        .await
        .assert_error(401, "unauthorized");

    let now = jsonwebtoken::get_current_timestamp() as i64;
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = good();
        edit(&mut claims);
        token("oidc_key.pem", Some("test-key-1"), &claims)
    };
    // Within the 60 s skew: accepted.
    let skewed = with(&|c| {
        c["nbf"] = json!(now + 30);
        c["iat"] = json!(now + 30);
    });
    assert_eq!(service.send(push(&skewed, "4")).await.status, 204);
    // Exactly as long as Google's (an hour) and the skew: accepted.
    let hour = with(&|c| {
        c["iat"] = json!(now - 10);
        c["exp"] = json!(now - 10 + 3600 + 60);
    });
    assert_eq!(service.send(push(&hour, "5")).await.status, 204);

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
        // Any Google identity can get a token for the (public) audience.
        (
            "another service account",
            with(&|c| c["email"] = json!("attacker@evil.iam.gserviceaccount.com")),
        ),
        (
            "no email",
            with(&|c| {
                c.as_object_mut().unwrap().remove("email");
            }),
        ),
        (
            "email_verified missing",
            with(&|c| {
                c.as_object_mut().unwrap().remove("email_verified");
            }),
        ),
        (
            "email_verified false",
            with(&|c| c["email_verified"] = json!(false)),
        ),
        (
            "email_verified a string",
            with(&|c| c["email_verified"] = json!("true")),
        ),
        ("nbf in the future", with(&|c| c["nbf"] = json!(now + 600))),
        ("iat in the future", with(&|c| c["iat"] = json!(now + 600))),
        // Google signs ID tokens for an hour: one valid for a year is a
        // key that whoever holds it can replay all year.
        (
            "lives a year",
            with(&|c| c["exp"] = json!(now + 365 * 86_400)),
        ),
        (
            "lives just over an hour and the skew",
            with(&|c| {
                c["iat"] = json!(now - 10);
                c["exp"] = json!(now - 10 + 3600 + 61);
            }),
        ),
        (
            "no iat",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
        ),
        // RFC 7515 §4.1.11: a critical extension the service does not
        // understand makes the token invalid, however well signed.
        ("critical extension", {
            let pem = fs_err::read(fixture("oidc_key.pem")).unwrap();
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some("test-key-1".to_owned());
            header.crit = Some(vec!["exp-unknown".to_owned()]);
            header.extras.insert("exp-unknown", "1");
            jsonwebtoken::encode(&header, &good(), &EncodingKey::from_rsa_pem(&pem).unwrap())
                .unwrap()
        }),
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
    assert_eq!(service.receipts_of("acme", "signal").len(), 4);
}

#[test]
fn oidc_email_must_be_one_of_the_allowed_service_accounts() {
    let allowed = vec![
        "first@project.iam.gserviceaccount.com".to_owned(),
        EMAIL.to_uppercase(),
    ];
    let oidc = Oidc::from_file(&fixture("jwks.json"), AUDIENCE, allowed).unwrap();
    // The second of two, compared without regard to ASCII case.
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
    assert!(
        error.to_string().contains("someone@else.example"),
        "{error}"
    );
    // A token without `kid` is checked against the only key.
    assert!(oidc.verify(&token("oidc_key.pem", None, &good())).is_ok());
    // A forged header's text is quoted cut and escaped: no line breaks for
    // the refusal's log line, no 100 KB echoed into the answer.
    use base64::Engine as _;
    let forged_alg = format!("RS256\nforged log line {}", "x".repeat(100_000));
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({ "alg": forged_alg }).to_string());
    let error = oidc
        .verify(&format!("{header}.e30.c2ln"))
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("bearer token is not a jwt"), "{error}");
    assert!(!error.contains('\n') && error.len() < 400, "{error}");
    // No verifier without an allowed email.
    let error = Oidc::from_file(&fixture("jwks.json"), AUDIENCE, Vec::new()).unwrap_err();
    assert!(matches!(error, AuthError::NoOidcEmail), "{error:?}");
}

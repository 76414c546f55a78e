//! Pub/Sub OIDC keys from a JWKS URL, over real HTTP on loopback: fetched at
//! startup (or `serve` refuses to start, naming the URL), refreshed early when
//! a token names an unknown `kid`, kept when a refresh fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use ggen_runtime::ingress::auth::{Auth, AuthError, JwksSource, Oidc};
use ggen_runtime::ingress::service::{self, ActionsMode, LogFormat, ServeArgs};
use ggen_runtime::ingress::{IngressError, Options};
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::report::error_chain;
use serde_json::{Value, json};

use super::auth::{EMAIL, good, token};
use super::harness::{Reply, Service, envelope, fixture, request};
use super::sku::{AUDIENCE, GUARD};

/// The key of `oidc_key.pem` (in `jwks.json`).
const KID_1: &str = "test-key-1";
/// The key of `other_key.pem` (in `jwks_rotated.json`).
const KID_2: &str = "test-key-2";

/// What the JWKS server answers, and how often it was asked.
struct Served {
    reply: Mutex<(StatusCode, String)>,
    hits: AtomicUsize,
}

async fn certs(State(served): State<Arc<Served>>) -> Response {
    served.hits.fetch_add(1, Ordering::SeqCst);
    let (status, body) = served.reply.lock().unwrap().clone();
    // Long-lived like Google's: no scheduled refresh happens during a test.
    let cache = [(
        header::CACHE_CONTROL,
        "public, max-age=21600, must-revalidate",
    )];
    (status, cache, body).into_response()
}

/// A redirect to plain http off loopback (TEST-NET-1: never reached).
async fn redirect_off_loopback() -> Response {
    (
        StatusCode::FOUND,
        [(header::LOCATION, "http://192.0.2.1/oauth2/v3/certs")],
    )
        .into_response()
}

/// A JWKS endpoint on 127.0.0.1:0, stopped on drop.
struct JwksServer {
    url: String,
    served: Arc<Served>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Starts serving `body` with `status` (needs a tokio runtime).
    async fn start(status: StatusCode, body: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Served {
            reply: Mutex::new((status, body)),
            hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/oauth2/v3/certs", get(certs))
            .route("/redirect", get(redirect_off_loopback))
            .with_state(Arc::clone(&served));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        JwksServer {
            url: format!("http://{addr}/oauth2/v3/certs"),
            served,
            task,
        }
    }

    /// Answers `body` with `status` from now on.
    fn reply(&self, status: StatusCode, body: String) {
        *self.served.reply.lock().unwrap() = (status, body);
    }

    /// Requests answered so far.
    fn hits(&self) -> usize {
        self.served.hits.load(Ordering::SeqCst)
    }

    fn source(&self) -> JwksSource {
        JwksSource::parse(&self.url).unwrap()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A JWK set of the keys of the fixture JWKS files `files`.
fn jwks(files: &[&str]) -> String {
    let keys: Vec<Value> = files
        .iter()
        .flat_map(|file| {
            let set: Value = serde_json::from_slice(&fs_err::read(fixture(file)).unwrap()).unwrap();
            set["keys"].as_array().unwrap().clone()
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// A service whose only credential is Pub/Sub OIDC through `oidc`.
fn oidc_service(oidc: &Oidc) -> Service {
    let auth = Auth {
        oidc: Some(oidc.clone()),
        ..Auth::default()
    };
    Service::over(
        &GUARD,
        Arc::new(MemoryLedger::new()),
        auth,
        Options::default(),
    )
}

/// Pushes message `id` with `token` as the bearer.
async fn push(service: &Service, token: &str, id: &str) -> Reply {
    let body = envelope("acme", r#"{"signal":"load","value":1}"#, id);
    service
        .send(request("POST", "/pubsub/push", Some(token), body))
        .await
}

/// Retries like Pub/Sub until the push is accepted (bounded: ~10 s).
async fn push_until_accepted(service: &Service, token: &str, id: &str) -> Reply {
    let mut reply = push(service, token, id).await;
    for _ in 0..500 {
        if reply.status == StatusCode::NO_CONTENT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        reply = push(service, token, id).await;
    }
    reply
}

#[tokio::test]
async fn a_token_verifies_against_keys_fetched_from_a_url() {
    let server = JwksServer::start(StatusCode::OK, jwks(&["jwks.json"])).await;
    let source = server.source();
    assert!(matches!(source, JwksSource::Url(_)), "{source:?}");
    // No GOVERNOR_* variables are set in the test environment: OIDC only.
    let auth = Auth::from_env(
        Some(AUDIENCE),
        Some(&source),
        vec![EMAIL.to_owned()],
        false,
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(auth.describe(), ["pubsub-oidc"]);
    assert_eq!(server.hits(), 1);
    let service = Service::over(
        &GUARD,
        Arc::new(MemoryLedger::new()),
        auth,
        Options::default(),
    );
    let ok = token("oidc_key.pem", Some(KID_1), &good());
    let reply = push(&service, &ok, "1").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    let forged = token("other_key.pem", Some(KID_1), &good());
    push(&service, &forged, "2")
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(service.receipts_of("acme", "signal").len(), 1);
}

#[tokio::test]
async fn a_rotated_key_is_refused_then_accepted_after_the_forced_refresh() {
    let server = JwksServer::start(StatusCode::OK, jwks(&["jwks.json"])).await;
    let oidc = Oidc::from_url(&reqwest_url(&server), AUDIENCE, vec![EMAIL.to_owned()])
        .await
        .unwrap();
    let refresher = oidc.spawn_refresher().expect("a url's keys are refreshed");
    let service = oidc_service(&oidc);
    let old = token("oidc_key.pem", Some(KID_1), &good());
    assert_eq!(push(&service, &old, "old-1").await.status, 204);

    // Google publishes the next key alongside the current one.
    server.reply(StatusCode::OK, jwks(&["jwks.json", "jwks_rotated.json"]));
    let new = token("other_key.pem", Some(KID_2), &good());
    // The first push with the new kid is refused (Pub/Sub will retry) and
    // wakes the refresher; a retry is accepted once the set is swapped.
    push(&service, &new, "new-1")
        .await
        .assert_error(401, "unauthorized");
    let reply = push_until_accepted(&service, &new, "new-1").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    assert!(oidc.refresh_attempts() >= 1);
    assert!(server.hits() >= 2, "startup fetch and the forced refresh");
    // The current key still verifies.
    assert_eq!(push(&service, &old, "old-2").await.status, 204);
    assert_eq!(service.receipts_of("acme", "signal").len(), 3);
    refresher.stop();
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_previous_keys() {
    let server = JwksServer::start(StatusCode::OK, jwks(&["jwks.json"])).await;
    let oidc = Oidc::from_url(&reqwest_url(&server), AUDIENCE, vec![EMAIL.to_owned()])
        .await
        .unwrap();
    let _refresher = oidc.spawn_refresher().unwrap();
    server.reply(StatusCode::SERVICE_UNAVAILABLE, "try later".to_owned());
    // An unknown kid forces a refresh, which fails.
    let unknown = token("other_key.pem", Some("not-yet-published"), &good());
    let error: IngressError = oidc.verify(&unknown).unwrap_err();
    assert_eq!(error.code(), "unauthorized");
    for _ in 0..500 {
        if oidc.refresh_attempts() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(oidc.refresh_attempts(), 1);
    assert_eq!(server.hits(), 2);
    let ok = token("oidc_key.pem", Some(KID_1), &good());
    oidc.verify(&ok).unwrap();
}

/// The URL of `server` as the verifier takes it.
fn reqwest_url(server: &JwksServer) -> reqwest::Url {
    match server.source() {
        JwksSource::Url(url) => url,
        JwksSource::File(path) => panic!("`{}` parsed as a file", path.display()),
    }
}

/// `serve` with `--jwks url` over a ledger that must not be created.
fn serve_with_jwks(url: &str, ledger: &std::path::Path) -> service::ServeError {
    let args = ServeArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: ggen_runtime::store::StoreArgs::dir(ledger),
        insecure_no_auth: false,
        check: false,
        no_pubsub: false,
        log_format: LogFormat::Text,
        jwks: Some(JwksSource::parse(url).unwrap()),
        oidc_email: vec![EMAIL.to_owned()],
        marketplace_audience: None,
        marketplace_oidc_email: Vec::new(),
        procurement_url: None,
        gcp_token_url: None,
        gcp_key_file: None,
        max_in_flight: 16,
        min_free: Default::default(),
        retain: None,
        archive: None,
        archive_every: 60,
        partition_receipts: ggen_runtime::pg::DEFAULT_PARTITION_RECEIPTS,
        database_timeout: 10,
        segment_size: 64 << 20,
        max_connections: 64,
        header_read_timeout: 10,
        shutdown_timeout: 5,
        actions: ActionsMode::Log,
        drain_timeout: 1,
        checkpoint_every: 0,
        verify_every: 0,
        dedupe_window: 3600,
        dedupe_capacity: 100_000,
        dedupe_max_ids: 2_000_000,
        checkpoint_poll: service::CHECKPOINT_POLL,
        transparency: Default::default(),
        publish_poll: service::PUBLISH_POLL,
    };
    service::run_until(&GUARD, args, std::future::pending()).unwrap_err()
}

#[test]
fn serve_refuses_to_start_when_the_jwks_url_is_unreachable_or_serves_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    // A port nobody listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = format!("http://{}/oauth2/v3/certs", closed.local_addr().unwrap());
    drop(closed);
    // The bad endpoints run on a runtime of their own; `serve` builds another.
    let servers = tokio::runtime::Runtime::new().unwrap();
    let garbage = [
        (
            StatusCode::OK,
            "<html>not a key set</html>",
            "is not a json web key set",
        ),
        (StatusCode::OK, r#"{"keys": []}"#, "has no keys"),
        (StatusCode::NOT_FOUND, "not found", "404 Not Found"),
        (
            StatusCode::OK,
            r#"{"keys": [{"kty": "RSA", "kid": "k", "n": "!!", "e": "AQAB"}]}"#,
            "jwks key `k` at",
        ),
    ]
    .map(|(status, body, why)| {
        let server = servers.block_on(JwksServer::start(status, body.to_owned()));
        (server, why)
    });
    let cases = std::iter::once((unreachable, "cannot fetch jwks from")).chain(
        garbage
            .iter()
            .map(|(server, why)| (server.url.clone(), *why)),
    );
    for (url, why) in cases {
        let error = serve_with_jwks(&url, &ledger);
        let text = error_chain(&error);
        assert!(text.contains(&format!("`{url}`")), "{text}");
        assert!(text.contains(why), "{text}");
        assert_eq!(error.exit_code(), 1, "{text}");
        // Refused before the ledger was touched.
        assert!(!ledger.exists(), "{text}");
    }
    assert!(garbage.iter().all(|(server, _)| server.hits() == 1));
}

#[test]
fn jwks_values_starting_with_a_scheme_are_urls_and_anything_else_a_file() {
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let parse = |jwks: &str| {
        Cli::try_parse_from(["governor", "--listen", "127.0.0.1:0", "--ledger", "l"])
            .map(|cli| assert!(cli.serve.jwks.is_none()))
            .unwrap();
        Cli::try_parse_from([
            "governor",
            "--listen",
            "127.0.0.1:0",
            "--ledger",
            "l",
            "--jwks",
            jwks,
        ])
        .map(|cli| cli.serve.jwks.unwrap())
    };
    let google = "https://www.googleapis.com/oauth2/v3/certs";
    assert_eq!(
        parse(google).unwrap(),
        JwksSource::Url(google.parse().unwrap())
    );
    assert!(matches!(
        parse("HTTP://127.0.0.1:8080/certs").unwrap(),
        JwksSource::Url(_)
    ));
    for file in [
        "jwks.json",
        "/etc/governor/jwks.json",
        "https.json",
        "./http:/x",
    ] {
        assert_eq!(parse(file).unwrap(), JwksSource::File(file.into()));
    }
    assert!(parse("https://").is_err());
    assert!(matches!(
        JwksSource::parse("https://"),
        Err(AuthError::JwksUrl { .. })
    ));
}

#[tokio::test]
async fn a_jwks_url_over_plain_http_is_refused_unless_loopback() {
    // Keys fetched in the clear could be swapped, and every token forged.
    for url in [
        "http://www.googleapis.com/oauth2/v3/certs",
        "http://10.0.0.7/certs",
        "http://localhost.evil.example/certs",
    ] {
        let error = JwksSource::parse(url).unwrap_err();
        assert!(
            matches!(error, AuthError::InsecureJwksUrl { .. }),
            "{url}: {error:?}"
        );
        // The library entry point refuses it too, before any connection.
        let parsed: reqwest::Url = url.parse().unwrap();
        let error = Oidc::from_url(&parsed, AUDIENCE, vec![EMAIL.to_owned()])
            .await
            .unwrap_err();
        assert!(
            matches!(error, AuthError::InsecureJwksUrl { .. }),
            "{url}: {error:?}"
        );
    }
    // `serve --jwks http://…` fails at argument parsing, saying why.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let error = Cli::try_parse_from([
        "governor",
        "--listen",
        "127.0.0.1:0",
        "--ledger",
        "l",
        "--jwks",
        "http://www.googleapis.com/oauth2/v3/certs",
    ])
    .unwrap_err();
    assert!(error.to_string().contains("https://"), "{error}");
    // A loopback server may redirect, but not off https/loopback.
    let server = JwksServer::start(StatusCode::OK, jwks(&["jwks.json"])).await;
    let redirecting: reqwest::Url = server
        .url
        .replace("/oauth2/v3/certs", "/redirect")
        .parse()
        .unwrap();
    let error = Oidc::from_url(&redirecting, AUDIENCE, vec![EMAIL.to_owned()])
        .await
        .unwrap_err();
    let text = error_chain(&error);
    assert!(matches!(error, AuthError::FetchJwks { .. }), "{text}");
    assert!(text.contains("not `https://`"), "{text}");
}

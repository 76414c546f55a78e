//! A service under test: state over a memory or file ledger, and helpers
//! to build requests and read answers.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use ggen_runtime::actuator::webhook::WebhookConfig;
use ggen_runtime::actuator::{ActuatorMode, Actuators, Dispatcher, DispatcherOptions};
use ggen_runtime::clock::Timestamp;
use ggen_runtime::ingress::auth::{Auth, Oidc, Secret, SigningKey};
use ggen_runtime::ingress::{AppState, Options, router};
use ggen_runtime::ledger::file::{FileLedger, FileOptions};
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::ledger::{Ledger, VerifyReport};
use ggen_runtime::registry::Registry;
use ggen_runtime::sku::PolicyPack;
use ggen_runtime::tenant::TenantId;
use serde_json::Value;
use tower::ServiceExt as _;

use super::auth::{EMAIL, good, token};
use super::sku::AUDIENCE;

/// The api bearer token.
pub const TOKEN: &str = "api-token-0123456789";
/// The operator token.
pub const ADMIN: &str = "admin-token-9876543210";
/// The marketplace HMAC key.
pub const SECRET: &[u8] = b"marketplace-secret";

/// The fixtures folder.
pub fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/ingress/fixtures")
        .join(name)
}

/// Every mechanism configured: bearer, admin, HMAC, OIDC (fixture JWKS).
pub fn full_auth() -> Auth {
    Auth {
        token: Some(Secret::new(TOKEN)),
        admin: Some(Secret::new(ADMIN)),
        marketplace: Some(SigningKey::new(SECRET)),
        oidc: Some(
            Oidc::from_file(&fixture("jwks.json"), AUDIENCE, vec![EMAIL.to_owned()]).unwrap(),
        ),
        marketplace_push: None,
        insecure: false,
    }
}

/// A service under test.
pub struct Service {
    pub state: AppState,
    pub registry: Arc<Registry>,
    pub ledger: Arc<dyn Ledger>,
    pub actuator: Option<Dispatcher>,
}

/// An answer: status and body (JSON, or `Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub json: Value,
    pub text: String,
}

impl Reply {
    /// Asserts an error answer: `status`, JSON `{"error": code, "detail": …}`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.json["error"], code, "{self:?}");
        assert!(
            self.json["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{self:?}"
        );
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "{self:?}"
        );
    }
}

impl Service {
    /// Over `ledger`, with `auth` and `options`.
    pub fn over(
        pack: &'static dyn PolicyPack,
        ledger: Arc<dyn Ledger>,
        auth: Auth,
        options: Options,
    ) -> Service {
        let registry = Arc::new(Registry::new(pack, Arc::clone(&ledger)));
        registry.recover().unwrap();
        let actuator = options.actuator.clone();
        Service {
            state: AppState::new(Arc::clone(&registry), auth, options),
            registry,
            ledger,
            actuator,
        }
    }

    /// A memory ledger and every auth mechanism.
    pub fn memory(pack: &'static dyn PolicyPack) -> Service {
        Service::over(
            pack,
            Arc::new(MemoryLedger::new()),
            full_auth(),
            Options::default(),
        )
    }

    /// A file ledger in `dir` and every auth mechanism.
    pub fn file(pack: &'static dyn PolicyPack, dir: &Path, options: FileOptions) -> Service {
        Service::over(
            pack,
            Arc::new(FileLedger::open(dir, options).unwrap()),
            full_auth(),
            Options::default(),
        )
    }

    /// A memory ledger with a log-only actuator attached (needs a tokio runtime).
    pub fn with_log_actuator(pack: &'static dyn PolicyPack) -> Service {
        let actuators = Actuators::new(WebhookConfig {
            default_url: None,
            secret: None,
        })
        .unwrap();
        let dispatcher = Dispatcher::new(
            tokio::runtime::Handle::current(),
            actuators,
            DispatcherOptions {
                mode: ActuatorMode::LogOnly,
                ..DispatcherOptions::default()
            },
        );
        Service::over(
            pack,
            Arc::new(MemoryLedger::new()),
            full_auth(),
            Options {
                actuator: Some(dispatcher),
                ..Options::default()
            },
        )
    }

    /// Sends `request` through a fresh router.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        Reply {
            status,
            content_type,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// Asserts that every chain verifies.
    #[track_caller]
    pub fn assert_verifies(&self) -> VerifyReport {
        let report = self.ledger.verify().unwrap();
        assert_eq!(report.first_bad, None);
        report
    }

    /// A tenant's receipts, parsed.
    pub fn receipts(&self, tenant: &str) -> Vec<Value> {
        let tenant = TenantId::new(tenant).unwrap();
        self.ledger
            .read(&tenant, 0, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(&r.bytes).unwrap())
            .collect()
    }

    /// A tenant's receipts of `kind`.
    pub fn receipts_of(&self, tenant: &str, kind: &str) -> Vec<Value> {
        self.receipts(tenant)
            .into_iter()
            .filter(|r| r["kind"] == kind)
            .collect()
    }
}

/// A request with optional bearer token and JSON content type.
pub fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

/// `POST path` with `body` and the api token.
pub fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    request("POST", path, Some(TOKEN), body)
}

/// A valid Pub/Sub OIDC token for the test SKU (minted once per process).
pub fn oidc_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| token("oidc_key.pem", Some("test-key-1"), &good()))
}

/// `POST /pubsub/push` with `body` and a valid OIDC token (the test SKU
/// sets an audience, so the api token is not accepted there).
pub fn pubsub(body: impl Into<Body>) -> Request<Body> {
    request("POST", "/pubsub/push", Some(oidc_token()), body)
}

/// `GET path` with the api token.
pub fn get(path: &str) -> Request<Body> {
    request("GET", path, Some(TOKEN), Body::empty())
}

/// A `/v1/signals` object.
pub fn signal(tenant: &str, value: f64, id: &str) -> String {
    serde_json::json!({ "tenant": tenant, "signal": "load", "value": value, "id": id }).to_string()
}

/// A Pub/Sub push envelope whose data is `data` (already JSON text).
pub fn envelope(tenant: &str, data: &str, message_id: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    serde_json::json!({
        "message": {
            "data": encoded,
            "attributes": { "tenant_id": tenant },
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": "2026-01-01T00:00:00Z",
            "publish_time": "2026-01-01T00:00:00Z",
        },
        "subscription": "projects/p/subscriptions/s",
    })
    .to_string()
}

/// A marketplace request signed now.
pub fn marketplace(body: &str) -> Request<Body> {
    marketplace_signed_at(body, Timestamp::now())
}

/// A marketplace request signed at `at` (a captured request replayed later
/// carries its old signature time).
pub fn marketplace_signed_at(body: &str, at: Timestamp) -> Request<Body> {
    let signature = SigningKey::new(SECRET).sign(body.as_bytes(), at);
    Request::builder()
        .method("POST")
        .uri("/v1/marketplace/events")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-ggen-signature", signature)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// The `/metrics` text with the global `sku="<id>"` label taken out of every
/// series (after checking every series has it), so tests name series by
/// their own labels.
pub fn without_sku(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
        } else {
            let open = line
                .find("{sku=\"")
                .unwrap_or_else(|| panic!("no sku label: {line}"));
            let value_end = line[open + 6..].find('"').expect("a closed sku value") + open + 7;
            let rest = &line[value_end..];
            out.push_str(&line[..open]);
            match rest.strip_prefix(',') {
                Some(labels) => {
                    out.push('{');
                    out.push_str(labels);
                }
                None => out.push_str(rest.strip_prefix('}').expect("sku ends the labels")),
            }
        }
        out.push('\n');
    }
    out
}

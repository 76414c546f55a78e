//! The `webhook` adapter: an HTTP POST of the action as JSON.
//!
//! The body is `{"action","at","idempotency_key","params","sku","tenant","undo"}`
//! (keys sorted), the same bytes on every attempt. Headers:
//! `Idempotency-Key: <key>` (the same on every attempt, so the target can
//! drop repeats) and, when a secret is configured,
//! `X-Ggen-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." ‖ body>`
//! (see [`crate::signature`]; `t` is the attempt's wall-clock time, so the
//! receiver can refuse a captured request replayed later).
//!
//! Target URL: the action's `params.url` when the spec names one, else
//! `GOVERNOR_WEBHOOK_URL`. Secret: `GOVERNOR_WEBHOOK_SECRET` (an empty value
//! counts as unset). Redirects are not followed (a 3xx is a permanent
//! failure: a POST must not silently turn into a GET elsewhere).
//!
//! Status mapping: 2xx ok; 408, 429 and 5xx retryable; any other status
//! permanent. Connection errors and timeouts are retryable.
//!
//! A URL may carry a credential (userinfo, a path segment, a `?token=`), and
//! the result's detail lands in a permanent receipt and a log line: details
//! name the target by [`redacted`] `scheme://host[:port]` only, and reqwest
//! errors are stripped of their URL.

use crate::report::error_chain;
use std::sync::Once;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{ActionCall, Actuator, ActuatorError, BoxFuture, Outcome};
use crate::clock::Timestamp;
use crate::signature::SigningKey;

/// Environment variable naming the default webhook URL.
pub const URL_ENV: &str = "GOVERNOR_WEBHOOK_URL";
/// Environment variable holding the HMAC key for `X-Ggen-Signature`.
pub const SECRET_ENV: &str = "GOVERNOR_WEBHOOK_SECRET";
/// The signature header (the same format signs incoming marketplace events).
pub const SIGNATURE_HEADER: &str = "X-Ggen-Signature";
/// The idempotency header.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Where webhooks go and how they are signed.
#[derive(Clone, Default)]
pub struct WebhookConfig {
    /// URL used for actions whose params name no `url`.
    pub default_url: Option<String>,
    /// HMAC-SHA256 key for the signature header; `None`: no header.
    pub secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, nor a credential in the URL.
        f.debug_struct("WebhookConfig")
            .field("default_url", &self.default_url.as_deref().map(redacted))
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl WebhookConfig {
    /// Reads `GOVERNOR_WEBHOOK_URL` and `GOVERNOR_WEBHOOK_SECRET` (empty = unset).
    pub fn from_env() -> WebhookConfig {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        WebhookConfig {
            default_url: var(URL_ENV),
            secret: var(SECRET_ENV).map(String::into_bytes),
        }
    }
}

/// The JSON body of a webhook call (fields in sorted order).
#[derive(Debug, Serialize)]
struct Body<'a> {
    action: &'a str,
    at: Timestamp,
    idempotency_key: &'a str,
    params: &'a Map<String, Value>,
    sku: &'a str,
    tenant: &'a str,
    undo: bool,
}

/// The exact bytes POSTed for `call`.
pub fn body(call: &ActionCall) -> Vec<u8> {
    let body = Body {
        action: call.action.name,
        at: call.at,
        idempotency_key: &call.idempotency_key,
        params: &call.params,
        sku: call.sku,
        tenant: call.tenant.as_str(),
        undo: call.undo,
    };
    // A struct of strings, a bool and a JSON map always serializes.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `url` as receipts and logs may show it: `scheme://host[:port]`, never its
/// userinfo, path, query or fragment; `<invalid url>` when it does not parse.
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(url) => match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
            (Some(host), None) => format!("{}://{host}", url.scheme()),
            (None, _) => format!("{}:", url.scheme()),
        },
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// Whether `url` may carry a credential (a token, an assertion, or keys
/// that verify tokens): `https://`, or plain `http://` to a loopback host
/// (`127.0.0.0/8`, `::1`, `localhost`; tests and local sidecars) or to one
/// of `plain_hosts`. Anything sent in the clear elsewhere could be read,
/// replayed or swapped by anyone on the path.
pub fn secure_url(url: &reqwest::Url, plain_hosts: &[&str]) -> bool {
    // `host_str` brackets IPv6 addresses; the URL parser lowercases names.
    let plain_ok = url.host_str().is_some_and(|host| {
        host == "localhost"
            || plain_hosts.contains(&host)
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match url.scheme() {
        "https" => true,
        "http" => plain_ok,
        _ => false,
    }
}

/// Whether an HTTP status is worth another attempt.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// Installs `ring` as the process-wide rustls provider, once (reqwest is
/// built without a provider so that nothing needs aws-lc-rs or cmake).
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider was installed first: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// POSTs actions to their webhook over a pooled HTTP client.
#[derive(Debug, Clone)]
pub struct WebhookActuator {
    client: reqwest::Client,
    config: WebhookConfig,
}

impl WebhookActuator {
    /// An actuator with `config`; builds the HTTP client (rustls + ring for https).
    pub fn new(config: WebhookConfig) -> Result<WebhookActuator, ActuatorError> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ggen-runtime/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ActuatorError::Client)?;
        Ok(WebhookActuator { client, config })
    }

    /// The URL `call` goes to: `params.url`, else the configured default.
    pub fn url<'a>(&'a self, call: &'a ActionCall) -> Result<&'a str, String> {
        match call.params.get("url") {
            Some(Value::String(url)) => Ok(url),
            Some(_) => Err("`params.url` must be a string".to_owned()),
            None => self.config.default_url.as_deref().ok_or_else(|| {
                format!("no webhook url: set `params.url` in the spec or `{URL_ENV}`")
            }),
        }
    }

    async fn post(&self, call: &ActionCall) -> Outcome {
        let url = match self.url(call) {
            Ok(url) => url,
            Err(detail) => return Outcome::permanent(detail),
        };
        let target = redacted(url);
        let body = body(call);
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_HEADER, &call.idempotency_key);
        if let Some(secret) = &self.config.secret {
            let signature = SigningKey::new(secret).sign(&body, Timestamp::now());
            request = request.header(SIGNATURE_HEADER, signature);
        }
        match request.body(body).send().await {
            Ok(response) => {
                let status = response.status();
                let detail = format!("webhook `{target}` answered `{}`", status.as_u16());
                if status.is_success() {
                    Outcome::Ok { detail }
                } else if retryable_status(status.as_u16()) {
                    Outcome::transient(detail)
                } else {
                    Outcome::permanent(detail)
                }
            }
            // reqwest names the whole URL in its errors: drop it.
            Err(e) if e.is_builder() => Outcome::permanent(format!(
                "invalid webhook request to `{target}`: {}",
                error_chain(&e.without_url())
            )),
            Err(e) if e.is_timeout() => Outcome::TimedOut,
            Err(e) => Outcome::transient(format!(
                "webhook request to `{target}` failed: {}",
                error_chain(&e.without_url())
            )),
        }
    }
}

impl Actuator for WebhookActuator {
    fn attempt<'a>(&'a self, call: &'a ActionCall, _attempt: u32) -> BoxFuture<'a, Outcome> {
        Box::pin(self.post(call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_keep_scheme_host_and_port_only() {
        for (url, shown) in [
            (
                "https://hooks.example.com/t/s3cret?token=s3cret#s3cret",
                "https://hooks.example.com",
            ),
            (
                "http://user:s3cret@127.0.0.1:8080/s3cret",
                "http://127.0.0.1:8080",
            ),
            ("https://[::1]:443/x", "https://[::1]"),
            ("http://[::1]:9000/x?token=s3cret", "http://[::1]:9000"),
            ("mailto:s3cret@example.com", "mailto:"),
            ("not a url s3cret", "<invalid url>"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }

    #[test]
    fn statuses_map_to_retry_or_not() {
        for status in [408, 429, 500, 502, 503, 599] {
            assert!(retryable_status(status), "{status}");
        }
        for status in [200, 301, 400, 401, 403, 404, 409, 422] {
            assert!(!retryable_status(status), "{status}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let config = WebhookConfig {
            default_url: Some("http://127.0.0.1:1/hunter3?token=hunter4".into()),
            secret: Some(b"hunter2".to_vec()),
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("http://127.0.0.1:1"), "{shown}");
        assert!(shown.contains("<set>"), "{shown}");
    }
}

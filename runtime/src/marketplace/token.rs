//! Google access tokens from one of two sources:
//!
//! - a metadata-server style endpoint ([`Tokens::new`]): the GKE metadata
//!   server (Workload Identity) by default, or any URL that answers `GET`
//!   with `{"access_token", "expires_in", "token_type"}` as it does
//!   (`--gcp-token-url`, so tests and air-gapped set-ups can point it
//!   elsewhere);
//! - a service-account key file ([`Tokens::from_key_file`]), the JSON
//!   Google's console downloads: a JWT signed with its private key is
//!   exchanged at its `token_uri` for a token (the OAuth 2.0 JWT bearer
//!   grant, RFC 7523, as Google documents it for service accounts).
//!
//! A token is reused until [`EARLY`] before it expires, then replaced; one
//! refresh runs at a time. If a refresh fails, the old token is used while
//! it is still valid (the failure is logged), so a short outage of the
//! endpoint costs nothing; once it has expired, the failure is the caller's.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::actuator::webhook::redacted;
use crate::report::error_chain;

/// The GKE / GCE metadata server's token endpoint for the workload's
/// service account.
pub const METADATA_TOKEN_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";

/// How long before its expiry a token is replaced.
pub const EARLY: Duration = Duration::from_secs(300);

/// How long one request to the endpoint may take: well under one
/// Procurement call's attempt ([`super::Retry`]), so that a stalled endpoint
/// leaves the call time to go on with the cached token while it is valid.
const TIMEOUT: Duration = Duration::from_millis(1500);

/// The scope asked for with a key file's assertion: the one the
/// Procurement API documents.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How long a key file's assertion is valid: Google's maximum.
const ASSERTION_LIFETIME: u64 = 3600;

/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, form-encoded
/// (only the `:` needs it).
const JWT_BEARER_GRANT: &str = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The endpoint could not be reached.
    #[error("the token endpoint `{url}` could not be reached: {detail}")]
    Unreachable {
        /// The endpoint (scheme, host and port).
        url: String,
        /// Why.
        detail: String,
    },
    /// The endpoint answered with an error status.
    #[error("the token endpoint `{url}` answered `{status}`")]
    Status {
        /// The endpoint (scheme, host and port).
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The endpoint answered something that is not a token.
    #[error("the token endpoint `{url}` answered what is not a token: {detail}")]
    Malformed {
        /// The endpoint (scheme, host and port).
        url: String,
        /// What is wrong.
        detail: String,
    },
}

/// Why a service-account key file cannot be used. Never shows the private
/// key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("the service-account key file `{}` could not be read", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a JSON object.
    #[error("the service-account key file `{}` is not a JSON object", path.display())]
    NotJson {
        /// The key file.
        path: PathBuf,
        /// Where the JSON breaks (`None`: valid JSON, but not an object).
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The file holds another kind of credential.
    #[error(
        "the key file `{}` holds credentials of type `{kind}`, not `service_account`",
        path.display()
    )]
    NotServiceAccount {
        /// The key file.
        path: PathBuf,
        /// Its `type`.
        kind: String,
    },
    /// A field the grant needs is absent, empty or not a string.
    #[error(
        "the service-account key file `{}` has no `{field}` (a non-empty string)",
        path.display()
    )]
    MissingField {
        /// The key file.
        path: PathBuf,
        /// The field.
        field: &'static str,
    },
    /// The `private_key` is not an RSA private key in PEM that can sign.
    #[error(
        "the `private_key` of the service-account key file `{}` is not a usable RSA private key in PEM",
        path.display()
    )]
    PrivateKey {
        /// The key file.
        path: PathBuf,
        /// Why (never the key).
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// The `token_uri` is not a URL, or not `https://` to a host that is
    /// not loopback.
    #[error(
        "the `token_uri` of the service-account key file `{}`, `{url}`, is not an `https://` URL: an assertion sent in the clear could be replayed (plain `http://` is allowed for loopback hosts only)",
        path.display()
    )]
    InsecureTokenUri {
        /// The key file.
        path: PathBuf,
        /// The `token_uri` (scheme, host and port).
        url: String,
    },
    /// The HTTP client could not be built.
    #[error("the HTTP client for the token endpoint could not be built")]
    Client(#[source] reqwest::Error),
}

#[derive(Deserialize)]
struct Answer {
    access_token: String,
    expires_in: u64,
    #[serde(default)]
    token_type: Option<String>,
}

#[derive(Clone)]
struct Cached {
    token: String,
    expires: Instant,
}

/// Where tokens come from.
enum Source {
    /// `GET` with `Metadata-Flavor: Google`.
    Metadata {
        /// The endpoint (may hold credentials: shown only by [`redacted`]).
        url: String,
    },
    /// `POST` of a signed assertion to the key file's `token_uri`.
    KeyFile(KeyFile),
}

/// What a service-account key file holds that the grant needs.
struct KeyFile {
    /// The service account: the assertion's `iss`.
    client_email: String,
    /// The key's id: the assertion's `kid`.
    private_key_id: String,
    /// Where the assertion is exchanged, and its `aud`; `https://`, or
    /// `http://` to a loopback host.
    token_uri: String,
    /// The service account's RSA private key, checked to sign.
    key: EncodingKey,
}

/// The claims of a key file's assertion.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

impl KeyFile {
    /// Reads and checks the key file at `path`, down to signing once.
    fn load(path: &Path) -> Result<KeyFile, KeyFileError> {
        let bytes = fs_err::read(path).map_err(|source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        // Read as a plain `Value`: serde's type errors could quote a field's
        // value, and one of them is the private key.
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| KeyFileError::NotJson {
                path: path.to_owned(),
                source: Some(source),
            })?;
        let Some(object) = value.as_object() else {
            return Err(KeyFileError::NotJson {
                path: path.to_owned(),
                source: None,
            });
        };
        let field = |field: &'static str| match object.get(field) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
            _ => Err(KeyFileError::MissingField {
                path: path.to_owned(),
                field,
            }),
        };
        let kind = field("type")?;
        if kind != "service_account" {
            return Err(KeyFileError::NotServiceAccount {
                path: path.to_owned(),
                kind: kind.to_owned(),
            });
        }
        let client_email = field("client_email")?;
        let private_key_id = field("private_key_id")?;
        let private_key = field("private_key")?;
        let token_uri = field("token_uri")?;
        if !secure(token_uri) {
            return Err(KeyFileError::InsecureTokenUri {
                path: path.to_owned(),
                url: redacted(token_uri),
            });
        }
        let key_error = |source| KeyFileError::PrivateKey {
            path: path.to_owned(),
            source,
        };
        let key_file = KeyFile {
            client_email: client_email.to_owned(),
            private_key_id: private_key_id.to_owned(),
            token_uri: token_uri.to_owned(),
            key: EncodingKey::from_rsa_pem(private_key.as_bytes()).map_err(key_error)?,
        };
        // `from_rsa_pem` only unwraps the PEM (a public key passes); signing
        // is what proves the key usable, here rather than at the first refresh.
        key_file.assertion(SystemTime::now()).map_err(key_error)?;
        Ok(key_file)
    }

    /// The signed JWT that asks for a token, issued at `now`.
    fn assertion(&self, now: SystemTime) -> Result<String, jsonwebtoken::errors::Error> {
        // A clock before 1970 is not worth an error of its own: Google refuses the `iat`.
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.private_key_id.clone());
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

/// Whether `url` may receive an assertion: `https://`, or plain `http://`
/// to a loopback host (`127.0.0.0/8`, `::1`, `localhost`; for tests).
/// Anyone on the path of a plain request could replay the assertion until
/// it expires. (The rule of the ingress's JWKS URLs.)
fn secure(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|url| crate::actuator::webhook::secure_url(&url, &[]))
}

/// Access tokens from one source, cached and refreshed before expiry.
pub struct Tokens {
    source: Source,
    client: reqwest::Client,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token, nor the private key.
        let mut shown = f.debug_struct("Tokens");
        match &self.source {
            Source::Metadata { url } => shown.field("url", &redacted(url)),
            Source::KeyFile(key_file) => shown
                .field("client_email", &key_file.client_email)
                .field("token_uri", &redacted(&key_file.token_uri)),
        };
        shown.finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens from the metadata-server style endpoint `url` (see
    /// [`METADATA_TOKEN_URL`]).
    pub fn new(url: impl Into<String>) -> Result<Tokens, reqwest::Error> {
        Tokens::with_source(Source::Metadata { url: url.into() })
    }

    /// Tokens for the service account of the key file at `path` (the JSON
    /// Google's console downloads), read and checked now: a JWT signed with
    /// its `private_key` is exchanged at its `token_uri` for each token.
    pub fn from_key_file(path: &Path) -> Result<Tokens, KeyFileError> {
        let key_file = KeyFile::load(path)?;
        Tokens::with_source(Source::KeyFile(key_file)).map_err(KeyFileError::Client)
    }

    fn with_source(source: Source) -> Result<Tokens, reqwest::Error> {
        crate::actuator::webhook::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .build()?;
        Ok(Tokens {
            source,
            client,
            cached: Mutex::new(None),
        })
    }

    /// Forgets the cached token (the API refused it): the next
    /// [`Tokens::token`] fetches a fresh one.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    /// A bearer token: the cached one until [`EARLY`] before it expires,
    /// then a fresh one, or, if that cannot be had, the cached one while it
    /// has not expired.
    pub async fn token(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        if let Some(c) = cached.as_ref()
            && now + EARLY < c.expires
        {
            return Ok(c.token.clone());
        }
        match self.fetch().await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *cached = Some(fresh);
                Ok(token)
            }
            Err(error) => match cached.as_ref() {
                Some(c) if now < c.expires => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "refreshing the Google access token failed; the current one is still valid"
                    );
                    Ok(c.token.clone())
                }
                _ => Err(error),
            },
        }
    }

    /// The request for a token, and the endpoint to name in its errors.
    fn request(&self) -> Result<(reqwest::RequestBuilder, String), TokenError> {
        match &self.source {
            Source::Metadata { url } => Ok((
                self.client.get(url).header("Metadata-Flavor", "Google"),
                redacted(url),
            )),
            Source::KeyFile(key_file) => {
                let url = redacted(&key_file.token_uri);
                // Signed once at load, so this fails only if the key stopped signing.
                let assertion =
                    key_file
                        .assertion(SystemTime::now())
                        .map_err(|e| TokenError::Unreachable {
                            url: url.clone(),
                            detail: format!("signing the assertion failed: {}", error_chain(&e)),
                        })?;
                // The assertion is base64url and `.`: nothing to encode.
                let body = format!("{JWT_BEARER_GRANT}&assertion={assertion}");
                let request = self
                    .client
                    .post(&key_file.token_uri)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body);
                Ok((request, url))
            }
        }
    }

    async fn fetch(&self) -> Result<Cached, TokenError> {
        let (request, url) = self.request()?;
        let asked = Instant::now();
        let response = request.send().await.map_err(|e| TokenError::Unreachable {
            url: url.clone(),
            detail: error_chain(&e.without_url()),
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(TokenError::Status {
                url,
                status: status.as_u16(),
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| TokenError::Unreachable {
                url: url.clone(),
                detail: error_chain(&e.without_url()),
            })?;
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        if answer.access_token.is_empty()
            || answer
                .token_type
                .as_deref()
                .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(TokenError::Malformed {
                url,
                detail: "an empty `access_token`, or a `token_type` other than `Bearer`".to_owned(),
            });
        }
        // Counted from when it was asked for: the token may be older than the answer.
        let lifetime = Duration::from_secs(answer.expires_in.min(86_400));
        Ok(Cached {
            token: answer.access_token,
            expires: asked + lifetime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_the_endpoint_by_host_only() {
        let tokens =
            Tokens::new("http://user:secret@metadata.example:8080/computeMetadata/v1/token?x=1")
                .unwrap();
        let shown = format!("{tokens:?}");
        assert!(shown.contains("http://metadata.example:8080"), "{shown}");
        for hidden in ["secret", "user", "computeMetadata", "x=1"] {
            assert!(!shown.contains(hidden), "{shown}");
        }
    }
}

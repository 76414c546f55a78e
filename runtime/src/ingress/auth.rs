//! Inbound authentication: bearer tokens, the admin token, marketplace HMAC
//! signatures and Google-signed Pub/Sub OIDC tokens.
//!
//! Secrets come from the environment only, read once at startup
//! ([`Auth::from_env`]). Every secret comparison is constant-time: tokens are
//! compared as SHA-256 digests with `subtle`, so neither content nor length
//! leaks through timing; HMACs use `Mac::verify_slice`.
//!
//! Pub/Sub OIDC keys come from a JWKS file or URL ([`JwksSource`], module
//! `jwks`): a URL's keys are refreshed in the background
//! ([`Oidc::spawn_refresher`]) while [`Oidc::verify`] only reads the current
//! set, with no I/O on the request path.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::IngressError;
use crate::clock::Timestamp;
pub use crate::signature::SigningKey;
use jwks::{Keys, Remote, decode_keys};

mod jwks;

pub use jwks::{
    DEFAULT_REFRESH, FETCH_TIMEOUT, JwksRefresher, JwksSource, MAX_REFRESH, MIN_FORCED_REFRESH,
    MIN_REFRESH, RETRY_REFRESH,
};

/// Bearer token for `/v1/*` and `/pubsub/push`.
pub const ENV_AUTH_TOKEN: &str = "GOVERNOR_AUTH_TOKEN";
/// Operator token for `POST /v1/tenants/{t}/reset`.
pub const ENV_ADMIN_TOKEN: &str = "GOVERNOR_ADMIN_TOKEN";
/// HMAC-SHA256 key of marketplace events.
pub const ENV_MARKETPLACE_SECRET: &str = "GOVERNOR_MARKETPLACE_SECRET";
/// The JWKS (a file, or an `https://` URL) of the keys that sign Pub/Sub OIDC tokens.
pub const ENV_OIDC_JWKS: &str = "GOVERNOR_OIDC_JWKS";
/// The header carrying a marketplace event's signature.
pub const SIGNATURE_HEADER: &str = crate::signature::HEADER;
/// How far a marketplace signature's timestamp may be from the server's clock.
pub const SIGNATURE_TOLERANCE_SECS: i64 = crate::signature::DEFAULT_TOLERANCE_SECS;
/// Issuers of Google-signed OIDC tokens.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// Why the authentication configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The JWKS file could not be read.
    #[error("cannot read jwks file `{path}`")]
    ReadJwks {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The JWKS file is not a JWK set.
    #[error("jwks file `{path}` is not a json web key set")]
    ParseJwks {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A key of the set cannot verify RS256.
    #[error("jwks key `{kid}` is not a usable rsa key")]
    BadKey {
        /// The key's `kid` (or its index).
        kid: String,
        /// The cause.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// A `--jwks` value that starts like a URL but is not one.
    #[error("jwks url `{url}` is not a valid url")]
    JwksUrl {
        /// The value given.
        url: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The JWKS URL could not be fetched (connection, timeout, non-2xx status).
    #[error("cannot fetch jwks from `{url}`")]
    FetchJwks {
        /// The URL.
        url: reqwest::Url,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The JWKS URL answered something that is not a JWK set.
    #[error("jwks at `{url}` is not a json web key set")]
    ParseRemoteJwks {
        /// The URL.
        url: reqwest::Url,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The JWKS URL answered a set without keys.
    #[error("jwks at `{url}` has no keys")]
    EmptyJwks {
        /// The URL.
        url: reqwest::Url,
    },
    /// A key of the set fetched from a URL cannot verify RS256.
    #[error("jwks key `{kid}` at `{url}` is not a usable rsa key")]
    BadRemoteKey {
        /// The URL.
        url: reqwest::Url,
        /// The key's `kid` (or its index).
        kid: String,
        /// The cause.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// The HTTP client for JWKS fetches could not be built.
    #[error("cannot build the http client for jwks fetches")]
    Client(#[source] reqwest::Error),
    /// OIDC was configured for a SKU without a Pub/Sub audience.
    #[error("a jwks was given but the sku names no pub/sub oidc audience")]
    NoAudience,
    /// An empty secret in the environment.
    #[error("environment variable `{name}` is set but empty")]
    EmptySecret {
        /// The variable.
        name: &'static str,
    },
    /// Neither a bearer token nor OIDC, and `--insecure-no-auth` not given.
    #[error(
        "no authentication configured: set `GOVERNOR_AUTH_TOKEN` (or give a jwks for pub/sub oidc), or pass `--insecure-no-auth` for local experiments"
    )]
    NoAuth,
}

/// A secret compared in constant time (kept only as its SHA-256 digest).
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Wraps `text`.
    pub fn new(text: &str) -> Secret {
        Secret(Sha256::digest(text.as_bytes()).into())
    }

    /// Whether `candidate` is this secret (constant time).
    pub fn matches(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        bool::from(self.0.ct_eq(&digest))
    }
}

/// The claims of a Pub/Sub push token that are checked beyond the standard ones.
#[derive(Debug, Deserialize)]
struct Claims {
    email: Option<String>,
    email_verified: Option<bool>,
}

/// Verifies Google-signed OIDC tokens (RS256) against a JWK set: fixed (a
/// file) or refreshed from a URL. Clones share the key set.
#[derive(Clone)]
pub struct Oidc {
    /// The current `(kid, key)` pairs; the refresher swaps the whole set.
    keys: Arc<RwLock<Arc<Keys>>>,
    /// Where the keys are refreshed from; `None` for a fixed set.
    remote: Option<Arc<Remote>>,
    validation: Validation,
    email: Option<String>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("keys", &self.current().len())
            .field("url", &self.remote.as_ref().map(|r| r.url.as_str()))
            .field("audience", &self.validation.aud)
            .field("email", &self.email)
            .finish()
    }
}

impl Oidc {
    /// A verifier of tokens for `audience` signed by a key of `jwks`;
    /// `email`, when given, must be the token's (verified) `email` claim.
    pub fn new(jwks: &JwkSet, audience: &str, email: Option<String>) -> Result<Oidc, AuthError> {
        let keys = decode_keys(jwks).map_err(|(kid, source)| AuthError::BadKey { kid, source })?;
        Ok(Oidc::over(keys, None, audience, email))
    }

    /// The verifier over `keys`, refreshed from `remote` if given.
    fn over(keys: Keys, remote: Option<Remote>, audience: &str, email: Option<String>) -> Oidc {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&GOOGLE_ISSUERS);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.leeway = 30;
        Oidc {
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            remote: remote.map(Arc::new),
            validation,
            email,
        }
    }

    /// Reads a JWKS file and builds the verifier.
    pub fn from_file(
        path: &Path,
        audience: &str,
        email: Option<String>,
    ) -> Result<Oidc, AuthError> {
        let text = fs_err::read(path).map_err(|source| AuthError::ReadJwks {
            path: path.to_path_buf(),
            source,
        })?;
        let jwks: JwkSet =
            serde_json::from_slice(&text).map_err(|source| AuthError::ParseJwks {
                path: path.to_path_buf(),
                source,
            })?;
        Oidc::new(&jwks, audience, email)
    }

    /// Fetches the JWK set at `url` (an error names the URL) and builds a
    /// verifier whose keys [`Oidc::spawn_refresher`] keeps fresh.
    pub async fn from_url(
        url: &reqwest::Url,
        audience: &str,
        email: Option<String>,
    ) -> Result<Oidc, AuthError> {
        let (remote, keys) = Remote::connect(url).await?;
        Ok(Oidc::over(keys, Some(remote), audience, email))
    }

    /// [`Oidc::from_file`] or [`Oidc::from_url`], as `source` says.
    pub async fn from_source(
        source: &JwksSource,
        audience: &str,
        email: Option<String>,
    ) -> Result<Oidc, AuthError> {
        match source {
            JwksSource::File(path) => Oidc::from_file(path, audience, email),
            JwksSource::Url(url) => Oidc::from_url(url, audience, email).await,
        }
    }

    /// Starts the background refresh of a URL's keys on the current tokio
    /// runtime (`None` for a fixed set). Call once; the task stops when the
    /// returned handle is stopped or dropped.
    pub fn spawn_refresher(&self) -> Option<JwksRefresher> {
        let remote = Arc::clone(self.remote.as_ref()?);
        Some(remote.spawn(Arc::clone(&self.keys)))
    }

    /// Background refresh attempts completed so far, successful or not (0 for a fixed set).
    pub fn refresh_attempts(&self) -> u64 {
        self.remote.as_ref().map_or(0, |remote| remote.attempts())
    }

    /// The current key set (a cheap snapshot; the refresher may swap it any time).
    fn current(&self) -> Arc<Keys> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Verifies `token`: signature, `aud`, `iss`, `exp`, and the email if configured.
    pub fn verify(&self, token: &str) -> Result<(), IngressError> {
        let denied = |detail: String| IngressError::Unauthorized { detail };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| denied(format!("bearer token is not a jwt: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(denied(format!(
                "oidc token algorithm `{:?}` is not `RS256`",
                header.alg
            )));
        }
        let keys = self.current();
        let key = match &header.kid {
            Some(kid) => keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid.as_str())),
            None if keys.len() == 1 => keys.first(),
            None => None,
        };
        let Some((_, key)) = key else {
            // Perhaps a key rotated in since the last fetch: wake the refresher
            // (it rate-limits itself). This token is refused; Pub/Sub retries.
            if let (Some(remote), Some(_)) = (&self.remote, &header.kid) {
                remote.wake.notify_one();
            }
            return Err(denied("oidc token is signed by an unknown key".to_owned()));
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| denied(format!("oidc token rejected: {e}")))?;
        if let Some(expected) = &self.email {
            let claims = data.claims;
            if claims.email.as_deref() != Some(expected.as_str())
                || claims.email_verified == Some(false)
            {
                return Err(denied(format!(
                    "oidc token is not for service account `{expected}`"
                )));
            }
        }
        Ok(())
    }
}

/// Everything the service authenticates with.
#[derive(Debug, Default)]
pub struct Auth {
    /// Bearer token for `/v1/*` and `/pubsub/push`.
    pub token: Option<Secret>,
    /// Operator token for resets.
    pub admin: Option<Secret>,
    /// Marketplace HMAC key.
    pub marketplace: Option<SigningKey>,
    /// Pub/Sub OIDC verification.
    pub oidc: Option<Oidc>,
    /// No token and no OIDC: `/v1/*` and `/pubsub/push` are open (local experiments only).
    pub insecure: bool,
}

/// Reads a secret from the environment (`None` if unset; an error if empty).
fn env_secret(name: &'static str) -> Result<Option<String>, AuthError> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Err(AuthError::EmptySecret { name }),
        Ok(value) => Ok(Some(value)),
        Err(_) => Ok(None),
    }
}

impl Auth {
    /// Reads the secrets from the environment; `jwks` (or `GOVERNOR_OIDC_JWKS`)
    /// enables OIDC for `audience` (a JWKS URL is fetched here, once; see
    /// [`Oidc::spawn_refresher`]). Refuses to run without any inbound
    /// authentication unless `insecure`.
    pub async fn from_env(
        audience: Option<&str>,
        jwks: Option<&JwksSource>,
        email: Option<String>,
        insecure: bool,
    ) -> Result<Auth, AuthError> {
        let jwks = match jwks {
            Some(source) => Some(source.clone()),
            None => std::env::var_os(ENV_OIDC_JWKS)
                .map(JwksSource::from_os)
                .transpose()?,
        };
        let token = env_secret(ENV_AUTH_TOKEN)?.as_deref().map(Secret::new);
        let admin = env_secret(ENV_ADMIN_TOKEN)?.as_deref().map(Secret::new);
        let marketplace =
            env_secret(ENV_MARKETPLACE_SECRET)?.map(|key| SigningKey::new(key.as_bytes()));
        // Last: everything that needs no network is checked before the fetch.
        let oidc = match (jwks, audience) {
            (Some(source), Some(audience)) => {
                Some(Oidc::from_source(&source, audience, email).await?)
            }
            (Some(_), None) => return Err(AuthError::NoAudience),
            (None, _) => None,
        };
        let auth = Auth {
            token,
            admin,
            marketplace,
            oidc,
            insecure,
        };
        if auth.token.is_none() && auth.oidc.is_none() && !insecure {
            return Err(AuthError::NoAuth);
        }
        Ok(auth)
    }

    /// Checks the bearer token of a `/v1/*` request.
    pub fn api(&self, headers: &HeaderMap) -> Result<(), IngressError> {
        match (&self.token, bearer(headers)?) {
            (Some(token), Some(given)) if token.matches(given) => Ok(()),
            (Some(_), Some(_)) => Err(wrong("bearer token")),
            (Some(_), None) => Err(missing()),
            // No token configured: only reachable with `--insecure-no-auth`
            // or with OIDC-only configurations, where `/v1/*` stays closed.
            (None, _) if self.insecure => Ok(()),
            (None, _) => Err(IngressError::Forbidden {
                detail: "`/v1` is disabled: no `GOVERNOR_AUTH_TOKEN` configured".to_owned(),
            }),
        }
    }

    /// Checks a Pub/Sub push: the bearer token, or an OIDC token when configured.
    pub fn pubsub(&self, headers: &HeaderMap) -> Result<(), IngressError> {
        let given = bearer(headers)?;
        if let (Some(token), Some(given)) = (&self.token, given)
            && token.matches(given)
        {
            return Ok(());
        }
        match (&self.oidc, given) {
            (Some(oidc), Some(given)) => oidc.verify(given),
            (None, Some(_)) => Err(wrong("bearer token")),
            (_, None) if self.token.is_none() && self.oidc.is_none() && self.insecure => Ok(()),
            (_, None) => Err(missing()),
        }
    }

    /// Checks the operator token of a reset.
    pub fn admin(&self, headers: &HeaderMap) -> Result<(), IngressError> {
        let given = bearer(headers)?;
        match (&self.admin, given) {
            (Some(admin), Some(given)) if admin.matches(given) => Ok(()),
            (Some(_), Some(given)) if self.token.as_ref().is_some_and(|t| t.matches(given)) => {
                Err(IngressError::Forbidden {
                    detail: "resets need the admin token, not the api token".to_owned(),
                })
            }
            (Some(_), Some(_)) => Err(wrong("admin token")),
            (Some(_), None) => Err(missing()),
            (None, _) if self.insecure && self.token.is_none() => Ok(()),
            (None, _) => Err(IngressError::Forbidden {
                detail: "resets are disabled: no `GOVERNOR_ADMIN_TOKEN` configured".to_owned(),
            }),
        }
    }

    /// Checks the `X-Ggen-Signature` of a marketplace event over its raw
    /// body, against the server's clock (see [`crate::signature`]).
    pub fn marketplace(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), IngressError> {
        let given = headers
            .get(SIGNATURE_HEADER)
            .map(|v| v.to_str().unwrap_or_default());
        match (&self.marketplace, given) {
            (Some(key), Some(given)) => key
                .verify(given, body, Timestamp::now(), SIGNATURE_TOLERANCE_SECS)
                .map_err(|e| IngressError::Unauthorized {
                    detail: format!("marketplace signature refused: {e}"),
                }),
            (Some(_), None) => Err(IngressError::Unauthorized {
                detail: "missing `X-Ggen-Signature` header".to_owned(),
            }),
            (None, _) if self.insecure && self.token.is_none() => Ok(()),
            (None, _) => Err(IngressError::Forbidden {
                detail:
                    "marketplace events are disabled: no `GOVERNOR_MARKETPLACE_SECRET` configured"
                        .to_owned(),
            }),
        }
    }

    /// Names the configured mechanisms (for the startup log; never the secrets).
    pub fn describe(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut push = |on: bool, name| {
            if on {
                out.push(name);
            }
        };
        push(self.token.is_some(), "bearer");
        push(self.oidc.is_some(), "pubsub-oidc");
        push(self.admin.is_some(), "admin");
        push(self.marketplace.is_some(), "marketplace-hmac");
        push(self.insecure, "insecure-no-auth");
        out
    }
}

fn missing() -> IngressError {
    IngressError::Unauthorized {
        detail: "missing `Authorization: Bearer` credentials".to_owned(),
    }
}

fn wrong(what: &str) -> IngressError {
    IngressError::Unauthorized {
        detail: format!("{what} does not verify"),
    }
}

/// The bearer credential of `headers`, if any; a malformed header is an error.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, IngressError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| IngressError::Unauthorized {
        detail: "`Authorization` header is not ascii".to_owned(),
    })?;
    let (scheme, credential) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(IngressError::Unauthorized {
            detail: "`Authorization` must be `Bearer <token>`".to_owned(),
        });
    }
    Ok(Some(credential.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn secrets_compare_by_content() {
        let secret = Secret::new("s3cret");
        assert!(secret.matches("s3cret"));
        assert!(!secret.matches("s3cret "));
        assert!(!secret.matches(""));
    }

    #[test]
    fn api_auth_needs_the_token() {
        let auth = Auth {
            token: Some(Secret::new("t")),
            ..Auth::default()
        };
        assert!(auth.api(&headers(&[("authorization", "Bearer t")])).is_ok());
        assert!(auth.api(&headers(&[("authorization", "bearer t")])).is_ok());
        for bad in ["Bearer x", "Basic t", "Bearer", "t"] {
            let err = auth.api(&headers(&[("authorization", bad)])).unwrap_err();
            assert_eq!(err.code(), "unauthorized", "{bad}");
        }
        assert_eq!(
            auth.api(&HeaderMap::new()).unwrap_err().code(),
            "unauthorized"
        );
    }

    #[test]
    fn disabled_routes_are_forbidden() {
        let auth = Auth {
            token: Some(Secret::new("t")),
            ..Auth::default()
        };
        let h = headers(&[("authorization", "Bearer t")]);
        assert_eq!(auth.admin(&h).unwrap_err().code(), "forbidden");
        assert_eq!(auth.marketplace(&h, b"{}").unwrap_err().code(), "forbidden");
    }
}

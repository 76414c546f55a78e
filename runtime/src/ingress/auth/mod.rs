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

use super::error::{AuthReason, IngressError};
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
/// The service account emails allowed to push (comma-separated), when `--oidc-email` is not given.
pub const ENV_OIDC_EMAIL: &str = "GOVERNOR_OIDC_EMAIL";
/// The audience of Marketplace push tokens, when `--marketplace-audience` is not given.
pub const ENV_MARKETPLACE_AUDIENCE: &str = "GOVERNOR_MARKETPLACE_AUDIENCE";
/// The service accounts allowed to push Marketplace notifications
/// (comma-separated), when `--marketplace-oidc-email` is not given.
pub const ENV_MARKETPLACE_OIDC_EMAIL: &str = "GOVERNOR_MARKETPLACE_OIDC_EMAIL";
/// Clock skew tolerated on an OIDC token's `exp`, `nbf` and `iat`, in seconds.
pub const OIDC_SKEW_S: u64 = 60;
/// The longest life (`exp` − `iat`) of an accepted OIDC token, in seconds:
/// Google signs ID tokens for one hour, so a longer-lived one was not minted
/// by Google's token service for a push (and would stay a replayable key
/// for as long as it says).
pub const OIDC_MAX_LIFETIME_S: u64 = 3600;
/// The header carrying a marketplace event's signature.
pub const SIGNATURE_HEADER: &str = crate::signature::HEADER;
/// How far a marketplace signature's timestamp may be from the server's clock.
pub const SIGNATURE_TOLERANCE_SECS: i64 = crate::signature::DEFAULT_TOLERANCE_SECS;
/// Issuers of Google-signed OIDC tokens.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// The longest `X-Ggen-Signature` value accepted before the body is read.
pub const MAX_SIGNATURE_BYTES: usize = 1024;

/// Which credential a group of routes needs, checked from the headers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The bearer token (`/v1/*` reads and signals).
    Api,
    /// A tenant's receipts and proofs: the bearer token, or anything shaped
    /// like a read token, which the routes' `Reader` extractor checks
    /// against the tenant in the path.
    TenantRead,
    /// The admin token (resets, read tokens).
    Admin,
    /// A Pub/Sub push: OIDC when the SKU names an audience, else the bearer token.
    PubSub,
    /// A marketplace event: the signature header's presence and shape (the
    /// HMAC needs the body and is checked by the handler).
    Marketplace,
    /// A Google Cloud Marketplace notification pushed by Pub/Sub: an OIDC
    /// token for the Marketplace audience and service accounts.
    MarketplacePush,
}

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
    /// OIDC was configured for a SKU without a Pub/Sub audience (and no
    /// Marketplace audience either).
    #[error(
        "a jwks was given but the sku names no pub/sub oidc audience and no `--marketplace-audience` is set"
    )]
    NoAudience,
    /// Marketplace push settings without a JWKS, or half of them.
    #[error(
        "marketplace notifications need all three of `--jwks`, `--marketplace-audience` and `--marketplace-oidc-email` (or `GOVERNOR_OIDC_JWKS`, `GOVERNOR_MARKETPLACE_AUDIENCE`, `GOVERNOR_MARKETPLACE_OIDC_EMAIL`); missing: {missing}"
    )]
    MarketplacePush {
        /// What is missing.
        missing: String,
    },
    /// The Marketplace audience is the spec's Pub/Sub audience: a token
    /// minted for one route would pass the other's audience check.
    #[error(
        "`--marketplace-audience` is the spec's pub/sub audience `{audience}`: give the marketplace subscription an audience of its own (such as its push endpoint's url)"
    )]
    SameAudience {
        /// The audience.
        audience: String,
    },
    /// Marketplace push settings for a SKU whose spec has no
    /// `entitlement.marketplace` section.
    #[error(
        "`--marketplace-audience` was given but the spec has no `entitlement.marketplace` section"
    )]
    NoMarketplace,
    /// Pub/Sub OIDC without the service accounts allowed to push: any
    /// Google identity could push with the (public) audience.
    #[error(
        "pub/sub oidc needs the service account allowed to push: pass `--oidc-email EMAIL` (repeatable) or set `GOVERNOR_OIDC_EMAIL` (comma-separated)"
    )]
    NoOidcEmail,
    /// A value of `--oidc-email` or `GOVERNOR_OIDC_EMAIL` that is not an email address.
    #[error("oidc email `{email}` is not an email address")]
    BadOidcEmail {
        /// The value given.
        email: String,
    },
    /// Service account emails given without a JWKS to verify tokens with.
    #[error(
        "`--oidc-email` (or `GOVERNOR_OIDC_EMAIL`) was given without a jwks: pass `--jwks` (or set `GOVERNOR_OIDC_JWKS`) too"
    )]
    EmailWithoutJwks,
    /// An empty secret in the environment.
    #[error("environment variable `{name}` is set but empty")]
    EmptySecret {
        /// The variable.
        name: &'static str,
    },
    /// `--insecure-no-auth` with a bearer token or OIDC configured: routes
    /// the operator believes protected would silently open.
    #[error(
        "`--insecure-no-auth` cannot be combined with {configured}: drop the flag, or unset what configures them"
    )]
    InsecureWithAuth {
        /// What is configured (names of variables or flags).
        configured: String,
    },
    /// A JWKS URL over plain http to a host that is not loopback.
    #[error(
        "jwks url `{url}` is not `https://`: keys fetched in the clear could be swapped (plain `http://` is allowed for loopback hosts only)"
    )]
    InsecureJwksUrl {
        /// The URL.
        url: String,
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

/// The claims of a Pub/Sub push token that are checked beyond those
/// `jsonwebtoken` validates (`exp`, `nbf`, `aud`, `iss`).
#[derive(Debug, Deserialize)]
struct Claims {
    email: Option<String>,
    email_verified: Option<bool>,
    /// Issued-at (a JWT NumericDate, which may carry a fraction).
    iat: Option<f64>,
    /// Expiry (required and checked against the clock by `jsonwebtoken`).
    exp: Option<f64>,
}

/// Checks the service account emails allowed to push: at least one, each
/// an address (`local@domain`, no spaces). Kept lowercase.
fn check_emails(emails: Vec<String>) -> Result<Vec<String>, AuthError> {
    if emails.is_empty() {
        return Err(AuthError::NoOidcEmail);
    }
    emails
        .into_iter()
        .map(|email| {
            let trimmed = email.trim();
            let valid = trimmed.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && !domain.is_empty() && !domain.contains('@')
            }) && !trimmed.contains(char::is_whitespace);
            if valid {
                Ok(trimmed.to_ascii_lowercase())
            } else {
                Err(AuthError::BadOidcEmail { email })
            }
        })
        .collect()
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
    /// The service accounts allowed to push (lowercase; never empty).
    emails: Arc<[String]>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("keys", &self.current().len())
            .field("url", &self.remote.as_ref().map(|r| r.url.as_str()))
            .field("audience", &self.validation.aud)
            .field("emails", &self.emails)
            .finish()
    }
}

impl Oidc {
    /// A verifier of tokens for `audience` signed by a key of `jwks` and
    /// issued to one of `emails` (at least one: the audience is public, so
    /// without an email any Google identity could push).
    pub fn new(jwks: &JwkSet, audience: &str, emails: Vec<String>) -> Result<Oidc, AuthError> {
        let emails = check_emails(emails)?;
        let keys = decode_keys(jwks).map_err(|(kid, source)| AuthError::BadKey { kid, source })?;
        Ok(Oidc::over(keys, None, audience, emails))
    }

    /// The verifier over `keys`, refreshed from `remote` if given; `emails` checked.
    fn over(keys: Keys, remote: Option<Remote>, audience: &str, emails: Vec<String>) -> Oidc {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&GOOGLE_ISSUERS);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = OIDC_SKEW_S;
        Oidc {
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            remote: remote.map(Arc::new),
            validation,
            emails: emails.into(),
        }
    }

    /// Reads a JWKS file and builds the verifier.
    pub fn from_file(path: &Path, audience: &str, emails: Vec<String>) -> Result<Oidc, AuthError> {
        let emails = check_emails(emails)?;
        let text = fs_err::read(path).map_err(|source| AuthError::ReadJwks {
            path: path.to_path_buf(),
            source,
        })?;
        let jwks: JwkSet =
            serde_json::from_slice(&text).map_err(|source| AuthError::ParseJwks {
                path: path.to_path_buf(),
                source,
            })?;
        Oidc::new(&jwks, audience, emails)
    }

    /// Fetches the JWK set at `url` (an error names the URL) and builds a
    /// verifier whose keys [`Oidc::spawn_refresher`] keeps fresh.
    pub async fn from_url(
        url: &reqwest::Url,
        audience: &str,
        emails: Vec<String>,
    ) -> Result<Oidc, AuthError> {
        // Checked before the fetch: a missing email needs no network to report.
        let emails = check_emails(emails)?;
        let (remote, keys) = Remote::connect(url).await?;
        Ok(Oidc::over(keys, Some(remote), audience, emails))
    }

    /// A verifier over the same keys (and refresher) for another
    /// `audience` and service accounts `emails`.
    pub fn for_audience(&self, audience: &str, emails: Vec<String>) -> Result<Oidc, AuthError> {
        let emails = check_emails(emails)?;
        let mut validation = self.validation.clone();
        validation.set_audience(&[audience]);
        Ok(Oidc {
            keys: Arc::clone(&self.keys),
            remote: self.remote.clone(),
            validation,
            emails: emails.into(),
        })
    }

    /// [`Oidc::from_file`] or [`Oidc::from_url`], as `source` says.
    pub async fn from_source(
        source: &JwksSource,
        audience: &str,
        emails: Vec<String>,
    ) -> Result<Oidc, AuthError> {
        match source {
            JwksSource::File(path) => Oidc::from_file(path, audience, emails),
            JwksSource::Url(url) => Oidc::from_url(url, audience, emails).await,
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

    /// Verifies `token`: signature, `aud`, `iss`, `exp`, `nbf` and `iat`
    /// (within [`OIDC_SKEW_S`]), and a verified `email` among the allowed ones.
    pub fn verify(&self, token: &str) -> Result<(), IngressError> {
        let denied = |detail: String| IngressError::Unauthorized {
            reason: AuthReason::OidcRejected,
            detail,
        };
        // The parser's error quotes the forged header's text: cut and
        // escaped, since it reaches the answer and the refusal's log line.
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            let shown: String = e.to_string().chars().take(128).collect();
            denied(format!(
                "bearer token is not a jwt: {}",
                shown.escape_debug()
            ))
        })?;
        // RFC 7515 §4.1.11: extensions listed as critical must be
        // understood, and this service understands none.
        if header.crit.is_some() {
            return Err(denied(
                "oidc token's header lists critical extensions (`crit`), which this service does not support".to_owned(),
            ));
        }
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
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| denied(format!("oidc token rejected: {e}")))?
            .claims;
        // `jsonwebtoken` checks `exp` and `nbf` but not `iat`: a token issued
        // in the future was minted by a wrong clock or for later replay.
        let now = jsonwebtoken::get_current_timestamp() as f64;
        match claims.iat {
            None => return Err(denied("oidc token has no `iat` claim".to_owned())),
            Some(iat) if !iat.is_finite() || iat > now + OIDC_SKEW_S as f64 => {
                return Err(denied(
                    "oidc token is issued in the future (`iat`)".to_owned(),
                ));
            }
            Some(iat) => {
                let lifetime = claims.exp.unwrap_or(f64::INFINITY) - iat;
                if lifetime.is_nan() || lifetime > (OIDC_MAX_LIFETIME_S + OIDC_SKEW_S) as f64 {
                    return Err(denied(format!(
                        "oidc token lives longer than `{OIDC_MAX_LIFETIME_S}` s (`exp` − `iat`)"
                    )));
                }
            }
        }
        if claims.email_verified != Some(true) {
            return Err(denied(
                "oidc token's `email_verified` is not `true`".to_owned(),
            ));
        }
        let email = claims.email.unwrap_or_default();
        if !self
            .emails
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(&email))
        {
            return Err(denied(format!(
                "oidc token's email `{}` is not an allowed service account",
                email.chars().take(128).collect::<String>()
            )));
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
    /// OIDC verification of Marketplace notifications (`/marketplace/pubsub`).
    pub marketplace_push: Option<Oidc>,
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

/// The inbound authentication as configured, before it is checked and
/// built into an [`Auth`] ([`Auth::configure`]). Secrets are in the clear
/// here; `Debug` never shows them.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// `GOVERNOR_AUTH_TOKEN`.
    pub token: Option<String>,
    /// `GOVERNOR_ADMIN_TOKEN`.
    pub admin: Option<String>,
    /// `GOVERNOR_MARKETPLACE_SECRET`.
    pub marketplace: Option<String>,
    /// `--jwks` or `GOVERNOR_OIDC_JWKS`.
    pub jwks: Option<JwksSource>,
    /// `--oidc-email` or `GOVERNOR_OIDC_EMAIL`.
    pub emails: Vec<String>,
    /// `--insecure-no-auth`.
    pub insecure: bool,
    /// `--marketplace-audience` or `GOVERNOR_MARKETPLACE_AUDIENCE`.
    pub marketplace_audience: Option<String>,
    /// `--marketplace-oidc-email` or `GOVERNOR_MARKETPLACE_OIDC_EMAIL`.
    pub marketplace_emails: Vec<String>,
    /// Whether the spec has an `entitlement.marketplace` section.
    pub marketplace_spec: bool,
}

/// The Marketplace push flags of `serve`, before the environment fills
/// what they leave out.
#[derive(Debug, Clone, Default)]
pub struct MarketplaceFlags {
    /// `--marketplace-audience`.
    pub audience: Option<String>,
    /// `--marketplace-oidc-email`.
    pub emails: Vec<String>,
    /// Whether the spec has an `entitlement.marketplace` section.
    pub spec: bool,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("token", &self.token.is_some())
            .field("admin", &self.admin.is_some())
            .field("marketplace", &self.marketplace.is_some())
            .field("jwks", &self.jwks)
            .field("emails", &self.emails)
            .field("insecure", &self.insecure)
            .field("marketplace_audience", &self.marketplace_audience)
            .field("marketplace_emails", &self.marketplace_emails)
            .field("marketplace_spec", &self.marketplace_spec)
            .finish()
    }
}

impl Auth {
    /// Reads the secrets from the environment and [`Auth::configure`]s them;
    /// `jwks` (else `GOVERNOR_OIDC_JWKS`) enables OIDC for `audience`,
    /// accepting tokens of the service accounts `emails` (else
    /// `GOVERNOR_OIDC_EMAIL`, comma-separated).
    pub async fn from_env(
        audience: Option<&str>,
        jwks: Option<&JwksSource>,
        emails: Vec<String>,
        insecure: bool,
        marketplace: MarketplaceFlags,
    ) -> Result<Auth, AuthError> {
        let jwks = match jwks {
            Some(source) => Some(source.clone()),
            None => std::env::var_os(ENV_OIDC_JWKS)
                .map(JwksSource::from_os)
                .transpose()?,
        };
        let emails = match (emails.is_empty(), env_secret(ENV_OIDC_EMAIL)?) {
            (true, Some(list)) => list.split(',').map(str::to_owned).collect(),
            _ => emails,
        };
        let marketplace_audience = match marketplace.audience {
            Some(audience) => Some(audience),
            None => env_secret(ENV_MARKETPLACE_AUDIENCE)?,
        };
        let marketplace_emails = match (
            marketplace.emails.is_empty(),
            env_secret(ENV_MARKETPLACE_OIDC_EMAIL)?,
        ) {
            (true, Some(list)) => list.split(',').map(str::to_owned).collect(),
            _ => marketplace.emails,
        };
        let config = AuthConfig {
            token: env_secret(ENV_AUTH_TOKEN)?,
            admin: env_secret(ENV_ADMIN_TOKEN)?,
            marketplace: env_secret(ENV_MARKETPLACE_SECRET)?,
            jwks,
            emails,
            insecure,
            marketplace_audience,
            marketplace_emails,
            marketplace_spec: marketplace.spec,
        };
        Auth::configure(audience, config).await
    }

    /// Checks `config` and builds the verifiers (a JWKS URL is fetched here,
    /// once; see [`Oidc::spawn_refresher`]). Refuses: no inbound
    /// authentication unless `insecure`; `insecure` with a token or OIDC;
    /// OIDC without service account emails; emails without a JWKS; a JWKS
    /// without a Pub/Sub `audience`.
    pub async fn configure(audience: Option<&str>, config: AuthConfig) -> Result<Auth, AuthError> {
        let AuthConfig {
            token,
            admin,
            marketplace,
            jwks,
            emails,
            insecure,
            marketplace_audience,
            marketplace_emails,
            marketplace_spec,
        } = config;
        if marketplace_audience.is_some() && !marketplace_spec {
            return Err(AuthError::NoMarketplace);
        }
        if let (Some(ours), Some(theirs)) = (&marketplace_audience, audience)
            && ours == theirs
        {
            return Err(AuthError::SameAudience {
                audience: ours.clone(),
            });
        }
        if marketplace_audience.is_some() || !marketplace_emails.is_empty() {
            let missing: Vec<&str> = [
                (jwks.is_none(), "`--jwks`"),
                (marketplace_audience.is_none(), "`--marketplace-audience`"),
                (marketplace_emails.is_empty(), "`--marketplace-oidc-email`"),
            ]
            .into_iter()
            .filter_map(|(absent, name)| absent.then_some(name))
            .collect();
            if !missing.is_empty() {
                return Err(AuthError::MarketplacePush {
                    missing: missing.join(", "),
                });
            }
        }
        if insecure {
            let configured: Vec<String> = [
                (token.is_some(), format!("`{ENV_AUTH_TOKEN}`")),
                (jwks.is_some(), "pub/sub oidc (`--jwks`)".to_owned()),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
            if !configured.is_empty() {
                return Err(AuthError::InsecureWithAuth {
                    configured: configured.join(" and "),
                });
            }
        }
        // Last: everything that needs no network is checked before the fetch.
        let oidc = match (&jwks, audience) {
            (Some(source), Some(audience)) => {
                Some(Oidc::from_source(source, audience, emails).await?)
            }
            (Some(_), None) if marketplace_audience.is_none() => {
                return Err(AuthError::NoAudience);
            }
            (Some(_), None) if !emails.is_empty() => return Err(AuthError::NoAudience),
            (Some(_), None) => None,
            (None, _) if !emails.is_empty() => return Err(AuthError::EmailWithoutJwks),
            (None, _) => None,
        };
        // The Marketplace verifier shares the Pub/Sub one's keys (one fetch,
        // one refresher) when there is one.
        let marketplace_push = match (&jwks, &marketplace_audience, &oidc) {
            (Some(_), Some(aud), Some(oidc)) => Some(oidc.for_audience(aud, marketplace_emails)?),
            (Some(source), Some(aud), None) => {
                Some(Oidc::from_source(source, aud, marketplace_emails).await?)
            }
            _ => None,
        };
        let auth = Auth {
            token: token.as_deref().map(Secret::new),
            admin: admin.as_deref().map(Secret::new),
            marketplace: marketplace.map(|key| SigningKey::new(key.as_bytes())),
            oidc,
            marketplace_push,
            insecure,
        };
        if auth.token.is_none()
            && auth.oidc.is_none()
            && auth.marketplace_push.is_none()
            && !insecure
        {
            return Err(AuthError::NoAuth);
        }
        Ok(auth)
    }

    /// Checks the credential `guard` names from the headers alone: run
    /// before a request takes an in-flight slot or its body is read.
    /// `audience` is the SKU's Pub/Sub OIDC audience.
    pub fn admit(
        &self,
        guard: Guard,
        headers: &HeaderMap,
        audience: Option<&str>,
    ) -> Result<(), IngressError> {
        match guard {
            Guard::Api => self.api(headers),
            Guard::TenantRead => self.tenant_read(headers),
            Guard::Admin => self.admin(headers),
            Guard::PubSub => self.pubsub(headers, audience),
            Guard::Marketplace => self.marketplace_headers(headers),
            Guard::MarketplacePush => self.marketplace_push(headers),
        }
    }

    /// Checks a Marketplace notification push: a verified OIDC token for
    /// the Marketplace audience and service accounts; open only with
    /// `--insecure-no-auth` and nothing else configured.
    pub fn marketplace_push(&self, headers: &HeaderMap) -> Result<(), IngressError> {
        let given = bearer(headers)?;
        match (&self.marketplace_push, given) {
            (Some(oidc), Some(given)) => oidc.verify(given),
            (Some(_), None) => Err(missing()),
            (None, _) if self.insecure && self.token.is_none() && self.oidc.is_none() => Ok(()),
            (None, _) => Err(IngressError::Forbidden {
                reason: AuthReason::Disabled,
                detail: "`/marketplace/pubsub` is disabled: configure `--jwks`, `--marketplace-audience` and `--marketplace-oidc-email` (or `GOVERNOR_OIDC_JWKS`, `GOVERNOR_MARKETPLACE_AUDIENCE`, `GOVERNOR_MARKETPLACE_OIDC_EMAIL`)".to_owned(),
            }),
        }
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
                reason: AuthReason::Disabled,
                detail: "`/v1` is disabled: no `GOVERNOR_AUTH_TOKEN` configured".to_owned(),
            }),
        }
    }

    /// Checks the headers of a tenant read: the bearer token, or anything
    /// shaped like a read token (checked against the tenant by the route).
    pub fn tenant_read(&self, headers: &HeaderMap) -> Result<(), IngressError> {
        let api = self.api(headers);
        match bearer(headers)? {
            Some(given) if api.is_err() && super::access::ReadToken::parse(given).is_some() => {
                Ok(())
            }
            _ => api,
        }
    }

    /// Checks a Pub/Sub push. When the SKU names an `audience`, only a
    /// verified OIDC token is accepted (403 when no JWKS is configured);
    /// without one, the bearer token.
    pub fn pubsub(&self, headers: &HeaderMap, audience: Option<&str>) -> Result<(), IngressError> {
        let given = bearer(headers)?;
        if self.insecure && self.token.is_none() && self.oidc.is_none() {
            return Ok(());
        }
        match (audience, &self.oidc, given) {
            (Some(audience), None, _) => Err(IngressError::Forbidden {
                reason: AuthReason::Disabled,
                detail: format!(
                    "`/pubsub/push` is disabled: the spec sets pub/sub audience `{audience}`, so pushes need a google-signed oidc token; configure `--jwks` (or `GOVERNOR_OIDC_JWKS`) and `--oidc-email` (or `GOVERNOR_OIDC_EMAIL`)"
                ),
            }),
            (Some(_), Some(_), Some(given))
                if self.token.as_ref().is_some_and(|t| t.matches(given)) =>
            {
                Err(IngressError::Unauthorized {
                    reason: AuthReason::WrongCredential,
                    detail: "the api token is not accepted on `/pubsub/push`: the spec sets a pub/sub audience, so pushes need a google-signed oidc token".to_owned(),
                })
            }
            (_, Some(oidc), Some(given)) => {
                if audience.is_none() && self.token.as_ref().is_some_and(|t| t.matches(given)) {
                    return Ok(());
                }
                oidc.verify(given)
            }
            (None, None, Some(given)) => match &self.token {
                Some(token) if token.matches(given) => Ok(()),
                Some(_) => Err(wrong("bearer token")),
                None => Err(IngressError::Forbidden {
                    reason: AuthReason::Disabled,
                    detail: "`/pubsub/push` is disabled: no `GOVERNOR_AUTH_TOKEN` configured"
                        .to_owned(),
                }),
            },
            (_, _, None) => Err(missing()),
        }
    }

    /// Checks the operator token of a reset or a read token's issue or revocation.
    pub fn admin(&self, headers: &HeaderMap) -> Result<(), IngressError> {
        let given = bearer(headers)?;
        match (&self.admin, given) {
            (Some(admin), Some(given)) if admin.matches(given) => Ok(()),
            (Some(_), Some(given)) if self.token.as_ref().is_some_and(|t| t.matches(given)) => {
                Err(IngressError::Forbidden {
                    reason: AuthReason::WrongCredential,
                    detail: "resets and read tokens need the admin token, not the api token"
                        .to_owned(),
                })
            }
            (Some(_), Some(_)) => Err(wrong("admin token")),
            (Some(_), None) => Err(missing()),
            (None, _) if self.insecure && self.token.is_none() => Ok(()),
            (None, _) => Err(IngressError::Forbidden {
                reason: AuthReason::Disabled,
                detail: "resets and read tokens are disabled: no `GOVERNOR_ADMIN_TOKEN` configured"
                    .to_owned(),
            }),
        }
    }

    /// The part of a marketplace event's check that needs no body: a secret
    /// is configured and `X-Ggen-Signature` is present and well-formed
    /// (`t=…,v1=…` with `t` within the tolerance, at most
    /// [`MAX_SIGNATURE_BYTES`]). The signature
    /// itself is verified by [`Auth::marketplace`] once the body is read.
    pub fn marketplace_headers(&self, headers: &HeaderMap) -> Result<(), IngressError> {
        let given = headers.get(SIGNATURE_HEADER);
        match (&self.marketplace, given) {
            (Some(_), Some(value)) if value.len() <= MAX_SIGNATURE_BYTES => {
                let text = value.to_str().map_err(|_| IngressError::Unauthorized {
                    reason: AuthReason::Malformed,
                    detail: "`X-Ggen-Signature` header is malformed".to_owned(),
                })?;
                // A stale timestamp is refused here, before the body is read.
                crate::signature::fresh(text, Timestamp::now(), SIGNATURE_TOLERANCE_SECS).map_err(
                    |e| IngressError::Unauthorized {
                        reason: AuthReason::BadSignature,
                        detail: format!("marketplace signature refused: {e}"),
                    },
                )
            }
            (Some(_), Some(_)) => Err(IngressError::Unauthorized {
                reason: AuthReason::Malformed,
                detail: "`X-Ggen-Signature` header is malformed".to_owned(),
            }),
            (Some(_), None) => Err(missing_signature()),
            (None, _) if self.insecure && self.token.is_none() => Ok(()),
            (None, _) => Err(marketplace_disabled()),
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
                    reason: AuthReason::BadSignature,
                    detail: format!("marketplace signature refused: {e}"),
                }),
            (Some(_), None) => Err(missing_signature()),
            (None, _) if self.insecure && self.token.is_none() => Ok(()),
            (None, _) => Err(marketplace_disabled()),
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
        push(self.marketplace_push.is_some(), "marketplace-oidc");
        push(self.admin.is_some(), "admin");
        push(self.marketplace.is_some(), "marketplace-hmac");
        push(self.insecure, "insecure-no-auth");
        out
    }
}

fn missing_signature() -> IngressError {
    IngressError::Unauthorized {
        reason: AuthReason::Missing,
        detail: "missing `X-Ggen-Signature` header".to_owned(),
    }
}

fn marketplace_disabled() -> IngressError {
    IngressError::Forbidden {
        reason: AuthReason::Disabled,
        detail: "marketplace events are disabled: no `GOVERNOR_MARKETPLACE_SECRET` configured"
            .to_owned(),
    }
}

fn missing() -> IngressError {
    IngressError::Unauthorized {
        reason: AuthReason::Missing,
        detail: "missing `Authorization: Bearer` credentials".to_owned(),
    }
}

fn wrong(what: &str) -> IngressError {
    IngressError::Unauthorized {
        reason: AuthReason::WrongToken,
        detail: format!("{what} does not verify"),
    }
}

/// The bearer credential of `headers`, if any; a malformed header is an error.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, IngressError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| IngressError::Unauthorized {
        reason: AuthReason::Malformed,
        detail: "`Authorization` header is not ascii".to_owned(),
    })?;
    let (scheme, credential) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(IngressError::Unauthorized {
            reason: AuthReason::Malformed,
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

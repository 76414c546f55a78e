//! Google access tokens from a metadata-server style endpoint: the GKE
//! metadata server (Workload Identity) by default, or any URL that answers
//! `GET` with `{"access_token", "expires_in", "token_type"}` as it does
//! (`--gcp-token-url`, so tests and air-gapped set-ups can point it
//! elsewhere).
//!
//! A token is reused until [`EARLY`] before it expires, then replaced; one
//! refresh runs at a time. If a refresh fails, the old token is used while
//! it is still valid (the failure is logged), so a short outage of the
//! endpoint costs nothing; once it has expired, the failure is the caller's.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::report::error_chain;

/// The GKE / GCE metadata server's token endpoint for the workload's
/// service account.
pub const METADATA_TOKEN_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";

/// How long before its expiry a token is replaced.
pub const EARLY: Duration = Duration::from_secs(300);

/// How long one request to the endpoint may take.
const TIMEOUT: Duration = Duration::from_secs(10);

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

/// Access tokens from one endpoint, cached and refreshed before expiry.
pub struct Tokens {
    url: String,
    client: reqwest::Client,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Tokens")
            .field("url", &crate::actuator::webhook::redacted(&self.url))
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens from `url` (see [`METADATA_TOKEN_URL`]).
    pub fn new(url: impl Into<String>) -> Result<Tokens, reqwest::Error> {
        crate::actuator::webhook::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .build()?;
        Ok(Tokens {
            url: url.into(),
            client,
            cached: Mutex::new(None),
        })
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

    async fn fetch(&self) -> Result<Cached, TokenError> {
        let url = crate::actuator::webhook::redacted(&self.url);
        let asked = Instant::now();
        let response = self
            .client
            .get(&self.url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| TokenError::Unreachable {
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

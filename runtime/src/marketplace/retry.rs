//! How Procurement API calls are retried while a Marketplace notification
//! is handled: a few attempts, each bounded in time, with the actuators'
//! capped exponential backoff between transient failures (408, 429, 5xx,
//! no connection, no token). A call whose attempts all failed transiently
//! leaves the notification unacknowledged, so Pub/Sub delivers it again
//! later: an outage of any length loses nothing.

use std::future::Future;
use std::time::Duration;

use super::procurement::{CallError, Procurement};
use crate::actuator::{Backoff, Jitter};

/// Attempts of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Longest one attempt may take.
    pub timeout: Duration,
    /// Backoff between attempts.
    pub backoff: Backoff,
}

impl Default for Retry {
    /// Three attempts of at most 4 s with 100 … 400 ms between them:
    /// under 13 s for a read and as much for a write, inside the request
    /// timeout (30 s) and a push subscription's 60 s acknowledgement
    /// deadline (docs/marketplace.md), so the answer is ours, not a timeout.
    fn default() -> Self {
        Retry {
            attempts: 3,
            timeout: Duration::from_secs(4),
            backoff: Backoff {
                base: Duration::from_millis(200),
                cap: Duration::from_secs(1),
            },
        }
    }
}

impl Retry {
    /// Runs `op(attempt)` (attempts from 1) until it succeeds, fails
    /// permanently, or the attempts are spent; `key` seeds the jitter.
    /// Gives the value or the last error, with the attempts made.
    pub async fn run<T, F, Fut>(&self, key: &str, mut op: F) -> Result<(T, u32), (CallError, u32)>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let attempts = self.attempts.max(1);
        let mut jitter = Jitter::for_key(key);
        let mut attempt = 1;
        loop {
            let result = tokio::time::timeout(self.timeout, op(attempt))
                .await
                .unwrap_or_else(|_| {
                    Err(CallError::Transient(format!(
                        "the Procurement API did not answer within {} ms",
                        self.timeout.as_millis()
                    )))
                });
            match result {
                Ok(value) => return Ok((value, attempt)),
                Err(CallError::Permanent(detail)) => {
                    return Err((CallError::Permanent(detail), attempt));
                }
                Err(error) if attempt >= attempts => return Err((error, attempt)),
                Err(error) => {
                    tracing::debug!(%key, attempt, error = %error, "procurement call failed; retrying");
                    tokio::time::sleep(self.backoff.delay(attempt, &mut jitter)).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// What `POST /marketplace/pubsub` works with: the Procurement API of the
/// SKU's provider and the retries of its calls.
#[derive(Debug, Clone)]
pub struct Marketplace {
    /// The API client.
    pub procurement: Procurement,
    /// How its calls are retried.
    pub retry: Retry,
}

impl Marketplace {
    /// Asks for one access token at startup and logs how that went: an
    /// error names the endpoint (the service still starts; notifications
    /// are answered 503 until a token comes, and Pub/Sub redelivers them).
    pub async fn check_token(&self) -> Result<(), super::TokenError> {
        let checked = self.procurement.tokens().token().await.map(drop);
        match &checked {
            Ok(()) => tracing::info!(
                provider = self.procurement.provider(),
                "marketplace: a Google access token was obtained"
            ),
            Err(error) => tracing::error!(
                error = error as &dyn std::error::Error,
                "marketplace: no Google access token at startup; `/marketplace/pubsub` answers 503 until one can be had"
            ),
        }
        checked
    }
}

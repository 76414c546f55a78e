//! What an HTTP request can fail with, and how each failure is answered.
//!
//! Every error is answered with a JSON body `{"error": CODE, "detail": TEXT}`;
//! `CODE` is a stable snake_case name scripts can match on, `TEXT` is for
//! humans. Bad input is always a 4xx; a 5xx means the service itself failed:
//! the ledger stopped (503, and `/readyz` reports it too), or one tenant's
//! state disagrees with its ledger chain (500 for that tenant only).

use crate::report::error_chain;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why a request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The body is not JSON, or not JSON of the expected shape.
    #[error("request body is not valid: {detail}")]
    BadJson {
        /// What serde_json said (with line and column).
        detail: String,
    },
    /// Malformed input other than JSON syntax (base64, UTF-8, a field's format).
    #[error("{detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
    },
    /// Input for a valid tenant that was refused and receipted as `rejected`.
    #[error("{reason}")]
    Rejected {
        /// Why (also stored in the receipt).
        reason: String,
    },
    /// No credentials, or credentials that do not verify.
    #[error("{detail}")]
    Unauthorized {
        /// Which kind of check failed (for logs).
        reason: AuthReason,
        /// Which check failed.
        detail: String,
    },
    /// Valid credentials that do not allow this route, or a route disabled by configuration.
    #[error("{detail}")]
    Forbidden {
        /// Which kind of refusal (for logs).
        reason: AuthReason,
        /// Why.
        detail: String,
    },
    /// A new tenant past the SKU's `max_tenants`.
    #[error("tenant limit `{max}` reached: new tenant `{tenant}` refused")]
    TenantLimit {
        /// The SKU's `max_tenants`.
        max: u32,
        /// The refused tenant.
        tenant: String,
    },
    /// No such route or tenant.
    /// A tenant's dedupe window, or the service's, holds as many new ids
    /// as it may (429).
    #[error("{detail}")]
    DedupeFull {
        /// What happened, naming the bound (and the tenant, for its own).
        detail: String,
        /// Seconds until room comes back (`Retry-After`).
        retry_after: u64,
    },
    /// A one-at-a-time operation is already running (429).
    #[error("{detail}")]
    Busy {
        /// What is running.
        detail: String,
    },
    /// An unknown route or tenant.
    #[error("{detail}")]
    NotFound {
        /// What was not found.
        detail: String,
    },
    /// The route exists but not for this method.
    #[error("method `{method}` is not allowed here")]
    MethodNotAllowed {
        /// The method used.
        method: String,
    },
    /// An entitlement event that is not valid in the tenant's current state (receipted).
    #[error("{detail}")]
    Conflict {
        /// The refused transition.
        detail: String,
    },
    /// The body is larger than the SKU's `max_body_bytes`.
    #[error("request body exceeds `{max}` bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The body is not `application/json`.
    #[error("expected content type `application/json`, got `{got}`")]
    UnsupportedMediaType {
        /// The content type sent (or `none`).
        got: String,
    },
    /// Too many requests in flight: shed instead of queueing.
    #[error("too many requests in flight (limit `{limit}`): retry shortly")]
    Overloaded {
        /// The in-flight limit.
        limit: usize,
    },
    /// One tenant's state disagrees with its ledger chain (or recovery could
    /// not replay it): its inputs are refused, the other tenants are served.
    #[error("{detail}")]
    TenantInconsistent {
        /// The registry's error chain, naming the tenant.
        detail: String,
    },
    /// Other replicas kept overtaking this request's decision on its
    /// tenant (each retry lost the race): nothing was written; retry.
    #[error("{detail}")]
    Contended {
        /// What happened, naming the tenant.
        detail: String,
    },
    /// The ledger's disk is full: nothing is acknowledged until space is
    /// freed, then ingest resumes by itself.
    #[error("{detail}")]
    LedgerFull {
        /// The ledger's error chain.
        detail: String,
    },
    /// The ledger failed: nothing more can be acknowledged.
    #[error("ledger unavailable: {detail}")]
    Unavailable {
        /// The ledger's error chain.
        detail: String,
    },
    /// A service this request depends on (the Procurement API, the token
    /// endpoint) failed for now: nothing was written; retry (Pub/Sub
    /// redelivers by itself).
    #[error("upstream unavailable: {detail}")]
    Upstream {
        /// What failed, with its attempts.
        detail: String,
    },
    /// The request took longer than the request timeout (a slow client, or a stalled disk).
    #[error("request not completed within `{seconds}` s")]
    Timeout {
        /// The timeout.
        seconds: u64,
    },
    /// The service is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// An unexpected internal failure (a bug).
    #[error("internal error: {detail}")]
    Internal {
        /// What failed.
        detail: String,
    },
}

/// Why authentication refused a request: a small, stable set, so that
/// refusals can be logged per route and reason without the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthReason {
    /// No credential was sent.
    Missing,
    /// A credential header that cannot be read: not ASCII, not
    /// `Bearer <token>`, a malformed `X-Ggen-Signature`.
    Malformed,
    /// A bearer or admin token that does not match.
    WrongToken,
    /// A valid credential of the wrong kind for the route: the api token
    /// where an OIDC token or the admin token is required.
    WrongCredential,
    /// A Pub/Sub OIDC token that does not verify (not a JWT, an unknown
    /// key, its signature or a claim, an email not allowed).
    OidcRejected,
    /// A marketplace signature that is stale or does not verify.
    BadSignature,
    /// The route is disabled: the secret it needs is not configured.
    Disabled,
}

impl AuthReason {
    /// Every reason, in [`AuthReason::index`] order.
    pub const ALL: [AuthReason; 7] = [
        AuthReason::Missing,
        AuthReason::Malformed,
        AuthReason::WrongToken,
        AuthReason::WrongCredential,
        AuthReason::OidcRejected,
        AuthReason::BadSignature,
        AuthReason::Disabled,
    ];

    /// The snake_case name logs use.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthReason::Missing => "missing_credentials",
            AuthReason::Malformed => "malformed_credentials",
            AuthReason::WrongToken => "wrong_token",
            AuthReason::WrongCredential => "wrong_credential_kind",
            AuthReason::OidcRejected => "oidc_rejected",
            AuthReason::BadSignature => "bad_signature",
            AuthReason::Disabled => "route_disabled",
        }
    }

    /// Its position in [`AuthReason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Put on the response of a request authentication refused, for the
/// outermost layer to log (it knows the route; the handler does not).
#[derive(Debug, Clone)]
pub struct AuthRefused {
    /// Why.
    pub reason: AuthReason,
    /// The detail the client was answered (never the credential).
    pub detail: String,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
struct Body<'a> {
    error: &'static str,
    detail: &'a str,
}

impl IngressError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            IngressError::BadJson { .. }
            | IngressError::BadRequest { .. }
            | IngressError::Rejected { .. } => StatusCode::BAD_REQUEST,
            IngressError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            IngressError::Forbidden { .. } | IngressError::TenantLimit { .. } => {
                StatusCode::FORBIDDEN
            }
            IngressError::DedupeFull { .. } | IngressError::Busy { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            IngressError::NotFound { .. } => StatusCode::NOT_FOUND,
            IngressError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            IngressError::Conflict { .. } => StatusCode::CONFLICT,
            IngressError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            IngressError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngressError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngressError::Overloaded { .. }
            | IngressError::Contended { .. }
            | IngressError::Unavailable { .. }
            | IngressError::LedgerFull { .. }
            | IngressError::Upstream { .. }
            | IngressError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            IngressError::Internal { .. } | IngressError::TenantInconsistent { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The stable snake_case code in the body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            IngressError::BadJson { .. } => "bad_json",
            IngressError::BadRequest { .. } => "bad_request",
            IngressError::Rejected { .. } => "rejected",
            IngressError::Unauthorized { .. } => "unauthorized",
            IngressError::Forbidden { .. } => "forbidden",
            IngressError::TenantLimit { .. } => "tenant_limit",
            IngressError::DedupeFull { .. } => "dedupe_full",
            IngressError::Busy { .. } => "busy",
            IngressError::NotFound { .. } => "not_found",
            IngressError::MethodNotAllowed { .. } => "method_not_allowed",
            IngressError::Conflict { .. } => "conflict",
            IngressError::Timeout { .. } => "timeout",
            IngressError::TooLarge { .. } => "too_large",
            IngressError::UnsupportedMediaType { .. } => "unsupported_media_type",
            IngressError::Overloaded { .. } => "overloaded",
            IngressError::TenantInconsistent { .. } => "tenant_inconsistent",
            IngressError::Contended { .. } => "contended",
            IngressError::Unavailable { .. } => "unavailable",
            IngressError::LedgerFull { .. } => "ledger_full",
            IngressError::Upstream { .. } => "upstream_unavailable",
            IngressError::ShuttingDown => "shutting_down",
            IngressError::Internal { .. } => "internal",
        }
    }

    /// A malformed request with `detail`.
    pub(crate) fn bad(detail: impl Into<String>) -> IngressError {
        IngressError::BadRequest {
            detail: detail.into(),
        }
    }

    /// The ledger failed with `error` (its whole cause chain in the detail).
    pub(crate) fn unavailable(error: &(dyn std::error::Error + 'static)) -> IngressError {
        IngressError::Unavailable {
            detail: error_chain(error),
        }
    }

    /// The ledger's disk is full (`error` says where).
    pub(crate) fn ledger_full(error: &(dyn std::error::Error + 'static)) -> IngressError {
        IngressError::LedgerFull {
            detail: error_chain(error),
        }
    }

    /// The JSON body `{"error", "detail"}` as a value (batch results embed it).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code(), "detail": self.to_string() })
    }
}

impl From<tokio::task::JoinError> for IngressError {
    /// A blocking task or spawned settle that panicked or was cancelled.
    fn from(error: tokio::task::JoinError) -> IngressError {
        IngressError::Internal {
            detail: error.to_string(),
        }
    }
}

impl From<serde_json::Error> for IngressError {
    fn from(error: serde_json::Error) -> IngressError {
        IngressError::BadJson {
            detail: error.to_string(),
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let refused = match &self {
            IngressError::Unauthorized { reason, .. } | IngressError::Forbidden { reason, .. } => {
                Some(AuthRefused {
                    reason: *reason,
                    detail: detail.clone(),
                })
            }
            _ => None,
        };
        let body = serde_json::to_vec(&Body {
            error: self.code(),
            detail: &detail,
        })
        .unwrap_or_else(|_| br#"{"error":"internal","detail":"unserializable error"}"#.to_vec());
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self {
            IngressError::Unauthorized { .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            IngressError::Overloaded { .. }
            | IngressError::ShuttingDown
            | IngressError::Contended { .. }
            | IngressError::Busy { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            IngressError::DedupeFull { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        if let Some(refused) = refused {
            response.extensions_mut().insert(refused);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_input_is_a_4xx() {
        let bad = [
            IngressError::bad("x"),
            IngressError::Rejected { reason: "x".into() },
            IngressError::Unauthorized {
                reason: AuthReason::Missing,
                detail: "x".into(),
            },
            IngressError::TooLarge { max: 1 },
            IngressError::UnsupportedMediaType { got: "x".into() },
            IngressError::TenantLimit {
                max: 1,
                tenant: "t".into(),
            },
            IngressError::Conflict { detail: "x".into() },
            IngressError::DedupeFull {
                detail: "x".into(),
                retry_after: 1,
            },
        ];
        for error in bad {
            assert!(error.status().is_client_error(), "{error:?}");
        }
    }

    #[test]
    fn bad_json_names_the_position() {
        let error: IngressError = serde_json::from_str::<serde_json::Value>("{")
            .unwrap_err()
            .into();
        assert_eq!(error.code(), "bad_json");
        assert!(error.to_string().contains("line 1"), "{error}");
    }
}

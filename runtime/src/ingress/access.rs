//! Tenant-scoped read tokens: a credential a customer can be handed to read
//! their own receipts and proofs, and nothing else.
//!
//! The operator issues one with `POST /v1/tenants/{t}/tokens` and revokes
//! it with `DELETE /v1/tenants/{t}/tokens/{id}` (both with the admin
//! token); `GET /v1/tenants/{t}/tokens` lists the ids. Each change is an
//! `access` receipt on the tenant's chain carrying the token's id and the
//! SHA-256 of its secret, never the secret, so the tokens are part of the
//! tenant's state (rebuilt by recovery, shared by replicas) and every
//! grant is on the audit trail it opens.
//!
//! A token is `ggt_` followed by 16 hex digits of id and 64 of secret. The
//! admission layer lets a well-formed one through to the two read routes
//! only (`GET /v1/tenants/{t}/receipts`, `…/receipts/{seq}/proof`), where
//! the `Reader` extractor checks it against the tenant in the path before
//! the handler runs.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::error::{AuthReason, IngressError};
use super::path::Params;
use super::signals;
use super::state::{AppState, Slots};
use super::tenants::unknown;
use crate::receipt::{AccessChange, Input};
use crate::tenant::TenantId;

/// What every read token starts with.
pub const PREFIX: &str = "ggt_";

/// A read token: its id and its secret.
pub struct ReadToken {
    id: String,
    secret: [u8; 32],
}

impl std::fmt::Debug for ReadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ReadToken {
    /// A new token from the operating system's random source.
    pub fn generate() -> Result<ReadToken, String> {
        let mut bytes = [0u8; 40];
        getrandom::fill(&mut bytes).map_err(|e| format!("no random bytes: {e}"))?;
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes[8..]);
        let token = ReadToken {
            id: hex::encode(&bytes[..8]),
            secret,
        };
        bytes.fill(0);
        Ok(token)
    }

    /// Reads `ggt_<16 hex id><64 hex secret>`; `None` for anything else.
    pub fn parse(text: &str) -> Option<ReadToken> {
        let rest = text.strip_prefix(PREFIX)?;
        if !is_lower_hex(rest, 80) {
            return None;
        }
        let mut secret = [0u8; 32];
        hex::decode_to_slice(&rest[16..], &mut secret).ok()?;
        Some(ReadToken {
            id: rest[..16].to_owned(),
            secret,
        })
    }

    /// The token as handed to its holder.
    pub fn text(&self) -> String {
        format!("{PREFIX}{}{}", self.id, hex::encode(self.secret))
    }

    /// Its id (public: it names the token in receipts and listings).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// SHA-256 of its secret, lowercase hex: all the ledger keeps.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.secret))
    }
}

/// Whether `text` is `len` lowercase hex digits (a token's id, or its id
/// and secret).
fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Proof that the request may read the tenant its path names: it carries
/// the API token, or a read token of that tenant. The two read routes take
/// it as an argument, so neither runs without the check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader;

impl FromRequestParts<AppState> for Reader {
    type Rejection = IngressError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Reader, IngressError> {
        // Checked in full by the admission layer (only it adds one).
        if let Some(reader) = parts.extensions.remove::<Reader>() {
            return Ok(reader);
        }
        let Some((token, tenant)) = presented(state, &parts.headers, parts.uri.path())? else {
            return Ok(Reader);
        };
        let registry = std::sync::Arc::clone(state.registry());
        let id = token.id.clone();
        // A shared ledger reads the tenant's latest state: off the workers.
        let stored = tokio::task::spawn_blocking(move || registry.token_digest(&tenant, &id))
            .await
            .map_err(|_| refused())?;
        matches(&token, stored)
    }
}

/// Before a read takes a slot: the whole read-token check when this
/// process alone writes the ledger (every tenant's tokens are in memory,
/// so it costs nothing), so a forged token never holds a slot; with
/// replicas, only the token's shape, and the read takes one of the
/// [`UNVERIFIED_READS_IN_FLIGHT`](super::state::UNVERIFIED_READS_IN_FLIGHT)
/// slots (the `Reader` checks it against the tenant's latest state, which
/// takes a database query).
/// A request it checked fully carries the [`Reader`] for the route's
/// extractor, which then checks nothing again.
pub(crate) fn admit(
    state: &AppState,
    request: &mut axum::extract::Request,
) -> Result<Slots, IngressError> {
    if state.registry().ledger().shared().is_some() {
        return Ok(
            match presented(state, request.headers(), request.uri().path())? {
                None => Slots::General,
                Some(_) => Slots::UnverifiedRead,
            },
        );
    }
    let reader = match presented(state, request.headers(), request.uri().path())? {
        None => Reader,
        Some((token, tenant)) => {
            matches(&token, state.registry().token_digest(&tenant, &token.id))?
        }
    };
    request.extensions_mut().insert(reader);
    Ok(Slots::General)
}

fn refused() -> IngressError {
    IngressError::Unauthorized {
        reason: AuthReason::WrongToken,
        detail: "the read token does not verify for this tenant".to_owned(),
    }
}

/// `None` when the request carries the API token; else the read token it
/// carries and the tenant of its path (`/v1/tenants/{tenant}/…`), or the
/// refusal.
fn presented(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<Option<(ReadToken, TenantId)>, IngressError> {
    let api = state.auth.api(headers);
    if api.is_ok() {
        return Ok(None);
    }
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, token)| ReadToken::parse(token.trim()));
    // Not a read token: the API token's refusal says what is wrong.
    let Some(token) = token else {
        return Err(api.err().unwrap_or_else(refused));
    };
    // A path whose tenant is not a valid id names no tenant the token
    // could be for.
    let tenant = path
        .strip_prefix("/v1/tenants/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|tenant| TenantId::new(tenant).ok())
        .ok_or_else(refused)?;
    // A quarantined tenant's state stopped at its first bad receipt: a
    // revocation after it would be unknown here.
    if state.registry().quarantined(&tenant).is_some() {
        return Err(refused());
    }
    Ok(Some((token, tenant)))
}

/// Whether `token`'s secret is the one whose digest is `stored`, in
/// constant time.
fn matches(token: &ReadToken, stored: Option<String>) -> Result<Reader, IngressError> {
    match stored {
        Some(stored) if bool::from(stored.as_bytes().ct_eq(token.digest().as_bytes())) => {
            Ok(Reader)
        }
        _ => Err(refused()),
    }
}

/// `POST /v1/tenants/{t}/tokens`: issues a read token (admin token, by the
/// route's admission layer); the answer is the only place its secret appears.
pub(crate) async fn issue(
    State(state): State<AppState>,
    Params(tenant): Params<String>,
) -> Result<Response, IngressError> {
    state.check_writable()?;
    let tenant = signals::parse_tenant(&tenant)?;
    // Only for a tenant that exists: issuing must not create one.
    state
        .registry
        .tokens(&tenant)
        .ok_or_else(|| unknown(&tenant))?;
    let token = ReadToken::generate().map_err(|detail| IngressError::Internal { detail })?;
    let input = Input::Access {
        change: AccessChange::Issue,
        token: token.id.clone(),
        digest: Some(token.digest()),
    };
    let applied = state
        .decide(&tenant, input, std::time::Instant::now())
        .await?;
    let body = json!({
        "tenant": tenant.as_str(),
        "id": token.id,
        "token": token.text(),
        "seq": applied.last_seq,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /v1/tenants/{t}/tokens/{id}`: revokes a read token (admin).
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Params((tenant, id)): Params<(String, String)>,
) -> Result<Response, IngressError> {
    state.check_writable()?;
    let tenant = signals::parse_tenant(&tenant)?;
    let ids = state
        .registry
        .tokens(&tenant)
        .ok_or_else(|| unknown(&tenant))?;
    if !is_lower_hex(&id, 16) || !ids.contains(&id) {
        return Err(IngressError::NotFound {
            detail: format!(
                "tenant `{tenant}` has no read token `{}`",
                // Cut, as other echoed input is: the path may be long.
                id.chars().take(64).collect::<String>().escape_debug()
            ),
        });
    }
    let input = Input::Access {
        change: AccessChange::Revoke,
        token: id,
        digest: None,
    };
    state
        .decide(&tenant, input, std::time::Instant::now())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/tenants/{t}/tokens`: the ids of the tenant's read tokens (admin).
pub(crate) async fn list(
    State(state): State<AppState>,
    Params(tenant): Params<String>,
) -> Result<Json<serde_json::Value>, IngressError> {
    let tenant = signals::parse_tenant(&tenant)?;
    let ids = state
        .registry
        .tokens(&tenant)
        .ok_or_else(|| unknown(&tenant))?;
    Ok(Json(json!({ "tenant": tenant.as_str(), "tokens": ids })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_read_back_and_only_their_own_shape_parses() {
        let token = ReadToken::generate().unwrap();
        let text = token.text();
        assert!(text.starts_with(PREFIX) && text.len() == 84, "{text}");
        let back = ReadToken::parse(&text).unwrap();
        assert_eq!((back.id(), back.digest()), (token.id(), token.digest()));
        assert_ne!(ReadToken::generate().unwrap().text(), text);
        for bad in [
            "",
            "ggt_",
            &text[..83],
            &format!("{text}0"),
            &text.to_uppercase(),
            &text.replacen("ggt_", "ggx_", 1),
            &format!("{}g", &text[..83]),
        ] {
            assert!(ReadToken::parse(bad).is_none(), "{bad}");
        }
        // The digest is SHA-256 of the 32 secret bytes, not of the text.
        let fixed =
            ReadToken::parse(&format!("{PREFIX}{}{}", "0".repeat(16), "00".repeat(32))).unwrap();
        assert_eq!(
            fixed.digest(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert!(!format!("{token:?}").contains(&hex::encode(token.secret)));
    }
}

//! Request bodies: content type, size limit and JSON parsing, mapped to
//! [`IngressError`]s (never a panic, never a 5xx).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use super::error::IngressError;
use super::state::AppState;

/// A JSON request's buffered body: 415 unless it declares
/// `application/json` (judged before any of the body is read), then 413
/// for a declared `Content-Length` past the limit (likewise) or a body that
/// runs past the route's `DefaultBodyLimit` (the SKU's `max_body_bytes` on the
/// routes that use this, which the error names) or 400 for a broken
/// stream. The headers are read in place (axum's `HeaderMap` extractor
/// copies them all, on every request).
pub(crate) struct JsonBytes(pub(crate) Bytes);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = IngressError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, IngressError> {
        require_json(request.headers())?;
        let max = state.registry.pack().sku().ingress.max_body_bytes;
        // A declared length past the limit is refused before any of the
        // body is read: a client declaring a large body and sending little
        // would otherwise hold its slot until the body timeout.
        if declared_length(request.headers()).is_some_and(|len| len > max as u64) {
            return Err(IngressError::TooLarge { max });
        }
        bytes(Bytes::from_request(request, state).await, max).map(JsonBytes)
    }
}

/// Checks that the request declares `application/json` (parameters such as
/// `charset=utf-8` are allowed).
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), IngressError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(IngressError::UnsupportedMediaType {
            got: "none".to_owned(),
        });
    };
    let text = value.to_str().unwrap_or("(not ascii)");
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(IngressError::UnsupportedMediaType {
            got: text.chars().take(64).collect(),
        })
    }
}

/// The body length the request declares (`Content-Length`), if it is a number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The buffered body, or 413 past `max` bytes / 400 for a broken stream.
pub(crate) fn bytes(
    body: Result<Bytes, BytesRejection>,
    max: usize,
) -> Result<Bytes, IngressError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            IngressError::TooLarge { max }
        } else {
            IngressError::bad(format!(
                "cannot read request body: {}",
                rejection.body_text()
            ))
        }
    })
}

/// Parses JSON (serde_json's recursion limit turns hostile nesting into a 400).
/// `T` may borrow strings from `bytes`.
pub(crate) fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, IngressError> {
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            require_json(&headers).unwrap_err().code(),
            "unsupported_media_type"
        );
        for ok in ["application/json", "Application/JSON; charset=utf-8"] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(require_json(&headers).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(bad));
            assert!(require_json(&headers).is_err(), "{bad}");
        }
    }

    #[test]
    fn deep_nesting_is_a_bad_request() {
        let deep = "[".repeat(100_000);
        let error = parse::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert_eq!(error.code(), "bad_json");
    }
}

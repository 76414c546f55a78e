//! `POST /pubsub/push`: Google Pub/Sub push deliveries.
//!
//! The envelope is `{"message":{"data":BASE64,"attributes":{…},"messageId":…,
//! "publishTime":…},"subscription":…}`; Google sends both camelCase and
//! snake_case spellings of the id and time, either is accepted. `data`
//! decodes to `{"signal":…,"value":…,"at"?:…}` (`at`, or else the publish
//! time, is recorded as the observation time; decisions use the server's
//! clock); the tenant is the message attribute named by the SKU's
//! `tenant_attribute`; the message id is the dedupe id. Answered 204 once the
//! receipt is durable: Pub/Sub redelivers anything not acknowledged, and the
//! redelivery is dropped as a duplicate.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde::Deserialize;

use super::body;
use super::error::IngressError;
use super::signals::{self, Reading};
use super::state::AppState;

/// The push envelope (`subscription` and unknown fields such as
/// `deliveryAttempt` are ignored).
#[derive(Debug, Deserialize)]
pub(super) struct Envelope {
    pub(super) message: Message,
}

/// A Pub/Sub message.
#[derive(Debug, Deserialize)]
pub(super) struct Message {
    pub(super) data: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(rename = "messageId")]
    message_id_camel: Option<String>,
    #[serde(rename = "message_id")]
    message_id_snake: Option<String>,
    #[serde(rename = "publishTime")]
    publish_time_camel: Option<String>,
    #[serde(rename = "publish_time")]
    publish_time_snake: Option<String>,
}

impl Message {
    /// The publish time, in either spelling.
    pub(super) fn publish_time(&self) -> Option<&str> {
        self.publish_time_camel
            .as_deref()
            .or(self.publish_time_snake.as_deref())
    }
}

/// Decodes a message's `data` (standard base64; URL-safe accepted too) to
/// its bytes.
pub(super) fn decode_bytes(data: &str) -> Result<Vec<u8>, IngressError> {
    STANDARD
        .decode(data.trim())
        .or_else(|_| URL_SAFE.decode(data.trim()))
        .map_err(|e| IngressError::bad(format!("`message.data` is not base64: {e}")))
}

/// The decoded `message.data`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Data {
    signal: String,
    value: serde_json::Value,
    at: Option<String>,
}

/// Decodes `message.data` (standard base64; URL-safe accepted too).
fn decode_data(data: &str) -> Result<Data, IngressError> {
    let bytes = decode_bytes(data)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| IngressError::bad(format!("`message.data` is not utf-8: {e}")))?;
    serde_json::from_str(text).map_err(|e| IngressError::BadJson {
        detail: format!("`message.data`: {e}"),
    })
}

/// Turns an envelope into a reading.
fn reading(state: &AppState, envelope: Envelope) -> Result<Reading<'static>, IngressError> {
    let message = envelope.message;
    let id = message
        .message_id_camel
        .or(message.message_id_snake)
        .ok_or_else(|| IngressError::bad("`message.messageId` is missing"))?;
    signals::check_id(Some(&id))?;
    let attribute = state.registry.pack().sku().tenant_attribute;
    let tenant = message.attributes.get(attribute).ok_or_else(|| {
        IngressError::bad(format!(
            "message attribute `{attribute}` (the tenant) is missing"
        ))
    })?;
    let tenant = signals::parse_tenant(tenant)?;
    let data = decode_data(
        message
            .data
            .as_deref()
            .ok_or_else(|| IngressError::bad("`message.data` is missing"))?,
    )?;
    let published = message.publish_time_camel.or(message.publish_time_snake);
    let published = signals::parse_at(published.as_deref())?;
    Ok(Reading {
        tenant,
        observed: signals::parse_at(data.at.as_deref())?.or(published),
        signal: data.signal.into(),
        value: data.value,
        id: Some(id.into()),
        // The messageId lives in Pub/Sub's own id space: no id sent on
        // `/v1/signals` can stand for it.
        via: crate::receipt::Via::PubSub,
    })
}

/// `POST /pubsub/push`.
pub(crate) async fn push(
    State(state): State<AppState>,
    body::JsonBytes(raw): body::JsonBytes,
) -> Result<StatusCode, IngressError> {
    state.check_writable()?;
    let envelope: Envelope = body::parse(&raw)?;
    let pending = signals::apply(&state, reading(&state, envelope)?)?;
    signals::finish(&state, pending).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_decodes_from_base64_json() {
        let data = STANDARD.encode(br#"{"signal":"s","value":1.5}"#);
        let decoded = decode_data(&data).unwrap();
        assert_eq!(decoded.signal, "s");
        assert_eq!(decoded.value.as_f64(), Some(1.5));
        assert!(decoded.at.is_none());
    }

    #[test]
    fn bad_data_is_a_bad_request() {
        let not_utf8 = STANDARD.encode([0xff, 0xfe]);
        let not_json = STANDARD.encode(b"nope");
        for (data, code) in [
            ("%%%", "bad_request"),
            (not_utf8.as_str(), "bad_request"),
            (not_json.as_str(), "bad_json"),
        ] {
            assert_eq!(decode_data(data).unwrap_err().code(), code, "{data}");
        }
    }

    #[test]
    fn envelopes_accept_both_spellings() {
        for text in [
            r#"{"message":{"data":"","messageId":"1","publishTime":"2026-01-01T00:00:00Z"},"subscription":"s"}"#,
            r#"{"message":{"data":"","message_id":"1","publish_time":"2026-01-01T00:00:00Z"}}"#,
            r#"{"message":{"data":"","messageId":"1","message_id":"1","publishTime":"2026-01-01T00:00:00Z","publish_time":"2026-01-01T00:00:00Z"},"deliveryAttempt":2}"#,
        ] {
            let envelope: Envelope = serde_json::from_str(text).unwrap();
            let m = envelope.message;
            assert_eq!(
                m.message_id_camel.or(m.message_id_snake).as_deref(),
                Some("1")
            );
        }
    }
}

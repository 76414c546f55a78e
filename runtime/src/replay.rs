//! Offline replay: recorded signals (JSON Lines) through the live code path.
//!
//! A line is a signal
//! `{"tenant":"acme","signal":"spend_rate","value":120.5,"at":"…","id":"m-1"}`
//! or an entitlement event
//! `{"tenant":"acme","entitlement":"approved","at":"…"}` (`plan` optional).
//! The clock is taken from the lines; a bad line is reported with its line
//! number and skipped.

use serde::Deserialize;

use crate::clock::Timestamp;

/// One parsed replay line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Signal {
        tenant: String,
        signal: String,
        value: f64,
        at: Timestamp,
        id: Option<String>,
    },
    Entitlement {
        tenant: String,
        event: String,
        plan: Option<String>,
        at: Timestamp,
        id: Option<String>,
    },
}

impl Line {
    /// The tenant the line is about, as written (not yet validated).
    pub fn tenant(&self) -> &str {
        match self {
            Line::Signal { tenant, .. } | Line::Entitlement { tenant, .. } => tenant,
        }
    }

    /// When the line happened.
    pub fn at(&self) -> Timestamp {
        match self {
            Line::Signal { at, .. } | Line::Entitlement { at, .. } => *at,
        }
    }
}

/// Why a line was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    /// 1-based line number in the replay file.
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    tenant: String,
    at: Timestamp,
    signal: Option<String>,
    value: Option<serde_json::Value>,
    entitlement: Option<String>,
    plan: Option<String>,
    id: Option<String>,
}

/// Parses one line of a replay file (`number` is 1-based, for messages).
pub fn parse_line(number: usize, text: &str) -> Result<Line, LineError> {
    let err = |message: String| LineError {
        line: number,
        message,
    };
    let raw: RawLine =
        serde_json::from_str(text).map_err(|e| err(format!("invalid replay line: {e}")))?;
    match (raw.signal, raw.entitlement) {
        (Some(signal), None) => {
            if raw.plan.is_some() {
                return Err(err("`plan` belongs to entitlement lines".to_owned()));
            }
            let value = match raw.value {
                Some(serde_json::Value::Number(n)) => n.as_f64(),
                _ => None,
            }
            .ok_or_else(|| err(format!("signal `{signal}` needs a numeric `value`")))?;
            Ok(Line::Signal {
                tenant: raw.tenant,
                signal,
                value,
                at: raw.at,
                id: raw.id,
            })
        }
        (None, Some(event)) => {
            if raw.value.is_some() {
                return Err(err("`value` belongs to signal lines".to_owned()));
            }
            Ok(Line::Entitlement {
                tenant: raw.tenant,
                event,
                plan: raw.plan,
                at: raw.at,
                id: raw.id,
            })
        }
        (Some(_), Some(_)) => Err(err(
            "a line has either `signal` or `entitlement`, not both".to_owned()
        )),
        (None, None) => Err(err(
            "a line needs `signal` (with `value`) or `entitlement`".to_owned()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signal_lines() {
        let line = parse_line(
            1,
            r#"{"tenant":"acme","signal":"spend_rate","value":120.5,"at":"2026-01-01T00:00:00Z","id":"m-1"}"#,
        )
        .unwrap();
        assert_eq!(
            line,
            Line::Signal {
                tenant: "acme".into(),
                signal: "spend_rate".into(),
                value: 120.5,
                at: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
                id: Some("m-1".into()),
            }
        );
    }

    #[test]
    fn parses_entitlement_lines() {
        let line = parse_line(
            2,
            r#"{"tenant":"acme","entitlement":"approved","at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert!(matches!(line, Line::Entitlement { ref event, .. } if event == "approved"));
    }

    #[test]
    fn reports_bad_lines_with_their_number() {
        let cases = [
            "not json",
            r#"{"tenant":"acme","signal":"s","value":"1","at":"2026-01-01T00:00:00Z"}"#,
            r#"{"tenant":"acme","signal":"s","at":"2026-01-01T00:00:00Z"}"#,
            r#"{"tenant":"acme","signal":"s","value":1,"at":"soon"}"#,
            r#"{"tenant":"acme","signal":"s","value":1,"entitlement":"approved","at":"2026-01-01T00:00:00Z"}"#,
            r#"{"tenant":"acme","at":"2026-01-01T00:00:00Z"}"#,
            r#"{"tenant":"acme","signal":"s","value":1,"at":"2026-01-01T00:00:00Z","extra":1}"#,
        ];
        for (i, text) in cases.iter().enumerate() {
            let e = parse_line(i + 7, text).unwrap_err();
            assert_eq!(e.line, i + 7, "{text}");
            assert!(e.to_string().starts_with(&format!("line {}: ", i + 7)));
        }
    }
}

//! A signal reading as it arrives (an HTTP body, a Pub/Sub message, a
//! replay line) and what it means to the SKU: one classifier for every
//! path, so the same input writes the same receipt wherever it came from.
//!
//! A reading the SKU cannot act on (unknown signal, a value that is not a
//! number, a value out of the signal's range) becomes [`Input::Rejected`]
//! with a bounded, float-free record of what came in.

use crate::clock::Timestamp;
use crate::receipt::{Input, Via, decimal};
use crate::sku::{PolicyPack, SignalId};

/// Longest text quoted back from a rejected reading, in characters.
pub const MAX_QUOTED: usize = 128;

/// A reading as sent, before the SKU is consulted.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    /// The signal name as sent.
    pub signal: &'a str,
    /// The value as sent (any JSON).
    pub value: &'a serde_json::Value,
    /// Dedupe id, if any.
    pub id: Option<&'a str>,
    /// When the sender says it measured the reading (recorded, never decided on).
    pub observed: Option<Timestamp>,
    /// The door it came in by (its id is deduplicated in that door's space).
    pub via: Via,
}

/// What a reading means to the SKU.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// The input to apply: a signal, or a rejection to receipt.
    pub input: Input,
    /// The signal, when the SKU knows its name (even if the value was rejected).
    pub signal: Option<SignalId>,
    /// Why the reading was rejected, if it was.
    pub rejected: Option<String>,
}

/// At most [`MAX_QUOTED`] characters of `text`.
fn quoted(text: &str) -> String {
    text.chars().take(MAX_QUOTED).collect()
}

/// Classifies `reading` for `pack`'s SKU.
pub fn classify(pack: &dyn PolicyPack, reading: &Reading<'_>) -> Classified {
    let signal = pack.signal_by_name(reading.signal);
    let verdict = match signal {
        None => Err(format!("unknown signal `{}`", quoted(reading.signal))),
        Some(id) => {
            let def = pack.sku().signal(id);
            match reading.value.as_f64() {
                None => Err(format!("value of signal `{}` is not a number", def.name)),
                Some(value) if !def.accepts(value) => Err(format!(
                    "value `{}` is out of range for signal `{}`",
                    decimal(value),
                    def.name
                )),
                Some(value) => Ok((id, value)),
            }
        }
    };
    match verdict {
        Ok((id, value)) => Classified {
            input: Input::Signal {
                signal: id,
                value,
                id: reading.id.map(str::to_owned),
                observed: reading.observed,
                via: reading.via,
            },
            signal,
            rejected: None,
        },
        Err(reason) => Classified {
            input: Input::Rejected {
                reason: reason.clone(),
                event: rejected_event(reading),
            },
            signal,
            rejected: Some(reason),
        },
    }
}

/// The `rejected` receipt's record of what came in (no floats: decimals as
/// strings; long text cut to [`MAX_QUOTED`] characters).
fn rejected_event(reading: &Reading<'_>) -> serde_json::Value {
    let value = match reading.value {
        serde_json::Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), decimal),
        other => quoted(&other.to_string()),
    };
    let mut event = serde_json::Map::new();
    event.insert("signal".into(), quoted(reading.signal).into());
    event.insert("value".into(), value.into());
    if let Some(id) = reading.id {
        event.insert("id".into(), id.into());
    }
    if let Some(via) = reading.via.receipt_name() {
        event.insert("via".into(), via.into());
    }
    event.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sku::{
        Direction, GovernorTiming, IngressDef, ProfileDef, ProfileId, SignalDef, Sku, TablePack,
    };

    static SIGNALS: [SignalDef; 1] = [SignalDef {
        name: "load",
        unit: "percent",
        description: "load",
        min: Some(0.0),
        max: Some(100.0),
        direction: Direction::Above,
    }];
    static PROFILES: [ProfileDef; 1] = [ProfileDef {
        name: "standard",
        rules: &[],
        cooldown_s: 0,
        max_actions_per_hour: None,
    }];
    static SKU: Sku = Sku {
        id: "reading_test",
        name: "Reading test",
        version: "1.0.0",
        spec_sha256: "00",
        tenant_attribute: "tenant_id",
        max_tenants: 10,
        signals: &SIGNALS,
        actions: &[],
        profiles: &PROFILES,
        default_profile: ProfileId(0),
        governor: GovernorTiming {
            intervention_timeout_s: 60,
            recovery_evaluations: 1,
            degraded_retry_s: 60,
        },
        entitlement_required: false,
        marketplace: None,
        ingress: IngressDef {
            pubsub_audience: None,
            max_body_bytes: 1024,
        },
    };
    static PACK: TablePack = TablePack(&SKU);

    fn classify_json(signal: &str, value: serde_json::Value) -> Classified {
        classify(
            &PACK,
            &Reading {
                signal,
                value: &value,
                id: Some("m-1"),
                observed: None,
                via: Via::Api,
            },
        )
    }

    #[test]
    fn a_known_signal_in_range_is_an_input() {
        let c = classify_json("load", serde_json::json!(42.5));
        assert_eq!(c.rejected, None);
        assert_eq!(c.signal, Some(SignalId(0)));
        assert!(matches!(c.input, Input::Signal { value, .. } if value == 42.5));
    }

    #[test]
    fn rejections_are_bounded_and_float_free() {
        let long = "x".repeat(500);
        let cases = [
            (long.as_str(), serde_json::json!(1), None),
            ("load", serde_json::json!(100.5), Some(SignalId(0))),
            ("load", serde_json::json!("12"), Some(SignalId(0))),
            ("load", serde_json::json!([long.clone()]), Some(SignalId(0))),
        ];
        for (signal, value, id) in cases {
            let c = classify_json(signal, value);
            assert_eq!(c.signal, id);
            let reason = c.rejected.expect("rejected");
            assert!(reason.chars().count() < MAX_QUOTED + 64, "{reason}");
            let Input::Rejected { event, .. } = c.input else {
                panic!("not a rejection");
            };
            assert!(event["signal"].as_str().unwrap().chars().count() <= MAX_QUOTED);
            assert!(event["value"].as_str().unwrap().chars().count() <= MAX_QUOTED);
            assert_eq!(event["id"], "m-1");
        }
    }
}

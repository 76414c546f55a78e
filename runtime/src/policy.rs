//! The policy engine: a signal value and a rule become a [`Level`].

use crate::sku::{Direction, Rule};

/// How bad a reading is, mildest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Normal,
    Warn,
    Intervene,
    Refuse,
}

impl Level {
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Warn => "warn",
            Level::Intervene => "intervene",
            Level::Refuse => "refuse",
        }
    }
}

/// Whether `value` is at or past `threshold` on the bad side.
fn breaches(direction: Direction, value: f64, threshold: f64) -> bool {
    match direction {
        Direction::Above => value >= threshold,
        Direction::Below => value <= threshold,
    }
}

/// The level of one reading against one rule, ignoring dwell and history.
///
/// A threshold is reached *at* its value: with `warn: 50` (above), 50 is
/// `Warn` and 49.99 is `Normal`.
pub fn raw_level(rule: &Rule, value: f64) -> Level {
    let past = |t: Option<f64>| t.is_some_and(|t| breaches(rule.direction, value, t));
    if past(rule.refuse) {
        Level::Refuse
    } else if past(rule.intervene) {
        Level::Intervene
    } else if past(rule.warn) {
        Level::Warn
    } else {
        Level::Normal
    }
}

/// Whether `value` is on the good side of the rule's `clear` threshold
/// (strictly: a value equal to `clear` has not cleared).
pub fn is_clear(rule: &Rule, value: f64) -> bool {
    !breaches(rule.direction, value, rule.clear)
}

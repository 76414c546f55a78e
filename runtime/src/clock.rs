//! Time as the runtime sees it: milliseconds since the Unix epoch, injected.
//!
//! Nothing in the FSM or the policy reads the system clock; callers pass a
//! [`Timestamp`] in, so replays and tests are deterministic.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// A timestamp that is not RFC 3339 or out of range.
#[derive(Debug, thiserror::Error)]
#[error("invalid timestamp `{text}`: expected RFC 3339, e.g. `2026-01-01T00:00:00Z`")]
pub struct TimestampError {
    text: String,
}

impl Timestamp {
    /// The system clock, for live services only.
    pub fn now() -> Timestamp {
        let now = OffsetDateTime::now_utc();
        Timestamp((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub const fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This timestamp plus `s` seconds (saturating).
    pub const fn plus_secs(self, s: u32) -> Timestamp {
        Timestamp(self.0.saturating_add(s as i64 * 1000))
    }

    /// Parses RFC 3339 (any offset; sub-millisecond digits are truncated).
    pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
        let err = || TimestampError {
            text: text.to_owned(),
        };
        let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| err())?;
        let ms = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(ms).map(Timestamp).map_err(|_| err())
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with a `Z`, milliseconds only when non-zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.0) * 1_000_000;
        let Ok(dt) = OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
            return write!(f, "@{}ms", self.0);
        };
        let (y, mo, d) = (dt.year(), u8::from(dt.month()), dt.day());
        let (h, mi, s) = (dt.hour(), dt.minute(), dt.second());
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")?;
        let ms = self.0.rem_euclid(1000);
        if ms != 0 {
            write!(f, ".{ms:03}")?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339() {
        for text in [
            "2026-01-01T00:00:00Z",
            "1999-12-31T23:59:59.250Z",
            "1970-01-01T00:00:00Z",
        ] {
            assert_eq!(Timestamp::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn normalises_offsets_to_utc() {
        let t = Timestamp::parse("2026-01-01T01:30:00+01:30").unwrap();
        assert_eq!(t.to_string(), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn rejects_garbage() {
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn before_epoch_formats() {
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999Z");
    }
}

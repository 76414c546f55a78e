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
#[error(
    "invalid timestamp `{text}`: expected RFC 3339 in the years 0000 to 9999 once in UTC, e.g. `2026-01-01T00:00:00Z`"
)]
pub struct TimestampError {
    text: String,
}

impl Timestamp {
    /// The system clock, for live services only.
    pub fn now() -> Timestamp {
        let now = OffsetDateTime::now_utc();
        Timestamp((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// The timestamp `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This timestamp plus `s` seconds (saturating).
    pub const fn plus_secs(self, s: u32) -> Timestamp {
        Timestamp(self.0.saturating_add(s as i64 * 1000))
    }

    /// The first millisecond of the year 0000 in UTC.
    pub const FIRST: Timestamp = Timestamp(-62_167_219_200_000);
    /// The last millisecond of the year 9999 in UTC.
    pub const LAST: Timestamp = Timestamp(253_402_300_799_999);

    /// Parses RFC 3339 (any offset; sub-millisecond digits are truncated).
    /// The time in UTC must lie in the years 0000 to 9999
    /// ([`Timestamp::FIRST`] to [`Timestamp::LAST`]), the times RFC 3339
    /// text in UTC can spell: a receipt records times that way and reads
    /// them back, and a time an offset pushes past either end (such as
    /// `9999-12-31T23:59:59-23:59`) could not be read back.
    pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
        // Quoted in a 400's body: cut, as other echoed input is.
        let err = || TimestampError {
            text: text.chars().take(64).collect(),
        };
        let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| err())?;
        let ms = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(ms)
            .ok()
            .map(Timestamp)
            .filter(|t| (Timestamp::FIRST..=Timestamp::LAST).contains(t))
            .ok_or_else(err)
    }
}

/// Serde for timestamps as plain milliseconds (checkpoints: any `i64`
/// round-trips, unlike RFC 3339 text): `#[serde(with = "crate::clock::millis")]`.
pub mod millis {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Timestamp;

    /// Writes the milliseconds.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.as_millis())
    }

    /// Reads the milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        i64::deserialize(d).map(Timestamp)
    }
}

/// RFC 3339 text of a timestamp in years 0000–9999, built on the stack.
struct Rfc3339Text {
    buf: [u8; 24],
    len: usize,
}

impl Rfc3339Text {
    fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl Timestamp {
    /// Formats years 0000–9999 without the `time` crate (the hot path of
    /// every receipt); `None` outside that range.
    fn rfc3339(self) -> Option<Rfc3339Text> {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            return None;
        }
        let mut text = Rfc3339Text {
            buf: *b"0000-00-00T00:00:00.000Z",
            len: 20,
        };
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                text.buf[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, m);
        put(8, 2, d);
        put(11, 2, day_secs / 3600);
        put(14, 2, day_secs / 60 % 60);
        put(17, 2, day_secs % 60);
        if ms != 0 {
            put(20, 3, ms);
            text.len = 24;
        } else {
            text.buf[19] = b'Z';
        }
        Some(text)
    }
}

/// Year, month and day of a day count since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with a `Z`, milliseconds only when non-zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.rfc3339() {
            return f.write_str(text.as_str());
        }
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

impl crate::canonical::direct::Canon for Timestamp {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), crate::canonical::CanonicalError> {
        match self.rfc3339() {
            Some(text) => text.as_str().put(out),
            None => self.to_string().put(out),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339() {
            Some(text) => serializer.serialize_str(text.as_str()),
            None => serializer.collect_str(self),
        }
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
    fn refuses_times_an_offset_pushes_out_of_the_years_0000_to_9999() {
        for text in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+00:01"] {
            let err = Timestamp::parse(text).unwrap_err();
            assert!(err.to_string().contains("0000 to 9999"), "{err}");
        }
        let last = Timestamp::parse("9999-12-31T23:59:59.999Z").unwrap();
        assert_eq!(last, Timestamp::LAST);
        let first = Timestamp::parse("0000-01-01T00:00:00Z").unwrap();
        assert_eq!(first, Timestamp::FIRST);
        assert_eq!(
            Timestamp::parse("0000-01-01T00:00:00-00:01").unwrap(),
            Timestamp(Timestamp::FIRST.0 + 60_000)
        );
    }

    #[test]
    fn before_epoch_formats() {
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999Z");
    }

    /// The `time` crate's formatting, the reference for the fast path.
    fn reference(ms: i64) -> Option<String> {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
        let (y, mo, d) = (dt.year(), u8::from(dt.month()), dt.day());
        let (h, mi, s) = (dt.hour(), dt.minute(), dt.second());
        let frac = match ms.rem_euclid(1000) {
            0 => String::new(),
            f => format!(".{f:03}"),
        };
        Some(format!(
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}Z"
        ))
    }

    #[test]
    fn fast_formatting_edges() {
        for ms in [
            0,
            -1,
            951_782_400_000,
            4_107_542_400_000,
            253_402_300_799_999,
        ] {
            let fast = Timestamp(ms).rfc3339().map(|t| t.as_str().to_owned());
            assert_eq!(fast, reference(ms), "{ms}");
        }
        // Year 10000 and year -1 fall back.
        assert!(Timestamp(253_402_300_800_000).rfc3339().is_none());
        assert!(Timestamp(-62_167_219_200_001).rfc3339().is_none());
        assert_eq!(
            Timestamp(-62_167_219_200_000).to_string(),
            "0000-01-01T00:00:00Z"
        );
    }

    proptest::proptest! {
        /// Whatever is accepted is written the fast way and reads back as itself.
        #[test]
        fn an_accepted_time_reads_back_as_itself(
            // The first and the last day of the range, often: an offset
            // can push a time there across either end.
            y in proptest::prop_oneof![proptest::strategy::Just(0), proptest::strategy::Just(9999), 0..=9999i32],
            mo in proptest::prop_oneof![proptest::strategy::Just(1), proptest::strategy::Just(12), 1..=12u8],
            d in proptest::prop_oneof![proptest::strategy::Just(1), proptest::strategy::Just(31), 1..=31u8],
            h in 0..24u8, mi in 0..60u8,
            s in 0..60u8, ms in 0..1000u16, east in proptest::bool::ANY, oh in 0..24u8, om in 0..60u8,
        ) {
            let sign = if east { '+' } else { '-' };
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}{sign}{oh:02}:{om:02}");
            if let Ok(t) = Timestamp::parse(&text) {
                proptest::prop_assert!(t.rfc3339().is_some(), "{}", text);
                proptest::prop_assert_eq!(Timestamp::parse(&t.to_string()).ok(), Some(t));
            }
        }

        #[test]
        fn fast_formatting_matches_the_time_crate(ms in -62_167_219_200_000i64..253_402_300_800_000) {
            let fast = Timestamp(ms).rfc3339().map(|t| t.as_str().to_owned());
            proptest::prop_assert_eq!(fast, reference(ms));
        }
    }
}

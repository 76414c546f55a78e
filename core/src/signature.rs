//! Timestamped HMAC-SHA256 signatures: the `X-Ggen-Signature` header that
//! signs incoming marketplace events and outgoing webhook actions.
//!
//! The header is `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." ‖ body>`
//! (the scheme Stripe uses for its webhooks). The signed timestamp lets a
//! receiver refuse a captured request replayed later: [`SigningKey::verify`] accepts a
//! signature only while `t` is within `tolerance` of the receiver's clock,
//! and the receiver deduplicates event ids over a window at least twice
//! that long. A header may carry several `v1=` entries (a sender rotating
//! keys signs with both); one that verifies is enough. Comparison is
//! constant-time (`Mac::verify_slice`).

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::clock::Timestamp;

/// The header's name.
pub const HEADER: &str = "x-ggen-signature";

/// How far a signature's timestamp may be from the receiver's clock, by default.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

type HmacSha256 = hmac::Hmac<Sha256>;

/// An HMAC-SHA256 key (never printed).
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// Why a signature header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not `t=<seconds>,v1=<hex>`.
    #[error("signature header is not `t=<unix seconds>,v1=<hex hmac-sha256>`")]
    Malformed,
    /// The signed timestamp is too far from the receiver's clock.
    #[error(
        "signature timestamp `{signed}` is `{skew}` s from the server's clock; at most `{tolerance}` s allowed"
    )]
    Stale {
        /// The signed unix seconds.
        signed: i64,
        /// Seconds between it and the receiver's clock.
        skew: i64,
        /// The allowed distance.
        tolerance: i64,
    },
    /// No `v1` entry is the HMAC of the timestamp and body under this key.
    #[error("signature does not verify")]
    Mismatch,
}

impl SigningKey {
    /// Wraps the raw key bytes.
    pub fn new(key: &[u8]) -> SigningKey {
        SigningKey(key.to_vec())
    }

    fn mac(&self, t: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The header value signing `body` at `at` (whole seconds).
    pub fn sign(&self, body: &[u8], at: Timestamp) -> String {
        let t = at.as_millis().div_euclid(1000);
        let digest = self.mac(t, body).finalize().into_bytes();
        format!("t={t},v1={}", hex::encode(digest))
    }

    /// Checks `header` over `body` against the receiver's clock `now`.
    pub fn verify(
        &self,
        header: &str,
        body: &[u8],
        now: Timestamp,
        tolerance_secs: i64,
    ) -> Result<(), SignatureError> {
        let parsed = Parsed::from_header(header)?;
        parsed.check_time(now, tolerance_secs)?;
        // The body is hashed once; each `v1` entry checks a copy of the state.
        let mac = self.mac(parsed.t, body);
        let verifies = parsed
            .v1
            .iter()
            .any(|digest| mac.clone().verify_slice(digest).is_ok());
        if verifies {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Checks that `header` has the shape of a signature (no key needed) and
/// its timestamp is within `tolerance_secs` of `now`: all that can be
/// checked before the body is read (a stale capture is refused without
/// reading it).
pub fn fresh(header: &str, now: Timestamp, tolerance_secs: i64) -> Result<(), SignatureError> {
    let parsed = Parsed::from_header(header)?;
    parsed.check_time(now, tolerance_secs)
}

/// A header split into its timestamp and digests.
struct Parsed {
    t: i64,
    v1: Vec<Vec<u8>>,
}

impl Parsed {
    fn check_time(&self, now: Timestamp, tolerance_secs: i64) -> Result<(), SignatureError> {
        let skew = now
            .as_millis()
            .div_euclid(1000)
            .saturating_sub(self.t)
            .saturating_abs();
        if skew > tolerance_secs {
            return Err(SignatureError::Stale {
                signed: self.t,
                skew,
                tolerance: tolerance_secs,
            });
        }
        Ok(())
    }

    fn from_header(header: &str) -> Result<Parsed, SignatureError> {
        // A bounded header: a handful of entries, never thousands.
        const MAX_ENTRIES: usize = 8;
        let mut t = None;
        let mut v1 = Vec::new();
        for (index, item) in header.split(',').enumerate() {
            if index == MAX_ENTRIES {
                return Err(SignatureError::Malformed);
            }
            let (name, value) = item
                .trim()
                .split_once('=')
                .ok_or(SignatureError::Malformed)?;
            match name {
                "t" if t.is_none() => {
                    let seconds = value
                        .parse::<i64>()
                        .ok()
                        .filter(|s| *s >= 0 && value.bytes().all(|b| b.is_ascii_digit()));
                    t = Some(seconds.ok_or(SignatureError::Malformed)?);
                }
                "v1" => {
                    let digest = hex::decode(value).map_err(|_| SignatureError::Malformed)?;
                    if digest.len() != 32 {
                        return Err(SignatureError::Malformed);
                    }
                    v1.push(digest);
                }
                // Other schemes (a future `v2`) are ignored, as Stripe does.
                _ if name != "t" => {}
                _ => return Err(SignatureError::Malformed),
            }
        }
        match t {
            Some(t) if !v1.is_empty() => Ok(Parsed { t, v1 }),
            _ => Err(SignatureError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_767_225_600_123);

    /// The header's shape alone.
    fn well_formed(header: &str) -> Result<(), SignatureError> {
        Parsed::from_header(header).map(|_| ())
    }

    #[test]
    fn signs_the_timestamp_and_the_body() {
        let key = SigningKey::new(b"key");
        let header = key.sign(b"body", NOW);
        assert!(header.starts_with("t=1767225600,v1="), "{header}");
        assert_eq!(key.verify(&header, b"body", NOW, 300), Ok(()));
        assert_eq!(
            key.verify(&header, b"body!", NOW, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            SigningKey::new(b"other").verify(&header, b"body", NOW, 300),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = header.replace("t=1767225600", "t=1767225601");
        assert_eq!(
            key.verify(&moved, b"body", NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn matches_an_independent_hmac() {
        // Python's `hmac.new(b"Jefe", b"1767225600.what do ya want for
        // nothing?", hashlib.sha256).hexdigest()`.
        let header = SigningKey::new(b"Jefe").sign(b"what do ya want for nothing?", NOW);
        assert_eq!(
            header,
            "t=1767225600,v1=8bf4bab82972f519c62eab705abd744e0bc4e8a7e292de99189f49e03834693a"
        );
    }

    #[test]
    fn refuses_timestamps_outside_the_tolerance() {
        let key = SigningKey::new(b"key");
        let old = key.sign(b"body", Timestamp::from_millis(NOW.as_millis() - 301_000));
        assert!(matches!(
            key.verify(&old, b"body", NOW, 300),
            Err(SignatureError::Stale { skew: 301, .. })
        ));
        let future = key.sign(b"body", Timestamp::from_millis(NOW.as_millis() + 400_000));
        assert!(matches!(
            key.verify(&future, b"body", NOW, 300),
            Err(SignatureError::Stale { .. })
        ));
        let edge = key.sign(b"body", Timestamp::from_millis(NOW.as_millis() - 300_000));
        assert_eq!(key.verify(&edge, b"body", NOW, 300), Ok(()));
    }

    #[test]
    fn accepts_any_matching_v1_entry() {
        let old = SigningKey::new(b"old");
        let new = SigningKey::new(b"new");
        let header = format!(
            "{},{}",
            new.sign(b"body", NOW),
            old.sign(b"body", NOW).split_once(',').unwrap().1
        );
        assert_eq!(old.verify(&header, b"body", NOW, 300), Ok(()));
        assert_eq!(new.verify(&header, b"body", NOW, 300), Ok(()));
    }

    #[test]
    fn malformed_headers() {
        let key = SigningKey::new(b"key");
        let digest = "ab".repeat(32);
        for bad in [
            "",
            "sha256=abcd",
            &format!("v1={digest}"),
            "t=1767225600",
            "t=1767225600,v1=zz",
            "t=1767225600,v1=abcd",
            &format!("t=-5,v1={digest}"),
            &format!("t=+5,v1={digest}"),
            &format!("t=1,t=2,v1={digest}"),
            &format!("t=1,{}", ["x=1"; 9].join(",")),
        ] {
            assert_eq!(well_formed(bad), Err(SignatureError::Malformed), "{bad}");
            assert_eq!(
                key.verify(bad, b"body", NOW, 300),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(well_formed(&format!("t=1,v1={digest},v0=x")), Ok(()));
        // Fresh: well formed and on time, decided without the body.
        let on_time = format!("t={},v1={digest}", NOW.as_millis() / 1000 - 10);
        assert_eq!(fresh(&on_time, NOW, 300), Ok(()));
        assert!(matches!(
            fresh(&format!("t=0,v1={digest}"), NOW, 300),
            Err(SignatureError::Stale { .. })
        ));
        assert!(matches!(
            fresh(&format!("t={},v1={digest}", i64::MAX), NOW, 300),
            Err(SignatureError::Stale { .. })
        ));
    }
}

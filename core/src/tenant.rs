//! Tenant ids: the ground floor every other module names tenants with
//! (receipts, the ledger, the registry).

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validated tenant id: `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`.
///
/// Cheap to clone; never used raw in a file path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(Arc<str>);

/// A string that is not a valid tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid tenant id {shown}: expected 1-128 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or digit"
)]
pub struct InvalidTenantId {
    shown: String,
}

impl TenantId {
    /// Validates `text` as a tenant id.
    pub fn new(text: &str) -> Result<TenantId, InvalidTenantId> {
        let bytes = text.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 128
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(TenantId(Arc::from(text)))
        } else {
            // Show a bounded, escaped prefix: the input may be hostile.
            let shown: String = text.chars().take(64).collect();
            Err(InvalidTenantId {
                shown: format!("{shown:?}"),
            })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by tenant id are looked up by `&str` (the derived `Hash`, `Eq`
/// and `Ord` are those of the text).
impl Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        TenantId::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        for id in ["acme", "a", "A1.b_c-d", &"x".repeat(128)] {
            assert_eq!(TenantId::new(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn rejects_invalid_ids() {
        for id in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "../etc",
            "a b",
            "é",
            &"x".repeat(129),
            "a\0",
        ] {
            assert!(TenantId::new(id).is_err(), "{id:?} accepted");
        }
    }
}

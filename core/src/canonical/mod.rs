//! RFC 8785 (JCS) canonical JSON, restricted to integers.
//!
//! Object members are sorted by the UTF-16 code units of their names, there is
//! no insignificant whitespace, and strings use the ES6 escaping rules (only
//! `"`, `\` and control characters are escaped; control characters without a
//! short form become `\u00xx` in lowercase hex; everything else, `/` and
//! non-ASCII included, is written raw).
//!
//! Numbers: receipts carry decimals as strings, so the only numbers allowed
//! are integers within the I-JSON safe range `±(2^53 − 1)`, the range where
//! JCS's "ES6 number to string" is the plain decimal form. Any float is
//! [`CanonicalError::Float`]; a larger integer is
//! [`CanonicalError::IntegerOutOfRange`] (another JCS implementation would
//! round it through a double and disagree about the bytes).
//!
//! [`to_vec`] is a serde serializer that writes canonical bytes directly
//! (no intermediate `serde_json::Value`): members are written in declaration
//! order and an object is reordered in place only when its names are not
//! already sorted.
//!
//! The receipt's documents skip the serializer: `direct.rs` writes structs
//! whose member names are known ahead straight into the output, in an
//! order checked at compile time (debug builds compare each receipt with
//! [`to_vec`]'s bytes).
//!
//! This file holds the public API and the [`serde_json::Value`] writer; the
//! serde serializer is in `serializer.rs`, map keys in `key.rs`.

use std::cmp::Ordering;

use serde::ser::{self, Serialize};

pub(crate) mod direct;
mod key;
mod serializer;

use serializer::Canonicalizer;
#[doc(hidden)]
pub use serializer::Compound;

/// Largest integer magnitude allowed: `2^53 − 1` (I-JSON, RFC 7493 §2.2).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// A floating-point number; receipts carry decimals as strings.
    #[error("floating-point number has no canonical form here: write decimals as strings")]
    Float,
    /// An integer outside `±(2^53 − 1)`.
    #[error("integer `{value}` is outside the safe range `±9007199254740991`")]
    IntegerOutOfRange {
        /// The offending integer, in decimal.
        value: String,
    },
    /// A map key that is not a string (or an integer, which is written as a string).
    #[error("object key must be a string, got {kind}")]
    KeyNotString {
        /// What kind of value the key was.
        kind: &'static str,
    },
    /// Two members of one object share a name.
    #[error("duplicate object key `{key}`")]
    DuplicateKey {
        /// The repeated name.
        key: String,
    },
    /// An error raised by a `Serialize` implementation.
    #[error("serialization failed: {message}")]
    Custom {
        /// The implementation's message.
        message: String,
    },
}

impl ser::Error for CanonicalError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        CanonicalError::Custom {
            message: msg.to_string(),
        }
    }
}

/// Serializes `value` to RFC 8785 canonical JSON bytes.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(512);
    append(value, &mut out)?;
    Ok(out)
}

/// Appends the RFC 8785 canonical JSON of `value` to `out` (sized by the
/// caller when it knows better than [`to_vec`]'s guess).
///
/// On error, `out` may hold a partial value.
pub fn append<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    let mut ser = Canonicalizer::new(out);
    value.serialize(&mut ser)
}

/// Appends the canonical form of `value` to `out`.
///
/// On error, `out` may hold a partial value.
pub fn write_value(value: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    use serde_json::Value;
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(v) = n.as_u64() {
                write_u64(out, v)?;
            } else if let Some(v) = n.as_i64() {
                write_i64(out, v)?;
            } else {
                return Err(CanonicalError::Float);
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // `serde_json::Map` iterates in code-point order (or insertion
            // order with `preserve_order`); both may differ from UTF-16 order.
            if !members.is_sorted_by(|a, b| cmp_utf16(a.0, b.0) != Ordering::Greater) {
                members.sort_unstable_by(|a, b| cmp_utf16(a.0, b.0));
            }
            out.push(b'{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// Compares two strings by their UTF-16 code units (RFC 8785 §3.2.3).
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let Some(i) = x.iter().zip(y).position(|(p, q)| p != q) else {
        return x.len().cmp(&y.len());
    };
    // UTF-8 byte order is code-point order, which equals UTF-16 order except
    // between supplementary characters and U+E000..=U+FFFF; a difference at an
    // ASCII byte on either side is decided by the bytes alone.
    if x[i] < 0x80 || y[i] < 0x80 {
        return x[i].cmp(&y[i]);
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Whether any byte of `bytes` must be escaped in a JSON string.
fn needs_escape(bytes: &[u8]) -> bool {
    let special = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\');
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        // No early exit inside a chunk, so this compiles to SIMD compares.
        if chunk.iter().fold(false, |any, &b| any | special(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| special(b))
}

/// Writes `s` as a JSON string with ES6 escaping.
fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Most strings need no escape: check 16 bytes at a time (vectorized).
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\x08' => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\x0c' => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes the decimal digits of `v` (no range check).
fn write_digits(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

fn write_u64(out: &mut Vec<u8>, v: u64) -> Result<(), CanonicalError> {
    if v > MAX_SAFE_INTEGER {
        return Err(CanonicalError::IntegerOutOfRange {
            value: v.to_string(),
        });
    }
    write_digits(out, v);
    Ok(())
}

fn write_i64(out: &mut Vec<u8>, v: i64) -> Result<(), CanonicalError> {
    if v.unsigned_abs() > MAX_SAFE_INTEGER {
        return Err(CanonicalError::IntegerOutOfRange {
            value: v.to_string(),
        });
    }
    if v < 0 {
        out.push(b'-');
    }
    write_digits(out, v.unsigned_abs());
    Ok(())
}

fn write_i128(out: &mut Vec<u8>, v: i128) -> Result<(), CanonicalError> {
    match i64::try_from(v) {
        Ok(v) => write_i64(out, v),
        Err(_) => Err(CanonicalError::IntegerOutOfRange {
            value: v.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests;

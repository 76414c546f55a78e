//! Canonical JSON written straight from structs whose members are known
//! ahead (the receipt's documents, the hot path of every decision): no
//! serializer walk, no member stack, no order check at run time. The
//! `object!` macro writes the members in the
//! order given and checks at compile time that it is RFC 8785's order.
//!
//! The bytes are the ones [`to_vec`](super::to_vec) writes for the same
//! struct when it derives `Serialize` with `skip_serializing_if =
//! "Option::is_none"` on every `Option` member (the receipt's tests compare
//! the two).

use std::borrow::Cow;

use super::{CanonicalError, write_str, write_u64, write_value};

/// A value with a canonical form.
pub trait Canon {
    /// Appends the canonical form of `self` to `out`.
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError>;
}

/// An object member's value: written after its name, or left out with its
/// name when absent (`None`).
pub trait Member {
    /// Appends `"name":value` (after a comma unless `*first`) unless the
    /// value is absent; `key` is `"name":`.
    fn member(
        &self,
        key: &'static [u8],
        first: &mut bool,
        out: &mut Vec<u8>,
    ) -> Result<(), CanonicalError>;
}

impl<T: Canon + ?Sized> Member for T {
    fn member(
        &self,
        key: &'static [u8],
        first: &mut bool,
        out: &mut Vec<u8>,
    ) -> Result<(), CanonicalError> {
        if !std::mem::take(first) {
            out.push(b',');
        }
        out.extend_from_slice(key);
        self.put(out)
    }
}

impl<T: Canon> Member for Option<T> {
    fn member(
        &self,
        key: &'static [u8],
        first: &mut bool,
        out: &mut Vec<u8>,
    ) -> Result<(), CanonicalError> {
        match self {
            Some(value) => value.member(key, first, out),
            None => Ok(()),
        }
    }
}

impl<T: Canon + ?Sized> Canon for &T {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        (**self).put(out)
    }
}

impl Canon for str {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        write_str(out, self);
        Ok(())
    }
}

impl Canon for String {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        self.as_str().put(out)
    }
}

impl Canon for Cow<'_, str> {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        self.as_ref().put(out)
    }
}

impl Canon for bool {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        out.extend_from_slice(if *self { b"true" } else { b"false" });
        Ok(())
    }
}

impl Canon for u64 {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        write_u64(out, *self)
    }
}

impl Canon for u32 {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        write_u64(out, u64::from(*self))
    }
}

impl Canon for u16 {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        write_u64(out, u64::from(*self))
    }
}

impl Canon for serde_json::Value {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        write_value(self, out)
    }
}

impl<T: Canon> Canon for [T] {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        out.push(b'[');
        for (i, item) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            item.put(out)?;
        }
        out.push(b']');
        Ok(())
    }
}

impl<T: Canon> Canon for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        self.as_slice().put(out)
    }
}

/// Whether `names` are in RFC 8785 order (strictly ascending UTF-16 code
/// units) and plain ASCII needing no escape, as member names written
/// verbatim must be: ASCII order is UTF-16 order.
pub const fn in_order(names: &[&str]) -> bool {
    let mut i = 0;
    while i < names.len() {
        let name = names[i].as_bytes();
        let mut j = 0;
        while j < name.len() {
            let b = name[j];
            if b < 0x20 || b >= 0x80 || b == b'"' || b == b'\\' {
                return false;
            }
            j += 1;
        }
        if i > 0 && !less(names[i - 1].as_bytes(), name) {
            return false;
        }
        i += 1;
    }
    true
}

const fn less(a: &[u8], b: &[u8]) -> bool {
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// Writes `$value`'s members (fields named as the members, in RFC 8785
/// order, which the compiler checks) as a canonical object into `$out`;
/// evaluates to `Ok(())` or the first member's error.
macro_rules! object {
    ($out:expr, $value:expr; $($field:ident),+ $(,)?) => {{
        const _: () = assert!(
            $crate::canonical::direct::in_order(&[$(stringify!($field)),+]),
            "members must be plain ASCII names in RFC 8785 order"
        );
        let out: &mut Vec<u8> = $out;
        let value = $value;
        out.push(b'{');
        let mut first = true;
        $(
            $crate::canonical::direct::Member::member(
                &value.$field,
                concat!("\"", stringify!($field), "\":").as_bytes(),
                &mut first,
                out,
            )?;
        )+
        out.push(b'}');
        Ok(())
    }};
}
pub(crate) use object;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_ascend_and_be_plain() {
        assert!(in_order(&[
            "a",
            "ab",
            "b",
            "spec_sha256",
            "tenant",
            "to",
            "v"
        ]));
        assert!(!in_order(&["b", "a"]));
        assert!(!in_order(&["a", "a"]));
        assert!(!in_order(&["a\"b"]));
        assert!(!in_order(&["é"]));
    }

    struct Doc<'a> {
        a: Option<u64>,
        b: &'a str,
        c: Vec<bool>,
        d: Option<Cow<'a, str>>,
    }

    impl Canon for Doc<'_> {
        fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
            object!(out, self; a, b, c, d)
        }
    }

    #[test]
    fn absent_members_leave_no_name_or_comma() {
        let mut out = Vec::new();
        let doc = Doc {
            a: None,
            b: "x\"y",
            c: vec![true, false],
            d: None,
        };
        doc.put(&mut out).unwrap();
        assert_eq!(out, br#"{"b":"x\"y","c":[true,false]}"#);
        out.clear();
        let doc = Doc {
            a: Some(7),
            b: "",
            c: Vec::new(),
            d: Some(Cow::Borrowed("é")),
        };
        doc.put(&mut out).unwrap();
        assert_eq!(out, r#"{"a":7,"b":"","c":[],"d":"é"}"#.as_bytes());
    }

    #[test]
    fn integers_past_the_safe_range_are_refused() {
        let mut out = Vec::new();
        let doc = Doc {
            a: Some(1 << 53),
            b: "",
            c: Vec::new(),
            d: None,
        };
        assert!(matches!(
            doc.put(&mut out),
            Err(CanonicalError::IntegerOutOfRange { .. })
        ));
    }
}

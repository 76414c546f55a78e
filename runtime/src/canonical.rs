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

use std::cmp::Ordering;

use serde::ser::{self, Serialize};

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
    let mut ser = Canonicalizer::new(&mut out);
    value.serialize(&mut ser)?;
    Ok(out)
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

/// Writes `s` as a JSON string with ES6 escaping.
fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
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

/// The name of one member being written: static (struct field) or a range
/// of the key arena (map key).
#[derive(Debug, Clone, Copy)]
enum Name {
    Static(&'static str),
    Arena(usize, usize),
}

/// One written member: its name and the byte range of `"name":value` in the output.
#[derive(Debug, Clone, Copy)]
struct Member {
    name: Name,
    begin: usize,
    end: usize,
}

/// The serializer: writes into `out`, keeps the members of every open object
/// on one shared stack so that nested objects allocate nothing once warm.
#[derive(Debug)]
struct Canonicalizer<'o> {
    out: &'o mut Vec<u8>,
    /// Members of all open objects, innermost last.
    members: Vec<Member>,
    /// Raw (unescaped) map keys of all open objects.
    arena: String,
    /// Scratch copy used when an object must be reordered.
    scratch: Vec<u8>,
}

impl<'o> Canonicalizer<'o> {
    fn new(out: &'o mut Vec<u8>) -> Self {
        Canonicalizer {
            out,
            members: Vec::with_capacity(32),
            arena: String::new(),
            scratch: Vec::new(),
        }
    }

    fn name<'s>(arena: &'s str, name: &'s Name) -> &'s str {
        match *name {
            Name::Static(s) => s,
            Name::Arena(a, b) => &arena[a..b],
        }
    }

    /// Closes the object opened at `open` (the offset of its `{`) whose
    /// members start at `base` on the member stack.
    fn close_object(
        &mut self,
        open: usize,
        base: usize,
        arena_base: usize,
    ) -> Result<(), CanonicalError> {
        let arena = self.arena.as_str();
        let members = &mut self.members[base..];
        let sorted = members.windows(2).all(|w| {
            cmp_utf16(Self::name(arena, &w[0].name), Self::name(arena, &w[1].name))
                == Ordering::Less
        });
        if !sorted {
            members.sort_unstable_by(|a, b| {
                cmp_utf16(Self::name(arena, &a.name), Self::name(arena, &b.name))
            });
            if let Some(w) = members
                .windows(2)
                .find(|w| Self::name(arena, &w[0].name) == Self::name(arena, &w[1].name))
            {
                return Err(CanonicalError::DuplicateKey {
                    key: Self::name(arena, &w[0].name).to_owned(),
                });
            }
            let body = open + 1;
            self.scratch.clear();
            self.scratch.extend_from_slice(&self.out[body..]);
            self.out.truncate(body);
            for (i, m) in members.iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                self.out
                    .extend_from_slice(&self.scratch[m.begin - body..m.end - body]);
            }
        }
        self.out.push(b'}');
        self.members.truncate(base);
        self.arena.truncate(arena_base);
        Ok(())
    }
}

/// An open array (`[`) or object (`{`).
#[derive(Debug)]
#[doc(hidden)]
pub struct Compound<'a, 'o> {
    ser: &'a mut Canonicalizer<'o>,
    /// Offset of the opening bracket in the output.
    open: usize,
    /// Member-stack base of this object.
    base: usize,
    /// Key-arena length when this object opened.
    arena_base: usize,
    /// Whether an element or member has been written.
    any: bool,
    /// For variants written as `{"name":…}`: close one more object at the end.
    wrapped: Option<(usize, usize, usize)>,
    /// For a map member whose key was given and whose value is pending.
    pending: Option<(Name, usize)>,
}

impl<'a, 'o> Compound<'a, 'o> {
    fn open(
        ser: &'a mut Canonicalizer<'o>,
        bracket: u8,
        wrapped: Option<(usize, usize, usize)>,
    ) -> Self {
        let open = ser.out.len();
        ser.out.push(bracket);
        let base = ser.members.len();
        let arena_base = ser.arena.len();
        Compound {
            ser,
            open,
            base,
            arena_base,
            any: false,
            wrapped,
            pending: None,
        }
    }

    fn comma(&mut self) {
        if self.any {
            self.ser.out.push(b',');
        }
        self.any = true;
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        self.comma();
        value.serialize(&mut *self.ser)
    }

    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.comma();
        let begin = self.ser.out.len();
        write_str(self.ser.out, key);
        self.ser.out.push(b':');
        value.serialize(&mut *self.ser)?;
        let end = self.ser.out.len();
        self.ser.members.push(Member {
            name: Name::Static(key),
            begin,
            end,
        });
        Ok(())
    }

    fn end_array(self) -> Result<(), CanonicalError> {
        self.ser.out.push(b']');
        Self::unwrap_variant(self.ser, self.wrapped)
    }

    fn end_object(self) -> Result<(), CanonicalError> {
        self.ser
            .close_object(self.open, self.base, self.arena_base)?;
        Self::unwrap_variant(self.ser, self.wrapped)
    }

    fn unwrap_variant(
        ser: &mut Canonicalizer<'_>,
        wrapped: Option<(usize, usize, usize)>,
    ) -> Result<(), CanonicalError> {
        match wrapped {
            Some((open, base, arena_base)) => {
                // The single member `"variant":…` ends here.
                let end = ser.out.len();
                let begin = open + 1;
                if let Some(m) = ser.members.get_mut(base) {
                    m.end = end;
                    m.begin = begin;
                }
                ser.close_object(open, base, arena_base)
            }
            None => Ok(()),
        }
    }
}

impl<'o> Canonicalizer<'o> {
    /// Writes `{"variant":` and records the member, returning what closes it.
    fn open_variant(&mut self, variant: &'static str) -> (usize, usize, usize) {
        let open = self.out.len();
        let base = self.members.len();
        let arena_base = self.arena.len();
        self.out.push(b'{');
        let begin = self.out.len();
        write_str(self.out, variant);
        self.out.push(b':');
        self.members.push(Member {
            name: Name::Static(variant),
            begin,
            end: begin,
        });
        (open, base, arena_base)
    }
}

impl<'a, 'o> ser::Serializer for &'a mut Canonicalizer<'o> {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = Compound<'a, 'o>;
    type SerializeTuple = Compound<'a, 'o>;
    type SerializeTupleStruct = Compound<'a, 'o>;
    type SerializeTupleVariant = Compound<'a, 'o>;
    type SerializeMap = Compound<'a, 'o>;
    type SerializeStruct = Compound<'a, 'o>;
    type SerializeStructVariant = Compound<'a, 'o>;

    fn serialize_bool(self, v: bool) -> Result<(), CanonicalError> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), CanonicalError> {
        write_i64(self.out, v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), CanonicalError> {
        write_i64(self.out, v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), CanonicalError> {
        write_i64(self.out, v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), CanonicalError> {
        write_i64(self.out, v)
    }
    fn serialize_i128(self, v: i128) -> Result<(), CanonicalError> {
        write_i128(self.out, v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), CanonicalError> {
        write_u64(self.out, v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), CanonicalError> {
        write_u64(self.out, v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), CanonicalError> {
        write_u64(self.out, v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), CanonicalError> {
        write_u64(self.out, v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), CanonicalError> {
        match u64::try_from(v) {
            Ok(v) => write_u64(self.out, v),
            Err(_) => Err(CanonicalError::IntegerOutOfRange {
                value: v.to_string(),
            }),
        }
    }
    fn serialize_f32(self, _v: f32) -> Result<(), CanonicalError> {
        Err(CanonicalError::Float)
    }
    fn serialize_f64(self, _v: f64) -> Result<(), CanonicalError> {
        Err(CanonicalError::Float)
    }
    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), CanonicalError> {
        // As serde_json does: an array of numbers.
        self.out.push(b'[');
        for (i, b) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_digits(self.out, u64::from(*b));
        }
        self.out.push(b']');
        Ok(())
    }
    fn serialize_none(self) -> Result<(), CanonicalError> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), CanonicalError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CanonicalError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        write_str(self.out, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        // A single member needs no sorting.
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a, 'o>, CanonicalError> {
        Ok(Compound::open(self, b'[', None))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a, 'o>, CanonicalError> {
        Ok(Compound::open(self, b'[', None))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'o>, CanonicalError> {
        Ok(Compound::open(self, b'[', None))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'o>, CanonicalError> {
        let wrapped = self.open_variant(variant);
        Ok(Compound::open(self, b'[', Some(wrapped)))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a, 'o>, CanonicalError> {
        Ok(Compound::open(self, b'{', None))
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'o>, CanonicalError> {
        Ok(Compound::open(self, b'{', None))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'o>, CanonicalError> {
        let wrapped = self.open_variant(variant);
        Ok(Compound::open(self, b'{', Some(wrapped)))
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_element<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.element(value)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.end_array()
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_element<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.element(value)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.end_array()
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        self.element(value)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.end_array()
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        self.element(value)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.end_array()
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.end_object()
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.end_object()
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), CanonicalError> {
        self.comma();
        let begin = self.ser.out.len();
        let a = self.ser.arena.len();
        key.serialize(KeySerializer {
            arena: &mut self.ser.arena,
        })?;
        let b = self.ser.arena.len();
        write_str(self.ser.out, &self.ser.arena[a..b]);
        self.ser.out.push(b':');
        self.pending = Some((Name::Arena(a, b), begin));
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        let Some((name, begin)) = self.pending.take() else {
            return Err(ser::Error::custom("map value without a key"));
        };
        value.serialize(&mut *self.ser)?;
        let end = self.ser.out.len();
        self.ser.members.push(Member { name, begin, end });
        Ok(())
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.end_object()
    }
}

/// Serializes a map key into the key arena: strings as they are, integers
/// and chars as their text (as serde_json does); anything else is an error.
struct KeySerializer<'k> {
    arena: &'k mut String,
}

impl KeySerializer<'_> {
    fn int(self, v: i128) -> Result<(), CanonicalError> {
        use std::fmt::Write as _;
        write!(self.arena, "{v}").map_err(ser::Error::custom)
    }
    fn reject(kind: &'static str) -> Result<(), CanonicalError> {
        Err(CanonicalError::KeyNotString { kind })
    }
}

impl ser::Serializer for KeySerializer<'_> {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = ser::Impossible<(), CanonicalError>;
    type SerializeTuple = ser::Impossible<(), CanonicalError>;
    type SerializeTupleStruct = ser::Impossible<(), CanonicalError>;
    type SerializeTupleVariant = ser::Impossible<(), CanonicalError>;
    type SerializeMap = ser::Impossible<(), CanonicalError>;
    type SerializeStruct = ser::Impossible<(), CanonicalError>;
    type SerializeStructVariant = ser::Impossible<(), CanonicalError>;

    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        self.arena.push_str(v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        self.arena.push(v);
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        value.serialize(self)
    }
    fn serialize_i8(self, v: i8) -> Result<(), CanonicalError> {
        self.int(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), CanonicalError> {
        self.int(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), CanonicalError> {
        self.int(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), CanonicalError> {
        self.int(v.into())
    }
    fn serialize_i128(self, v: i128) -> Result<(), CanonicalError> {
        self.int(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), CanonicalError> {
        self.int(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), CanonicalError> {
        self.int(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), CanonicalError> {
        self.int(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), CanonicalError> {
        self.int(v.into())
    }
    fn serialize_u128(self, v: u128) -> Result<(), CanonicalError> {
        use std::fmt::Write as _;
        write!(self.arena, "{v}").map_err(ser::Error::custom)
    }
    fn serialize_bool(self, _v: bool) -> Result<(), CanonicalError> {
        Self::reject("a boolean")
    }
    fn serialize_f32(self, _v: f32) -> Result<(), CanonicalError> {
        Self::reject("a float")
    }
    fn serialize_f64(self, _v: f64) -> Result<(), CanonicalError> {
        Self::reject("a float")
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<(), CanonicalError> {
        Self::reject("bytes")
    }
    fn serialize_none(self) -> Result<(), CanonicalError> {
        Self::reject("null")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), CanonicalError> {
        Self::reject("null")
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CanonicalError> {
        Self::reject("null")
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), CanonicalError> {
        Self::reject("an object")
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, CanonicalError> {
        Err(CanonicalError::KeyNotString { kind: "an array" })
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, CanonicalError> {
        Err(CanonicalError::KeyNotString { kind: "an array" })
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, CanonicalError> {
        Err(CanonicalError::KeyNotString { kind: "an array" })
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, CanonicalError> {
        Err(CanonicalError::KeyNotString { kind: "an object" })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, CanonicalError> {
        Err(CanonicalError::KeyNotString { kind: "an object" })
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, CanonicalError> {
        Err(CanonicalError::KeyNotString { kind: "an object" })
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, CanonicalError> {
        Err(CanonicalError::KeyNotString { kind: "an object" })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;
    use serde_json::json;

    use super::*;

    fn both(value: &serde_json::Value) -> String {
        let direct = to_vec(value).unwrap();
        let mut walked = Vec::new();
        write_value(value, &mut walked).unwrap();
        assert_eq!(direct, walked, "to_vec and write_value disagree");
        String::from_utf8(direct).unwrap()
    }

    /// RFC 8785 §3.2.3: members sorted by UTF-16 code units.
    #[test]
    fn rfc8785_sorting_example() {
        let value = json!({
            "\u{20ac}": "Euro Sign",
            "\r": "Carriage Return",
            "\u{fb33}": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\u{1f600}": "Emoji: Grinning Face",
            "\u{80}": "Control",
            "\u{f6}": "Latin Small Letter O With Diaeresis"
        });
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
            \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
            \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(both(&value), expected);
    }

    /// RFC 8785 §3.2.2.2 string escaping, with the §3.2.4 example's strings.
    #[test]
    fn rfc8785_string_escaping() {
        let value = json!({ "string": "\u{20ac}$\u{000F}\u{000a}A'\u{0042}\u{0022}\u{005c}\\\"/" });
        assert_eq!(
            both(&value),
            "{\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
        );
        let value = json!([
            "\u{1f}",
            "\u{8}\t\n\u{c}\r",
            "\u{0}",
            "\u{7f}",
            "\u{2028}",
            "a/b"
        ]);
        assert_eq!(
            both(&value),
            "[\"\\u001f\",\"\\b\\t\\n\\f\\r\",\"\\u0000\",\"\u{7f}\",\"\u{2028}\",\"a/b\"]"
        );
    }

    /// RFC 8785 §3.2.4 example minus its float members.
    #[test]
    fn rfc8785_structure_example() {
        let value = json!({
            "literals": [null, true, false],
            "string": "\u{20ac}$\u{000F}\u{000a}A'\u{0042}\u{0022}\u{005c}\\\"/",
            "numbers": [333333333, 4, 2e0 as i64, 0, -0, 9007199254740991_i64, -9007199254740991_i64]
        });
        assert_eq!(
            both(&value),
            "{\"literals\":[null,true,false],\
             \"numbers\":[333333333,4,2,0,0,9007199254740991,-9007199254740991],\
             \"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
        );
    }

    #[test]
    fn floats_are_refused() {
        assert_eq!(to_vec(&json!({"a": 1.5})), Err(CanonicalError::Float));
        assert_eq!(to_vec(&1.0_f64), Err(CanonicalError::Float));
        let mut out = Vec::new();
        assert_eq!(
            write_value(&json!([0.5]), &mut out),
            Err(CanonicalError::Float)
        );
    }

    #[test]
    fn unsafe_integers_are_refused() {
        assert!(matches!(
            to_vec(&(1_u64 << 53)),
            Err(CanonicalError::IntegerOutOfRange { .. })
        ));
        assert!(matches!(
            to_vec(&i64::MIN),
            Err(CanonicalError::IntegerOutOfRange { .. })
        ));
        assert!(matches!(
            to_vec(&u128::MAX),
            Err(CanonicalError::IntegerOutOfRange { .. })
        ));
        assert_eq!(to_vec(&-42_i8).unwrap(), b"-42");
        assert_eq!(to_vec(&u64::from(u32::MAX)).unwrap(), b"4294967295");
    }

    #[derive(Serialize)]
    struct Inner {
        z: u32,
        a: Option<&'static str>,
    }

    #[derive(Serialize)]
    enum Kind {
        Unit,
        New(u8),
        Tuple(u8, u8),
        Struct { y: u8, b: u8 },
    }

    #[derive(Serialize)]
    struct Outer {
        seq: u64,
        kind: Vec<Kind>,
        inner: Inner,
        map: BTreeMap<String, i32>,
        #[serde(flatten)]
        extra: BTreeMap<u32, bool>,
        bytes: &'static [u8],
        tuple: (char, ()),
    }

    /// The direct serializer agrees with serde_json + write_value on derived types.
    #[test]
    fn derived_types_match_value_path() {
        let value = Outer {
            seq: 7,
            kind: vec![
                Kind::Unit,
                Kind::New(1),
                Kind::Tuple(2, 3),
                Kind::Struct { y: 4, b: 5 },
            ],
            inner: Inner { z: 1, a: None },
            map: [("b".into(), 2), ("a".into(), 1), ("\u{e9}".into(), 3)].into(),
            extra: [(10, true), (9, false)].into(),
            bytes: &[1, 2],
            tuple: ('x', ()),
        };
        let direct = String::from_utf8(to_vec(&value).unwrap()).unwrap();
        let mut walked = Vec::new();
        write_value(&serde_json::to_value(&value).unwrap(), &mut walked).unwrap();
        assert_eq!(direct, String::from_utf8(walked).unwrap());
        assert_eq!(
            direct,
            "{\"10\":true,\"9\":false,\"bytes\":[1,2],\"inner\":{\"a\":null,\"z\":1},\
             \"kind\":[\"Unit\",{\"New\":1},{\"Tuple\":[2,3]},{\"Struct\":{\"b\":5,\"y\":4}}],\
             \"map\":{\"a\":1,\"b\":2,\"\u{e9}\":3},\"seq\":7,\"tuple\":[\"x\",null]}"
        );
    }

    #[test]
    fn duplicate_and_non_string_keys_are_refused() {
        #[derive(Serialize)]
        struct Dup {
            b: u8,
            #[serde(flatten)]
            rest: BTreeMap<&'static str, u8>,
        }
        let dup = Dup {
            b: 1,
            rest: [("a", 2), ("b", 3)].into(),
        };
        assert_eq!(
            to_vec(&dup),
            Err(CanonicalError::DuplicateKey { key: "b".into() })
        );
        let bad: BTreeMap<bool, u8> = [(true, 1)].into();
        assert!(matches!(
            to_vec(&bad),
            Err(CanonicalError::KeyNotString { .. })
        ));
    }

    #[test]
    fn utf16_order() {
        assert_eq!(cmp_utf16("\u{1f600}", "\u{fb33}"), Ordering::Less);
        assert_eq!(cmp_utf16("\u{fb33}", "\u{1f600}"), Ordering::Greater);
        assert_eq!(cmp_utf16("a", "ab"), Ordering::Less);
        assert_eq!(cmp_utf16("b", "\u{e9}"), Ordering::Less);
        assert_eq!(cmp_utf16("same", "same"), Ordering::Equal);
    }
}

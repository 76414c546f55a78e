//! The serde `Serializer` behind [`to_vec`](super::to_vec): `Canonicalizer`
//! writes canonical bytes directly and `Compound` is an open array or object,
//! reordered in place on close when its members are not already sorted.

use std::cmp::Ordering;

use serde::ser::{self, Serialize};

use super::key::KeySerializer;
use super::{CanonicalError, cmp_utf16, write_digits, write_i64, write_i128, write_str, write_u64};

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
pub(super) struct Canonicalizer<'o> {
    out: &'o mut Vec<u8>,
    /// Members of all open objects, innermost last.
    members: Vec<Member>,
    /// Raw (unescaped) map keys of all open objects.
    arena: String,
    /// Scratch copy used when an object must be reordered.
    scratch: Vec<u8>,
}

impl<'o> Canonicalizer<'o> {
    pub(super) fn new(out: &'o mut Vec<u8>) -> Self {
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

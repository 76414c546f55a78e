//! The map-key serializer: a map key becomes a JSON string or an error.

use serde::ser::{self, Serialize};

use super::CanonicalError;

/// Serializes a map key into the key arena: strings as they are, integers
/// and chars as their text (as serde_json does); anything else is an error.
pub(super) struct KeySerializer<'k> {
    pub(super) arena: &'k mut String,
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

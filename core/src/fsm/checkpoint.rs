//! Serde for governor checkpoints: timestamps as plain milliseconds and the
//! id newtypes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sku::{ActionId, ProfileId};

/// Timestamps in checkpoints as plain milliseconds.
pub(super) use crate::clock::millis;

// Serde for the id newtypes, so governors can be checkpointed.

impl Serialize for ActionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ActionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(ActionId)
    }
}

impl Serialize for ProfileId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ProfileId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(ProfileId)
    }
}

//! The governor core: FSM against a reference model, the registry, replay.

mod model;
mod props;
mod registry;
pub(crate) mod sku;
mod table;
mod tampered;

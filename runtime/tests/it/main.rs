//! Integration tests of ggen-runtime: one binary, one module per concept.

mod actuator;
mod governor;
mod ingress;
mod ledger;
mod marketplace;

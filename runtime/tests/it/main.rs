//! Integration tests of ggen-runtime: one binary, one module per concept.

mod governor;
mod ledger;

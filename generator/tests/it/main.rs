//! Integration tests of ggen: one binary, one module per concept.

mod fuzz;
mod validate;

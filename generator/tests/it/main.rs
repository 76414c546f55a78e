//! Integration tests of ggen: one binary, one module per concept.

mod bundle;
mod cli;
mod deploy;
mod determinism;
mod explain;
mod fuzz;
mod generate;
mod validate;

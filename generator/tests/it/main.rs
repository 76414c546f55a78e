//! Integration tests of ggen: one binary, one module per concept.

mod assets;
mod audit;
mod backtest;
mod bundle;
mod cli;
mod crate_folder;
mod determinism;
mod explain;
mod fuzz;
mod generate;
mod lab;
mod pack;
mod pack_proof;
mod support;
mod validate;

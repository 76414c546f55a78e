//! The HTTP ingress: routes, bad input, auth, durability of acks, storms.

mod auth;
mod bad_input;
mod client;
mod durability;
mod harness;
mod jwks;
mod paths;
mod replays;
mod routes;
mod sku;
mod storm;

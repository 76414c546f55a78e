//! The HTTP ingress: routes, bad input, auth, durability of acks, storms.

mod auth;
mod bad_input;
mod client;
mod durability;
mod harness;
mod integrity;
mod jwks;
mod routes;
mod sku;
mod storm;

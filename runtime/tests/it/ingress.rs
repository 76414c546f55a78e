//! The HTTP ingress: routes, bad input, auth, transport attacks, durability
//! of acks, storms.

mod access;
mod attack;
mod auth;
mod bad_input;
mod client;
mod disk;
mod durability;
mod fleet;
mod harness;
mod integrity;
mod jwks;
mod logs;
mod marketplace_push;
mod metrics;
mod paths;
mod preflight;
mod replays;
mod replicas;
mod routes;
mod sku;
mod stalled;
mod storm;
mod transparency;

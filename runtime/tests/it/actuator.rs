//! Actuators: webhook, command and log adapters, the dispatcher, end to end
//! through a registry, real HTTP over loopback.

mod command;
mod dispatcher;
mod harness;
mod pack;
mod replay;
mod replicas;
mod target;
mod webhook;

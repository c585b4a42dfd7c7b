//! arcad, the arca daemon, as a library: the binary in `main.rs` only parses flags and wires
//! these modules together. See ARCHITECTURE.md for the codemap and its invariants.

pub mod access;
pub mod alloc;
pub mod auth;
pub mod chunker;
pub mod config;
pub mod crypt;
pub mod extract;
pub mod fleet;
pub mod fuzz;
pub mod journal;
pub mod keys;
pub mod manifest;
pub mod metrics;
pub mod mount;
pub mod openapi;
pub mod paths;
pub mod pins;
pub mod registry;
pub mod remote;
pub mod server;
pub mod service;
pub mod store;

//! End-to-end tests against the real `arcad` and `arca` binaries, a real RocksDB and real crypto.
//! One binary, one module per area; every test starts its own daemon on its own state directory.
//! They must run as root (they create local users and open the daemon's database directly).

mod access;
mod audit;
mod contract;
mod deps;
mod ecosystem;
mod faults;
mod fleet;
mod fleet_audit;
mod fleet_cache;
mod fleet_gc;
mod fleet_limits;
mod fleet_netns;
mod fleet_reads;
mod fleet_tamper;
mod harness;
mod insider;
mod lifecycle;
mod mount;
mod offline;
mod ops;
mod store;

//! tenure's end-to-end tests, in one binary: each module starts the real
//! server (or the engine in this process) and drives it with real clients.
//!
//! One binary rather than one per file: each test binary links wasmtime,
//! rustls and the engine, and ten of them took ~4 GB of disk and ten links
//! in CI, which ran out of space on a small disk.

mod support;

mod accounts;
mod admin;
mod bench;
mod clients;
mod config;
mod delivery;
mod durability;
mod hsm;
mod inprocess;
mod intermediates;
mod jws_rules;
mod lifecycle;
mod migrate;
mod observe;
mod plugin_signing;
mod policy;
mod protocol;
mod provisioning;
mod quickstart;
mod requests;
mod resources;
mod shared;
mod tenant_removal;
mod tenant_tokens;

//! The ACME front end (RFC 8555): the web front end of Boulder/Pebble's split.
//! It parses and authenticates requests, validates challenges, and asks
//! `tenure_engine` for every decision. It knows no SQL and no wasmtime.
//!
//! `routes` names every path once; `request` authenticates a signed POST;
//! `payloads` types what it carries; `handlers` ask the engine and render.
#![warn(missing_docs)]

mod handlers;
pub mod jws;
mod keycache;
pub mod nonce;
pub mod payloads;
pub mod problem;
mod request;
pub mod request_log;
pub mod resources;
pub mod routes;
pub mod server;
pub mod validation;
pub mod webhook;

pub use server::{ConnectionLimits, FrontEnd, Options, Ra, serve};

//! The plugins built from `plugins/` by `engine/build.rs`, for wasm32-wasip2.

use std::path::{Path, PathBuf};

/// The default policy of the public tenant: challenges for every name.
pub const PUBLIC_CHALLENGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugins/public_challenge.wasm"));

/// Allow what the registry shows the tenant holding, authorized by control.
pub const REGISTRY_CONTROL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugins/registry_control.wasm"));

/// The default policy of every other tenant: names it holds by control, the rest by challenge.
pub const CONTROL_OR_CHALLENGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugins/control_or_challenge.wasm"));

/// Where the build left every plugin of `plugins/`, test plugins included.
pub const PLUGINS_DIR: &str = concat!(env!("OUT_DIR"), "/plugins");

/// The crates of `plugins/` that build a component.
pub const BUILT_PLUGINS: &[&str] = &[
    "registry-control",
    "public-challenge",
    "control-or-challenge",
    "deny-all",
    "infinite-loop",
    "memory-hog",
    "trap",
    "huge-answer",
    "uses-fs",
    "allow-distribution",
    "distribute-by-attribute",
    "issuance-only",
    "legacy-v0-1",
];

/// The built component of a `plugins/` crate, by crate name (`"memory-hog"`). Only
/// meaningful on the machine that built the engine (tests, benchmarks).
pub fn built_plugin_path(name: &str) -> PathBuf {
    Path::new(PLUGINS_DIR).join(format!("{}.wasm", name.replace('-', "_")))
}

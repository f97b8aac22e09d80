//! Builds the policy plugins (`plugins/`, a workspace of its own) for wasm32-wasip2 in
//! `target/wasm-plugins/` of the checkout and leaves the components in `$OUT_DIR/plugins/`,
//! where `policy::builtin` includes them.
//! A failure fails the engine's build: there is no fallback plugin.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Must match `policy::builtin::BUILT_PLUGINS`.
const PLUGINS: &[&str] = &[
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

/// Inherited variables the nested cargo may keep: where crates come from, how to reach
/// them, and the jobserver (so the nested build shares the outer `-j`). Everything else
/// of cargo's (target dir, profile, features, rustflags for the host...) would break it.
fn keep(var: &str) -> bool {
    var == "CARGO_HOME"
        || var == "CARGO_MAKEFLAGS"
        || var.starts_with("CARGO_NET_")
        || var.starts_with("CARGO_HTTP_")
        || var.starts_with("CARGO_REGISTRIES_")
        || var.starts_with("CARGO_REGISTRY_")
}

fn fail(msg: &str) -> ! {
    panic!(
        "\n\ntenure-engine: building the policy plugins failed: {msg}\n\
         The plugins are WebAssembly components built from plugins/ for wasm32-wasip2;\n\
         install the target with `rustup target add wasm32-wasip2`, or reproduce with\n\
         `cd plugins && cargo build --release`.\n"
    )
}

/// A newcomer's `cargo run` must just work: add the wasm32-wasip2 target
/// through rustup when it is missing (rustup is how this toolchain came).
fn ensure_wasm_target() {
    let Ok(out) = Command::new("rustup").args(["target", "list", "--installed"]).output() else { return };
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") {
        return;
    }
    println!("cargo:warning=adding the wasm32-wasip2 target with rustup (the policy plugins need it)");
    let ok = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        fail("`rustup target add wasm32-wasip2` failed");
    }
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("engine/ has a parent").to_path_buf();
    let plugins = root.join("plugins");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    // Relative to engine/ (cargo resolves them against the package root at each check):
    // absolute paths would keep pointing at the checkout that first ran this script
    // when a target directory is copied or shared between checkouts, and the engine
    // would then embed that checkout's stale plugins.
    println!("cargo:rerun-if-changed=../wit");
    for f in ["Cargo.toml", "Cargo.lock", ".cargo/config.toml", "sdk"] {
        println!("cargo:rerun-if-changed=../plugins/{f}");
    }
    for p in PLUGINS {
        println!("cargo:rerun-if-changed=../plugins/{p}");
    }

    ensure_wasm_target();
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // One nested build per checkout, not per profile: the components do not
    // depend on the outer build's profile, features or flags (all removed
    // below), so `cargo run --release`, the tests and the fuzz targets
    // (fuzz/, a target directory of its own) share it instead of compiling
    // the plugins' dependencies three times (~200 s of a cold build each).
    let target_dir = root.join("target").join("wasm-plugins");
    let mut cmd = Command::new(&cargo);
    // The plugins' .cargo/config.toml (linker flags) is found from the working directory.
    cmd.current_dir(&plugins).args([
        OsStr::new("build"),
        OsStr::new("--release"),
        OsStr::new("--locked"),
        OsStr::new("--target"),
        OsStr::new("wasm32-wasip2"),
        OsStr::new("--manifest-path"),
        plugins.join("Cargo.toml").as_os_str(),
        OsStr::new("--target-dir"),
        target_dir.as_os_str(),
    ]);
    for (k, _) in env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if (k.starts_with("CARGO") || k.starts_with("__CARGO")) && !keep(k)
            || matches!(k, "RUSTFLAGS" | "RUSTDOCFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER")
        {
            cmd.env_remove(k);
        }
    }
    // Whatever the nested build prints must not reach our stdout, where cargo reads
    // `cargo:` directives.
    cmd.stdout(std::io::stderr());
    let started = Instant::now();
    let status = cmd.status().unwrap_or_else(|e| fail(&format!("could not run {}: {e}", Path::new(&cargo).display())));
    if !status.success() {
        fail(&format!("`cargo build` in {} exited with {status}", plugins.display()));
    }

    let built = target_dir.join("wasm32-wasip2").join("release");
    let dest = out.join("plugins");
    std::fs::create_dir_all(&dest).unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", dest.display())));
    for p in PLUGINS {
        let file = format!("{}.wasm", p.replace('-', "_"));
        let bytes = std::fs::read(built.join(&file)).unwrap_or_else(|e| fail(&format!("{file} was not built: {e}")));
        // Components (layer 1), not core modules: rustc's wasm32-wasip2 linker wraps them.
        if bytes.get(..8) != Some(&[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]) {
            fail(&format!("{file} is not a WebAssembly component"));
        }
        std::fs::write(dest.join(&file), &bytes).unwrap_or_else(|e| fail(&format!("cannot write {file}: {e}")));
    }
    println!("cargo:rustc-env=TENURE_PLUGINS_BUILD_MS={}", started.elapsed().as_millis());
}

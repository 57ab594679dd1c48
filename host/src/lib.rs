//! `cascade`: a native host that serves roadwork predictions per hotkey. Decisions are made by
//! WebAssembly components (`cascade:policy`) that call inference primitives the host runs on
//! its model engines. This crate holds the HTTP ingress, per-hotkey configuration, the wasmtime
//! runtime and the CLI; the engines live in `cascade-engines`.

pub mod admin;
pub mod axon;
pub mod chain;
pub mod config;
pub mod files;
pub mod fuzz;
pub mod infer;
pub mod load;
pub mod metrics;
pub mod offline;
pub mod policy;
pub mod predlog;
pub mod reload;
pub mod rollout;
pub mod runtime;
pub mod schema;
pub mod server;
pub mod wit;

use std::path::{Path, PathBuf};

/// `<dir of the executable>/../<name>`: where `make setup` puts components and the ONNX
/// Runtime library, beside `target/release/`.
pub fn beside_exe(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().and_then(Path::parent).unwrap_or(Path::new(".")).join(name)
}

//! The `cascade` serving host: serves roadwork predictions per hotkey. Decisions are made by
//! WebAssembly components (`cascade:policy`) that call inference primitives the host runs on
//! its model engines (`cascade-engines`). This crate holds the server (HTTP API, the subnet's
//! axon, admin API), per-hotkey configuration and policies, chain admission, the wasmtime
//! runtime, hot reload, rollouts, metrics and the prediction log's writer. The command line
//! (`cascade-cli`) and the offline tools (`cascade-offline`) build on it; it imports neither.

pub mod answer;
pub mod calibration;
pub mod chain;
pub mod config;
pub mod files;
pub mod fuzz;
pub mod load;
pub mod metrics;
pub mod policy;
pub mod predlog;
pub mod reload;
pub mod rollout;
pub mod runtime;
pub mod schema;
pub mod server;
pub mod ss58;
pub mod wit;

use std::path::{Path, PathBuf};

/// The policies folder when `--policies` is not given: `./policies` when the current folder
/// has one, else the one of the tree the binary was built in (`<exe>/../../policies`, beside
/// `target/`), so that `target/release/cascade check` finds the same folders from anywhere, as
/// it finds the components beside the binary. `CASCADE_POLICIES` overrides both.
pub fn default_policies() -> PathBuf {
    let here = PathBuf::from("policies");
    if here.is_dir() {
        return here;
    }
    let tree = beside_exe("../policies");
    if tree.is_dir() {
        return tree.canonicalize().unwrap_or(tree);
    }
    here
}

/// `<dir of the executable>/../<name>`: where `make setup` puts components and the ONNX
/// Runtime library, beside `target/release/`.
pub fn beside_exe(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().and_then(Path::parent).unwrap_or(Path::new(".")).join(name)
}

//! Watches the components and policies folders and runs a reload after each burst of changes
//! (editors and `cp` write several events per save: wait until the folders are quiet). Only
//! events that change files count — a reload reads every file, and counting those reads
//! would start the next reload.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::notify::{self, EventKind, RecursiveMode, Watcher};

/// How long the folders must be quiet before a reload starts.
pub(crate) const QUIET: Duration = Duration::from_millis(50);

fn relevant(e: &notify::Event) -> bool {
    if matches!(e.kind, EventKind::Access(_) | EventKind::Other) {
        return false;
    }
    e.paths.iter().any(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        !name.starts_with('.')
            && !name.ends_with(".state.json")
            && !name.contains(".tmp")
            && matches!(p.extension().and_then(|e| e.to_str()), Some("wasm" | "toml" | "json" | "txt" | "onnx"))
    })
}

/// Starts the watcher thread; `on_change` runs on it, one reload at a time.
pub fn spawn(components: &Path, policies: &Path, on_change: Arc<dyn Fn() + Send + Sync>) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(tx)?;
    watcher.watch(components, RecursiveMode::NonRecursive)?;
    watcher.watch(policies, RecursiveMode::Recursive)?;
    std::thread::Builder::new().name("reload".into()).spawn(move || {
        let _keep = watcher;
        while let Ok(ev) = rx.recv() {
            match ev {
                Ok(e) if relevant(&e) => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "watching failed");
                    continue;
                }
            }
            // wait for quiet: whatever else arrives meanwhile is covered by this reload
            while let Ok(_more) = rx.recv_timeout(QUIET) {}
            on_change();
        }
    })?;
    Ok(())
}

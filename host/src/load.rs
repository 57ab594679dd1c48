//! One pass of the loading pipeline (`reload`) for the commands that load once: `check`,
//! `eval` and benchmarks. Every problem (file and reason) is collected and reported once,
//! instead of stopping at the first; nothing here binds or compiles on its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use cascade_engines::{Models, Registry};

use crate::policy::Hotkey;
pub use crate::reload::bind::describe_plugin;
pub use crate::reload::{Problem, Sources};
use crate::runtime::{Plugin, Runtime};

/// Everything that serves requests, built and checked as a whole.
pub struct State {
    pub models: Arc<Models>,
    pub chain: Arc<crate::chain::Chain>,
    pub registry: Registry,
    pub plugins: Vec<Arc<Plugin>>,
    pub hotkeys: BTreeMap<String, Arc<Hotkey>>,
    /// Notes that do not stop serving (e.g. a stage whose model is not configured).
    pub warnings: Vec<Problem>,
}

/// Loads everything once and returns what loaded together with every problem found.
pub fn load_all(rt: &Arc<Runtime>, src: &Sources) -> (State, Vec<Problem>) {
    let snap = crate::reload::Reloader::new(rt.clone(), src.clone(), None).reload();
    let problems = snap.refused.into_iter().map(|r| Problem { file: r.file, message: r.reason }).collect();
    let state = State {
        models: snap.models,
        chain: snap.chain,
        registry: snap.registry,
        plugins: snap.plugins,
        hotkeys: snap.hotkeys,
        warnings: snap.warnings,
    };
    (state, problems)
}

/// Loads everything once, strictly: any problem refuses the whole set (`eval`, benchmarks).
pub fn load(rt: &Arc<Runtime>, src: &Sources) -> Result<State, Vec<Problem>> {
    match load_all(rt, src) {
        (state, problems) if problems.is_empty() => Ok(state),
        (_, problems) => Err(problems),
    }
}

/// [`load`] for an offline command about one hotkey: the state and that hotkey, or an error
/// listing every problem (or the hotkeys there are).
pub fn load_for(rt: &Arc<Runtime>, src: &Sources, hotkey: &str) -> anyhow::Result<(State, Arc<crate::policy::Hotkey>)> {
    let state = load(rt, src)
        .map_err(|ps| anyhow::anyhow!("{}", ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")))?;
    let hk =
        state.hotkeys.get(hotkey).cloned().ok_or_else(|| {
            anyhow::anyhow!("no hotkey {hotkey} (have {:?})", state.hotkeys.keys().collect::<Vec<_>>())
        })?;
    Ok((state, hk))
}

//! One module per subcommand, each owning its clap arguments and an `execute`; the
//! arguments every command that loads the policies shares (`SourceArgs`) and the runtime they
//! start are here.

pub mod calibrate;
pub mod challenges;
pub mod check;
pub mod eval;
pub mod infer;
pub mod log;
pub mod policy;
pub mod replay;
pub mod serve;
pub mod train_head;
pub mod tune;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cascade_host::load::Sources;
use cascade_host::runtime::{Runtime, RuntimeConfig};
use clap::Args;

#[derive(Args)]
pub struct SourceArgs {
    /// Hotkey files (`*.toml`) and the model registry (`models.toml`); default: `./policies`, else
    /// the one beside the binary's `target/` folder.
    #[arg(long, env = "CASCADE_POLICIES", default_value_os_t = cascade_host::default_policies())]
    pub policies: PathBuf,
    /// Compiled components (`*.wasm`); default: `target/components` beside the binary.
    #[arg(long, env = "CASCADE_COMPONENTS")]
    pub components: Option<PathBuf>,
    /// Most component instances alive at once.
    #[arg(long, default_value_t = 512)]
    pub max_instances: u32,
    /// Linear memory cap of one component instance, in MiB.
    #[arg(long, default_value_t = 64)]
    pub component_memory_mb: usize,
}

impl SourceArgs {
    /// The component runtime and where the policies, components and ONNX Runtime are.
    pub fn setup(&self) -> anyhow::Result<(Arc<Runtime>, Sources)> {
        let rt = Runtime::new(RuntimeConfig {
            max_instances: self.max_instances,
            max_memory: self.component_memory_mb << 20,
        })
        .context("starting the component runtime")?;
        let src = Sources {
            policies: self.policies.clone(),
            components: self.components.clone().unwrap_or_else(|| cascade_host::beside_exe("components")),
            ort_library: cascade_engines::runtime_library(),
        };
        Ok((Arc::new(rt), src))
    }
}

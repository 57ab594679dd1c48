//! `cascade calibrate`: a hotkey's calibration fitted on held-out scores and labels.

use std::path::PathBuf;
use std::process::ExitCode;

use cascade_offline::calibrate::CalibrateArgs;
use clap::Args;

#[derive(Args)]
pub struct CalibrateCommand {
    /// Hotkey files and the model registry (whose heads the calibration records).
    #[arg(long, env = "CASCADE_POLICIES", default_value_os_t = cascade_host::default_policies())]
    policies: PathBuf,
    #[command(flatten)]
    args: CalibrateArgs,
}

impl CalibrateCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        cascade_offline::calibrate::calibrate(&self.policies, &self.args)
    }
}

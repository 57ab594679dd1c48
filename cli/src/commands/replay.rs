//! `cascade replay`: a candidate hotkey over logged requests, answering from the log's
//! results where it can, and what would change.

use std::process::ExitCode;

use cascade_offline::replay::ReplayArgs;
use clap::Args;

use super::SourceArgs;

#[derive(Args)]
pub struct ReplayCommand {
    #[command(flatten)]
    src: SourceArgs,
    #[command(flatten)]
    args: ReplayArgs,
}

impl ReplayCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let (rt, src) = self.src.setup()?;
        cascade_offline::replay::replay(&rt, &src, &self.args)
    }
}

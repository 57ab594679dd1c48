//! `cascade tune`: a hotkey's exit thresholds and fusion weights swept over labelled images;
//! the cost/accuracy frontier, grouped cross-validation and a candidate hotkey file.

use std::process::ExitCode;

use cascade_offline::tune::TuneArgs;
use clap::Args;

use super::SourceArgs;

#[derive(Args)]
pub struct TuneCommand {
    #[command(flatten)]
    src: SourceArgs,
    #[command(flatten)]
    args: TuneArgs,
}

impl TuneCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let (rt, src) = self.src.setup()?;
        cascade_offline::tune::tune(&rt, &src, &self.args)
    }
}

//! `cascade eval`: a hotkey's live policy over a labelled manifest (accuracy, MCC, reward,
//! per level and per stage).

use std::process::ExitCode;

use cascade_offline::eval::EvalArgs;
use clap::Args;

use super::SourceArgs;

#[derive(Args)]
pub struct EvalCommand {
    #[command(flatten)]
    src: SourceArgs,
    #[command(flatten)]
    args: EvalArgs,
}

impl EvalCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let (rt, src) = self.src.setup()?;
        cascade_offline::eval::eval(&rt, &src, &self.args)
    }
}

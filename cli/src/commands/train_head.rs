//! `cascade train-head`: a classifier head trained on frozen-backbone embeddings of labelled
//! images (k-fold report, the head as JSON).

use std::process::ExitCode;

use cascade_offline::train::TrainArgs;
use clap::Args;

#[derive(Args)]
pub struct TrainHeadCommand {
    #[command(flatten)]
    args: TrainArgs,
}

impl TrainHeadCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        cascade_offline::train::train(&self.args)
    }
}

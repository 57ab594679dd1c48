//! `cascade challenges`: the JPEGs a validator would send of labelled images (the offline
//! loop's own draws) and a manifest of them, for tools outside this binary.

use std::process::ExitCode;

use cascade_offline::challenges::ChallengeArgs;
use clap::Args;

#[derive(Args)]
pub struct ChallengesCommand {
    #[command(flatten)]
    args: ChallengeArgs,
}

impl ChallengesCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let n = cascade_offline::challenges::write(&self.args)?;
        println!("wrote {n} challenges to {}", self.args.out.display());
        Ok(ExitCode::SUCCESS)
    }
}

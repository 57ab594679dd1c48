//! `cascade log`: what hotkeys answered (`list`) and hard cases exported for labelling
//! (`export`), read from a prediction log folder.

use std::path::PathBuf;
use std::process::ExitCode;

use cascade_offline::logcmd::{self, FilterArgs};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct LogCommand {
    #[command(subcommand)]
    pub cmd: LogCmd,
}

#[derive(Subcommand)]
pub enum LogCmd {
    /// List the logged answers that pass the filters (one line each, or JSON lines).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON object per record instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Export hard cases for labelling: a manifest with an empty `label` column and the images.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// The output folder (manifest.csv and images/).
        #[arg(long)]
        out: PathBuf,
        /// Images whose served and shadow answers fall on different sides of 0.5, instead of
        /// the uncertain band.
        #[arg(long)]
        disagreements: bool,
    },
}

impl LogCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self.cmd {
            LogCmd::List { filter, json } => logcmd::list(&filter.log, &filter.filter()?, json),
            LogCmd::Export { filter, out, disagreements } => {
                logcmd::export(&filter.log, &out, &filter.filter()?, disagreements)
            }
        }
    }
}

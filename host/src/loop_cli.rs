//! The command line of the improvement loop's commands: `cascade log` and `cascade replay`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use cascade_host::offline::logcmd::{self, Filter};

#[derive(Args)]
pub struct LogCli {
    #[command(subcommand)]
    pub cmd: LogCmd,
}

#[derive(Subcommand)]
pub enum LogCmd {
    /// List the logged answers that pass the filters (one line each, or JSON lines).
    List {
        #[command(flatten)]
        filter: FilterArgs,
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

/// Which logged records to take.
#[derive(Args, Clone)]
pub struct FilterArgs {
    /// The log folder (a hotkey's `log.dir`).
    #[arg(long)]
    pub log: PathBuf,
    /// Records of this hotkey only.
    #[arg(long = "from-hotkey")]
    pub from_hotkey: Option<String>,
    /// Unix seconds, or -30m / -24h / -7d.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    /// Predictions in LO-HI (e.g. 0.3-0.7); `export` defaults to 0.3-0.7.
    #[arg(long)]
    pub band: Option<String>,
    #[arg(long)]
    pub stage: Option<String>,
    /// `stable` or `candidate`.
    #[arg(long)]
    pub arm: Option<String>,
    /// The validator's hotkey (axon requests).
    #[arg(long)]
    pub caller: Option<String>,
    /// Shadow answers too.
    #[arg(long)]
    pub shadow: bool,
}

impl FilterArgs {
    pub fn filter(&self) -> anyhow::Result<Filter> {
        let e = |s: String| anyhow::anyhow!(s);
        Ok(Filter {
            hotkey: self.from_hotkey.clone(),
            since: self.since.as_deref().map(logcmd::parse_time).transpose().map_err(e)?,
            until: self.until.as_deref().map(logcmd::parse_time).transpose().map_err(e)?,
            band: self.band.as_deref().map(logcmd::parse_band).transpose().map_err(e)?,
            stage: self.stage.clone(),
            arm: self.arm.clone(),
            caller: self.caller.clone(),
            shadow: self.shadow,
        })
    }
}

pub fn log(a: LogCli) -> anyhow::Result<ExitCode> {
    match a.cmd {
        LogCmd::List { filter, json } => logcmd::list(&filter.log, &filter.filter()?, json),
        LogCmd::Export { filter, out, disagreements } => {
            logcmd::export(&filter.log, &out, &filter.filter()?, disagreements)
        }
    }
}

//! The offline tools of `cascade`: everything that runs over labelled images or logged
//! requests rather than serving them. `augment` ports the validators' distortions (levels
//! 0–3) and `jpeg` their encoder; `eval` runs a hotkey's live policy over a manifest,
//! `train-head` trains a classifier head on frozen-backbone embeddings (cached in
//! `embed_cache`), `tune` sweeps thresholds and weights, `challenges` writes what a validator
//! would send, and `logcmd`/`log_read`/`replay` read the prediction log back.
//!
//! This crate uses the serving host's runtime and loading pipeline (`cascade-host`) and the
//! engines; the host never imports it.

pub mod augment;
pub mod calibrate;
pub mod challenges;
pub mod embed_cache;
pub mod eval;
pub mod jpeg;
pub mod log_read;
pub mod logcmd;
pub mod manifest;
pub mod replay;
pub mod train;
pub mod tune;
pub mod tune_candidate;
pub mod tune_space;
pub mod tune_svg;

/// A one-line progress bar on stderr, only when stderr is a terminal.
pub struct Progress {
    total: usize,
    done: usize,
    tty: bool,
    label: &'static str,
}

impl Progress {
    pub fn new(label: &'static str, total: usize) -> Progress {
        use std::io::IsTerminal;
        Progress { total, done: 0, tty: std::io::stderr().is_terminal(), label }
    }

    pub fn tick(&mut self) {
        self.done += 1;
        if self.tty {
            let width = 30;
            let filled = width * self.done / self.total.max(1);
            eprint!(
                "\r{} [{}{}] {}/{}",
                self.label,
                "#".repeat(filled),
                " ".repeat(width - filled),
                self.done,
                self.total
            );
            if self.done == self.total {
                eprintln!();
            }
        }
    }
}

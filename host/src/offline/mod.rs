//! Offline tools over labelled images: `eval` (a hotkey's live policy on a manifest) and
//! `train-head` (a classifier head on frozen-backbone embeddings, cached in `embed_cache`).

pub mod augment;
pub mod challenges;
pub mod embed_cache;
pub mod eval;
pub mod jpeg;
pub mod logcmd;
pub mod manifest;
pub mod replay;
pub mod scores;
pub mod train;
pub mod tune;
pub mod tune_space;
pub mod tune_svg;
pub mod validator;

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

//! The `cascade` command. Serving: `serve` (every hotkey over HTTP and the subnet's axon),
//! `check` (validate what `serve` would run), `infer` (one model on image files). The offline
//! loop: `eval`, `train-head`, `tune`, `challenges`, `log`, `replay`. Each subcommand is a file
//! under `commands/` that owns its arguments; this file parses them and sets up logging.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{calibrate, challenges, check, eval, infer, log, policy, replay, serve, train_head, tune};

#[derive(Parser)]
#[command(name = "cascade", version, about = "Roadwork inference server with policies as WebAssembly components")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log lines as `text` or as JSON objects (`json`, one per line, for log collectors).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve every hotkey of the policies folder over HTTP.
    Serve(serve::ServeCommand),
    /// Validate configs, models and components; print what would run and every problem.
    Check(check::CheckCommand),
    /// Run one registry model on image files and print what it returns (JSON lines).
    Infer(infer::InferCommand),
    /// Run a hotkey's live policy over a labelled manifest and report accuracy, MCC, reward.
    Eval(eval::EvalCommand),
    /// Train a classifier head on frozen-backbone embeddings (k-fold report, JSON head out).
    TrainHead(train_head::TrainHeadCommand),
    /// The prediction log: list what hotkeys answered, export hard cases for labelling.
    Log(log::LogCommand),
    /// Run a candidate hotkey over logged requests (answering from the log's results) and
    /// report what would change; with labels, accuracy, MCC and reward for both.
    Replay(replay::ReplayCommand),
    /// Sweep a hotkey's exit thresholds and fusion weights over labelled images: the
    /// cost/accuracy frontier, grouped cross-validation, a candidate hotkey file, an SVG.
    Tune(tune::TuneCommand),
    /// Write the JPEGs a validator would send of labelled images (the offline loop's draws) and
    /// a manifest of them, for tools outside this binary.
    Challenges(challenges::ChallengesCommand),
    /// Fit a hotkey's calibration (its fused score to the probability it answers) on held-out
    /// scores and labels; print the reliability before and after.
    Calibrate(calibrate::CalibrateCommand),
    /// Policies in Python or JavaScript: a template to start from, and the build that turns a
    /// file into a component the server loads.
    Policy(policy::PolicyCommand),
}

/// The command line with one help layout everywhere: each option on its line, its sentence
/// below it (clap otherwise switches layout per command by the width of its descriptions).
fn command() -> clap::Command {
    fn layout(c: clap::Command) -> clap::Command {
        c.next_line_help(true).mut_subcommands(layout)
    }
    layout(<Cli as clap::CommandFactory>::command())
}

fn main() -> ExitCode {
    use clap::FromArgMatches;
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,ort=warn".into());
    // colour only on a terminal, and never with NO_COLOR set (https://no-color.org)
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    if cli.log_format == "json" {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
    let r = match cli.cmd {
        Cmd::Serve(c) => c.execute(),
        Cmd::Check(c) => c.execute(),
        Cmd::Policy(c) => c.execute(),
        Cmd::Infer(c) => c.execute(),
        Cmd::Eval(c) => c.execute(),
        Cmd::TrainHead(c) => c.execute(),
        Cmd::Log(c) => c.execute(),
        Cmd::Replay(c) => c.execute(),
        Cmd::Tune(c) => c.execute(),
        Cmd::Challenges(c) => c.execute(),
        Cmd::Calibrate(c) => c.execute(),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every option of every command says what it is for.
    #[test]
    fn every_option_has_a_sentence() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments().filter(|a| !a.is_hide_set()) {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} --{}", a.get_long().unwrap_or(id)));
                }
            }
            for s in c.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::command(), "cascade", &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:#?}");
    }

    #[test]
    fn one_help_layout() {
        let mut c = super::command();
        let serve = c.find_subcommand_mut("serve").expect("serve").render_long_help().to_string();
        assert!(serve.contains("--listen <LISTEN>\n"), "the sentence below the option: {serve}");
    }
}

//! `cascade eval`: a hotkey's live policy (the same load and decision path as `serve`) over a
//! labelled manifest, with the figures the subnet rewards.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::augment::{Levels, Style};
use super::manifest;
use super::train::load_example;
use super::Progress;
use cascade_common::scores::{percentile, Intervals, Sample, BOOTSTRAP_REPS, MIN_READABLE};
use cascade_host::load::{self, Sources};
use cascade_host::runtime::Runtime;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The hotkey (its `name`) whose policy answers, as `serve` would run it.
    #[arg(long)]
    pub hotkey: String,
    /// CSV with `path,label` columns (paths relative to it).
    #[arg(long)]
    pub manifest: std::path::PathBuf,
    /// Turn each image into what validators send: centre crop, 224×224, JPEG quality 75.
    #[arg(long)]
    pub validator_style: bool,
    /// Validator augmentation levels to draw from, one per image uniformly (`0-3`, `0,2`); reports per level.
    #[arg(long, value_parser = Levels::parse)]
    pub levels: Option<Levels>,
    /// Seed of the per-image level and augmentation draws.
    #[arg(long, default_value_t = 72)]
    pub seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write one JSON line per image (level, prediction, stage, evidence) to this file.
    #[arg(long)]
    pub rows: Option<std::path::PathBuf>,
}

pub fn eval(rt: &Arc<Runtime>, src: &Sources, a: &EvalArgs) -> anyhow::Result<ExitCode> {
    let (state, hk) = load::load_for(rt, src, &a.hotkey)?;
    let hk = &*hk;
    let loaded = manifest::load_all(std::slice::from_ref(&a.manifest))?;
    let examples = loaded.examples;
    let style = Style::from_flags(a.validator_style, a.levels.clone(), a.seed);
    let mut conf = Sample::default();
    let mut per_level: BTreeMap<u8, Sample> = BTreeMap::new();
    // images that already are challenges (the manifest's `challenge` column), used as read
    let mut as_sent = Sample::default();
    let mut stages: BTreeMap<String, u64> = BTreeMap::new();
    let mut latency = Vec::with_capacity(examples.len());
    let (mut model_ms, mut fallbacks, mut failed) = (0f64, 0u64, 0u64);
    // bad manifest rows were reported by the loader; they count as errors too
    let mut errors: Vec<String> = loaded.problems;
    let mut rows = match &a.rows {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        )),
        None => None,
    };
    let mut progress = Progress::new("eval", examples.len());
    for ex in examples.iter() {
        let (img, level) = match load_example(ex, style.as_ref()) {
            Ok((i, level)) => (Arc::new(i), level),
            Err(e) => {
                // a bad row is reported and counted; the run goes on
                eprintln!("{}: {e:#}", ex.row);
                errors.push(format!("{}: {e:#}", ex.row));
                progress.tick();
                continue;
            }
        };
        let started = Instant::now();
        let ans = hk.answer(&state.models, img);
        latency.push(started.elapsed().as_secs_f64() * 1e3);
        // a failed answer (no evidence at all) is an error to a validator: out of its windows
        if ans.prediction.is_finite() {
            conf.add(ans.prediction, ex.label);
            // a challenge counts at the level it was drawn at when the manifest says, and
            // apart ("as sent") when not (a logged request)
            if let Some(l) = level.or(ex.level.filter(|_| ex.challenge)) {
                per_level.entry(l).or_default().add(ans.prediction, ex.label);
            } else if ex.challenge {
                as_sent.add(ans.prediction, ex.label);
            }
        } else {
            failed += 1;
        }
        if let Some(w) = rows.as_mut() {
            use std::io::Write as _;
            let line = json!({"path": ex.path, "label": ex.label as u8, "source": ex.source, "level": level,
                "prediction": ans.prediction, "stage": ans.stage, "reason": ans.reason, "model_ms": ans.model_ms});
            writeln!(w, "{line}")?;
        }
        *stages.entry(ans.stage).or_default() += 1;
        model_ms += ans.model_ms;
        fallbacks += ans.fallback as u64;
        progress.tick();
    }
    if let Some(mut w) = rows {
        use std::io::Write as _;
        w.flush()?;
    }
    latency.sort_by(f64::total_cmp);
    let fig = conf.confusion().figures();
    let ci = conf.intervals(BOOTSTRAP_REPS, a.seed);
    let n = (fig.n as f64).max(1.0);
    let stage_share: BTreeMap<&String, f64> = stages.iter().map(|(k, v)| (k, *v as f64 / n)).collect();
    let group = |s: &Sample| {
        let f = s.confusion().figures();
        let ci = s.intervals(BOOTSTRAP_REPS, a.seed);
        json!({"n": f.n, "accuracy": f.accuracy, "mcc": f.mcc, "reward": f.reward, "f1": f.f1,
            "ci95": ci, "too_small": !s.readable()})
    };
    let levels: BTreeMap<String, _> = per_level.iter().map(|(l, s)| (l.to_string(), group(s))).collect();
    let report = json!({
        "hotkey": a.hotkey,
        "manifest": a.manifest,
        "validator_style": style.is_some(),
        "levels": style.as_ref().map(|s| s.levels.to_string()),
        "seed": style.as_ref().map(|s| s.seed),
        "per_level": levels,
        "as_sent": (!as_sent.answers.is_empty()).then(|| group(&as_sent)),
        "n": fig.n,
        "accuracy": fig.accuracy,
        "mcc": fig.mcc,
        "ci95": ci,
        "bootstrap_reps": BOOTSTRAP_REPS,
        "too_small": !conf.readable(),
        "f1": fig.f1,
        "precision": fig.precision,
        "recall": fig.recall,
        "reward": fig.reward,
        "confusion": {"tp": fig.confusion.tp, "fp": fig.confusion.fp, "tn": fig.confusion.tn, "fn": fig.confusion.fn_},
        "stage_share": stage_share,
        "fallbacks": fallbacks,
        "failed": failed,
        "errors": errors.len(),
        "error_rows": errors,
        "model_ms_per_request": model_ms / n,
        "latency_ms": {"p50": percentile(&latency, 0.5), "p99": percentile(&latency, 0.99)},
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "hotkey {} on {} ({} images{})",
            a.hotkey,
            a.manifest.display(),
            fig.n,
            match &style {
                Some(s) => format!(", validator-style, levels {} (seed {})", s.levels, s.seed),
                None => String::new(),
            }
        );
        println!(
            "  accuracy  {:.4} {}   MCC {:.4} {}   F1 {:.4}{}",
            fig.accuracy,
            bracket(ci.map(|c| c.accuracy)),
            fig.mcc,
            bracket(ci.map(|c| c.mcc)),
            fig.f1,
            small(&conf)
        );
        println!("  precision {:.4}    recall {:.4}", fig.precision, fig.recall);
        println!("  reward (0.5·MCC + 0.5·acc)³ = {:.4}", fig.reward);
        let c = fig.confusion;
        println!("  confusion  TP {}  FP {}  TN {}  FN {}", c.tp, c.fp, c.tn, c.fn_);
        println!("  [ ]: 95 % bootstrap intervals ({BOOTSTRAP_REPS} resamples of the images)");
        let line = |name: String, s: &Sample| {
            let f = s.confusion().figures();
            let ci: Option<Intervals> = s.intervals(BOOTSTRAP_REPS, a.seed);
            println!(
                "  {name:<8} n {:>5}  accuracy {:.4} {}  MCC {:.4} {}  reward {:.4}{}",
                f.n,
                f.accuracy,
                bracket(ci.map(|c| c.accuracy)),
                f.mcc,
                bracket(ci.map(|c| c.mcc)),
                f.reward,
                small(s)
            );
        };
        for (l, s) in &per_level {
            line(format!("level {l}"), s);
        }
        if !as_sent.answers.is_empty() {
            line("as sent".into(), &as_sent);
            println!("           (as sent: challenges, used as read)");
        }
        for (s, share) in &stage_share {
            println!("  stage {s:<16} {:>5.1}%", share * 100.0);
        }
        println!("  fallbacks {fallbacks}    failed {failed}    unreadable rows {}", errors.len());
        println!("  model ms / request {:.1}", model_ms / n);
        println!("  latency ms  p50 {:.1}  p99 {:.1}", percentile(&latency, 0.5), percentile(&latency, 0.99));
    }
    Ok(ExitCode::SUCCESS)
}

/// `[0.712, 0.841]`.
fn bracket(ci: Option<[f64; 2]>) -> String {
    ci.map_or("[–]".into(), |[lo, hi]| format!("[{lo:.3}, {hi:.3}]"))
}

/// The mark of a group too small to read a figure from.
fn small(s: &Sample) -> String {
    if s.readable() {
        String::new()
    } else {
        format!("  (n < {MIN_READABLE}: too small to read)")
    }
}

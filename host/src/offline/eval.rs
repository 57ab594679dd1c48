//! `cascade eval`: a hotkey's live policy (the same load and decision path as `serve`) over a
//! labelled manifest, with the figures the subnet rewards.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::manifest;
use super::scores::{percentile, Confusion};
use super::train::load_image;
use super::Progress;
use crate::load::{self, Sources};
use crate::runtime::Runtime;

pub struct EvalArgs {
    pub hotkey: String,
    pub manifest: std::path::PathBuf,
    pub validator_style: bool,
    pub json: bool,
}

pub fn eval(rt: &Arc<Runtime>, src: &Sources, a: &EvalArgs) -> anyhow::Result<ExitCode> {
    let state = load::load(rt, src)
        .map_err(|ps| anyhow::anyhow!("{}", ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")))?;
    let hk = state.hotkeys.get(&a.hotkey).ok_or_else(|| {
        anyhow::anyhow!("no hotkey {} (have {:?})", a.hotkey, state.hotkeys.keys().collect::<Vec<_>>())
    })?;
    let examples = manifest::load(&a.manifest)?;
    let mut conf = Confusion::default();
    let mut stages: BTreeMap<String, u64> = BTreeMap::new();
    let mut latency = Vec::with_capacity(examples.len());
    let (mut model_ms, mut fallbacks, mut failed) = (0f64, 0u64, 0u64);
    let mut errors: Vec<String> = Vec::new();
    let mut progress = Progress::new("eval", examples.len());
    for (row, ex) in examples.iter().enumerate() {
        let img = match load_image(&ex.path, a.validator_style) {
            Ok(i) => Arc::new(i),
            Err(e) => {
                // a bad row is reported and counted; the run goes on
                eprintln!("row {}: {e:#}", row + 2);
                errors.push(format!("row {}: {e:#}", row + 2));
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
        } else {
            failed += 1;
        }
        *stages.entry(ans.stage).or_default() += 1;
        model_ms += ans.model_ms;
        fallbacks += ans.fallback as u64;
        progress.tick();
    }
    latency.sort_by(f64::total_cmp);
    let fig = conf.figures();
    let n = (fig.n as f64).max(1.0);
    let stage_share: BTreeMap<&String, f64> = stages.iter().map(|(k, v)| (k, *v as f64 / n)).collect();
    let report = json!({
        "hotkey": a.hotkey,
        "manifest": a.manifest,
        "validator_style": a.validator_style,
        "n": fig.n,
        "accuracy": fig.accuracy,
        "mcc": fig.mcc,
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
            if a.validator_style { ", validator-style" } else { "" }
        );
        println!("  accuracy  {:.4}    MCC {:.4}    F1 {:.4}", fig.accuracy, fig.mcc, fig.f1);
        println!("  precision {:.4}    recall {:.4}", fig.precision, fig.recall);
        println!("  reward (0.5·MCC + 0.5·acc)³ = {:.4}", fig.reward);
        let c = fig.confusion;
        println!("  confusion  TP {}  FP {}  TN {}  FN {}", c.tp, c.fp, c.tn, c.fn_);
        for (s, share) in &stage_share {
            println!("  stage {s:<16} {:>5.1}%", share * 100.0);
        }
        println!("  fallbacks {fallbacks}    failed {failed}    unreadable rows {}", errors.len());
        println!("  model ms / request {:.1}", model_ms / n);
        println!("  latency ms  p50 {:.1}  p99 {:.1}", percentile(&latency, 0.5), percentile(&latency, 0.99));
    }
    Ok(ExitCode::SUCCESS)
}

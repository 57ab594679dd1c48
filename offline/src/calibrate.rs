//! `cascade calibrate`: fits a hotkey's calibration (`cascade_host::calibration`) on held-out
//! fused scores and labels, and reports the reliability of the scores before and after.
//!
//! The scores must come from images the hotkey's heads never trained on: the out-of-fold
//! answers of `scripts/tune/grouped_cv.py --oof` (every image answered by the hotkey with a head
//! retrained without its source, levels 0–3 drawn per image), or the labelled export of logged
//! challenges (`cascade log export`, label filled in) answered before any calibration. Classes
//! are weighted alike, so that 0.5 becomes the right cut on the validators' 50/50 mix whatever
//! the share of roadwork in the scored set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use cascade_host::calibration::{Calibration, FORMAT};
use cascade_host::config::MODELS_FILE;
use serde::Serialize;

#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// The hotkey whose fused scores these are (its file in `--policies`).
    #[arg(long)]
    pub hotkey: String,
    /// CSV files with a `prediction` and a `label` column (1 = roadwork, 0 = none); where a
    /// `raw` column has a value (the fused score before a calibration, as `cascade log export`
    /// writes it) it is used instead; rows of other hotkeys are skipped where a `hotkey` column
    /// names them; a `level` column adds a per-level report.
    #[arg(long = "scores", required = true)]
    pub scores: Vec<PathBuf>,
    /// Registry models whose heads the scores went through (default: the classifiers the
    /// hotkey file's `classify` lists name).
    #[arg(long = "head")]
    pub heads: Vec<String>,
    /// Where to write the calibration (JSON); the hotkey file names it as `calibration = "…"`.
    #[arg(long)]
    pub out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub mcc: f64,
    pub accuracy: f64,
    /// Share of answers at or above 0.5.
    pub says_roadwork: f64,
    pub mean_roadwork: f64,
    pub mean_none: f64,
    /// Expected calibration error over ten equal-width bins.
    pub ece: f64,
    /// `[bin low, count, mean score, share roadwork]` per non-empty bin.
    pub bins: Vec<(f64, usize, f64, f64)>,
}

fn fit_report(p: &[f64], y: &[bool]) -> Fit {
    let n = p.len().max(1) as f64;
    // the validator's cut, as every other report here counts it
    let mut c = cascade_common::scores::Confusion::default();
    for (&pi, &yi) in p.iter().zip(y) {
        c.add(pi as f32, yi);
    }
    let f = c.figures();
    let mean = |want: bool| {
        let v: Vec<f64> = p.iter().zip(y).filter(|(_, &yi)| yi == want).map(|(&pi, _)| pi).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let mut bins = Vec::new();
    let mut ece = 0.0;
    for b in 0..10 {
        let lo = b as f64 / 10.0;
        let inside: Vec<(f64, bool)> = p
            .iter()
            .zip(y)
            .filter(|(&pi, _)| pi >= lo && (pi < lo + 0.1 || b == 9))
            .map(|(&pi, &yi)| (pi, yi))
            .collect();
        if inside.is_empty() {
            continue;
        }
        let k = inside.len() as f64;
        let conf = inside.iter().map(|v| v.0).sum::<f64>() / k;
        let frac = inside.iter().filter(|v| v.1).count() as f64 / k;
        ece += k / n * (conf - frac).abs();
        bins.push((lo, inside.len(), round3(conf), round3(frac)));
    }
    Fit {
        mcc: round3(f.mcc),
        accuracy: round3(f.accuracy),
        says_roadwork: round3((c.tp + c.fp) as f64 / n),
        mean_roadwork: round3(mean(true)),
        mean_none: round3(mean(false)),
        ece: round3(ece),
        bins,
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

struct Row {
    p: f64,
    y: bool,
    level: Option<String>,
}

fn read_scores(files: &[PathBuf], hotkey: &str) -> anyhow::Result<(Vec<Row>, usize)> {
    let mut rows = Vec::new();
    let mut skipped = 0;
    for f in files {
        let mut r = csv::Reader::from_path(f).with_context(|| format!("reading {}", f.display()))?;
        let head = r.headers()?.clone();
        let col = |name: &str| head.iter().position(|h| h.trim() == name);
        let (Some(pc), Some(lc)) = (col("prediction"), col("label")) else {
            bail!(
                "{}: needs a `prediction` and a `label` column (has {:?})",
                f.display(),
                head.iter().collect::<Vec<_>>()
            );
        };
        let (hc, vc, rc) = (col("hotkey"), col("level"), col("raw"));
        for (i, rec) in r.records().enumerate() {
            let rec = rec.with_context(|| format!("{} row {}", f.display(), i + 2))?;
            if hc.and_then(|c| rec.get(c)).is_some_and(|h| !h.is_empty() && h != hotkey) {
                continue;
            }
            let label = rec.get(lc).unwrap_or("").trim();
            // the score before any calibration where the file has it: a calibration is fitted on
            // raw fused scores, never on calibrated ones
            let cell = rc.and_then(|c| rec.get(c)).filter(|v| !v.trim().is_empty()).or_else(|| rec.get(pc));
            let p: Option<f64> = cell.and_then(|v| v.trim().parse().ok()).filter(|p: &f64| (0.0..=1.0).contains(p));
            let (y, Some(p)) = (
                match label {
                    "1" => true,
                    "0" => false,
                    _ => {
                        skipped += 1;
                        continue;
                    }
                },
                p,
            ) else {
                bail!("{} row {}: score {:?} is not a number in [0, 1]", f.display(), i + 2, cell.unwrap_or(""));
            };
            rows.push(Row { p, y, level: vc.and_then(|c| rec.get(c)).map(|v| v.trim().to_string()) });
        }
    }
    Ok((rows, skipped))
}

/// The registry models whose heads a hotkey's `classify` lists name (router stages, candidate
/// included), or `named` when given.
fn heads_of(policies: &Path, hotkey_file: &Path, named: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let reg = cascade_engines::Registry::load(&policies.join(MODELS_FILE))
        .map_err(|e| anyhow::anyhow!("{}: {e}", policies.join(MODELS_FILE).display()))?;
    let names: Vec<String> = if named.is_empty() {
        let text =
            std::fs::read_to_string(hotkey_file).with_context(|| format!("reading {}", hotkey_file.display()))?;
        let v: toml::Value = toml::from_str(&text).with_context(|| hotkey_file.display().to_string())?;
        let mut found = Vec::new();
        classify_lists(&v, &mut found);
        found.retain(|m| reg.models.iter().any(|s| &s.name == m && s.head.is_some()));
        found.sort();
        found.dedup();
        found
    } else {
        named.to_vec()
    };
    let mut out = BTreeMap::new();
    for m in names {
        let spec = reg.models.iter().find(|s| s.name == m).with_context(|| format!("no model {m} in the registry"))?;
        out.insert(m, cascade_host::calibration::spec_head_sha(spec).map_err(|e| anyhow::anyhow!(e))?);
    }
    Ok(out)
}

fn classify_lists(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                if k == "classify" {
                    if let Some(a) = x.as_array() {
                        out.extend(a.iter().filter_map(|s| s.as_str().map(String::from)));
                    }
                }
                classify_lists(x, out);
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|x| classify_lists(x, out)),
        _ => {}
    }
}

/// The hotkey file in `policies` whose `name` is `hotkey`.
fn hotkey_file(policies: &Path, hotkey: &str) -> anyhow::Result<PathBuf> {
    for f in cascade_host::config::hotkey_files(policies)? {
        if let Ok(h) = cascade_host::config::HotkeyFile::load(&f) {
            if h.name == hotkey {
                return Ok(f);
            }
        }
    }
    bail!("no hotkey named {hotkey} in {}", policies.display())
}

pub fn calibrate(policies: &Path, args: &CalibrateArgs) -> anyhow::Result<ExitCode> {
    let file = hotkey_file(policies, &args.hotkey)?;
    let (rows, skipped) = read_scores(&args.scores, &args.hotkey)?;
    let npos = rows.iter().filter(|r| r.y).count();
    if npos < 10 || rows.len() - npos < 10 {
        bail!(
            "{} labelled scores for {} ({npos} roadwork): at least 10 of each class are needed to fit a calibration",
            rows.len(),
            args.hotkey
        );
    }
    let heads = heads_of(policies, &file, &args.heads)?;
    let z: Vec<f32> = rows.iter().map(|r| cascade_host::calibration::logit(r.p) as f32).collect();
    let y: Vec<bool> = rows.iter().map(|r| r.y).collect();
    // each class weighs half, as on the validators' 50/50 mix
    let wpos = rows.len() as f32 / 2.0 / npos as f32;
    let wneg = rows.len() as f32 / 2.0 / (rows.len() - npos) as f32;
    let w: Vec<f32> = y.iter().map(|&yi| if yi { wpos } else { wneg }).collect();
    let (a, b) = crate::train::platt(&z, &y, &w);
    let mut cal = Calibration {
        format: FORMAT,
        hotkey: args.hotkey.clone(),
        method: "platt".into(),
        a: f64::from(a),
        b: f64::from(b),
        heads,
        report: serde_json::Value::Null,
    };
    if cal.a.is_nan() || cal.a <= 0.0 {
        bail!("the fitted slope is {a}: these scores do not rank roadwork above none; nothing to calibrate");
    }
    let raw: Vec<f64> = rows.iter().map(|r| r.p).collect();
    let after: Vec<f64> = raw.iter().map(|&p| f64::from(cal.apply(p as f32))).collect();
    let mut per_level = BTreeMap::new();
    for level in rows.iter().filter_map(|r| r.level.clone()).collect::<std::collections::BTreeSet<_>>() {
        let idx: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].level.as_deref() == Some(&level)).collect();
        let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let yl: Vec<bool> = idx.iter().map(|&i| y[i]).collect();
        per_level.insert(level, (fit_report(&pick(&raw), &yl), fit_report(&pick(&after), &yl)));
    }
    let report = serde_json::json!({
        "scores": args.scores.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "n": rows.len(), "roadwork": npos, "skipped_unlabelled": skipped,
        "before": fit_report(&raw, &y), "after": fit_report(&after, &y),
        "per_level": per_level.iter().map(|(l, (b, a))| (l.clone(), serde_json::json!({"before": b, "after": a}))).collect::<serde_json::Map<_, _>>(),
    });
    cal.report = report.clone();
    let text = serde_json::to_string_pretty(&cal)? + "\n";
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = args.out.with_extension("json.part");
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cal)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_report(&cal, &report, &per_level);
    Ok(ExitCode::SUCCESS)
}

fn print_report(cal: &Calibration, report: &serde_json::Value, per_level: &BTreeMap<String, (Fit, Fit)>) {
    println!(
        "{}: {} labelled scores ({} roadwork, {} unlabelled skipped); p = sigmoid({:.3}·logit(score) {:+.3})",
        cal.hotkey, report["n"], report["roadwork"], report["skipped_unlabelled"], cal.a, cal.b
    );
    println!(
        "heads: {}",
        cal.heads.iter().map(|(m, s)| format!("{m} sha256 {}…", &s[..12])).collect::<Vec<_>>().join(", ")
    );
    println!("{:<10} {:>6} {:>6} {:>8} {:>8} {:>8} {:>6}", "", "MCC", "acc", "says rw", "mean rw", "mean no", "ECE");
    let line = |name: &str, f: &serde_json::Value| {
        println!(
            "{:<10} {:>6.3} {:>6.3} {:>8.3} {:>8.3} {:>8.3} {:>6.3}",
            name,
            f["mcc"].as_f64().unwrap_or(0.0),
            f["accuracy"].as_f64().unwrap_or(0.0),
            f["says_roadwork"].as_f64().unwrap_or(0.0),
            f["mean_roadwork"].as_f64().unwrap_or(0.0),
            f["mean_none"].as_f64().unwrap_or(0.0),
            f["ece"].as_f64().unwrap_or(0.0)
        )
    };
    line("before", &report["before"]);
    line("after", &report["after"]);
    for (l, (b, a)) in per_level {
        println!(
            "level {l}: MCC {:.3} -> {:.3}, says roadwork {:.3} -> {:.3}, ECE {:.3} -> {:.3}",
            b.mcc, a.mcc, b.says_roadwork, a.says_roadwork, b.ece, a.ece
        );
    }
    println!("reliability (bin: count, mean score -> share roadwork), before | after:");
    let (bb, ab) = (&report["before"]["bins"], &report["after"]["bins"]);
    let fmt = |v: &serde_json::Value| {
        v.as_array()
            .map(|a| a.iter().map(|b| format!("{}: {} {}->{}", b[0], b[1], b[2], b[3])).collect::<Vec<_>>().join("; "))
            .unwrap_or_default()
    };
    println!("  {}\n  {}", fmt(bb), fmt(ab));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliability_bins_and_mcc() {
        let p = [0.1, 0.2, 0.8, 0.9, 0.6, 0.4];
        let y = [false, false, true, true, false, true];
        let f = fit_report(&p, &y);
        assert_eq!(f.accuracy, round3(4.0 / 6.0));
        assert_eq!(f.bins.iter().map(|b| b.1).sum::<usize>(), 6);
        assert!(f.ece > 0.0 && f.ece < 1.0);
    }
}

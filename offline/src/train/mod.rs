//! `cascade train-head`: a logistic (or one-hidden-layer) head on frozen-backbone embeddings,
//! written as `cascade-head/1` JSON that the registry loads as part of a classifier.
//!
//! - Several manifests at once; bad rows and unreadable files are reported and left out.
//! - Inputs as validators send them: level 0 (`--validator-style`) or levels drawn from
//!   `--levels`, several augmented views per image (`--views`), each embedded once and kept in
//!   an on-disk cache keyed by file hash, view parameters and backbone ([`super::embed_cache`]).
//! - Class balancing always; source balancing on request (`--balance-sources`: every source
//!   weighs the same, then the classes are evened out).
//! - Cross-validation by image (stratified random folds) or by source (leave one source out,
//!   `--cv source`), never splitting the views of one image; the out-of-fold scores report
//!   the head and, with `--calibrate`, fit a Platt scaling folded into the last layer so that
//!   0.5 is the cut on sources the head has not seen.
//! - The head records its backbone (file, input preparation, dimension): a classifier that
//!   would run it on another is refused at load.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use cascade_engines::head::{Backbone, Head, FORMAT};
use cascade_engines::{Models, Registry};
use serde_json::json;

use super::augment::{Levels, Style};
use super::embed_cache::{self, EmbedCache};
use super::manifest::{self, Example};
use cascade_common::scores::{Confusion, Figures};
use cascade_host::config::MODELS_FILE;

mod fit;
mod views;

pub(crate) use fit::platt;
use fit::{fit, random_folds, sigmoid, weights, Shape};
use views::embed_all;
pub(crate) use views::view_key;
pub use views::{challenge_view, load_example, read_source, style_for, SourceImage};

/// How the training rows are split for the out-of-fold report (and calibration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cv {
    /// No cross-validation (no report, no calibration).
    None,
    /// Stratified random folds of images.
    Random,
    /// Leave one source out: one fold per source.
    Source,
}

impl std::str::FromStr for Cv {
    type Err = String;
    fn from_str(s: &str) -> Result<Cv, String> {
        match s {
            "none" => Ok(Cv::None),
            "random" => Ok(Cv::Random),
            "source" => Ok(Cv::Source),
            _ => Err(format!("{s:?}: expected none, random or source")),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Hotkey files (`*.toml`) and the model registry (`models.toml`); default: `./policies`, else
    /// the one beside the binary's `target/` folder.
    #[arg(long, env = "CASCADE_POLICIES", default_value_os_t = cascade_host::default_policies())]
    pub policies: PathBuf,
    /// An embedder in the registry.
    #[arg(long)]
    pub backbone: String,
    /// Labelled CSV (`path,label[,source]`); repeat to train on several.
    #[arg(long = "manifest", required = true)]
    pub manifests: Vec<PathBuf>,
    /// Where the head (JSON) goes.
    #[arg(long)]
    pub out: PathBuf,
    /// Turn each image into what validators send (centre crop, 224×224, JPEG quality 75).
    #[arg(long)]
    pub validator_style: bool,
    /// Validator augmentation levels to draw from, one per image (`0-3`, `0,2`), seeded by `--seed`.
    // one drawn per view, keyed by `seed`, the file and the view
    #[arg(long, value_parser = Levels::parse)]
    pub levels: Option<Levels>,
    /// Augmented views per image (each drawn from `--levels`), embedded once and cached.
    #[arg(long, default_value_t = 1)]
    pub views: usize,
    /// Every source (an image's first folder) weighs the same, then the classes are evened out.
    #[arg(long)]
    pub balance_sources: bool,
    /// Cross-validation: `random` (stratified folds of images), `source` (leave one source out), `none`.
    #[arg(long, default_value = "random")]
    pub cv: Cv,
    /// Folds of `--cv random`.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Fit a Platt scaling on the out-of-fold scores (so 0.5 is the cut) and fold it into the head.
    #[arg(long)]
    pub calibrate: bool,
    /// Embedding cache folder (default: `target/embed-cache` beside the binary).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Keep embeddings in memory only.
    #[arg(long)]
    pub no_cache: bool,
    /// Write every view's embedding as JSON lines here.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    /// Hidden units of a one-hidden-layer head (0: logistic regression).
    #[arg(long, default_value_t = 0)]
    pub hidden: usize,
    /// L2 penalty on the head's weights (larger: a smoother head that fits the data less).
    #[arg(long, default_value_t = 0.01)]
    pub l2: f32,
    /// Full passes of gradient descent over the training embeddings.
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    /// Seed of the folds, the views' augmentation draws and the initial weights.
    #[arg(long, default_value_t = 72)]
    pub seed: u64,
    /// Also write out-of-fold scores (path,label,score,fold) here.
    // columns: path,label,source,view,level,score,fold, for tuning on held-out predictions
    #[arg(long)]
    pub oof: Option<PathBuf>,
}

impl TrainArgs {
    /// The embedding cache's folder: `--cache`, else `target/embed-cache` beside the binary;
    /// `None` with `--no-cache` (embeddings kept in memory only).
    pub fn cache_dir(&self) -> Option<PathBuf> {
        (!self.no_cache).then(|| self.cache.clone().unwrap_or_else(|| cascade_host::beside_exe("embed-cache")))
    }
}

/// Figures of scores against labels, and per group.
fn figures<'a>(scores: impl Iterator<Item = (f32, bool, &'a str)>) -> (Figures, BTreeMap<String, Figures>) {
    let mut all = Confusion::default();
    let mut by: BTreeMap<String, Confusion> = BTreeMap::new();
    for (p, l, g) in scores {
        all.add(p, l);
        by.entry(g.to_string()).or_default().add(p, l);
    }
    (all.figures(), by.into_iter().map(|(k, c)| (k, c.figures())).collect())
}

pub fn train(a: &TrainArgs) -> anyhow::Result<ExitCode> {
    let shape = Shape { hidden: a.hidden, l2: a.l2, epochs: a.epochs, seed: a.seed };
    anyhow::ensure!(!a.manifests.is_empty(), "give at least one --manifest");
    anyhow::ensure!(a.views >= 1, "--views must be at least 1");
    anyhow::ensure!(a.cv != Cv::Random || a.folds >= 2, "--folds must be at least 2");
    anyhow::ensure!(!a.calibrate || a.cv != Cv::None, "--calibrate needs cross-validation (--cv random or source)");
    let loaded = manifest::load_all(&a.manifests)?;
    let bad_rows = loaded.problems.len();
    let examples = loaded.examples;
    let count = |ex: &[Example]| (ex.iter().filter(|e| e.label).count(), ex.iter().filter(|e| !e.label).count());
    let (pos, neg) = count(&examples);
    anyhow::ensure!(
        pos > 0 && neg > 0,
        "training needs both classes; the manifests have {pos} roadwork and {neg} other rows"
    );

    let mut registry = Registry::load(&a.policies.join(MODELS_FILE))?;
    registry.models.retain(|m| m.name == a.backbone);
    anyhow::ensure!(
        !registry.models.is_empty(),
        "no model {} in {}",
        a.backbone,
        a.policies.join(MODELS_FILE).display()
    );
    let models = Models::load(&registry, &cascade_engines::runtime_library())
        .map_err(|errs| anyhow::anyhow!(errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")))?;
    let spec = models.spec(&a.backbone).context("backbone not loaded")?.clone();
    let style = Style::from_flags(a.validator_style, a.levels.clone(), a.seed);
    let mut views = a.views;
    if views > 1 && style.as_ref().is_none_or(|s| s.levels.as_slice() == [0]) {
        eprintln!("--views {views}: level 0 (or no augmentation) has nothing random; one view per image");
        views = 1;
    }
    let mut cache = match &a.cache_dir() {
        Some(dir) => EmbedCache::open(dir, &embed_cache::backbone_id(&spec)?),
        None => EmbedCache::memory(),
    };
    let started = Instant::now();
    let (rows, unreadable, ms_per_image) =
        embed_all(&models, &a.backbone, &examples, style.as_ref(), views, &mut cache)?;
    eprintln!(
        "embedded {} views of {} images in {:.1} s ({} from the cache{})",
        rows.len(),
        examples.len() - unreadable.len(),
        started.elapsed().as_secs_f64(),
        cache.hits,
        ms_per_image.map_or(String::new(), |ms| format!(", backbone {ms:.1} ms per new view"))
    );
    let y: Vec<bool> = rows.iter().map(|r| examples[r.ex].label).collect();
    let (pos_rows, neg_rows) = (y.iter().filter(|l| **l).count(), y.iter().filter(|l| !**l).count());
    anyhow::ensure!(
        pos_rows > 0 && neg_rows > 0,
        "training needs both classes; the readable images give {pos_rows} roadwork and {neg_rows} other rows"
    );
    let sources: Vec<&str> = rows.iter().map(|r| examples[r.ex].source.as_str()).collect();
    // every image weighs the same whatever its number of views: a challenge used as read (one
    // row) counts as much as a data-set image drawn `--views` times
    let prior: Vec<f32> = {
        let mut per_ex = vec![0usize; examples.len()];
        for r in &rows {
            per_ex[r.ex] += 1;
        }
        let most = per_ex.iter().copied().max().unwrap_or(1) as f32;
        rows.iter().map(|r| most / per_ex[r.ex] as f32).collect()
    };
    let w = weights(&y, &sources, &prior, a.balance_sources);
    let x: Vec<&Vec<f32>> = rows.iter().map(|r| &r.x).collect();
    let dim = x[0].len();
    anyhow::ensure!(x.iter().all(|v| v.len() == dim), "the backbone gave embeddings of different sizes");

    // folds of images (never splitting an image's views)
    let fold_of_example: Vec<usize> = match a.cv {
        Cv::None => vec![0; examples.len()],
        Cv::Random => random_folds(&examples, a.folds, a.seed),
        Cv::Source => {
            let names: Vec<&str> = examples
                .iter()
                .map(|e| e.source.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            anyhow::ensure!(names.len() >= 2, "--cv source needs at least two sources, have {names:?}");
            examples.iter().map(|e| names.iter().position(|n| *n == e.source).unwrap_or(0)).collect()
        }
    };
    let fold: Vec<usize> = rows.iter().map(|r| fold_of_example[r.ex]).collect();
    let nfolds = match a.cv {
        Cv::None => 0,
        _ => fold.iter().max().map_or(0, |m| m + 1),
    };
    let mut oof: Vec<Option<f32>> = vec![None; rows.len()];
    let mut per_fold = Vec::new();
    for f in 0..nfolds {
        let train_idx: Vec<usize> = (0..rows.len()).filter(|&i| fold[i] != f).collect();
        let test_idx: Vec<usize> = (0..rows.len()).filter(|&i| fold[i] == f).collect();
        if test_idx.is_empty() {
            continue;
        }
        let ys: Vec<bool> = train_idx.iter().map(|&i| y[i]).collect();
        if ys.iter().all(|l| *l) || ys.iter().all(|l| !*l) {
            eprintln!("fold {f}: its training side has one class only; not scored");
            continue;
        }
        let xs: Vec<&Vec<f32>> = train_idx.iter().map(|&i| x[i]).collect();
        let ws: Vec<f32> = {
            let s: Vec<&str> = train_idx.iter().map(|&i| sources[i]).collect();
            let p: Vec<f32> = train_idx.iter().map(|&i| prior[i]).collect();
            weights(&ys, &s, &p, a.balance_sources)
        };
        let net = fit(&xs, &ys, &ws, shape);
        let mut c = Confusion::default();
        for &i in &test_idx {
            let z = net.logit(x[i]);
            oof[i] = Some(z);
            c.add(sigmoid(z), y[i]);
        }
        let fig = c.figures();
        let name = if a.cv == Cv::Source { sources[test_idx[0]].to_string() } else { format!("fold {f}") };
        eprintln!("{name}: n={} accuracy={:.3} mcc={:.3}", fig.n, fig.accuracy, fig.mcc);
        per_fold.push(json!({"fold": name, "figures": fig}));
    }
    let scored: Vec<usize> = (0..rows.len()).filter(|&i| oof[i].is_some()).collect();
    let calibration = if a.calibrate && !scored.is_empty() {
        let z: Vec<f32> = scored.iter().map(|&i| oof[i].unwrap_or(0.0)).collect();
        let ys: Vec<bool> = scored.iter().map(|&i| y[i]).collect();
        let ws: Vec<f32> = scored.iter().map(|&i| w[i]).collect();
        Some(platt(&z, &ys, &ws))
    } else {
        None
    };
    let (ca, cb) = calibration.unwrap_or((1.0, 0.0));
    let score = |i: usize| oof[i].map(|z| sigmoid(ca * z + cb));
    let level_name = |i: usize| rows[i].level.map_or("-".to_string(), |l| format!("level {l}"));
    let cv_report = if scored.is_empty() {
        serde_json::Value::Null
    } else {
        let (raw, _) = figures(scored.iter().map(|&i| (sigmoid(oof[i].unwrap_or(0.0)), y[i], sources[i])));
        let (cal, by_source) = figures(scored.iter().filter_map(|&i| Some((score(i)?, y[i], sources[i]))));
        let levels: Vec<String> = scored.iter().map(|&i| level_name(i)).collect();
        let (_, by_level) =
            figures(scored.iter().zip(&levels).filter_map(|(&i, l)| Some((score(i)?, y[i], l.as_str()))));
        eprintln!(
            "cross-validated ({:?}, out-of-fold, {} rows): accuracy={:.3} mcc={:.3} reward={:.3}{}",
            a.cv,
            raw.n,
            raw.accuracy,
            raw.mcc,
            raw.reward,
            match calibration {
                Some((ca, cb)) => format!(
                    "; calibrated (a={ca:.3}, b={cb:.3}): accuracy={:.3} mcc={:.3} reward={:.3}",
                    cal.accuracy, cal.mcc, cal.reward
                ),
                None => String::new(),
            }
        );
        for (s, f) in &by_source {
            let c = f.confusion;
            eprintln!(
                "  {s:<32} n={:>5} accuracy={:.3}  tp {} fp {} tn {} fn {}",
                f.n, f.accuracy, c.tp, c.fp, c.tn, c.fn_
            );
        }
        json!({"scheme": format!("{:?}", a.cv).to_lowercase(), "uncalibrated": raw, "figures": cal,
               "per_source": by_source, "per_level": by_level, "per_fold": per_fold})
    };

    let mut net = fit(&x, &y, &w, shape);
    if let Some((ca, cb)) = calibration {
        let last = net.layers.last_mut().expect("a layer");
        for wgt in last.weights[0].iter_mut() {
            *wgt *= ca;
        }
        last.bias[0] = ca * last.bias[0] + cb;
    }
    let mut head = Head {
        format: FORMAT.into(),
        labels: vec!["other".into(), "roadwork".into()],
        input_dim: dim,
        mean: net.mean,
        std: net.std,
        layers: net.layers,
        backbone: Some(Backbone::of(&spec, dim)),
        provenance: json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "backbone": a.backbone,
            "manifests": a.manifests,
            "images": examples.len() - unreadable.len(),
            "rows": rows.len(),
            "positive_rows": pos_rows,
            "negative_rows": neg_rows,
            "unreadable_rows": unreadable.len(),
            "bad_rows": bad_rows,
            "validator_style": a.validator_style,
            "levels": style.as_ref().map(|s| s.levels.to_string()),
            "views": views,
            "balance_sources": a.balance_sources,
            "hidden": a.hidden, "l2": a.l2, "epochs": a.epochs, "seed": a.seed,
            "calibration": calibration.map(|(a, b)| json!({"a": a, "b": b})),
            "cross_validated": cv_report,
        }),
    };
    head.fold_standardisation();
    head.check().map_err(|e| anyhow::anyhow!("trained head is inconsistent: {e}"))?;
    std::fs::write(&a.out, serde_json::to_string(&head)?).with_context(|| format!("writing {}", a.out.display()))?;
    if let Some(p) = &a.oof {
        let mut csv = String::from("path,label,source,view,level,score,fold\n");
        for &i in &scored {
            let e = &examples[rows[i].ex];
            csv.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                manifest::quote(&e.path.display().to_string()),
                y[i] as u8,
                manifest::quote(&e.source),
                rows[i].view,
                rows[i].level.map_or(String::new(), |l| l.to_string()),
                score(i).unwrap_or(f32::NAN),
                fold[i]
            ));
        }
        std::fs::write(p, csv).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.dump {
        let mut f = std::io::BufWriter::new(std::fs::File::create(p).with_context(|| format!("{}", p.display()))?);
        for r in &rows {
            let e = &examples[r.ex];
            writeln!(
                f,
                "{}",
                json!({"path": e.path, "label": e.label as u8, "source": e.source, "view": r.view, "level": r.level, "x": r.x})
            )?;
        }
    }
    let summary = match &head.provenance["cross_validated"] {
        serde_json::Value::Null => serde_json::Value::Null,
        v => v["figures"].clone(),
    };
    println!(
        "{}",
        json!({"out": a.out, "rows": rows.len(), "cross_validated": summary, "calibration": head.provenance["calibration"]})
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_of_one_image_share_a_random_fold() {
        let ex = |i: usize, group: Option<&str>| Example {
            path: format!("{i}.jpg").into(),
            label: i.is_multiple_of(2),
            source: "s".into(),
            challenge: true,
            level: None,
            group: group.map(str::to_string),
            row: format!("m.csv:{i}"),
        };
        // 40 images, the first 3 views of one original each, the rest alone
        let mut examples = Vec::new();
        for i in 0..40 {
            for _ in 0..3 {
                examples.push(ex(i, Some(&format!("orig{i}.png"))));
            }
        }
        examples.extend((40..60).map(|i| ex(i, None)));
        let fold = random_folds(&examples, 5, 7);
        for v in fold[..120].chunks(3) {
            assert!(v.iter().all(|f| *f == v[0]), "one image's views in one fold: {fold:?}");
        }
        let used: std::collections::BTreeSet<usize> = fold.iter().copied().collect();
        assert_eq!(used.len(), 5, "every fold gets images: {fold:?}");
    }

    #[test]
    fn weights_even_out_sources_then_classes() {
        let y = [true, true, true, false, false, false, false, false];
        let s = ["a", "a", "a", "c", "b", "b", "b", "b"];
        let w = weights(&y, &s, &[1.0; 8], true);
        let sum = |c: bool| w.iter().zip(&y).filter(|(_, l)| **l == c).map(|(w, _)| w).sum::<f32>();
        assert!((sum(true) - 4.0).abs() < 1e-5 && (sum(false) - 4.0).abs() < 1e-5, "{w:?}");
        // within the negatives, source c (1 row) weighs what source b (4 rows) weighs
        assert!((w[3] - 4.0 * w[4]).abs() < 1e-5, "{w:?}");
        let plain = weights(&y, &s, &[1.0; 8], false);
        assert!((plain[0] - 8.0 / 6.0).abs() < 1e-5 && (plain[4] - 0.8).abs() < 1e-5, "{plain:?}");
        // an image with one row (a challenge used as read) beside images of three views each:
        // its prior makes its row weigh what the other image's three rows weigh together
        let y2 = [true, true, true, true, false, false, false, false];
        let w2 = weights(&y2, &["a"; 8], &[1.0, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0], false);
        assert!((w2[3] - 3.0 * w2[0]).abs() < 1e-5, "{w2:?}");
    }

    #[test]
    fn platt_moves_the_cut_to_where_the_classes_meet() {
        // logits shifted by +2: the raw 0.5 cut calls every negative near 2 positive
        let z: Vec<f32> =
            (0..200).map(|i| if i < 100 { 1.0 + (i % 10) as f32 * 0.1 } else { 3.0 + (i % 10) as f32 * 0.1 }).collect();
        let y: Vec<bool> = (0..200).map(|i| i >= 100).collect();
        let w = vec![1.0; 200];
        let (a, b) = platt(&z, &y, &w);
        let cut = -b / a;
        assert!(a > 0.0 && (1.9..3.1).contains(&cut), "a={a} b={b} cut={cut}");
        // saturated, overlapping logits (a head that fits its training rows perfectly)
        let z: Vec<f32> = (0..200).map(|i| (i as f32 - 80.0) * 0.8 + if i % 7 == 0 { -30.0 } else { 0.0 }).collect();
        let y: Vec<bool> = (0..200).map(|i| i >= 100).collect();
        let (a, b) = platt(&z, &y, &w);
        assert!(a.is_finite() && b.is_finite() && a > 0.0 && a < 10.0, "a={a} b={b}");
        let cut = -b / a;
        assert!((0.0..35.0).contains(&cut), "a={a} b={b} cut={cut}");
    }
}

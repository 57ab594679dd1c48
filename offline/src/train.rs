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
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_engines::head::{Backbone, Dense, Head, FORMAT};
use cascade_engines::{JobInput, Models, Output, Registry};
use serde_json::json;

use super::augment::{self, Levels, Params, Style};
use super::embed_cache::{self, EmbedCache};
use super::manifest::{self, Example};
use super::Progress;
use cascade_common::image::{decode_image, IngressLimits};
use cascade_common::scores::{Confusion, Figures};
use cascade_host::config::MODELS_FILE;

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
    #[arg(long, default_value = "policies")]
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
    #[arg(long, default_value_t = 0.01)]
    pub l2: f32,
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
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

/// Small deterministic generator (xorshift64*), so a head is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

/// An image file as the server would decode it, with the hash of its bytes (which keys its
/// augmentation draws, so they do not depend on how a manifest spells the path).
pub struct SourceImage {
    pub sha: String,
    pub img: image::RgbImage,
}

pub fn read_source(path: &Path) -> anyhow::Result<SourceImage> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let img =
        decode_image(&bytes, &IngressLimits::default()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(SourceImage { sha: embed_cache::sha256_hex(&bytes), img })
}

/// View `view` of an image as a validator would send it, decoded as the server decodes it,
/// and the augmentation drawn for it: keyed by the run's seed, the file's hash and the view.
pub fn challenge_view(src: &SourceImage, style: &Style, view: usize) -> anyhow::Result<(image::RgbImage, Params)> {
    let params = style.params(&view_key(&src.sha, view), src.img.width(), src.img.height());
    Ok((challenge(src, &params)?, params))
}

/// What keys view `view`'s draws: the file's hash (view 0, as `eval` draws) or `hash#view`.
pub(crate) fn view_key(sha: &str, view: usize) -> String {
    if view == 0 {
        sha.to_string()
    } else {
        format!("{sha}#{view}")
    }
}

/// The challenge JPEG of `params`, decoded as the server decodes it.
fn challenge(src: &SourceImage, params: &Params) -> anyhow::Result<image::RgbImage> {
    let jpeg = augment::challenge_jpeg(&src.img, params);
    decode_image(&jpeg, &IngressLimits::default()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Reads an example as the policy would see it: as read, or (with a style) as the challenge a
/// validator would send of it, decoded as the server decodes it; with the level drawn. An
/// example that already is a challenge ([`Example::challenge`]) is read as it is.
pub fn load_example(ex: &Example, style: Option<&Style>) -> anyhow::Result<(image::RgbImage, Option<u8>)> {
    let src = read_source(&ex.path)?;
    let Some(style) = style_for(ex, style) else {
        return Ok((src.img, None));
    };
    let (img, params) = challenge_view(&src, style, 0).with_context(|| ex.path.display().to_string())?;
    Ok((img, Some(params.level)))
}

/// The augmentation an example gets: none for an image that already is a challenge.
pub fn style_for<'a>(ex: &Example, style: Option<&'a Style>) -> Option<&'a Style> {
    if ex.challenge {
        None
    } else {
        style
    }
}

/// One training row: a view of an example and its embedding.
struct Row {
    ex: usize,
    view: usize,
    level: Option<u8>,
    x: Vec<f32>,
}

/// Embeddings of every view of the readable examples, from the cache where it has them;
/// unreadable rows are reported and left out. Also the backbone's time per new embedding.
fn embed_all(
    models: &Models,
    backbone: &str,
    examples: &[Example],
    style: Option<&Style>,
    views: usize,
    cache: &mut EmbedCache,
) -> anyhow::Result<(Vec<Row>, Vec<String>, Option<f64>)> {
    let kind = models.spec(backbone).with_context(|| format!("no model {backbone} in the registry"))?.kind;
    let mut progress = Progress::new("embedding", examples.len());
    let mut rows = Vec::with_capacity(examples.len() * views);
    let mut unreadable = Vec::new();
    let (mut computed, mut compute_s) = (0usize, 0f64);
    for (c, chunk) in examples.chunks(16).enumerate() {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut pending = Vec::new();
        for (j, ex) in chunk.iter().enumerate() {
            let i = c * 16 + j;
            let src = match read_source(&ex.path) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}: {e:#} (left out)", ex.row);
                    unreadable.push(format!("{}: {e:#}", ex.row));
                    progress.tick();
                    continue;
                }
            };
            // a challenge is used as read, once: its augmentation was drawn by the validator
            let style = style_for(ex, style);
            let views = if ex.challenge { 1 } else { views };
            for view in 0..views {
                // the draws first: a cached view needs no augmentation at all
                let params = style.map(|s| s.params(&view_key(&src.sha, view), src.img.width(), src.img.height()));
                let key = match &params {
                    Some(p) => format!("{}|{p:?}", src.sha),
                    None => format!("{}|as-read", src.sha),
                };
                let level = params.as_ref().map(|p| p.level);
                match cache.get(&key) {
                    Some(x) => rows.push(Row { ex: i, view, level, x }),
                    None => {
                        let img = match &params {
                            Some(p) => challenge(&src, p)?,
                            None => src.img.clone(),
                        };
                        let rx = models.submit(backbone, kind, JobInput::Image(Arc::new(img)), deadline)?;
                        pending.push((i, view, level, key, rx));
                    }
                }
            }
            progress.tick();
        }
        for (i, view, level, key, rx) in pending {
            let reply = rx.recv_deadline(deadline).context("backbone timed out")?;
            compute_s += reply.compute.as_secs_f64() / reply.batch.max(1) as f64;
            computed += 1;
            match reply.output? {
                Output::Embedding(x) => {
                    cache.put(key, x.clone());
                    rows.push(Row { ex: i, view, level, x });
                }
                _ => anyhow::bail!("{backbone} is not an embedder (kind = \"embedder\")"),
            }
        }
    }
    rows.sort_by_key(|r| (r.ex, r.view));
    let per = (computed > 0).then(|| compute_s * 1e3 / computed as f64);
    Ok((rows, unreadable, per))
}

/// A head being trained: standardisation, then dense layers ending in one logit.
struct Net {
    mean: Vec<f32>,
    std: Vec<f32>,
    layers: Vec<Dense>,
}

fn stats(x: &[&Vec<f32>]) -> (Vec<f32>, Vec<f32>) {
    let d = x[0].len();
    let n = x.len() as f32;
    let mut mean = vec![0f32; d];
    for r in x {
        for (m, v) in mean.iter_mut().zip(r.iter()) {
            *m += v / n;
        }
    }
    let mut var = vec![0f32; d];
    for r in x {
        for ((s, v), m) in var.iter_mut().zip(r.iter()).zip(&mean) {
            *s += (v - m) * (v - m) / n;
        }
    }
    (mean, var.into_iter().map(|v| v.sqrt().max(1e-6)).collect())
}

impl Net {
    fn new(dim: usize, hidden: usize, rng: &mut Rng, mean: Vec<f32>, std: Vec<f32>) -> Net {
        let mut dense = |out: usize, inp: usize, relu: bool| {
            let scale = (2.0 / inp as f32).sqrt();
            Dense {
                weights: (0..out)
                    .map(|_| (0..inp).map(|_| (rng.uniform() * 2.0 - 1.0) * scale * 0.5).collect())
                    .collect(),
                bias: vec![0.0; out],
                relu,
            }
        };
        let layers = if hidden == 0 {
            vec![dense(1, dim, false)]
        } else {
            vec![dense(hidden, dim, true), dense(1, hidden, false)]
        };
        Net { mean, std, layers }
    }

    fn standardise(&self, x: &[f32]) -> Vec<f32> {
        x.iter().zip(&self.mean).zip(&self.std).map(|((x, m), s)| (x - m) / s).collect()
    }

    /// Activations of every layer (input first).
    fn forward(&self, x: Vec<f32>) -> Vec<Vec<f32>> {
        let mut acts = vec![x];
        for l in &self.layers {
            let prev = acts.last().expect("input");
            let next: Vec<f32> = l
                .weights
                .iter()
                .zip(&l.bias)
                .map(|(row, b)| {
                    let z = row.iter().zip(prev).map(|(w, x)| w * x).sum::<f32>() + b;
                    if l.relu {
                        z.max(0.0)
                    } else {
                        z
                    }
                })
                .collect();
            acts.push(next);
        }
        acts
    }

    fn logit(&self, x: &[f32]) -> f32 {
        self.forward(self.standardise(x)).last().expect("output")[0]
    }

    /// Full-batch Adam on weighted binary cross-entropy with L2 on the weights (the row
    /// weights sum to the row count). The layers are trained as flat arrays, one row of the
    /// standardised inputs at a time, and written back at the end.
    fn fit(&mut self, x: &[&Vec<f32>], y: &[bool], w: &[f32], epochs: usize, l2: f32) {
        let d = self.mean.len();
        let xs: Vec<f32> = x.iter().flat_map(|r| self.standardise(r)).collect();
        let total: f32 = w.iter().sum::<f32>().max(1e-12);
        // parameters: [W1 (h×d), b1 (h), w2 (h), b2] with a hidden layer, else [w (d), b]
        let hidden = if self.layers.len() == 2 { self.layers[0].weights.len() } else { 0 };
        let mut params: Vec<f32> = Vec::new();
        for l in &self.layers {
            for row in &l.weights {
                params.extend_from_slice(row);
            }
            params.extend_from_slice(&l.bias);
        }
        let np = params.len();
        let is_weight: Vec<bool> = if hidden == 0 {
            (0..np).map(|k| k < d).collect()
        } else {
            (0..np).map(|k| k < hidden * d || (hidden * d + hidden..hidden * d + 2 * hidden).contains(&k)).collect()
        };
        let (lr, b1, b2, eps) = (0.01f32, 0.9f32, 0.999f32, 1e-8f32);
        let (mut m, mut v) = (vec![0f32; np], vec![0f32; np]);
        let mut grad = vec![0f32; np];
        let mut h = vec![0f32; hidden];
        for t in 1..=epochs {
            grad.iter_mut().for_each(|g| *g = 0.0);
            for (r, (&yi, &wi)) in y.iter().zip(w).enumerate() {
                let xi = &xs[r * d..(r + 1) * d];
                let target = if yi { 1.0 } else { 0.0 };
                if hidden == 0 {
                    let z = dot(&params[..d], xi) + params[d];
                    let delta = wi * (sigmoid(z) - target) / total;
                    axpy(&mut grad[..d], delta, xi);
                    grad[d] += delta;
                } else {
                    let (w1, rest) = params.split_at(hidden * d);
                    let (bias1, rest) = rest.split_at(hidden);
                    let (w2, bias2) = rest.split_at(hidden);
                    for (j, hj) in h.iter_mut().enumerate() {
                        *hj = (dot(&w1[j * d..(j + 1) * d], xi) + bias1[j]).max(0.0);
                    }
                    let z = dot(w2, &h) + bias2[0];
                    let delta = wi * (sigmoid(z) - target) / total;
                    let (g1, grest) = grad.split_at_mut(hidden * d);
                    let (gb1, grest) = grest.split_at_mut(hidden);
                    let (gw2, gb2) = grest.split_at_mut(hidden);
                    for j in 0..hidden {
                        gw2[j] += delta * h[j];
                        if h[j] > 0.0 {
                            let dj = delta * w2[j];
                            axpy(&mut g1[j * d..(j + 1) * d], dj, xi);
                            gb1[j] += dj;
                        }
                    }
                    gb2[0] += delta;
                }
            }
            let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
            for k in 0..np {
                let g = grad[k] + if is_weight[k] { l2 * params[k] } else { 0.0 };
                m[k] = b1 * m[k] + (1.0 - b1) * g;
                v[k] = b2 * v[k] + (1.0 - b2) * g * g;
                params[k] -= lr * (m[k] / c1) / ((v[k] / c2).sqrt() + eps);
            }
        }
        let mut at = 0;
        for l in &mut self.layers {
            for row in &mut l.weights {
                let n = row.len();
                row.copy_from_slice(&params[at..at + n]);
                at += n;
            }
            let n = l.bias.len();
            l.bias.copy_from_slice(&params[at..at + n]);
            at += n;
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // eight partial sums, so the compiler vectorises it
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

fn fit(x: &[&Vec<f32>], y: &[bool], w: &[f32], a: &TrainArgs) -> Net {
    let (mean, std) = stats(x);
    let mut rng = Rng(a.seed.max(1));
    let mut net = Net::new(x[0].len(), a.hidden, &mut rng, mean, std);
    net.fit(x, y, w, a.epochs, a.l2);
    net
}

/// Row weights, starting from each row's `prior` (an image's rows share the image's weight):
/// with `by_source` every source first weighs the same; then each class sums to half the rows.
fn weights(y: &[bool], sources: &[&str], prior: &[f32], by_source: bool) -> Vec<f32> {
    let mut w = prior.to_vec();
    if by_source {
        let mut total: BTreeMap<&str, f32> = BTreeMap::new();
        for (s, p) in sources.iter().zip(prior) {
            *total.entry(s).or_default() += p;
        }
        for ((wi, s), p) in w.iter_mut().zip(sources).zip(prior) {
            *wi = p / total[s];
        }
    }
    let n = y.len() as f32;
    for class in [true, false] {
        let sum: f32 = w.iter().zip(y).filter(|(_, l)| **l == class).map(|(w, _)| w).sum();
        if sum > 0.0 {
            for (wi, _) in w.iter_mut().zip(y).filter(|(_, l)| **l == class) {
                *wi *= n / 2.0 / sum;
            }
        }
    }
    w
}

/// Stratified random folds of images; rows that are views of one image (`Example::group`)
/// share the fold of the first of them.
fn random_folds(examples: &[Example], folds: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng(seed.max(1) ^ 0x9E37_79B9);
    let mut fold = vec![0usize; examples.len()];
    let mut first_of_group: BTreeMap<&str, usize> = BTreeMap::new();
    let leader: Vec<usize> = (0..examples.len())
        .map(|i| match examples[i].group.as_deref() {
            Some(g) => *first_of_group.entry(g).or_insert(i),
            None => i,
        })
        .collect();
    for class in [true, false] {
        let mut idx: Vec<usize> =
            (0..examples.len()).filter(|&i| examples[i].label == class && leader[i] == i).collect();
        rng.shuffle(&mut idx);
        for (k, i) in idx.into_iter().enumerate() {
            fold[i] = k % folds;
        }
    }
    leader.iter().map(|&l| fold[l]).collect()
}

/// Platt scaling: `a, b` minimising the weighted log-loss of `sigmoid(a·z + b)`: Newton's
/// method on two parameters, each step halved until the loss falls (saturated scores make
/// the plain step overshoot).
fn platt(z: &[f32], y: &[bool], w: &[f32]) -> (f32, f32) {
    let loss = |a: f64, b: f64| -> f64 {
        z.iter()
            .zip(y)
            .zip(w)
            .map(|((&zi, &yi), &wi)| {
                let t = a * f64::from(zi) + b;
                // log(1 + e^t) − y·t, stable for large |t|
                let softplus = if t > 0.0 { t + (-t).exp().ln_1p() } else { t.exp().ln_1p() };
                f64::from(wi) * (softplus - if yi { t } else { 0.0 })
            })
            .sum()
    };
    let (mut a, mut b) = (1f64, 0f64);
    let mut current = loss(a, b);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for ((&zi, &yi), &wi) in z.iter().zip(y).zip(w) {
            let (zi, wi) = (f64::from(zi), f64::from(wi));
            let p = 1.0 / (1.0 + (-(a * zi + b)).exp());
            let r = wi * (p - if yi { 1.0 } else { 0.0 });
            let s = wi * p * (1.0 - p);
            ga += r * zi;
            gb += r;
            haa += s * zi * zi;
            hab += s * zi;
            hbb += s;
        }
        // a small ridge keeps the step finite when the scores separate perfectly
        let (haa, hbb) = (haa + 1e-6 * (1.0 + haa), hbb + 1e-6 * (1.0 + hbb));
        let det = haa * hbb - hab * hab;
        if det <= 0.0 || !det.is_finite() {
            break;
        }
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        let mut step = 1.0;
        let mut moved = false;
        for _ in 0..40 {
            let (na, nb) = (a - step * da, b - step * db);
            let l = loss(na, nb);
            if l < current {
                (a, b, current, moved) = (na, nb, l, true);
                break;
            }
            step *= 0.5;
        }
        if !moved || (step * da).abs() < 1e-9 && (step * db).abs() < 1e-9 {
            break;
        }
    }
    (a as f32, b as f32)
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
        let net = fit(&xs, &ys, &ws, a);
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

    let mut net = fit(&x, &y, &w, a);
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

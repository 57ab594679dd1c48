//! `cascade train-head`: a logistic (or one-hidden-layer) head on frozen-backbone embeddings,
//! with class balancing, stratified k-fold cross-validation, and the final head written as
//! `cascade-head/1` JSON that the registry loads as part of a classifier.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_engines::head::{Dense, Head, FORMAT};
use cascade_engines::{JobInput, Models, Output, Registry};
use serde_json::json;

use super::augment::{self, Levels, Style};
use super::manifest::{self, Example};
use super::scores::Confusion;
use super::Progress;
use crate::config::MODELS_FILE;
use crate::server::ingress::{decode_image, IngressLimits};

#[derive(Debug, Clone)]
pub struct TrainArgs {
    pub policies: PathBuf,
    pub backbone: String,
    pub manifest: PathBuf,
    pub out: PathBuf,
    pub validator_style: bool,
    /// Validator augmentation levels, one drawn per image (keyed by `seed` and the file).
    pub levels: Option<Levels>,
    pub folds: usize,
    pub hidden: usize,
    pub l2: f32,
    pub epochs: usize,
    pub seed: u64,
    /// Out-of-fold scores (`path,label,score`) for tuning policies on held-out predictions.
    pub oof: Option<PathBuf>,
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

/// Reads an image as the policy would see it: as read, or (with a style) as the challenge a
/// validator would send of it, decoded as the server decodes it; with the level drawn.
pub fn load_image(path: &Path, style: Option<&Style>) -> anyhow::Result<(image::RgbImage, Option<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let limits = IngressLimits::default();
    let img = decode_image(&bytes, &limits).map_err(|r| anyhow::anyhow!("{}: {}", path.display(), r.message))?;
    let Some(style) = style else {
        return Ok((img, None));
    };
    let params = style.params(&path.to_string_lossy(), img.width(), img.height());
    let jpeg = augment::challenge_jpeg(&img, &params);
    let img = decode_image(&jpeg, &limits).map_err(|r| anyhow::anyhow!("{}: {}", path.display(), r.message))?;
    Ok((img, Some(params.level)))
}

/// Embeddings of the readable examples; unreadable rows are reported and left out.
fn embed_all(
    models: &Models,
    backbone: &str,
    examples: &[Example],
    style: Option<&Style>,
) -> anyhow::Result<Vec<(usize, Vec<f32>)>> {
    let kind = models.spec(backbone).with_context(|| format!("no model {backbone} in the registry"))?.kind;
    let mut progress = Progress::new("embedding", examples.len());
    let mut out = Vec::with_capacity(examples.len());
    let indexed: Vec<(usize, &Example)> = examples.iter().enumerate().collect();
    for chunk in indexed.chunks(32) {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut pending = Vec::new();
        for (i, ex) in chunk {
            match load_image(&ex.path, style) {
                Ok((img, _)) => {
                    pending.push((*i, models.submit(backbone, kind, JobInput::Image(Arc::new(img)), deadline)?))
                }
                Err(e) => {
                    eprintln!("row {}: {e:#} (left out)", i + 2);
                    progress.tick();
                }
            }
        }
        for (i, rx) in pending {
            let reply = rx.recv_deadline(deadline).context("backbone timed out")?;
            match reply.output? {
                Output::Embedding(v) => out.push((i, v)),
                _ => anyhow::bail!("{backbone} is not an embedder (kind = \"embedder\")"),
            }
            progress.tick();
        }
    }
    Ok(out)
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

    fn predict(&self, x: &[f32]) -> f32 {
        let logit = self.forward(self.standardise(x)).last().expect("output")[0];
        1.0 / (1.0 + (-logit).exp())
    }

    /// Full-batch Adam on class-balanced binary cross-entropy with L2.
    fn fit(&mut self, x: &[Vec<f32>], y: &[bool], epochs: usize, l2: f32) {
        let xs: Vec<Vec<f32>> = x.iter().map(|r| self.standardise(r)).collect();
        let pos = y.iter().filter(|l| **l).count().max(1) as f32;
        let neg = (y.len() as f32 - pos).max(1.0);
        let n = y.len() as f32;
        let (wp, wn) = (n / (2.0 * pos), n / (2.0 * neg));
        let (lr, b1, b2, eps) = (0.01f32, 0.9f32, 0.999f32, 1e-8f32);
        let shapes: Vec<(usize, usize)> = self.layers.iter().map(|l| (l.weights.len(), l.weights[0].len())).collect();
        let mut m: Vec<Vec<f32>> = shapes.iter().map(|(o, i)| vec![0.0; o * i + o]).collect();
        let mut v = m.clone();
        for t in 1..=epochs {
            let mut grads: Vec<Vec<f32>> = shapes.iter().map(|(o, i)| vec![0.0; o * i + o]).collect();
            for (xi, &yi) in xs.iter().zip(y) {
                let acts = self.forward(xi.clone());
                let p = 1.0 / (1.0 + (-acts.last().expect("out")[0]).exp());
                let w = if yi { wp } else { wn };
                let mut delta = vec![w * (p - if yi { 1.0 } else { 0.0 }) / n];
                for li in (0..self.layers.len()).rev() {
                    let (o, i) = shapes[li];
                    let input = &acts[li];
                    let g = &mut grads[li];
                    for r in 0..o {
                        for c in 0..i {
                            g[r * i + c] += delta[r] * input[c];
                        }
                        g[o * i + r] += delta[r];
                    }
                    if li > 0 {
                        let l = &self.layers[li];
                        let prev_relu = self.layers[li - 1].relu;
                        delta = (0..i)
                            .map(|c| {
                                let s: f32 = (0..o).map(|r| l.weights[r][c] * delta[r]).sum();
                                if prev_relu && input[c] <= 0.0 {
                                    0.0
                                } else {
                                    s
                                }
                            })
                            .collect();
                    }
                }
            }
            for (li, l) in self.layers.iter_mut().enumerate() {
                let (o, i) = shapes[li];
                for k in 0..o * i + o {
                    let (r, c) = (k / i.max(1), k % i.max(1));
                    let param = if k < o * i { &mut l.weights[r][c] } else { &mut l.bias[k - o * i] };
                    let mut g = grads[li][k];
                    if k < o * i {
                        g += l2 * *param;
                    }
                    m[li][k] = b1 * m[li][k] + (1.0 - b1) * g;
                    v[li][k] = b2 * v[li][k] + (1.0 - b2) * g * g;
                    let mh = m[li][k] / (1.0 - b1.powi(t as i32));
                    let vh = v[li][k] / (1.0 - b2.powi(t as i32));
                    *param -= lr * mh / (vh.sqrt() + eps);
                }
            }
        }
    }
}

fn fit(x: &[&Vec<f32>], y: &[bool], a: &TrainArgs) -> Net {
    let (mean, std) = stats(x);
    let mut rng = Rng(a.seed.max(1));
    let mut net = Net::new(x[0].len(), a.hidden, &mut rng, mean, std);
    let owned: Vec<Vec<f32>> = x.iter().map(|r| (*r).clone()).collect();
    net.fit(&owned, y, a.epochs, a.l2);
    net
}

pub fn train(a: &TrainArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.folds >= 2, "--folds must be at least 2");
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
    let examples = manifest::load(&a.manifest)?;
    anyhow::ensure!(examples.len() >= a.folds * 2, "{} examples are too few for {} folds", examples.len(), a.folds);
    let started = Instant::now();
    let style = Style::from_flags(a.validator_style, a.levels.clone(), a.seed);
    let embedded = embed_all(&models, &a.backbone, &examples, style.as_ref())?;
    let skipped = examples.len() - embedded.len();
    let examples: Vec<Example> = embedded.iter().map(|(i, _)| examples[*i].clone()).collect();
    let x: Vec<Vec<f32>> = embedded.into_iter().map(|(_, v)| v).collect();
    anyhow::ensure!(x.len() >= a.folds * 2, "only {} readable examples", x.len());
    let y: Vec<bool> = examples.iter().map(|e| e.label).collect();
    eprintln!("embedded {} images in {:.1} s", x.len(), started.elapsed().as_secs_f64());

    // stratified folds: each class shuffled and dealt round-robin
    let mut rng = Rng(a.seed.max(1) ^ 0x9E37_79B9);
    let mut fold = vec![0usize; y.len()];
    for class in [true, false] {
        let mut idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] == class).collect();
        rng.shuffle(&mut idx);
        for (k, i) in idx.into_iter().enumerate() {
            fold[i] = k % a.folds;
        }
    }
    let mut oof = vec![0f32; y.len()];
    let mut per_fold = Vec::new();
    for f in 0..a.folds {
        let train_idx: Vec<usize> = (0..y.len()).filter(|&i| fold[i] != f).collect();
        let xs: Vec<&Vec<f32>> = train_idx.iter().map(|&i| &x[i]).collect();
        let ys: Vec<bool> = train_idx.iter().map(|&i| y[i]).collect();
        let net = fit(&xs, &ys, a);
        let mut c = Confusion::default();
        for i in (0..y.len()).filter(|&i| fold[i] == f) {
            oof[i] = net.predict(&x[i]);
            c.add(oof[i], y[i]);
        }
        let fig = c.figures();
        eprintln!("fold {f}: n={} accuracy={:.3} mcc={:.3} f1={:.3}", fig.n, fig.accuracy, fig.mcc, fig.f1);
        per_fold.push(fig);
    }
    let mut all = Confusion::default();
    for (p, l) in oof.iter().zip(&y) {
        all.add(*p, *l);
    }
    let cv = all.figures();
    eprintln!(
        "cross-validated (out-of-fold): accuracy={:.3} mcc={:.3} f1={:.3} reward={:.3}",
        cv.accuracy, cv.mcc, cv.f1, cv.reward
    );

    let refs: Vec<&Vec<f32>> = x.iter().collect();
    let net = fit(&refs, &y, a);
    let mut head = Head {
        format: FORMAT.into(),
        labels: vec!["other".into(), "roadwork".into()],
        input_dim: x[0].len(),
        mean: net.mean,
        std: net.std,
        layers: net.layers,
        provenance: json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "backbone": a.backbone,
            "manifest": a.manifest,
            "examples": y.len(),
            "unreadable_rows": skipped,
            "positives": y.iter().filter(|l| **l).count(),
            "validator_style": a.validator_style,
            "levels": style.as_ref().map(|s| s.levels.to_string()),
            "folds": a.folds, "hidden": a.hidden, "l2": a.l2, "epochs": a.epochs, "seed": a.seed,
            "cross_validated": cv,
            "per_fold": per_fold,
        }),
    };
    head.fold_standardisation();
    head.check().map_err(|e| anyhow::anyhow!("trained head is inconsistent: {e}"))?;
    std::fs::write(&a.out, serde_json::to_string(&head)?).with_context(|| format!("writing {}", a.out.display()))?;
    if let Some(p) = &a.oof {
        let mut csv = String::from("path,label,score,fold\n");
        for (i, e) in examples.iter().enumerate() {
            csv.push_str(&format!("{},{},{},{}\n", e.path.display(), y[i] as u8, oof[i], fold[i]));
        }
        std::fs::write(p, csv)?;
    }
    println!("{}", json!({"out": a.out, "cross_validated": cv}));
    Ok(ExitCode::SUCCESS)
}

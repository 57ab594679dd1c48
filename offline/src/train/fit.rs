//! Fitting the head: standardisation, then dense layers trained by full-batch Adam on
//! class- (and source-) weighted cross-entropy; the folds of cross-validation and the Platt
//! scaling.

use std::collections::BTreeMap;

use cascade_engines::head::Dense;

use crate::manifest::Example;

/// Small deterministic generator (xorshift64*), so a head is reproducible from its seed.
pub(super) struct Rng(u64);

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

/// A head being trained: standardisation, then dense layers ending in one logit.
pub(super) struct Net {
    pub(super) mean: Vec<f32>,
    pub(super) std: Vec<f32>,
    pub(super) layers: Vec<Dense>,
}

pub(super) fn stats(x: &[&Vec<f32>]) -> (Vec<f32>, Vec<f32>) {
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

    pub(super) fn logit(&self, x: &[f32]) -> f32 {
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

pub(super) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// The shape and training of a head (`train-head`'s `--hidden`, `--l2`, `--epochs`, `--seed`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub hidden: usize,
    pub l2: f32,
    pub epochs: usize,
    pub seed: u64,
}

pub(super) fn fit(x: &[&Vec<f32>], y: &[bool], w: &[f32], s: Shape) -> Net {
    let (mean, std) = stats(x);
    let mut rng = Rng(s.seed.max(1));
    let mut net = Net::new(x[0].len(), s.hidden, &mut rng, mean, std);
    net.fit(x, y, w, s.epochs, s.l2);
    net
}

/// Row weights, starting from each row's `prior` (an image's rows share the image's weight):
/// with `by_source` every source first weighs the same; then each class sums to half the rows.
pub(super) fn weights(y: &[bool], sources: &[&str], prior: &[f32], by_source: bool) -> Vec<f32> {
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
pub(super) fn random_folds(examples: &[Example], folds: usize, seed: u64) -> Vec<usize> {
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
pub(crate) fn platt(z: &[f32], y: &[bool], w: &[f32]) -> (f32, f32) {
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

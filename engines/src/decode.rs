//! How a model's raw output becomes results: a classifier's probabilities and top labels
//! (through its head, if any), an embedder's vector, a detector's boxes in the original
//! image's pixels. Shared by every engine that runs a model's graph somewhere and reads its
//! output tensors back: the ONNX worker and the KServe remote.

use crate::classify::{probabilities, score};
use crate::detect::{decode, to_original, ImageOutputs};
use crate::engine::{Detection, Job, JobInput, Output};
use crate::head::Head;
use crate::parallel::pool;
use crate::preprocess::Prepared;
use crate::spec::{ModelKind, ModelSpec};
use crate::EngineError;

/// How a model's raw output becomes results: its spec, its head, the output read.
pub(crate) struct Decode<'a> {
    pub spec: &'a ModelSpec,
    pub head: Option<&'a Head>,
    pub output_name: &'a str,
}

impl Decode<'_> {
    /// Turns the batch's output rows into each job's result; padding rows are dropped.
    pub(crate) fn outputs(
        &self,
        shape: &[i64],
        data: &[f32],
        jobs: &[Job],
        prepared: &[Prepared],
        logits: Option<&(Vec<i64>, Vec<f32>)>,
    ) -> Result<Vec<Output>, EngineError> {
        let spec = &self.spec;
        let n = shape.first().copied().unwrap_or(0).max(0) as usize;
        let per = data.len() / n.max(1);
        if n < jobs.len() || per == 0 {
            return Err(EngineError::Inference {
                model: spec.name.clone(),
                reason: format!("output {} has shape {shape:?} for a batch of {}", self.output_name, jobs.len()),
            });
        }
        let rows = data.chunks_exact(per).take(jobs.len());
        Ok(match spec.kind {
            ModelKind::Classifier => match &self.head {
                Some(h) => each_row(data, per, jobs.len(), pool(), |r| classification(spec, &h.forward(r))),
                None => each_row(data, per, jobs.len(), pool(), |r| classification(spec, r)),
            },
            ModelKind::Embedder => rows.map(|r| Output::Embedding(r.to_vec())).collect(),
            ModelKind::Ocr | ModelKind::Vlm => {
                return Err(EngineError::Inference {
                    model: spec.name.clone(),
                    reason: format!("a {} runs on its own worker", spec.kind.as_str()),
                })
            }
            ModelKind::Detector => {
                let dims = &shape[1..];
                let logit_rows: Vec<Option<(&[f32], &[i64])>> = match logits {
                    Some((ld, ls)) => {
                        let per = ld.iter().skip(1).product::<i64>().max(1) as usize;
                        if ld.len() < 2 || ld[0] < jobs.len() as i64 || ls.len() < per * jobs.len() {
                            return Err(EngineError::Inference {
                                model: spec.name.clone(),
                                reason: format!("logits output has shape {ld:?} for a batch of {}", jobs.len()),
                            });
                        }
                        ls.chunks_exact(per).take(jobs.len()).map(|c| Some((c, &ld[1..]))).collect()
                    }
                    None => vec![None; jobs.len()],
                };
                rows.zip(jobs)
                    .zip(prepared)
                    .zip(logit_rows)
                    .map(|(((r, j), p), l)| {
                        let min_conf = match &j.input {
                            JobInput::Detect(_, c) => *c,
                            JobInput::Image(_) | JobInput::Ask(..) => 0.25,
                        };
                        let img = j.input.image();
                        let o = ImageOutputs { out: r, dims, logits: l };
                        let kept = decode(&o, &spec.detector, &spec.input, spec.labels.len(), min_conf);
                        Output::Detections(
                            kept.into_iter()
                                .map(|(c, conf, b)| Detection {
                                    class_id: c,
                                    label: spec.label(c as usize),
                                    confidence: conf,
                                    bbox: to_original(b, p, img.width(), img.height()),
                                })
                                .collect(),
                        )
                    })
                    .collect()
            }
        })
    }
}

/// Output values from which a batch's rows are turned into answers on the host pool's threads
/// ([`crate::parallel`]), eight rows or more: a 1,000-class model's batch of 64 spent a quarter
/// of a millisecond in its softmaxes on one thread, after the device had finished.
const PARALLEL_VALUES: usize = 1 << 15;

/// `f` of each of the first `n` rows of `per` values of `data`, in order; a big batch's on
/// `pool`'s threads.
fn each_row(
    data: &[f32],
    per: usize,
    n: usize,
    pool: Option<&rayon::ThreadPool>,
    f: impl Fn(&[f32]) -> Output + Sync,
) -> Vec<Output> {
    use rayon::prelude::*;
    match pool {
        Some(pool) if n >= 8 && per * n >= PARALLEL_VALUES => {
            pool.install(|| data.par_chunks_exact(per).take(n).map(&f).collect())
        }
        _ => data.chunks_exact(per).take(n).map(f).collect(),
    }
}

fn classification(spec: &ModelSpec, logits: &[f32]) -> Output {
    let probs = probabilities(logits, spec.activation);
    let s = score(spec, &probs);
    if probs.len() == 1 {
        // one sigmoid output is the probability of the last label (the positive one)
        let label = spec.labels.last().cloned().unwrap_or_else(|| "positive".into());
        return Output::Classification { score: s, top: vec![(label, probs[0])] };
    }
    let top = top_k(&probs, TOP).into_iter().map(|i| (spec.label(i), probs[i])).collect();
    Output::Classification { score: s, top }
}

/// Labels a classification reports, most probable first.
const TOP: usize = 5;

/// The indices of the `k` largest values, largest first, ties in index order (what a stable
/// sort of every index would give), in one pass that keeps the best `k` so far: a 1,000-class
/// model's batch of 64 spent milliseconds sorting every row in full, and selection still
/// allocated and shuffled an index per class.
fn top_k(probs: &[f32], k: usize) -> Vec<usize> {
    // `a` goes before `b`: larger, or equal and earlier (the order a stable sort gives)
    let before = |a: usize, b: usize| probs[a].total_cmp(&probs[b]).then(b.cmp(&a)).is_gt();
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    // once `k` are kept, the value a later index must exceed (an equal one comes after them)
    let mut worst: Option<f32> = None;
    for (i, p) in probs.iter().enumerate() {
        // a plain comparison first: below the fifth in value is below it in the total order
        if worst.is_some_and(|w| *p < w || !p.total_cmp(&w).is_gt()) {
            continue;
        }
        let at = best.partition_point(|&b| before(b, i));
        best.insert(at, i);
        best.truncate(k);
        if best.len() == k {
            worst = best.last().map(|&w| probs[w]);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A big batch's rows answered on a pool's threads come back as one thread gives them, in
    /// order, and only the first `n` rows are answered.
    #[test]
    fn rows_on_a_pool_are_answered_in_order() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("pool");
        let (per, n) = (1000, 64);
        let data: Vec<f32> = (0..per * (n + 2)).map(|i| ((i * 7919) % 1013) as f32 / 97.0).collect();
        let f = |r: &[f32]| Output::Embedding(vec![r.iter().sum(), r[0]]);
        let one = each_row(&data, per, n, None, f);
        let many = each_row(&data, per, n, Some(&pool), f);
        assert_eq!(one.len(), n);
        let v = |o: &Output| match o {
            Output::Embedding(e) => e.clone(),
            _ => unreachable!("made as embeddings"),
        };
        assert!(one.iter().zip(&many).all(|(a, b)| v(a) == v(b)));
        assert_eq!(v(&many[5])[1], data[5 * per], "row 5 is the sixth row");
    }

    #[test]
    fn the_top_labels_are_those_a_full_stable_sort_gives() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for len in [1usize, 2, 5, 6, 17, 1000] {
            // values from a small set, so that ties are common
            let probs: Vec<f32> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 7) as f32 / 7.0
                })
                .collect();
            let mut all: Vec<usize> = (0..len).collect();
            all.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            all.truncate(TOP);
            assert_eq!(top_k(&probs, TOP), all, "{len} values");
        }
    }
}

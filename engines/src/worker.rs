//! One model session on its own thread, fed by the model's queue. The worker takes the first
//! waiting job, gathers more until the batch is full, `max_delay_us` has passed or the earliest
//! deadline in hand would be missed, and runs them as one batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ort::session::Session;
use ort::value::TensorRef;

use crate::classify::{probabilities, score};
use crate::detect::{decode_yolox, nms, to_original, Detection};
use crate::models::ModelStats;
use crate::preprocess::{prepare, Prepared};
use crate::spec::{ModelKind, ModelSpec};
use crate::{EngineError, Image};

/// What a job asks of its model.
#[derive(Debug, Clone)]
pub enum JobInput {
    Image(Image),
    /// Detection keeps boxes at or above this confidence.
    Detect(Image, f32),
}

impl JobInput {
    pub(crate) fn image(&self) -> &Image {
        match self {
            JobInput::Image(i) | JobInput::Detect(i, _) => i,
        }
    }
}

pub struct Job {
    pub input: JobInput,
    pub deadline: Instant,
    pub reply: Sender<Reply>,
    pub enqueued: Instant,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The model's score and its top labels with probabilities.
    Classification { score: f32, top: Vec<(String, f32)> },
    Embedding(Vec<f32>),
    Detections(Vec<Detection>),
    TextLines(Vec<crate::ocr::TextLine>),
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub output: Result<Output, EngineError>,
    /// Time of the run that served this job (shared by the batch).
    pub compute: Duration,
    pub queued: Duration,
    pub batch: usize,
}

pub(crate) struct Worker {
    pub session: Session,
    pub head: Option<Arc<crate::head::Head>>,
    pub spec: Arc<ModelSpec>,
    pub input_name: String,
    pub output_name: String,
    pub stats: Arc<ModelStats>,
}

impl Worker {
    pub fn run(mut self, rx: Receiver<Job>) {
        let max_delay = Duration::from_micros(self.spec.max_delay_us);
        let elems = 3 * (self.spec.input.width * self.spec.input.height) as usize;
        let mut buf: Vec<f32> = Vec::with_capacity(elems * self.spec.max_batch);
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let mut until = Instant::now() + max_delay;
            while batch.len() < self.spec.max_batch {
                until = until.min(batch.iter().map(|j| j.deadline).min().unwrap_or(until));
                match rx.recv_deadline(until) {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.stats.queued.fetch_sub(batch.len() as i64, Ordering::Relaxed);
            let now = Instant::now();
            let (live, late): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.deadline > now);
            for j in late {
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
                let _ = j.reply.send(Reply {
                    output: Err(EngineError::DeadlineExceeded),
                    compute: Duration::ZERO,
                    queued: now - j.enqueued,
                    batch: 0,
                });
            }
            if !live.is_empty() {
                self.run_batch(live, &mut buf, elems);
            }
        }
    }

    fn run_batch(&mut self, jobs: Vec<Job>, buf: &mut Vec<f32>, elems: usize) {
        let n = jobs.len();
        // On CUDA every new input shape costs (cuDNN algorithm choice, arena growth), and a
        // dynamic batcher makes every size from 1 to max_batch: round the batch up to a power
        // of two (zero rows, outputs dropped) so only a handful of shapes ever run.
        let run_n = match self.spec.device {
            crate::spec::Device::Cuda(_) => n.next_power_of_two().min(self.spec.max_batch.max(n)),
            crate::spec::Device::Cpu => n,
        };
        // model time counts the model's own pre-processing as well as the session run
        let started = Instant::now();
        buf.clear();
        buf.resize(elems * run_n, 0.0);
        let prepared: Vec<Prepared> = jobs
            .iter()
            .zip(buf.chunks_exact_mut(elems))
            .map(|(j, slot)| prepare(j.input.image(), &self.spec.input, slot))
            .collect();
        let result = self.infer(buf, run_n, &jobs, &prepared);
        let compute = started.elapsed();
        self.stats.record(n, compute);
        match result {
            Ok(outputs) => {
                for (j, o) in jobs.into_iter().zip(outputs) {
                    let queued = started - j.enqueued;
                    let _ = j.reply.send(Reply { output: Ok(o), compute, queued, batch: n });
                }
            }
            Err(e) => {
                self.stats.failures.fetch_add(n as u64, Ordering::Relaxed);
                for j in jobs {
                    let queued = started - j.enqueued;
                    let _ = j.reply.send(Reply { output: Err(e.clone()), compute, queued, batch: n });
                }
            }
        }
    }

    fn infer(&mut self, buf: &[f32], n: usize, jobs: &[Job], prepared: &[Prepared]) -> Result<Vec<Output>, EngineError> {
        let spec = self.spec.clone();
        let fail = |e: ort::Error| EngineError::Inference { model: spec.name.clone(), reason: e.to_string() };
        let (h, w) = (spec.input.height as usize, spec.input.width as usize);
        let tensor = TensorRef::from_array_view(([n, 3, h, w], buf)).map_err(fail)?;
        let outputs = self.session.run(ort::inputs![self.input_name.as_str() => tensor]).map_err(fail)?;
        let (shape, data) = outputs[self.output_name.as_str()].try_extract_tensor::<f32>().map_err(fail)?;
        let per = data.len() / n.max(1);
        if shape.first().copied() != Some(n as i64) || per == 0 {
            return Err(EngineError::Inference {
                model: spec.name.clone(),
                reason: format!("output {} has shape {shape:?} for a batch of {n}", self.output_name),
            });
        }
        // padded rows (a CUDA batch rounded up) are dropped here
        let rows = data.chunks_exact(per).take(jobs.len());
        Ok(match spec.kind {
            ModelKind::Classifier => match &self.head {
                Some(h) => rows.map(|r| classification(&spec, &h.forward(r))).collect(),
                None => rows.map(|r| classification(&spec, r)).collect(),
            },
            ModelKind::Embedder => rows.map(|r| Output::Embedding(r.to_vec())).collect(),
            ModelKind::Ocr => return Err(EngineError::Inference { model: spec.name.clone(), reason: "OCR runs on its own worker".into() }),
            ModelKind::Detector => {
                let width = shape.last().copied().unwrap_or(0) as usize;
                rows.zip(jobs).zip(prepared)
                    .map(|((r, j), p)| {
                        let min_conf = match &j.input {
                            JobInput::Detect(_, c) => *c,
                            JobInput::Image(_) => 0.25,
                        };
                        let img = j.input.image();
                        let raw = decode_yolox(r, width, &spec.detector, &spec.input, min_conf);
                        let kept = nms(raw, spec.detector.nms_iou, spec.detector.max_detections);
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

fn classification(spec: &ModelSpec, logits: &[f32]) -> Output {
    let probs = probabilities(logits, spec.activation);
    let s = score(spec, &probs);
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let top = idx.into_iter().take(5).map(|i| (spec.label(i), probs[i])).collect();
    Output::Classification { score: s, top }
}

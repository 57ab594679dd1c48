//! One model session on its own thread, fed by the model's queue, batching what waits there.
//! On CUDA its inputs are prepared on the device (`gpu`), elsewhere on the CPU.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ort::environment::Environment;
use ort::session::Session;

use crate::classify::{probabilities, score};
use crate::detect::{check_layout, decode, to_original, ultralytics_names, ImageOutputs};
use crate::engine::{Detection, Engine, Job, JobInput, ModelStats, Output, Reply};
use crate::gpu::{GpuInput, GpuRunError};
use crate::precision::{input_value, output_f32, Precision};
use crate::preprocess::{prepare, Prepared};
use crate::session::{check_io, output_dim, session_on};
use crate::spec::{Device, ModelKind, ModelSpec, Preprocess};
use crate::{EngineError, LoadError};

/// A session run's output: its shape, its values, and how each input image maps back; for a
/// two-output DETR, the class scores' shape and values too.
pub(crate) type Forward = (Vec<i64>, Vec<f32>, Vec<Prepared>, Option<(Vec<i64>, Vec<f32>)>);

/// Labels a detector found in its file's metadata (Ultralytics `names`), reported to the
/// model set so that the host can check class names against them.
pub(crate) type FoundLabels = Arc<std::sync::OnceLock<Vec<String>>>;

pub(crate) struct Worker {
    /// Set when the session runs on CUDA and its inputs are prepared on the device. Declared
    /// before `session` so its bindings and tensors (the session's allocator's) drop first.
    gpu: Option<GpuInput>,
    session: Session,
    head: Option<Arc<crate::head::Head>>,
    spec: Arc<ModelSpec>,
    input_name: String,
    output_name: String,
    /// A two-output DETR's class-score output.
    logits_name: Option<String>,
    stats: Arc<ModelStats>,
    /// The input's element type: f32, or f16 for a converted model.
    precision: Precision,
    buf: Vec<f32>,
    half: Vec<half::f16>,
    shape: ShapeRule,
}

/// On CUDA: the batch shape in use and when a batch last needed it (see `rows_for`).
pub(crate) struct ShapeRule {
    rows: usize,
    since: Instant,
}

impl ShapeRule {
    pub fn new() -> ShapeRule {
        ShapeRule { rows: 0, since: Instant::now() }
    }

    /// The input rows a batch of `n` runs as. On CUDA every new input shape costs (cuDNN
    /// algorithm choice, arena growth), and a dynamic batcher makes every size from 1 to
    /// max_batch: round the batch up to a power of two (padding rows, outputs dropped) so only
    /// a handful of shapes ever run.
    pub fn rows_for(&mut self, n: usize, spec: &ModelSpec) -> usize {
        match spec.device {
            Device::Cuda(_) => {
                let want = Self::padded(n, spec);
                let now = Instant::now();
                // a smaller batch runs padded to the shape in use while that shape was needed
                // recently; a larger one (or a quiet spell) moves to its own shape
                if want >= self.rows || now.duration_since(self.since) > sticky_shape() {
                    (self.rows, self.since) = (want, now);
                    return want;
                }
                self.rows
            }
            Device::Cpu => n,
        }
    }

    /// A batch of `n` rounded up to a power of two, at most `max_batch` (a batch is never cut).
    fn padded(n: usize, spec: &ModelSpec) -> usize {
        n.next_power_of_two().min(spec.max_batch.max(n))
    }

    /// Every shape `rows_for` can give for `spec`.
    pub fn all(spec: &ModelSpec) -> std::collections::BTreeSet<usize> {
        (1..=spec.max_batch).map(|n| Self::padded(n, spec)).collect()
    }
}

/// How long a CUDA model keeps a larger batch shape after the last batch that needed it.
/// ONNX Runtime's CUDA kernels re-plan on the CPU whenever the input shape differs from the
/// previous run's (measured on an H200: 0.1-0.6 s for EfficientNet-Lite0, against 2 ms for
/// the run itself), and under load batch sizes straddle powers of two, so alternating shapes
/// made every run pay it. Padding a batch to the shape in use costs far less.
fn sticky_shape() -> Duration {
    static MS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    Duration::from_millis(
        *MS.get_or_init(|| std::env::var("CASCADE_GPU_STICKY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)),
    )
}

impl Worker {
    /// Opens the model's session, checks its inputs and outputs against the registry (and the
    /// head), sets up GPU pre-processing on CUDA, and on CUDA warms every batch shape it will
    /// run so the first requests pay no set-up.
    pub fn open(
        env: &Environment,
        spec: &Arc<ModelSpec>,
        head: Option<Arc<crate::head::Head>>,
        stats: &Arc<ModelStats>,
        found_labels: &FoundLabels,
    ) -> Result<Worker, LoadError> {
        let (session, on) = session_on(env, spec, &spec.file)?;
        let (input_name, output_name) = check_io(&session, spec)?;
        let spec = &detector_labels(&session, spec, found_labels)?;
        if spec.kind == ModelKind::Detector {
            let outs: Vec<(String, Vec<i64>)> = session
                .outputs()
                .iter()
                .map(|o| (o.name().to_string(), o.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default()))
                .collect();
            check_layout(&spec.detector, &outs, &output_name, spec.labels.len())
                .map_err(|reason| LoadError::Spec { model: spec.name.clone(), reason })?;
        }
        let logits_name = spec.detector.logits.clone().filter(|_| spec.kind == ModelKind::Detector);
        let precision = Precision::of_input(&session, spec)?;
        if precision == Precision::F16 {
            tracing::info!(model = %spec.name, device = %on, "fp16 model: inputs are prepared as f16, outputs read back as f32");
        }
        if let (Some(h), Some(dim)) = (&head, output_dim(&session, &output_name)) {
            if dim != h.input_dim {
                return Err(LoadError::Spec {
                    model: spec.name.clone(),
                    reason: format!("head expects {} features; output {output_name} has {dim}", h.input_dim),
                });
            }
        }
        let gpu = match (on, spec.preprocess) {
            // the device path binds one output; a two-output DETR reads both from a plain run
            (Device::Cuda(_), _) if logits_name.is_some() => {
                tracing::info!(model = %spec.name, "two-output detector: inputs are prepared on the CPU");
                None
            }
            (Device::Cuda(id), Preprocess::Auto | Preprocess::Gpu) => {
                match GpuInput::new(&session, id, spec, precision, &input_name, &output_name) {
                    Ok(g) => Some(g),
                    Err(reason) if spec.preprocess == Preprocess::Gpu => {
                        return Err(LoadError::Spec {
                            model: spec.name.clone(),
                            reason: format!("GPU pre-processing: {reason}"),
                        })
                    }
                    Err(reason) => {
                        tracing::warn!(model = %spec.name, %reason, "GPU pre-processing unavailable; preparing inputs on the CPU");
                        stats.prep_fallbacks.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            }
            _ => None,
        };
        let mut w = Worker {
            session,
            head,
            spec: spec.clone(),
            input_name,
            output_name,
            logits_name,
            stats: stats.clone(),
            gpu,
            precision,
            buf: Vec::new(),
            half: Vec::new(),
            shape: ShapeRule::new(),
        };
        if matches!(on, Device::Cuda(_)) {
            w.warm_up()?;
        }
        Ok(w)
    }

    fn warm_up(&mut self) -> Result<(), LoadError> {
        let img =
            image::RgbImage::from_pixel(self.spec.input.width, self.spec.input.height, image::Rgb([128, 128, 128]));
        for rows in ShapeRule::all(&self.spec) {
            let imgs = vec![&img; rows];
            self.forward(&imgs, rows).map_err(|e| LoadError::Spec {
                model: self.spec.name.clone(),
                reason: format!("warm-up run of batch {rows}: {e}"),
            })?;
        }
        Ok(())
    }

    /// Makes and warms every shape's input in `slot` of the device inputs, as `warm_up` did for
    /// slot 0 (for a pipelined worker's second slot). Needs the GPU pre-processing still here.
    pub(crate) fn warm_slot(&mut self, slot: usize) -> Result<(), String> {
        let img =
            image::RgbImage::from_pixel(self.spec.input.width, self.spec.input.height, image::Rgb([128, 128, 128]));
        let gpu = self.gpu.as_mut().ok_or("no GPU pre-processing")?;
        let err = GpuRunError::reason;
        for rows in ShapeRule::all(&self.spec) {
            let ptr = gpu.input_ptr(&mut self.session, rows, slot).map_err(err)?;
            let imgs = vec![&img; rows];
            gpu.prepare(&imgs, ptr).map_err(err)?;
            gpu.run_prepared(&mut self.session, rows, slot, rows, 0).map_err(err)?;
        }
        Ok(())
    }

    /// The device address of every warmed input (by rows and slot), for a pipelined worker's
    /// staging side.
    pub(crate) fn input_ptrs(
        &mut self,
        slots: usize,
    ) -> Result<std::collections::HashMap<(usize, usize), u64>, String> {
        let gpu = self.gpu.as_mut().ok_or("no GPU pre-processing")?;
        let mut out = std::collections::HashMap::new();
        for rows in ShapeRule::all(&self.spec) {
            for slot in 0..slots {
                let ptr = gpu.input_ptr(&mut self.session, rows, slot).map_err(GpuRunError::reason)?;
                out.insert((rows, slot), ptr);
            }
        }
        Ok(out)
    }

    fn run_batch(&mut self, jobs: Vec<Job>) {
        let n = jobs.len();
        let rows = self.shape.rows_for(n, &self.spec);
        // model time counts the model's own pre-processing as well as the session run
        let started = Instant::now();
        let images: Vec<&image::RgbImage> = jobs.iter().map(|j| &**j.input.image()).collect();
        let result = self.forward(&images, rows);
        drop(images);
        self.finish(jobs, result, started);
    }

    /// Decodes a run's output into each job's result and replies.
    pub(crate) fn finish(&self, jobs: Vec<Job>, forward: Result<Forward, EngineError>, started: Instant) {
        let result = forward.and_then(|(shape, data, prepared, logits)| {
            let how = Decode { spec: &self.spec, head: self.head.as_deref(), output_name: &self.output_name };
            how.outputs(&shape, &data, &jobs, &prepared, logits.as_ref())
        });
        reply_all(jobs, result, started, &self.stats);
    }

    /// Runs the session on the input already prepared in `slot` (a pipelined worker's staging
    /// side wrote it): the output's shape and values.
    pub(crate) fn run_slot(
        &mut self,
        rows: usize,
        slot: usize,
        n: usize,
        prep_us: u64,
    ) -> Result<(Vec<i64>, Vec<f32>), EngineError> {
        let gpu = self.gpu.as_mut().ok_or_else(|| EngineError::Inference {
            model: self.spec.name.clone(),
            reason: "no GPU input to run".into(),
        })?;
        gpu.run_prepared(&mut self.session, rows, slot, n, prep_us)
            .map_err(|e| EngineError::Inference { model: self.spec.name.clone(), reason: e.reason() })
    }

    pub(crate) fn spec_name(&self) -> &str {
        &self.spec.name
    }

    pub(crate) fn stats(&self) -> &ModelStats {
        &self.stats
    }

    pub(crate) fn gpu_mut(&mut self) -> Option<&mut GpuInput> {
        self.gpu.as_mut()
    }

    /// Prepares `images` as a `rows`-row input (on the GPU when set up, else on the CPU) and
    /// runs the session: the output's shape and values, and how each image maps back.
    fn forward(&mut self, images: &[&image::RgbImage], rows: usize) -> Result<Forward, EngineError> {
        let name = &self.spec.name;
        if let Some(g) = &mut self.gpu {
            match g.run(&mut self.session, images, rows) {
                Ok((shape, data, prepared)) => return Ok((shape, data, prepared, None)),
                Err(GpuRunError::Run(reason)) => return Err(EngineError::Inference { model: name.clone(), reason }),
                Err(GpuRunError::Prep(reason)) => {
                    // e.g. a batch of huge images beyond the staging limit: this batch only
                    tracing::warn!(model = %name, %reason, "GPU pre-processing refused a batch; preparing it on the CPU");
                    self.stats.prep_fallbacks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.forward_cpu(images, rows)
    }

    /// Prepares `images` on the CPU as a `rows`-row input and runs the session on it.
    pub(crate) fn forward_cpu(&mut self, images: &[&image::RgbImage], rows: usize) -> Result<Forward, EngineError> {
        let name = &self.spec.name;
        let fail = |e: ort::Error| EngineError::Inference { model: name.clone(), reason: e.to_string() };
        let (h, w) = (self.spec.input.height as usize, self.spec.input.width as usize);
        let elems = 3 * h * w;
        self.buf.clear();
        self.buf.resize(elems * rows, 0.0);
        let prepared: Vec<Prepared> = images
            .iter()
            .zip(self.buf.chunks_exact_mut(elems))
            .map(|(img, slot)| prepare(img, &self.spec.input, slot))
            .collect();
        let input = input_value(self.precision, [rows, 3, h, w], &self.buf, &mut self.half).map_err(fail)?;
        let outputs = self.session.run(ort::inputs![self.input_name.as_str() => input]).map_err(fail)?;
        let (shape, data) = output_f32(&outputs[self.output_name.as_str()]).map_err(fail)?;
        let logits = match &self.logits_name {
            Some(l) => Some(output_f32(&outputs[l.as_str()]).map_err(fail)?),
            None => None,
        };
        Ok((shape, data, prepared, logits))
    }
}

/// Sends each job of a batch its result (or the batch's error) and counts the run.
pub(crate) fn reply_all(
    jobs: Vec<Job>,
    result: Result<Vec<Output>, EngineError>,
    started: Instant,
    stats: &ModelStats,
) {
    let (n, compute) = (jobs.len(), started.elapsed());
    stats.record(n, compute);
    match result {
        Ok(outputs) => {
            for (j, o) in jobs.into_iter().zip(outputs) {
                let queued = started - j.enqueued;
                let _ = j.reply.send(Reply { output: Ok(o), compute, queued, batch: n });
            }
        }
        Err(e) => {
            stats.failures.fetch_add(n as u64, Ordering::Relaxed);
            for j in jobs {
                let queued = started - j.enqueued;
                let _ = j.reply.send(Reply { output: Err(e.clone()), compute, queued, batch: n });
            }
        }
    }
}

/// Takes `first` and gathers more from `rx` until the batch is full, `max_delay_us` has passed
/// or the earliest deadline in hand would be missed; answers the jobs already late; returns
/// the live ones.
pub(crate) fn gather(first: Job, rx: &Receiver<Job>, spec: &ModelSpec, stats: &ModelStats) -> Vec<Job> {
    let max_delay = Duration::from_micros(spec.max_delay_us);
    let mut batch = vec![first];
    let mut until = Instant::now() + max_delay;
    while batch.len() < spec.max_batch {
        until = until.min(batch.iter().map(|j| j.deadline).min().unwrap_or(until));
        match rx.recv_deadline(until) {
            Ok(j) => batch.push(j),
            Err(_) => break,
        }
    }
    settle(batch, stats)
}

/// A gathered batch counted off the queue: the jobs already late are answered, the live ones
/// returned.
pub(crate) fn settle(batch: Vec<Job>, stats: &ModelStats) -> Vec<Job> {
    stats.queued.fetch_sub(batch.len() as i64, Ordering::Relaxed);
    let now = Instant::now();
    let (live, late): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.deadline > now);
    for j in late {
        expire(j, stats, now);
    }
    live
}

/// `gather` for engines that serve jobs one at a time (OCR, a VLM): the job counted off the
/// queue, or answered at once when its deadline has passed.
pub(crate) fn take_one(job: Job, stats: &ModelStats) -> Option<Job> {
    stats.queued.fetch_sub(1, Ordering::Relaxed);
    let now = Instant::now();
    if job.deadline > now {
        return Some(job);
    }
    expire(job, stats, now);
    None
}

/// Answers a job that waited past its deadline without running it.
pub(crate) fn expire(j: Job, stats: &ModelStats, now: Instant) {
    stats.expired.fetch_add(1, Ordering::Relaxed);
    let _ = j.reply.send(Reply {
        output: Err(EngineError::DeadlineExceeded),
        compute: Duration::ZERO,
        queued: now - j.enqueued,
        batch: 0,
    });
}

/// How a model's raw output becomes results: its spec, its head, the output read.
pub(crate) struct Decode<'a> {
    pub spec: &'a ModelSpec,
    pub head: Option<&'a crate::head::Head>,
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
                Some(h) => rows.map(|r| classification(spec, &h.forward(r))).collect(),
                None => rows.map(|r| classification(spec, r)).collect(),
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

impl Engine for Worker {
    /// Takes `first` and what the queue holds with it (`gather`) and runs them as one batch.
    fn serve(&mut self, first: Job, rx: &Receiver<Job>) {
        let live = gather(first, rx, &self.spec, &self.stats);
        if !live.is_empty() {
            self.run_batch(live);
        }
    }
}

/// A detector without labels in the registry takes them from its file's Ultralytics `names`
/// metadata when there is one (reported through `found`).
fn detector_labels(session: &Session, spec: &Arc<ModelSpec>, found: &FoundLabels) -> Result<Arc<ModelSpec>, LoadError> {
    if spec.kind != ModelKind::Detector || !spec.labels.is_empty() {
        return Ok(spec.clone());
    }
    let Some(meta) = session.metadata().ok().and_then(|m| m.custom("names")) else {
        return Ok(spec.clone());
    };
    let names = ultralytics_names(&meta).ok_or_else(|| LoadError::Spec {
        model: spec.name.clone(),
        reason: format!("metadata `names` is not a class list: {}", meta.chars().take(80).collect::<String>()),
    })?;
    let _ = found.set(names.clone());
    let mut s = (**spec).clone();
    s.labels = names;
    Ok(Arc::new(s))
}

fn classification(spec: &ModelSpec, logits: &[f32]) -> Output {
    let probs = probabilities(logits, spec.activation);
    let s = score(spec, &probs);
    if probs.len() == 1 {
        // one sigmoid output is the probability of the last label (the positive one)
        let label = spec.labels.last().cloned().unwrap_or_else(|| "positive".into());
        return Output::Classification { score: s, top: vec![(label, probs[0])] };
    }
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let top = idx.into_iter().take(5).map(|i| (spec.label(i), probs[i])).collect();
    Output::Classification { score: s, top }
}

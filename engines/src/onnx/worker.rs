//! The ONNX worker: one model session on its own thread, fed by the model's queue, batching what waits there.
//! On CUDA its inputs are prepared on the device (`gpu`), elsewhere on the CPU.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use cudarc::driver::CudaStream;
use ort::environment::Environment;
use ort::session::{RunOptions, Session};

use crate::decode::Decode;
use crate::detect::{check_layout, ultralytics_names};
use crate::engine::queue::{gather, reply_all};
use crate::engine::{Engine, Job, ModelStats};
use crate::gpu::{GpuInput, GpuRunError, SlotRun};
use crate::head::Head;
use crate::precision::{input_value, output_f32, Precision};
use crate::preprocess::{prepare, Prepared};
use crate::session::{check_io, output_dim, session_on, session_with_graphs};
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
    /// With CUDA graphs, the stream the session computes on (`session_with_graphs`): declared
    /// after `session`, which uses it until dropped.
    _stream: Option<Arc<CudaStream>>,
    head: Option<Arc<Head>>,
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

/// Turns a batch's raw outputs into each job's result and replies (a classifier's
/// probabilities and top labels through its head, a detector's boxes…): the worker's own last
/// step, or a pipelined worker's finishing thread's.
pub(crate) struct Finisher {
    spec: Arc<ModelSpec>,
    head: Option<Arc<Head>>,
    output_name: String,
    stats: Arc<ModelStats>,
}

impl Finisher {
    pub(crate) fn new(
        spec: Arc<ModelSpec>,
        head: Option<Arc<Head>>,
        output_name: String,
        stats: Arc<ModelStats>,
    ) -> Finisher {
        Finisher { spec, head, output_name, stats }
    }

    pub(crate) fn finish(&self, jobs: Vec<Job>, forward: Result<Forward, EngineError>, started: Instant) {
        let how = Decode { spec: &self.spec, head: self.head.as_deref(), output_name: &self.output_name };
        reply(&how, &self.stats, jobs, forward, started);
    }

    pub(crate) fn model(&self) -> &str {
        &self.spec.name
    }

    /// Counts `n` requests whose batch failed outside `finish` (it panicked).
    pub(crate) fn count_failures(&self, n: usize) {
        self.stats.failures.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Decodes a run's output (`how`) into each job's result and replies: the one last step of the
/// worker and of a pipelined worker's finishing thread.
fn reply(how: &Decode, stats: &ModelStats, jobs: Vec<Job>, forward: Result<Forward, EngineError>, started: Instant) {
    let result = forward
        .and_then(|(shape, data, prepared, logits)| how.outputs(&shape, &data, &jobs, &prepared, logits.as_ref()));
    reply_all(jobs, result, started, stats);
}

/// On CUDA: the batch shape in use and when a batch last needed it (see `rows_for`).
pub(crate) struct ShapeRule {
    rows: usize,
    since: Instant,
}

impl ShapeRule {
    pub(super) fn new() -> ShapeRule {
        ShapeRule { rows: 0, since: Instant::now() }
    }

    /// The input rows a batch of `n` runs as. On CUDA every new input shape costs (cuDNN
    /// algorithm choice, arena growth), and a dynamic batcher makes every size from 1 to
    /// max_batch: round the batch up to a power of two (padding rows, outputs dropped) so only
    /// a handful of shapes ever run.
    pub(super) fn rows_for(&mut self, n: usize, spec: &ModelSpec) -> usize {
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
    pub(super) fn all(spec: &ModelSpec) -> std::collections::BTreeSet<usize> {
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
    pub(super) fn open(
        env: &Environment,
        spec: &Arc<ModelSpec>,
        head: Option<Arc<Head>>,
        stats: &Arc<ModelStats>,
        found_labels: &FoundLabels,
    ) -> Result<Worker, LoadError> {
        if !spec.cuda.graph {
            return Self::open_with(env, spec, head, stats, found_labels, false);
        }
        match Self::open_with(env, spec, head.clone(), stats, found_labels, true) {
            Err(e) if !matches!(e, LoadError::Missing { .. }) => {
                // refused by ONNX Runtime, a capture that fails, or no GPU pre-processing to bind:
                // normal runs
                tracing::warn!(model = %spec.name, error = %e, "CUDA graphs did not work for this model; it runs without them");
                Self::open_with(env, spec, head, stats, found_labels, false)
            }
            r => r,
        }
    }

    fn open_with(
        env: &Environment,
        spec: &Arc<ModelSpec>,
        head: Option<Arc<Head>>,
        stats: &Arc<ModelStats>,
        found_labels: &FoundLabels,
        graphs: bool,
    ) -> Result<Worker, LoadError> {
        // the stream first: locals drop in reverse, and the session uses its stream until dropped
        let (stream, session, on) = if graphs {
            let (s, on, stream) = session_with_graphs(env, spec, &spec.file)?;
            (stream, s, on)
        } else {
            let (s, on) = session_on(env, spec, &spec.file)?;
            (None, s, on)
        };
        let graph = stream.is_some();
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
            // the kernel resizes bilinearly: another filter is prepared on the CPU, as asked
            (Device::Cuda(_), Preprocess::Auto) if spec.input.resample != crate::spec::Resample::Bilinear => {
                tracing::info!(model = %spec.name, resample = ?spec.input.resample, "inputs are prepared on the CPU (the GPU kernel resizes bilinearly)");
                None
            }
            (Device::Cuda(id), Preprocess::Auto | Preprocess::Gpu) => {
                match GpuInput::new(&session, id, spec, precision, &input_name, &output_name, stream.clone()) {
                    Ok(g) => Some(g),
                    // e.g. an output whose width is unknown: the caller opens the model again
                    // without graphs (and says why), where the pre-processing may still work
                    Err(reason) if graph => return Err(LoadError::Spec { model: spec.name.clone(), reason }),
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
        if graph && gpu.is_none() {
            return Err(LoadError::Spec {
                model: spec.name.clone(),
                reason: "CUDA graphs need the GPU pre-processing (bound device inputs)".into(),
            });
        }
        if graph {
            tracing::info!(model = %spec.name, "CUDA graphs: one per batch shape and input slot, captured at warm-up");
        }
        let mut w = Worker {
            session,
            _stream: stream,
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

    /// Runs every batch shape once, or with CUDA graphs on a worker that runs its own batches
    /// three times: ONNX Runtime's CUDA provider captures a thread's graphs after two ordinary
    /// runs on that thread (other providers count per graph), and a capture is best made here,
    /// at load. A pipelined worker's graphs are captured by its runner thread instead
    /// (`GpuInput::capture`), the one that replays them.
    fn warm_up(&mut self) -> Result<(), LoadError> {
        let img =
            image::RgbImage::from_pixel(self.spec.input.width, self.spec.input.height, image::Rgb([128, 128, 128]));
        for rows in ShapeRule::all(&self.spec) {
            let imgs = vec![&img; rows];
            for _ in 0..self.warm_runs() {
                self.forward(&imgs, rows).map_err(|e| LoadError::Spec {
                    model: self.spec.name.clone(),
                    reason: format!("warm-up run of batch {rows}: {e}"),
                })?;
            }
        }
        Ok(())
    }

    /// Runs per shape at warm-up (see `warm_up`).
    fn warm_runs(&self) -> usize {
        if self.gpu.as_ref().is_some_and(GpuInput::graphed) && !self.spec.cuda.pipeline {
            3
        } else {
            1
        }
    }

    /// Captures, on the calling thread, the CUDA graphs of every shape of each of `slots` (a
    /// pipelined worker's runner, once it owns the session); nothing without graphs.
    pub(crate) fn capture(&mut self, slots: usize) -> Result<(), String> {
        match &mut self.gpu {
            Some(g) if g.graphed() => g.capture(&mut self.session, slots),
            _ => Ok(()),
        }
    }

    /// Whether the session replays CUDA graphs.
    pub(crate) fn graphed(&self) -> bool {
        self.gpu.as_ref().is_some_and(GpuInput::graphed)
    }

    /// Makes and warms every shape's input in `slot` of the device inputs, as `warm_up` did for
    /// slot 0 (for a pipelined worker's second slot). Needs the GPU pre-processing still here.
    pub(crate) fn warm_slot(&mut self, slot: usize) -> Result<(), String> {
        let img =
            image::RgbImage::from_pixel(self.spec.input.width, self.spec.input.height, image::Rgb([128, 128, 128]));
        let runs = self.warm_runs();
        let gpu = self.gpu.as_mut().ok_or("no GPU pre-processing")?;
        let err = GpuRunError::reason;
        for rows in ShapeRule::all(&self.spec) {
            let ptr = gpu.input_ptr(&mut self.session, rows, slot).map_err(err)?;
            let imgs = vec![&img; rows];
            gpu.prepare(&imgs, ptr).map_err(err)?;
            for _ in 0..runs {
                gpu.run_prepared(&mut self.session, rows, slot, rows, 0).map_err(err)?;
            }
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
        let how = Decode { spec: &self.spec, head: self.head.as_deref(), output_name: &self.output_name };
        reply(&how, &self.stats, jobs, forward, started);
    }

    /// What turns this worker's outputs into replies, for another thread to do it.
    pub(crate) fn finisher(&self) -> Finisher {
        Finisher::new(self.spec.clone(), self.head.clone(), self.output_name.clone(), self.stats.clone())
    }

    /// Runs the session on the input a pipelined worker's staging side is writing into `slot`
    /// (written once `written` is reached): its output, or with CUDA graphs the run launched and
    /// not waited for.
    pub(crate) fn launch_slot(
        &mut self,
        rows: usize,
        slot: usize,
        n: usize,
        prep_us: u64,
        written: &cudarc::driver::CudaEvent,
    ) -> Result<SlotRun, EngineError> {
        let gpu = self.gpu.as_mut().ok_or_else(|| EngineError::Inference {
            model: self.spec.name.clone(),
            reason: "no GPU input to run".into(),
        })?;
        gpu.launch_prepared(&mut self.session, rows, slot, n, prep_us, written)
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
        // with CUDA graphs an ordinary run: without a graph id ONNX Runtime would capture or
        // replay graph 0, bound to this run's addresses
        let plain = if self.graphed() {
            let mut opts = RunOptions::new().map_err(fail)?;
            opts.set("gpu_graph_id", "-1").map_err(fail)?;
            Some(opts)
        } else {
            None
        };
        let input = input_value(self.precision, [rows, 3, h, w], &self.buf, &mut self.half).map_err(fail)?;
        let inputs = ort::inputs![self.input_name.as_str() => input];
        let outputs = match &plain {
            Some(opts) => self.session.run_with_options(inputs, opts),
            None => self.session.run(inputs),
        }
        .map_err(fail)?;
        let (shape, data) = output_f32(&outputs[self.output_name.as_str()]).map_err(fail)?;
        let logits = match &self.logits_name {
            Some(l) => Some(output_f32(&outputs[l.as_str()]).map_err(fail)?),
            None => None,
        };
        Ok((shape, data, prepared, logits))
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

    /// A CPU session runs on whichever thread calls it; one prepared on the device does not.
    fn run_now(&mut self, job: Job) -> Result<(), Job> {
        if self.gpu.is_some() || self.spec.device != Device::Cpu {
            return Err(job);
        }
        self.run_batch(vec![job]);
        Ok(())
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

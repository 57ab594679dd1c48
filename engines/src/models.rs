//! The loaded model set: one queue per model, served by its worker threads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::ocr::{dictionary, OcrSessions, OcrWorker};
use crate::runtime::init_runtime;
use crate::spec::{Device, ModelKind, ModelSpec, Registry};
use crate::worker::{Job, JobInput, Reply, Worker};
use crate::{EngineError, LoadError};

/// Counters of one model, read by the host's metrics.
#[derive(Debug, Default)]
pub struct ModelStats {
    pub runs: AtomicU64,
    pub items: AtomicU64,
    pub busy_ns: AtomicU64,
    pub failures: AtomicU64,
    pub expired: AtomicU64,
    pub queued: AtomicI64,
}

impl ModelStats {
    pub(crate) fn record(&self, items: usize, busy: Duration) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(items as u64, Ordering::Relaxed);
        self.busy_ns.fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
    }
}

struct Handle {
    spec: Arc<ModelSpec>,
    tx: Sender<Job>,
    stats: Arc<ModelStats>,
}

/// Every model of a registry, loaded. Dropping it stops the workers once their queues drain.
#[derive(Default)]
pub struct Models {
    handles: BTreeMap<String, Handle>,
}

impl Models {
    /// Loads every model of the registry; every failure is reported, not only the first.
    pub fn load(registry: &Registry, runtime: &std::path::Path) -> Result<Models, Vec<LoadError>> {
        if registry.models.is_empty() {
            return Ok(Models::default());
        }
        let env = init_runtime(runtime).map_err(|e| vec![e])?;
        let mut handles = BTreeMap::new();
        let mut errors = Vec::new();
        for spec in &registry.models {
            match start(&env, spec) {
                Ok(h) => {
                    handles.insert(spec.name.clone(), h);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Models { handles })
        } else {
            Err(errors)
        }
    }

    pub fn spec(&self, model: &str) -> Option<&ModelSpec> {
        self.handles.get(model).map(|h| &*h.spec)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handles.keys().map(String::as_str)
    }

    pub fn stats(&self) -> impl Iterator<Item = (&str, &ModelStats)> {
        self.handles.iter().map(|(k, h)| (k.as_str(), &*h.stats))
    }

    /// Queues one job for `model` if it is of kind `wanted`; the reply arrives on the receiver.
    pub fn submit(&self, model: &str, wanted: ModelKind, input: JobInput, deadline: Instant) -> Result<Receiver<Reply>, EngineError> {
        let h = self.handles.get(model).ok_or_else(|| EngineError::UnknownModel(model.to_string()))?;
        if h.spec.kind != wanted {
            return Err(EngineError::WrongKind { model: model.to_string(), kind: h.spec.kind.as_str(), wanted: wanted.as_str() });
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let job = Job { input, deadline, reply: tx, enqueued: Instant::now() };
        h.stats.queued.fetch_add(1, Ordering::Relaxed);
        match h.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(e) => {
                h.stats.queued.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => EngineError::Overloaded { model: model.to_string() },
                    TrySendError::Disconnected(_) => EngineError::Stopped { model: model.to_string() },
                })
            }
        }
    }

    /// Submits and waits: the blocking convenience used by offline tools and tests.
    pub fn run(&self, model: &str, wanted: ModelKind, input: JobInput, deadline: Instant) -> Result<Reply, EngineError> {
        let rx = self.submit(model, wanted, input, deadline)?;
        rx.recv_deadline(deadline).map_err(|_| EngineError::DeadlineExceeded)
    }
}

fn start(env: &ort::environment::Environment, spec: &ModelSpec) -> Result<Handle, LoadError> {
    if !spec.file.exists() {
        return Err(LoadError::Missing { model: spec.name.clone(), file: spec.file.clone() });
    }
    let spec = Arc::new(spec.clone());
    let stats = Arc::new(ModelStats::default());
    let (tx, rx) = crossbeam_channel::bounded(spec.queue);
    if spec.kind == ModelKind::Ocr {
        for i in 0..spec.workers {
            let worker = OcrWorker { s: ocr_sessions(env, &spec)?, spec: spec.clone(), stats: stats.clone() };
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("model-{}-{i}", spec.name))
                .spawn(move || worker.run(rx))
                .map_err(|e| LoadError::Spec { model: spec.name.clone(), reason: format!("worker thread: {e}") })?;
        }
        return Ok(Handle { spec, tx, stats });
    }
    let head = match &spec.head {
        Some(p) => {
            let h = crate::head::Head::load(p).map_err(|reason| LoadError::Spec { model: spec.name.clone(), reason })?;
            if spec.activation != crate::spec::Activation::Sigmoid && h.outputs() == 1 {
                return Err(LoadError::Spec { model: spec.name.clone(), reason: "a one-output head needs activation = \"sigmoid\"".into() });
            }
            Some(Arc::new(h))
        }
        None => None,
    };
    for i in 0..spec.workers {
        let session = session(env, &spec)?;
        let (input_name, output_name) = check_io(&session, &spec)?;
        if let (Some(h), Some(dim)) = (&head, output_dim(&session, &output_name)) {
            if dim != h.input_dim {
                return Err(LoadError::Spec { model: spec.name.clone(), reason: format!("head expects {} features; output {output_name} has {dim}", h.input_dim) });
            }
        }
        let worker = Worker { session, head: head.clone(), spec: spec.clone(), input_name, output_name, stats: stats.clone() };
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("model-{}-{i}", spec.name))
            .spawn(move || worker.run(rx))
            .map_err(|e| LoadError::Spec { model: spec.name.clone(), reason: format!("worker thread: {e}") })?;
    }
    Ok(Handle { spec, tx, stats })
}

fn session(env: &ort::environment::Environment, spec: &ModelSpec) -> Result<Session, LoadError> {
    session_for(env, spec, &spec.file)
}

fn session_for(env: &ort::environment::Environment, spec: &ModelSpec, file: &std::path::Path) -> Result<Session, LoadError> {
    let err = |reason: String| LoadError::Session { model: spec.name.clone(), file: file.to_path_buf(), reason };
    if !file.exists() {
        return Err(LoadError::Missing { model: spec.name.clone(), file: file.to_path_buf() });
    }
    let builder = Session::builder(env)
        .map_err(|e| err(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| err(e.to_string()))?
        .with_intra_threads(spec.threads)
        .map_err(|e| err(e.to_string()))?;
    let mut builder = match spec.device {
        Device::Cpu => builder,
        Device::Cuda(id) => {
            // fail loudly: without `error_on_failure` ONNX Runtime quietly runs on the CPU
            // Heuristic cuDNN algorithm choice: the exhaustive default benchmarks every new input
            // shape, and batches of varying size and OCR crops of varying width are all new
            // shapes — under load that search, not the model, was the time.
            let cuda = ort::ep::CUDA::default()
                .with_device_id(id as i32)
                .with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Heuristic)
                .build()
                .error_on_failure();
            match builder.with_execution_providers([cuda]) {
                Ok(b) => b,
                Err(e) if spec.cpu_fallback => {
                    tracing::warn!(model = %spec.name, device = %spec.device, error = %e, "CUDA unavailable; running on the CPU (cpu_fallback)");
                    CPU_FALLBACKS.fetch_add(1, Ordering::Relaxed);
                    e.recover()
                }
                Err(e) => {
                    return Err(LoadError::Spec {
                        model: spec.name.clone(),
                        reason: format!("asks for device {} but CUDA cannot be used here: {e} (set cpu_fallback = true to run on the CPU instead)", spec.device),
                    })
                }
            }
        }
    };
    builder.commit_from_file(file).map_err(|e| err(e.to_string()))
}

/// Models that asked for CUDA and run on the CPU instead (`cpu_fallback`).
pub static CPU_FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// The static size of an output's last dimension.
fn output_dim(session: &Session, name: &str) -> Option<usize> {
    let o = session.outputs().iter().find(|o| o.name() == name)?;
    o.dtype().tensor_shape()?.last().filter(|d| **d > 0).map(|d| *d as usize)
}

/// The three PP-OCR sessions and the recogniser's dictionary (its `character` metadata).
fn ocr_sessions(env: &ort::environment::Environment, spec: &ModelSpec) -> Result<OcrSessions, LoadError> {
    let o = spec.ocr.as_ref().ok_or_else(|| LoadError::Spec { model: spec.name.clone(), reason: "no [ocr] table".into() })?;
    let det = session(env, spec)?;
    let rec = session_for(env, spec, &o.rec)?;
    let cls = o.cls.as_ref().map(|c| session_for(env, spec, c)).transpose()?;
    let meta = rec
        .metadata()
        .ok()
        .and_then(|m| m.custom("character"))
        .ok_or_else(|| LoadError::Spec { model: spec.name.clone(), reason: format!("{} has no `character` metadata (the dictionary)", o.rec.display()) })?;
    let dict = dictionary(&meta);
    if let Some(classes) = rec.outputs().first().and_then(|o| o.dtype().tensor_shape()).and_then(|s| s.last().copied()) {
        if classes > 0 && classes as usize != dict.len() {
            return Err(LoadError::Spec {
                model: spec.name.clone(),
                reason: format!("recogniser outputs {classes} classes; its dictionary gives {}", dict.len()),
            });
        }
    }
    Ok(OcrSessions { det, rec, cls, dict })
}

/// Checks at load what would otherwise fail on the first request: one image input of the
/// configured size, and the output to read.
fn check_io(session: &Session, spec: &ModelSpec) -> Result<(String, String), LoadError> {
    let err = |reason: String| LoadError::Spec { model: spec.name.clone(), reason };
    let [input] = session.inputs() else {
        return Err(err(format!("expected one input, the model has {}", session.inputs().len())));
    };
    if let Some(shape) = input.dtype().tensor_shape() {
        let want = [3, spec.input.height as i64, spec.input.width as i64];
        if shape.len() != 4 || shape[1..].iter().zip(want).any(|(&d, w)| d > 0 && d != w) {
            return Err(err(format!("expected input [N, 3, {}, {}] (the registry's size); found {} with shape {:?}", want[1], want[2], input.name(), &shape[..])));
        }
        if shape[0] > 0 && (shape[0] as usize) < spec.max_batch {
            return Err(err(format!("input batch dimension is fixed at {}; max_batch {} is too large", shape[0], spec.max_batch)));
        }
    }
    let output = match &spec.output {
        Some(name) => session
            .outputs()
            .iter()
            .find(|o| o.name() == name)
            .ok_or_else(|| {
                let found: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
                err(format!("expected an output named {name}; the model has {found:?}"))
            })?,
        None => session.outputs().first().ok_or_else(|| err("the model has no output".into()))?,
    };
    Ok((input.name().to_string(), output.name().to_string()))
}

//! A model worker's life on its thread: opened at start (or, for `lazy` models, on the first
//! request), serving its queue, and for lazy models unloaded again after `idle_unload_s`
//! without work. Opening happens on the worker's own thread, so sessions and device buffers
//! never cross threads; the loader learns the outcome through a channel. Device memory taken
//! by each open is measured and kept in the model's stats while it stays loaded. [`Launch`]
//! is what an engine kind starts its workers through.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use ort::environment::Environment;

use crate::engine::queue::expire;
use crate::engine::{Engine, Job, ModelStats, Reply};
use crate::spec::{Device, ModelSpec};
use crate::{EngineError, LoadError};

/// What an engine kind starts a model's workers with: the runtime, the model, its counters
/// and queue, and the model's thread list. Each worker joins the list as soon as it has
/// started, so that a start failing part-way still closes and joins the ones already running.
pub(crate) struct Launch<'a> {
    pub env: &'a Environment,
    /// The model as served; a kind may replace it (the ONNX kind adds the labels its file names).
    pub spec: Arc<ModelSpec>,
    pub stats: &'a Arc<ModelStats>,
    pub rx: &'a Receiver<Job>,
    pub threads: &'a mut Vec<JoinHandle<()>>,
}

impl Launch<'_> {
    /// Starts the model's `workers` threads ([`spawn`]); `open` makes each worker's opener.
    pub(crate) fn workers<E, F>(&mut self, mut open: impl FnMut() -> F) -> Result<(), LoadError>
    where
        E: Engine + 'static,
        F: Fn() -> Result<E, LoadError> + Send + 'static,
    {
        for i in 0..self.spec.workers {
            let thread = spawn(&self.spec, self.stats, self.rx.clone(), i, open())?;
            self.threads.push(thread);
        }
        Ok(())
    }
}

/// Starts worker `i` of a model. A model that is not lazy is opened before this returns and
/// its error is returned; a lazy one is opened once here to check it (worker 0 only), then
/// dropped until work arrives. The thread ends, its engine dropped, once every sender of `rx`
/// is gone and the queue is drained; join it to know its sessions are released.
fn spawn<E, F>(
    spec: &Arc<ModelSpec>,
    stats: &Arc<ModelStats>,
    rx: Receiver<Job>,
    i: usize,
    open: F,
) -> Result<JoinHandle<()>, LoadError>
where
    E: Engine + 'static,
    F: Fn() -> Result<E, LoadError> + Send + 'static,
{
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), LoadError>>(1);
    let (spec2, stats2) = (spec.clone(), stats.clone());
    let thread = std::thread::Builder::new()
        .name(format!("model-{}-{i}", spec.name))
        .spawn(move || {
            let first = if spec2.lazy {
                let checked = if i == 0 { open().map(drop) } else { Ok(()) };
                let ok = checked.is_ok();
                let _ = ready_tx.send(checked);
                if !ok {
                    return;
                }
                None
            } else {
                match open_measured(&spec2, &stats2, &open) {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        Some(l)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
            };
            run(rx, &spec2, &stats2, first, &open);
        })
        .map_err(|e| LoadError::Spec { model: spec.name.clone(), reason: format!("worker thread: {e}") })?;
    ready_rx.recv().unwrap_or_else(|_| {
        Err(LoadError::Spec { model: spec.name.clone(), reason: "worker thread ended while loading".into() })
    })?;
    Ok(thread)
}

struct Loaded<E> {
    engine: E,
    gpu_bytes: u64,
}

/// Opens the engine and records it as loaded, with the device memory the open took (for CUDA
/// models; other processes or models loading at the same moment blur the figure).
fn open_measured<E>(
    spec: &ModelSpec,
    stats: &ModelStats,
    open: &impl Fn() -> Result<E, LoadError>,
) -> Result<Loaded<E>, LoadError> {
    let ctx = match spec.device {
        Device::Cuda(id) => crate::gpu::context(id).ok(),
        Device::Cpu => None,
    };
    let before = ctx.as_deref().and_then(crate::gpu::used_bytes);
    let started = Instant::now();
    let engine = open()?;
    let after = ctx.as_deref().and_then(crate::gpu::used_bytes);
    let gpu_bytes = match (before, after) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => 0,
    };
    stats.gpu_bytes.fetch_add(gpu_bytes, Ordering::Relaxed);
    stats.loaded.fetch_add(1, Ordering::Relaxed);
    stats.loads.fetch_add(1, Ordering::Relaxed);
    tracing::info!(model = %spec.name, device = %spec.device, gpu_mib = gpu_bytes >> 20, ms = started.elapsed().as_millis() as u64, "model loaded");
    Ok(Loaded { engine, gpu_bytes })
}

fn run<E: Engine>(
    rx: Receiver<Job>,
    spec: &ModelSpec,
    stats: &ModelStats,
    mut loaded: Option<Loaded<E>>,
    open: &impl Fn() -> Result<E, LoadError>,
) {
    let idle = Duration::from_secs(spec.idle_unload_s);
    loop {
        let job = match (&loaded, spec.lazy) {
            (Some(_), true) => match rx.recv_timeout(idle) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(l) = loaded.take() {
                        unload(stats, l);
                        tracing::info!(model = %spec.name, idle_s = spec.idle_unload_s, "lazy model unloaded after idling");
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
            _ => match rx.recv() {
                Ok(j) => j,
                Err(_) => break,
            },
        };
        if loaded.is_none() && job.deadline <= Instant::now() {
            // a job that waited past its deadline is not worth a load (a closing queue may hold
            // many whose requests have gone)
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            expire(job, stats, Instant::now());
            continue;
        }
        if loaded.is_none() {
            match open_measured(spec, stats, open) {
                Ok(l) => loaded = Some(l),
                Err(e) => {
                    tracing::error!(model = %spec.name, error = %e, "lazy model failed to load");
                    stats.queued.fetch_sub(1, Ordering::Relaxed);
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    let reason = format!("loading: {e}");
                    let _ = job.reply.send(Reply {
                        output: Err(EngineError::Inference { model: spec.name.clone(), reason }),
                        compute: Duration::ZERO,
                        queued: job.enqueued.elapsed(),
                        batch: 0,
                    });
                    continue;
                }
            }
        }
        if let Some(l) = loaded.as_mut() {
            l.engine.serve(job, &rx);
        }
    }
    if let Some(l) = loaded {
        unload(stats, l);
    }
}

/// Drops the engine (its sessions and device buffers) and takes it out of the stats.
fn unload<E>(stats: &ModelStats, l: Loaded<E>) {
    stats.gpu_bytes.fetch_sub(l.gpu_bytes, Ordering::Relaxed);
    stats.loaded.fetch_sub(1, Ordering::Relaxed);
}

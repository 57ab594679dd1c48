//! The loaded model set: one queue per model, served by its worker threads, which the model's
//! engine kind (`kinds`) starts.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};

use crate::engine::{Job, JobInput, ModelStats, Reply, ReplyReceiver};
use crate::kinds;
use crate::lifecycle::{Launch, RunHere};
use crate::runtime::init_runtime;
use crate::spec::{ModelKind, ModelSpec, Registry};
use crate::{EngineError, LoadError};

struct Handle {
    spec: Arc<ModelSpec>,
    /// The queue's only sender; `None` once closed.
    tx: Option<Sender<Job>>,
    stats: Arc<ModelStats>,
    /// A CPU model's workers' seats: a short job may run in one on the caller's thread.
    seats: Vec<Arc<dyn RunHere>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Handle {
    /// Puts `job` on the queue (counted as queued until a worker takes it).
    fn enqueue(&self, job: Job) -> Result<(), EngineError> {
        let model = || self.spec.name.clone();
        // a stopped model is refused before the job counts as queued (it would never leave)
        let tx = self.tx.as_ref().ok_or_else(|| EngineError::Stopped { model: model() })?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        tx.try_send(job).map_err(|e| {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => EngineError::Overloaded { model: model() },
                TrySendError::Disconnected(_) => EngineError::Stopped { model: model() },
            }
        })
    }
}

impl Drop for Handle {
    /// Closes the queue, lets the workers drain it, and waits until each has dropped its
    /// sessions. This matters at process exit: a worker still releasing a CUDA session while
    /// `main` returns races the CUDA and ONNX Runtime libraries' own teardown (a crash at exit
    /// was seen with several CUDA models loaded). It also covers a load that fails part-way.
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Every model of a registry, loaded. Dropping it closes every queue, lets the workers drain
/// them, and waits until each worker has dropped its sessions.
#[derive(Default)]
pub struct Models {
    handles: BTreeMap<String, Handle>,
    /// Unique per loaded set: results computed by one set are never taken for another's.
    generation: u64,
}

/// Numbers model sets as they load (0 is the empty set).
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Drop for Models {
    fn drop(&mut self) {
        // every queue closes first, so all models drain at once
        for h in self.handles.values_mut() {
            h.tx = None;
        }
        let handles = std::mem::take(&mut self.handles);
        if tokio::runtime::Handle::try_current().is_ok() {
            // the last reference went away on an async thread (a request that outlived a
            // reload): the joins happen on a thread of their own instead of blocking it
            let _ = std::thread::Builder::new().name("models-drop".into()).spawn(move || drop(handles));
        }
    }
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
            Ok(Models { handles, generation: GENERATIONS.fetch_add(1, Ordering::Relaxed) })
        } else {
            Err(errors)
        }
    }

    /// The largest short side any model of the set needs (`ModelSpec::input_side`; 0 when
    /// empty).
    pub fn input_side(&self) -> u32 {
        self.handles.values().map(|h| h.spec.input_side()).max().unwrap_or(0)
    }

    /// This loaded set's number, unique in the process.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn spec(&self, model: &str) -> Option<&ModelSpec> {
        self.handles.get(model).map(|h| &*h.spec)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handles.keys().map(String::as_str)
    }

    pub fn stats(&self) -> impl Iterator<Item = (&str, &Arc<ModelStats>)> {
        self.handles.iter().map(|(k, h)| (k.as_str(), &h.stats))
    }

    /// What a run of `model` has taken recently, with nothing queued before a new job: the
    /// time a job submitted now should take (`None` before the first run, or while the queue
    /// holds jobs).
    pub fn expected_run(&self, model: &str) -> Option<std::time::Duration> {
        let st = &self.handles.get(model)?.stats;
        if st.queued.load(Ordering::Relaxed) > 1 {
            return None;
        }
        st.recent_run()
    }

    /// Queues one job for `model` if it is of kind `wanted`; the reply arrives on the receiver.
    pub fn submit(
        &self,
        model: &str,
        wanted: ModelKind,
        input: JobInput,
        deadline: Instant,
    ) -> Result<ReplyReceiver, EngineError> {
        let h = self.handle(model, wanted)?;
        let (reply, rx) = crate::engine::reply::channel();
        h.enqueue(Job { input, deadline, reply, enqueued: Instant::now() })?;
        Ok(rx)
    }

    /// As [`Models::submit`], but a job that would find a CPU worker of the model idle, nothing
    /// queued before it and whose runs recently took at most `short` is run at once on the
    /// calling thread instead (its reply is on the receiver when this returns): no thread is
    /// woken for it, and none to take its reply. A worker busy or not loaded, the job is queued.
    pub fn run_or_submit(
        &self,
        model: &str,
        wanted: ModelKind,
        input: JobInput,
        deadline: Instant,
        short: std::time::Duration,
    ) -> Result<ReplyReceiver, EngineError> {
        let h = self.handle(model, wanted)?;
        let (reply, rx) = crate::engine::reply::channel();
        let mut job = Job { input, deadline, reply, enqueued: Instant::now() };
        // a stopped model runs nothing here either: `enqueue` refuses the job
        let quick = h.tx.is_some()
            && h.stats.queued.load(Ordering::Relaxed) == 0
            && h.stats.recent_run().is_some_and(|t| t <= short);
        if quick {
            for seat in &h.seats {
                match seat.try_run(job) {
                    Ok(()) => return Ok(rx),
                    Err(j) => job = j,
                }
            }
        }
        h.enqueue(job)?;
        Ok(rx)
    }

    /// The model, if it is of kind `wanted`.
    fn handle(&self, model: &str, wanted: ModelKind) -> Result<&Handle, EngineError> {
        let h = self.handles.get(model).ok_or_else(|| EngineError::UnknownModel(model.to_string()))?;
        if h.spec.kind != wanted {
            return Err(EngineError::WrongKind {
                model: model.to_string(),
                kind: h.spec.kind.as_str(),
                wanted: wanted.as_str(),
            });
        }
        Ok(h)
    }

    /// Submits and waits: the blocking convenience used by offline tools and tests.
    pub fn run(
        &self,
        model: &str,
        wanted: ModelKind,
        input: JobInput,
        deadline: Instant,
    ) -> Result<Reply, EngineError> {
        let rx = self.submit(model, wanted, input, deadline)?;
        rx.recv_deadline(deadline).map_err(|_| EngineError::DeadlineExceeded)
    }
}

fn start(env: &ort::environment::Environment, spec: &ModelSpec) -> Result<Handle, LoadError> {
    if !spec.present() {
        return Err(LoadError::Missing { model: spec.name.clone(), file: spec.file.clone() });
    }
    let spec = Arc::new(spec.clone());
    let stats = Arc::new(ModelStats::default());
    let (tx, rx) = crossbeam_channel::bounded(spec.queue);
    // built first, so a worker that fails to start drops it: the queue closes and the workers
    // already started are joined
    let mut handle = Handle {
        spec: spec.clone(),
        tx: Some(tx),
        stats: stats.clone(),
        seats: Vec::new(),
        threads: Vec::with_capacity(spec.workers),
    };
    let kind = kinds::of(&spec);
    tracing::debug!(model = %spec.name, engine = kind.name, "starting");
    let mut launch =
        Launch { env, spec, stats: &stats, rx: &rx, threads: &mut handle.threads, seats: &mut handle.seats };
    (kind.start)(&mut launch)?;
    handle.spec = launch.spec;
    Ok(handle)
}

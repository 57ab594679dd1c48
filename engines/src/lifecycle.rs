//! A model worker's life on its thread: opened at start (or, for `lazy` models, on the first
//! request), serving its queue, and for lazy models unloaded again after `idle_unload_s`
//! without work. Opening happens on the worker's own thread, so sessions and device buffers
//! never cross threads; the loader learns the outcome through a channel. Device memory taken
//! by each open is measured and kept in the model's stats while it stays loaded. [`Launch`]
//! is what an engine kind starts its workers through.
//!
//! A worker's engine sits in a [`Seat`] its thread locks to serve. A CPU model's seat is also
//! handed to the model set: a request's thread that finds the worker idle and its queue empty
//! may take the seat and run a short job itself ([`RunHere`]), with no thread to wake on either
//! side. Sessions are opened on the worker's thread only; they are dropped there too, except
//! when a run on a request's thread panicked (that thread drops the engine it broke).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
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
    /// The seats of a CPU model's workers, for a request's thread to run a job in ([`RunHere`]).
    pub seats: &'a mut Vec<Arc<dyn RunHere>>,
}

impl Launch<'_> {
    /// Starts the model's `workers` threads ([`spawn`]); `open` makes each worker's opener.
    pub(crate) fn workers<E, F>(&mut self, mut open: impl FnMut() -> F) -> Result<(), LoadError>
    where
        E: Engine + Send + 'static,
        F: Fn() -> Result<E, LoadError> + Send + 'static,
    {
        for i in 0..self.spec.workers {
            let seat = Arc::new(Seat::new(self.stats, &self.spec.name));
            let thread = spawn(&self.spec, self.stats, self.rx.clone(), i, open(), seat.clone())?;
            self.threads.push(thread);
            // a CUDA session is bound to its thread's context: only CPU workers lend their seat
            if self.spec.device == Device::Cpu {
                self.seats.push(seat);
            }
        }
        Ok(())
    }
}

/// A worker's engine while loaded, and how much device memory it took.
pub(crate) struct Seat<E> {
    loaded: Mutex<Option<Loaded<E>>>,
    stats: Arc<ModelStats>,
    /// The model's name, for the log.
    model: String,
}

impl<E> Seat<E> {
    fn new(stats: &Arc<ModelStats>, model: &str) -> Seat<E> {
        Seat { loaded: Mutex::new(None), stats: stats.clone(), model: model.to_string() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Loaded<E>>> {
        // only a panic on the worker's own thread poisons it (`try_run` catches a request
        // thread's), and that ends the thread
        self.loaded.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A worker's seat as the model set sees it: a job run on the caller's thread.
pub(crate) trait RunHere: Send + Sync {
    /// Serves `job` on the calling thread, now, if the worker is loaded and idle and its engine
    /// runs jobs anywhere ([`Engine::run_now`]); else gives it back untouched.
    fn try_run(&self, job: Job) -> Result<(), Job>;
}

impl<E: Engine + Send> RunHere for Seat<E> {
    /// A job already past its deadline is answered `DeadlineExceeded` here, as the worker would;
    /// one that starts in time answers when it ends, even if that is past its deadline (at most
    /// one short run late: the queue's caller would have stopped waiting instead).
    fn try_run(&self, job: Job) -> Result<(), Job> {
        let Ok(mut seat) = self.loaded.try_lock() else { return Err(job) };
        let Some(l) = seat.as_mut() else { return Err(job) };
        let now = Instant::now();
        if job.deadline <= now {
            expire(job, &self.stats, now);
            return Ok(());
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| l.engine.run_now(job))) {
            Ok(r) => {
                if r.is_ok() {
                    self.stats.here.fetch_add(1, Ordering::Relaxed);
                    l.lent = Some(Instant::now());
                }
                r
            }
            Err(_) => {
                // the job's reply was dropped with it (its caller learns the model failed); the
                // engine may be half-way through a run: dropped, and opened again on the next job
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(model = %self.model, "a model run on a request's thread panicked; the model is opened again");
                if let Some(l) = seat.take() {
                    unload(&self.stats, l);
                }
                Ok(())
            }
        }
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
    seat: Arc<Seat<E>>,
) -> Result<JoinHandle<()>, LoadError>
where
    E: Engine + Send + 'static,
    F: Fn() -> Result<E, LoadError> + Send + 'static,
{
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), LoadError>>(1);
    let (spec2, stats2) = (spec.clone(), stats.clone());
    let thread = std::thread::Builder::new()
        .name(format!("model-{}-{i}", spec.name))
        .spawn(move || {
            // a lazy model is opened once to check it (worker 0), then left closed until work
            // arrives; another is seated before the loader hears of it, so a request may
            // borrow it at once
            let checked = match (spec2.lazy, i) {
                (true, 0) => open().map(drop),
                (true, _) => Ok(()),
                (false, _) => open_measured(&spec2, &stats2, &open).map(|l| *seat.lock() = Some(l)),
            };
            let ok = checked.is_ok();
            let _ = ready_tx.send(checked);
            if !ok {
                return;
            }
            run(rx, &spec2, &stats2, &seat, &open);
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
    /// When a request's thread last ran a job in this seat: the worker idles on its own
    /// thread meanwhile, which does not make the model idle.
    lent: Option<Instant>,
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
    Ok(Loaded { engine, gpu_bytes, lent: None })
}

fn run<E: Engine>(
    rx: Receiver<Job>,
    spec: &ModelSpec,
    stats: &ModelStats,
    seat: &Seat<E>,
    open: &impl Fn() -> Result<E, LoadError>,
) {
    let idle = Duration::from_secs(spec.idle_unload_s);
    loop {
        let is_loaded = seat.lock().is_some();
        let job = match (is_loaded, spec.lazy) {
            (true, true) => match rx.recv_timeout(idle) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) => {
                    // idle on this thread; a request's thread may have run jobs meanwhile
                    let idled = |l: &mut Loaded<E>| l.lent.is_none_or(|t| t.elapsed() >= idle);
                    if let Some(l) = seat.lock().take_if(idled) {
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
        let mut loaded = seat.lock();
        if loaded.is_none() && job.deadline <= Instant::now() {
            // a job that waited past its deadline is not worth a load (a closing queue may hold
            // many whose requests have gone)
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            expire(job, stats, Instant::now());
            continue;
        }
        if loaded.is_none() {
            match open_measured(spec, stats, open) {
                Ok(l) => *loaded = Some(l),
                Err(e) => {
                    tracing::error!(model = %spec.name, error = %e, "model failed to load");
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
    if let Some(l) = seat.lock().take() {
        unload(stats, l);
    }
}

/// Drops the engine (its sessions and device buffers) and takes it out of the stats.
fn unload<E>(stats: &ModelStats, l: Loaded<E>) {
    stats.gpu_bytes.fetch_sub(l.gpu_bytes, Ordering::Relaxed);
    stats.loaded.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::engine::queue::take_one;
    use crate::engine::{JobInput, Output, RecvError};

    /// Answers each job with 1 on a model thread, 0 elsewhere; holds its thread 300 ms for a
    /// 2-pixel-wide image and panics on a 3-pixel one.
    struct Fake(Arc<ModelStats>);

    impl Fake {
        fn answer(job: Job) {
            match job.input.image().width() {
                2 => std::thread::sleep(Duration::from_millis(300)),
                3 => panic!("a fake engine's bug"),
                _ => {}
            }
            let on_worker = std::thread::current().name().is_some_and(|n| n.starts_with("model-"));
            let output = Ok(Output::Embedding(vec![f32::from(u8::from(on_worker))]));
            let _ = job.reply.send(Reply { output, compute: Duration::ZERO, queued: Duration::ZERO, batch: 1 });
        }
    }

    impl Engine for Fake {
        fn serve(&mut self, first: Job, _rx: &Receiver<Job>) {
            if let Some(j) = take_one(first, &self.0) {
                Fake::answer(j);
            }
        }

        fn run_now(&mut self, job: Job) -> Result<(), Job> {
            Fake::answer(job);
            Ok(())
        }
    }

    fn job(width: u32) -> (Job, crate::ReplyReceiver) {
        let (reply, rx) = crate::engine::reply::channel();
        let input = JobInput::Image(Arc::new(image::RgbImage::new(width, 1)));
        let now = Instant::now();
        (Job { input, deadline: now + Duration::from_secs(5), reply, enqueued: now }, rx)
    }

    /// `try_run` until the worker lets go of its seat (it does after replying, at the end of
    /// its loop), for at most 5 s.
    fn lend(seat: &Seat<Fake>, mut j: Job) -> Result<(), Job> {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match seat.try_run(j) {
                Err(back) if Instant::now() < until => {
                    j = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                r => return r,
            }
        }
    }

    fn answered_on_worker(rx: &crate::ReplyReceiver) -> bool {
        match rx.recv_deadline(Instant::now() + Duration::from_secs(5)).expect("a reply").output {
            Ok(Output::Embedding(v)) => v == [1.0],
            other => panic!("{other:?}"),
        }
    }

    /// A request's thread runs a job in an idle worker's seat; a busy seat gives the job back;
    /// a panic there drops the engine, which the worker opens again for its next job.
    #[test]
    fn a_seat_is_lent_while_idle_and_survives_a_panic() {
        let reg: crate::Registry =
            toml::from_str("[[model]]\nname = \"m\"\nkind = \"embedder\"\nfile = \"m.onnx\"\n").expect("registry");
        let spec = Arc::new(reg.models.into_iter().next().expect("a model"));
        let stats = Arc::new(ModelStats::default());
        let seat = Arc::new(Seat::new(&stats, "m"));
        let (tx, rx) = crossbeam_channel::unbounded();
        let opens = Arc::new(AtomicUsize::new(0));
        let (o, st) = (opens.clone(), stats.clone());
        let open = move || {
            o.fetch_add(1, Ordering::SeqCst);
            Ok(Fake(st.clone()))
        };
        let thread = spawn(&spec, &stats, rx, 0, open, seat.clone()).expect("started");
        let queue = |(j, r): (Job, crate::ReplyReceiver)| {
            stats.queued.fetch_add(1, Ordering::Relaxed);
            tx.send(j).expect("queued");
            r
        };

        // idle: run here, answered before try_run returns (the seat is filled before `spawn`
        // returns)
        let (j, r) = job(1);
        assert!(seat.try_run(j).is_ok());
        assert!(!answered_on_worker(&r), "ran on this thread");
        assert_eq!(stats.here.load(Ordering::Relaxed), 1);

        // a job past its deadline is expired, not run, and not counted as run here
        let (mut j, r) = job(1);
        j.deadline = Instant::now();
        assert!(seat.try_run(j).is_ok());
        let expired = r.recv_deadline(Instant::now() + Duration::from_secs(1)).expect("a reply").output;
        assert!(matches!(expired, Err(EngineError::DeadlineExceeded)), "{expired:?}");
        assert_eq!((stats.here.load(Ordering::Relaxed), stats.expired.load(Ordering::Relaxed)), (1, 1));

        // the worker holding its seat for a slow job: the job comes back, to be queued
        let slow = queue(job(2));
        std::thread::sleep(Duration::from_millis(100));
        let (j, _r) = job(1);
        let back = seat.try_run(j).expect_err("the seat is busy");
        let r = queue((back, _r));
        assert!(answered_on_worker(&slow) && answered_on_worker(&r));

        // a panic on this thread: the job's reply is dropped, the engine with it
        let (j, r) = job(3);
        assert!(lend(&seat, j).is_ok());
        assert_eq!(r.recv_deadline(Instant::now()).unwrap_err(), RecvError::Disconnected);
        assert_eq!((stats.failures.load(Ordering::Relaxed), stats.loaded.load(Ordering::Relaxed)), (1, 0));
        let (j, _r) = job(1);
        assert!(seat.try_run(j).is_err(), "no engine to lend until the worker opens one");
        assert!(answered_on_worker(&queue(job(1))), "the worker opened it again");
        assert_eq!((opens.load(Ordering::SeqCst), stats.loaded.load(Ordering::Relaxed)), (2, 1));
        let (j, r) = job(1);
        assert!(lend(&seat, j).is_ok() && !answered_on_worker(&r));

        drop(tx);
        thread.join().expect("the worker ends when its queue closes");
        assert_eq!(stats.loaded.load(Ordering::Relaxed), 0);
    }
}

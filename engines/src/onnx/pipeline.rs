//! One CUDA session, pipelined: while the session runs a batch, the next one is gathered from
//! the queue, packed, uploaded and pre-processed on the device into a second input buffer, so a
//! single session gets the overlap that two sessions (`workers = 2`) get without splitting the
//! batches between them. Three threads per worker: the model's own thread stages (queue, batch
//! shape, GPU pre-processing into a free slot); a runner thread owns the session and runs each
//! staged batch, freeing its slot once the run has read it; a third thread turns the outputs
//! into replies (top labels, heads, boxes) while the session runs the next batch. With CUDA
//! graphs the runner captures them at load (they are kept per thread) and only launches each
//! run: the third thread waits for it, reads its output back and frees the slot.
//! On by default for CUDA models with GPU pre-processing; `cuda = { pipeline = false }` in the
//! registry turns it off.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use cudarc::driver::CudaEvent;

use super::worker::{Finisher, Forward, FoundLabels, ShapeRule, Worker};
use crate::engine::queue::{expire, reply_all, settle};
use crate::engine::{Engine, Job, ModelStats, Reply, ReplySender};
use crate::gpu::{GpuPrep, SlotRun};
use crate::head::Head;
use crate::preprocess::Prepared;
use crate::spec::{Device, ModelSpec};
use crate::{EngineError, LoadError};

/// Input buffers per batch shape: one being run, one being filled.
const SLOTS: usize = 2;
/// How often a batch gathered while the session is busy looks whether it has become idle.
const BUSY_TICK: Duration = Duration::from_micros(200);

/// A worker as the lifecycle runs it: the plain one, or the staging side of a pipelined one.
pub(crate) enum Opened {
    Plain(Box<Worker>),
    Pipelined(Box<Stager>),
}

impl Engine for Opened {
    fn serve(&mut self, first: Job, rx: &Receiver<Job>) {
        match self {
            Opened::Plain(w) => w.serve(first, rx),
            Opened::Pipelined(s) => s.serve(first, rx),
        }
    }

    fn run_now(&mut self, job: Job) -> Result<(), Job> {
        match self {
            Opened::Plain(w) => w.run_now(job),
            Opened::Pipelined(_) => Err(job),
        }
    }
}

/// Opens a worker; a CUDA one with GPU pre-processing and `pipeline` set is split into its
/// staging side (returned, run by the model's thread) and a runner thread that owns the
/// session. Every shape of both slots is made and warmed here, before any request.
pub(crate) fn open(
    env: &ort::environment::Environment,
    spec: &Arc<ModelSpec>,
    head: Option<Arc<Head>>,
    stats: &Arc<ModelStats>,
    found: &FoundLabels,
) -> Result<Opened, LoadError> {
    let mut w = Worker::open(env, spec, head.clone(), stats, found)?;
    if !spec.cuda.pipeline || w.gpu_mut().is_none() {
        if spec.cuda.pipeline && matches!(spec.device, Device::Cuda(_)) {
            tracing::info!(model = %spec.name, "inputs prepared on the CPU: the worker runs unpipelined");
        }
        return Ok(Opened::Plain(Box::new(w)));
    }
    let refused = |reason: String| LoadError::Spec { model: spec.name.clone(), reason: format!("pipeline: {reason}") };
    for slot in 1..SLOTS {
        w.warm_slot(slot).map_err(refused)?;
    }
    let ptrs = w.input_ptrs(SLOTS).map_err(refused)?;
    let prep =
        w.gpu_mut().and_then(|g| g.take_prep()).ok_or_else(|| refused("no pre-processing to hand over".into()))?;
    let (to_runner, staged) = crossbeam_channel::bounded::<Staged>(1);
    let (slot_back, free) = crossbeam_channel::bounded::<usize>(SLOTS);
    for slot in 0..SLOTS {
        let _ = slot_back.send(slot);
    }
    let give_back = slot_back.clone();
    let stats2 = stats.clone();
    // the session's thread only runs: a batch's outputs become replies on a thread of their own
    let (to_finisher, finishing) = crossbeam_channel::bounded::<Finishing>(SLOTS);
    let finisher = w.finisher();
    let freed = slot_back.clone();
    std::thread::Builder::new()
        .name(format!("finish-{}", spec.name))
        .spawn(move || {
            crate::gpu::relax_capture_mode();
            finish_loop(&finisher, finishing, &freed)
        })
        .map_err(|e| refused(format!("finishing thread: {e}")))?;
    // the runner captures the CUDA graphs it will replay (they are kept per thread) before any
    // batch is staged, and says whether it could
    let graphed = w.graphed();
    let (captured, capture) = crossbeam_channel::bounded::<Result<(), String>>(1);
    let runner = std::thread::Builder::new()
        .name(format!("run-{}", spec.name))
        .spawn(move || {
            crate::gpu::relax_capture_mode();
            let ready = w.capture(SLOTS);
            let ok = ready.is_ok();
            let _ = captured.send(ready);
            if ok {
                runner(w, staged, slot_back, stats2, to_finisher)
            }
        })
        .map_err(|e| refused(format!("runner thread: {e}")))?;
    match capture.recv() {
        Ok(Ok(())) => {}
        Ok(Err(reason)) if graphed => {
            let _ = runner.join();
            tracing::warn!(model = %spec.name, %reason, "CUDA graphs could not be captured on the session's thread; the model runs without them");
            let mut plain = (**spec).clone();
            plain.cuda.graph = false;
            return open(env, &Arc::new(plain), head, stats, found);
        }
        Ok(Err(reason)) => return Err(refused(reason)),
        Err(_) => return Err(refused("the runner thread ended at start".into())),
    }
    tracing::info!(model = %spec.name, slots = SLOTS, "pipelined: the next batch is prepared while one runs");
    Ok(Opened::Pipelined(Box::new(Stager {
        prep,
        ptrs,
        shape: ShapeRule::new(),
        spec: spec.clone(),
        stats: stats.clone(),
        to_runner: Some(to_runner),
        free,
        slot_back: Some(give_back),
        runner: Some(runner),
    })))
}

/// A batch ready to run: its jobs, the input it was written to (or `None`: prepare it on the
/// CPU) with the event reached once it is written there, and what its preparation took.
struct Staged {
    jobs: Vec<Job>,
    rows: usize,
    slot: usize,
    prepared: Option<(Vec<Prepared>, Arc<CudaEvent>)>,
    prep_us: u64,
    /// When its staging began (for `CASCADE_GPU_TRACE`'s count of the hand-offs).
    began: Instant,
}

/// The staging side of a pipelined worker.
pub(crate) struct Stager {
    prep: GpuPrep,
    /// Device address of each input, by rows and slot.
    ptrs: HashMap<(usize, usize), u64>,
    shape: ShapeRule,
    spec: Arc<ModelSpec>,
    stats: Arc<ModelStats>,
    to_runner: Option<Sender<Staged>>,
    /// Slots the runner is done with.
    free: Receiver<usize>,
    /// For a slot taken but not used.
    slot_back: Option<Sender<usize>>,
    runner: Option<std::thread::JoinHandle<()>>,
}

impl Engine for Stager {
    /// Waits for a free input slot, gathers a batch, prepares it into the slot on the device
    /// and hands it to the runner; returns while it runs, to stage the next.
    fn serve(&mut self, first: Job, rx: &Receiver<Job>) {
        let gone =
            || EngineError::Inference { model: self.spec.name.clone(), reason: "the runner thread ended".into() };
        let Some(slot) = self.slot() else {
            let live = settle(vec![first], &self.stats);
            reply_all(live, Err(gone()), Instant::now(), &self.stats);
            return;
        };
        let live = settle(self.gather(first, rx), &self.stats);
        if live.is_empty() {
            self.give_back(slot);
            return;
        }
        let rows = self.shape.rows_for(live.len(), &self.spec);
        let started = Instant::now();
        let images: Vec<&image::RgbImage> = live.iter().map(|j| &**j.input.image()).collect();
        let prepared = match self.ptrs.get(&(rows, slot)) {
            Some(&ptr) => match self.prep.queue(&images, ptr) {
                Ok(p) => Some(p),
                Err(reason) => {
                    // e.g. a batch of huge images beyond the staging limit: this batch only
                    tracing::warn!(model = %self.spec.name, %reason, "GPU pre-processing refused a batch; preparing it on the CPU");
                    self.stats.prep_fallbacks.fetch_add(1, Ordering::Relaxed);
                    None
                }
            },
            None => None,
        };
        drop(images);
        let prep_us = started.elapsed().as_micros() as u64;
        let staged = Staged { jobs: live, rows, slot, prepared, prep_us, began: started };
        if let Some(tx) = &self.to_runner {
            if let Err(e) = tx.send(staged) {
                reply_all(e.0.jobs, Err(gone()), started, &self.stats);
                // no runner: later batches fail at once instead of being prepared for nobody
                self.to_runner = None;
            }
        }
    }
}

impl Stager {
    fn gather(&self, first: Job, rx: &Receiver<Job>) -> Vec<Job> {
        gather_while_busy(first, rx, &self.spec, &self.free)
    }

    /// A free input slot; `None` once the runner has ended (it never does while this side lives,
    /// unless it panicked).
    fn slot(&self) -> Option<usize> {
        self.to_runner.as_ref()?;
        loop {
            match self.free.recv_timeout(Duration::from_millis(100)) {
                Ok(s) => return Some(s),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if self.runner.as_ref().is_none_or(|t| t.is_finished()) {
                        return None;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Returns an unused slot (its batch expired before it was staged).
    fn give_back(&self, slot: usize) {
        if let Some(tx) = &self.slot_back {
            let _ = tx.send(slot);
        }
    }
}

impl Drop for Stager {
    /// Closes the runner's queue and waits for it: the session and its device buffers are
    /// released when this returns.
    fn drop(&mut self) {
        // the last batch's kernel may still be writing a slot's input, which goes with the
        // runner's session: wait for it first
        if let Err(reason) = self.prep.wait() {
            tracing::warn!(model = %self.spec.name, %reason, "the last batch's pre-processing failed while the model was released");
        }
        self.to_runner.take();
        self.slot_back.take();
        if let Some(t) = self.runner.take() {
            let _ = t.join();
        }
    }
}

/// Gathers a batch behind `first`. While the session is busy with another batch (the other
/// slot is out: `free` is empty), sealing a partial batch gains nothing, since it could not run yet: the
/// batch keeps growing until it is full or the session is free again. From the moment the
/// session is free (or from the start, when it was), it waits `max_delay_us` for company,
/// as an unpipelined worker does: the replies of the batch that just ran bring their
/// clients' next requests within that window, so a closed loop of one batch's worth of
/// clients is not split in two. The earliest deadline in hand bounds both. With several
/// workers on the model's queue the batch seals after `max_delay_us` busy or not, since another
/// worker may be free to run it.
fn gather_while_busy(first: Job, rx: &Receiver<Job>, spec: &ModelSpec, free: &Receiver<usize>) -> Vec<Job> {
    let max_delay = Duration::from_micros(spec.max_delay_us);
    let mut batch = vec![first];
    let mut earliest = batch[0].deadline;
    let mut idle_since: Option<Instant> = None;
    while batch.len() < spec.max_batch {
        let now = Instant::now();
        // with several workers on the queue, an idle one could run these now: no waiting
        let busy = free.is_empty() && spec.workers == 1;
        if !busy && idle_since.is_none() {
            idle_since = Some(now);
        }
        let until = match idle_since {
            Some(t) => t + max_delay,
            None => now + BUSY_TICK,
        }
        .min(earliest);
        match rx.recv_deadline(until) {
            Ok(j) => {
                earliest = earliest.min(j.deadline);
                batch.push(j);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) if idle_since.is_none() && Instant::now() < earliest => {}
            Err(_) => break,
        }
    }
    batch
}

/// The runner thread's loop: each staged batch runs; a panic in one (decoding, a head) fails
/// that batch with an error and gives its slot back if it was still out, and the runner goes
/// on, so that the stager never writes into a dead worker's buffers.
fn runner(
    mut w: Worker,
    staged: Receiver<Staged>,
    slot_back: Sender<usize>,
    stats: Arc<ModelStats>,
    to_finisher: Sender<Finishing>,
) {
    for s in staged {
        let (slot, n) = (s.slot, s.jobs.len());
        let replies: Vec<ReplySender> = s.jobs.iter().map(|j| j.reply.clone()).collect();
        let mut returned = false;
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(&mut w, s, &slot_back, &mut returned, &to_finisher)
        }));
        if ran.is_err() {
            tracing::error!(model = %w.spec_name(), "a pipelined batch panicked; its requests get an error");
            if !returned {
                let _ = slot_back.send(slot);
            }
            stats.failures.fetch_add(n as u64, Ordering::Relaxed);
            fail_all(&replies, w.spec_name(), "the batch's run panicked");
        }
    }
}

/// A batch the session has run or launched, for the finishing thread: its jobs, what the run
/// gave, and when its preparation began.
struct Finishing {
    jobs: Vec<Job>,
    outcome: Outcome,
    started: Instant,
    /// When its staging began.
    began: Instant,
}

/// Waits for a launched run and reads its output (`Launched::land`, or a stand-in in tests).
type Land = Box<dyn FnOnce() -> Result<(Vec<i64>, Vec<f32>), String> + Send>;

/// What a batch's run gave: its outputs or its error, or a CUDA graph's run launched on the
/// device and not waited for, whose input `slot` is in use until it has landed.
enum Outcome {
    Done(Result<Forward, EngineError>),
    Launched { land: Land, prepared: Vec<Prepared>, slot: usize },
}

/// Gives a slot back to the staging side when dropped, unless it already was: a launched
/// batch's slot is free again once its run has landed, even when landing panics.
struct SlotBack<'a> {
    slot: Option<usize>,
    to: &'a Sender<usize>,
}

impl SlotBack<'_> {
    fn release(&mut self) {
        if let Some(s) = self.slot.take() {
            let _ = self.to.send(s);
        }
    }
}

impl Drop for SlotBack<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// A batch's outputs: a launched run is waited for and read, and its slot given back.
fn settle_outcome(outcome: Outcome, slot_back: &Sender<usize>, model: &str) -> Result<Forward, EngineError> {
    match outcome {
        Outcome::Done(forward) => forward,
        Outcome::Launched { land, prepared, slot } => {
            let mut back = SlotBack { slot: Some(slot), to: slot_back };
            let landed = land();
            back.release();
            landed
                .map(|(shape, data)| (shape, data, prepared, None))
                .map_err(|reason| EngineError::Inference { model: model.to_string(), reason })
        }
    }
}

/// The finishing thread's loop: each batch's run is waited for when it was only launched (its
/// slot then goes back to the staging side), and its outputs become its replies (a
/// classifier's top labels, a head, a detector's boxes), while the session already runs the
/// next batch. A panic there fails that batch's requests, and the loop goes on.
fn finish_loop(f: &Finisher, finishing: Receiver<Finishing>, slot_back: &Sender<usize>) {
    for b in finishing {
        let replies: Vec<ReplySender> = b.jobs.iter().map(|j| j.reply.clone()).collect();
        let (n, began) = (b.jobs.len(), b.began);
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let forward = settle_outcome(b.outcome, slot_back, f.model());
            let landed = Instant::now();
            f.finish(b.jobs, forward, b.started);
            landed
        }));
        if let (Ok(landed), true) = (&done, crate::gpu::trace()) {
            // from the start of its staging to its answers sent: every step the batch took,
            // the threads' hand-offs included, which the `gpu batch` line does not count
            tracing::info!(
                n,
                finish_us = landed.elapsed().as_micros() as u64,
                total_us = began.elapsed().as_micros() as u64,
                "gpu answered"
            );
        }
        if done.is_err() {
            tracing::error!(model = %f.model(), "a pipelined batch's outputs panicked; its requests get an error");
            f.count_failures(replies.len());
            fail_all(&replies, f.model(), "reading the batch's outputs panicked");
        }
    }
}

/// Answers every request of a failed batch with an error; a reply already sent stays (the
/// channel holds one, and `try_send` never blocks on a full one).
fn fail_all(replies: &[ReplySender], model: &str, reason: &str) {
    for r in replies {
        let _ = r.send(Reply {
            output: Err(EngineError::Inference { model: model.to_string(), reason: reason.into() }),
            compute: Duration::ZERO,
            queued: Duration::ZERO,
            batch: replies.len(),
        });
    }
}

/// Runs one staged batch on the runner thread; its slot is free again as soon as the session
/// has read the input (`returned` says so: here once a run that was waited for returns, or by
/// the finishing thread once a launched one has landed), and its outputs go to the finishing
/// thread. A batch whose every job has expired while it waited is answered without running.
/// Model time counts the batch's preparation, its run and its finishing, not its wait for the
/// previous batch.
fn run(w: &mut Worker, s: Staged, slot_back: &Sender<usize>, returned: &mut bool, to_finisher: &Sender<Finishing>) {
    let Staged { jobs, rows, slot, prepared, prep_us, began } = s;
    let now = Instant::now();
    if jobs.iter().all(|j| j.deadline <= now) {
        *returned = slot_back.send(slot).is_ok();
        for j in jobs {
            expire(j, w.stats(), now);
        }
        return;
    }
    let started = now.checked_sub(Duration::from_micros(prep_us)).unwrap_or(now);
    let outcome = match prepared {
        Some((prepared, written)) => match w.launch_slot(rows, slot, jobs.len(), prep_us, &written) {
            Ok(SlotRun::Launched(l)) => {
                // whoever settles the outcome gives the slot back
                *returned = true;
                Outcome::Launched { land: Box::new(move || l.land()), prepared, slot }
            }
            Ok(SlotRun::Ready(shape, data)) => {
                *returned = slot_back.send(slot).is_ok();
                Outcome::Done(Ok((shape, data, prepared, None)))
            }
            Err(e) => {
                *returned = slot_back.send(slot).is_ok();
                Outcome::Done(Err(e))
            }
        },
        None => {
            *returned = slot_back.send(slot).is_ok();
            let images: Vec<&image::RgbImage> = jobs.iter().map(|j| &**j.input.image()).collect();
            let out = w.forward_cpu(&images, rows);
            drop(images);
            Outcome::Done(out)
        }
    };
    // the finishing thread gone (it never ends while the runner lives): finish here
    if let Err(e) = to_finisher.send(Finishing { jobs, outcome, started, began }) {
        let Finishing { jobs, outcome, started, .. } = e.0;
        let forward = settle_outcome(outcome, slot_back, w.spec_name());
        w.finish(jobs, forward, started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::JobInput;
    use crate::preprocess::Prepared;

    fn job() -> Job {
        let (reply, _) = crate::engine::reply::channel();
        let image = Arc::new(image::RgbImage::new(4, 4));
        Job {
            input: JobInput::Image(image),
            deadline: Instant::now() + Duration::from_secs(5),
            reply,
            enqueued: Instant::now(),
        }
    }

    fn spec(max_batch: usize, max_delay_us: u64) -> ModelSpec {
        let toml = format!(
            "[[model]]\nname = \"m\"\nkind = \"classifier\"\nfile = \"m.onnx\"\nmax_batch = {max_batch}\nmax_delay_us = {max_delay_us}\n"
        );
        let reg: crate::Registry = toml::from_str(&toml).expect("registry");
        reg.models.into_iter().next().expect("one model")
    }

    /// The finishing thread answers each run batch, in order, with the classifier's results,
    /// and a failed run's requests with its error; a launched batch is landed first and its slot
    /// given back, also when landing fails or panics; the thread ends when the runner's side
    /// closes.
    #[test]
    fn run_batches_are_answered_by_the_finishing_thread() {
        let mut spec = spec(8, 1_000);
        spec.labels = vec!["other".into(), "roadwork".into()];
        spec.positive = vec!["roadwork".into()];
        spec.activation = crate::spec::Activation::None;
        let stats = Arc::new(ModelStats::default());
        let f = Finisher::new(Arc::new(spec), None, "out".into(), stats.clone());
        let (tx, rx) = crossbeam_channel::bounded::<Finishing>(4);
        let (slot_back, free) = crossbeam_channel::bounded::<usize>(SLOTS);
        let thread = std::thread::spawn(move || finish_loop(&f, rx, &slot_back));
        let batch = |n: usize| -> (Vec<Job>, Vec<crate::ReplyReceiver>) {
            (0..n)
                .map(|_| {
                    let (reply, got) = crate::engine::reply::channel();
                    let j = Job {
                        input: JobInput::Image(Arc::new(image::RgbImage::new(4, 4))),
                        deadline: Instant::now() + Duration::from_secs(5),
                        reply,
                        enqueued: Instant::now(),
                    };
                    (j, got)
                })
                .unzip()
        };
        let identity = Prepared { scale_x: 1.0, scale_y: 1.0, offset_x: 0.0, offset_y: 0.0 };
        let send = |jobs: Vec<Job>, outcome: Outcome| {
            tx.send(Finishing { jobs, outcome, started: Instant::now(), began: Instant::now() }).expect("send");
        };
        // two images' probabilities (the spec's activation: none), roadwork at 0.9 and 0.2
        let (jobs, got) = batch(2);
        send(jobs, Outcome::Done(Ok((vec![2, 2], vec![0.1, 0.9, 0.8, 0.2], vec![identity; 2], None))));
        let (failed, lost) = batch(3);
        let err = EngineError::Inference { model: "m".into(), reason: "the run failed".into() };
        send(failed, Outcome::Done(Err(err)));
        // a launched run in slot 1: landed on the finishing thread, which frees the slot
        let (jobs, launched) = batch(1);
        let land: Land = Box::new(|| {
            std::thread::sleep(Duration::from_millis(20));
            Ok((vec![1, 2], vec![0.4, 0.6]))
        });
        send(jobs, Outcome::Launched { land, prepared: vec![identity], slot: 1 });
        assert_eq!(free.recv_timeout(Duration::from_secs(5)).expect("slot 1 back"), 1);
        // a landing that fails, and one that panics: errors, and each slot back all the same
        let (jobs, refused) = batch(2);
        send(
            jobs,
            Outcome::Launched {
                land: Box::new(|| Err("run: an illegal address".into())),
                prepared: vec![identity; 2],
                slot: 0,
            },
        );
        assert_eq!(free.recv_timeout(Duration::from_secs(5)).expect("slot 0 back"), 0);
        let (jobs, panicked) = batch(1);
        send(jobs, Outcome::Launched { land: Box::new(|| panic!("landing")), prepared: vec![identity], slot: 1 });
        assert_eq!(free.recv_timeout(Duration::from_secs(5)).expect("slot 1 back after a panic"), 1);
        drop(tx);
        thread.join().expect("the finishing thread ends with its channel");
        let score = |r: &crate::ReplyReceiver| match r.recv_deadline(Instant::now()).expect("answered").output {
            Ok(crate::Output::Classification { score, .. }) => score,
            other => panic!("{other:?}"),
        };
        assert_eq!(got.iter().map(score).collect::<Vec<_>>(), vec![0.9, 0.2]);
        assert_eq!(launched.iter().map(score).collect::<Vec<_>>(), vec![0.6]);
        let error = |r: &crate::ReplyReceiver| {
            r.recv_deadline(Instant::now()).expect("answered").output.expect_err("an error").to_string()
        };
        for r in &lost {
            assert!(error(r).contains("the run failed"));
        }
        for r in &refused {
            assert!(error(r).contains("an illegal address"));
        }
        assert!(error(&panicked[0]).contains("panicked"));
        assert!(free.is_empty(), "each slot given back once");
        assert_eq!(stats.failures.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn a_batch_keeps_growing_while_the_session_is_busy() {
        let spec = spec(8, 1_000);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (slot_back, free) = crossbeam_channel::bounded::<usize>(2);
        // the session is busy (no slot free) for 30 ms, far past max_delay; jobs keep coming
        let feeder = std::thread::spawn(move || {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(8));
                tx.send(job()).expect("send");
            }
            std::thread::sleep(Duration::from_millis(6));
            slot_back.send(1).expect("free");
            (tx, slot_back)
        });
        let started = Instant::now();
        let batch = gather_while_busy(job(), &rx, &spec, &free);
        let _keep = feeder.join().expect("feeder");
        assert_eq!(batch.len(), 4, "every job that came while the session was busy");
        assert!(started.elapsed() >= Duration::from_millis(30), "sealed only once the session was free");
    }

    #[test]
    fn an_idle_session_seals_after_max_delay_or_when_full() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (slot_back, free) = crossbeam_channel::bounded::<usize>(2);
        slot_back.send(1).expect("free");
        let started = Instant::now();
        let batch = gather_while_busy(job(), &rx, &spec(8, 2_000), &free);
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() < Duration::from_millis(500), "max_delay, not a busy wait");
        for _ in 0..5 {
            tx.send(job()).expect("send");
        }
        assert_eq!(gather_while_busy(job(), &rx, &spec(4, 1_000_000), &free).len(), 4, "full");
    }
}

//! What every engine kind shares: the job a model's queue carries, the reply it sends back,
//! the outputs, the counters the host reads, and the `Engine` trait a worker implements, with
//! the queue helpers beside it (`queue`). A new engine kind (a remote server, a VLM) is one
//! module that implements `Engine` with this module's types and helpers, plus its row in
//! `kinds`.

pub(crate) mod queue;
pub(crate) mod reply;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

pub(crate) use reply::ReplySender;
pub use reply::{RecvError, ReplyReceiver};

use crate::EngineError;

/// A decoded image as the engines take it: 8-bit RGB, shared between calls of one request.
pub type Image = std::sync::Arc<image::RgbImage>;

/// What a job asks of its model.
#[derive(Debug, Clone)]
pub enum JobInput {
    Image(Image),
    /// Detection keeps boxes at or above this confidence.
    Detect(Image, f32),
    /// A question about the image to a vision-language model.
    Ask(Image, String),
}

impl JobInput {
    pub(crate) fn image(&self) -> &Image {
        match self {
            JobInput::Image(i) | JobInput::Detect(i, _) | JobInput::Ask(i, _) => i,
        }
    }
}

pub(crate) struct Job {
    pub input: JobInput,
    pub deadline: Instant,
    pub reply: ReplySender,
    pub enqueued: Instant,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The model's score and its top labels with probabilities.
    Classification {
        score: f32,
        top: Vec<(String, f32)>,
    },
    Embedding(Vec<f32>),
    Detections(Vec<Detection>),
    TextLines(Vec<TextLine>),
    Answer(Answer),
}

/// A vision-language model's answer: its text after any reasoning block and, for a yes/no
/// question, P(yes) with how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub p_yes: Option<f32>,
    pub source: ScoreSource,
}

/// Where an answer's P(yes) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreSource {
    /// The endpoint's token log-probabilities of the first answer token.
    Logprobs,
    /// The answer's words (yes/no and the certainty words the operators' plans use).
    Parsed,
    /// The answer is not a yes or a no (a refusal, a description): no score.
    None,
}

impl ScoreSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ScoreSource::Logprobs => "logprobs",
            ScoreSource::Parsed => "parsed",
            ScoreSource::None => "none",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub output: Result<Output, EngineError>,
    /// Time of the run that served this job (shared by the batch).
    pub compute: Duration,
    pub queued: Duration,
    pub batch: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextLine {
    pub text: String,
    pub confidence: f32,
    /// x0, y0, x1, y1 in pixels of the original image.
    pub bbox: [f32; 4],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub class_id: u32,
    pub label: String,
    pub confidence: f32,
    /// x0, y0, x1, y1 in pixels of the original image.
    pub bbox: [f32; 4],
}

/// Counters of one model, read by the host's metrics.
#[derive(Debug, Default)]
pub struct ModelStats {
    pub runs: AtomicU64,
    pub items: AtomicU64,
    pub busy_ns: AtomicU64,
    /// A run's recent time, a moving average (1/8 weight to the newest), in ns.
    pub recent_ns: AtomicU64,
    /// Jobs run at once on the requesting thread (`Models::run_or_submit`), not queued.
    pub here: AtomicU64,
    pub failures: AtomicU64,
    pub expired: AtomicU64,
    pub queued: AtomicI64,
    /// Device memory taken by the loaded sessions (CUDA models; 0 on the CPU).
    pub gpu_bytes: AtomicU64,
    /// Workers with their sessions loaded (a lazy model drops to 0 when idle).
    pub loaded: AtomicI64,
    pub loads: AtomicU64,
    /// Batches (or, at load, models) prepared on the CPU although the model runs on CUDA.
    pub prep_fallbacks: AtomicU64,
    /// Remote models: attempts repeated after a failure (within the request's budget).
    pub retries: AtomicU64,
    /// Remote models: calls refused at once because the circuit breaker is open.
    pub fast_failures: AtomicU64,
    /// Remote models: 1 while the circuit breaker is open (the server is considered down).
    pub breaker_open: AtomicI64,
}

impl ModelStats {
    pub(crate) fn record(&self, items: usize, busy: Duration) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(items as u64, Ordering::Relaxed);
        let ns = busy.as_nanos().min(u64::MAX as u128) as u64;
        self.busy_ns.fetch_add(ns, Ordering::Relaxed);
        let _ = self.recent_ns.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |avg| {
            Some(if avg == 0 { ns } else { avg - avg / 8 + ns / 8 })
        });
    }

    /// A run's recent time (`None` before the first run).
    pub fn recent_run(&self) -> Option<Duration> {
        Some(self.recent_ns.load(Ordering::Relaxed)).filter(|ns| *ns > 0).map(Duration::from_nanos)
    }
}

/// A model's sessions on one worker thread.
pub(crate) trait Engine {
    /// Serves `first` and whatever the engine batches with it from `rx`.
    fn serve(&mut self, first: Job, rx: &Receiver<Job>);

    /// Serves `job` alone, at once, on the calling thread (a request's, holding this engine's
    /// seat: `lifecycle::RunHere`, which has checked its deadline), or gives it back: the
    /// default, for an engine whose sessions must stay on their own thread or that only runs
    /// batches.
    fn run_now(&mut self, job: Job) -> Result<(), Job> {
        Err(job)
    }
}

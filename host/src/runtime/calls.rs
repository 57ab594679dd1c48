//! Primitive calls from components to engines: memoised per request, traced, and run
//! concurrently when a component issues several at once. Starting a call is immediate (a
//! queue's `try_send`); waiting for it is async, so the component's caller yields its thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_engines::{EngineError, JobInput, ModelKind, Output, RecvError, ReplyReceiver, ScoreSource};

use super::cache::{Flight, Lead, Lookup, StageKey};
use super::request::{CallKey, RequestCtx, TraceEntry};
use crate::wit::image::ImageRef;
use crate::wit::{self, Bbox, Call, Classification, Detection, Error, LabelScore, Outcome, TextLine};

/// A model run up to this long (recently) that was queued is waited for on the calling thread
/// for at most four times as long as it took and this much more; a longer one is awaited.
const SHORT_RUN: Duration = Duration::from_micros(250);

/// A model run up to this long (recently) is made on the calling thread when a CPU worker of it
/// is idle with nothing queued (`Models::run_or_submit`): `CASCADE_RUN_HERE_US`, read once;
/// by default `SHORT_RUN`, 0 turns it off; a value that is not a number is warned of once and
/// the default kept.
fn run_here_limit() -> Duration {
    static LIMIT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let Ok(v) = std::env::var("CASCADE_RUN_HERE_US") else { return SHORT_RUN };
        match v.trim().parse() {
            Ok(us) => Duration::from_micros(us),
            Err(_) => {
                tracing::warn!(value = %v, default_us = SHORT_RUN.as_micros() as u64, "CASCADE_RUN_HERE_US is not a whole number of µs; the default is kept");
                SHORT_RUN
            }
        }
    })
}

/// A call in flight, or already answered (from the memo, the stage cache or by an immediate
/// error).
pub enum Pending {
    Done(Result<Output, Error>),
    /// Queued on the model; `lead` is set when other requests may wait for this result.
    Waiting {
        key: CallKey,
        rx: ReplyReceiver,
        started: Instant,
        lead: Option<Lead>,
    },
    /// The same call is running for another request: its result is this one's.
    Shared {
        key: CallKey,
        flight: Arc<Flight>,
        started: Instant,
        input: JobInput,
        kind: ModelKind,
    },
}

fn describe(call: &Call) -> (&'static str, String, String) {
    match call {
        Call::Classify(m) => ("classify", m.clone(), String::new()),
        Call::Detect((m, c)) => ("detect", m.clone(), format!("{:08x}", c.to_bits())),
        Call::ReadText(m) => ("read-text", m.clone(), String::new()),
        Call::Embed(m) => ("embed", m.clone(), String::new()),
        Call::Ask((m, p)) => ("ask", m.clone(), p.clone()),
    }
}

/// Starts `call` on `img`: answers from the memo, or queues the job on the model. `last`: no
/// other call of the request starts before this one is waited for, so a short run of an idle
/// CPU model may be made at once on this thread (`Models::run_or_submit`) without holding up
/// another.
pub fn start(ctx: &RequestCtx, img: &ImageRef, call: &Call, last: bool) -> Pending {
    let (primitive, model, args) = describe(call);
    let key = CallKey { image: img.id, primitive, model, args };
    if let Some(r) = ctx.remembered(&key) {
        ctx.record(entry(&key, Duration::ZERO, &r, true), Duration::ZERO);
        return Pending::Done(r);
    }
    let pixels = img.pixels.clone();
    let (kind, input) = match call {
        Call::Classify(_) => (ModelKind::Classifier, JobInput::Image(pixels)),
        Call::Embed(_) => (ModelKind::Embedder, JobInput::Image(pixels)),
        Call::Detect((_, c)) if !(0.0..=1.0).contains(c) => {
            return finish_now(ctx, key, Err(Error::InvalidArgument(format!("min-confidence {c} is outside [0, 1]"))));
        }
        Call::Detect((_, c)) => (ModelKind::Detector, JobInput::Detect(pixels, *c)),
        Call::ReadText(_) => (ModelKind::Ocr, JobInput::Image(pixels)),
        Call::Ask((_, prompt)) => (ModelKind::Vlm, JobInput::Ask(pixels, prompt.clone())),
    };
    if ctx.dry {
        let r = neutral(ctx, &key.model, kind);
        return finish_now(ctx, key, r);
    }
    if let Some(p) = &ctx.preset {
        let k = (img.content_hash(), primitive, key.model.clone(), key.args.clone());
        if let Some(o) = p.results.get(&k) {
            p.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let r = Ok(o.clone());
            ctx.record(entry(&key, Duration::ZERO, &r, true), Duration::ZERO);
            ctx.remember(key, r.clone());
            return Pending::Done(r);
        }
        p.misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !p.pixels {
            let e = Error::Engine("not in the log, and the log kept no image to run the model on".into());
            return finish_now(ctx, key, Err(e));
        }
        // a replay runs what the log lacks on the logged image, never through the stage cache
        return submit(ctx, key, kind, input, None, last);
    }
    // across requests: the stage cache, for configured models that allow it
    let cache = super::cache::global().filter(|_| ctx.models.spec(&key.model).is_some_and(|s| s.cache));
    let lead = match cache {
        Some(c) => {
            let stage = StageKey {
                models: ctx.models.generation(),
                model: key.model.clone(),
                primitive,
                args: key.args.clone(),
                image: img.content_hash(),
            };
            match c.lookup(stage) {
                Lookup::Hit(o) => {
                    let r = Ok(o);
                    ctx.record(entry(&key, Duration::ZERO, &r, true), Duration::ZERO);
                    ctx.remember(key, r.clone());
                    return Pending::Done(r);
                }
                Lookup::Wait(flight) => {
                    return Pending::Shared { key, flight, started: Instant::now(), input, kind };
                }
                Lookup::Lead(l) => Some(l),
            }
        }
        None => None,
    };
    submit(ctx, key, kind, input, lead, last)
}

/// Queues the job on the model, or with `here` runs a short one at once (resolving `lead` at
/// once if it cannot be queued).
fn submit(ctx: &RequestCtx, key: CallKey, kind: ModelKind, input: JobInput, lead: Option<Lead>, here: bool) -> Pending {
    let started = Instant::now();
    let limit = if here { run_here_limit() } else { Duration::ZERO };
    let queued = if limit.is_zero() {
        ctx.models.submit(&key.model, kind, input, ctx.deadline)
    } else {
        ctx.models.run_or_submit(&key.model, kind, input, ctx.deadline, limit)
    };
    match queued {
        Ok(rx) => Pending::Waiting { key, rx, started, lead },
        Err(e) => {
            let r = Err(to_wit(e));
            if let Some(l) = lead {
                l.resolve(&r);
            }
            finish_now(ctx, key, r)
        }
    }
}

/// A dry run's answer: the errors a real call would give for the model, else a neutral
/// result that makes no stage exit (a score of 0.5, nothing detected or read, no yes or no).
fn neutral(ctx: &RequestCtx, model: &str, kind: ModelKind) -> Result<Output, Error> {
    let spec = ctx.models.spec(model).ok_or_else(|| Error::UnknownModel(model.to_string()))?;
    if spec.kind != kind {
        let e = EngineError::WrongKind { model: model.to_string(), kind: spec.kind.as_str(), wanted: kind.as_str() };
        return Err(to_wit(e));
    }
    Ok(match kind {
        ModelKind::Classifier => Output::Classification { score: 0.5, top: Vec::new() },
        ModelKind::Embedder => Output::Embedding(Vec::new()),
        ModelKind::Detector => Output::Detections(Vec::new()),
        ModelKind::Ocr => Output::TextLines(Vec::new()),
        ModelKind::Vlm => {
            Output::Answer(cascade_engines::Answer { text: String::new(), p_yes: None, source: ScoreSource::None })
        }
    })
}

fn finish_now(ctx: &RequestCtx, key: CallKey, r: Result<Output, Error>) -> Pending {
    ctx.record(entry(&key, Duration::ZERO, &r, false), Duration::ZERO);
    ctx.remember(key, r.clone());
    Pending::Done(r)
}

/// Waits for a started call (never past the request's deadline) and memoises the result.
/// A call already answered (the memo, the stage cache) returns at once; the wait's own future
/// (about 1 KB: a timer, the shared flight's) is boxed, so that a caller's future stays small:
/// wasmtime boxes each host import's future and a component's cached calls would otherwise
/// copy it in and out for nothing.
pub async fn finish(ctx: &RequestCtx, p: Pending) -> Result<Output, Error> {
    match p {
        Pending::Done(r) => r,
        p => Box::pin(wait(ctx, p)).await,
    }
}

async fn wait(ctx: &RequestCtx, p: Pending) -> Result<Output, Error> {
    let (key, rx, started, lead) = match p {
        Pending::Done(r) => return r,
        Pending::Waiting { key, rx, started, lead } => (key, rx, started, lead),
        Pending::Shared { key, flight, started, input, kind } => {
            return match flight.wait(ctx.deadline).await {
                // the other request's deadline passed before ours: run it for ourselves
                Some(Err(Error::DeadlineExceeded)) if !ctx.remaining().is_zero() => {
                    finish(ctx, submit(ctx, key, kind, input, None, true)).await
                }
                shared => {
                    let r = shared.unwrap_or(Err(Error::DeadlineExceeded));
                    ctx.record(entry(&key, started.elapsed(), &r, true), Duration::ZERO);
                    ctx.remember(key, r.clone());
                    r
                }
            };
        }
    };
    let got = match ctx.models.expected_run(&key.model).filter(|t| *t <= SHORT_RUN) {
        // a short run is waited for on this thread: the model's thread wakes it directly, which
        // is cheaper than parking the task and having tokio wake a worker for it
        Some(t) => match rx.recv_deadline(ctx.deadline.min(Instant::now() + 4 * t + SHORT_RUN)) {
            Err(RecvError::Timeout) => tokio::time::timeout_at(ctx.deadline.into(), rx).await.ok(),
            r => Some(r),
        },
        None => tokio::time::timeout_at(ctx.deadline.into(), rx).await.ok(),
    };
    let (r, compute) = match got {
        Some(Ok(reply)) => (reply.output.map_err(to_wit), reply.compute),
        // the job was dropped unanswered (its run panicked, its worker ended)
        Some(Err(e @ RecvError::Disconnected)) => (Err(Error::Engine(format!("{}: {e}", key.model))), Duration::ZERO),
        _ => (Err(Error::DeadlineExceeded), Duration::ZERO),
    };
    if let Some(l) = lead {
        l.resolve(&r);
    }
    ctx.record(entry(&key, started.elapsed(), &r, false), compute);
    crate::metrics::global().model_time(&ctx.hotkey, &key.model, compute);
    ctx.remember(key, r.clone());
    r
}

/// Runs one call to completion; the engine's output, as memoised.
pub async fn run(ctx: &RequestCtx, img: &ImageRef, call: &Call) -> Result<Output, Error> {
    let p = start(ctx, img, call, true);
    finish(ctx, p).await
}

/// Calls one `run-all` may make; later ones answer `invalid-argument`.
pub(crate) const MAX_RUN_ALL: usize = 32;

/// Starts every call before waiting for any, so the models work concurrently.
pub async fn run_all(ctx: &RequestCtx, img: &ImageRef, calls: &[Call]) -> Vec<Result<Outcome, Error>> {
    // the same call twice in one batch runs once (the memo helps only once the first finished),
    // and a batch runs at most MAX_RUN_ALL distinct calls
    let keys: Vec<_> = calls.iter().map(describe).collect();
    let first = |i: usize| keys[..i].iter().position(|k| *k == keys[i]).unwrap_or(i);
    let starts: Vec<usize> = (0..calls.len()).filter(|i| first(*i) == *i).take(MAX_RUN_ALL).collect();
    let mut pending = Vec::new();
    for (n, &i) in starts.iter().enumerate() {
        // the last one started may run on this thread: the others are queued on their models
        pending.push((i, start(ctx, img, &calls[i], n + 1 == starts.len())));
    }
    let mut results: Vec<Option<Result<Outcome, Error>>> = vec![None; calls.len()];
    for (i, p) in pending {
        results[i] = Some(finish(ctx, p).await.map(to_outcome));
    }
    (0..calls.len())
        .map(|i| {
            results[first(i)].clone().unwrap_or_else(|| {
                Err(Error::InvalidArgument(format!("run-all takes at most {MAX_RUN_ALL} distinct calls")))
            })
        })
        .collect()
}

pub fn to_wit(e: EngineError) -> Error {
    match e {
        EngineError::UnknownModel(m) => Error::UnknownModel(m),
        e @ EngineError::WrongKind { .. } => Error::WrongKind(e.to_string()),
        EngineError::DeadlineExceeded => Error::DeadlineExceeded,
        EngineError::InvalidInput(m) => Error::InvalidArgument(m),
        e => Error::Engine(e.to_string()),
    }
}

/// The contract's form of an engine output (`ask` gets the answer's text).
pub fn to_outcome(o: Output) -> Outcome {
    match o {
        Output::Classification { score, top } => Outcome::Classify(Classification {
            score,
            top: top.into_iter().map(|(label, score)| LabelScore { label, score }).collect(),
        }),
        Output::Embedding(v) => Outcome::Embed(v),
        Output::TextLines(lines) => Outcome::ReadText(
            lines
                .into_iter()
                .map(|l| TextLine {
                    text: l.text,
                    confidence: l.confidence,
                    region: Bbox { x0: l.bbox[0], y0: l.bbox[1], x1: l.bbox[2], y1: l.bbox[3] },
                })
                .collect(),
        ),
        Output::Detections(d) => Outcome::Detect(
            d.into_iter()
                .map(|d| Detection {
                    label: d.label,
                    class_id: d.class_id,
                    confidence: d.confidence,
                    region: Bbox { x0: d.bbox[0], y0: d.bbox[1], x1: d.bbox[2], y1: d.bbox[3] },
                })
                .collect(),
        ),
        Output::Answer(a) => Outcome::Ask(a.text),
    }
}

/// The contract's form of a VLM answer.
pub(crate) fn to_answer(a: cascade_engines::Answer) -> wit::Answer {
    wit::Answer {
        text: a.text,
        p_yes: a.p_yes,
        source: match a.source {
            ScoreSource::Logprobs => wit::ScoreSource::Logprobs,
            ScoreSource::Parsed => wit::ScoreSource::Parsed,
            ScoreSource::None => wit::ScoreSource::None,
        },
    }
}

fn entry(key: &CallKey, took: Duration, r: &Result<Output, Error>, cached: bool) -> TraceEntry {
    TraceEntry {
        primitive: key.primitive,
        model: key.model.clone(),
        ms: took.as_secs_f64() * 1e3,
        result: summary(r),
        cached,
    }
}

/// `format!("score={v:.4}")`, without the float formatter's exact mode for the usual scores
/// (it falls back to bignum arithmetic for many values; a trace entry is written for every
/// call, cached ones included). A non-negative finite value below 10⁴ whose ten-thousandths
/// are not within 10⁻⁶ of a tie is rounded in f64, whose error there (under 10⁻⁸ of a unit)
/// cannot cross the tie; anything else goes through `format!`.
fn score4(v: f32) -> String {
    let m = f64::from(v) * 1e4;
    if !(v.is_sign_positive() && m < 1e8 && (m - m.floor() - 0.5).abs() > 1e-6) {
        return format!("score={v:.4}");
    }
    let n = m.round() as u64;
    let mut s = String::with_capacity(20);
    s.push_str("score=");
    // integers only: two writes of whole numbers
    use std::fmt::Write as _;
    let _ = write!(s, "{}.{:04}", n / 10_000, n % 10_000);
    s
}

fn summary(r: &Result<Output, Error>) -> String {
    match r {
        Err(e) => format!("error: {}", e.message()),
        Ok(Output::Classification { score, .. }) => score4(*score),
        Ok(Output::Embedding(v)) => format!("dim={}", v.len()),
        Ok(Output::Answer(a)) => match a.p_yes {
            Some(p) => format!("answer={:?} p_yes={p:.4} ({})", a.text, a.source.as_str()),
            None => format!("answer={:?} (no yes/no)", a.text),
        },
        Ok(Output::TextLines(lines)) => {
            let t: Vec<String> = lines.iter().map(|l| format!("{:?} {:.2}", l.text, l.confidence)).collect();
            format!("{} lines: {}", lines.len(), t.join(", "))
        }
        Ok(Output::Detections(d)) => {
            let t: Vec<String> = d.iter().take(8).map(|d| format!("{} {:.2}", d.label, d.confidence)).collect();
            format!("{} boxes: {}", d.len(), t.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::score4;

    /// The short path writes what `format!` writes, ties, signs and the far ends included.
    #[test]
    fn a_score_is_written_as_format_writes_it() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut values: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            0.5,
            0.03125,
            0.96875,
            0.00005,
            0.99995,
            0.12345,
            1e-7,
            9999.99995,
            1e4,
            1e9,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -0.5,
        ];
        // ties of the fourth decimal that are exact in binary: k/32
        values.extend((0..=64).map(|k| k as f32 / 32.0));
        // scores as models give them, and any bit pattern at all
        values.extend((0..200_000).map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32));
        values.extend((0..200_000).map(|_| f32::from_bits(next() as u32)));
        for v in values {
            assert_eq!(score4(v), format!("score={v:.4}"), "{v:e} ({:#x})", v.to_bits());
        }
    }
}

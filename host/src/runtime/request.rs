//! One request's state on the host side: its images, the memo of primitive results, the trace
//! and the deadline. Shared by every component the request reaches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_engines::{Image, Models};
use parking_lot::Mutex;
use serde::Serialize;

use cascade_engines::Output;

use crate::wit::image::ImageRef;
use crate::wit::Error;

/// Images a request's components may hold (the original counts as one).
pub(crate) const MAX_DERIVED_IMAGES: u32 = 256;
/// Pixels of crops and flips one request may derive in all (32 full-HD frames' worth).
pub(crate) const MAX_DERIVED_PIXELS: u64 = 64 << 20;

/// A memoised result with the content key of its image, where known.
pub type KeyedResult = (Option<[u8; 16]>, CallKey, Result<Output, Error>);

/// One primitive call as the trace reports it.
#[derive(Debug, Clone, Serialize)]
pub struct TraceEntry {
    pub primitive: &'static str,
    pub model: String,
    #[serde(serialize_with = "crate::answer::ser_tenth_ms")]
    pub ms: f64,
    pub result: String,
    pub cached: bool,
}

/// What a call is, for memoisation: the primitive, its arguments and the image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallKey {
    pub image: u32,
    pub primitive: &'static str,
    pub model: String,
    /// Extra arguments, encoded (detect's minimum confidence bits, ask's prompt).
    pub args: String,
}

pub struct RequestCtx {
    pub models: Arc<Models>,
    pub deadline: Instant,
    pub hotkey: String,
    /// The content key of the request's image, from its encoded bytes (None offline).
    origin: Option<[u8; 16]>,
    /// A load-time dry run: primitives check their model and arguments and answer neutral
    /// results (a score of 0.5, nothing found) without running any model, so that the policy
    /// goes through every stage.
    pub dry: bool,
    next_image: AtomicU32,
    /// Pixels of the images components derived (crops, flips), bounded per request.
    derived_pixels: std::sync::atomic::AtomicU64,
    memo: Mutex<HashMap<CallKey, Result<Output, Error>>>,
    /// Content keys of the request's images by handle id, where known (the prediction log
    /// keys results by them), and the original's size.
    keys: Mutex<HashMap<u32, [u8; 16]>>,
    size: Mutex<(u32, u32)>,
    /// Results to answer from instead of the models (`cascade replay`), by content key.
    pub preset: Option<Arc<super::cache::Preset>>,
    trace: Mutex<Vec<TraceEntry>>,
    model_time: Mutex<Duration>,
}

impl RequestCtx {
    pub fn new(models: Arc<Models>, hotkey: &str, deadline: Instant) -> Arc<RequestCtx> {
        Arc::new(RequestCtx {
            models,
            deadline,
            hotkey: hotkey.to_string(),
            origin: None,
            dry: false,
            next_image: AtomicU32::new(0),
            derived_pixels: std::sync::atomic::AtomicU64::new(0),
            memo: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            size: Mutex::new((0, 0)),
            preset: None,
            trace: Mutex::new(Vec::new()),
            model_time: Mutex::new(Duration::ZERO),
        })
    }

    /// A handle on the request's image (its key is the request bytes' when known).
    pub fn image(&self, pixels: Image) -> ImageRef {
        let id = self.next_image.fetch_add(1, Ordering::Relaxed);
        *self.size.lock() = (pixels.width(), pixels.height());
        match self.origin {
            Some(key) => {
                self.keys.lock().insert(id, key);
                ImageRef::with_key(id, pixels, key)
            }
            None => ImageRef::new(id, pixels),
        }
    }

    /// A handle on an image derived from the request's.
    pub(crate) fn derived(&self, pixels: Image, key: [u8; 16]) -> ImageRef {
        let id = self.next_image.fetch_add(1, Ordering::Relaxed);
        self.keys.lock().insert(id, key);
        ImageRef::with_key(id, pixels, key)
    }

    /// The content key of the request's image, when it came with its bytes.
    pub fn origin(&self) -> Option<[u8; 16]> {
        self.origin
    }

    /// The request's image's width and height.
    pub(crate) fn original_size(&self) -> (u32, u32) {
        *self.size.lock()
    }

    /// Every primitive result so far, with the content key of the image it was computed on.
    pub fn results(&self) -> Vec<KeyedResult> {
        let keys = self.keys.lock();
        let mut v: Vec<_> =
            self.memo.lock().iter().map(|(k, r)| (keys.get(&k.image).copied(), k.clone(), r.clone())).collect();
        v.sort_by(|a, b| (a.1.image, a.1.primitive, &a.1.model).cmp(&(b.1.image, b.1.primitive, &b.1.model)));
        v
    }

    /// Answers calls from `preset` instead of the models (a replay).
    pub fn with_preset(mut self: Arc<Self>, preset: Arc<super::cache::Preset>) -> Arc<Self> {
        if let Some(me) = Arc::get_mut(&mut self) {
            me.preset = Some(preset);
        }
        self
    }

    /// Makes this a dry run (see `dry`).
    pub(crate) fn dry_run(mut self: Arc<Self>) -> Arc<Self> {
        if let Some(me) = Arc::get_mut(&mut self) {
            me.dry = true;
        }
        self
    }

    /// Keys the request's image by its encoded bytes (`wit::image::bytes_key`).
    pub fn with_origin(mut self: Arc<Self>, key: [u8; 16]) -> Arc<Self> {
        if let Some(me) = Arc::get_mut(&mut self) {
            me.origin = Some(key);
        }
        self
    }

    /// Counts a derived image against the request's allowance (`MAX_DERIVED_PIXELS`, and at
    /// most `MAX_DERIVED_IMAGES` images); `false` when it would go past it.
    pub fn derive(&self, pixels: u64) -> bool {
        let images = self.next_image.load(Ordering::Relaxed);
        let before = self.derived_pixels.fetch_add(pixels, Ordering::Relaxed);
        images < MAX_DERIVED_IMAGES && before + pixels <= MAX_DERIVED_PIXELS
    }

    pub fn remembered(&self, key: &CallKey) -> Option<Result<Output, Error>> {
        self.memo.lock().get(key).cloned()
    }

    pub fn remember(&self, key: CallKey, result: Result<Output, Error>) {
        self.memo.lock().insert(key, result);
    }

    pub fn record(&self, entry: TraceEntry, model_time: Duration) {
        self.trace.lock().push(entry);
        *self.model_time.lock() += model_time;
    }

    pub fn trace(&self) -> Vec<TraceEntry> {
        self.trace.lock().clone()
    }

    pub fn model_time(&self) -> Duration {
        *self.model_time.lock()
    }

    /// The best partial evidence for a failed policy: the mean of the classifier scores
    /// already produced for the request's own image (else for any image it derived), with the
    /// models that gave them. `None` when no classifier scored anything.
    pub fn evidence(&self) -> Option<(f32, String)> {
        let memo = self.memo.lock();
        let scores = |original: bool| -> Vec<(&str, f32)> {
            let mut v: Vec<(&str, f32)> = memo
                .iter()
                .filter(|(k, _)| k.primitive == "classify" && (k.image == 0) == original)
                .filter_map(|(k, r)| match r {
                    Ok(Output::Classification { score, .. }) if score.is_finite() => Some((k.model.as_str(), *score)),
                    _ => None,
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(b.0));
            v
        };
        let found = Some(scores(true)).filter(|v| !v.is_empty()).unwrap_or_else(|| scores(false));
        if found.is_empty() {
            return None;
        }
        let mean = found.iter().map(|(_, s)| s).sum::<f32>() / found.len() as f32;
        let mut models: Vec<&str> = found.iter().map(|(m, _)| *m).collect();
        models.dedup();
        Some((mean, models.join("+")))
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

//! One request's state on the host side: its images, the memo of primitive results, the trace
//! and the deadline. Shared by every component the request reaches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_engines::{Image, Models};
use parking_lot::Mutex;
use serde::Serialize;

use crate::wit::{Error, Outcome};

/// Images a request's components may hold (the original counts as one).
pub const MAX_DERIVED_IMAGES: u32 = 256;
/// Pixels of crops and flips one request may derive in all (32 full-HD frames' worth).
pub const MAX_DERIVED_PIXELS: u64 = 64 << 20;

/// The host side of an `image` resource handle.
pub struct ImageRef {
    /// Unique within the request: the memo key for "this image".
    pub id: u32,
    pub pixels: Image,
    /// The pixels' hash (the stage cache's key across requests), computed on first use.
    hash: std::sync::OnceLock<[u8; 16]>,
}

impl ImageRef {
    pub fn new(id: u32, pixels: Image) -> ImageRef {
        ImageRef { id, pixels, hash: std::sync::OnceLock::new() }
    }

    /// sha-256 of the dimensions and pixels, truncated to 128 bits.
    pub fn content_hash(&self) -> [u8; 16] {
        *self.hash.get_or_init(|| {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(self.pixels.width().to_le_bytes());
            h.update(self.pixels.height().to_le_bytes());
            h.update(self.pixels.as_raw());
            let d = h.finalize();
            let mut out = [0u8; 16];
            out.copy_from_slice(&d[..16]);
            out
        })
    }
}

/// One primitive call as the trace reports it.
#[derive(Debug, Clone, Serialize)]
pub struct TraceEntry {
    pub primitive: &'static str,
    pub model: String,
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
    next_image: AtomicU32,
    /// Pixels of the images components derived (crops, flips), bounded per request.
    derived_pixels: std::sync::atomic::AtomicU64,
    memo: Mutex<HashMap<CallKey, Result<Outcome, Error>>>,
    trace: Mutex<Vec<TraceEntry>>,
    model_time: Mutex<Duration>,
}

impl RequestCtx {
    pub fn new(models: Arc<Models>, hotkey: &str, deadline: Instant) -> Arc<RequestCtx> {
        Arc::new(RequestCtx {
            models,
            deadline,
            hotkey: hotkey.to_string(),
            next_image: AtomicU32::new(0),
            derived_pixels: std::sync::atomic::AtomicU64::new(0),
            memo: Mutex::new(HashMap::new()),
            trace: Mutex::new(Vec::new()),
            model_time: Mutex::new(Duration::ZERO),
        })
    }

    pub fn image(&self, pixels: Image) -> ImageRef {
        ImageRef::new(self.next_image.fetch_add(1, Ordering::Relaxed), pixels)
    }

    /// Counts a derived image against the request's allowance (`MAX_DERIVED_PIXELS`, and at
    /// most `MAX_DERIVED_IMAGES` images); `false` when it would go past it.
    pub fn derive(&self, pixels: u64) -> bool {
        let images = self.next_image.load(Ordering::Relaxed);
        let before = self.derived_pixels.fetch_add(pixels, Ordering::Relaxed);
        images < MAX_DERIVED_IMAGES && before + pixels <= MAX_DERIVED_PIXELS
    }

    pub fn remembered(&self, key: &CallKey) -> Option<Result<Outcome, Error>> {
        self.memo.lock().get(key).cloned()
    }

    pub fn remember(&self, key: CallKey, result: Result<Outcome, Error>) {
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
                    Ok(Outcome::Classify(c)) if c.score.is_finite() => Some((k.model.as_str(), c.score)),
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

//! What the server is: the serving state (`Serving`, swapped whole on every reload and read
//! through one atomic load per request) and the process-wide parts around it (limits, nonces,
//! the decoding slots, the status page's recent answers, the shutdown signal).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use cascade_engines::Models;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::StatusCode;

use cascade_common::image::DecodeError;

use super::ingress::{IngressLimits, Refusal};
use crate::answer::Answer;
use crate::policy::Hotkey;

/// What requests are served by: swapped whole, never edited in place.
pub struct Serving {
    pub models: Arc<Models>,
    /// Admission settings and the metagraph snapshot.
    pub chain: Arc<crate::chain::Chain>,
    pub hotkeys: BTreeMap<String, Arc<Hotkey>>,
    /// Counts the swaps; each answer says which generation served it.
    pub generation: u64,
}

impl Serving {
    /// What keeps validators from answers, over every hotkey (`chain::health`).
    pub fn alarms(&self) -> Vec<crate::chain::health::Alarm> {
        self.hotkeys.values().flat_map(|h| h.alarms(&self.chain)).collect()
    }
}

pub struct Server {
    pub serving: ArcSwap<Serving>,
    /// Reload history for `/admin/status`.
    pub status: parking_lot::Mutex<crate::reload::status::ReloadStatus>,
    /// Admin requests from other than loopback need `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// Dendrite nonces seen (subnet requests).
    pub nonces: super::axon::verify::Nonces,
    pub limits: IngressLimits,
    /// How long a client may take to send its headers and its body.
    pub read_timeout: Duration,
    /// The last answers (for the status page), newest last.
    pub recent: parking_lot::Mutex<std::collections::VecDeque<Recent>>,
    /// Each hotkey's last hour: answers, refusals, callers (the status page).
    pub activity: super::activity::Activity,
    /// What the log last said of the alarms, for its rate limit (`health`).
    pub(super) alarm_log: parking_lot::Mutex<super::health::AlarmLog>,
    /// When this server started (uptime on the status page).
    pub started: Instant,
    /// How the admin API runs a reload that takes the snapshot file whatever its order (set by
    /// `serve`: the reload, and the reloader's switch).
    pub reload_hook: std::sync::OnceLock<ReloadHook>,
    /// Set once to stop accepting (graceful shutdown).
    pub(super) stopping: tokio::sync::watch::Sender<bool>,
    /// How long a shutdown waits for requests in flight.
    pub drain: Duration,
    /// Hotkeys served on listeners of their own, with the address bound (at start).
    pub pinned: parking_lot::RwLock<BTreeMap<String, SocketAddr>>,
    /// Open connections allowed at once (see `run`).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// `connections`' size, for the listeners' own caps.
    pub max_connections: usize,
    /// Listeners this server runs (their caps leave room for each other).
    pub listeners: std::sync::atomic::AtomicUsize,
    /// Open connections per peer address.
    pub per_ip: Arc<super::conns::PerIp>,
    /// How long a new connection may stay silent before it is closed.
    pub first_byte_timeout: Duration,
    /// Decodes of small images (validators' 224² challenges; up to `SMALL_PIXELS`) running at
    /// once: a pool of their own, so they never queue behind large photos.
    pub decodes: tokio::sync::Semaphore,
    /// Decodes of larger images running at once, ...
    pub large_decodes: tokio::sync::Semaphore,
    /// ... and the memory they may hold until their answer, in MiB (`--decode-memory-mb`).
    pub decode_memory: tokio::sync::Semaphore,
    pub decode_memory_mb: u32,
    /// The short side big JPEGs are decoded down to, no smaller (`--decode-min-side`): `None`
    /// for twice the largest input of the loaded models, `Some(0)` to always decode in full.
    pub decode_min_side: Option<u32>,
}

/// A reload to run, and the switch that makes it take the snapshot file whatever its order.
pub type ReloadHook = (Arc<dyn Fn() + Send + Sync>, Arc<std::sync::atomic::AtomicBool>);

/// Answers kept for the status page.
pub(crate) const RECENT: usize = 50;

/// One answer, as the status page lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recent {
    pub at_unix_ms: u128,
    pub hotkey: String,
    pub arm: &'static str,
    pub stage: String,
    pub outcome: &'static str,
    pub ms: f64,
}

/// Images up to this many pixels (1 MP: validators send 224²) decode in the small pool.
pub const SMALL_PIXELS: u64 = 1 << 20;
/// Memory decodes of large images may hold unless `--decode-memory-mb` says otherwise.
pub const DEFAULT_DECODE_MEMORY_MB: u32 = 1024;

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2)
}

/// A request's turn to decode: its slot, and for a large image the memory it holds until the
/// answer (the decoded image lives through the policy).
pub(crate) struct DecodeTurn<'a> {
    slot: tokio::sync::SemaphorePermit<'a>,
    memory: Option<tokio::sync::SemaphorePermit<'a>>,
    /// For a big JPEG reserved at its scaled size: what a full decode would need besides.
    full: Option<FullDecode<'a>>,
}

/// The rest of a full decode's memory, for a big JPEG reserved at its scaled size.
struct FullDecode<'a> {
    pool: &'a tokio::sync::Semaphore,
    extra_mb: u32,
    full_mb: u64,
    budget_mb: u32,
    dims: (u32, u32),
}

impl<'a> DecodeTurn<'a> {
    /// Before a refused scaled decode is done in full: the rest of the full decode's memory
    /// if it is free now (held, like the rest, until the answer), else why not — 503 while it
    /// is taken, 413 when the whole budget is smaller.
    pub(crate) fn for_full_decode(&self) -> Result<Option<tokio::sync::SemaphorePermit<'a>>, DecodeError> {
        let Some(f) = &self.full else { return Ok(None) };
        let (w, h) = f.dims;
        if f.full_mb > u64::from(f.budget_mb) {
            return Err(DecodeError::Memory {
                busy: false,
                message: format!(
                    "libjpeg-turbo could not decode this {w}×{h} JPEG scaled, and a full decode needs {} MiB, more than --decode-memory-mb {}",
                    f.full_mb, f.budget_mb
                ),
            });
        }
        f.pool.try_acquire_many(f.extra_mb).map(Some).map_err(|_| DecodeError::Memory {
            busy: true,
            message: format!(
                "libjpeg-turbo could not decode this {w}×{h} JPEG scaled, and the {} MiB more a full decode needs are not free now",
                f.extra_mb
            ),
        })
    }

    /// The slot (given back after the decode) and the memory (after the answer).
    pub(crate) fn split(self) -> (tokio::sync::SemaphorePermit<'a>, Option<tokio::sync::SemaphorePermit<'a>>) {
        (self.slot, self.memory)
    }
}

/// Connections served at once unless `set_max_connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

impl Server {
    pub fn new(serving: Serving, limits: IngressLimits, read_timeout: Duration, admin_token: Option<String>) -> Server {
        Server {
            serving: ArcSwap::from_pointee(serving),
            status: parking_lot::Mutex::new(Default::default()),
            admin_token,
            nonces: super::axon::verify::Nonces::new(100_000, 4096),
            limits,
            read_timeout,
            recent: parking_lot::Mutex::new(std::collections::VecDeque::with_capacity(RECENT)),
            activity: Default::default(),
            alarm_log: Default::default(),
            started: Instant::now(),
            reload_hook: std::sync::OnceLock::new(),
            stopping: tokio::sync::watch::Sender::new(false),
            drain: Duration::from_secs(20),
            pinned: parking_lot::RwLock::new(BTreeMap::new()),
            connections: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_CONNECTIONS)),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            listeners: std::sync::atomic::AtomicUsize::new(1),
            per_ip: super::conns::PerIp::new(super::conns::DEFAULT_PER_IP),
            first_byte_timeout: super::conns::DEFAULT_FIRST_BYTE,
            decodes: tokio::sync::Semaphore::new(cores()),
            large_decodes: tokio::sync::Semaphore::new(cores()),
            decode_memory: tokio::sync::Semaphore::new(DEFAULT_DECODE_MEMORY_MB as usize),
            decode_memory_mb: DEFAULT_DECODE_MEMORY_MB,
            decode_min_side: None,
        }
    }

    /// The short side a big JPEG is decoded down to for `models` (see `decode_min_side`).
    pub(crate) fn min_side(&self, models: &cascade_engines::Models) -> u32 {
        self.decode_min_side.unwrap_or_else(|| 2 * models.input_side())
    }

    /// Records an answer for the status page (the oldest one goes).
    pub(crate) fn note_answer(&self, hotkey: &str, answer: &Answer, took: Duration) {
        let r = Recent {
            at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            hotkey: hotkey.to_string(),
            arm: answer.arm,
            stage: answer.stage.chars().take(64).collect(),
            outcome: answer.source.outcome(),
            ms: took.as_secs_f64() * 1e3,
        };
        self.activity.answer(hotkey, &answer.stage, answer.source.outcome(), answer.prediction, took);
        let mut q = self.recent.lock();
        if q.len() >= RECENT {
            q.pop_front();
        }
        q.push_back(r);
    }

    /// Caps open connections (before serving starts).
    pub fn set_max_connections(&mut self, n: usize) {
        self.connections = Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self.max_connections = n.max(1);
    }

    /// Caps the connections one peer address may hold open (before serving starts).
    pub fn set_max_connections_per_ip(&mut self, n: usize) {
        self.per_ip = super::conns::PerIp::new(n);
    }

    /// Caps the memory decodes of large images may hold (before serving starts).
    pub fn set_decode_memory_mb(&mut self, mb: u32) {
        self.decode_memory = tokio::sync::Semaphore::new(mb.max(1) as usize);
        self.decode_memory_mb = mb.max(1);
    }

    /// A turn to decode an image of `dims` (from its header): a slot of the small images' pool,
    /// or one of the large images' with the memory the decode may hold — at the size it will be
    /// decoded at (`scale`: a big JPEG's DCT scaling; the rest of a full decode is taken only if
    /// libjpeg-turbo refuses the scaled one, `DecodeTurn::for_full_decode`). Waited for at most half
    /// the request's budget, so that the policy keeps the rest: past it, a 503 `busy` while the
    /// caller can still use it, not a late failure.
    pub(crate) async fn decode_turn(
        &self,
        arrived: Instant,
        budget: Duration,
        dims: Option<(u32, u32)>,
        scale: u32,
    ) -> Result<DecodeTurn<'_>, Refusal> {
        let wait = (budget / 2).saturating_sub(arrived.elapsed());
        let busy = |what: &str| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("no {what} came free within half the request's budget"),
            )
        };
        let (w, h) = dims.unwrap_or((1, 1));
        if u64::from(w) * u64::from(h) <= SMALL_PIXELS {
            return match tokio::time::timeout(wait, self.decodes.acquire()).await {
                Ok(Ok(p)) => Ok(DecodeTurn { slot: p, memory: None, full: None }),
                _ => Err(busy("decoding slot")),
            };
        }
        // a big JPEG decoded scaled in the DCT needs the memory of its scaled size
        let scale = scale.max(1);
        let (sw, sh) = (w.div_ceil(scale), h.div_ceil(scale));
        let cost_mb = |w: u32, h: u32| cascade_common::image::decode_cost_bytes(w, h).div_ceil(1 << 20).max(1);
        let (mb, full_mb) = (cost_mb(sw, sh), cost_mb(w, h));
        if mb > u64::from(self.decode_memory_mb) {
            let at = if scale > 1 { format!(" (decoded at 1/{scale}: {sw}×{sh})") } else { String::new() };
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "image-too-large",
                format!(
                    "a {w}×{h} image{at} needs {mb} MiB to decode, more than --decode-memory-mb {}",
                    self.decode_memory_mb
                ),
            ));
        }
        let started = Instant::now();
        let slot = match tokio::time::timeout(wait, self.large_decodes.acquire()).await {
            Ok(Ok(p)) => p,
            _ => return Err(busy("decoding slot")),
        };
        let memory = match tokio::time::timeout(
            wait.saturating_sub(started.elapsed()),
            self.decode_memory.acquire_many(mb as u32),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => return Err(busy(&format!("decoding memory ({mb} MiB of {})", self.decode_memory_mb))),
        };
        let full = (full_mb > mb).then(|| FullDecode {
            pool: &self.decode_memory,
            extra_mb: (full_mb - mb).min(u64::from(u32::MAX)) as u32,
            full_mb,
            budget_mb: self.decode_memory_mb,
            dims: (w, h),
        });
        Ok(DecodeTurn { slot, memory: Some(memory), full })
    }

    /// Swaps in the result of a reload (when anything changed) and records it.
    pub fn apply(&self, snap: crate::reload::Snapshot) {
        let changed = !snap.applied.is_empty();
        if changed {
            let generation = self.serving.load().generation + 1;
            self.serving.store(Arc::new(Serving {
                models: snap.models.clone(),
                chain: snap.chain.clone(),
                hotkeys: snap.hotkeys.clone(),
                generation,
            }));
            tracing::info!(generation, files = ?snap.applied, took_ms = snap.took.as_millis() as u64, "reload applied");
        }
        for w in &snap.warnings {
            tracing::debug!("{w}");
        }
        // listeners are bound at start: a listen address that a reload adds or moves waits for
        // a restart (the hotkey stays reachable on the shared port meanwhile)
        let pinned = self.pinned.read();
        for h in snap.hotkeys.values() {
            if let Some(want) = h.axon.listen.filter(|a| pinned.get(&h.name) != Some(a)) {
                tracing::warn!(
                    hotkey = %h.name,
                    listen = %want,
                    "axon.listen takes effect at the next restart; until then the hotkey is served on the shared port"
                );
            }
        }
        drop(pinned);
        self.status.lock().record(&snap);
    }

    /// Serves nothing from now on: the models and hotkeys are let go (at shutdown, so the last
    /// reference to the models can be dropped before the process exits).
    pub fn stop_serving(&self) {
        let generation = self.serving.load().generation + 1;
        self.serving.store(Arc::new(Serving {
            models: Arc::new(Models::default()),
            chain: Arc::default(),
            hotkeys: BTreeMap::new(),
            generation,
        }));
    }

    /// Stops every listener: no new connections; requests in flight finish within the drain
    /// limit (SIGTERM, Ctrl-C).
    pub fn begin_shutdown(&self) {
        let _ = self.stopping.send(true);
    }

    /// The whole body, within the size limit and the read timeout (408, 413, 400 otherwise).
    pub(crate) async fn read_body(&self, body: Incoming) -> Result<Bytes, Refusal> {
        let limit = self.limits.max_body_bytes;
        match tokio::time::timeout(self.read_timeout, Limited::new(body, limit).collect()).await {
            Err(_) => Err(Refusal::new(StatusCode::REQUEST_TIMEOUT, "read-timeout", "the body did not arrive in time")),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("body exceeds {limit} bytes"),
            )),
            Ok(Err(e)) => Err(Refusal::new(StatusCode::BAD_REQUEST, "bad-body", format!("cannot read the body: {e}"))),
            Ok(Ok(b)) => Ok(b.to_bytes()),
        }
    }
}

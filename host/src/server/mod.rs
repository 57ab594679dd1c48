//! HTTP ingress (hyper 1 on tokio): `/v1/predict/{hotkey}`, `/healthz`, `/metrics`.
//! The serving state is read through one atomic load per request; policies run on blocking
//! threads because component calls wait on model queues.

pub mod decoded;
pub mod ingress;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use cascade_engines::Models;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;

use crate::policy::{Answer, Hotkey};
pub use ingress::{IngressLimits, Refusal};

/// What requests are served by: swapped whole, never edited in place.
pub struct Serving {
    pub models: Arc<Models>,
    /// Admission settings and the metagraph snapshot.
    pub chain: Arc<crate::chain::Chain>,
    pub hotkeys: BTreeMap<String, Arc<Hotkey>>,
    /// Counts the swaps; each answer says which generation served it.
    pub generation: u64,
}

pub struct Server {
    pub serving: ArcSwap<Serving>,
    /// Reload history for `/admin/status`.
    pub status: parking_lot::Mutex<crate::admin::ReloadStatus>,
    /// Admin requests from other than loopback need `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// Dendrite nonces seen (subnet requests).
    pub nonces: crate::axon::verify::Nonces,
    pub limits: IngressLimits,
    /// How long a client may take to send its headers and its body.
    pub read_timeout: Duration,
    /// The last answers (for the status page), newest last.
    pub recent: parking_lot::Mutex<std::collections::VecDeque<Recent>>,
    /// Set once to stop accepting (graceful shutdown).
    stopping: tokio::sync::watch::Sender<bool>,
    /// How long a shutdown waits for requests in flight.
    pub drain: Duration,
    /// Hotkeys served on listeners of their own, with the address bound (at start).
    pub pinned: parking_lot::RwLock<BTreeMap<String, SocketAddr>>,
    /// Open connections allowed at once (see `run`).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// Image decodes running at once (each may hold a large buffer): requests queue here,
    /// inside their own time budget.
    pub decodes: tokio::sync::Semaphore,
}

type Resp = Response<Full<Bytes>>;

/// Answers kept for the status page.
pub const RECENT: usize = 50;

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

/// Connections served at once unless `set_max_connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// `accept` failures, logged at most once a second with how many there were.
#[derive(Default)]
struct AcceptFailures {
    since: Option<Instant>,
    count: u64,
}

impl AcceptFailures {
    fn note(&mut self, e: &std::io::Error) {
        self.count += 1;
        if self.since.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(error = %e, failures = self.count, "accept failed");
            self.since = Some(Instant::now());
            self.count = 0;
        }
    }
}

/// Oversized bodies up to this size are read and dropped before the 413 is sent.
const DRAIN_CAP: u64 = 32 << 20;

pub(crate) fn json_response(status: StatusCode, v: &serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

fn refusal(r: Refusal) -> Resp {
    crate::metrics::global().rejected(r.code, r.status.as_u16());
    let mut resp = json_response(r.status, &json!({"error": {"code": r.code, "message": r.message}}));
    // a refusal may leave the body unread: close rather than read it as the next request
    resp.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    resp
}

impl Server {
    pub fn new(serving: Serving, limits: IngressLimits, read_timeout: Duration, admin_token: Option<String>) -> Server {
        Server {
            serving: ArcSwap::from_pointee(serving),
            status: parking_lot::Mutex::new(Default::default()),
            admin_token,
            nonces: crate::axon::verify::Nonces::new(100_000, 4096),
            limits,
            read_timeout,
            recent: parking_lot::Mutex::new(std::collections::VecDeque::with_capacity(RECENT)),
            stopping: tokio::sync::watch::Sender::new(false),
            drain: Duration::from_secs(20),
            pinned: parking_lot::RwLock::new(BTreeMap::new()),
            connections: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_CONNECTIONS)),
            decodes: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2),
            ),
        }
    }

    /// Records an answer for the status page (the oldest one goes).
    pub fn note_answer(&self, hotkey: &str, answer: &Answer, took: Duration) {
        let r = Recent {
            at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            hotkey: hotkey.to_string(),
            arm: answer.arm,
            stage: answer.stage.chars().take(64).collect(),
            outcome: crate::axon::outcome(answer),
            ms: took.as_secs_f64() * 1e3,
        };
        let mut q = self.recent.lock();
        if q.len() >= RECENT {
            q.pop_front();
        }
        q.push_back(r);
    }

    /// Caps open connections (before serving starts).
    pub fn set_max_connections(&mut self, n: usize) {
        self.connections = Arc::new(tokio::sync::Semaphore::new(n.max(1)));
    }

    /// A turn to decode, waited for no longer than the request's budget allows.
    pub(crate) async fn decode_turn(
        &self,
        arrived: Instant,
        budget: Duration,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, Refusal> {
        let left = budget.saturating_sub(arrived.elapsed());
        match tokio::time::timeout(left, self.decodes.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "no decoding slot came free within the request's budget",
            )),
        }
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

    /// Accepts connections until the process ends. On a `pinned` listener every subnet
    /// request is for that hotkey.
    /// Open connections are capped (`connections`, shared by every listener): past the cap,
    /// new ones wait in the kernel's queue instead of failing `accept` for everyone once the
    /// process runs out of file descriptors.
    pub async fn run(self: Arc<Self>, listener: TcpListener, pinned: Option<String>) -> std::io::Result<()> {
        let mut failures = AcceptFailures::default();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut stop = self.stopping.subscribe();
        loop {
            if *stop.borrow() {
                break;
            }
            let slot = tokio::select! {
                s = self.connections.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
                _ = stop.changed() => break,
            };
            let (stream, peer): (_, SocketAddr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        failures.note(&e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let me = self.clone();
            let timeout = self.read_timeout;
            let pinned = pinned.clone();
            let svc = service_fn(move |req| {
                let (me, pinned) = (me.clone(), pinned.clone());
                async move { Ok::<_, Infallible>(me.handle(req, peer, pinned.as_deref()).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), svc);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended");
                }
                drop(slot);
            });
        }
        // stop accepting, let the requests in flight finish (idle keep-alive connections are
        // closed), up to the drain limit
        drop(listener);
        let open = graceful.count();
        match tokio::time::timeout(self.drain, graceful.shutdown()).await {
            Ok(()) => tracing::info!(connections = open, "drained"),
            Err(_) => tracing::warn!(
                limit_s = self.drain.as_secs_f64(),
                "drain limit reached; connections still open were cut"
            ),
        }
        Ok(())
    }

    /// Stops every listener: no new connections; requests in flight finish within the drain
    /// limit (SIGTERM, Ctrl-C).
    pub fn begin_shutdown(&self) {
        let _ = self.stopping.send(true);
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr, pinned: Option<&str>) -> Resp {
        let path = req.uri().path().to_string();
        if crate::axon::is_synapse_path(&path) {
            return crate::axon::handle(self, req, pinned).await;
        }
        if pinned.is_some() {
            // a hotkey's own (public) axon port serves the synapse routes and nothing else:
            // not the HTTP API, not the metrics, not the admin API
            return crate::axon::not_found(&path);
        }
        if path == "/admin" || path.starts_with("/admin/") {
            return match crate::admin::handle(self, &req, peer) {
                Ok(r) => r,
                Err(r) => refusal(r),
            };
        }
        match (req.method(), path.as_str()) {
            (&Method::GET, "/healthz") => {
                let s = self.serving.load();
                let hotkeys: Vec<&String> = s.hotkeys.keys().collect();
                json_response(StatusCode::OK, &json!({"status": "ok", "hotkeys": hotkeys}))
            }
            (&Method::GET, "/metrics") => {
                let s = self.serving.load();
                let mut r = Response::new(Full::new(Bytes::from(
                    crate::metrics::global().render(Some(&s.models), Some(&s.chain)),
                )));
                r.headers_mut()
                    .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
                r
            }
            (m, p) if p.starts_with("/v1/predict/") => {
                if m != Method::POST {
                    return refusal(Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "use POST"));
                }
                let hotkey = p["/v1/predict/".len()..].to_string();
                match self.predict(&hotkey, req).await {
                    Ok(r) => r,
                    Err(r) => refusal(r),
                }
            }
            _ => refusal(Refusal::new(StatusCode::NOT_FOUND, "not-found", format!("no route {path}"))),
        }
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

    async fn predict(&self, hotkey: &str, req: Request<Incoming>) -> Result<Resp, Refusal> {
        let started = Instant::now();
        let serving = self.serving.load_full();
        let generation = serving.generation;
        let hk = serving.hotkeys.get(hotkey).cloned().ok_or_else(|| {
            Refusal::new(StatusCode::NOT_FOUND, "unknown-hotkey", format!("no hotkey named {hotkey:?}"))
        })?;
        let limit = self.limits.max_body_bytes;
        let too_large =
            || Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", format!("body exceeds {limit} bytes"));
        let declared =
            req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|n| *n > limit as u64) {
            // Read (and drop) a moderately oversized body so that the client, still sending,
            // gets the 413 instead of a broken pipe; a huge one just gets the connection closed.
            // A client that waits for `100 Continue` gets the 413 at once (reading would
            // invite it to send).
            let expects_continue = req
                .headers()
                .get(hyper::header::EXPECT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
            if n <= DRAIN_CAP && !expects_continue {
                let _ = tokio::time::timeout(
                    self.read_timeout,
                    Limited::new(req.into_body(), DRAIN_CAP as usize).collect(),
                )
                .await;
            }
            return Err(too_large());
        }
        let ct = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        // an explicit request key keeps a client on one rollout arm; else the image decides
        let sticky = req.headers().get("x-request-key").map(|v| crate::rollout::sticky_key(v.as_bytes()));
        let body = self.read_body(req.into_body()).await?;
        let bytes = ingress::image_bytes(ct.as_deref(), &body)?;
        let limits = self.limits;
        // Decoding and the policy block (component calls wait on model queues): run them here,
        // telling tokio to move this worker's other tasks away, which saves the two thread
        // hand-offs of `spawn_blocking` on every request.
        let turn = self.decode_turn(started, hk.budget).await?;
        let answer = tokio::task::block_in_place(move || -> Result<Answer, Refusal> {
            let origin = crate::runtime::request::key_of(b"bytes", &[&bytes]);
            let sticky = sticky.unwrap_or_else(|| crate::rollout::image_sticky_key(&origin));
            let img = decoded::decode(origin, &bytes, &limits)?;
            drop(turn);
            let prov = crate::predlog::Provenance {
                via: "http",
                caller: None,
                bytes: if hk.log.is_some() { bytes::Bytes::from(bytes) } else { bytes::Bytes::new() },
            };
            Ok(hk.serve(&serving.models, img, sticky, started, origin, prov))
        })?;
        let took = started.elapsed();
        crate::metrics::global().request(hotkey, &answer.stage, crate::axon::outcome(&answer), took);
        self.note_answer(hotkey, &answer, took);
        if answer.source == "none" {
            // no fixed fallback and no model scored the image: an error, never a made-up answer
            return Ok(json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": {"code": "policy-failed", "message": answer.reason}, "hotkey": hotkey, "trace": answer.trace}),
            ));
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "prediction": answer.prediction,
                "stage": answer.stage,
                "reason": answer.reason,
                "fallback": answer.fallback,
                "source": answer.source,
                "arm": answer.arm,
                "hotkey": hotkey,
                "generation": generation,
                "model_ms": answer.model_ms,
                "ms": took.as_secs_f64() * 1e3,
                "trace": answer.trace,
            }),
        ))
    }
}

//! The stage cache: primitive results shared by every hotkey and arm in the process. A
//! validator sends one image to ten miners at once, and an operator's hotkeys are often among
//! them; without this each hotkey pays every model again. Results are keyed by the loaded
//! model set (a reload never serves a result of the old models), the model, the primitive
//! and its arguments, and the image's content hash. Single-flight: a request that finds the
//! same call running waits for it instead of running the model again. Entries live for a TTL,
//! within a memory cap (oldest out first, evictions counted); errors are never kept, so a
//! failed model is retried by the next request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use cascade_engines::Output;

use crate::wit::Error;

/// Results known before a request runs (`cascade replay`: the prediction log's), by the image's
/// content key, primitive, model and arguments; calls they do not cover run the models when
/// the image is there (`pixels`), else fail. Counts what it answered.
#[derive(Default)]
pub struct Preset {
    pub results: HashMap<([u8; 16], &'static str, String, String), Output>,
    pub pixels: bool,
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
}

/// What a result is, across requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StageKey {
    pub models: u64,
    pub model: String,
    pub primitive: &'static str,
    pub args: String,
    pub image: [u8; 16],
}

/// A call being computed; waiters await it until the leader resolves it.
#[derive(Default)]
pub struct Flight {
    slot: Mutex<Option<Result<Output, Error>>>,
    done: Notify,
}

impl Flight {
    /// The leader's result, or `None` if `deadline` passes first.
    pub async fn wait(&self, deadline: Instant) -> Option<Result<Output, Error>> {
        let resolved = async {
            loop {
                // registered before the look, so a resolve in between is not missed
                let notified = self.done.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(r) = self.slot.lock().clone() {
                    return r;
                }
                notified.await;
            }
        };
        match tokio::time::timeout_at(deadline.into(), resolved).await {
            Ok(r) => Some(r),
            Err(_) => self.slot.lock().clone(),
        }
    }

    fn resolve(&self, r: Result<Output, Error>) {
        *self.slot.lock() = Some(r);
        self.done.notify_waiters();
    }
}

enum Entry {
    Ready { result: Output, at: Instant, bytes: usize },
    Running(Arc<Flight>),
}

/// The outcome of a lookup.
pub enum Lookup {
    Hit(Output),
    /// Someone else computes it: wait on the flight.
    Wait(Arc<Flight>),
    /// Compute it, then resolve the lead (dropping it unresolved fails the waiters).
    Lead(Lead),
}

/// The duty to compute a result others may be waiting for.
pub struct Lead {
    cache: &'static StageCache,
    key: Option<StageKey>,
    flight: Arc<Flight>,
}

impl Lead {
    pub(crate) fn resolve(mut self, r: &Result<Output, Error>) {
        if let Some(key) = self.key.take() {
            self.cache.finish(key, &self.flight, r.clone());
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let e = Error::Engine("the request computing this shared result ended before it".into());
            self.cache.finish(key, &self.flight, Err(e));
        }
    }
}

struct Inner {
    map: HashMap<StageKey, Entry>,
    /// Ready keys, oldest first (may hold keys since replaced or removed).
    order: VecDeque<(StageKey, Instant)>,
    bytes: usize,
}

pub struct StageCache {
    inner: Mutex<Inner>,
    cap_bytes: usize,
    ttl: Duration,
}

static CACHE: OnceLock<StageCache> = OnceLock::new();

/// Default memory cap and time to live.
pub const DEFAULT_MB: usize = 64;
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Sets the process's cache size and TTL (before the first request; `mb = 0` turns it off).
pub fn configure(mb: usize, ttl: Duration) {
    let _ = CACHE.set(StageCache::new(mb << 20, ttl));
}

/// The process's cache (default size unless `configure` ran first); `None` when turned off.
pub fn global() -> Option<&'static StageCache> {
    let c = CACHE.get_or_init(|| StageCache::new(DEFAULT_MB << 20, DEFAULT_TTL));
    (c.cap_bytes > 0).then_some(c)
}

/// Roughly what a result takes in memory.
fn size_of(o: &Output) -> usize {
    96 + match o {
        Output::Classification { top, .. } => top.iter().map(|l| 32 + l.0.len()).sum::<usize>(),
        Output::Embedding(v) => v.len() * 4,
        Output::Detections(d) => d.iter().map(|d| 64 + d.label.len()).sum(),
        Output::TextLines(t) => t.iter().map(|l| 48 + l.text.len()).sum(),
        Output::Answer(a) => 16 + a.text.len(),
    }
}

impl StageCache {
    pub fn new(cap_bytes: usize, ttl: Duration) -> StageCache {
        StageCache {
            inner: Mutex::new(Inner { map: HashMap::new(), order: VecDeque::new(), bytes: 0 }),
            cap_bytes,
            ttl,
        }
    }

    pub fn lookup(&'static self, key: StageKey) -> Lookup {
        let mut g = self.inner.lock();
        match g.map.get(&key) {
            Some(Entry::Ready { result, at, .. }) if at.elapsed() < self.ttl => {
                let r = result.clone();
                drop(g);
                crate::metrics::global().stage_cache(&key.model, "hit");
                return Lookup::Hit(r);
            }
            Some(Entry::Running(f)) => {
                let f = f.clone();
                drop(g);
                crate::metrics::global().stage_cache(&key.model, "wait");
                return Lookup::Wait(f);
            }
            _ => {}
        }
        if let Some(Entry::Ready { bytes, .. }) = g.map.remove(&key) {
            g.bytes -= bytes;
        }
        let flight = Arc::new(Flight::default());
        g.map.insert(key.clone(), Entry::Running(flight.clone()));
        drop(g);
        crate::metrics::global().stage_cache(&key.model, "miss");
        Lookup::Lead(Lead { cache: self, key: Some(key), flight })
    }

    fn finish(&self, key: StageKey, flight: &Arc<Flight>, r: Result<Output, Error>) {
        {
            let mut g = self.inner.lock();
            // only the entry this lead owns (a newer lead may have replaced it)
            let ours = matches!(g.map.get(&key), Some(Entry::Running(f)) if Arc::ptr_eq(f, flight));
            if ours {
                g.map.remove(&key);
                if let Ok(o) = &r {
                    let bytes = size_of(o);
                    let now = Instant::now();
                    g.bytes += bytes;
                    g.order.push_back((key.clone(), now));
                    g.map.insert(key, Entry::Ready { result: o.clone(), at: now, bytes });
                    self.evict(&mut g);
                }
            }
        }
        flight.resolve(r);
    }

    /// Oldest ready entries out until within the cap; expired ones out whenever met.
    fn evict(&self, g: &mut Inner) {
        while let Some((key, at)) = g.order.front().cloned() {
            let over = g.bytes > self.cap_bytes;
            let expired = at.elapsed() >= self.ttl;
            if !over && !expired {
                break;
            }
            g.order.pop_front();
            // the key may since have been replaced by a newer entry: remove only this one
            let same = matches!(g.map.get(&key), Some(Entry::Ready { at: a, .. }) if *a == at);
            if same {
                if let Some(Entry::Ready { bytes, .. }) = g.map.remove(&key) {
                    g.bytes -= bytes;
                    if over {
                        crate::metrics::global().stage_cache(&key.model, "evicted");
                    }
                }
            }
        }
    }

    /// Results held now, and their approximate size.
    pub fn usage(&self) -> (usize, usize) {
        let g = self.inner.lock();
        (g.map.len(), g.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::block_on;

    fn key(i: u8) -> StageKey {
        StageKey { models: 1, model: "m".into(), primitive: "classify", args: String::new(), image: [i; 16] }
    }

    fn score(s: f32) -> Output {
        Output::Classification { score: s, top: Vec::new() }
    }

    /// The score of a classification result (the WIT error type has no `PartialEq`).
    fn got(r: Option<Result<Output, Error>>) -> Option<Result<f32, String>> {
        r.map(|r| match r {
            Ok(Output::Classification { score, .. }) => Ok(score),
            Ok(_) => Err("not a classification".into()),
            Err(e) => Err(e.message()),
        })
    }

    fn leaked(cap: usize, ttl: Duration) -> &'static StageCache {
        Box::leak(Box::new(StageCache::new(cap, ttl)))
    }

    #[test]
    fn single_flight_hit_and_errors_not_kept() {
        let c = leaked(1 << 20, Duration::from_secs(60));
        let Lookup::Lead(lead) = c.lookup(key(1)) else { panic!("first is the lead") };
        let Lookup::Wait(f) = c.lookup(key(1)) else { panic!("second waits") };
        let waiter = std::thread::spawn(move || block_on(f.wait(Instant::now() + Duration::from_secs(5))));
        lead.resolve(&Ok(score(0.7)));
        assert_eq!(got(waiter.join().unwrap()), Some(Ok(0.7)));
        assert!(matches!(c.lookup(key(1)), Lookup::Hit(Output::Classification { score, .. }) if score == 0.7));
        // a failure reaches the waiters and is not kept: the next request leads again
        let Lookup::Lead(lead) = c.lookup(key(2)) else { panic!() };
        let Lookup::Wait(f) = c.lookup(key(2)) else { panic!() };
        lead.resolve(&Err(Error::Engine("boom".into())));
        assert_eq!(got(block_on(f.wait(Instant::now()))), Some(Err("engine: boom".into())));
        assert!(matches!(c.lookup(key(2)), Lookup::Lead(_)));
    }

    #[test]
    fn a_dropped_lead_fails_its_waiters_instead_of_hanging() {
        let c = leaked(1 << 20, Duration::from_secs(60));
        let Lookup::Lead(lead) = c.lookup(key(3)) else { panic!() };
        let Lookup::Wait(f) = c.lookup(key(3)) else { panic!() };
        drop(lead);
        assert!(matches!(block_on(f.wait(Instant::now() + Duration::from_secs(1))), Some(Err(Error::Engine(_)))));
        // a waiter with nothing resolved times out at its deadline
        let Lookup::Lead(_lead) = c.lookup(key(4)) else { panic!() };
        let Lookup::Wait(f) = c.lookup(key(4)) else { panic!() };
        assert!(block_on(f.wait(Instant::now() + Duration::from_millis(20))).is_none());
    }

    #[test]
    fn memory_is_capped_and_entries_expire() {
        let c = leaked(10 * 100, Duration::from_secs(60));
        for i in 0..50u8 {
            if let Lookup::Lead(l) = c.lookup(key(i)) {
                l.resolve(&Ok(score(0.1)));
            }
        }
        let (n, bytes) = c.usage();
        assert!(bytes <= 1000 && n <= 10, "{n} entries, {bytes} bytes");
        let short = leaked(1 << 20, Duration::from_millis(10));
        if let Lookup::Lead(l) = short.lookup(key(9)) {
            l.resolve(&Ok(score(0.2)));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(short.lookup(key(9)), Lookup::Lead(_)), "expired");
    }
}

//! The last hour of each hotkey, as the status page shows it: answers by stage and outcome,
//! the score histogram, latency percentiles, refusals by status and code (with the latest
//! reason of each), and the validators that called, by caller. Kept in per-minute slots of
//! fixed size, so memory is bounded whatever the traffic: distinct stages per minute, callers
//! per hotkey and refusal codes are capped, and a caller that is not a configured hotkey is
//! counted under `OTHER`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

/// How far back the page looks, in minutes.
pub const WINDOW_MIN: u64 = 60;
/// Callers remembered per hotkey (the least recently seen goes first).
const CALLERS: usize = 128;
/// Distinct (stage, outcome) pairs per hotkey and minute; the rest count as stage `other`.
const STAGES: usize = 32;
/// Score histogram bins over [0, 1].
pub const SCORE_BINS: usize = 10;
/// Latency histogram: bucket `i` holds answers up to `LAT_BASE_MS · LAT_RATIO^i`.
const LAT_BUCKETS: usize = 150;
const LAT_BASE_MS: f64 = 0.1;
const LAT_RATIO: f64 = 1.1;
/// Where refusals that name no configured hotkey are counted.
pub const OTHER: &str = "(no hotkey)";
/// Longest refusal reason kept.
const REASON_CHARS: usize = 300;

/// Slots of one minute each, the last `WINDOW_MIN` of them.
#[derive(Debug)]
struct Minutes<T> {
    slots: VecDeque<(u64, T)>,
}

impl<T: Default> Minutes<T> {
    fn new() -> Self {
        Minutes { slots: VecDeque::new() }
    }

    fn at(&mut self, minute: u64) -> &mut T {
        self.expire(minute);
        if self.slots.back().is_none_or(|(m, _)| *m != minute) {
            self.slots.push_back((minute, T::default()));
        }
        &mut self.slots.back_mut().expect("just pushed").1
    }

    fn expire(&mut self, minute: u64) {
        while self.slots.front().is_some_and(|(m, _)| m + WINDOW_MIN <= minute) {
            self.slots.pop_front();
        }
    }

    fn live(&self, minute: u64) -> impl Iterator<Item = &T> {
        self.slots.iter().filter(move |(m, _)| m + WINDOW_MIN > minute).map(|(_, t)| t)
    }
}

#[derive(Debug, Default)]
struct AnswerMinute {
    by_stage: BTreeMap<(String, &'static str), u32>,
    scores: [u32; SCORE_BINS],
    latency: Vec<u32>,
}

#[derive(Debug)]
struct Caller {
    last_seen_ms: u64,
    /// Recency rank (the window's counter at the caller's last request).
    order: u64,
    statuses: Minutes<BTreeMap<u16, u32>>,
}

#[derive(Debug)]
struct HotkeyWindow {
    answers: Minutes<AnswerMinute>,
    refusals: Minutes<BTreeMap<(u16, &'static str), u32>>,
    /// The latest reason of each (status, code).
    reasons: BTreeMap<(u16, &'static str), String>,
    callers: HashMap<String, Caller>,
    /// Counts caller requests, to rank callers by recency.
    seq: u64,
}

impl HotkeyWindow {
    fn new() -> Self {
        HotkeyWindow {
            answers: Minutes::new(),
            refusals: Minutes::new(),
            reasons: BTreeMap::new(),
            callers: HashMap::new(),
            seq: 0,
        }
    }
}

/// Every hotkey's last hour (shared by the doors; one short lock per record).
#[derive(Debug, Default)]
pub struct Activity {
    hotkeys: parking_lot::Mutex<BTreeMap<String, HotkeyWindow>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn latency_bucket(ms: f64) -> usize {
    if ms <= LAT_BASE_MS {
        return 0;
    }
    (((ms / LAT_BASE_MS).ln() / LAT_RATIO.ln()).ceil() as usize).min(LAT_BUCKETS - 1)
}

fn bucket_upper_ms(i: usize) -> f64 {
    LAT_BASE_MS * LAT_RATIO.powi(i as i32)
}

impl Activity {
    fn with<R>(&self, hotkey: &str, f: impl FnOnce(&mut HotkeyWindow, u64, u64) -> R) -> R {
        let now = now_ms();
        let mut g = self.hotkeys.lock();
        let w = g.entry(hotkey.to_string()).or_insert_with(HotkeyWindow::new);
        f(w, now / 60_000, now)
    }

    /// One answer of a configured hotkey.
    pub fn answer(&self, hotkey: &str, stage: &str, outcome: &'static str, prediction: f32, took: Duration) {
        self.with(hotkey, |w, minute, _| {
            let m = w.answers.at(minute);
            let key = (stage.chars().take(64).collect::<String>(), outcome);
            if m.by_stage.len() < STAGES || m.by_stage.contains_key(&key) {
                *m.by_stage.entry(key).or_default() += 1;
            } else {
                *m.by_stage.entry(("other".into(), outcome)).or_default() += 1;
            }
            if prediction.is_finite() {
                let bin = ((prediction.clamp(0.0, 1.0) * SCORE_BINS as f32) as usize).min(SCORE_BINS - 1);
                m.scores[bin] += 1;
            }
            if m.latency.is_empty() {
                m.latency = vec![0; LAT_BUCKETS];
            }
            m.latency[latency_bucket(took.as_secs_f64() * 1e3)] += 1;
        });
    }

    /// One refused request; `hotkey` is `None` (counted under [`OTHER`]) unless it names a
    /// configured hotkey.
    pub fn refused(&self, hotkey: Option<&str>, status: u16, code: &'static str, reason: &str) {
        self.with(hotkey.unwrap_or(OTHER), |w, minute, _| {
            *w.refusals.at(minute).entry((status, code)).or_default() += 1;
            let reason: String = reason.chars().take(REASON_CHARS).collect();
            w.reasons.insert((status, code), reason);
        });
    }

    /// One axon request of a signed-for caller, whatever its status (200 answered).
    pub fn caller(&self, hotkey: &str, caller: &str, status: u16) {
        self.with(hotkey, |w, minute, now| {
            if !w.callers.contains_key(caller) && w.callers.len() >= CALLERS {
                let oldest = w.callers.iter().min_by_key(|(_, c)| c.order).map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    w.callers.remove(&k);
                }
            }
            w.seq += 1;
            let c = w.callers.entry(caller.to_string()).or_insert_with(|| Caller {
                last_seen_ms: now,
                order: 0,
                statuses: Minutes::new(),
            });
            c.last_seen_ms = now;
            c.order = w.seq;
            *c.statuses.at(minute).entry(status).or_default() += 1;
        });
    }

    /// The last hour of each hotkey in `names` (configured ones, in order), then of [`OTHER`]
    /// when it has any refusal.
    pub fn summary<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<HotkeySummary> {
        let minute = now_ms() / 60_000;
        let mut g = self.hotkeys.lock();
        let mut out: Vec<HotkeySummary> = names
            .into_iter()
            .map(|n| g.get_mut(n).map_or_else(|| HotkeySummary::empty(n), |w| summarise(n, w, minute)))
            .collect();
        if let Some(w) = g.get_mut(OTHER) {
            let s = summarise(OTHER, w, minute);
            if !s.refusals.is_empty() {
                out.push(s);
            }
        }
        out
    }
}

/// One hotkey's last hour.
#[derive(Debug, Clone, Serialize)]
pub struct HotkeySummary {
    pub hotkey: String,
    pub answers: u64,
    /// (stage, outcome, count), most first.
    pub by_stage: Vec<(String, &'static str, u64)>,
    /// Answers per tenth of [0, 1].
    pub scores: [u64; SCORE_BINS],
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub refusals: Vec<RefusalCount>,
    pub callers: Vec<CallerSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefusalCount {
    pub status: u16,
    pub code: &'static str,
    pub count: u64,
    pub last_reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallerSummary {
    pub caller: String,
    pub count: u64,
    pub last_seen_ms: u64,
    /// Requests by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
}

impl HotkeySummary {
    fn empty(name: &str) -> Self {
        HotkeySummary {
            hotkey: name.to_string(),
            answers: 0,
            by_stage: Vec::new(),
            scores: [0; SCORE_BINS],
            p50_ms: None,
            p99_ms: None,
            refusals: Vec::new(),
            callers: Vec::new(),
        }
    }
}

/// The upper edge of the bucket that holds quantile `q` (an estimate within one bucket, 10 %).
fn quantile(hist: &[u64], q: f64) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_upper_ms(i));
        }
    }
    None
}

fn summarise(name: &str, w: &mut HotkeyWindow, minute: u64) -> HotkeySummary {
    let mut s = HotkeySummary::empty(name);
    let mut by_stage: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    let mut latency = vec![0u64; LAT_BUCKETS];
    for m in w.answers.live(minute) {
        for (k, n) in &m.by_stage {
            *by_stage.entry(k.clone()).or_default() += u64::from(*n);
            s.answers += u64::from(*n);
        }
        for (i, n) in m.scores.iter().enumerate() {
            s.scores[i] += u64::from(*n);
        }
        for (i, n) in m.latency.iter().enumerate() {
            latency[i] += u64::from(*n);
        }
    }
    s.by_stage = by_stage.into_iter().map(|((st, o), n)| (st, o, n)).collect();
    s.by_stage.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    s.p50_ms = quantile(&latency, 0.5);
    s.p99_ms = quantile(&latency, 0.99);
    let mut refusals: BTreeMap<(u16, &'static str), u64> = BTreeMap::new();
    for m in w.refusals.live(minute) {
        for (k, n) in m {
            *refusals.entry(*k).or_default() += u64::from(*n);
        }
    }
    s.refusals = refusals
        .into_iter()
        .map(|((status, code), count)| RefusalCount {
            status,
            code,
            count,
            last_reason: w.reasons.get(&(status, code)).cloned().unwrap_or_default(),
        })
        .collect();
    s.refusals.sort_by_key(|r| std::cmp::Reverse(r.count));
    w.callers.retain(|_, c| c.last_seen_ms / 60_000 + WINDOW_MIN > minute);
    let mut callers: Vec<(&String, &Caller)> = w.callers.iter().collect();
    callers.sort_by_key(|c| std::cmp::Reverse(c.1.order));
    s.callers = callers
        .into_iter()
        .map(|(k, c)| {
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            for m in c.statuses.live(minute) {
                for (st, n) in m {
                    *statuses.entry(*st).or_default() += u64::from(*n);
                }
            }
            CallerSummary { caller: k.clone(), count: statuses.values().sum(), last_seen_ms: c.last_seen_ms, statuses }
        })
        .collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_and_bounds() {
        let a = Activity::default();
        for i in 0..100 {
            let p = i as f32 / 100.0;
            a.answer("speed", if i < 70 { "classifier" } else { "zoom" }, "ok", p, Duration::from_millis(10 + i));
        }
        a.answer("speed", "classifier", "fallback", f32::NAN, Duration::from_millis(5));
        a.refused(Some("speed"), 403, "not-admitted", "Forbidden. Key x is not registered");
        a.refused(None, 404, "not-found", "no route /x");
        a.refused(None, 404, "not-found", "no route /y");
        for i in 0..(CALLERS + 10) {
            a.caller("speed", &format!("caller-{i}"), 200);
        }
        a.caller("speed", "caller-200", 403);
        let s = a.summary(["speed", "accuracy"]);
        assert_eq!(s.len(), 3, "two configured hotkeys and the refusals of none");
        let sp = &s[0];
        assert_eq!(sp.answers, 101);
        assert_eq!(sp.by_stage[0], ("classifier".to_string(), "ok", 70));
        assert_eq!(sp.scores.iter().sum::<u64>(), 100, "a NaN prediction has no bin");
        assert_eq!(sp.scores[0], 10);
        let (p50, p99) = (sp.p50_ms.unwrap(), sp.p99_ms.unwrap());
        assert!((59.0..=75.0).contains(&p50), "{p50}");
        assert!((108.0..=140.0).contains(&p99), "{p99}");
        assert_eq!(sp.refusals[0].last_reason, "Forbidden. Key x is not registered");
        assert_eq!(sp.callers.len(), CALLERS, "callers are capped");
        assert_eq!(sp.callers[0].caller, "caller-200");
        assert_eq!(sp.callers[0].statuses.get(&403), Some(&1));
        assert_eq!(s[1].answers, 0);
        assert_eq!((s[2].hotkey.as_str(), s[2].refusals[0].count), (OTHER, 2));
        assert_eq!(s[2].refusals[0].last_reason, "no route /y");
    }

    #[test]
    fn old_minutes_leave_the_window() {
        let mut m: Minutes<u32> = Minutes::new();
        *m.at(10) += 1;
        *m.at(11) += 2;
        assert_eq!(m.live(11).sum::<u32>(), 3);
        assert_eq!(m.live(10 + WINDOW_MIN).sum::<u32>(), 2);
        *m.at(11 + WINDOW_MIN) += 4;
        assert_eq!(m.slots.len(), 1);
    }

    #[test]
    fn latency_buckets_bracket_the_value() {
        for ms in [0.05, 0.3, 1.0, 9.9, 250.0, 9000.0] {
            let i = latency_bucket(ms);
            assert!(bucket_upper_ms(i) >= ms * 0.999, "{ms}");
            assert!(i == 0 || bucket_upper_ms(i - 1) < ms, "{ms}");
        }
    }
}

//! Rollouts per hotkey: which arm (stable or candidate) answers a request, what the other arm
//! does meanwhile (shadow copies), the live figures per arm, the canary's rules, and the
//! promote/rollback decision — written beside the config so a restarted host serves the same.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{RolloutConfig, Side};

/// Latencies kept per arm for the p99 rule.
const WINDOW: usize = 1_000;

#[derive(Default)]
pub struct ArmStats {
    pub requests: AtomicU64,
    pub fallbacks: AtomicU64,
    /// Answers that needed more than the first stage (escalations).
    pub escalations: AtomicU64,
    latencies_ms: Mutex<VecDeque<f64>>,
}

impl ArmStats {
    fn record(&self, fallback: bool, escalated: bool, ms: f64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.fallbacks.fetch_add(fallback as u64, Ordering::Relaxed);
        self.escalations.fetch_add(escalated as u64, Ordering::Relaxed);
        let mut l = self.latencies_ms.lock();
        if l.len() == WINDOW {
            l.pop_front();
        }
        l.push_back(ms);
    }

    fn p99(&self) -> f64 {
        let mut v: Vec<f64> = self.latencies_ms.lock().iter().copied().collect();
        v.sort_by(f64::total_cmp);
        cascade_common::scores::percentile(&v, 0.99)
    }

    fn rate(&self, c: &AtomicU64) -> f64 {
        let n = self.requests.load(Ordering::Relaxed);
        if n == 0 {
            0.0
        } else {
            c.load(Ordering::Relaxed) as f64 / n as f64
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "fallbacks": self.fallbacks.load(Ordering::Relaxed),
            "escalations": self.escalations.load(Ordering::Relaxed),
            "p99_ms": self.p99(),
        })
    }
}

/// Copies answered by the arm that does not serve, compared with the served answer.
#[derive(Default)]
pub struct ShadowStats {
    pub compared: AtomicU64,
    pub agreed: AtomicU64,
    pub skipped: AtomicU64,
    abs_diff_micro: AtomicU64,
    pub inflight: AtomicUsize,
}

/// What survives a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Persisted {
    /// The config version (file hash) this state belongs to.
    key: String,
    winner: Option<Side>,
    step: usize,
    history: Vec<String>,
    /// When this rollout began (unix ms): evidence written before it is about another
    /// candidate.
    #[serde(default)]
    started_ms: u64,
}

fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub struct Rollout {
    pub config: RolloutConfig,
    pub stable: ArmStats,
    pub candidate: ArmStats,
    pub shadow: ShadowStats,
    state: Mutex<Persisted>,
    state_file: PathBuf,
    hotkey: String,
    /// When the current canary step began (time-based steps).
    step_since: Mutex<std::time::Instant>,
    /// Whether the wait for labelled evidence was noted already, and when the report was
    /// last looked for (at most once a second while holding).
    holding: std::sync::atomic::AtomicBool,
    looked: Mutex<Option<std::time::Instant>>,
}

/// What a labelled replay report written after `since` (unix ms) says about the candidate:
/// (candidate MCC, logged MCC, n).
fn read_evidence(path: &std::path::Path, since: u64) -> Result<(f64, f64, u64), String> {
    let written = std::fs::metadata(path).and_then(|m| m.modified()).map_err(|e| format!("{}: {e}", path.display()))?;
    if unix_ms(written) < since {
        return Err(format!("{} predates this rollout (a report about an earlier candidate?)", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("{}: not a `cascade replay --json` report: {e}", path.display()))?;
    let l = &v["labelled"];
    match (l["candidate"]["mcc"].as_f64(), l["logged"]["mcc"].as_f64(), l["candidate"]["n"].as_u64()) {
        (Some(c), Some(o), Some(n)) => Ok((c, o, n)),
        _ => Err(format!("{}: the report has no labelled figures (replay with --labels)", path.display())),
    }
}

/// How one request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub serve: Side,
    /// Also run the other arm on a copy, off the response path.
    pub shadow: bool,
}

impl Rollout {
    /// `key` identifies the config version; a state file written for another version is
    /// ignored (a changed rollout starts afresh).
    pub fn new(hotkey: &str, config: RolloutConfig, state_file: PathBuf, key: String) -> Rollout {
        let saved: Option<Persisted> = std::fs::read(&state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|p: &Persisted| p.key == key);
        let mut state = saved.unwrap_or(Persisted { key, ..Persisted::default() });
        if state.started_ms == 0 {
            state.started_ms = unix_ms(std::time::SystemTime::now());
        }
        Rollout {
            config,
            stable: ArmStats::default(),
            candidate: ArmStats::default(),
            shadow: ShadowStats::default(),
            state: Mutex::new(state),
            state_file,
            hotkey: hotkey.into(),
            step_since: Mutex::new(std::time::Instant::now()),
            holding: std::sync::atomic::AtomicBool::new(false),
            looked: Mutex::new(None),
        }
    }

    pub fn winner(&self) -> Option<Side> {
        self.state.lock().winner
    }

    /// The candidate's current share in percent.
    pub fn share(&self) -> f64 {
        let st = self.state.lock();
        match (st.winner, &self.config) {
            (Some(Side::Candidate), _) => 100.0,
            (Some(Side::Stable), _) => 0.0,
            (None, RolloutConfig::Ab { share }) => *share,
            (None, RolloutConfig::Shadow { .. }) => 0.0,
            (None, RolloutConfig::Canary { steps, .. }) => steps.get(st.step).copied().unwrap_or(100.0),
            (None, RolloutConfig::BlueGreen { active }) => {
                if *active == Side::Candidate {
                    100.0
                } else {
                    0.0
                }
            }
        }
    }

    /// Picks the arm for a request with this sticky key (the same key, the same arm).
    pub fn route(&self, sticky: u64) -> Route {
        let share = self.share();
        let bucket = (sticky % 10_000) as f64 / 100.0;
        let serve = if bucket < share { Side::Candidate } else { Side::Stable };
        let decided = self.winner().is_some();
        let shadow = !decided && matches!(self.config, RolloutConfig::Shadow { .. } | RolloutConfig::Canary { .. });
        Route { serve, shadow }
    }

    pub fn max_inflight(&self) -> usize {
        match self.config {
            RolloutConfig::Shadow { max_inflight } | RolloutConfig::Canary { max_inflight, .. } => max_inflight,
            _ => 0,
        }
    }

    pub fn record(&self, side: Side, fallback: bool, escalated: bool, ms: f64) {
        let arm = if side == Side::Candidate { &self.candidate } else { &self.stable };
        arm.record(fallback, escalated, ms);
        crate::metrics::global().arm(&self.hotkey, side, fallback);
        if side == Side::Candidate {
            self.evaluate();
        }
    }

    pub fn record_shadow(&self, served: f32, other: f32) {
        self.shadow.compared.fetch_add(1, Ordering::Relaxed);
        let agree = (served > 0.5) == (other > 0.5);
        self.shadow.agreed.fetch_add(agree as u64, Ordering::Relaxed);
        self.shadow.abs_diff_micro.fetch_add(((served - other).abs() * 1e6) as u64, Ordering::Relaxed);
        crate::metrics::global().shadow(&self.hotkey, if agree { "agree" } else { "disagree" });
    }

    pub fn agreement(&self) -> f64 {
        let n = self.shadow.compared.load(Ordering::Relaxed);
        if n == 0 {
            1.0
        } else {
            self.shadow.agreed.load(Ordering::Relaxed) as f64 / n as f64
        }
    }

    /// The canary's rules, checked as the candidate's figures come in: each outcome logged.
    fn evaluate(&self) {
        let RolloutConfig::Canary {
            steps,
            min_requests,
            max_error_rate,
            max_p99_ms,
            min_agreement,
            max_escalation_rate,
            min_step_s,
            evidence,
            ..
        } = &self.config
        else {
            return;
        };
        if self.winner().is_some() {
            return;
        }
        let c = &self.candidate;
        if c.requests.load(Ordering::Relaxed) < *min_requests {
            return;
        }
        let rules = [
            ("error rate", c.rate(&c.fallbacks), *max_error_rate, true),
            ("p99 ms", c.p99(), *max_p99_ms, true),
            ("escalation rate", c.rate(&c.escalations), *max_escalation_rate, true),
            ("agreement with stable", self.agreement(), *min_agreement, false),
        ];
        for (name, value, limit, is_max) in rules {
            let ok = if is_max { value <= limit } else { value >= limit };
            if !ok {
                self.rollback(&format!("rule failed: {name} {value:.4} {} {limit}", if is_max { ">" } else { "<" }));
                return;
            }
        }
        // the rules held; the step itself also lasts at least min_step_s
        if self.step_since.lock().elapsed() < std::time::Duration::from_secs(*min_step_s) {
            return;
        }
        let last = self.state.lock().step + 1 >= steps.len();
        let mut verdict = None;
        if let (true, Some(rule)) = (last, evidence) {
            {
                let mut looked = self.looked.lock();
                if looked.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
                    return;
                }
                *looked = Some(std::time::Instant::now());
            }
            let report = self.state_file.parent().unwrap_or(std::path::Path::new(".")).join(&rule.report);
            let since = self.state.lock().started_ms;
            match read_evidence(&report, since) {
                Ok((cand, logged, n)) if n >= rule.min_labelled => {
                    if cand < logged + rule.min_mcc_gain {
                        self.rollback(&format!(
                            "labelled evidence: candidate MCC {cand:.3} < logged {logged:.3} + {} ({n} images)",
                            rule.min_mcc_gain
                        ));
                        return;
                    }
                    verdict =
                        Some(format!("labelled evidence: candidate MCC {cand:.3} vs logged {logged:.3} ({n} images)"));
                }
                other => {
                    // hold at the last step until the evidence is there
                    if !self.holding.swap(true, Ordering::Relaxed) {
                        let why = match other {
                            Ok((_, _, n)) => format!("{n} labelled images, {} needed", rule.min_labelled),
                            Err(e) => e,
                        };
                        let note = format!("holding at the last step: waiting for labelled evidence ({why})");
                        tracing::info!(hotkey = %self.hotkey, "canary: {note}");
                        self.state.lock().history.push(note);
                        self.persist();
                    }
                    return;
                }
            }
        }
        let step = {
            let mut st = self.state.lock();
            st.step += 1;
            let note = format!(
                "step passed (error rate {:.4}, p99 {:.1} ms, agreement {:.3}); share now {}",
                c.rate(&c.fallbacks),
                c.p99(),
                self.agreement(),
                steps.get(st.step).copied().unwrap_or(100.0)
            );
            tracing::info!(hotkey = %self.hotkey, "canary: {note}");
            st.history.push(note);
            st.step
        };
        // a fresh window for the next step
        c.requests.store(0, Ordering::Relaxed);
        c.fallbacks.store(0, Ordering::Relaxed);
        c.escalations.store(0, Ordering::Relaxed);
        c.latencies_ms.lock().clear();
        *self.step_since.lock() = std::time::Instant::now();
        crate::metrics::global().rollout_event(&self.hotkey, "step");
        if step >= steps.len() {
            match verdict {
                Some(v) => self.promote(&format!("canary: every step passed; {v}")),
                None => self.promote("canary: every step passed"),
            }
        } else {
            self.persist();
        }
    }

    pub fn promote(&self, why: &str) {
        self.decide(Side::Candidate, why, "promote");
    }

    pub fn rollback(&self, why: &str) {
        self.decide(Side::Stable, why, "rollback");
    }

    fn decide(&self, side: Side, why: &str, event: &'static str) {
        {
            let mut st = self.state.lock();
            st.winner = Some(side);
            st.history.push(format!("{event}: {why}"));
        }
        tracing::info!(hotkey = %self.hotkey, "{event}: {why}");
        crate::metrics::global().rollout_event(&self.hotkey, event);
        self.persist();
    }

    /// Writes the state beside the config (write, then rename: never half a file).
    fn persist(&self) {
        let st = self.state.lock().clone();
        let tmp = self.state_file.with_extension("tmp");
        let r = serde_json::to_vec_pretty(&st)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, &self.state_file));
        if let Err(e) = r {
            tracing::error!(file = %self.state_file.display(), error = %e, "cannot persist the rollout state");
        }
    }

    pub fn json(&self) -> serde_json::Value {
        let st = self.state.lock().clone();
        let n = self.shadow.compared.load(Ordering::Relaxed).max(1) as f64;
        json!({
            "mode": match self.config { RolloutConfig::Ab { .. } => "ab", RolloutConfig::Shadow { .. } => "shadow", RolloutConfig::Canary { .. } => "canary", RolloutConfig::BlueGreen { .. } => "blue-green" },
            "candidate_share": self.share(),
            "winner": st.winner,
            "step": st.step,
            "history": st.history,
            "stable": self.stable.json(),
            "candidate": self.candidate.json(),
            "shadow": {
                "compared": self.shadow.compared.load(Ordering::Relaxed),
                "agreement": self.agreement(),
                "mean_abs_diff": self.shadow.abs_diff_micro.load(Ordering::Relaxed) as f64 / 1e6 / n,
                "skipped": self.shadow.skipped.load(Ordering::Relaxed),
            },
        })
    }
}

/// The sticky key of a request's image: the first bytes of its content key (already a
/// sha-256 of the image's bytes, so no second pass over them).
pub(crate) fn image_sticky_key(origin: &[u8; 16]) -> u64 {
    u64::from_le_bytes(origin[..8].try_into().expect("8 bytes"))
}

/// FNV-1a: the sticky key of a request key a client sends.
pub(crate) fn sticky_key(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

//! Prometheus metrics, rendered in the text exposition format. Labels are bounded: hotkeys and
//! stages come from the loaded configs, models from the registry, codes from a fixed set.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::OnceLock;
use std::time::Duration;

use cascade_engines::Models;
use parking_lot::Mutex;

/// Latency buckets in seconds.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 9.0];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, String), u64>,
    latency: BTreeMap<String, Histogram>,
    rejected: BTreeMap<(String, u16), u64>,
    component_events: BTreeMap<(String, String, String), u64>,
    fallbacks: BTreeMap<(String, String), u64>,
    model_seconds: BTreeMap<(String, String), f64>,
    reloads: BTreeMap<String, u64>,
    refusals: u64,
    arms: BTreeMap<(String, &'static str, &'static str), u64>,
    shadow: BTreeMap<(String, String), u64>,
    rollout_events: BTreeMap<(String, String), u64>,
    axon: BTreeMap<u16, u64>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

impl Metrics {
    /// A request answered (outcome `ok`, or `fallback` when the policy could not answer).
    pub fn request(&self, hotkey: &str, stage: &str, outcome: &str, took: Duration) {
        let mut m = self.inner.lock();
        *m.requests.entry((hotkey.into(), stage.into(), outcome.into())).or_default() += 1;
        m.latency.entry(hotkey.into()).or_default().observe(took.as_secs_f64());
    }

    /// A request refused before any policy ran.
    pub fn rejected(&self, code: &str, status: u16) {
        *self.inner.lock().rejected.entry((code.into(), status)).or_default() += 1;
    }

    /// A component trapped, ran out of fuel or time, or could not be instantiated.
    pub fn component_event(&self, hotkey: &str, role: &str, kind: &str) {
        *self.inner.lock().component_events.entry((hotkey.into(), role.into(), kind.into())).or_default() += 1;
    }

    pub fn fallback(&self, hotkey: &str, reason: &str) {
        *self.inner.lock().fallbacks.entry((hotkey.into(), reason.into())).or_default() += 1;
    }

    /// A request answered by one arm of a rollout.
    pub fn arm(&self, hotkey: &str, side: crate::config::Side, fallback: bool) {
        let arm = if side == crate::config::Side::Candidate { "candidate" } else { "stable" };
        *self.inner.lock().arms.entry((hotkey.into(), arm, if fallback { "fallback" } else { "ok" })).or_default() += 1;
    }

    /// A shadow copy compared (`agree`, `disagree`), or `skipped`/`failed`.
    pub fn shadow(&self, hotkey: &str, result: &str) {
        *self.inner.lock().shadow.entry((hotkey.into(), result.into())).or_default() += 1;
    }

    /// `promote`, `rollback`, `step`.
    pub fn rollout_event(&self, hotkey: &str, event: &str) {
        *self.inner.lock().rollout_events.entry((hotkey.into(), event.into())).or_default() += 1;
    }

    /// A subnet request answered with this status.
    pub fn axon(&self, status: u16) {
        *self.inner.lock().axon.entry(status).or_default() += 1;
    }

    /// A reload finished: `applied`, `refused` (something was refused) or `unchanged`.
    pub fn reload(&self, outcome: &str) {
        *self.inner.lock().reloads.entry(outcome.into()).or_default() += 1;
    }

    /// A changed file was refused; the last good version keeps serving.
    pub fn refusal(&self) {
        self.inner.lock().refusals += 1;
    }

    /// Model time spent on behalf of a hotkey's requests.
    pub fn model_time(&self, hotkey: &str, model: &str, t: Duration) {
        *self.inner.lock().model_seconds.entry((hotkey.into(), model.into())).or_default() += t.as_secs_f64();
    }

    pub fn render(&self, models: Option<&Models>) -> String {
        let m = self.inner.lock();
        let mut o = String::new();
        head(&mut o, "cascade_requests_total", "counter", "Requests answered, by hotkey, stage and outcome.");
        for ((h, s, out), v) in &m.requests {
            let _ = writeln!(o, "cascade_requests_total{{hotkey=\"{h}\",stage=\"{s}\",outcome=\"{out}\"}} {v}");
        }
        head(&mut o, "cascade_request_duration_seconds", "histogram", "Time from request to answer, by hotkey.");
        for (h, hist) in &m.latency {
            for (b, c) in BUCKETS.iter().zip(&hist.counts) {
                let _ = writeln!(o, "cascade_request_duration_seconds_bucket{{hotkey=\"{h}\",le=\"{b}\"}} {c}");
            }
            let _ = writeln!(o, "cascade_request_duration_seconds_bucket{{hotkey=\"{h}\",le=\"+Inf\"}} {}", hist.count);
            let _ = writeln!(o, "cascade_request_duration_seconds_sum{{hotkey=\"{h}\"}} {}", hist.sum);
            let _ = writeln!(o, "cascade_request_duration_seconds_count{{hotkey=\"{h}\"}} {}", hist.count);
        }
        head(
            &mut o,
            "cascade_rejected_total",
            "counter",
            "Requests refused before a policy ran, by error code and HTTP status.",
        );
        for ((c, s), v) in &m.rejected {
            let _ = writeln!(o, "cascade_rejected_total{{code=\"{c}\",status=\"{s}\"}} {v}");
        }
        head(
            &mut o,
            "cascade_component_events_total",
            "counter",
            "Component traps, fuel and time exhaustion, memory limits, instantiation failures.",
        );
        for ((h, r, k), v) in &m.component_events {
            let _ = writeln!(o, "cascade_component_events_total{{hotkey=\"{h}\",role=\"{r}\",kind=\"{k}\"}} {v}");
        }
        head(&mut o, "cascade_fallbacks_total", "counter", "Requests answered with the hotkey's fallback, by reason.");
        for ((h, r), v) in &m.fallbacks {
            let _ = writeln!(o, "cascade_fallbacks_total{{hotkey=\"{h}\",reason=\"{r}\"}} {v}");
        }
        head(&mut o, "cascade_hotkey_model_seconds_total", "counter", "Model time spent for a hotkey's requests.");
        for ((h, model), v) in &m.model_seconds {
            let _ = writeln!(o, "cascade_hotkey_model_seconds_total{{hotkey=\"{h}\",model=\"{model}\"}} {v}");
        }
        head(&mut o, "cascade_reloads_total", "counter", "Reloads by outcome (applied, refused, unchanged).");
        for (k, v) in &m.reloads {
            let _ = writeln!(o, "cascade_reloads_total{{outcome=\"{k}\"}} {v}");
        }
        head(
            &mut o,
            "cascade_refused_changes_total",
            "counter",
            "Changed files refused by validation (the previous version kept serving).",
        );
        let _ = writeln!(o, "cascade_refused_changes_total {}", m.refusals);
        head(&mut o, "cascade_arm_requests_total", "counter", "Requests per rollout arm and outcome.");
        for ((h, a, out), v) in &m.arms {
            let _ = writeln!(o, "cascade_arm_requests_total{{hotkey=\"{h}\",arm=\"{a}\",outcome=\"{out}\"}} {v}");
        }
        head(&mut o, "cascade_shadow_total", "counter", "Shadow copies by result (agree, disagree, skipped, failed).");
        for ((h, r), v) in &m.shadow {
            let _ = writeln!(o, "cascade_shadow_total{{hotkey=\"{h}\",result=\"{r}\"}} {v}");
        }
        head(&mut o, "cascade_rollout_events_total", "counter", "Promotions, rollbacks and canary steps.");
        for ((h, e), v) in &m.rollout_events {
            let _ = writeln!(o, "cascade_rollout_events_total{{hotkey=\"{h}\",event=\"{e}\"}} {v}");
        }
        head(&mut o, "cascade_axon_requests_total", "counter", "Subnet requests (/ImageSynapse) by HTTP status.");
        for (c, v) in &m.axon {
            let _ = writeln!(o, "cascade_axon_requests_total{{status=\"{c}\"}} {v}");
        }
        drop(m);
        if let Some(models) = models {
            render_models(&mut o, models);
        }
        o
    }
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn render_models(o: &mut String, models: &Models) {
    head(
        o,
        "cascade_model_cpu_fallbacks_total",
        "counter",
        "Models that asked for CUDA and run on the CPU (cpu_fallback).",
    );
    let _ = writeln!(
        o,
        "cascade_model_cpu_fallbacks_total {}",
        cascade_engines::CPU_FALLBACKS.load(std::sync::atomic::Ordering::Relaxed)
    );
    use std::sync::atomic::Ordering::Relaxed;
    let rows: Vec<_> = models.stats().collect();
    let series: [(&str, &str, &str); 10] = [
        ("cascade_model_runs_total", "counter", "Session runs (batches) per model."),
        ("cascade_model_items_total", "counter", "Images inferred per model."),
        ("cascade_model_busy_seconds_total", "counter", "Time spent in session runs per model."),
        ("cascade_model_failures_total", "counter", "Items whose run failed, per model."),
        ("cascade_model_expired_total", "counter", "Items dropped from the queue past their deadline."),
        ("cascade_model_queue_depth", "gauge", "Items waiting in the model's queue."),
        (
            "cascade_model_gpu_memory_bytes",
            "gauge",
            "Device memory taken by the model's loaded sessions (measured at load, CUDA models).",
        ),
        (
            "cascade_model_loaded",
            "gauge",
            "Workers of the model with their sessions loaded (lazy models drop to 0 when idle).",
        ),
        (
            "cascade_model_loads_total",
            "counter",
            "Times a worker of the model loaded its sessions (lazy models reload on use).",
        ),
        (
            "cascade_model_cpu_preprocess_total",
            "counter",
            "CUDA models or batches whose inputs were prepared on the CPU instead of the GPU.",
        ),
    ];
    for (i, (name, kind, help)) in series.iter().enumerate() {
        head(o, name, kind, help);
        for (model, s) in &rows {
            let v = match i {
                0 => s.runs.load(Relaxed) as f64,
                1 => s.items.load(Relaxed) as f64,
                2 => s.busy_ns.load(Relaxed) as f64 / 1e9,
                3 => s.failures.load(Relaxed) as f64,
                4 => s.expired.load(Relaxed) as f64,
                5 => s.queued.load(Relaxed).max(0) as f64,
                6 => s.gpu_bytes.load(Relaxed) as f64,
                7 => s.loaded.load(Relaxed).max(0) as f64,
                8 => s.loads.load(Relaxed) as f64,
                _ => s.prep_fallbacks.load(Relaxed) as f64,
            };
            let _ = writeln!(o, "{name}{{model=\"{model}\"}} {v}");
        }
    }
}

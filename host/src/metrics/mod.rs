//! Prometheus metrics as typed families (`prometheus-client`, as linkerd2-proxy does). Each
//! part of the host owns a group of families registered under the `cascade` prefix. String
//! label values are `Label`s (nothing to escape) or `&'static str` constants of the host;
//! names a component chooses (stages, models) are bounded per hotkey. Recording takes the
//! family's shared lock on the hot path, never a global one.

mod gpu;
mod label;
pub(crate) mod models;
pub(crate) mod scrape;

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use label::{Bounded, Label};

/// The content type of `render`'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 9.0];
/// Distinct stage or model names one hotkey's components can create in the metrics.
const GUEST_NAMES_PER_HOTKEY: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    hotkey: Label,
    stage: Label,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HotkeyLabels {
    hotkey: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    code: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    hotkey: Label,
    role: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    hotkey: Label,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelTimeLabels {
    hotkey: Label,
    model: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmLabels {
    hotkey: Label,
    arm: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    hotkey: Label,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    hotkey: Label,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Clone)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(BUCKETS.iter().copied())
    }
}

type F64Counter = Counter<f64, std::sync::atomic::AtomicU64>;

/// Answers and refusals at the HTTP and axon ingress.
struct Ingress {
    requests: Family<RequestLabels, Counter>,
    latency: Family<HotkeyLabels, Histogram, Buckets>,
    rejected: Family<RejectedLabels, Counter>,
    axon: Family<StatusLabels, Counter>,
    admission: Family<AdmissionLabels, Counter>,
    decoded: Family<AdmissionLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    model: Label,
    result: &'static str,
}

/// What components and the engines cost each hotkey, and how components failed.
struct Policies {
    events: Family<EventLabels, Counter>,
    fallbacks: Family<ReasonLabels, Counter>,
    partial: Family<ModelTimeLabels, Counter>,
    model_seconds: Family<ModelTimeLabels, F64Counter>,
    cache: Family<CacheLabels, Counter>,
}

/// Live changes.
struct Reloads {
    reloads: Family<OutcomeLabels, Counter>,
    refused: Counter,
}

/// Rollout arms, shadow copies and decisions.
struct Rollouts {
    arms: Family<ArmLabels, Counter>,
    shadow: Family<ResultLabels, Counter>,
    events: Family<RolloutLabels, Counter>,
}

pub struct Metrics {
    registry: Registry,
    ingress: Ingress,
    policies: Policies,
    reloads: Reloads,
    rollouts: Rollouts,
    guest_names: Bounded,
    /// Stage cache lookups since start: hits, waits (joined a running call), misses.
    cache_counts: [std::sync::atomic::AtomicU64; 3],
}

pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cascade");
        let ingress = Ingress {
            requests: Family::default(),
            latency: Family::new_with_constructor(Buckets),
            rejected: Family::default(),
            axon: Family::default(),
            admission: Family::default(),
            decoded: Family::default(),
        };
        let r = &mut registry;
        r.register("requests", "Requests answered, by hotkey, stage and outcome", ingress.requests.clone());
        r.register("request_duration_seconds", "Time from request to answer, by hotkey", ingress.latency.clone());
        r.register(
            "rejected",
            "Requests refused before a policy ran, by error code and HTTP status",
            ingress.rejected.clone(),
        );
        r.register("axon_requests", "Subnet requests (/ImageSynapse) by HTTP status", ingress.axon.clone());
        r.register(
            "axon_admission",
            "Subnet callers by admission decision (allow, any-signed, metagraph, or the refusal)",
            ingress.admission.clone(),
        );
        r.register(
            "decoded_images",
            "Request images by how they were obtained (decoded, shared: another request's decode of the same bytes, refused; evicted); big JPEGs decoded scaled in the DCT are also counted as scaled-1/2, -1/4, -1/8; fell-back: a big JPEG whose scaled decode libjpeg-turbo refused, decoded in full by zune-jpeg",
            ingress.decoded.clone(),
        );
        let policies = Policies {
            events: Family::default(),
            fallbacks: Family::default(),
            partial: Family::default(),
            model_seconds: Family::default(),
            cache: Family::default(),
        };
        r.register(
            "component_events",
            "Component traps, fuel and time exhaustion, memory limits, instantiation failures",
            policies.events.clone(),
        );
        r.register("fallbacks", "Requests whose policy failed, by reason", policies.fallbacks.clone());
        r.register(
            "partial_answers",
            "Failed policies answered from the scores models had already produced, by those models",
            policies.partial.clone(),
        );
        r.register(
            "stage_cache",
            "Stage cache lookups by model and result (hit, miss, wait: joined a running call; evicted)",
            policies.cache.clone(),
        );
        r.register("hotkey_model_seconds", "Model time spent for a hotkey's requests", policies.model_seconds.clone());
        let reloads = Reloads { reloads: Family::default(), refused: Counter::default() };
        r.register("reloads", "Reloads by outcome (applied, refused, unchanged)", reloads.reloads.clone());
        r.register(
            "refused_changes",
            "Changed files refused by validation (the previous version kept serving)",
            reloads.refused.clone(),
        );
        let rollouts = Rollouts { arms: Family::default(), shadow: Family::default(), events: Family::default() };
        r.register("arm_requests", "Requests per rollout arm and outcome", rollouts.arms.clone());
        r.register("shadow", "Shadow copies by result (agree, disagree, skipped, failed)", rollouts.shadow.clone());
        r.register("rollout_events", "Promotions, rollbacks and canary steps", rollouts.events.clone());
        Metrics {
            registry,
            ingress,
            policies,
            reloads,
            rollouts,
            guest_names: Bounded::new(GUEST_NAMES_PER_HOTKEY),
            cache_counts: Default::default(),
        }
    }

    /// A request answered (outcome `ok`, or `fallback` when the policy could not answer).
    pub fn request(&self, hotkey: &str, stage: &str, outcome: &'static str, took: Duration) {
        let hotkey = Label::new(hotkey);
        let stage = self.guest_names.label(&hotkey, stage);
        self.ingress.latency.get_or_create(&HotkeyLabels { hotkey: hotkey.clone() }).observe(took.as_secs_f64());
        self.ingress.requests.get_or_create(&RequestLabels { hotkey, stage, outcome }).inc();
    }

    /// A request refused before any policy ran.
    pub(crate) fn rejected(&self, code: &'static str, status: u16) {
        self.ingress.rejected.get_or_create(&RejectedLabels { code, status }).inc();
    }

    /// A component trapped, ran out of fuel or time, or could not be instantiated.
    pub(crate) fn component_event(&self, hotkey: &str, role: &'static str, kind: &'static str) {
        self.policies.events.get_or_create(&EventLabels { hotkey: Label::new(hotkey), role, kind }).inc();
    }

    pub fn fallback(&self, hotkey: &str, reason: &'static str) {
        self.policies.fallbacks.get_or_create(&ReasonLabels { hotkey: Label::new(hotkey), reason }).inc();
    }

    /// A failed policy answered from partial evidence (`models`: the classifiers that scored).
    pub fn partial(&self, hotkey: &str, models: &str) {
        let hotkey = Label::new(hotkey);
        let model = self.guest_names.label(&hotkey, models);
        self.policies.partial.get_or_create(&ModelTimeLabels { hotkey, model }).inc();
    }

    /// A stage cache lookup (`hit`, `miss`, `wait`) or eviction (`evicted`).
    pub(crate) fn stage_cache(&self, model: &str, result: &'static str) {
        // model names come from the registry (or a component's call of a configured model)
        self.policies.cache.get_or_create(&CacheLabels { model: Label::new(model), result }).inc();
        let slot = match result {
            "hit" => 0,
            "wait" => 1,
            "miss" => 2,
            _ => return,
        };
        self.cache_counts[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stage cache lookups since start: (hits, waits, misses), for the status page.
    pub(crate) fn stage_cache_counts(&self) -> (u64, u64, u64) {
        let [h, w, m] = &self.cache_counts;
        let r = std::sync::atomic::Ordering::Relaxed;
        (h.load(r), w.load(r), m.load(r))
    }

    /// A request image decoded, shared from another request's decode, refused, or evicted.
    pub fn decoded(&self, result: &'static str) {
        self.ingress.decoded.get_or_create(&AdmissionLabels { result }).inc();
    }

    /// How an axon caller was admitted, or why not.
    pub fn admission(&self, result: &'static str) {
        self.ingress.admission.get_or_create(&AdmissionLabels { result }).inc();
    }

    /// A request answered by one arm of a rollout.
    pub fn arm(&self, hotkey: &str, side: crate::config::Side, fallback: bool) {
        let arm = if side == crate::config::Side::Candidate { "candidate" } else { "stable" };
        let outcome = if fallback { "fallback" } else { "ok" };
        self.rollouts.arms.get_or_create(&ArmLabels { hotkey: Label::new(hotkey), arm, outcome }).inc();
    }

    /// A shadow copy compared (`agree`, `disagree`), or `skipped`/`failed`.
    pub fn shadow(&self, hotkey: &str, result: &'static str) {
        self.rollouts.shadow.get_or_create(&ResultLabels { hotkey: Label::new(hotkey), result }).inc();
    }

    /// `promote`, `rollback`, `step`.
    pub(crate) fn rollout_event(&self, hotkey: &str, event: &'static str) {
        self.rollouts.events.get_or_create(&RolloutLabels { hotkey: Label::new(hotkey), event }).inc();
    }

    /// A subnet request answered with this status.
    pub fn axon(&self, status: u16) {
        self.ingress.axon.get_or_create(&StatusLabels { status }).inc();
    }

    /// A reload finished: `applied`, `refused` (something was refused) or `unchanged`.
    pub fn reload(&self, outcome: &'static str) {
        self.reloads.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A changed file was refused; the last good version keeps serving.
    pub fn refusal(&self) {
        self.reloads.refused.inc();
    }

    /// Model time spent on behalf of a hotkey's requests.
    pub fn model_time(&self, hotkey: &str, model: &str, t: Duration) {
        let hotkey = Label::new(hotkey);
        let model = self.guest_names.label(&hotkey, model);
        self.policies.model_seconds.get_or_create(&ModelTimeLabels { hotkey, model }).inc_by(t.as_secs_f64());
    }

    /// The OpenMetrics text of every family, then `scraped`: figures read at scrape time from
    /// the parts that own them (the loaded models, the metagraph snapshot, the prediction
    /// logs), then the GPUs'.
    pub fn render(&self, scraped: impl IntoIterator<Item = Registry>) -> String {
        let mut o = String::new();
        // writing to a String cannot fail
        let _ = encode_registry(&mut o, &self.registry);
        for r in scraped {
            let _ = encode_registry(&mut o, &r);
        }
        if let Some(gpus) = gpu::registry() {
            let _ = encode_registry(&mut o, &gpus);
        }
        let _ = encode_eof(&mut o);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_chosen_names_cannot_inject_lines() {
        let m = Metrics::new();
        m.request("h", "x\"} 1\ncascade_fake_total 9\n#", "ok", Duration::from_millis(3));
        let text = m.render([]);
        assert!(!text.contains("\ncascade_fake_total"), "{text}");
        assert!(text
            .contains("cascade_requests_total{hotkey=\"h\",stage=\"x___1_cascade_fake_total_9__\",outcome=\"ok\"} 1"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn stage_names_are_bounded_per_hotkey() {
        let m = Metrics::new();
        for i in 0..(GUEST_NAMES_PER_HOTKEY + 10) {
            m.request("h", &format!("s{i}"), "ok", Duration::ZERO);
        }
        let text = m.render([]);
        let series = text.lines().filter(|l| l.starts_with("cascade_requests_total{")).count();
        assert_eq!(series, GUEST_NAMES_PER_HOTKEY + 1, "{text}");
        assert!(text.contains("stage=\"other\",outcome=\"ok\"} 10"));
    }
}

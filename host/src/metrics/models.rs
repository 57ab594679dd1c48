//! The loaded models' counters, read from the engines' atomics at scrape time. The model set
//! changes with reloads, so its series are collected from the set that serves now.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use cascade_engines::{ModelStats, Models};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Label;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: Label,
}

#[derive(Debug)]
struct ModelSeries(Vec<(Label, Arc<ModelStats>)>);

enum Value {
    Count(u64),
    Seconds(f64),
    Level(i64),
}

/// Name (without prefix or `_total`), help, and how to read it.
type Series = (&'static str, &'static str, fn(&ModelStats) -> Value);

const SERIES: [Series; 14] = [
    ("model_runs", "Session runs (batches) per model", |s| Value::Count(s.runs.load(Relaxed))),
    ("model_items", "Images inferred per model", |s| Value::Count(s.items.load(Relaxed))),
    ("model_busy_seconds", "Time spent in session runs per model", |s| {
        Value::Seconds(s.busy_ns.load(Relaxed) as f64 / 1e9)
    }),
    ("model_failures", "Items whose run failed, per model", |s| Value::Count(s.failures.load(Relaxed))),
    ("model_runs_here", "Items run at once on the requesting thread (a short CPU model, idle), not queued", |s| {
        Value::Count(s.here.load(Relaxed))
    }),
    ("model_expired", "Items dropped from the queue past their deadline", |s| Value::Count(s.expired.load(Relaxed))),
    ("model_queue_depth", "Items waiting in the model's queue", |s| Value::Level(s.queued.load(Relaxed).max(0))),
    (
        "model_gpu_memory_bytes",
        "Device memory taken by the model's loaded sessions (measured at load, CUDA models)",
        |s| Value::Level(s.gpu_bytes.load(Relaxed).min(i64::MAX as u64) as i64),
    ),
    ("model_loaded", "Workers of the model with their sessions loaded (lazy models drop to 0 when idle)", |s| {
        Value::Level(s.loaded.load(Relaxed).max(0))
    }),
    ("model_loads", "Times a worker of the model loaded its sessions (lazy models reload on use)", |s| {
        Value::Count(s.loads.load(Relaxed))
    }),
    ("model_cpu_preprocess", "CUDA models or batches whose inputs were prepared on the CPU instead of the GPU", |s| {
        Value::Count(s.prep_fallbacks.load(Relaxed))
    }),
    ("model_retries", "Remote models: attempts repeated after a failure, within the request's budget", |s| {
        Value::Count(s.retries.load(Relaxed))
    }),
    ("model_fast_failures", "Remote models: calls refused at once because the circuit breaker is open", |s| {
        Value::Count(s.fast_failures.load(Relaxed))
    }),
    (
        "model_breaker_open",
        "Remote models: 1 while the circuit breaker is open (the endpoint is considered down)",
        |s| Value::Level(s.breaker_open.load(Relaxed)),
    ),
];

impl Collector for ModelSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fallbacks = ConstCounter::new(cascade_engines::CPU_FALLBACKS.load(Relaxed));
        let e = encoder.encode_descriptor(
            "model_cpu_fallbacks",
            "Models that asked for CUDA and run on the CPU (cpu_fallback)",
            None,
            fallbacks.metric_type(),
        )?;
        fallbacks.encode(e)?;
        for (name, help, read) in SERIES {
            let gauge = ["_depth", "_bytes", "_loaded", "_open"].iter().any(|s| name.ends_with(s));
            let kind = if gauge { ConstGauge::new(0i64).metric_type() } else { ConstCounter::new(0u64).metric_type() };
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (model, stats) in &self.0 {
                let labels = ModelLabels { model: model.clone() };
                let e = family.encode_family(&labels)?;
                match read(stats) {
                    Value::Count(v) => ConstCounter::new(v).encode(e)?,
                    Value::Seconds(v) => ConstCounter::new(v).encode(e)?,
                    Value::Level(v) => ConstGauge::new(v).encode(e)?,
                }
            }
        }
        Ok(())
    }
}

/// A registry holding the models' series as they are now.
pub(crate) fn registry(models: &Models) -> Registry {
    let mut r = Registry::with_prefix("cascade");
    let rows = models.stats().map(|(name, s)| (Label::new(name), s.clone())).collect();
    r.register_collector(Box::new(ModelSeries(rows)));
    r
}

//! The prediction logs' counters, read at scrape time: records written, dropped (the writer's
//! queue was full) and lost to write errors (a full or failing disk), per log folder.

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

use crate::metrics::scrape::gauge_family;
use crate::metrics::Label;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LogLabels {
    log: Label,
}

#[derive(Debug)]
struct LogSeries;

impl Collector for LogSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let logs = super::counts();
        type Read = fn(&super::Counts) -> u64;
        let series: [(&str, &str, Read); 3] = [
            ("log_records", "Prediction log records written", |c| c.written.load(Relaxed)),
            ("log_dropped", "Prediction log records dropped: the writer's queue was full", |c| c.dropped.load(Relaxed)),
            ("log_errors", "Prediction log records lost to write errors (full or failing disk)", |c| {
                c.errors.load(Relaxed)
            }),
        ];
        let log_of = |dir: &std::path::Path| LogLabels {
            log: Label::new(&dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
        };
        gauge_family(
            &mut encoder,
            "log_failing",
            "1 while a prediction log cannot write (full or read-only disk): records are dropped and the writer retries",
            logs.iter().map(|(dir, c)| (log_of(dir), i64::from(c.failing.lock().is_some()))),
        )?;
        for (name, help, read) in series {
            let mut family = encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
            for (dir, c) in &logs {
                ConstCounter::new(read(c)).encode(family.encode_family(&log_of(dir))?)?;
            }
        }
        Ok(())
    }
}

/// The logs' series as they are now (empty when no hotkey logs).
pub(crate) fn registry() -> Option<Registry> {
    if super::counts().is_empty() {
        return None;
    }
    let mut r = Registry::with_prefix("cascade");
    r.register_collector(Box::new(LogSeries));
    Some(r)
}

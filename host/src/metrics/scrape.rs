//! Gauges written at scrape time by the collectors that read state rather than record events
//! (the metagraph snapshot, the prediction logs, the GPUs): one descriptor and its samples.

use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// A gauge family: the descriptor, then one sample per label set, in the order given.
pub(crate) fn gauge_family<L, N>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, N)>,
) -> std::fmt::Result
where
    L: EncodeLabelSet,
    N: EncodeGaugeValue,
{
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge without labels.
pub(crate) fn gauge<N: EncodeGaugeValue>(e: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

#[cfg(test)]
mod tests {
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    use super::*;

    #[derive(Debug)]
    struct Two;

    impl Collector for Two {
        fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
            gauge_family(&mut e, "x", "Per a", [([("a", "1")], 2i64), ([("a", "2")], 3i64)])?;
            gauge_family(&mut e, "none", "No rows", Vec::<([(&str, &str); 1], i64)>::new())?;
            gauge(&mut e, "y", "Alone", 0.5f64)
        }
    }

    #[test]
    fn families_and_single_gauges_are_written_as_openmetrics() {
        let mut r = Registry::with_prefix("cascade");
        r.register_collector(Box::new(Two));
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &r).expect("encode");
        for line in [
            "# TYPE cascade_x gauge",
            "cascade_x{a=\"1\"} 2",
            "cascade_x{a=\"2\"} 3",
            "# TYPE cascade_none gauge",
            "# HELP cascade_y Alone",
            "cascade_y 0.5",
        ] {
            assert!(out.contains(line), "{line:?} missing:\n{out}");
        }
    }
}

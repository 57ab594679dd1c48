//! The metagraph snapshot's figures at scrape time: its age (alert when it grows), size, block
//! and whether it is past its stale limit; and each hotkey's standing alarms (`health`), which
//! the alert rules page on.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use crate::metrics::scrape::{gauge, gauge_family};

use super::health::Alarm;
use super::Chain;

#[derive(Debug)]
struct Figures {
    loaded: bool,
    age_s: f64,
    neurons: i64,
    block: i64,
    stale: bool,
    /// (hotkey, kind, severity) of each standing alarm.
    alarms: Vec<(String, &'static str, &'static str)>,
}

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let alarms = self.alarms.iter().map(|(hotkey, kind, severity)| {
            ([("hotkey", hotkey.as_str()), ("kind", *kind), ("severity", *severity)], 1i64)
        });
        gauge_family(
            &mut encoder,
            "axon_alarm",
            "1 for each standing reason validators are refused or cannot reach a hotkey (kind: no-snapshot, admits-nobody, address-differs, stale-snapshot)",
            alarms,
        )?;
        gauge(&mut encoder, "metagraph_loaded", "1 when a metagraph snapshot is loaded", i64::from(self.loaded))?;
        if !self.loaded {
            return Ok(());
        }
        gauge(
            &mut encoder,
            "metagraph_age_seconds",
            "Seconds since the loaded metagraph snapshot was taken",
            self.age_s,
        )?;
        for (name, help, v) in [
            ("metagraph_neurons", "Neurons in the loaded metagraph snapshot", self.neurons),
            ("metagraph_block", "Block of the loaded metagraph snapshot", self.block),
            ("metagraph_stale", "1 when the snapshot is older than stale_after_s", i64::from(self.stale)),
        ] {
            gauge(&mut encoder, name, help, v)?;
        }
        Ok(())
    }
}

pub(crate) fn registry(chain: &Chain, alarms: &[Alarm]) -> Registry {
    let mut r = Registry::with_prefix("cascade");
    let now = crate::chain::now_unix_s();
    let f = match &chain.metagraph {
        Some(m) => Figures {
            loaded: true,
            age_s: m.age_s(now),
            neurons: m.neurons as i64,
            block: m.block.min(i64::MAX as u64) as i64,
            stale: m.age_s(now) > chain.config.stale_after_s,
            alarms: Vec::new(),
        },
        None => Figures { loaded: false, age_s: 0.0, neurons: 0, block: 0, stale: false, alarms: Vec::new() },
    };
    let f = Figures {
        alarms: alarms
            .iter()
            .map(|a| {
                let severity = match a.severity {
                    super::health::Severity::Refusing => "refusing",
                    super::health::Severity::Degraded => "degraded",
                };
                (a.hotkey.clone(), a.kind.as_str(), severity)
            })
            .collect(),
        ..f
    };
    r.register_collector(Box::new(f));
    r
}

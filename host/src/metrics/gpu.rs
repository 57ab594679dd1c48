//! GPU health in `/metrics` through NVML, loaded at run time like the CUDA driver: per device
//! utilisation, memory used and total, temperature, power and throttle reasons. Without NVML
//! (a CPU machine, a container without the driver's libraries) there are no series and one
//! info line in the log, never an error.

use std::sync::OnceLock;

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Nvml;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::registry::Registry;

use super::scrape::gauge_family;

/// NVML, once: `None` when the library or a driver is absent.
fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| match Nvml::init() {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::info!(reason = %e, "NVML is not available: no GPU health metrics");
            None
        }
    })
    .as_ref()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThrottleLabels {
    device: String,
    reason: &'static str,
}

const REASONS: [(ThrottleReasons, &str); 6] = [
    (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
    (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
    (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
    (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
    (ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN, "hw_power_brake_slowdown"),
    (ThrottleReasons::SYNC_BOOST, "sync_boost"),
];

/// One device's readings (a reading NVML refuses is left out).
#[derive(Debug, Default)]
struct Reading {
    device: String,
    utilization: Option<f64>,
    memory: Option<(u64, u64)>,
    temperature: Option<u32>,
    power_w: Option<f64>,
    throttle: Option<ThrottleReasons>,
}

#[derive(Debug)]
struct Devices(Vec<Reading>);

/// A per-device gauge, left out when no device reports it.
fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, rows: Vec<(String, f64)>) -> std::fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    gauge_family(e, name, help, rows.into_iter().map(|(device, v)| (DeviceLabels { device }, v)))
}

impl Collector for Devices {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let d = &self.0;
        let rows = |f: &dyn Fn(&Reading) -> Option<f64>| -> Vec<(String, f64)> {
            d.iter().filter_map(|r| f(r).map(|v| (r.device.clone(), v))).collect()
        };
        gauge(
            &mut e,
            "gpu_utilization_ratio",
            "GPU busy share over NVML's last sample period",
            rows(&|r| r.utilization),
        )?;
        gauge(&mut e, "gpu_memory_used_bytes", "Device memory in use", rows(&|r| r.memory.map(|m| m.0 as f64)))?;
        gauge(&mut e, "gpu_memory_total_bytes", "Device memory in all", rows(&|r| r.memory.map(|m| m.1 as f64)))?;
        gauge(&mut e, "gpu_temperature_celsius", "GPU core temperature", rows(&|r| r.temperature.map(f64::from)))?;
        gauge(&mut e, "gpu_power_watts", "Board power draw", rows(&|r| r.power_w))?;
        if d.iter().any(|r| r.throttle.is_some()) {
            let rows = d.iter().filter_map(|r| r.throttle.map(|t| (r, t))).flat_map(|(r, t)| {
                REASONS.iter().map(move |(bit, reason)| {
                    (ThrottleLabels { device: r.device.clone(), reason }, i64::from(t.contains(*bit)))
                })
            });
            gauge_family(&mut e, "gpu_throttled", "1 while the clocks are held down for this reason", rows)?;
        }
        Ok(())
    }
}

/// The devices' readings now, as a registry (empty without NVML).
pub(super) fn registry() -> Option<Registry> {
    let nvml = nvml()?;
    let n = nvml.device_count().ok()?;
    let readings = (0..n)
        .filter_map(|i| {
            let dev = nvml.device_by_index(i).ok()?;
            Some(Reading {
                device: i.to_string(),
                utilization: dev.utilization_rates().ok().map(|u| f64::from(u.gpu) / 100.0),
                memory: dev.memory_info().ok().map(|m| (m.used, m.total)),
                temperature: dev.temperature(TemperatureSensor::Gpu).ok(),
                power_w: dev.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                throttle: dev.current_throttle_reasons().ok(),
            })
        })
        .collect();
    let mut r = Registry::with_prefix("cascade");
    r.register_collector(Box::new(Devices(readings)));
    Some(r)
}

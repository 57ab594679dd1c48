//! The server's side of `chain::health`: the alarms are logged at start and whenever they
//! change (a new alarm or a changed reason at once, a standing one again every
//! [`REPEAT`], a cleared one as cleared), and a validator refused for want of a snapshot is
//! logged as it happens, at most once a minute per hotkey. `/healthz`, `/metrics` and the
//! status page read the alarms from the serving state directly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chain::health::{Alarm, AlarmKind};

use super::state::Server;

/// How often the alarms are recomputed (a snapshot ages without any file changing).
pub const PERIOD: Duration = Duration::from_secs(5);
/// A standing alarm is logged again this often.
pub const REPEAT: Duration = Duration::from_secs(600);
/// Refusals of validators for want of a snapshot are logged at most this often per hotkey.
const REFUSAL_EVERY: Duration = Duration::from_secs(60);
/// A changed reason of a standing alarm is logged at most this often (a stale snapshot's age
/// changes every minute).
const CHANGE_EVERY: Duration = Duration::from_secs(60);

/// What was last logged of each alarm and of each hotkey's refusals.
#[derive(Default)]
pub struct AlarmLog {
    logged: BTreeMap<(String, AlarmKind), (String, Instant)>,
    refusals: BTreeMap<String, Instant>,
}

impl AlarmLog {
    /// Logs what changed since the last call; returns the lines written (for tests).
    pub(crate) fn update(&mut self, alarms: &[Alarm], now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        let mut seen = Vec::new();
        for a in alarms {
            let key = (a.hotkey.clone(), a.kind);
            let due = match self.logged.get(&key) {
                None => true,
                Some((msg, at)) => {
                    now.duration_since(*at) >= REPEAT || (msg != &a.message && now.duration_since(*at) >= CHANGE_EVERY)
                }
            };
            if due {
                tracing::warn!(hotkey = %a.hotkey, alarm = a.kind.as_str(), "{a}");
                lines.push(a.to_string());
                self.logged.insert(key.clone(), (a.message.clone(), now));
            }
            seen.push(key);
        }
        let cleared: Vec<_> = self.logged.keys().filter(|k| !seen.contains(k)).cloned().collect();
        for k in cleared {
            self.logged.remove(&k);
            let line = format!("hotkey {}: {} cleared", k.0, k.1.as_str());
            tracing::info!(hotkey = %k.0, alarm = k.1.as_str(), "{line}");
            lines.push(line);
        }
        lines
    }

    /// Whether a refusal of a validator at `hotkey` is to be logged now.
    fn refusal_due(&mut self, hotkey: &str, now: Instant) -> bool {
        match self.refusals.get(hotkey) {
            Some(at) if now.duration_since(*at) < REFUSAL_EVERY => false,
            _ => {
                self.refusals.insert(hotkey.to_string(), now);
                true
            }
        }
    }
}

impl Server {
    /// Logs the alarms every [`PERIOD`] until the server stops.
    pub async fn watch_health(self: Arc<Self>) {
        let mut stopping = self.stopping.subscribe();
        loop {
            let alarms = self.serving.load().alarms();
            self.alarm_log.lock().update(&alarms, Instant::now());
            tokio::select! {
                _ = tokio::time::sleep(PERIOD) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// A validator was refused because no snapshot is loaded: said in the log, rate-limited.
    pub(crate) fn refused_for_no_snapshot(&self, hotkey: &str, caller: &str) {
        if self.alarm_log.lock().refusal_due(hotkey, Instant::now()) {
            tracing::warn!(
                hotkey,
                caller,
                "refused a caller with 403: no metagraph snapshot is loaded (run scripts/chain/metagraph_sync.py --once); \
                 further refusals of this hotkey are logged at most once a minute"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::health::Severity;

    fn alarm(kind: AlarmKind, message: &str) -> Alarm {
        Alarm { hotkey: "a".into(), kind, severity: Severity::Refusing, message: message.into(), fix: "f".into() }
    }

    #[test]
    fn alarms_are_logged_on_change_and_rate_limited() {
        let mut log = AlarmLog::default();
        let t0 = Instant::now();
        let no = alarm(AlarmKind::NoSnapshot, "no snapshot");
        assert_eq!(log.update(std::slice::from_ref(&no), t0).len(), 1, "logged at start");
        assert!(log.update(std::slice::from_ref(&no), t0 + PERIOD).is_empty(), "not again at once");
        let reworded = alarm(AlarmKind::NoSnapshot, "no snapshot: refused");
        assert!(log.update(std::slice::from_ref(&reworded), t0 + Duration::from_secs(10)).is_empty());
        assert_eq!(log.update(std::slice::from_ref(&reworded), t0 + CHANGE_EVERY).len(), 1, "a new reason");
        assert_eq!(log.update(std::slice::from_ref(&reworded), t0 + CHANGE_EVERY + REPEAT).len(), 1, "repeated");
        let lines = log.update(&[], t0 + REPEAT * 2);
        assert_eq!(lines, vec!["hotkey a: no-snapshot cleared".to_string()]);
        assert!(log.update(&[], t0 + REPEAT * 3).is_empty());
        assert!(log.refusal_due("a", t0) && !log.refusal_due("a", t0 + PERIOD) && log.refusal_due("b", t0));
        assert!(log.refusal_due("a", t0 + REFUSAL_EVERY));
    }
}

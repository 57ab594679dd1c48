//! Whether validators get answers at a hotkey, as alarms every operator-facing place shows the
//! same way: `cascade check` (a failure), the server log (on start and on every change),
//! `/healthz` (`degraded`), `/admin` (a red banner) and `/metrics` (`cascade_axon_alarm`, which
//! the alert rules watch). A validator refused in silence is the costliest failure a miner
//! has: it earns nothing and nothing else looks wrong.

use std::net::IpAddr;

use serde::Serialize;

use super::{now_unix_s, Chain};
use crate::config::AxonConfig;

/// How bad an alarm is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Validators still get answers, but soon may not (a stale snapshot).
    Degraded,
    /// Validators are refused or cannot reach the hotkey now.
    Refusing,
}

/// What is wrong, as a stable label (metrics, JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlarmKind {
    /// Admission is by rule and no metagraph snapshot is loaded: every validator gets 403.
    NoSnapshot,
    /// No rule and no allow list: every validator gets 403.
    AdmitsNobody,
    /// The chain announces another address than the one this hotkey is configured for.
    AddressDiffers,
    /// The snapshot is past `stale_after_s`: validators registered since are refused.
    StaleSnapshot,
}

impl AlarmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::NoSnapshot => "no-snapshot",
            AlarmKind::AdmitsNobody => "admits-nobody",
            AlarmKind::AddressDiffers => "address-differs",
            AlarmKind::StaleSnapshot => "stale-snapshot",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            AlarmKind::StaleSnapshot => Severity::Degraded,
            _ => Severity::Refusing,
        }
    }
}

/// One thing that keeps validators from answers at one hotkey, with what fixes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    pub hotkey: String,
    pub kind: AlarmKind,
    pub severity: Severity,
    /// What validators meet, and why.
    pub message: String,
    /// What the operator runs or edits.
    pub fix: String,
}

impl std::fmt::Display for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}. Fix: {}", self.message, self.fix)
    }
}

/// The alarms of the subnet hotkey `ss58`, served as hotkey `name` with axon settings `axon`.
pub fn alarms(name: &str, ss58: &str, axon: &AxonConfig, chain: &Chain) -> Vec<Alarm> {
    let mut out = Vec::new();
    let mut raise = |kind: AlarmKind, message: String, fix: String| {
        out.push(Alarm { hotkey: name.to_string(), kind, severity: kind.severity(), message, fix });
    };
    let rule = chain.rule(axon);
    if axon.allow_any_signed {
        // every signed caller gets in: nothing below can refuse a validator
    } else if rule.is_none() && axon.allow.is_empty() {
        raise(
            AlarmKind::AdmitsNobody,
            format!("hotkey {name} ({ss58}) admits no validator: every one gets 403"),
            format!("give it [axon.admit], a default [admit] in {}, or an allow list", super::CHAIN_FILE),
        );
    } else if rule.is_some() && chain.metagraph.is_none() {
        let who = if axon.allow.is_empty() {
            "refuses every validator".to_string()
        } else {
            format!("admits only its {} allowed key(s)", axon.allow.len())
        };
        let why = chain.absent_because.as_deref().unwrap_or("none has been read yet");
        raise(
            AlarmKind::NoSnapshot,
            format!(
                "hotkey {name} ({ss58}) {who}: no metagraph snapshot is loaded ({why}); validators get \
                 403 \"Key … is not allowed and no metagraph snapshot is loaded\""
            ),
            "run scripts/chain/metagraph_sync.py --once for a snapshot now, and keep metagraph_sync running \
             (compose: metagraph-sync; systemd: cascade-metagraph)"
                .into(),
        );
    }
    let Some(m) = &chain.metagraph else { return out };
    let age = m.age_s(now_unix_s());
    if age > chain.config.stale_after_s && rule.is_some() {
        raise(
            AlarmKind::StaleSnapshot,
            format!(
                "hotkey {name}: the metagraph snapshot is {:.0} min old (stale_after_s = {}); validators \
                 registered or permitted since then are refused",
                age / 60.0,
                chain.config.stale_after_s
            ),
            "is metagraph_sync running? Its log says why it stopped".into(),
        );
    }
    if let (Some((ip, port)), Some(want)) = (m.announced_at(ss58), expected(axon)) {
        let differs: Vec<String> = [
            want.0.filter(|w| *w != ip).map(|w| format!("ip {ip} on chain, {w} configured")),
            (want.1 != port).then(|| format!("port {port} on chain, {} configured ({})", want.1, want.2)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !differs.is_empty() {
            raise(
                AlarmKind::AddressDiffers,
                format!(
                    "hotkey {name} ({ss58}) is announced at {} but configured for another address: {}; \
                     validators call the announced one",
                    super::snapshot::addr(ip, port),
                    differs.join(", ")
                ),
                "run scripts/chain/announce.py (it publishes [axon.announce]), or correct [axon.announce] / \
                 axon.listen"
                    .into(),
            );
        }
    }
    out
}

/// The address this hotkey is configured to be announced at: `[axon.announce]`'s ip and port
/// (its port defaulting to `axon.listen`'s), else `axon.listen`'s port alone (its ip is a bind
/// address, usually 0.0.0.0, not the public one). `None`: nothing configured to compare.
fn expected(axon: &AxonConfig) -> Option<(Option<IpAddr>, u16, &'static str)> {
    match (&axon.announce, axon.listen) {
        (Some(a), l) => {
            let (port, from) = match (a.port, l) {
                (Some(p), _) => (p, "axon.announce.port"),
                (None, Some(l)) => (l.port(), "axon.listen"),
                (None, None) => return None,
            };
            Some((Some(a.ip), port, from))
        }
        (None, Some(l)) => Some((None, l.port(), "axon.listen")),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::chain::{snapshot::tests_support, ChainConfig, Metagraph, Rule};
    use crate::config::Announce;
    use crate::ss58;

    fn chain(metagraph: Option<Metagraph>, taken_ago_s: f64) -> Chain {
        let metagraph = metagraph.map(|mut m| {
            m.taken_at = now_unix_s() - taken_ago_s;
            Arc::new(m)
        });
        Chain {
            config: ChainConfig { admit: Some(Rule { validator_permit: true, min_stake: 0.0 }), ..Default::default() },
            metagraph,
            absent_because: None,
        }
    }

    fn announced(ip: &str, port: u16) -> Metagraph {
        let text = tests_support::snapshot(72, &[(0, [1; 32], 500.0, true)])
            .replace("\"ip\": \"0.0.0.0\", \"port\": 0", &format!("\"ip\": \"{ip}\", \"port\": {port}"));
        Metagraph::parse(text.as_bytes(), 72).unwrap()
    }

    #[test]
    fn no_snapshot_refuses_and_says_the_fix() {
        let key = ss58::encode(&[1; 32]);
        let mut c = chain(None, 0.0);
        c.absent_because = Some("policies/metagraph.json does not exist".into());
        let a = alarms("speed", &key, &AxonConfig::default(), &c);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!((a[0].kind, a[0].severity), (AlarmKind::NoSnapshot, Severity::Refusing));
        assert!(a[0].message.contains("hotkey speed") && a[0].message.contains("refuses every validator"));
        assert!(a[0].message.contains("policies/metagraph.json does not exist"), "{}", a[0].message);
        assert!(a[0].fix.contains("metagraph_sync.py --once"));
        // an allow list narrows it; any signed caller ends it
        let listed = AxonConfig { allow: vec![key.clone()], ..Default::default() };
        assert!(alarms("speed", &key, &listed, &c)[0].message.contains("admits only its 1 allowed key(s)"));
        let open = AxonConfig { allow_any_signed: true, ..Default::default() };
        assert_eq!(alarms("speed", &key, &open, &c), vec![]);
        // no rule and no list
        let c = Chain { config: ChainConfig::default(), ..c };
        assert_eq!(alarms("speed", &key, &AxonConfig::default(), &c)[0].kind, AlarmKind::AdmitsNobody);
    }

    #[test]
    fn stale_snapshots_degrade() {
        let key = ss58::encode(&[1; 32]);
        let fresh = chain(Some(announced("0.0.0.0", 0)), 60.0);
        assert_eq!(alarms("a", &key, &AxonConfig::default(), &fresh), vec![]);
        let old = chain(Some(announced("0.0.0.0", 0)), 7200.0);
        let a = alarms("a", &key, &AxonConfig::default(), &old);
        assert_eq!((a.len(), a[0].kind, a[0].severity), (1, AlarmKind::StaleSnapshot, Severity::Degraded));
        assert!(a[0].message.contains("120 min old"), "{}", a[0].message);
    }

    #[test]
    fn the_announced_address_is_compared_with_the_configured_one() {
        let key = ss58::encode(&[1; 32]);
        let c = chain(Some(announced("203.0.113.7", 8091)), 0.0);
        let announce = |ip: &str, port: Option<u16>| AxonConfig {
            announce: Some(Announce { wallet: "w".into(), hotkey: "h".into(), ip: ip.parse().unwrap(), port }),
            listen: Some("0.0.0.0:8091".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(alarms("a", &key, &announce("203.0.113.7", None), &c), vec![]);
        let a = alarms("a", &key, &announce("203.0.113.8", Some(9000)), &c);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, AlarmKind::AddressDiffers);
        assert!(
            a[0].message.contains("announced at 203.0.113.7:8091")
                && a[0].message.contains("ip 203.0.113.7 on chain, 203.0.113.8 configured")
                && a[0].message.contains("port 8091 on chain, 9000 configured (axon.announce.port)"),
            "{}",
            a[0].message
        );
        // only a listen port: the port is compared, not the bind address
        let listen = AxonConfig { listen: Some("0.0.0.0:8092".parse().unwrap()), ..Default::default() };
        let a = alarms("a", &key, &listen, &c);
        assert!(a[0].message.contains("port 8091 on chain, 8092 configured (axon.listen)"), "{}", a[0].message);
        assert!(!a[0].message.contains("ip "), "{}", a[0].message);
        // nothing configured: nothing to compare
        assert_eq!(alarms("a", &key, &AxonConfig::default(), &c), vec![]);
    }
}

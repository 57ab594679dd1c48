//! The metagraph snapshot file that `scripts/chain/metagraph_sync.py` writes from the chain
//! (through the `bittensor` SDK): who is registered on the subnet, with which stake and
//! validator permit, and where each miner's axon is announced. Parsed and checked as a whole;
//! a file that fails is refused with the reason and the last good snapshot keeps serving.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The snapshot format this host reads.
pub const FORMAT: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    network: String,
    netuid: u16,
    block: u64,
    /// Unix seconds when the snapshot was taken.
    taken_at: f64,
    neurons: Vec<Neuron>,
}

/// One registered key, as the metagraph lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neuron {
    pub uid: u32,
    pub hotkey: String,
    pub coldkey: String,
    pub stake: f64,
    pub validator_permit: bool,
    pub ip: String,
    pub port: u16,
}

/// A checked snapshot, indexed by hotkey.
#[derive(Debug, Clone)]
pub struct Metagraph {
    pub network: String,
    pub netuid: u16,
    pub block: u64,
    pub taken_at: f64,
    /// Every uid of a hotkey (a key can be registered more than once).
    pub by_hotkey: BTreeMap<String, Vec<Neuron>>,
    pub neurons: usize,
    /// Notes that do not refuse the file (a key registered at several uids).
    pub notes: Vec<String>,
}

/// What admission needs to know of one caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    pub validator_permit: bool,
    pub stake: f64,
}

impl Metagraph {
    /// Parses and checks a snapshot for `netuid`.
    pub fn parse(bytes: &[u8], netuid: u16) -> Result<Metagraph, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err("the snapshot file is empty".into());
        }
        let f: File = serde_json::from_slice(bytes).map_err(|e| format!("not a metagraph snapshot: {e}"))?;
        if f.version != FORMAT {
            return Err(format!("snapshot format {} (this host reads {FORMAT})", f.version));
        }
        if f.netuid != netuid {
            return Err(format!("snapshot of netuid {} (this host serves netuid {netuid})", f.netuid));
        }
        if f.neurons.is_empty() {
            return Err("the snapshot lists no neurons".into());
        }
        if !f.taken_at.is_finite() || f.taken_at <= 0.0 {
            return Err(format!("taken_at {} is not a time", f.taken_at));
        }
        let mut by_hotkey: BTreeMap<String, Vec<Neuron>> = BTreeMap::new();
        for n in &f.neurons {
            crate::ss58::decode(&n.hotkey)
                .map_err(|e| format!("uid {}: hotkey {:?} is not an SS58 address: {e}", n.uid, n.hotkey))?;
            if !n.stake.is_finite() || n.stake < 0.0 {
                return Err(format!("uid {}: stake {} is not a stake", n.uid, n.stake));
            }
            by_hotkey.entry(n.hotkey.clone()).or_default().push(n.clone());
        }
        let notes = by_hotkey
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(k, v)| {
                let uids: Vec<String> = v.iter().map(|n| n.uid.to_string()).collect();
                format!("hotkey {k} is registered at uids {}: admitted on its best standing", uids.join(", "))
            })
            .collect();
        Ok(Metagraph {
            network: f.network,
            netuid: f.netuid,
            block: f.block,
            taken_at: f.taken_at,
            neurons: f.neurons.len(),
            by_hotkey,
            notes,
        })
    }

    /// The caller's best standing over all its uids; `None` when it is not registered.
    pub(crate) fn standing(&self, hotkey: &str) -> Option<Standing> {
        let uids = self.by_hotkey.get(hotkey)?;
        Some(Standing {
            validator_permit: uids.iter().any(|n| n.validator_permit),
            stake: uids.iter().map(|n| n.stake).fold(0.0, f64::max),
        })
    }

    /// Where a miner hotkey's axon is announced (`None`: not registered; `Some(None)`: not serving).
    pub fn announced(&self, hotkey: &str) -> Option<Option<String>> {
        let uids = self.by_hotkey.get(hotkey)?;
        Some(serving(uids).map(|n| format!("{} (uid {})", addr_text(&n.ip, n.port), n.uid)))
    }

    /// The announced address of a miner hotkey, when it is registered, serving, and its ip is
    /// an IP address.
    pub fn announced_at(&self, hotkey: &str) -> Option<(std::net::IpAddr, u16)> {
        let n = serving(self.by_hotkey.get(hotkey)?)?;
        Some((n.ip.parse().ok()?, n.port))
    }

    /// Seconds since the snapshot was taken.
    pub(crate) fn age_s(&self, now_unix_s: f64) -> f64 {
        (now_unix_s - self.taken_at).max(0.0)
    }
}

/// The first uid of a key that announces an address.
fn serving(uids: &[Neuron]) -> Option<&Neuron> {
    uids.iter().find(|n| n.ip != "0.0.0.0" && !n.ip.is_empty() && n.port != 0)
}

fn addr_text(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// `ip:port`, with brackets around an IPv6 address.
pub(crate) fn addr(ip: std::net::IpAddr, port: u16) -> String {
    addr_text(&ip.to_string(), port)
}

/// Snapshot text for tests.
#[cfg(test)]
pub mod tests_support {
    use crate::ss58;

    pub fn snapshot(netuid: u16, neurons: &[(u32, [u8; 32], f64, bool)]) -> String {
        let ns: Vec<String> = neurons
            .iter()
            .map(|(uid, key, stake, permit)| {
                format!(
                    r#"{{"uid": {uid}, "hotkey": "{}", "coldkey": "{}", "stake": {stake}, "validator_permit": {permit}, "ip": "0.0.0.0", "port": 0}}"#,
                    ss58::encode(key),
                    ss58::encode(&[9; 32])
                )
            })
            .collect();
        format!(
            r#"{{"version": 1, "network": "test", "netuid": {netuid}, "block": 10, "taken_at": 1764470000.5, "neurons": [{}]}}"#,
            ns.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::snapshot;
    use super::*;
    use crate::ss58;

    #[test]
    fn parses_and_ranks_standing() {
        let s = snapshot(72, &[(0, [1; 32], 500.0, true), (1, [2; 32], 3.0, false), (2, [1; 32], 700.0, false)]);
        let m = Metagraph::parse(s.as_bytes(), 72).unwrap();
        assert_eq!(m.neurons, 3);
        let v = m.standing(&ss58::encode(&[1; 32])).unwrap();
        assert!(v.validator_permit);
        assert_eq!(v.stake, 700.0);
        assert_eq!(m.standing(&ss58::encode(&[3; 32])), None);
        assert_eq!(m.notes.len(), 1, "a key registered twice is noted");
        assert_eq!(m.announced(&ss58::encode(&[2; 32])), Some(None));
    }

    #[test]
    fn bad_snapshots_say_why() {
        let good = snapshot(72, &[(0, [1; 32], 1.0, true)]);
        let err = |b: &str| Metagraph::parse(b.as_bytes(), 72).unwrap_err();
        assert!(err("").contains("empty"));
        assert!(err(&good[..good.len() / 2]).contains("not a metagraph snapshot"));
        assert!(err("[1, 2]").contains("not a metagraph snapshot"));
        assert!(err(&snapshot(71, &[(0, [1; 32], 1.0, true)])).contains("netuid 71 (this host serves netuid 72)"));
        assert!(err(&snapshot(72, &[])).contains("no neurons"));
        assert!(err(&good.replace("\"version\": 1", "\"version\": 2")).contains("format 2"));
        assert!(err(&good.replace("1764470000.5", "-1")).contains("not a time"));
    }
}

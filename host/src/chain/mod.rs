//! Chain duties beside the axon: which callers a hotkey admits. Admission is by rule against
//! the subnet's metagraph (registered, validator permit, minimum stake) read from a snapshot
//! file that `scripts/chain/metagraph_sync.py` keeps fresh through the `bittensor` SDK, with
//! each hotkey's `allow` and `deny` lists as overrides. The process-wide settings and default
//! rule live in `policies/chain.toml`; both files reload live like every other file.

pub mod health;
pub(crate) mod metrics;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub use snapshot::{Metagraph, Standing};

use crate::config::AxonConfig;

pub use crate::config::Rule;
pub(crate) use crate::config::CHAIN_FILE;
/// The subnet this product serves.
pub(crate) const NETUID: u16 = 72;

/// `policies/chain.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    #[serde(default = "netuid")]
    pub netuid: u16,
    /// The snapshot file, relative to the policies folder.
    #[serde(default = "snapshot_file")]
    pub snapshot: PathBuf,
    /// Past this age the snapshot is reported stale (status, metrics, log).
    #[serde(default = "stale_after")]
    pub stale_after_s: f64,
    /// A snapshot older than this is refused: admission from it would be guesswork.
    #[serde(default = "refuse_after")]
    pub refuse_after_s: f64,
    /// The rule of every hotkey that has none of its own.
    pub admit: Option<Rule>,
}

fn netuid() -> u16 {
    NETUID
}
fn snapshot_file() -> PathBuf {
    PathBuf::from("metagraph.json")
}
fn stale_after() -> f64 {
    3600.0
}
fn refuse_after() -> f64 {
    7.0 * 86400.0
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            netuid: NETUID,
            snapshot: snapshot_file(),
            stale_after_s: stale_after(),
            refuse_after_s: refuse_after(),
            admit: None,
        }
    }
}

impl ChainConfig {
    pub fn parse(text: &str) -> Result<ChainConfig, String> {
        let c: ChainConfig = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        if !(c.stale_after_s > 0.0 && c.refuse_after_s >= c.stale_after_s) {
            return Err("stale_after_s must be positive and refuse_after_s at least as large".into());
        }
        if let Some(r) = &c.admit {
            r.check().map_err(|e| format!("admit.{e}"))?;
        }
        Ok(c)
    }

    pub fn snapshot_path(&self, policies: &Path) -> PathBuf {
        policies.join(&self.snapshot)
    }
}

/// Now, in unix seconds.
pub(crate) fn now_unix_s() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The admission state every hotkey reads: settings and the last good snapshot.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    pub config: ChainConfig,
    pub metagraph: Option<Arc<Metagraph>>,
    /// Why no snapshot is loaded (the file is missing, unreadable or refused), when none is.
    pub absent_because: Option<String>,
}

/// Why a caller was refused, in the words the 403 carries.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Denied {
    #[error("Forbidden. Key is blacklisted: {0}")]
    Listed(String),
    #[error("Forbidden. Key {0} is not registered on netuid {1}")]
    NotRegistered(String, u16),
    #[error("Forbidden. Key {0} has no validator permit")]
    NoPermit(String),
    #[error("Forbidden. Key {0} has stake {1} below {2}")]
    LowStake(String, f64, f64),
    #[error("Forbidden. Key {0} is not allowed and no metagraph snapshot is loaded")]
    NoSnapshot(String),
    #[error("Forbidden. Key {0} is not allowed here")]
    NotAllowed(String),
}

/// How a caller got in (for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    Allowed,
    AnySigned,
    Metagraph,
}

impl Denied {
    /// The refusal as a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Denied::Listed(_) => "denied",
            Denied::NotRegistered(..) => "not-registered",
            Denied::NoPermit(_) => "no-permit",
            Denied::LowStake(..) => "low-stake",
            Denied::NoSnapshot(_) => "no-snapshot",
            Denied::NotAllowed(_) => "not-allowed",
        }
    }
}

impl Admitted {
    pub fn as_str(self) -> &'static str {
        match self {
            Admitted::Allowed => "allow",
            Admitted::AnySigned => "any-signed",
            Admitted::Metagraph => "metagraph",
        }
    }
}

impl Chain {
    /// The rule a hotkey follows: its own, else the process-wide default.
    pub fn rule<'a>(&'a self, axon: &'a AxonConfig) -> Option<&'a Rule> {
        axon.admit.as_ref().or(self.config.admit.as_ref())
    }

    /// Decides whether `caller` may call a hotkey with these settings: `deny` first, then
    /// `allow` and `allow_any_signed`, then the rule against the snapshot.
    pub fn admit(&self, axon: &AxonConfig, caller: &str) -> Result<Admitted, Denied> {
        if axon.deny.iter().any(|d| d == caller) {
            return Err(Denied::Listed(caller.into()));
        }
        if axon.allow.iter().any(|a| a == caller) {
            return Ok(Admitted::Allowed);
        }
        if axon.allow_any_signed {
            return Ok(Admitted::AnySigned);
        }
        let Some(rule) = self.rule(axon) else { return Err(Denied::NotAllowed(caller.into())) };
        let Some(m) = &self.metagraph else { return Err(Denied::NoSnapshot(caller.into())) };
        let Some(s) = m.standing(caller) else { return Err(Denied::NotRegistered(caller.into(), m.netuid)) };
        if rule.validator_permit && !s.validator_permit {
            return Err(Denied::NoPermit(caller.into()));
        }
        if s.stake < rule.min_stake {
            return Err(Denied::LowStake(caller.into(), s.stake, rule.min_stake));
        }
        Ok(Admitted::Metagraph)
    }
}

/// What a validator would get at the subnet hotkey `ss58` with axon settings `a`, in one
/// line for `cascade check` and the admin API: who is admitted, where the hotkey is
/// announced, and how old the snapshot is.
pub fn describe(ss58: &str, a: &AxonConfig, chain: &Chain) -> String {
    let mut who = Vec::new();
    if let Some(r) = chain.rule(a) {
        who.push(r.describe());
    }
    if !a.allow.is_empty() {
        who.push(format!("{} allowed key(s)", a.allow.len()));
    }
    if a.allow_any_signed {
        who.push("any signed caller".into());
    }
    let who = if who.is_empty() { "NO validator (every one gets 403)".to_string() } else { who.join(" or ") };
    let deny = if a.deny.is_empty() { String::new() } else { format!(", {} denied", a.deny.len()) };
    let (announced, snapshot) = match &chain.metagraph {
        Some(m) => {
            let at = match m.announced(ss58) {
                None => format!("NOT REGISTERED on netuid {}", m.netuid),
                Some(None) => "registered, NOT ANNOUNCED (run scripts/chain/announce.py)".into(),
                Some(Some(addr)) => format!("announced at {addr}"),
            };
            let age = m.age_s(now_unix_s());
            let stale = if age > chain.config.stale_after_s { " STALE" } else { "" };
            let validators = m.by_hotkey.values().filter(|v| v.iter().any(|n| n.validator_permit)).count();
            (
                at,
                format!(
                    "snapshot block {} {:.0} min old{stale}, {validators} with validator permit",
                    m.block,
                    age / 60.0
                ),
            )
        }
        None => ("announcement unknown".into(), "no metagraph snapshot loaded".into()),
    };
    format!("{ss58}: admits {who}{deny}; {announced}; {snapshot}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ss58;

    fn chain(admit: Option<Rule>) -> Chain {
        let text = snapshot::tests_support::snapshot(
            72,
            &[(0, [1; 32], 500.0, true), (1, [2; 32], 3.0, false), (2, [4; 32], 10.0, true)],
        );
        let m = Metagraph::parse(text.as_bytes(), 72).unwrap();
        Chain {
            config: ChainConfig { admit, ..ChainConfig::default() },
            metagraph: Some(Arc::new(m)),
            absent_because: None,
        }
    }

    #[test]
    fn admission_by_rule_and_lists() {
        let rule = Rule { validator_permit: true, min_stake: 0.0 };
        let c = chain(Some(rule));
        let axon = AxonConfig::default();
        let (v, miner, stranger, small) =
            (ss58::encode(&[1; 32]), ss58::encode(&[2; 32]), ss58::encode(&[3; 32]), ss58::encode(&[4; 32]));
        assert_eq!(c.admit(&axon, &v), Ok(Admitted::Metagraph));
        assert_eq!(c.admit(&axon, &miner), Err(Denied::NoPermit(miner.clone())));
        assert_eq!(c.admit(&axon, &stranger), Err(Denied::NotRegistered(stranger.clone(), 72)));
        // a hotkey's own rule overrides the default
        let strict = AxonConfig { admit: Some(Rule { validator_permit: true, min_stake: 100.0 }), ..axon.clone() };
        assert_eq!(c.admit(&strict, &small), Err(Denied::LowStake(small.clone(), 10.0, 100.0)));
        // lists override; deny wins over allow
        let listed = AxonConfig { allow: vec![miner.clone(), v.clone()], deny: vec![v.clone()], ..axon.clone() };
        assert_eq!(c.admit(&listed, &miner), Ok(Admitted::Allowed));
        assert_eq!(c.admit(&listed, &v), Err(Denied::Listed(v.clone())));
        // no rule at all: only lists admit
        assert_eq!(chain(None).admit(&axon, &v), Err(Denied::NotAllowed(v.clone())));
        // a rule but no snapshot
        let bare = Chain {
            config: ChainConfig {
                admit: Some(Rule { validator_permit: true, min_stake: 0.0 }),
                ..ChainConfig::default()
            },
            metagraph: None,
            absent_because: None,
        };
        assert_eq!(bare.admit(&axon, &v), Err(Denied::NoSnapshot(v.clone())));
    }

    #[test]
    fn chain_file_is_checked() {
        assert_eq!(ChainConfig::parse("").unwrap(), ChainConfig::default());
        let c = ChainConfig::parse("netuid = 72\n[admit]\nmin_stake = 5.0\n").unwrap();
        assert_eq!(c.admit, Some(Rule { validator_permit: true, min_stake: 5.0 }));
        assert!(ChainConfig::parse("surprise = 1\n").unwrap_err().contains("surprise"));
        assert!(ChainConfig::parse("[admit]\nmin_stake = -1.0\n").unwrap_err().contains("admit.min_stake"));
        assert!(ChainConfig::parse("stale_after_s = 10.0\nrefuse_after_s = 5.0\n").is_err());
    }
}

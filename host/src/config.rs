//! Per-hotkey policy files (`policies/<hotkey>.toml`): which component serves each role, with
//! which parameters, the fallback answer, and limits. Files say what runs; flags say how.

use std::path::{Path, PathBuf};

use semver::VersionReq;
use serde::Deserialize;

/// The model registry's file name inside the policies folder.
pub const MODELS_FILE: &str = "models.toml";
/// The chain settings' file name inside the policies folder (`crate::chain`).
pub(crate) const CHAIN_FILE: &str = "chain.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotkeyFile {
    /// The name in `/v1/predict/{name}`: letters, digits, `-` and `_`.
    pub name: String,
    /// The miner's SS58 address, when this hotkey answers subnet requests.
    pub ss58: Option<String>,
    /// A fixed answer when the policy cannot produce one (trap, time-out, error). Not 0.5.
    /// Without it (the shipped default) a failed policy answers the best partial evidence a
    /// model already produced, else an error: a constant is a coin flip that stays in the
    /// validator's MCC window for 100 queries, an error is dropped from it.
    pub fallback: Option<f32>,
    /// Time budget of one request in milliseconds (validators wait 9 s).
    #[serde(default = "default_budget")]
    pub budget_ms: u64,
    pub router: RoleConfig,
    pub text_scorer: Option<RoleConfig>,
    pub fuser: Option<RoleConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The other arm of a rollout: the roles that differ from the stable ones.
    pub candidate: Option<CandidateConfig>,
    /// How traffic is shared between the stable arm and the candidate.
    pub rollout: Option<RolloutConfig>,
    /// Subnet requests (`/ImageSynapse`) for this hotkey's `ss58`.
    #[serde(default)]
    pub axon: AxonConfig,
    /// The prediction log: what this hotkey answered (`cascade log`, `cascade replay`).
    pub log: Option<LogConfig>,
    /// A calibration file (`cascade calibrate`, relative to this file): the fused score is
    /// mapped through it before it is answered (`crate::calibration`).
    pub calibration: Option<PathBuf>,
}

/// `[log]`: every answered request (HTTP and axon) appended to segments in `dir`, off the
/// request path.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The folder (relative to the hotkey file's); hotkeys may share one.
    pub dir: std::path::PathBuf,
    /// Which images are kept beside the records: `none`, `all`, `uncertain` (a prediction
    /// inside `uncertain`), or `every:N` (one request in N).
    #[serde(default = "default_images")]
    pub images: String,
    #[serde(default = "default_band")]
    pub uncertain: [f32; 2],
    /// Images larger than this are not kept (the record says so).
    #[serde(default = "default_image_kb")]
    pub max_image_kb: u64,
    /// A segment is closed at this size ...
    #[serde(default = "default_segment_mb")]
    pub segment_mb: u64,
    /// ... or this age, and a new one begun.
    #[serde(default = "default_segment_s")]
    pub segment_s: u64,
}

fn default_images() -> String {
    "uncertain".into()
}
fn default_band() -> [f32; 2] {
    [0.3, 0.7]
}
fn default_image_kb() -> u64 {
    1024
}
fn default_segment_mb() -> u64 {
    64
}
fn default_segment_s() -> u64 {
    3600
}

/// Which images the log keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ImageRule {
    None,
    All,
    Uncertain(f32, f32),
    Every(u64),
}

impl LogConfig {
    pub fn rule(&self) -> Result<ImageRule, String> {
        let [lo, hi] = self.uncertain;
        if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo >= hi {
            return Err(format!("log.uncertain [{lo}, {hi}]: two numbers in [0, 1], the first below the second"));
        }
        if self.segment_mb == 0 || self.segment_s == 0 {
            return Err("log.segment_mb and log.segment_s must be at least 1".into());
        }
        Ok(match self.images.as_str() {
            "none" => ImageRule::None,
            "all" => ImageRule::All,
            "uncertain" => ImageRule::Uncertain(lo, hi),
            other => match other.strip_prefix("every:").and_then(|n| n.parse::<u64>().ok()) {
                Some(n) if n >= 1 => ImageRule::Every(n),
                _ => return Err(format!("log.images {other:?}: none, all, uncertain or every:N")),
            },
        })
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AxonConfig {
    /// A listen address of this hotkey's own (operators open one port per miner); requests
    /// there are for this hotkey only.
    pub listen: Option<std::net::SocketAddr>,
    /// Validator hotkeys (SS58) allowed to call.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Validator hotkeys refused even when otherwise allowed.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Serve any caller with a valid signature (still subject to `deny`).
    #[serde(default)]
    pub allow_any_signed: bool,
    /// Admission by standing on the subnet (overrides `chain.toml`'s default rule).
    pub admit: Option<Rule>,
    /// What `scripts/chain/announce.py` publishes on chain for this hotkey.
    pub announce: Option<Announce>,
}

/// Who may call, by their standing on the subnet.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Require a validator permit (the reference miner's shipped setting).
    #[serde(default = "yes")]
    pub validator_permit: bool,
    /// Minimum stake (the metagraph's `S`), 0 for none.
    #[serde(default)]
    pub min_stake: f64,
}

fn yes() -> bool {
    true
}

impl Rule {
    pub fn check(&self) -> Result<(), String> {
        if !self.min_stake.is_finite() || self.min_stake < 0.0 {
            return Err(format!("min_stake {}: a stake, 0 or more", self.min_stake));
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        let mut s = String::from("registered");
        if self.validator_permit {
            s.push_str(" + validator permit");
        }
        if self.min_stake > 0.0 {
            s.push_str(&format!(" + stake >= {}", self.min_stake));
        }
        s
    }
}

/// The axon address validators are told (`serve_axon`), and the wallet that signs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announce {
    /// Wallet (coldkey) name under the wallets folder.
    pub wallet: String,
    /// Hotkey name inside that wallet.
    pub hotkey: String,
    /// The public address validators reach (an IP: the chain stores no host names).
    #[serde(deserialize_with = "ip_address")]
    pub ip: std::net::IpAddr,
    /// Default: the `listen` port.
    pub port: Option<u16>,
}

/// An IP address, with a message that says what to do with a host name.
fn ip_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::net::IpAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "axon.announce.ip {s:?} is not an IP address: the chain stores an IP for each axon, not a host name \
             (put the address the name resolves to, e.g. from `dig +short {s}`)"
        ))
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateConfig {
    pub router: Option<RoleConfig>,
    pub text_scorer: Option<RoleConfig>,
    pub fuser: Option<RoleConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Stable,
    Candidate,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RolloutConfig {
    /// A fixed percentage of requests (sticky by request key) goes to the candidate.
    Ab { share: f64 },
    /// The candidate answers a copy of the traffic; only the stable answer is returned.
    Shadow {
        #[serde(default = "default_inflight")]
        max_inflight: usize,
    },
    /// The candidate's share grows through `steps` (percent) while the rules hold; it is
    /// promoted after the last step, rolled back when a rule fails.
    Canary {
        steps: Vec<f64>,
        #[serde(default = "default_min_requests")]
        min_requests: u64,
        #[serde(default = "default_error_rate")]
        max_error_rate: f64,
        #[serde(default = "default_p99")]
        max_p99_ms: f64,
        #[serde(default)]
        min_agreement: f64,
        #[serde(default = "one_f")]
        max_escalation_rate: f64,
        #[serde(default = "default_inflight")]
        max_inflight: usize,
        /// A step also lasts at least this many seconds (time-based steps).
        #[serde(default)]
        min_step_s: u64,
        /// Promotion waits for labelled evidence: a `cascade replay --labels --json` report of
        /// the candidate over logged traffic.
        evidence: Option<EvidenceRule>,
    },
    /// All traffic on one side; promote and rollback switch instantly.
    BlueGreen { active: Side },
}

/// `evidence = { report = "...", min_mcc_gain = 0.0, min_labelled = 50 }`: after the last step
/// the canary holds until `report` (relative to the hotkey file) exists; it promotes when the
/// candidate's labelled MCC is at least the logged answers' plus `min_mcc_gain` over at least
/// `min_labelled` images, and rolls back otherwise.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRule {
    pub report: std::path::PathBuf,
    #[serde(default)]
    pub min_mcc_gain: f64,
    #[serde(default = "default_min_labelled")]
    pub min_labelled: u64,
}

fn default_min_labelled() -> u64 {
    50
}

fn default_inflight() -> usize {
    8
}
fn default_min_requests() -> u64 {
    100
}
fn default_error_rate() -> f64 {
    0.01
}
fn default_p99() -> f64 {
    2_000.0
}
fn one_f() -> f64 {
    1.0
}

fn default_budget() -> u64 {
    8_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// `name@requirement`, e.g. `cascade-router@^1`; a bare name takes any version.
    pub component: String,
    #[serde(default)]
    pub params: toml::Table,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Fuel for one component call (about one unit per Wasm instruction).
    pub fuel: u64,
    /// Wall-clock limit of one component call in milliseconds (also capped by the budget).
    pub call_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { fuel: 50_000_000, call_ms: 8_000 }
    }
}

/// `name@req` of a component reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentRef {
    pub name: String,
    pub req: VersionReq,
}

impl std::str::FromStr for ComponentRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, req) = match s.split_once('@') {
            Some((n, r)) => (n, VersionReq::parse(r).map_err(|e| format!("version requirement {r:?}: {e}"))?),
            None => (s, VersionReq::STAR),
        };
        if name.is_empty() {
            return Err(format!("{s:?} names no component"));
        }
        Ok(ComponentRef { name: name.to_string(), req })
    }
}

impl std::fmt::Display for ComponentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.req)
    }
}

impl AxonConfig {
    /// Keys on both `allow` and `deny` (deny wins).
    pub(crate) fn contradictions(&self) -> Vec<&str> {
        self.allow.iter().filter(|a| self.deny.contains(a)).map(String::as_str).collect()
    }
}

impl HotkeyFile {
    pub fn load(file: &Path) -> Result<HotkeyFile, String> {
        let bytes = crate::files::read_regular(file, crate::files::MAX_CONFIG_BYTES).map_err(|e| e.to_string())?;
        let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
        HotkeyFile::parse(&text)
    }

    /// Parses and checks a hotkey file's text.
    pub fn parse(text: &str) -> Result<HotkeyFile, String> {
        let h: HotkeyFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        h.check()?;
        Ok(h)
    }

    fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("name {:?}: use letters, digits, '-' and '_'", self.name));
        }
        if let Some(f) = self.fallback.filter(|f| !(0.0..=1.0).contains(f) || *f == 0.5) {
            return Err(format!("fallback {f}: must be in [0, 1] and not 0.5 (validators read 0.5 as \"no\")"));
        }
        if let Some(r) = &self.axon.admit {
            r.check().map_err(|e| format!("axon.admit.{e}"))?;
        }
        if let Some(a) = &self.axon.announce {
            if a.port == Some(0) || (a.port.is_none() && self.axon.listen.is_none()) {
                return Err("axon.announce.port: a port 1-65535 (or an axon.listen to take it from)".into());
            }
            if self.ss58.is_none() {
                return Err("axon.announce: needs the hotkey's ss58".into());
            }
        }
        if self.budget_ms == 0 || self.budget_ms > 60_000 {
            return Err(format!("budget_ms {}: must be between 1 and 60000", self.budget_ms));
        }
        if let Some(l) = &self.log {
            l.rule()?;
        }
        if self.limits.fuel == 0 || self.limits.call_ms == 0 {
            return Err("limits: fuel and call_ms must be positive".into());
        }
        for (what, addr) in self
            .ss58
            .iter()
            .map(|a| ("ss58", a))
            .chain(self.axon.allow.iter().map(|a| ("axon.allow", a)))
            .chain(self.axon.deny.iter().map(|a| ("axon.deny", a)))
        {
            crate::ss58::decode(addr).map_err(|e| format!("{what}: {addr:?} is not an SS58 address: {e}"))?;
        }
        if self.axon.listen.is_some() && self.ss58.is_none() {
            return Err("axon.listen: needs the hotkey's ss58".into());
        }
        match (&self.candidate, &self.rollout) {
            (Some(_), None) => return Err("candidate: needs a [rollout] saying how it gets traffic".into()),
            (None, Some(_)) => return Err("rollout: needs a [candidate]".into()),
            _ => {}
        }
        match &self.rollout {
            Some(RolloutConfig::Ab { share }) if !(0.0..=100.0).contains(share) => {
                return Err(format!("rollout.share {share}: a percentage in [0, 100]"));
            }
            Some(RolloutConfig::Canary { steps, .. })
                if steps.is_empty() || steps.iter().any(|s| !(0.0..=100.0).contains(s)) =>
            {
                return Err("rollout.steps: one or more percentages in [0, 100]".into());
            }
            _ => {}
        }
        Ok(())
    }
}

/// The hotkey files of a policies folder: every `*.toml` but the model registry and the chain
/// settings, sorted.
pub fn hotkey_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && p.file_name().is_some_and(|n| n != MODELS_FILE && n != CHAIN_FILE)
        })
        .collect();
    files.sort();
    Ok(files)
}

/// TOML parameters as the JSON the component and its schema see.
pub(crate) fn params_json(t: &toml::Table) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_refs() {
        let r: ComponentRef = "cascade-router@^1".parse().unwrap();
        assert_eq!(r.name, "cascade-router");
        assert!(r.req.matches(&semver::Version::new(1, 4, 0)));
        assert!(!r.req.matches(&semver::Version::new(2, 0, 0)));
        assert!("x@nope".parse::<ComponentRef>().is_err());
    }

    #[test]
    fn refuses_half_fallback_and_unknown_keys() {
        let base = "name = \"a\"\nfallback = 0.5\n[router]\ncomponent = \"r\"\n";
        let h: HotkeyFile = toml::from_str(base).unwrap();
        assert!(h.check().unwrap_err().contains("not 0.5"));
        let e = toml::from_str::<HotkeyFile>(&format!("{base}bogus = 1\n")).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn an_announced_host_name_is_refused_with_what_to_do() {
        let file = |ip: &str| {
            format!(
                "name = \"a\"\nss58 = \"5FyFVRsgwBT89gGsyif1ZayCDAthzrZxS7fzxCafhwwzkft7\"\n[router]\ncomponent = \"r\"\n[axon]\nlisten = \"0.0.0.0:8091\"\n[axon.announce]\nwallet = \"w\"\nhotkey = \"h\"\nip = \"{ip}\"\n"
            )
        };
        let e = HotkeyFile::parse(&file("miner.example.com")).unwrap_err();
        assert!(
            e.contains("\"miner.example.com\" is not an IP address") && e.contains("dig +short miner.example.com"),
            "{e}"
        );
        assert!(e.contains("axon.announce"), "the key is named: {e}");
        assert_eq!(
            HotkeyFile::parse(&file("203.0.113.7")).unwrap().axon.announce.unwrap().ip.to_string(),
            "203.0.113.7"
        );
    }
}

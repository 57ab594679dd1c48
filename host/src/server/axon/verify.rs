//! The dendrite's signature and nonce, checked as the Python axon does — but a signature is
//! always required (the SDK skips verification when it is empty).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use schnorrkel::{PublicKey, Signature};

use crate::ss58;

/// What the signature covers and who claims to send it.
#[derive(Debug, Clone)]
pub struct Signed<'a> {
    pub nonce: u64,
    pub dendrite_hotkey: &'a str,
    pub axon_hotkey: &'a str,
    pub uuid: &'a str,
    pub body_hash: &'a str,
    /// `0x`-hex sr25519 signature.
    pub signature: &'a str,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing signature")]
    MissingSignature,
    #[error("signature is not 64 hex-encoded bytes")]
    BadSignatureEncoding,
    #[error("dendrite hotkey {0}: {1}")]
    BadHotkey(String, ss58::Ss58Error),
    #[error("signature mismatch with {0}")]
    Mismatch(String),
    #[error("nonce is too old, a newer one was last processed")]
    StaleNonce,
    #[error("nonce is too far in the future")]
    FutureNonce,
    #[error("too many requests in the nonce window")]
    Full,
}

impl Signed<'_> {
    pub fn message(&self) -> String {
        format!("{}.{}.{}.{}.{}", self.nonce, self.dendrite_hotkey, self.axon_hotkey, self.uuid, self.body_hash)
    }

    /// sr25519 (signing context "substrate") over the message, or over `<Bytes>message</Bytes>`
    /// as the SDK also accepts.
    pub(crate) fn verify_signature(&self) -> Result<(), VerifyError> {
        let sig = self.signature.trim();
        if sig.is_empty() {
            return Err(VerifyError::MissingSignature);
        }
        let bytes =
            hex::decode(sig.strip_prefix("0x").unwrap_or(sig)).map_err(|_| VerifyError::BadSignatureEncoding)?;
        let sig = Signature::from_bytes(&bytes).map_err(|_| VerifyError::BadSignatureEncoding)?;
        let key =
            ss58::decode(self.dendrite_hotkey).map_err(|e| VerifyError::BadHotkey(self.dendrite_hotkey.into(), e))?;
        let key = PublicKey::from_bytes(&key)
            .map_err(|_| VerifyError::BadHotkey(self.dendrite_hotkey.into(), ss58::Ss58Error::Checksum))?;
        let msg = self.message();
        let ok = key.verify_simple(b"substrate", msg.as_bytes(), &sig).is_ok()
            || key.verify_simple(b"substrate", format!("<Bytes>{msg}</Bytes>").as_bytes(), &sig).is_ok();
        if ok {
            Ok(())
        } else {
            Err(VerifyError::Mismatch(msg))
        }
    }
}

/// Nonces per (miner hotkey, dendrite hotkey, uuid), as the Python SDK keeps one table per
/// axon: the first nonce must be newer than now − 4 s − timeout, each later one strictly
/// greater, none more than `MAX_FUTURE_NS` ahead. Only admitted callers reach the table (the
/// axon checks admission and the signature first). Memory is bounded twice: each caller holds
/// at most `per_caller` entries, and the table `cap`; entries that fell out of the window are
/// dropped when either is reached (a replay of their nonce fails the window check anyway), so
/// one caller can only ever exhaust its own quota, never another's.
pub struct Nonces {
    table: Mutex<Table>,
    cap: usize,
    per_caller: usize,
}

#[derive(Default)]
struct Table {
    last: HashMap<(String, String, String), u64>,
    entries_of: HashMap<String, usize>,
}

pub const ALLOWED_DELTA_NS: u64 = 4_000_000_000;
/// How far ahead of this host's clock a nonce may be (clock skew between validator and miner).
pub(crate) const MAX_FUTURE_NS: u64 = 3_600_000_000_000;
/// The longest timeout a caller may claim when the window is computed (validators send 9–12 s).
pub(crate) const MAX_TIMEOUT_S: f64 = 60.0;

pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The oldest first nonce accepted now for a request with this timeout.
fn window(now: u64, timeout_s: f64) -> u64 {
    let t = if timeout_s.is_finite() { timeout_s.clamp(0.0, MAX_TIMEOUT_S) } else { MAX_TIMEOUT_S };
    now.saturating_sub(ALLOWED_DELTA_NS + (t * 1e9) as u64)
}

impl Nonces {
    pub fn new(cap: usize, per_caller: usize) -> Nonces {
        Nonces { table: Mutex::new(Table::default()), cap, per_caller }
    }

    /// Checks the nonce of a verified request and records it, in one step.
    pub fn accept(
        &self,
        axon: &str,
        dendrite: &str,
        uuid: &str,
        nonce: u64,
        timeout_s: f64,
        now: u64,
    ) -> Result<(), VerifyError> {
        if nonce > now.saturating_add(MAX_FUTURE_NS) {
            return Err(VerifyError::FutureNonce);
        }
        let window = window(now, timeout_s);
        let mut t = self.table.lock();
        let key = (axon.to_string(), dendrite.to_string(), uuid.to_string());
        match t.last.get(&key) {
            Some(prev) if nonce <= *prev => return Err(VerifyError::StaleNonce),
            None if nonce <= window => return Err(VerifyError::StaleNonce),
            Some(_) => {
                t.last.insert(key, nonce);
                return Ok(());
            }
            None => {}
        }
        if t.entries_of.get(dendrite).copied().unwrap_or(0) >= self.per_caller {
            t.purge(window, Some(dendrite));
            if t.entries_of.get(dendrite).copied().unwrap_or(0) >= self.per_caller {
                return Err(VerifyError::Full);
            }
        }
        if t.last.len() >= self.cap {
            t.purge(window, None);
            if t.last.len() >= self.cap {
                return Err(VerifyError::Full);
            }
        }
        t.last.insert(key, nonce);
        *t.entries_of.entry(dendrite.to_string()).or_default() += 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.table.lock().last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    /// Drops entries whose last nonce fell out of the window (of one caller, or of all).
    fn purge(&mut self, window: u64, of: Option<&str>) {
        let entries_of = &mut self.entries_of;
        self.last.retain(|(_, d, _), n| {
            let keep = *n > window || of.is_some_and(|o| o != d);
            if !keep {
                if let Some(c) = entries_of.get_mut(d) {
                    *c -= 1;
                }
            }
            keep
        });
        entries_of.retain(|_, c| *c > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request captured from the real Python dendrite (`../shared/protocol`).
    fn golden() -> serde_json::Value {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/protocol/golden_request.json");
        serde_json::from_slice(&std::fs::read(p).expect("golden_request.json beside the repository")).expect("json")
    }

    #[test]
    fn golden_request_verifies() {
        let g = golden();
        let h = &g["headers"];
        let s = |k: &str| h[k].as_str().unwrap().to_string();
        let (nonce, d, a, u, b, sig) = (
            s("bt_header_dendrite_nonce"),
            s("bt_header_dendrite_hotkey"),
            s("bt_header_axon_hotkey"),
            s("bt_header_dendrite_uuid"),
            s("computed_body_hash"),
            s("bt_header_dendrite_signature"),
        );
        let signed = Signed {
            nonce: nonce.parse().unwrap(),
            dendrite_hotkey: &d,
            axon_hotkey: &a,
            uuid: &u,
            body_hash: &b,
            signature: &sig,
        };
        assert_eq!(signed.message(), g["signed_message"].as_str().unwrap());
        signed.verify_signature().unwrap();
        // the same signature does not cover another axon hotkey, nonce or body hash
        let other = ss58::encode(&[7u8; 32]);
        assert!(matches!(
            Signed { axon_hotkey: &other, ..signed.clone() }.verify_signature(),
            Err(VerifyError::Mismatch(_))
        ));
        assert!(Signed { nonce: signed.nonce + 1, ..signed.clone() }.verify_signature().is_err());
        assert_eq!(Signed { signature: "", ..signed.clone() }.verify_signature(), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn nonce_window_and_monotonicity() {
        let n = Nonces::new(3, 2);
        let now = 100_000_000_000_000u64;
        assert_eq!(n.accept("a", "d", "u", now - 20_000_000_000, 9.0, now), Err(VerifyError::StaleNonce));
        n.accept("a", "d", "u", now, 9.0, now).unwrap();
        assert_eq!(n.accept("a", "d", "u", now, 9.0, now), Err(VerifyError::StaleNonce));
        n.accept("a", "d", "u", now + 1, 9.0, now).unwrap();
        assert_eq!(n.accept("a", "d", "u", now + MAX_FUTURE_NS + 1, 9.0, now), Err(VerifyError::FutureNonce));
        // an infinite timeout is bounded, not an overflow
        assert_eq!(n.accept("a", "d", "v", now - 120_000_000_000, f64::INFINITY, now), Err(VerifyError::StaleNonce));
    }

    #[test]
    fn nonces_are_per_miner_hotkey() {
        // one validator signs for two miners of this process with increasing nonces; the later
        // one arrives first: both are accepted (the SDK keeps one table per axon)
        let n = Nonces::new(100, 100);
        let now = 100_000_000_000_000u64;
        n.accept("miner-b", "v", "u", now + 2, 9.0, now).unwrap();
        n.accept("miner-a", "v", "u", now + 1, 9.0, now).unwrap();
        assert_eq!(n.accept("miner-a", "v", "u", now + 1, 9.0, now), Err(VerifyError::StaleNonce));
    }

    #[test]
    fn one_caller_cannot_exhaust_another() {
        let n = Nonces::new(3, 2);
        let now = 100_000_000_000_000u64;
        n.accept("a", "greedy", "u1", now, 9.0, now).unwrap();
        n.accept("a", "greedy", "u2", now, 9.0, now).unwrap();
        // its quota is full of fresh entries: only it is refused
        assert_eq!(n.accept("a", "greedy", "u3", now, 9.0, now), Err(VerifyError::Full));
        n.accept("a", "validator", "u", now, 9.0, now).unwrap();
        // later its old entries leave the window and make room again
        let later = now + 60_000_000_000;
        n.accept("a", "greedy", "u3", later, 9.0, later).unwrap();
        assert_eq!(n.len(), 2);
    }
}

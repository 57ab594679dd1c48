//! The dendrite's signature and nonce, checked as the Python axon does — but a signature is
//! always required (the SDK skips verification when it is empty).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use schnorrkel::{PublicKey, Signature};

use super::ss58;

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
    #[error("too many callers in the nonce window")]
    Full,
}

impl Signed<'_> {
    pub fn message(&self) -> String {
        format!("{}.{}.{}.{}.{}", self.nonce, self.dendrite_hotkey, self.axon_hotkey, self.uuid, self.body_hash)
    }

    /// sr25519 (signing context "substrate") over the message, or over `<Bytes>message</Bytes>`
    /// as the SDK also accepts.
    pub fn verify_signature(&self) -> Result<(), VerifyError> {
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

/// Nonces per (dendrite hotkey, uuid): the first must be newer than now − 4 s − timeout, each
/// later one strictly greater. Memory is bounded: entries that fell out of the window are
/// dropped when the table is full (a replay of their nonce fails the window check anyway).
pub struct Nonces {
    last: Mutex<HashMap<(String, String), u64>>,
    cap: usize,
}

pub const ALLOWED_DELTA_NS: u64 = 4_000_000_000;

pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl Nonces {
    pub fn new(cap: usize) -> Nonces {
        Nonces { last: Mutex::new(HashMap::new()), cap }
    }

    /// Checks the nonce; call `commit` once the signature verified.
    pub fn check(&self, dendrite: &str, uuid: &str, nonce: u64, timeout_s: f64, now: u64) -> Result<(), VerifyError> {
        let window = now.saturating_sub(ALLOWED_DELTA_NS + (timeout_s.max(0.0) * 1e9) as u64);
        let last = self.last.lock();
        match last.get(&(dendrite.to_string(), uuid.to_string())) {
            None if nonce <= window => Err(VerifyError::StaleNonce),
            Some(prev) if nonce <= *prev => Err(VerifyError::StaleNonce),
            _ => Ok(()),
        }
    }

    pub fn commit(&self, dendrite: &str, uuid: &str, nonce: u64, timeout_s: f64, now: u64) -> Result<(), VerifyError> {
        let mut last = self.last.lock();
        let key = (dendrite.to_string(), uuid.to_string());
        if let Some(prev) = last.get(&key) {
            // two requests with the same nonce raced past `check`: only one may pass
            if nonce <= *prev {
                return Err(VerifyError::StaleNonce);
            }
        } else if last.len() >= self.cap {
            let window = now.saturating_sub(ALLOWED_DELTA_NS + (timeout_s.max(0.0) * 1e9) as u64);
            last.retain(|_, n| *n > window);
            if last.len() >= self.cap {
                return Err(VerifyError::Full);
            }
        }
        last.insert(key, nonce);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.last.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let n = Nonces::new(2);
        let now = 100_000_000_000_000u64;
        assert_eq!(n.check("d", "u", now - 20_000_000_000, 9.0, now), Err(VerifyError::StaleNonce));
        n.check("d", "u", now, 9.0, now).unwrap();
        n.commit("d", "u", now, 9.0, now).unwrap();
        assert_eq!(n.check("d", "u", now, 9.0, now), Err(VerifyError::StaleNonce));
        n.check("d", "u", now + 1, 9.0, now).unwrap();
        n.commit("d", "u2", now, 9.0, now).unwrap();
        // full: stale entries go first; fresh ones are kept and the newcomer is refused
        assert_eq!(n.commit("d", "u3", now, 9.0, now), Err(VerifyError::Full));
        let later = now + 60_000_000_000;
        n.commit("d", "u4", later, 9.0, later).unwrap();
        assert_eq!(n.len(), 1);
    }
}

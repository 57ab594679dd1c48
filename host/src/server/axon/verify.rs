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
    #[error("this caller holds {0} nonces for this hotkey (its quota; distinct dendrite uuids within the nonce window): retry once older ones leave the window")]
    Full(usize),
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
/// greater, none further ahead than the hotkey allows (an hour of clock skew for hotkeys that
/// admit by list or metagraph; [`OPEN_MAX_FUTURE_NS`] for those that admit any signature,
/// whose callers' keys cost nothing).
///
/// The axon checks a nonce before reading the body ([`Nonces::check`]) and records it only
/// once the synapse is accepted ([`Nonces::accept`], which checks again: two copies in flight
/// cannot both pass). Memory is bounded twice: a caller holds at most `per_caller` entries at
/// one miner hotkey (refused beyond, and only it), and the whole table `cap`. When the table is
/// full of fresh entries, the caller holding the most loses its most-future entries, so a
/// stranger filling one hotkey's table cannot refuse a validator at another (or at the same).
pub struct Nonces {
    table: Mutex<Table>,
    cap: usize,
    per_caller: usize,
}

/// (miner hotkey, dendrite hotkey): whose entries are counted together.
type Holder = (String, String);

#[derive(Default)]
struct Table {
    last: HashMap<(Holder, String), u64>,
    entries_of: HashMap<Holder, usize>,
}

pub const ALLOWED_DELTA_NS: u64 = 4_000_000_000;
/// How far ahead of this host's clock a nonce may be (clock skew between validator and miner).
pub(crate) const MAX_FUTURE_NS: u64 = 3_600_000_000_000;
/// The same for hotkeys that admit any signed caller: two minutes.
pub(crate) const OPEN_MAX_FUTURE_NS: u64 = 120_000_000_000;
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

/// One request's nonce and what it is checked against.
#[derive(Debug, Clone, Copy)]
pub struct NonceCheck<'a> {
    pub axon: &'a str,
    pub dendrite: &'a str,
    pub uuid: &'a str,
    pub nonce: u64,
    pub timeout_s: f64,
    pub now: u64,
    /// How far ahead of `now` the nonce may be.
    pub max_future_ns: u64,
}

impl NonceCheck<'_> {
    fn key(&self) -> (Holder, String) {
        ((self.axon.to_string(), self.dendrite.to_string()), self.uuid.to_string())
    }
}

impl Nonces {
    pub fn new(cap: usize, per_caller: usize) -> Nonces {
        Nonces { table: Mutex::new(Table::default()), cap: cap.max(1), per_caller: per_caller.max(1) }
    }

    /// Whether the nonce would be accepted now; records nothing.
    pub fn check(&self, c: &NonceCheck) -> Result<(), VerifyError> {
        if c.nonce > c.now.saturating_add(c.max_future_ns) {
            return Err(VerifyError::FutureNonce);
        }
        let t = self.table.lock();
        match t.last.get(&c.key()) {
            Some(prev) if c.nonce <= *prev => Err(VerifyError::StaleNonce),
            None if c.nonce <= window(c.now, c.timeout_s) => Err(VerifyError::StaleNonce),
            _ => Ok(()),
        }
    }

    /// Checks the nonce of an accepted request and records it, in one step.
    pub fn accept(&self, c: &NonceCheck) -> Result<(), VerifyError> {
        self.check(c)?;
        let window = window(c.now, c.timeout_s);
        let mut t = self.table.lock();
        let key = c.key();
        match t.last.get(&key) {
            // checked again under the lock: another copy may have been recorded meanwhile
            Some(prev) if c.nonce <= *prev => return Err(VerifyError::StaleNonce),
            None if c.nonce <= window => return Err(VerifyError::StaleNonce),
            Some(_) => {
                t.last.insert(key, c.nonce);
                return Ok(());
            }
            None => {}
        }
        let holder = key.0.clone();
        if t.entries_of.get(&holder).copied().unwrap_or(0) >= self.per_caller {
            t.purge(window, Some(&holder));
            if t.entries_of.get(&holder).copied().unwrap_or(0) >= self.per_caller {
                return Err(VerifyError::Full(self.per_caller));
            }
        }
        if t.last.len() >= self.cap {
            t.purge(window, None);
        }
        if t.last.len() >= self.cap && !t.evict_heaviest(&holder, self.cap) {
            return Err(VerifyError::Full(self.per_caller));
        }
        t.last.insert(key, c.nonce);
        *t.entries_of.entry(holder).or_default() += 1;
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
    /// Drops entries whose last nonce fell out of the window (of one holder, or of all).
    fn purge(&mut self, window: u64, of: Option<&Holder>) {
        let entries_of = &mut self.entries_of;
        self.last.retain(|(h, _), n| {
            let keep = *n > window || of.is_some_and(|o| o != h);
            if !keep {
                if let Some(c) = entries_of.get_mut(h) {
                    *c -= 1;
                }
            }
            keep
        });
        entries_of.retain(|_, c| *c > 0);
    }

    /// Makes room below `cap` by dropping the most-future entries of the holder with the most
    /// (a sixteenth of them at a time); `false` when that holder is `asking` itself.
    fn evict_heaviest(&mut self, asking: &Holder, cap: usize) -> bool {
        while self.last.len() >= cap {
            let Some((heaviest, count)) = self.entries_of.iter().max_by_key(|(_, c)| **c).map(|(h, c)| (h.clone(), *c))
            else {
                return false;
            };
            if &heaviest == asking {
                return false;
            }
            let mut theirs: Vec<(u64, String)> =
                self.last.iter().filter(|((h, _), _)| *h == heaviest).map(|((_, u), n)| (*n, u.clone())).collect();
            theirs.sort_unstable_by_key(|t| std::cmp::Reverse(t.0));
            let drop = (count / 16).max(1).max(self.last.len() + 1 - cap).min(theirs.len());
            for (_, uuid) in theirs.into_iter().take(drop) {
                self.last.remove(&(heaviest.clone(), uuid));
            }
            let left = count - drop;
            if left == 0 {
                self.entries_of.remove(&heaviest);
            } else {
                self.entries_of.insert(heaviest.clone(), left);
            }
            tracing::warn!(
                miner = %heaviest.0,
                caller = %heaviest.1,
                dropped = drop,
                "the nonce table is full: dropped the most-future nonces of the caller holding the most"
            );
        }
        true
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

    fn at<'a>(axon: &'a str, dendrite: &'a str, uuid: &'a str, nonce: u64, now: u64) -> NonceCheck<'a> {
        NonceCheck { axon, dendrite, uuid, nonce, timeout_s: 9.0, now, max_future_ns: MAX_FUTURE_NS }
    }

    #[test]
    fn nonce_window_and_monotonicity() {
        let n = Nonces::new(3, 2);
        let now = 100_000_000_000_000u64;
        assert_eq!(n.accept(&at("a", "d", "u", now - 20_000_000_000, now)), Err(VerifyError::StaleNonce));
        n.accept(&at("a", "d", "u", now, now)).unwrap();
        assert_eq!(n.accept(&at("a", "d", "u", now, now)), Err(VerifyError::StaleNonce));
        n.accept(&at("a", "d", "u", now + 1, now)).unwrap();
        assert_eq!(n.accept(&at("a", "d", "u", now + MAX_FUTURE_NS + 1, now)), Err(VerifyError::FutureNonce));
        // an infinite timeout is bounded, not an overflow
        let inf = NonceCheck { timeout_s: f64::INFINITY, ..at("a", "d", "v", now - 120_000_000_000, now) };
        assert_eq!(n.accept(&inf), Err(VerifyError::StaleNonce));
        // a hotkey that admits any signature allows two minutes ahead, not an hour
        let open = |nonce| NonceCheck { max_future_ns: OPEN_MAX_FUTURE_NS, ..at("open", "d", "w", nonce, now) };
        assert_eq!(n.accept(&open(now + 58 * 60_000_000_000)), Err(VerifyError::FutureNonce));
        n.accept(&open(now + 60_000_000_000)).unwrap();
    }

    #[test]
    fn a_checked_nonce_is_not_recorded_until_accepted() {
        let n = Nonces::new(10, 10);
        let now = 100_000_000_000_000u64;
        // checked, then the body is refused: the same nonce with a good body still passes
        n.check(&at("a", "d", "u", now, now)).unwrap();
        assert!(n.is_empty());
        n.accept(&at("a", "d", "u", now, now)).unwrap();
        assert_eq!(n.check(&at("a", "d", "u", now, now)), Err(VerifyError::StaleNonce));
    }

    #[test]
    fn nonces_are_per_miner_hotkey() {
        // one validator signs for two miners of this process with increasing nonces; the later
        // one arrives first: both are accepted (the SDK keeps one table per axon)
        let n = Nonces::new(100, 100);
        let now = 100_000_000_000_000u64;
        n.accept(&at("miner-b", "v", "u", now + 2, now)).unwrap();
        n.accept(&at("miner-a", "v", "u", now + 1, now)).unwrap();
        assert_eq!(n.accept(&at("miner-a", "v", "u", now + 1, now)), Err(VerifyError::StaleNonce));
    }

    #[test]
    fn one_caller_cannot_exhaust_another() {
        let n = Nonces::new(3, 2);
        let now = 100_000_000_000_000u64;
        n.accept(&at("a", "greedy", "u1", now, now)).unwrap();
        n.accept(&at("a", "greedy", "u2", now, now)).unwrap();
        // its quota is full of fresh entries: only it is refused, and told why
        let e = n.accept(&at("a", "greedy", "u3", now, now)).unwrap_err();
        assert_eq!(e, VerifyError::Full(2));
        assert!(e.to_string().contains("this caller holds 2 nonces for this hotkey"), "{e}");
        n.accept(&at("a", "validator", "u", now, now)).unwrap();
        // later its old entries leave the window and make room again
        let later = now + 60_000_000_000;
        n.accept(&at("a", "greedy", "u3", later, later)).unwrap();
        assert_eq!(n.len(), 2);
    }

    /// The attack of the outside suite, at its scale: 25 throw-away keys × 4,096 nonces dated
    /// 58 minutes ahead through a hotkey that admits any signature filled the shared table of
    /// 100,000 and refused an admitted validator at another hotkey with 503 for an hour.
    #[test]
    fn strangers_filling_one_hotkey_cannot_refuse_a_validator_at_another() {
        let n = Nonces::new(100_000, 4096);
        let now = 100_000_000_000_000u64;
        let ahead = now + 58 * 60_000_000_000;
        let mut stored = 0;
        for k in 0..25 {
            let key = format!("stranger-{k}");
            for i in 0..4096 {
                let uuid = format!("{i}");
                // as a hotkey that admits any signature sees them: an hour ahead is refused ...
                let c = NonceCheck { max_future_ns: OPEN_MAX_FUTURE_NS, ..at("open", &key, &uuid, ahead, now) };
                assert_eq!(n.accept(&c), Err(VerifyError::FutureNonce));
                // ... and within two minutes they still cannot crowd out anyone else
                let c = NonceCheck {
                    max_future_ns: OPEN_MAX_FUTURE_NS,
                    ..at("open", &key, &uuid, now + 100_000_000_000, now)
                };
                stored += usize::from(n.accept(&c).is_ok());
            }
        }
        assert_eq!(stored, 25 * 4096, "each stranger within its own quota");
        assert!(n.len() <= 100_000);
        for v in 0..50 {
            let key = format!("validator-{v}");
            n.accept(&at("miner", &key, "u", now, now)).unwrap();
            n.accept(&at("open", &key, "u", now, now)).unwrap();
        }
    }

    #[test]
    fn a_full_table_sheds_the_heaviest_holders_most_future_nonces() {
        let n = Nonces::new(10, 8);
        let now = 100_000_000_000_000u64;
        for i in 0..8 {
            n.accept(&at("open", "flood", &format!("{i}"), now + i, now)).unwrap();
        }
        n.accept(&at("miner", "v1", "u", now, now)).unwrap();
        n.accept(&at("miner", "v2", "u", now, now)).unwrap();
        // full: the next validator's nonce pushes out the flood's most-future entry
        n.accept(&at("miner", "v3", "u", now, now)).unwrap();
        assert_eq!(n.len(), 10);
        assert_eq!(n.check(&at("open", "flood", "7", now + 7, now)), Ok(()), "its last entry was dropped");
        assert_eq!(n.check(&at("open", "flood", "0", now, now)), Err(VerifyError::StaleNonce), "its oldest kept");
        // the heaviest holder asking for more is refused rather than evicting others
        assert_eq!(n.accept(&at("open", "flood", "x", now, now)), Err(VerifyError::Full(8)));
    }
}

//! SS58 addresses (substrate): base58 of prefix ‖ public key ‖ checksum, where the checksum is
//! the first two bytes of blake2b-512("SS58PRE" ‖ prefix ‖ key).

use blake2::{Blake2b512, Digest};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ss58Error {
    #[error("not base58")]
    Base58,
    #[error("{0} bytes; an SS58 account address has 35")]
    Length(usize),
    #[error("checksum mismatch")]
    Checksum,
}

/// The 32-byte public key of a one-byte-prefix SS58 address.
pub fn decode(address: &str) -> Result<[u8; 32], Ss58Error> {
    let raw = bs58::decode(address).into_vec().map_err(|_| Ss58Error::Base58)?;
    if raw.len() != 35 || raw[0] >= 64 {
        return Err(Ss58Error::Length(raw.len()));
    }
    let mut h = Blake2b512::new();
    h.update(b"SS58PRE");
    h.update(&raw[..33]);
    let sum = h.finalize();
    if sum[..2] != raw[33..] {
        return Err(Ss58Error::Checksum);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&raw[1..33]);
    Ok(key)
}

/// The address of a key with prefix 42 (generic substrate), as the SDK writes it.
pub fn encode(key: &[u8; 32]) -> String {
    let mut raw = vec![42u8];
    raw.extend_from_slice(key);
    let mut h = Blake2b512::new();
    h.update(b"SS58PRE");
    h.update(&raw);
    let sum = h.finalize();
    raw.extend_from_slice(&sum[..2]);
    bs58::encode(raw).into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checksum() {
        let addr = "5F9eGm23xBAjdFzTbxCyCJpGt6PuEXkrHACtAJY9L8ZGpFsx";
        let key = decode(addr).unwrap();
        assert_eq!(encode(&key), addr);
        let mut bad = addr.to_string();
        bad.replace_range(10..11, if &addr[10..11] == "A" { "B" } else { "A" });
        assert!(decode(&bad).is_err());
        assert_eq!(decode("0OIl"), Err(Ss58Error::Base58));
    }
}

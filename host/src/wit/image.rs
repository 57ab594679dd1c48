//! The host side of an image a component holds (`cascade:policy/types.image`): its pixels and
//! its content key, the stage cache's key across requests and hotkeys. Knows nothing of the
//! contract's other types, so that the one `bindgen!` can map the resource onto it.

use std::sync::Arc;

use cascade_engines::Image;

/// A 128-bit content key: sha-256 of a domain and parts, truncated (collisions cannot be
/// crafted, so one client's image can never be answered with another's cached result).
pub(crate) fn key_of(domain: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(domain);
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// The content key of a request's encoded image (what shares its decode and its models' results
/// across requests, and what the prediction log records as `key`): BLAKE3 of the bytes in its
/// key-derivation mode (no other key here can equal one), cut to 16 bytes. Not `key_of`'s
/// SHA-256: every request pays this one, 2.3 µs for a validator's 9 KB JPEG against 5.1 µs.
pub(crate) fn bytes_key(bytes: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new_derive_key("cascade 2026-12 request image bytes");
    h.update(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// The host side of an `image` resource handle. A clone (a model call holds one while it
/// waits) shares the pixels and the hash.
#[derive(Clone)]
pub struct ImageRef {
    /// Unique within the request: the memo key for "this image".
    pub id: u32,
    pub pixels: Image,
    /// The pixels' hash (the stage cache's key across requests), computed on first use.
    hash: Arc<std::sync::OnceLock<[u8; 16]>>,
}

impl ImageRef {
    pub fn new(id: u32, pixels: Image) -> ImageRef {
        ImageRef { id, pixels, hash: Arc::new(std::sync::OnceLock::new()) }
    }

    /// An image whose content key is already known (the request's bytes, or a derivation).
    pub(crate) fn with_key(id: u32, pixels: Image, key: [u8; 16]) -> ImageRef {
        ImageRef { id, pixels, hash: Arc::new(std::sync::OnceLock::from(key)) }
    }

    /// The key of an image derived from this one by `op` (a crop's box, a flip): the same
    /// parent and operation give the same pixels, so no pixel needs hashing.
    pub(crate) fn derived_key(&self, op: &[u8]) -> [u8; 16] {
        key_of(b"derived", &[&self.content_hash(), op])
    }

    /// The content key: preset from the request's encoded bytes (hashing ~15 KB of JPEG
    /// instead of ~150 KB of pixels), else sha-256 of the dimensions and pixels.
    pub(crate) fn content_hash(&self) -> [u8; 16] {
        *self.hash.get_or_init(|| {
            let (w, h) = (self.pixels.width().to_le_bytes(), self.pixels.height().to_le_bytes());
            key_of(b"pixels", &[&w, &h, self.pixels.as_raw()])
        })
    }
}

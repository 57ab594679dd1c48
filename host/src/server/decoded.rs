//! Decoded request images shared across requests. A validator sends one challenge to several
//! miners at once, and an operator's hotkeys in one process are often among them: the same
//! bytes (by their content key, sha-256 of the bytes) decode once. A request that arrives while
//! those bytes are being decoded waits for that decode instead of starting another
//! (single-flight). Only successful decodes are kept: a refusal is worked out again by each
//! request, and a kept image is still checked against the asking request's limits (the axon's
//! are tighter than the HTTP API's). Bounded by memory, oldest out first, and by age.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cascade_engines::Image;
use parking_lot::Mutex;

use cascade_common::image::{decode_for_within, planned_scale, within, DecodeError, Header, IngressLimits};

/// Memory for decoded images and how long one is kept (a challenge's copies arrive together).
pub const DEFAULT_MB: usize = 32;
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// One decode, done once by whoever asks first; `None` when it was refused.
type Cell = Arc<OnceLock<Option<Image>>>;

struct Entry {
    cell: Cell,
    at: Instant,
    /// The pixels' size once decoded (0 while decoding).
    bytes: usize,
}

struct Inner {
    map: HashMap<[u8; 16], Entry>,
    /// Keys in insertion order (may hold keys since replaced or removed).
    order: VecDeque<([u8; 16], Instant)>,
    bytes: usize,
}

pub struct Decoded {
    inner: Mutex<Inner>,
    cap_bytes: usize,
    ttl: Duration,
}

static DECODED: OnceLock<Decoded> = OnceLock::new();

/// Sets the process's decoded-image memory and TTL (before the first request; `mb = 0` turns
/// the sharing off).
pub fn configure(mb: usize, ttl: Duration) {
    let _ = DECODED.set(Decoded::new(mb << 20, ttl));
}

/// A hook asked before a refused scaled decode falls back to a full one (`decode_for_within`).
pub type BeforeFull<'a> = &'a mut dyn FnMut(&str) -> Result<(), DecodeError>;

/// Decodes `bytes` (content key `key`, header `head` as `header` read it) within `limits`, a
/// big JPEG scaled in the DCT down to a short side of `min_side` or more (`decode_for_within`,
/// asking `before_full` before a full decode in its place), or takes the image another request
/// decoded from the same bytes at the same scale.
pub fn decode(
    key: [u8; 16],
    bytes: &[u8],
    head: &Result<Header, DecodeError>,
    limits: &IngressLimits,
    min_side: u32,
    before_full: BeforeFull<'_>,
) -> Result<Image, DecodeError> {
    let shared = DECODED.get_or_init(|| Decoded::new(DEFAULT_MB << 20, DEFAULT_TTL));
    if shared.cap_bytes == 0 {
        return decode_once(bytes, head, limits, min_side, before_full).map(Arc::new);
    }
    let scale = head.as_ref().map_or(1, |h| planned_scale(*h, min_side));
    // the same bytes at another scale (the models changed since) are another image
    let key = if scale == 1 { key } else { crate::wit::image::key_of(b"scaled", &[&key, &scale.to_le_bytes()]) };
    shared.get_with(key, bytes, head, limits, min_side, before_full)
}

/// The decode of bytes whose header was read already.
fn decode_once(
    bytes: &[u8],
    head: &Result<Header, DecodeError>,
    limits: &IngressLimits,
    min_side: u32,
    before_full: BeforeFull<'_>,
) -> Result<image::RgbImage, DecodeError> {
    let d = decode_for_within(bytes, head.clone()?, limits, min_side, before_full)?;
    let m = crate::metrics::global();
    match &d.fell_back {
        Some(why) => {
            m.decoded("fell-back");
            tracing::info!(reason = %why, "libjpeg-turbo refused a scaled decode; decoded in full by zune-jpeg");
        }
        None if d.scale > 1 => m.decoded(match d.scale {
            2 => "scaled-1/2",
            4 => "scaled-1/4",
            _ => "scaled-1/8",
        }),
        None => {}
    }
    Ok(d.image)
}

/// What a decode is counted as in `cascade_decoded_images_total`.
fn count(result: &'static str) {
    crate::metrics::global().decoded(result);
}

impl Decoded {
    pub fn new(cap_bytes: usize, ttl: Duration) -> Decoded {
        Decoded { inner: Mutex::new(Inner { map: HashMap::new(), order: VecDeque::new(), bytes: 0 }), cap_bytes, ttl }
    }

    #[cfg(test)]
    fn get(&self, key: [u8; 16], bytes: &[u8], limits: &IngressLimits) -> Result<Image, DecodeError> {
        self.get_with(key, bytes, &cascade_common::image::header(bytes), limits, 0, &mut |_| Ok(()))
    }

    fn get_with(
        &self,
        key: [u8; 16],
        bytes: &[u8],
        head: &Result<Header, DecodeError>,
        limits: &IngressLimits,
        min_side: u32,
        before_full: BeforeFull<'_>,
    ) -> Result<Image, DecodeError> {
        let (cell, lead) = {
            let mut g = self.inner.lock();
            match g.map.get(&key) {
                Some(e) if e.at.elapsed() < self.ttl => (e.cell.clone(), false),
                _ => {
                    if let Some(old) = g.map.remove(&key) {
                        g.bytes -= old.bytes;
                    }
                    let cell = Cell::default();
                    let at = Instant::now();
                    g.map.insert(key, Entry { cell: cell.clone(), at, bytes: 0 });
                    g.order.push_back((key, at));
                    (cell, true)
                }
            }
        };
        let (mut ran, mut refusal) = (false, None);
        let got = cell.get_or_init(|| {
            ran = true;
            match decode_once(bytes, head, limits, min_side, &mut *before_full) {
                Ok(img) => Some(Arc::new(img)),
                Err(r) => {
                    refusal = Some(r);
                    None
                }
            }
        });
        // the request that decoded settles the entry, and the one that made it (if the decode
        // panicked there, whoever decodes next does); settling twice counts once
        if lead || ran {
            self.settle(key, &cell, got.as_ref().map(|img| img.len()));
        }
        let result = match got {
            // the same bytes passed every other check when they were decoded
            Some(img) => within(img.width(), img.height(), limits).map(|()| img.clone()),
            // a waiter on a refused decode has no refusal of its own: work it out
            None => match refusal {
                Some(r) => Err(r),
                None => decode_once(bytes, head, limits, min_side, before_full).map(Arc::new),
            },
        };
        count(match (&result, ran) {
            (Err(_), _) => "refused",
            (Ok(_), true) => "decoded",
            (Ok(_), false) if got.is_some() => "shared",
            (Ok(_), false) => "decoded",
        });
        result
    }

    /// Records a finished decode's size (or forgets a refused one), then evicts down to the
    /// cap, oldest first, and whatever has expired.
    fn settle(&self, key: [u8; 16], cell: &Cell, size: Option<usize>) {
        let mut g = self.inner.lock();
        let ours = g.map.get(&key).is_some_and(|e| Arc::ptr_eq(&e.cell, cell));
        if !ours {
            return;
        }
        match size {
            // an image larger than the whole cap is not kept (it would evict every other one)
            Some(n) if n > self.cap_bytes => {
                if let Some(e) = g.map.remove(&key) {
                    g.bytes -= e.bytes;
                }
            }
            Some(n) => {
                if let Some(e) = g.map.get_mut(&key) {
                    if e.bytes == 0 {
                        e.bytes = n;
                        g.bytes += n;
                    }
                }
            }
            None => {
                if let Some(e) = g.map.remove(&key) {
                    g.bytes -= e.bytes;
                }
            }
        }
        while let Some((k, at)) = g.order.front().copied() {
            let over = g.bytes > self.cap_bytes;
            if !over && at.elapsed() < self.ttl {
                break;
            }
            g.order.pop_front();
            // the key may since have been replaced by a newer entry: remove only this one
            if g.map.get(&k).is_some_and(|e| e.at == at) {
                if let Some(e) = g.map.remove(&k) {
                    g.bytes -= e.bytes;
                    if over {
                        count("evicted");
                    }
                }
            }
        }
    }

    /// Images held now, and their size in bytes.
    pub fn usage(&self) -> (usize, usize) {
        let g = self.inner.lock();
        (g.map.len(), g.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn jpeg(w: u32, h: u32, shade: u8) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([shade, 100, 0]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    fn key(b: &[u8]) -> [u8; 16] {
        crate::wit::image::bytes_key(b)
    }

    #[test]
    fn same_bytes_decode_once_and_limits_still_apply() {
        let d = Decoded::new(1 << 20, Duration::from_secs(60));
        let j = jpeg(64, 32, 10);
        let a = d.get(key(&j), &j, &IngressLimits::default()).unwrap();
        let b = d.get(key(&j), &j, &IngressLimits::default()).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the second request takes the first one's pixels");
        let tight = IngressLimits { max_side: 40, ..IngressLimits::default() };
        assert_eq!(d.get(key(&j), &j, &tight).unwrap_err().code(), "image-too-large");
        // a refusal is not kept: the same key decodes again (and is refused again)
        let bad = b"not an image at all".to_vec();
        assert_eq!(d.get(key(&bad), &bad, &IngressLimits::default()).unwrap_err().code(), "not-an-image");
        assert_eq!(d.usage().0, 1);
    }

    #[test]
    fn concurrent_requests_share_one_decode() {
        // released together on an image whose decode takes milliseconds, the four overlap: a
        // cache without single-flight would decode it several times (distinct pixels)
        let d = Arc::new(Decoded::new(64 << 20, Duration::from_secs(60)));
        let j = Arc::new(jpeg(1600, 1000, 20));
        let start = Arc::new(std::sync::Barrier::new(4));
        let got: Vec<Image> = (0..4)
            .map(|_| {
                let (d, j, start) = (d.clone(), j.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    d.get(key(&j), &j, &IngressLimits::default()).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(got.iter().all(|i| Arc::ptr_eq(i, &got[0])), "one decode for all four");
    }

    #[test]
    fn memory_is_capped_oldest_out() {
        // 64×64 RGB is 12 KiB: a 40 KiB cap holds three
        let d = Decoded::new(40 << 10, Duration::from_secs(60));
        for shade in 0..10u8 {
            let j = jpeg(64, 64, shade * 20);
            d.get(key(&j), &j, &IngressLimits::default()).unwrap();
        }
        let (n, bytes) = d.usage();
        assert!(n <= 3 && bytes <= 40 << 10, "{n} images, {bytes} bytes");
        // an image larger than the whole cap is served but not kept, and evicts nothing
        let (n_before, _) = d.usage();
        let big = jpeg(160, 160, 90);
        d.get(key(&big), &big, &IngressLimits::default()).unwrap();
        assert_eq!(d.usage().0, n_before, "nothing evicted for an image that cannot be kept");
        let newest = jpeg(64, 64, 180);
        let before = d.get(key(&newest), &newest, &IngressLimits::default()).unwrap();
        let again = d.get(key(&newest), &newest, &IngressLimits::default()).unwrap();
        assert!(Arc::ptr_eq(&before, &again), "the newest is kept");
    }
}

//! Big JPEGs decoded by libjpeg-turbo (the `turbojpeg` crate, which builds it from source) at
//! 1/2, 1/4 or 1/8 of their size in the DCT (its scaled inverse transforms), so a 12 MP photo
//! never exists at full size; and JPEG headers read without building Huffman tables. The
//! caller has run the size checks on the header.

use std::cell::RefCell;

use super::Header;

/// Most progressive scans a JPEG may have: libjpeg-turbo's advice for untrusted input (a file
/// of a few KB with thousands of scans would otherwise take seconds to decode).
const SCAN_LIMIT: u32 = 500;

thread_local! {
    /// One decompressor per thread, reused (its set-up allocates).
    static DECOMPRESSOR: RefCell<Option<turbojpeg::Decompressor>> = const { RefCell::new(None) };
}

/// A JPEG's width and height from its header, read by libjpeg-turbo (cheaper than zune-jpeg's
/// header read, which builds the Huffman tables), or `None` when it cannot read it.
pub(super) fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    with_decompressor(|d| d.read_header(bytes).map_err(|e| e.to_string()))
        .ok()
        .and_then(|h| Some((u32::try_from(h.width).ok()?, u32::try_from(h.height).ok()?)))
}

/// The image at `1/scale` of `head`'s size (rounded up; `scale` 1, 2, 4 or 8), or why not
/// (the caller then decodes in full with zune-jpeg).
pub(super) fn decode(bytes: &[u8], head: Header, scale: u32) -> Result<image::RgbImage, String> {
    with_decompressor(|d| run(d, bytes, head, scale))
}

/// `f` on this thread's decompressor (made on first use, and again after a failure).
fn with_decompressor<T>(f: impl FnOnce(&mut turbojpeg::Decompressor) -> Result<T, String>) -> Result<T, String> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match slot.as_mut() {
            Some(d) => d,
            None => {
                let mut d = turbojpeg::Decompressor::new().map_err(|e| format!("libjpeg-turbo: {e}"))?;
                d.set_scan_limit(SCAN_LIMIT).map_err(|e| format!("libjpeg-turbo: {e}"))?;
                slot.insert(d)
            }
        };
        let out = f(d);
        if out.is_err() {
            // a fresh decompressor for the next image, whatever state the failure left
            *slot = None;
        }
        out
    })
}

fn run(d: &mut turbojpeg::Decompressor, bytes: &[u8], head: Header, scale: u32) -> Result<image::RgbImage, String> {
    let factor = turbojpeg::ScalingFactor::new(1, scale as usize);
    let full = d.read_header(bytes).map_err(|e| format!("header: {e}"))?;
    if (full.width, full.height) != (head.width as usize, head.height as usize) {
        return Err(format!(
            "libjpeg-turbo reads {}×{}, the header said {}×{}",
            full.width, full.height, head.width, head.height
        ));
    }
    let at = full.scaled(factor);
    let (w, h) = (head.width.div_ceil(scale), head.height.div_ceil(scale));
    if (at.width, at.height) != (w as usize, h as usize) {
        return Err(format!("1/{scale} gives {}×{}, not {w}×{h}", at.width, at.height));
    }
    d.set_scaling_factor(factor).map_err(|e| format!("scale 1/{scale}: {e}"))?;
    let mut pixels = vec![0u8; 3 * at.width * at.height];
    let img = turbojpeg::Image {
        pixels: pixels.as_mut_slice(),
        width: at.width,
        pitch: 3 * at.width,
        height: at.height,
        format: turbojpeg::PixelFormat::RGB,
    };
    d.decompress(bytes, img).map_err(|e| format!("decode: {e}"))?;
    image::RgbImage::from_raw(w, h, pixels).ok_or_else(|| format!("too few pixels for {w}×{h}"))
}

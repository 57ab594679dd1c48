//! Decoding an untrusted JPEG or PNG to RGB within size limits. Dimensions are read from the
//! header and checked before any pixel memory is allocated, so a decompression bomb costs
//! nothing; every failure is a typed error with a stable code. The HTTP ingress maps these
//! onto statuses; the offline tools read their labelled images through the same checks.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits};

mod turbo;

/// Limits on what a request may carry (from flags).
#[derive(Debug, Clone, Copy)]
pub struct IngressLimits {
    pub max_body_bytes: usize,
    /// Largest width or height.
    pub max_side: u32,
    /// Largest width × height.
    pub max_pixels: u64,
}

impl Default for IngressLimits {
    fn default() -> Self {
        IngressLimits { max_body_bytes: 4 << 20, max_side: 8192, max_pixels: 40_000_000 }
    }
}

impl IngressLimits {
    /// The axon's limits: validators send 224×224 challenges, so anything past 1024 per side
    /// or a megapixel is refused before a pixel is allocated (tighter than the HTTP API's).
    pub fn axon(&self) -> IngressLimits {
        IngressLimits {
            max_body_bytes: self.max_body_bytes,
            max_side: self.max_side.min(AXON_MAX_SIDE),
            max_pixels: self.max_pixels.min(AXON_MAX_PIXELS),
        }
    }
}

pub const AXON_MAX_SIDE: u32 = 1024;
pub const AXON_MAX_PIXELS: u64 = 1 << 20;
/// No real JPEG or PNG packs more pixels than this into one byte of file (a flat black JPEG
/// needs about one byte per 256 pixels, a flat PNG one per 340): a header that claims more is
/// a tiny file forcing a huge decode, and is refused before decoding.
pub const MAX_PIXELS_PER_BYTE: u64 = 4096;

/// Why bytes did not become an image.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("the bytes are not a JPEG or PNG image")]
    NotAnImage,
    /// A header or body that does not decode, or claims what no real image is.
    #[error("{0}")]
    Undecodable(String),
    /// Past the limits (per side or in pixels).
    #[error("image is {w}×{h}; the limits are {max_side} per side and {max_pixels} pixels")]
    TooLarge { w: u32, h: u32, max_side: u32, max_pixels: u64 },
    /// A big JPEG whose scaled decode was refused needs the memory of a full decode, which is
    /// not free now (`busy`) or more than the whole decode budget.
    #[error("{message}")]
    Memory { busy: bool, message: String },
}

impl DecodeError {
    /// The stable code clients and metrics see.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::NotAnImage => "not-an-image",
            DecodeError::Undecodable(_) => "undecodable-image",
            DecodeError::TooLarge { .. } | DecodeError::Memory { busy: false, .. } => "image-too-large",
            DecodeError::Memory { busy: true, .. } => "busy",
        }
    }
}

/// The width and height a JPEG or PNG header claims, read without decoding (`None` for
/// anything else or a header that does not read: the decode then says why).
pub fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    header(bytes).ok().map(|h| (h.width, h.height))
}

/// Memory a decode of a `w`×`h` image may hold at its peak: the decoder's RGBA buffer and the
/// RGB copy (7 bytes a pixel).
pub fn decode_cost_bytes(w: u32, h: u32) -> u64 {
    u64::from(w) * u64::from(h) * 7
}

/// What a JPEG or PNG's header says: read once per request, for the decode budget and the decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
}

/// Reads the format and the dimensions from the header (no pixel is decoded).
pub fn header(bytes: &[u8]) -> Result<Header, DecodeError> {
    if image::guess_format(bytes).ok() == Some(ImageFormat::Jpeg) {
        if let Some((width, height)) = turbo::dimensions(bytes) {
            return Ok(Header { format: ImageFormat::Jpeg, width, height });
        }
        // not readable by libjpeg-turbo: `image` reads it, or says why not
    }
    let undecodable = DecodeError::Undecodable;
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| undecodable(e.to_string()))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png)) => f,
        _ => return Err(DecodeError::NotAnImage),
    };
    let (width, height) =
        reader.into_dimensions().map_err(|e| undecodable(format!("cannot read the image header: {e}")))?;
    Ok(Header { format, width, height })
}

/// Decodes a JPEG or PNG to RGB, refusing anything past `limits` before decoding it.
pub fn decode_image(bytes: &[u8], limits: &IngressLimits) -> Result<image::RgbImage, DecodeError> {
    decode_with_header(bytes, header(bytes)?, limits)
}

/// `decode_image` with the header already read (by `header` on the same bytes).
pub fn decode_with_header(bytes: &[u8], head: Header, limits: &IngressLimits) -> Result<image::RgbImage, DecodeError> {
    decode_for(bytes, head, limits, 0).map(|d| d.image)
}

/// `decode_with_header` for an image that only needs to keep a short side of `min_side`: a
/// JPEG over `SCALE_FROM_PIXELS` and at least twice that is decoded by libjpeg-turbo at 1/2,
/// 1/4 or 1/8 of its size in the DCT (far less work and memory than decoding 12 MP to resize it
/// afterwards); one it refuses is decoded in full (and `fell_back` says why). Everything else,
/// validators' challenges among them, is decoded in full by `image` (zune-jpeg, png): on the
/// grouped held-out evaluation libjpeg-turbo's pixels cost MCC (README, "decode-bench").
/// `min_side` 0 decodes at full size.
pub fn decode_for(bytes: &[u8], head: Header, limits: &IngressLimits, min_side: u32) -> Result<Decoded, DecodeError> {
    decode_for_within(bytes, head, limits, min_side, &mut |_| Ok(()))
}

/// `decode_for`, asking `before_full` (with libjpeg-turbo's reason) before a refused scaled
/// decode falls back to a full one: a server that reserved memory for the scaled size takes
/// the rest there, or refuses the image with the error `before_full` returns.
pub fn decode_for_within(
    bytes: &[u8],
    head: Header,
    limits: &IngressLimits,
    min_side: u32,
    before_full: &mut dyn FnMut(&str) -> Result<(), DecodeError>,
) -> Result<Decoded, DecodeError> {
    check(bytes, head, limits)?;
    if head.format != ImageFormat::Jpeg {
        return Ok(Decoded { image: full(bytes, head.format, limits)?, scale: 1, fell_back: None });
    }
    let scale = planned_scale(head, min_side);
    if scale == 1 {
        return Ok(Decoded { image: full(bytes, head.format, limits)?, scale: 1, fell_back: None });
    }
    match turbo::decode(bytes, head, scale) {
        Ok(image) => Ok(Decoded { image, scale, fell_back: None }),
        Err(why) => {
            before_full(&why)?;
            Ok(Decoded { image: full(bytes, head.format, limits)?, scale: 1, fell_back: Some(why) })
        }
    }
}

/// libjpeg-turbo's decode of a JPEG at `1/scale` (1, 2, 4 or 8), checks not included: for
/// benchmarks that compare it with the full decode (`decode-bench`).
pub fn libjpeg_turbo(bytes: &[u8], head: Header, scale: u32) -> Result<image::RgbImage, String> {
    turbo::decode(bytes, head, scale)
}

/// An image as `decode_for` made it.
#[derive(Debug)]
pub struct Decoded {
    pub image: image::RgbImage,
    /// 1 (full size), 2, 4 or 8: the image is the file's size divided by this (rounded up).
    pub scale: u32,
    /// Why libjpeg-turbo refused a scaled decode, when zune-jpeg then decoded in full.
    pub fell_back: Option<String>,
}

/// Images up to this many pixels (validators' 224² challenges among them, any image the axon
/// admits) are always decoded at full size.
pub const SCALE_FROM_PIXELS: u64 = 1 << 20;

/// The scale `decode_for` decodes an image of header `head` at for `min_side`.
pub fn planned_scale(head: Header, min_side: u32) -> u32 {
    let big = u64::from(head.width) * u64::from(head.height) > SCALE_FROM_PIXELS;
    if head.format == ImageFormat::Jpeg && big {
        dct_scale(head.width, head.height, min_side)
    } else {
        1
    }
}

/// The largest DCT scale (2, 4 or 8; else 1) that keeps the short side of a `w`×`h` JPEG at
/// `min_side` or more (1 when `min_side` is 0).
pub fn dct_scale(w: u32, h: u32, min_side: u32) -> u32 {
    if min_side == 0 {
        return 1;
    }
    let short = w.min(h);
    [8, 4, 2].into_iter().find(|d| short.div_ceil(*d) >= min_side).unwrap_or(1)
}

/// The checks every decode passes first: size limits, density, a complete JPEG.
fn check(bytes: &[u8], head: Header, limits: &IngressLimits) -> Result<(), DecodeError> {
    let undecodable = DecodeError::Undecodable;
    let Header { format, width: w, height: h } = head;
    if w == 0 || h == 0 {
        return Err(undecodable(format!("image has zero size ({w}×{h})")));
    }
    within(w, h, limits)?;
    if w as u64 * h as u64 > (bytes.len() as u64).saturating_mul(MAX_PIXELS_PER_BYTE) {
        return Err(undecodable(format!(
            "image claims {w}×{h} in {} bytes: no real JPEG or PNG is that dense",
            bytes.len()
        )));
    }
    if format == ImageFormat::Jpeg && !jpeg_complete(bytes) {
        return Err(undecodable("JPEG is truncated (no end-of-image marker)".into()));
    }
    Ok(())
}

/// The full-size decode through `image` (zune-jpeg for JPEG, png).
fn full(bytes: &[u8], format: ImageFormat, limits: &IngressLimits) -> Result<image::RgbImage, DecodeError> {
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_pixels * 4 + (16 << 20));
    reader.limits(l);
    let img = reader.decode().map_err(|e| DecodeError::Undecodable(format!("cannot decode: {e}")))?;
    Ok(img.into_rgb8())
}

/// A `w`×`h` image against the size limits.
pub fn within(w: u32, h: u32, limits: &IngressLimits) -> Result<(), DecodeError> {
    if w > limits.max_side || h > limits.max_side || w as u64 * h as u64 > limits.max_pixels {
        return Err(DecodeError::TooLarge { w, h, max_side: limits.max_side, max_pixels: limits.max_pixels });
    }
    Ok(())
}

/// The decoder fills a cut-off JPEG with grey instead of failing; a complete one ends with
/// the EOI marker (possibly followed by padding).
fn jpeg_complete(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([200, 100, 0]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_and_refuses() {
        let l = IngressLimits::default();
        assert_eq!(decode_image(&jpeg(32, 16), &l).unwrap().dimensions(), (32, 16));
        let j = jpeg(64, 64);
        assert_eq!(decode_image(&j[..j.len() / 2], &l).unwrap_err().code(), "undecodable-image");
        assert_eq!(decode_image(b"hello world", &l).unwrap_err(), DecodeError::NotAnImage);
        let small = IngressLimits { max_side: 16, ..l };
        assert_eq!(decode_image(&jpeg(32, 16), &small).unwrap_err().code(), "image-too-large");
        // the axon's limits are tight
        assert_eq!(decode_image(&jpeg(1100, 8), &l.axon()).unwrap_err().code(), "image-too-large");
    }

    #[test]
    fn a_tiny_file_claiming_a_huge_image_is_refused_before_decoding() {
        // a real JPEG header whose frame claims 8192×4882, then almost nothing
        let mut j = jpeg(16, 16);
        let sof = j.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline frame header");
        j[sof + 5..sof + 9].copy_from_slice(&[0x13, 0x12, 0x20, 0x00]); // height 4882, width 8192
        let r = decode_image(&j, &IngressLimits::default()).unwrap_err();
        assert_eq!(r.code(), "undecodable-image", "{r:?}");
        assert!(r.to_string().contains("8192×4882"), "{r:?}");
    }

    /// A street-like pattern (edges in both directions, colour), at `w`×`h`.
    fn scene(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let stripe = if (x / 40 + y / 60) % 2 == 0 { 60 } else { 0 };
            image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 120 + stripe as u8])
        });
        let mut out = Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_big_jpeg_is_decoded_scaled_to_what_the_models_need() {
        let j = scene(2400, 1800);
        let l = IngressLimits::default();
        let full = decode_for(&j, header(&j).unwrap(), &l, 0).unwrap();
        assert_eq!((full.scale, full.image.dimensions(), &full.fell_back), (1, (2400, 1800), &None));
        // short side 1800: 1/2 keeps 900 ≥ 500, 1/4 would give 450
        let half = decode_for(&j, header(&j).unwrap(), &l, 500).unwrap();
        assert_eq!((half.scale, half.image.dimensions(), &half.fell_back), (2, (1200, 900), &None));
        assert_eq!(decode_for(&j, header(&j).unwrap(), &l, 200).unwrap().image.dimensions(), (300, 225));
        // the scaled image is the full one averaged 2×2, within JPEG's rounding
        let (mut diff, mut n) = (0u64, 0u64);
        for (x, y, p) in half.image.enumerate_pixels() {
            for c in 0..3 {
                let avg: u32 =
                    (0..4).map(|k| u32::from(full.image.get_pixel(2 * x + k % 2, 2 * y + k / 2)[c])).sum::<u32>() / 4;
                diff += u64::from(avg.abs_diff(u32::from(p[c])));
                n += 1;
            }
        }
        let mean = diff as f64 / n as f64;
        assert!(mean < 2.0, "mean difference {mean}");
        // validators' small images are never scaled, whatever the need
        let small = jpeg(224, 224);
        assert_eq!(decode_for(&small, header(&small).unwrap(), &l, 16).unwrap().scale, 1);
    }

    #[test]
    fn a_jpeg_libjpeg_turbo_refuses_is_decoded_by_zune_jpeg() {
        // CMYK: libjpeg-turbo cannot turn it into RGB, zune-jpeg can (big enough to be scaled)
        let (w, h) = (1280usize, 960usize);
        let px = vec![40u8; w * h * 4];
        let img = turbojpeg::Image {
            pixels: px.as_slice(),
            width: w,
            pitch: w * 4,
            height: h,
            format: turbojpeg::PixelFormat::CMYK,
        };
        let j = turbojpeg::compress(img, 90, turbojpeg::Subsamp::None).unwrap().to_vec();
        let d = decode_for(&j, header(&j).unwrap(), &IngressLimits::default(), 400).unwrap();
        assert_eq!((d.scale, d.image.dimensions()), (1, (1280, 960)));
        assert!(d.fell_back.as_deref().is_some_and(|w| w.contains("decode")), "{:?}", d.fell_back);
        // a caller that cannot afford the full decode refuses it, with its own error
        let mut asked = Vec::new();
        let mut refuse = |why: &str| {
            asked.push(why.to_string());
            Err(DecodeError::Memory { busy: true, message: "no memory for the full decode".into() })
        };
        let e = decode_for_within(&j, header(&j).unwrap(), &IngressLimits::default(), 400, &mut refuse).unwrap_err();
        assert_eq!((e.code(), asked.len()), ("busy", 1), "{e}");
        // and the next image decodes with libjpeg-turbo again
        let ok = scene(1280, 960);
        let d = decode_for(&ok, header(&ok).unwrap(), &IngressLimits::default(), 400).unwrap();
        assert_eq!((d.scale, d.image.dimensions(), d.fell_back), (2, (640, 480), None));
    }
}

//! Turning a request body into a decoded image, within limits. Every refusal is a precise
//! status and code; nothing here panics on hostile input.

use std::io::Cursor;

use base64::Engine as _;
use hyper::StatusCode;
use image::{ImageFormat, ImageReader, Limits};
use serde::Deserialize;

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

/// A refused request: HTTP status, a stable code and a message for people.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { status, code, message: message.into() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictBody {
    image: String,
}

fn invalid_json(detail: impl std::fmt::Display) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "invalid-json", format!("body is not {{\"image\": \"<base64>\"}}: {detail}"))
}

/// The image bytes of a `/v1/predict` body, by content type.
pub fn image_bytes(content_type: Option<&str>, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let ct = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match ct.as_deref() {
        Some("application/json") => {
            // an object, not any JSON serde would map onto the struct (a `["…"]` array would be)
            let v: serde_json::Value = serde_json::from_slice(body).map_err(invalid_json)?;
            if !v.is_object() {
                return Err(invalid_json("found a JSON value that is not an object"));
            }
            let b: PredictBody = serde_json::from_value(v).map_err(invalid_json)?;
            decode_base64(&b.image)
        }
        Some("image/jpeg") | Some("image/png") => Ok(body.to_vec()),
        other => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("content type {:?}: send application/json, image/jpeg or image/png", other.unwrap_or("(none)")),
        )),
    }
}

/// Standard base64, with or without padding, optionally as a `data:` URL.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, Refusal> {
    let s = s.trim();
    let s = match s.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, d)| d).unwrap_or(""),
        None => s,
    };
    let cfg = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
    let engine = base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, cfg);
    let bytes = engine
        .decode(s)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "invalid-base64", format!("image is not base64: {e}")))?;
    if bytes.is_empty() {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "empty-image", "image is empty"));
    }
    Ok(bytes)
}

/// Decodes a JPEG or PNG to RGB. Dimensions are read from the header and checked before any
/// pixel memory is allocated, so a decompression bomb costs nothing.
pub fn decode_image(bytes: &[u8], limits: &IngressLimits) -> Result<image::RgbImage, Refusal> {
    let unprocessable = |m: String| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, "undecodable-image", m);
    let reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| unprocessable(e.to_string()))?;
    let format = reader.format();
    if !matches!(format, Some(ImageFormat::Jpeg) | Some(ImageFormat::Png)) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-an-image",
            "the bytes are not a JPEG or PNG image",
        ));
    }
    let (w, h) = reader.into_dimensions().map_err(|e| unprocessable(format!("cannot read the image header: {e}")))?;
    if w == 0 || h == 0 {
        return Err(unprocessable(format!("image has zero size ({w}×{h})")));
    }
    within(w, h, limits)?;
    if w as u64 * h as u64 > (bytes.len() as u64).saturating_mul(MAX_PIXELS_PER_BYTE) {
        return Err(unprocessable(format!(
            "image claims {w}×{h} in {} bytes: no real JPEG or PNG is that dense",
            bytes.len()
        )));
    }
    if format == Some(ImageFormat::Jpeg) && !jpeg_complete(bytes) {
        return Err(unprocessable("JPEG is truncated (no end-of-image marker)".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format.unwrap_or(ImageFormat::Jpeg));
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_pixels * 4 + (16 << 20));
    reader.limits(l);
    let img = reader.decode().map_err(|e| unprocessable(format!("cannot decode: {e}")))?;
    Ok(img.into_rgb8())
}

/// A `w`×`h` image against the size limits.
pub fn within(w: u32, h: u32, limits: &IngressLimits) -> Result<(), Refusal> {
    if w > limits.max_side || h > limits.max_side || w as u64 * h as u64 > limits.max_pixels {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "image-too-large",
            format!("image is {w}×{h}; the limits are {} per side and {} pixels", limits.max_side, limits.max_pixels),
        ));
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
        assert_eq!(decode_image(&j[..j.len() / 2], &l).unwrap_err().code, "undecodable-image");
        assert_eq!(decode_image(b"hello world", &l).unwrap_err().code, "not-an-image");
        let small = IngressLimits { max_side: 16, ..l };
        assert_eq!(decode_image(&jpeg(32, 16), &small).unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
        // the axon's limits are tight
        assert_eq!(decode_image(&jpeg(1100, 8), &l.axon()).unwrap_err().code, "image-too-large");
    }

    #[test]
    fn a_tiny_file_claiming_a_huge_image_is_refused_before_decoding() {
        // a real JPEG header whose frame claims 8192×4882, then almost nothing
        let mut j = jpeg(16, 16);
        let sof = j.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline frame header");
        j[sof + 5..sof + 9].copy_from_slice(&[0x13, 0x12, 0x20, 0x00]); // height 4882, width 8192
        let r = decode_image(&j, &IngressLimits::default()).unwrap_err();
        assert_eq!(r.code, "undecodable-image", "{r:?}");
        assert!(r.message.contains("8192×4882"), "{r:?}");
    }

    #[test]
    fn json_bodies_must_be_objects() {
        let ct = Some("application/json");
        assert_eq!(image_bytes(ct, br#"["aGk="]"#).unwrap_err().code, "invalid-json");
        assert_eq!(image_bytes(ct, br#"{"image": "aGk="}"#).unwrap(), b"hi");
        assert_eq!(image_bytes(ct, br#"{"image": "aGk=", "x": 1}"#).unwrap_err().code, "invalid-json");
    }

    #[test]
    fn base64_forms() {
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aGk").unwrap(), b"hi");
        assert_eq!(decode_base64("data:image/jpeg;base64,aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("not base64!").unwrap_err().code, "invalid-base64");
    }
}

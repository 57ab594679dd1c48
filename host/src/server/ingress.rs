//! Turning a request body into a decoded image, within limits. Every refusal is a precise
//! status and code; nothing here panics on hostile input.

use hyper::StatusCode;
use serde::Deserialize;

use cascade_common::image::DecodeError;
pub use cascade_common::image::{IngressLimits, AXON_MAX_PIXELS, AXON_MAX_SIDE, MAX_PIXELS_PER_BYTE};

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
struct PredictBody<'a> {
    /// Borrowed from the body when it holds no escapes (base64 never does): no copy.
    #[serde(borrow)]
    image: std::borrow::Cow<'a, str>,
}

fn invalid_json(detail: impl std::fmt::Display) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "invalid-json", format!("body is not {{\"image\": \"<base64>\"}}: {detail}"))
}

/// The image bytes of a `/v1/predict` body, by content type.
pub(crate) fn image_bytes(content_type: Option<&str>, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let ct = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match ct.as_deref() {
        Some("application/json") => {
            // an object, not any JSON serde would map onto the struct (a `["…"]` array would be)
            if body.trim_ascii_start().first().is_some_and(|b| *b != b'{') {
                return Err(invalid_json("found a JSON value that is not an object"));
            }
            let b: PredictBody = serde_json::from_slice(body).map_err(invalid_json)?;
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
pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, Refusal> {
    let s = s.trim();
    let s = match s.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, d)| d).unwrap_or(""),
        None => s,
    };
    // padded or not; as the `base64` crate's indifferent padding had it, a last group of two or
    // three symbols may carry any padding that leaves it at most four long ("aA=" included)
    let body = s.trim_end_matches('=');
    let pads = s.len() - body.len();
    let padding_fits = pads == 0 || (matches!(body.len() % 4, 2 | 3) && body.len() % 4 + pads <= 4);
    let refuse =
        || Refusal::new(StatusCode::BAD_REQUEST, "invalid-base64", format!("image is not base64: {}", base64_fault(s)));
    if !padding_fits {
        return Err(refuse());
    }
    let bytes = base64_simd::STANDARD_NO_PAD.decode_to_vec(body).map_err(|_| refuse())?;
    if bytes.is_empty() {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "empty-image", "image is empty"));
    }
    Ok(bytes)
}

/// Where `s` stops being standard base64 (the SIMD decoder only says that it is not).
fn base64_fault(s: &str) -> String {
    let body = s.trim_end_matches('=');
    let alphabet = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    match body.bytes().position(|b| !alphabet(&b)) {
        Some(i) => format!("byte {:#04x} at offset {i}", body.as_bytes()[i]),
        None if s.len() - body.len() > 2 || body.len() % 4 == 1 => {
            format!("a length of {} does not end a 4-symbol group", s.len())
        }
        None if s.len() != body.len() && !s.len().is_multiple_of(4) => {
            format!("padded to a length of {}, not a multiple of 4", s.len())
        }
        None => "its last symbol leaves bits over (not canonical)".to_string(),
    }
}

/// Decodes a JPEG or PNG to RGB. Dimensions are read from the header and checked before any
/// pixel memory is allocated, so a decompression bomb costs nothing.
pub fn decode_image(bytes: &[u8], limits: &IngressLimits) -> Result<image::RgbImage, Refusal> {
    Ok(cascade_common::image::decode_image(bytes, limits)?)
}

impl From<DecodeError> for Refusal {
    fn from(e: DecodeError) -> Refusal {
        let status = match e {
            DecodeError::NotAnImage => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            DecodeError::Undecodable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DecodeError::TooLarge { .. } | DecodeError::Memory { busy: false, .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DecodeError::Memory { busy: true, .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        Refusal::new(status, e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageFormat;
    use std::io::Cursor;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([200, 100, 0]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn each_decode_refusal_has_its_status_and_code() {
        // what is refused is `cascade_common::image`'s to test; here, how the HTTP API says it
        let l = IngressLimits::default();
        assert_eq!(decode_image(&jpeg(32, 16), &l).unwrap().dimensions(), (32, 16));
        let j = jpeg(64, 64);
        let cut = decode_image(&j[..j.len() / 2], &l).unwrap_err();
        assert_eq!((cut.status, cut.code), (StatusCode::UNPROCESSABLE_ENTITY, "undecodable-image"));
        let text = decode_image(b"hello world", &l).unwrap_err();
        assert_eq!((text.status, text.code), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-an-image"));
        assert_eq!(text.message, "the bytes are not a JPEG or PNG image");
        let large = decode_image(&jpeg(1100, 8), &l.axon()).unwrap_err();
        assert_eq!((large.status, large.code), (StatusCode::PAYLOAD_TOO_LARGE, "image-too-large"));
        assert_eq!(large.message, "image is 1100×8; the limits are 1024 per side and 1048576 pixels");
        // a full decode after a refused scaled one, without the memory for it
        for (busy, status, code) in
            [(true, StatusCode::SERVICE_UNAVAILABLE, "busy"), (false, StatusCode::PAYLOAD_TOO_LARGE, "image-too-large")]
        {
            let r = Refusal::from(DecodeError::Memory { busy, message: "needs 84 MiB".into() });
            assert_eq!((r.status, r.code, r.message.as_str()), (status, code, "needs 84 MiB"));
        }
    }

    #[test]
    fn json_bodies_must_be_objects() {
        let ct = Some("application/json");
        assert_eq!(image_bytes(ct, br#"["aGk="]"#).unwrap_err().code, "invalid-json");
        assert_eq!(image_bytes(ct, br#"{"image": "aGk="}"#).unwrap(), b"hi");
        assert_eq!(image_bytes(ct, br#"{"image": "aGk=", "x": 1}"#).unwrap_err().code, "invalid-json");
        assert_eq!(image_bytes(ct, b" \n [\"aGk=\"]").unwrap_err().code, "invalid-json");
        assert_eq!(image_bytes(ct, b"").unwrap_err().code, "invalid-json");
        // an escaped string is unescaped into its own copy
        assert_eq!(image_bytes(ct, br#" {"image": "aGk\u003d"}"#).unwrap(), b"hi");
    }

    #[test]
    fn base64_forms() {
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aGk").unwrap(), b"hi");
        assert_eq!(decode_base64("data:image/jpeg;base64,aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("not base64!").unwrap_err().code, "invalid-base64");
        let why = |s: &str| decode_base64(s).unwrap_err().message;
        assert_eq!(why("aGk gaGk="), "image is not base64: byte 0x20 at offset 3");
        assert_eq!(why("aGk==="), "image is not base64: a length of 6 does not end a 4-symbol group");
        assert_eq!(why("aGkxa"), "image is not base64: a length of 5 does not end a 4-symbol group");
        assert_eq!(why("aGk=="), "image is not base64: padded to a length of 5, not a multiple of 4");
        assert_eq!(decode_base64("aA=").unwrap(), b"h", "a short group's padding may fall short");
        assert_eq!(why("aGl="), "image is not base64: its last symbol leaves bits over (not canonical)");
        assert_eq!(decode_base64("").unwrap_err().code, "empty-image");
    }

    /// The SIMD decoder agrees with the `base64` crate on every length and padding.
    #[test]
    fn base64_matches_the_reference_decoder() {
        use base64::Engine as _;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 1..300usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let padded = base64::engine::general_purpose::STANDARD.encode(&bytes);
            assert_eq!(decode_base64(&padded).unwrap(), bytes, "padded, {len} bytes");
            assert_eq!(decode_base64(padded.trim_end_matches('=')).unwrap(), bytes, "unpadded, {len} bytes");
        }
        // and accepts what it accepts, byte for byte, over every text of up to six symbols drawn
        // from symbols whose trailing bits differ, padding, and a symbol outside the alphabet
        let reference = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let symbols = [b'A', b'Q', b'g', b'a', b'=', b'-'];
        let mut checked = 0;
        for len in 1..=6u32 {
            for mut n in 0..symbols.len().pow(len) {
                let text: String = (0..len)
                    .map(|_| {
                        let c = symbols[n % symbols.len()];
                        n /= symbols.len();
                        char::from(c)
                    })
                    .collect();
                let want = reference.decode(&text).ok().filter(|b| !b.is_empty());
                let got = decode_base64(&text);
                assert_eq!(got.as_ref().ok(), want.as_ref(), "{text:?}: {:?}", got.as_ref().err().map(|r| &r.message));
                if let Err(r) = got {
                    assert!(["invalid-base64", "empty-image"].contains(&r.code), "{text:?}: {}", r.code);
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 6 + 36 + 216 + 1296 + 7776 + 46656);
    }
}

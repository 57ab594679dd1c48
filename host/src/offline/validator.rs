//! What a validator sends: the image centre-cropped to a square, resized to 224×224 and
//! re-encoded as JPEG at quality 75.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use image::RgbImage;

pub const SIZE: u32 = 224;
pub const QUALITY: u8 = 75;

pub fn validator_jpeg(img: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let side = img.width().min(img.height());
    let (x, y) = ((img.width() - side) / 2, (img.height() - side) / 2);
    let square = imageops::crop_imm(img, x, y, side, side).to_image();
    let small = imageops::resize(&square, SIZE, SIZE, FilterType::Triangle);
    let mut out = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut out, QUALITY).encode_image(&small)?;
    Ok(out.into_inner())
}

//! What a validator sends at augmentation level 0: the image centre-cropped to a square, resized
//! to 224×224 and re-encoded as JPEG at quality 75. [`super::augment`] has every level.

use image::RgbImage;

use super::augment::{self, Params};

pub use super::augment::{QUALITY, SIZE};

pub fn validator_jpeg(img: &RgbImage) -> anyhow::Result<Vec<u8>> {
    Ok(augment::challenge_jpeg(img, &Params::level0()))
}

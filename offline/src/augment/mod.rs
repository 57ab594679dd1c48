//! What subnet 72's validators really send: a port of the augmentation every challenge goes
//! through (`apply_augmentation_by_level` in the subnet's `natix/utils/image_transforms.py`),
//! then `ToPILImage` and JPEG at PIL's defaults. The behaviour, read from the reference and
//! checked against it (`scripts/tune/augment_reference.py` and the fixture test below):
//!
//! - level 0: centre square (offsets rounded half to even), PIL's bilinear resize to 224×224
//!   (triangle filter stretched by the reduction, 8-bit, horizontal pass first);
//! - levels 1–3, on a float image in [0, 1]: rotation by U(−20°, 20°) with **nearest** sampling
//!   (the rotation's bilinear setting is never passed on), black corners, same size; a square crop
//!   of U(0.2, 1) of the *whole* image's area, placed uniformly, tried ten times and otherwise the
//!   centre square — so in effect U(0.2, short/long) of the area, the side at most the short
//!   side — resized to 224×224 by antialiased bilinear in float; the flips are built but never
//!   applied (their params start empty and an empty dict means "don't flip");
//! - level 2 adds chroma ×0.4 ("CS"), values ×0.85 ("CC"), down/up-sampling ÷2 ("JPEG"), each with
//!   probability 1/2; level 3 adds those and Gaussian colour noise ("GNC") and Gaussian blur
//!   ("GB"), each at strength 0, 1 or 2 with probability 1/3 (the reference's five-step tables);
//!   each distortion first truncates the float image to 8 bits (`(x·255).astype(uint8)`);
//! - `ToPILImage` truncates again (`mul(255).byte()`), then JPEG quality 75, 4:2:0.
//!
//! Every random choice is in [`Params`], so a recorded set can be replayed; [`Params::sample`]
//! draws them as the reference does from a small seeded generator of our own. Given the same
//! decoded source pixels and params, the image before JPEG was bit-identical to the reference's
//! (torch 2.15, torchvision 0.29, OpenCV 5.0, Pillow 13) in every fixture case without noise.

use image::RgbImage;

use super::jpeg;

mod distort;
mod params;
mod resample;
#[cfg(test)]
mod tests;

use distort::distort;
pub use params::{Crop, Distortion, Params, Rng, CROP_SCALE, MAX_ANGLE, QUALITY, SIZE};
use resample::{level0, rotate_crop_resize};

/// The augmented 224×224 image, before JPEG.
pub fn apply(img: &RgbImage, p: &Params) -> RgbImage {
    if img.width() == 0 || img.height() == 0 {
        return RgbImage::new(SIZE, SIZE);
    }
    let mut out = if p.level == 0 { level0(img) } else { rotate_crop_resize(img, p.angle, p.crop) };
    let mut noise = Rng::new(p.noise_seed);
    for &(d, strength) in &p.distortions {
        if let Some(v) = d.value(strength) {
            distort(&mut out, d, v, &mut noise);
        }
    }
    out
}

/// The challenge as a validator sends it: [`apply`], then JPEG at quality 75, 4:2:0.
pub fn challenge_jpeg(img: &RgbImage, p: &Params) -> Vec<u8> {
    jpeg::encode_rgb(&apply(img, p), QUALITY).expect("a 224×224 image always encodes")
}

/// A set of augmentation levels, as `--levels` takes it: `0-3`, `0,2`, `1`, `0-1,3` (each drawn
/// alike), or with a weight per level, `0:1,1:2,2:3.5,3:3.5` (drawn in proportion: the subnet's
/// `level_probs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Levels {
    levels: Vec<u8>,
    /// One per level when weighted; empty when every level is drawn alike.
    weights: Vec<f64>,
}

impl Levels {
    pub fn parse(s: &str) -> Result<Levels, String> {
        let level = |t: &str| match t.trim().parse::<u8>() {
            Ok(l) if l <= 3 => Ok(l),
            _ => Err(format!("{t:?} is not a level (0, 1, 2 or 3)")),
        };
        if s.contains(':') {
            let mut map = std::collections::BTreeMap::new();
            for part in s.split(',') {
                let (l, w) = part.split_once(':').ok_or_else(|| {
                    format!("{part:?}: give every level a weight (`0:1,1:2,2:3.5,3:3.5`) or none (`0-3`)")
                })?;
                let l = level(l)?;
                let w: f64 = w.trim().parse().map_err(|_| format!("{part:?}: {w:?} is not a weight"))?;
                if !(w.is_finite() && w >= 0.0) {
                    return Err(format!("{part:?}: a weight is a number of 0 or more"));
                }
                if map.insert(l, w).is_some() {
                    return Err(format!("level {l} is weighted twice"));
                }
            }
            map.retain(|_, w| *w > 0.0);
            if map.is_empty() {
                return Err("every weight is 0: no level to draw".into());
            }
            return Ok(Levels { levels: map.keys().copied().collect(), weights: map.into_values().collect() });
        }
        let mut set = std::collections::BTreeSet::new();
        for part in s.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (level(a)?, level(b)?);
                    if a > b {
                        return Err(format!("{part:?}: the range runs backwards"));
                    }
                    set.extend(a..=b);
                }
                None => {
                    set.insert(level(part)?);
                }
            }
        }
        Ok(Levels { levels: set.into_iter().collect(), weights: Vec::new() })
    }

    pub fn only(level: u8) -> Levels {
        Levels { levels: vec![level.min(3)], weights: Vec::new() }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.levels
    }

    /// One level, drawn from `rng`: alike (one `below` draw, so unweighted sets draw exactly as
    /// before weights existed) or in proportion to the weights.
    pub fn draw(&self, rng: &mut Rng) -> u8 {
        if self.weights.is_empty() {
            return self.levels[rng.below(self.levels.len() as u64) as usize];
        }
        let total: f64 = self.weights.iter().sum();
        let mut u = rng.uniform() * total;
        for (l, w) in self.levels.iter().zip(&self.weights) {
            if u < *w {
                return *l;
            }
            u -= w;
        }
        *self.levels.last().expect("parse keeps at least one level")
    }
}

impl std::fmt::Display for Levels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: Vec<String> = if self.weights.is_empty() {
            self.levels.iter().map(u8::to_string).collect()
        } else {
            self.levels.iter().zip(&self.weights).map(|(l, w)| format!("{l}:{w}")).collect()
        };
        f.write_str(&s.join(","))
    }
}

/// How the offline tools present an image: as a validator challenge, its level drawn uniformly
/// from `levels` and its augmentation from a generator keyed by `(seed, file)`.
#[derive(Debug, Clone, clap::Args)]
pub struct Style {
    /// Validator augmentation levels to draw from, one per view (`0-3`, `0,2`), or weighted
    /// (`0:1,1:2,2:3.5,3:3.5`: drawn in proportion, as the subnet's `level_probs`).
    #[arg(long, default_value = "0-3", value_parser = Levels::parse)]
    pub levels: Levels,
    /// Seed of the per-image level and augmentation draws (the same seed, the same challenges).
    #[arg(long, default_value_t = 72)]
    pub seed: u64,
}

impl Style {
    /// `--validator-style` alone means level 0; `--levels` wins over it; neither: images as read.
    pub fn from_flags(validator_style: bool, levels: Option<Levels>, seed: u64) -> Option<Style> {
        match (levels, validator_style) {
            (Some(levels), _) => Some(Style { levels, seed }),
            (None, true) => Some(Style { levels: Levels::only(0), seed }),
            (None, false) => None,
        }
    }

    /// The draws for the file `key` of a `width`×`height` image.
    pub fn params(&self, key: &str, width: u32, height: u32) -> Params {
        let mut rng = Rng::keyed(self.seed, key);
        let level = self.levels.draw(&mut rng);
        Params::sample_level(&mut rng, level, width, height)
    }
}

//! Everything a challenge's augmentation draws ([`Params`]) and the seeded generator that draws
//! it as the reference does, with the constants of the reference's transforms.

/// Side of every challenge image.
pub const SIZE: u32 = 224;
/// PIL's default JPEG quality.
pub const QUALITY: u8 = 75;
/// Rotation range of levels 1–3, in degrees either way.
pub const MAX_ANGLE: f64 = 20.0;
/// Share of the whole image's area a level 1–3 crop covers, least and most.
pub const CROP_SCALE: (f64, f64) = (0.2, 1.0);

/// SplitMix64: small, seedable, good enough for drawing augmentations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for one item (a file) under a run's seed: the item draws the same whatever
    /// else the run holds, and whatever order it comes in.
    pub fn keyed(seed: u64, key: &str) -> Rng {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut r = Rng(seed ^ h.rotate_left(29));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// The reference's DeeperForensics distortions that challenges use (block-wise is never drawn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Distortion {
    /// "CS": chroma scaled in the reference's YCbCr round trip.
    ColorSaturation,
    /// "CC": every value scaled.
    ColorContrast,
    /// "JPEG": down-sampled by an integer factor and up-sampled back (OpenCV bilinear); no JPEG.
    Resample,
    /// "GNC": Gaussian noise on Y, Cb and Cr.
    ColorNoise,
    /// "GB": Gaussian blur, kernel k, σ = k/6.
    Blur,
}

impl Distortion {
    /// All of them, in the order level 3 applies them.
    pub const ALL: [Distortion; 5] = [
        Distortion::ColorSaturation,
        Distortion::ColorContrast,
        Distortion::Resample,
        Distortion::ColorNoise,
        Distortion::Blur,
    ];

    /// The reference's name.
    pub fn code(self) -> &'static str {
        match self {
            Distortion::ColorSaturation => "CS",
            Distortion::ColorContrast => "CC",
            Distortion::Resample => "JPEG",
            Distortion::ColorNoise => "GNC",
            Distortion::Blur => "GB",
        }
    }

    /// The reference's parameter at strength 1 (mildest) to 5; `None` outside that.
    pub fn value(self, strength: u8) -> Option<f64> {
        let table: [f64; 5] = match self {
            Distortion::ColorSaturation => [0.4, 0.3, 0.2, 0.1, 0.0],
            Distortion::ColorContrast => [0.85, 0.725, 0.6, 0.475, 0.35],
            Distortion::Resample => [2.0, 3.0, 4.0, 5.0, 6.0],
            Distortion::ColorNoise => [0.001, 0.002, 0.005, 0.01, 0.05],
            Distortion::Blur => [7.0, 9.0, 13.0, 17.0, 21.0],
        };
        table.get(usize::from(strength).checked_sub(1)?).copied()
    }
}

/// A crop box in the (rotated) image, as torchvision's `(i, j, h, w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

/// Everything a challenge's augmentation draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// 0: centre square only; 1–3: rotation and crop, 2–3: distortions too.
    pub level: u8,
    /// Degrees, counter-clockwise (torchvision's sign). Ignored at level 0.
    pub angle: f64,
    /// The square taken of the rotated image; `None`: the centre square. Ignored at level 0.
    pub crop: Option<Crop>,
    /// The distortions applied, in order, each with its strength (1..=5, the reference's tables).
    pub distortions: Vec<(Distortion, u8)>,
    /// Seed of the colour noise (the reference draws it from numpy's global generator).
    pub noise_seed: u64,
}

impl Params {
    /// Level 0, which has no random choice.
    pub fn level0() -> Params {
        Params { level: 0, angle: 0.0, crop: None, distortions: Vec::new(), noise_seed: 0 }
    }

    /// A level drawn uniformly from 0–3 (the reference's default probabilities), then its draws.
    pub fn sample(rng: &mut Rng, width: u32, height: u32) -> Params {
        let level = rng.below(4) as u8;
        Params::sample_level(rng, level, width, height)
    }

    /// The draws of one level for a `width`×`height` source image.
    pub fn sample_level(rng: &mut Rng, level: u8, width: u32, height: u32) -> Params {
        if level == 0 {
            return Params::level0();
        }
        let angle = -MAX_ANGLE + 2.0 * MAX_ANGLE * rng.uniform();
        let crop = Some(sample_crop(rng, width, height));
        let (kinds, most): (&[Distortion], u64) = match level {
            1 => (&[], 0),
            2 => (&Distortion::ALL[..3], 1),
            _ => (&Distortion::ALL[..], 2),
        };
        let distortions =
            kinds.iter().filter_map(|&d| Some((d, rng.below(most + 1) as u8)).filter(|&(_, s)| s > 0)).collect();
        Params { level: level.min(3), angle, crop, distortions, noise_seed: rng.next_u64() }
    }
}

/// torchvision's `RandomResizedCrop.get_params` with ratio 1: ten tries at a square of a uniform
/// share of the whole area, then the centre square.
pub(super) fn sample_crop(rng: &mut Rng, w: u32, h: u32) -> Crop {
    let area = f64::from(w) * f64::from(h);
    for _ in 0..10 {
        let target = area * (CROP_SCALE.0 + (CROP_SCALE.1 - CROP_SCALE.0) * rng.uniform());
        let side = target.sqrt().round_ties_even() as u32;
        if side > 0 && side <= w && side <= h {
            let top = rng.below(u64::from(h - side) + 1) as u32;
            let left = rng.below(u64::from(w - side) + 1) as u32;
            return Crop { top, left, height: side, width: side };
        }
    }
    let side = w.min(h);
    Crop { top: (h - side) / 2, left: (w - side) / 2, height: side, width: side }
}

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

use image::{Rgb, RgbImage};

use super::jpeg;

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
fn sample_crop(rng: &mut Rng, w: u32, h: u32) -> Crop {
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

/// Triangle-filter taps, antialiased when reducing (PIL's and torch's `antialias=True` rule):
/// for each output index, the first input index and the normalised weights.
fn triangle_taps(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = n_in as f64 / n_out as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    (0..n_out)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(n_in as i64).max(lo as i64) as usize;
            let mut w: Vec<f64> =
                (lo..hi).map(|x| (1.0 - ((x as f64 - center + 0.5) / filterscale).abs()).max(0.0)).collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (lo, w)
        })
        .collect()
}

/// torch's antialiased bilinear taps for a float tensor, computed in its precision and order
/// (single-precision centre and weights, the offset's `+ 0.5` in double), so flat areas land on
/// the same side of each 8-bit step when truncated.
fn torch_taps(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = n_in as f32 / n_out as f32;
    let support = if scale >= 1.0 { scale } else { 1.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..n_out)
        .map(|i| {
            let center = scale * (i as f32 + 0.5);
            let lo = ((f64::from(center - support) + 0.5) as i64).max(0);
            let hi = ((f64::from(center + support) + 0.5) as i64).min(n_in as i64).max(lo);
            let mut w: Vec<f32> = (lo..hi)
                .map(|x| {
                    let t = ((f64::from(x as f32 - center) + 0.5) * f64::from(invscale)) as f32;
                    let t = t.abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f32 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (lo as usize, w)
        })
        .collect()
}

/// `Σ wᵢ·xᵢ` in single precision as torch's compiled loop does it (measured: torch 2.15 CPU):
/// the first product, then the remaining taps four at a time as rounded products added in
/// order, and the last `(n − 1) mod 4` as fused multiply-adds.
fn dot(w: &[f32], x: impl Fn(usize) -> f32) -> f32 {
    let Some(w0) = w.first() else { return 0.0 };
    let plain = (w.len() - 1) / 4 * 4;
    let mut s = w0 * x(0);
    for (i, wt) in w.iter().enumerate().skip(1) {
        s = if i <= plain { s + wt * x(i) } else { x(i).mul_add(*wt, s) };
    }
    s
}

/// Level 0: centre square, then PIL's 8-bit bilinear (22-bit fixed-point weights, rounded,
/// horizontal pass first into 8 bits).
fn level0(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let top = (f64::from(h - side) / 2.0).round_ties_even() as u32;
    let left = (f64::from(w - side) / 2.0).round_ties_even() as u32;
    let fixed = |taps: Vec<(usize, Vec<f64>)>| -> Vec<(usize, Vec<i64>)> {
        let one = f64::from(1u32 << 22);
        taps.into_iter()
            .map(|(lo, w)| {
                (lo, w.iter().map(|&k| if k < 0.0 { (k * one - 0.5) as i64 } else { (k * one + 0.5) as i64 }).collect())
            })
            .collect()
    };
    let taps = fixed(triangle_taps(side as usize, SIZE as usize));
    let clip = |s: i64| (s >> 22).clamp(0, 255) as u8;
    let n = SIZE as usize;
    let mut rows = vec![0u8; side as usize * n * 3];
    for y in 0..side as usize {
        for (x, (lo, ks)) in taps.iter().enumerate() {
            for c in 0..3 {
                let mut s = 1i64 << 21;
                for (k, &wt) in ks.iter().enumerate() {
                    s += i64::from(img.get_pixel(left + (lo + k) as u32, top + y as u32).0[c]) * wt;
                }
                rows[(y * n + x) * 3 + c] = clip(s);
            }
        }
    }
    let mut out = RgbImage::new(SIZE, SIZE);
    for (y, (lo, ks)) in taps.iter().enumerate() {
        for x in 0..n {
            let mut px = [0u8; 3];
            for (c, v) in px.iter_mut().enumerate() {
                let mut s = 1i64 << 21;
                for (k, &wt) in ks.iter().enumerate() {
                    s += i64::from(rows[((lo + k) * n + x) * 3 + c]) * wt;
                }
                *v = clip(s);
            }
            out.put_pixel(x as u32, y as u32, Rgb(px));
        }
    }
    out
}

/// Levels 1–3: the nearest-neighbour rotation (torchvision's tensor `rotate`: pixel centres about
/// the image centre, round half to even, zeros outside), the crop of it, and torch's antialiased
/// bilinear resize in float, truncated to 8 bits as `ToPILImage` (and each distortion) does.
fn rotate_crop_resize(img: &RgbImage, angle: f64, crop: Option<Crop>) -> RgbImage {
    let (w, h) = img.dimensions();
    let c = crop.unwrap_or_else(|| {
        let side = w.min(h);
        Crop { top: (h - side) / 2, left: (w - side) / 2, height: side, width: side }
    });
    if c.width == 0 || c.height == 0 {
        return RgbImage::new(SIZE, SIZE);
    }
    let (cw, ch) = (c.width as usize, c.height as usize);
    let rad = angle.to_radians();
    let (cos, sin) = (rad.cos() as f32, rad.sin() as f32);
    let (hw, hh) = (0.5 * w as f32, 0.5 * h as f32);
    // the sampling grid in torch's normalised form, then back to pixel indices
    let (ax, bx, ay, by) = (cos / hw, -sin / hw, sin / hh, cos / hh);
    let n = SIZE as usize;
    let (xt, yt) = (torch_taps(cw, n), torch_taps(ch, n));
    // one rotated row of the crop at a time, resized across at once
    let mut line = vec![0f32; cw * 3];
    let mut rows = vec![0f32; ch * n * 3];
    for py in 0..ch {
        let gy = (c.top as usize + py) as f32 + 0.5 - hh;
        line.fill(0.0);
        for px in 0..cw {
            let gx = (c.left as usize + px) as f32 + 0.5 - hw;
            let nx = gx * ax + gy * bx;
            let ny = gx * ay + gy * by;
            let sx = (((nx + 1.0) * w as f32 - 1.0) / 2.0).round_ties_even();
            let sy = (((ny + 1.0) * h as f32 - 1.0) / 2.0).round_ties_even();
            if sx >= 0.0 && sy >= 0.0 && sx < w as f32 && sy < h as f32 {
                let p = img.get_pixel(sx as u32, sy as u32).0;
                for k in 0..3 {
                    line[px * 3 + k] = f32::from(p[k]) / 255.0;
                }
            }
        }
        for (x, (lo, ks)) in xt.iter().enumerate() {
            for k in 0..3 {
                rows[(py * n + x) * 3 + k] = dot(ks, |i| line[(lo + i) * 3 + k]);
            }
        }
    }
    let mut out = RgbImage::new(SIZE, SIZE);
    for (y, (lo, ks)) in yt.iter().enumerate() {
        for x in 0..n {
            let mut px = [0u8; 3];
            for (k, v) in px.iter_mut().enumerate() {
                let s = dot(ks, |i| rows[((lo + i) * n + x) * 3 + k]);
                *v = (s * 255.0) as u8;
            }
            out.put_pixel(x as u32, y as u32, Rgb(px));
        }
    }
    out
}

/// OpenCV's float BGR→YCrCb (δ = 0.5 whatever the range), on 0–255 values: (Y, Cb, Cr).
fn to_ycc(p: [u8; 3]) -> (f32, f32, f32) {
    let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
    let y = b * 0.114 + g * 0.587 + r * 0.299;
    (y, (b - y) * 0.564 + 0.5, (r - y) * 0.713 + 0.5)
}

/// OpenCV's float YCrCb→BGR: (R, G, B).
fn from_ycc(y: f32, cb: f32, cr: f32) -> [f32; 3] {
    let b = y + (cb - 0.5) * 1.773;
    let g = y + (cb - 0.5) * -0.344 + (cr - 0.5) * -0.714;
    let r = y + (cr - 0.5) * 1.403;
    [r, g, b]
}

/// The reference's `bgr2ycbcr` scaling (studio swing, over 255) and its inverse.
fn studio(y: f32, cb: f32, cr: f32) -> (f32, f32, f32) {
    ((y * 219.0 + 16.0) / 255.0, (cb * 224.0 + 16.0) / 255.0, (cr * 224.0 + 16.0) / 255.0)
}

fn unstudio(y: f32, cb: f32, cr: f32) -> (f32, f32, f32) {
    ((y * 255.0 - 16.0) / 219.0, (cb * 255.0 - 16.0) / 224.0, (cr * 255.0 - 16.0) / 224.0)
}

/// One distortion on the 8-bit image (`v` is the reference's parameter for it).
fn distort(img: &mut RgbImage, d: Distortion, v: f64, noise: &mut Rng) {
    match d {
        Distortion::ColorSaturation => {
            let p = v as f32;
            for px in img.pixels_mut() {
                let (y, cb, cr) = to_ycc(px.0);
                let (y, cb, cr) = studio(y, cb, cr);
                let (cb, cr) = (0.5 + (cb - 0.5) * p, 0.5 + (cr - 0.5) * p);
                let (y, cb, cr) = unstudio(y, cb, cr);
                px.0 = from_ycc(y, cb, cr).map(|c| c as u8);
            }
        }
        Distortion::ColorContrast => {
            let p = v as f32;
            for px in img.pixels_mut() {
                px.0 = px.0.map(|c| (f32::from(c) * p) as u8);
            }
        }
        Distortion::Resample => {
            let f = v as u32;
            let (w, h) = img.dimensions();
            if w / f > 0 && h / f > 0 {
                let small = cv_resize(img, w / f, h / f);
                *img = cv_resize(&small, w, h);
            }
        }
        Distortion::ColorNoise => {
            let sd = v.sqrt();
            for px in img.pixels_mut() {
                let (y, cb, cr) = to_ycc(px.0);
                let (y, cb, cr) = studio(y, cb, cr);
                let mut n = |c: f32| ((f64::from(c / 255.0) + sd * noise.normal()) * 255.0) as f32;
                let (y, cb, cr) = (n(y), n(cb), n(cr));
                let (y, cb, cr) = unstudio(y, cb, cr);
                px.0 = from_ycc(y, cb, cr).map(|c| c.clamp(0.0, 255.0) as u8);
            }
        }
        Distortion::Blur => *img = gaussian_blur(img, v as usize),
    }
}

/// OpenCV's `resize` with `INTER_LINEAR` on 8 bits: half-pixel centres, 11-bit weights, edges
/// clamped, its rounding; an exact halving is its 2×2 area average instead.
fn cv_resize(src: &RgbImage, ow: u32, oh: u32) -> RgbImage {
    let (w, h) = src.dimensions();
    if w == 2 * ow && h == 2 * oh {
        return RgbImage::from_fn(ow, oh, |x, y| {
            let s = |dx, dy| src.get_pixel(2 * x + dx, 2 * y + dy).0;
            let (a, b, c, d) = (s(0, 0), s(1, 0), s(0, 1), s(1, 1));
            Rgb(std::array::from_fn(|k| {
                ((u32::from(a[k]) + u32::from(b[k]) + u32::from(c[k]) + u32::from(d[k]) + 2) >> 2) as u8
            }))
        });
    }
    // (first index, second index, weights ×2048); x has its edge weights clamped, y only its indices
    let taps = |n_in: u32, n_out: u32, clamp_weight: bool| -> Vec<(u32, u32, i32, i32)> {
        let scale = 1.0 / (f64::from(n_out) / f64::from(n_in));
        (0..n_out)
            .map(|d| {
                let f = ((f64::from(d) + 0.5) * scale - 0.5) as f32;
                let mut s = f.floor() as i64;
                let mut f = f - s as f32;
                if clamp_weight && s < 0 {
                    (s, f) = (0, 0.0);
                }
                if clamp_weight && s >= i64::from(n_in) - 1 {
                    (s, f) = (i64::from(n_in) - 1, 0.0);
                }
                let at = |i: i64| i.clamp(0, i64::from(n_in) - 1) as u32;
                let wt = |x: f32| (x * 2048.0).round_ties_even() as i32;
                (at(s), at(s + 1), wt(1.0 - f), wt(f))
            })
            .collect()
    };
    let (xt, yt) = (taps(w, ow, true), taps(h, oh, false));
    let mut rows = vec![0i32; (h * ow * 3) as usize];
    for y in 0..h {
        for (x, &(x0, x1, a0, a1)) in xt.iter().enumerate() {
            let (p, q) = (src.get_pixel(x0, y).0, src.get_pixel(x1, y).0);
            for k in 0..3 {
                rows[(y as usize * ow as usize + x) * 3 + k] = i32::from(p[k]) * a0 + i32::from(q[k]) * a1;
            }
        }
    }
    let mut out = RgbImage::new(ow, oh);
    for (y, &(y0, y1, b0, b1)) in yt.iter().enumerate() {
        for x in 0..ow as usize {
            let at = |r: u32, k: usize| rows[(r as usize * ow as usize + x) * 3 + k];
            let px = std::array::from_fn(|k| {
                let v = (((at(y0, k) >> 4) * b0) >> 16) + (((at(y1, k) >> 4) * b1) >> 16);
                ((v + 2) >> 2).clamp(0, 255) as u8
            });
            out.put_pixel(x as u32, y as u32, Rgb(px));
        }
    }
    out
}

/// OpenCV's 8-bit Gaussian kernel: exact weights, then 8 fraction bits by error diffusion from
/// the tails inwards, the centre taking what is left so the sum is exactly 1.
fn gaussian_kernel_q8(k: usize) -> Vec<i32> {
    let sigma = k as f64 / 6.0;
    let c = (k / 2) as f64;
    let g: Vec<f64> = (0..k).map(|i| (-(i as f64 - c).powi(2) / (2.0 * sigma * sigma)).exp()).collect();
    let total: f64 = g.iter().sum();
    let mut q = vec![0i32; k];
    let mut err = 0.0;
    for i in 0..k / 2 {
        let v = g[i] / total * 256.0 + err;
        let r = v.round_ties_even();
        err = v - r;
        q[i] = r as i32;
        q[k - 1 - i] = r as i32;
    }
    q[k / 2] = 256 - 2 * q[..k / 2].iter().sum::<i32>();
    q
}

/// `cv2.GaussianBlur(img, (k, k), k/6)` on 8 bits: separable, reflect-101 borders, fixed point.
fn gaussian_blur(img: &RgbImage, k: usize) -> RgbImage {
    let kernel = gaussian_kernel_q8(k);
    let (w, h) = (img.width() as i64, img.height() as i64);
    let reflect = |mut i: i64, n: i64| -> u32 {
        if n == 1 {
            return 0;
        }
        while i < 0 || i >= n {
            i = if i < 0 { -i } else { 2 * (n - 1) - i };
        }
        i as u32
    };
    let r = (k / 2) as i64;
    let mut rows = vec![0i32; (w * h * 3) as usize];
    for y in 0..h {
        for x in 0..w {
            for (t, &kt) in kernel.iter().enumerate() {
                let p = img.get_pixel(reflect(x + t as i64 - r, w), y as u32).0;
                for c in 0..3 {
                    rows[((y * w + x) * 3) as usize + c] += kt * i32::from(p[c]);
                }
            }
        }
    }
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        Rgb(std::array::from_fn(|c| {
            let s: i32 = kernel
                .iter()
                .enumerate()
                .map(|(t, &kt)| {
                    kt * rows
                        [((i64::from(reflect(i64::from(y) + t as i64 - r, h)) * w + i64::from(x)) * 3) as usize + c]
                })
                .sum();
            ((s + (1 << 15)) >> 16).clamp(0, 255) as u8
        }))
    })
}

/// A set of augmentation levels, as `--levels` takes it: `0-3`, `0,2`, `1`, `0-1,3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels(Vec<u8>);

impl Levels {
    pub fn parse(s: &str) -> Result<Levels, String> {
        let mut set = std::collections::BTreeSet::new();
        let level = |t: &str| match t.trim().parse::<u8>() {
            Ok(l) if l <= 3 => Ok(l),
            _ => Err(format!("{t:?} is not a level (0, 1, 2 or 3)")),
        };
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
        Ok(Levels(set.into_iter().collect()))
    }

    pub fn only(level: u8) -> Levels {
        Levels(vec![level.min(3)])
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for Levels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: Vec<String> = self.0.iter().map(u8::to_string).collect();
        f.write_str(&s.join(","))
    }
}

/// How the offline tools present an image: as a validator challenge, its level drawn uniformly
/// from `levels` and its augmentation from a generator keyed by `(seed, file)`.
#[derive(Debug, Clone, clap::Args)]
pub struct Style {
    /// Validator augmentation levels to draw from, one per view (`0-3`, `0,2`).
    #[arg(long, default_value = "0-3", value_parser = Levels::parse)]
    pub levels: Levels,
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
        let levels = self.levels.as_slice();
        let level = levels[rng.below(levels.len() as u64) as usize];
        Params::sample_level(&mut rng, level, width, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A street-like test card: sky gradient, grey road, coloured stripes and fine texture.
    fn scene(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            if fy < 0.4 {
                Rgb([(90.0 + 80.0 * fy) as u8, (140.0 + 60.0 * fx) as u8, 230])
            } else if (x / 12) % 5 == 0 {
                Rgb([240, 120, 20])
            } else {
                let t = ((x * 7 + y * 13) % 17) as u8 * 6;
                Rgb([90 + t, 95 + t, 100 + t])
            }
        })
    }

    fn mean_std(img: &RgbImage) -> ([f64; 3], [f64; 3]) {
        let n = f64::from(img.width() * img.height());
        let mut m = [0f64; 3];
        for p in img.pixels() {
            for (mk, c) in m.iter_mut().zip(p.0) {
                *mk += f64::from(c) / n;
            }
        }
        let mut s = [0f64; 3];
        for p in img.pixels() {
            for k in 0..3 {
                s[k] += (f64::from(p.0[k]) - m[k]).powi(2) / n;
            }
        }
        (m, s.map(f64::sqrt))
    }

    /// Mean absolute difference between horizontal neighbours: fine detail.
    fn detail(img: &RgbImage) -> f64 {
        let mut s = 0.0;
        for y in 0..img.height() {
            for x in 1..img.width() {
                let (a, b) = (img.get_pixel(x - 1, y).0, img.get_pixel(x, y).0);
                s += (0..3).map(|k| (f64::from(a[k]) - f64::from(b[k])).abs()).sum::<f64>();
            }
        }
        s / f64::from(3 * img.height() * (img.width() - 1))
    }

    /// Mean distance of each pixel from its own grey: how colourful.
    fn chroma(img: &RgbImage) -> f64 {
        img.pixels()
            .map(|p| {
                let m = p.0.iter().map(|&c| f64::from(c)).sum::<f64>() / 3.0;
                p.0.iter().map(|&c| (f64::from(c) - m).abs()).sum::<f64>()
            })
            .sum::<f64>()
            / f64::from(img.width() * img.height())
    }

    fn black_share(img: &RgbImage) -> f64 {
        img.pixels().filter(|p| p.0.iter().all(|&c| c == 0)).count() as f64 / f64::from(img.width() * img.height())
    }

    fn with(level: u8, angle: f64, crop: Option<Crop>, distortions: &[(Distortion, u8)]) -> Params {
        Params { level, angle, crop, distortions: distortions.to_vec(), noise_seed: 7 }
    }

    #[test]
    fn sampling_is_deterministic_and_covers_the_reference_ranges() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..200).map(|_| Params::sample(&mut rng, 1280, 720)).collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        let mut rng = Rng::new(11);
        let all: Vec<Params> = (0..4000).map(|_| Params::sample(&mut rng, 1280, 720)).collect();
        let mut per_level = [0usize; 4];
        for p in &all {
            per_level[p.level as usize] += 1;
            if p.level == 0 {
                assert_eq!(p, &Params::level0());
                continue;
            }
            assert!(p.angle.abs() <= MAX_ANGLE);
            let c = p.crop.unwrap();
            assert_eq!(c.width, c.height, "square crops");
            assert!(c.left + c.width <= 1280 && c.top + c.height <= 720, "{c:?} is outside the image");
            let share = f64::from(c.width * c.height) / (1280.0 * 720.0);
            assert!((0.199..=720.0 / 1280.0 + 1e-3).contains(&share), "share {share}");
            let most = match p.level {
                1 => 0,
                2 => 1,
                _ => 2,
            };
            for &(d, s) in &p.distortions {
                assert!((1..=most).contains(&s), "level {} drew {d:?} at {s}", p.level);
                assert!(p.level == 3 || Distortion::ALL[..3].contains(&d));
            }
            let order: Vec<Distortion> = p.distortions.iter().map(|&(d, _)| d).collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(order, sorted, "the reference's order");
        }
        for n in per_level {
            assert!((900..1100).contains(&n), "levels {per_level:?}");
        }
        // each distortion of level 3 at strength 0/1/2 about a third of the time
        let l3: Vec<&Params> = all.iter().filter(|p| p.level == 3).collect();
        for d in Distortion::ALL {
            for s in 1..=2u8 {
                let k = l3.iter().filter(|p| p.distortions.contains(&(d, s))).count() as f64 / l3.len() as f64;
                assert!((0.28..0.39).contains(&k), "{d:?} at {s}: {k}");
            }
        }
        // the angle spreads over the whole range, both ways
        let angles: Vec<f64> = all.iter().filter(|p| p.level > 0).map(|p| p.angle).collect();
        assert!(angles.iter().any(|&a| a < -18.0) && angles.iter().any(|&a| a > 18.0));
    }

    #[test]
    fn keyed_draws_depend_on_seed_and_file_only() {
        let style = Style { levels: Levels::parse("0-3").unwrap(), seed: 72 };
        let a = style.params("a.jpg", 640, 480);
        assert_eq!(a, style.params("a.jpg", 640, 480));
        let others: Vec<Params> = (0..20).map(|i| style.params(&format!("f{i}.jpg"), 640, 480)).collect();
        assert!(others.iter().any(|p| p != &a));
        let zero = Style { levels: Levels::only(0), seed: 1 };
        assert!((0..20).all(|i| zero.params(&format!("f{i}"), 640, 480) == Params::level0()));
        let two = Style { levels: Levels::parse("1,3").unwrap(), seed: 3 };
        let seen: std::collections::BTreeSet<u8> =
            (0..50).map(|i| two.params(&format!("f{i}"), 64, 64).level).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn levels_parse() {
        assert_eq!(Levels::parse("0-3").unwrap().as_slice(), &[0, 1, 2, 3]);
        assert_eq!(Levels::parse("2,0").unwrap().as_slice(), &[0, 2]);
        assert_eq!(Levels::parse("0-1,3").unwrap().to_string(), "0,1,3");
        for bad in ["4", "3-1", "", "a", "0-"] {
            assert!(Levels::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Style::from_flags(false, None, 1).is_none());
        assert_eq!(Style::from_flags(true, None, 1).unwrap().levels, Levels::only(0));
        assert_eq!(Style::from_flags(true, Levels::parse("2").ok(), 1).unwrap().levels, Levels::only(2));
    }

    #[test]
    fn level0_is_the_centre_square_resized_bilinear() {
        // a wide image whose centre square is the scene and whose sides are pure red
        let inner = scene(300, 300);
        let img = RgbImage::from_fn(448, 300, |x, y| {
            if (74..374).contains(&x) {
                *inner.get_pixel(x - 74, y)
            } else {
                Rgb([255, 0, 0])
            }
        });
        let out = apply(&img, &Params::level0());
        assert_eq!(out.dimensions(), (SIZE, SIZE));
        let want = image::imageops::resize(&inner, SIZE, SIZE, image::imageops::FilterType::Triangle);
        let worst = out.as_raw().iter().zip(want.as_raw()).map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs()).max();
        assert!(worst.unwrap() <= 2, "differs from a triangle resize by {worst:?}");
        // an odd margin is split as Python rounds: (449 − 300) / 2 = 74.5 → 74
        let odd =
            RgbImage::from_fn(449, 300, |x, y| if x == 74 { Rgb([0, 255, 0]) } else { *img.get_pixel(x.min(447), y) });
        assert!(apply(&odd, &Params::level0()).get_pixel(0, 100).0[1] > 40, "column 74 is the first one kept");
        // a square image of the right size comes back as it was
        let same = scene(224, 224);
        assert_eq!(apply(&same, &Params::level0()), same);
    }

    #[test]
    fn rotation_keeps_the_size_with_black_corners() {
        let img = RgbImage::from_pixel(300, 300, Rgb([200, 180, 160]));
        let full = Some(Crop { top: 0, left: 0, height: 300, width: 300 });
        let straight = apply(&img, &with(1, 0.0, full, &[]));
        assert_eq!(black_share(&straight), 0.0);
        for angle in [-20.0, -7.5, 12.0, 20.0] {
            let out = apply(&img, &with(1, angle, full, &[]));
            assert_eq!(out.dimensions(), (SIZE, SIZE));
            for (x, y) in [(0, 0), (SIZE - 1, 0), (0, SIZE - 1), (SIZE - 1, SIZE - 1)] {
                assert_eq!(out.get_pixel(x, y).0, [0, 0, 0], "corner ({x},{y}) at {angle}°");
            }
            let centre = out.get_pixel(SIZE / 2, SIZE / 2).0;
            assert!(centre[0] >= 199 && centre[0] <= 200, "{centre:?}");
            let share = black_share(&out);
            assert!(share > 0.005 && share < 0.25, "{angle}°: black share {share}");
        }
        // bigger angles leave more black
        assert!(
            black_share(&apply(&img, &with(1, 20.0, full, &[]))) > black_share(&apply(&img, &with(1, 5.0, full, &[])))
        );
        // counter-clockwise for a positive angle: a mark right of centre moves up
        let mut marked = RgbImage::from_pixel(301, 301, Rgb([255, 255, 255]));
        for y in 145..156 {
            for x in 240..251 {
                marked.put_pixel(x, y, Rgb([0, 0, 255]));
            }
        }
        let all = Some(Crop { top: 0, left: 0, height: 301, width: 301 });
        let out = apply(&marked, &with(1, 20.0, all, &[]));
        let blue: Vec<(u32, u32)> =
            out.enumerate_pixels().filter(|(_, _, p)| p.0[2] > 200 && p.0[0] < 60).map(|(x, y, _)| (x, y)).collect();
        let my = blue.iter().map(|&(_, y)| f64::from(y)).sum::<f64>() / blue.len() as f64;
        assert!(my < 100.0, "mark moved to mean row {my}");
    }

    #[test]
    fn crop_takes_the_box_of_the_image() {
        // four quadrants of distinct colours: a crop of the top-right one is all that colour
        let img = RgbImage::from_fn(640, 480, |x, y| match (x < 320, y < 240) {
            (true, true) => Rgb([255, 0, 0]),
            (false, true) => Rgb([0, 255, 0]),
            (true, false) => Rgb([0, 0, 255]),
            (false, false) => Rgb([255, 255, 0]),
        });
        let out = apply(&img, &with(1, 0.0, Some(Crop { top: 10, left: 400, height: 200, width: 200 }), &[]));
        assert!(out.pixels().all(|p| p.0[1] >= 254 && p.0[0] == 0 && p.0[2] == 0));
        // sampled crops always lie inside the image, for any shape
        let mut rng = Rng::new(3);
        for (w, h) in [(1280, 720), (720, 1280), (250, 250), (1, 500), (37, 38)] {
            for _ in 0..200 {
                let c = sample_crop(&mut rng, w, h);
                assert!(c.width > 0 && c.left + c.width <= w && c.top + c.height <= h, "{c:?} in {w}×{h}");
            }
        }
        // a degenerate source still gives a challenge
        assert_eq!(apply(&RgbImage::new(0, 0), &Params::level0()).dimensions(), (SIZE, SIZE));
    }

    #[test]
    fn each_distortion_moves_the_statistics_its_way() {
        // a crop of the challenge's own size, so the test card's texture reaches the distortions
        let img = scene(640, 480);
        let full = Some(Crop { top: 100, left: 100, height: SIZE, width: SIZE });
        let base = apply(&img, &with(2, 0.0, full, &[]));
        let (m0, s0) = mean_std(&base);
        let (c0, d0) = (chroma(&base), detail(&base));
        for s in 1..=2u8 {
            let cs = apply(&img, &with(2, 0.0, full, &[(Distortion::ColorSaturation, s)]));
            let want = Distortion::ColorSaturation.value(s).unwrap();
            let got = chroma(&cs) / c0;
            assert!((got - want).abs() < 0.05, "CS {s}: chroma ×{got}, want ×{want}");

            let cc = apply(&img, &with(2, 0.0, full, &[(Distortion::ColorContrast, s)]));
            let want = Distortion::ColorContrast.value(s).unwrap();
            let (m, sd) = mean_std(&cc);
            for k in 0..3 {
                assert!((m[k] / m0[k] - want).abs() < 0.01, "CC {s}: mean ×{}", m[k] / m0[k]);
                assert!((sd[k] / s0[k] - want).abs() < 0.02, "CC {s}: std ×{}", sd[k] / s0[k]);
            }

            let rs = apply(&img, &with(2, 0.0, full, &[(Distortion::Resample, s)]));
            assert!(detail(&rs) < 0.8 * d0, "JPEG {s}: detail {} vs {d0}", detail(&rs));
            assert!((mean_std(&rs).0[0] - m0[0]).abs() < 1.0, "resampling keeps the mean");

            let gn = apply(&img, &with(3, 0.0, full, &[(Distortion::ColorNoise, s)]));
            let (m, sd) = mean_std(&gn);
            assert!(detail(&gn) > d0 + 5.0, "GNC {s}: detail {} vs {d0}", detail(&gn));
            for k in 0..3 {
                assert!(sd[k] > s0[k], "GNC {s}: std {} vs {}", sd[k], s0[k]);
                assert!((m[k] - m0[k]).abs() < 6.0, "GNC {s}: mean {} vs {}", m[k], m0[k]);
            }

            let gb = apply(&img, &with(3, 0.0, full, &[(Distortion::Blur, s)]));
            assert!(detail(&gb) < 0.7 * d0, "GB {s}: detail {} vs {d0}", detail(&gb));
            assert!((mean_std(&gb).0[1] - m0[1]).abs() < 1.0, "blurring keeps the mean");
        }
        // the stronger setting goes further
        let at = |d, s| apply(&img, &with(3, 0.0, full, &[(d, s)]));
        assert!(detail(&at(Distortion::Blur, 2)) < detail(&at(Distortion::Blur, 1)));
        // (÷3 without antialiasing aliases the texture, so "further" is further from the original)
        let off = |o: &RgbImage| {
            o.as_raw().iter().zip(base.as_raw()).map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs()).sum::<f64>()
        };
        assert!(off(&at(Distortion::Resample, 2)) > off(&at(Distortion::Resample, 1)));
        assert!(detail(&at(Distortion::ColorNoise, 2)) > detail(&at(Distortion::ColorNoise, 1)));
        // the noise is replayable from its seed
        assert_eq!(at(Distortion::ColorNoise, 1), at(Distortion::ColorNoise, 1));
    }

    #[test]
    fn opencv_pieces_match_their_measured_behaviour() {
        // kernels as cv2.GaussianBlur uses for 8 bits (read back from OpenCV 5.0 by experiment)
        assert_eq!(gaussian_kernel_q8(7), vec![3, 20, 61, 88, 61, 20, 3]);
        assert_eq!(gaussian_kernel_q8(9), vec![2, 9, 28, 55, 68, 55, 28, 9, 2]);
        // a flat grey loses one step of red and blue in the chroma round trip, as numpy truncates
        let mut grey = RgbImage::from_pixel(8, 8, Rgb([128, 128, 128]));
        distort(&mut grey, Distortion::ColorSaturation, 0.4, &mut Rng::new(0));
        assert_eq!(grey.get_pixel(3, 3).0, [127, 128, 127]);
        // halving is a rounded 2×2 mean; flat areas survive the round trip
        let img = RgbImage::from_fn(4, 2, |x, _| Rgb([if x % 2 == 0 { 10 } else { 13 }, 0, 255]));
        assert_eq!(cv_resize(&img, 2, 1).get_pixel(0, 0).0, [12, 0, 255]);
        let flat = RgbImage::from_pixel(224, 224, Rgb([77, 88, 99]));
        let mut f = flat.clone();
        distort(&mut f, Distortion::Resample, 3.0, &mut Rng::new(0));
        assert_eq!(f, flat);
        distort(&mut f, Distortion::Blur, 9.0, &mut Rng::new(0));
        assert_eq!(f, flat);
    }

    /// The statistics `scripts/tune/augment_reference.py` records, of a decoded challenge.
    #[derive(Debug, Clone)]
    struct Stats {
        mean: [f64; 3],
        std: [f64; 3],
        mad_level0: f64,
        near_black: f64,
        grid_luma: Vec<f64>,
    }

    fn stats(img: &RgbImage, level0: &RgbImage, near_black_max: u8, grid: u32) -> Stats {
        let (mean, std) = mean_std(img);
        let n = img.as_raw().len() as f64;
        let mad_level0 =
            img.as_raw().iter().zip(level0.as_raw()).map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs()).sum::<f64>()
                / n;
        let near_black = img.pixels().filter(|p| p.0.iter().all(|&c| c <= near_black_max)).count() as f64 / (n / 3.0);
        let (w, h) = img.dimensions();
        let mut grid_luma = Vec::new();
        for r in 0..grid {
            for c in 0..grid {
                let (mut s, mut k) = (0f64, 0f64);
                for y in h * r / grid..h * (r + 1) / grid {
                    for x in w * c / grid..w * (c + 1) / grid {
                        let p = img.get_pixel(x, y).0;
                        s += 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
                        k += 1.0;
                    }
                }
                grid_luma.push(s / k);
            }
        }
        Stats { mean, std, mad_level0, near_black, grid_luma }
    }

    fn recorded(v: &serde_json::Value) -> Stats {
        let f = |v: &serde_json::Value| v.as_f64().expect("a number");
        let three = |v: &serde_json::Value| [f(&v[0]), f(&v[1]), f(&v[2])];
        Stats {
            mean: three(&v["mean"]),
            std: three(&v["std"]),
            mad_level0: f(&v["mad_level0"]),
            near_black: f(&v["near_black"]),
            grid_luma: v["grid_luma"].as_array().expect("grid").iter().map(f).collect(),
        }
    }

    /// The reference's draws of one recorded case, as our params.
    fn replayed(case: &serde_json::Value) -> Params {
        let level = case["level"].as_u64().expect("level") as u8;
        if level == 0 {
            return Params::level0();
        }
        let crop = &case["crop"];
        let at = |i: usize| crop[i].as_u64().expect("crop") as u32;
        let drawn = case["distortions"].as_object();
        let distortions = Distortion::ALL
            .into_iter()
            .filter_map(|d| {
                let s = drawn?.get(d.code())?.as_u64()? as u8;
                (s > 0).then_some((d, s))
            })
            .collect();
        Params {
            level,
            angle: case["angle"].as_f64().expect("angle"),
            crop: Some(Crop { top: at(0), left: at(1), height: at(2), width: at(3) }),
            distortions,
            noise_seed: case["seed"].as_u64().expect("seed"),
        }
    }

    /// How far the port may be from the reference, per statistic, and why.
    ///
    /// Not bit equality: the source JPEGs are decoded by zune-jpeg here and libjpeg-turbo there
    /// (±1–2 per pixel), the challenge is encoded by `jpeg.rs` (float DCT) here and libjpeg-turbo
    /// (integer DCT) there and decoded by different decoders again, float resampling rounds
    /// differently, and each of those shifts can flip a truncation (`astype(uint8)`, `byte()`)
    /// by one step. All of these are zero-mean or nearly so, so means agree far better than
    /// single pixels; noise (GNC) has a different realisation, so only its statistics can agree.
    /// The near-black share also has a relative part: in dark images many pixels sit at the
    /// threshold and a one-step shift moves them across it. A geometry error (a crop off by a
    /// few pixels, a rotation the wrong way, a missed flip) moves `mad_level0`, the near-black
    /// share and the grid by far more than these. Each entry: (statistic, absolute, relative to
    /// the reference's value).
    const TOLERANCE: [(&str, f64, f64); 5] = [
        ("mean", 0.75, 0.0),
        ("std", 0.75, 0.0),
        ("mad_level0", 0.5, 0.0),
        ("near_black", 0.004, 0.1),
        ("grid_luma", 1.0, 0.0),
    ];

    #[test]
    fn agrees_with_the_reference_fixture() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf();
        let shared = std::env::var_os("CASCADE_SHARED").map(std::path::PathBuf::from).unwrap_or(repo.join("../shared"));
        let data = shared.join("data");
        if !data.is_dir() {
            eprintln!("skipped: no shared data at {} (set CASCADE_SHARED)", data.display());
            return;
        }
        let text = std::fs::read_to_string(repo.join("tests/fixtures/augment_reference.json")).expect("fixture");
        let fixture: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
        let near_black_max = fixture["near_black_max"].as_u64().expect("near_black_max") as u8;
        let grid = fixture["grid"].as_u64().expect("grid") as u32;
        let decode =
            |bytes: &[u8]| image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).unwrap().to_rgb8();
        // worst and total |reference − port| per level and statistic
        let mut worst = [[0f64; 5]; 4];
        let mut total = [[0f64; 5]; 4];
        let mut count = [0usize; 4];
        let mut failures = Vec::new();
        for entry in fixture["images"].as_array().expect("images") {
            let name = entry["image"].as_str().expect("image");
            let img = image::open(data.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")).to_rgb8();
            let level0 = decode(&challenge_jpeg(&img, &Params::level0()));
            for case in entry["levels"].as_array().expect("levels") {
                let p = replayed(case);
                let ours = stats(&decode(&challenge_jpeg(&img, &p)), &level0, near_black_max, grid);
                let theirs = recorded(&case["stats"]);
                let reference = [0.0, 0.0, 0.0, theirs.near_black, 0.0];
                let gaps = [
                    (0..3).map(|k| (ours.mean[k] - theirs.mean[k]).abs()).fold(0.0, f64::max),
                    (0..3).map(|k| (ours.std[k] - theirs.std[k]).abs()).fold(0.0, f64::max),
                    (ours.mad_level0 - theirs.mad_level0).abs(),
                    (ours.near_black - theirs.near_black).abs(),
                    ours.grid_luma.iter().zip(&theirs.grid_luma).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max),
                ];
                let l = usize::from(p.level);
                count[l] += 1;
                for (i, g) in gaps.iter().enumerate() {
                    worst[l][i] = worst[l][i].max(*g);
                    total[l][i] += g;
                    let (stat, abs, rel) = TOLERANCE[i];
                    let limit = abs + rel * reference[i];
                    if *g > limit {
                        failures.push(format!(
                            "{name} level {l} {:?}: {stat} off by {g:.4} (tolerance {limit:.4}); ours {ours:?}, reference {theirs:?}",
                            p.distortions
                        ));
                    }
                }
            }
        }
        println!("level  statistic     worst |Δ|   mean |Δ|   tolerance");
        for l in 0..4 {
            for (i, (name, abs, rel)) in TOLERANCE.iter().enumerate() {
                let mean = total[l][i] / count[l].max(1) as f64;
                let tol = if *rel > 0.0 { format!("{abs} + {rel}·ref") } else { abs.to_string() };
                println!("{l:>5}  {name:<12} {:>10.4} {:>10.4}   {tol}", worst[l][i], mean);
            }
        }
        assert!(count.iter().all(|&c| c > 0), "every level is in the fixture: {count:?}");
        assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
    }

    #[test]
    fn challenge_jpeg_is_a_224_jpeg() {
        let img = scene(500, 375);
        let mut rng = Rng::new(9);
        for _ in 0..6 {
            let p = Params::sample(&mut rng, 500, 375);
            let bytes = challenge_jpeg(&img, &p);
            let back = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).unwrap();
            assert_eq!((back.width(), back.height()), (SIZE, SIZE));
        }
    }
}

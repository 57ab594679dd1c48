//! The DeeperForensics distortions of levels 2 and 3, on 8 bits as the reference applies them
//! with OpenCV: chroma and value scaling in YCrCb, down/up-sampling, colour noise, blur.

use image::{Rgb, RgbImage};

use super::params::{Distortion, Rng};

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
pub(super) fn distort(img: &mut RgbImage, d: Distortion, v: f64, noise: &mut Rng) {
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
pub(super) fn cv_resize(src: &RgbImage, ow: u32, oh: u32) -> RgbImage {
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
pub(super) fn gaussian_kernel_q8(k: usize) -> Vec<i32> {
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

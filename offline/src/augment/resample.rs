//! The geometry of a challenge, in the reference's arithmetic: PIL's 8-bit bilinear for level
//! 0, and for levels 1–3 the nearest-neighbour rotation, the crop and torch's antialiased
//! bilinear resize in float.

use image::{Rgb, RgbImage};

use super::params::{Crop, SIZE};

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
pub(super) fn level0(img: &RgbImage) -> RgbImage {
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
pub(super) fn rotate_crop_resize(img: &RgbImage, angle: f64, crop: Option<Crop>) -> RgbImage {
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

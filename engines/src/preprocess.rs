//! CPU pre-processing: resize (stretch, letterbox or centre-crop), colour order and
//! normalisation, written straight into one image's slot of a batched NCHW buffer.

use image::imageops::{self, FilterType};
use image::RgbImage;

use crate::spec::{ColorOrder, InputSpec, ResizeMode};

/// How model-input pixels map back to the original image: `orig = input / scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prepared {
    pub scale_x: f32,
    pub scale_y: f32,
    pub offset_x: f32,
    pub offset_y: f32,
}

impl Prepared {
    pub fn to_original(&self, x: f32, y: f32) -> (f32, f32) {
        (x / self.scale_x + self.offset_x, y / self.scale_y + self.offset_y)
    }
}

/// Fills `out` (length 3 × height × width) with the model input for `img`.
pub fn prepare(img: &RgbImage, spec: &InputSpec, out: &mut [f32]) -> Prepared {
    let (w, h) = (spec.width, spec.height);
    debug_assert_eq!(out.len(), 3 * (w * h) as usize);
    let (iw, ih) = (img.width().max(1), img.height().max(1));
    match spec.resize {
        ResizeMode::Stretch => {
            let r = resized(img, w, h);
            write_chw(&r, spec, out, 0, 0);
            Prepared { scale_x: w as f32 / iw as f32, scale_y: h as f32 / ih as f32, offset_x: 0.0, offset_y: 0.0 }
        }
        ResizeMode::Letterbox => {
            let s = (w as f32 / iw as f32).min(h as f32 / ih as f32);
            let nw = ((iw as f32 * s).round() as u32).clamp(1, w);
            let nh = ((ih as f32 * s).round() as u32).clamp(1, h);
            for c in 0..3 {
                let v = (spec.pad * spec.scale - spec.mean[c]) / spec.std[c];
                out[c * (w * h) as usize..(c + 1) * (w * h) as usize].fill(v);
            }
            let r = resized(img, nw, nh);
            write_chw(&r, spec, out, 0, 0);
            Prepared { scale_x: s, scale_y: s, offset_x: 0.0, offset_y: 0.0 }
        }
        ResizeMode::CenterCrop => {
            let short = spec.resize_short.unwrap_or(w.min(h)).max(w.min(h));
            let s = short as f32 / iw.min(ih) as f32;
            let nw = ((iw as f32 * s).round() as u32).max(w);
            let nh = ((ih as f32 * s).round() as u32).max(h);
            let r = resized(img, nw, nh);
            let (x0, y0) = ((nw - w) / 2, (nh - h) / 2);
            write_chw(&r, spec, out, x0, y0);
            Prepared { scale_x: s, scale_y: s, offset_x: x0 as f32 / s, offset_y: y0 as f32 / s }
        }
    }
}

fn resized(img: &RgbImage, w: u32, h: u32) -> std::borrow::Cow<'_, RgbImage> {
    if img.width() == w && img.height() == h {
        std::borrow::Cow::Borrowed(img)
    } else {
        std::borrow::Cow::Owned(resize(img, w, h))
    }
}

/// Bilinear (convolution) resize with SIMD; the `image` crate's generic resize costs ~10× more
/// and showed up as the largest item of a request's host time.
pub fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    use fast_image_resize::{FilterType as F, ResizeAlg, ResizeOptions, Resizer};
    let mut dst = RgbImage::new(w.max(1), h.max(1));
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(F::Bilinear));
    match Resizer::new().resize(img, &mut dst, &opts) {
        Ok(()) => dst,
        // unreachable for RGB8 on both sides; the portable path is the fallback
        Err(_) => imageops::resize(img, w.max(1), h.max(1), FilterType::Triangle),
    }
}

/// Copies the `spec.width × spec.height` window of `src` at (x0, y0) (clipped to `src`) into
/// the planar buffer, normalised and in the model's colour order.
fn write_chw(src: &RgbImage, spec: &InputSpec, out: &mut [f32], x0: u32, y0: u32) {
    let (w, h) = (spec.width as usize, spec.height as usize);
    let plane = w * h;
    let order: [usize; 3] = match spec.color {
        ColorOrder::Rgb => [0, 1, 2],
        ColorOrder::Bgr => [2, 1, 0],
    };
    // Per output channel: value = pixel × a + b.
    let mut a = [0f32; 3];
    let mut b = [0f32; 3];
    for c in 0..3 {
        a[c] = spec.scale / spec.std[c];
        b[c] = -spec.mean[c] / spec.std[c];
    }
    let cw = (src.width().saturating_sub(x0) as usize).min(w);
    let ch = (src.height().saturating_sub(y0) as usize).min(h);
    let stride = src.width() as usize * 3;
    let raw = src.as_raw();
    for y in 0..ch {
        let row = &raw[(y0 as usize + y) * stride + x0 as usize * 3..][..cw * 3];
        for (x, px) in row.chunks_exact(3).enumerate() {
            let i = y * w + x;
            for c in 0..3 {
                out[c * plane + i] = px[order[c]] as f32 * a[c] + b[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(resize: ResizeMode) -> InputSpec {
        InputSpec { width: 4, height: 4, resize, scale: 1.0, ..InputSpec::default() }
    }

    #[test]
    fn stretch_identity_keeps_pixels_and_order() {
        let img = RgbImage::from_fn(4, 4, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = vec![0f32; 48];
        let mut s = spec(ResizeMode::Stretch);
        s.color = ColorOrder::Bgr;
        prepare(&img, &s, &mut out);
        assert_eq!(out[0..4], [7.0, 7.0, 7.0, 7.0]); // B plane first
        assert_eq!(out[32 + 4 * 2 + 3], 3.0); // R plane, y=2, x=3
    }

    #[test]
    fn letterbox_pads_and_maps_back() {
        let img = RgbImage::from_pixel(8, 4, image::Rgb([10, 10, 10]));
        let mut out = vec![0f32; 48];
        let p = prepare(&img, &spec(ResizeMode::Letterbox), &mut out);
        assert_eq!(p.scale_x, 0.5);
        assert_eq!(out[0], 10.0);
        assert_eq!(out[15], 114.0); // bottom rows are padding
        assert_eq!(p.to_original(4.0, 2.0), (8.0, 4.0));
    }
}

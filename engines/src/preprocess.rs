//! CPU pre-processing: resize (stretch, letterbox or centre-crop), colour order and
//! normalisation, written straight into one image's slot of a batched NCHW buffer.

use image::imageops::{self, FilterType};
use image::RgbImage;

use crate::spec::{ColorOrder, InputSpec, Resample, ResizeMode};

/// How model-input pixels map back to the original image: `orig = input / scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prepared {
    pub scale_x: f32,
    pub scale_y: f32,
    pub offset_x: f32,
    pub offset_y: f32,
}

impl Prepared {
    pub fn to_original(self, x: f32, y: f32) -> (f32, f32) {
        (x / self.scale_x + self.offset_x, y / self.scale_y + self.offset_y)
    }
}

/// Where an image lands in the model input: it is resized to `nw × nh`, and the input is the
/// window at (`x0`, `y0`) of that (letterbox: the rest is padding). Shared by the CPU path and
/// the GPU kernel, so both compute the same pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Geometry {
    pub nw: u32,
    pub nh: u32,
    pub x0: u32,
    pub y0: u32,
    pub prepared: Prepared,
}

pub(crate) fn geometry(iw: u32, ih: u32, spec: &InputSpec) -> Geometry {
    let (w, h) = (spec.width, spec.height);
    let (iw, ih) = (iw.max(1), ih.max(1));
    match spec.resize {
        ResizeMode::Stretch => Geometry {
            nw: w,
            nh: h,
            x0: 0,
            y0: 0,
            prepared: Prepared {
                scale_x: w as f32 / iw as f32,
                scale_y: h as f32 / ih as f32,
                offset_x: 0.0,
                offset_y: 0.0,
            },
        },
        ResizeMode::Letterbox => {
            let s = (w as f32 / iw as f32).min(h as f32 / ih as f32);
            let nw = ((iw as f32 * s).round() as u32).clamp(1, w);
            let nh = ((ih as f32 * s).round() as u32).clamp(1, h);
            Geometry {
                nw,
                nh,
                x0: 0,
                y0: 0,
                prepared: Prepared { scale_x: s, scale_y: s, offset_x: 0.0, offset_y: 0.0 },
            }
        }
        ResizeMode::CenterCrop => {
            let short = spec.resize_short.unwrap_or(w.min(h)).max(w.min(h));
            let s = short as f32 / iw.min(ih) as f32;
            // transformers: the short side is `short`, the long one int(short × long / short)
            let side = |v: u32| {
                if v == iw.min(ih) {
                    short
                } else if spec.resize_floor {
                    (short as u64 * v as u64 / iw.min(ih) as u64) as u32
                } else {
                    (v as f32 * s).round() as u32
                }
            };
            let nw = side(iw).max(w);
            let nh = side(ih).max(h);
            let (x0, y0) = ((nw - w) / 2, (nh - h) / 2);
            Geometry {
                nw,
                nh,
                x0,
                y0,
                prepared: Prepared { scale_x: s, scale_y: s, offset_x: x0 as f32 / s, offset_y: y0 as f32 / s },
            }
        }
    }
}

/// The normalised value of a letterbox pixel, per output channel.
pub(crate) fn pad_values(spec: &InputSpec) -> [f32; 3] {
    std::array::from_fn(|c| (spec.pad * spec.scale - spec.mean[c]) / spec.std[c])
}

/// Fills `out` (length 3 × height × width) with the model input for `img`.
pub fn prepare(img: &RgbImage, spec: &InputSpec, out: &mut [f32]) -> Prepared {
    let (w, h) = (spec.width, spec.height);
    debug_assert_eq!(out.len(), 3 * (w * h) as usize);
    let g = geometry(img.width(), img.height(), spec);
    if spec.resize == ResizeMode::Letterbox {
        for (c, v) in pad_values(spec).into_iter().enumerate() {
            out[c * (w * h) as usize..(c + 1) * (w * h) as usize].fill(v);
        }
    }
    let r = resized(img, g.nw, g.nh, spec.resample);
    write_chw(&r, spec, out, g.x0, g.y0);
    g.prepared
}

fn resized(img: &RgbImage, w: u32, h: u32, filter: Resample) -> std::borrow::Cow<'_, RgbImage> {
    if img.width() == w && img.height() == h {
        std::borrow::Cow::Borrowed(img)
    } else {
        std::borrow::Cow::Owned(resize_with(img, w, h, filter))
    }
}

/// Bilinear (convolution) resize with SIMD; the `image` crate's generic resize costs ~10× more
/// and showed up as the largest item of a request's host time.
pub(crate) fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    resize_with(img, w, h, Resample::Bilinear)
}

/// [`resize`] with another of PIL's filters (PIL's bicubic is Catmull-Rom, a = −0.5; its
/// nearest samples, every other filter is a convolution).
pub(crate) fn resize_with(img: &RgbImage, w: u32, h: u32, filter: Resample) -> RgbImage {
    use fast_image_resize::{FilterType as F, ResizeAlg, ResizeOptions, Resizer};
    let mut dst = RgbImage::new(w.max(1), h.max(1));
    let alg = match filter {
        Resample::Nearest => ResizeAlg::Nearest,
        Resample::Lanczos => ResizeAlg::Convolution(F::Lanczos3),
        Resample::Bilinear => ResizeAlg::Convolution(F::Bilinear),
        Resample::Bicubic => ResizeAlg::Convolution(F::CatmullRom),
        Resample::Box => ResizeAlg::Convolution(F::Box),
        Resample::Hamming => ResizeAlg::Convolution(F::Hamming),
    };
    let opts = ResizeOptions::new().resize_alg(alg);
    match Resizer::new().resize(img, &mut dst, &opts) {
        Ok(()) => dst,
        // unreachable for RGB8 on both sides; the portable path is the fallback
        Err(_) => imageops::resize(img, w.max(1), h.max(1), FilterType::Triangle),
    }
}

/// Per output channel c: value = pixel[order[c]] × a[c] + b[c].
pub(crate) struct Affine {
    pub order: [usize; 3],
    pub a: [f32; 3],
    pub b: [f32; 3],
}

pub(crate) fn affine(spec: &InputSpec) -> Affine {
    let order = match spec.color {
        ColorOrder::Rgb => [0, 1, 2],
        ColorOrder::Bgr => [2, 1, 0],
    };
    Affine {
        order,
        a: std::array::from_fn(|c| spec.scale / spec.std[c]),
        b: std::array::from_fn(|c| -spec.mean[c] / spec.std[c]),
    }
}

/// Copies the `spec.width × spec.height` window of `src` at (x0, y0) (clipped to `src`) into
/// the planar buffer, normalised and in the model's colour order.
fn write_chw(src: &RgbImage, spec: &InputSpec, out: &mut [f32], x0: u32, y0: u32) {
    let (w, h) = (spec.width as usize, spec.height as usize);
    let plane = w * h;
    let Affine { order, a, b } = affine(spec);
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

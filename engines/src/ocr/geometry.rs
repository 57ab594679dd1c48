//! Geometry of text detection: connected regions of a binary map, convex hulls, minimum-area
//! rectangles (rotating calipers), and sampling a rotated rectangle out of an image.

use image::{Rgb, RgbImage};

/// One connected region of the binarised probability map.
pub(crate) struct Region {
    /// Outline points (per row: the left edge and the right edge of the run, pixel-exact).
    pub points: Vec<(f32, f32)>,
    /// Mean probability over the region's pixels.
    pub score: f32,
    pub pixels: usize,
}

/// 8-connected regions of `prob >= threshold`, at most `max` of them (largest kept).
pub(crate) fn regions(prob: &[f32], w: usize, h: usize, threshold: f32, max: usize) -> Vec<Region> {
    let mut label = vec![0u32; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    let mut next = 0u32;
    for start in 0..w * h {
        if label[start] != 0 || prob[start] < threshold {
            continue;
        }
        next += 1;
        label[start] = next;
        stack.push(start);
        // per row: min and max x of the region
        let mut rows: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
        let (mut sum, mut n) = (0f32, 0usize);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            sum += prob[i];
            n += 1;
            let e = rows.entry(y).or_insert((x, x));
            e.0 = e.0.min(x);
            e.1 = e.1.max(x);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if label[j] == 0 && prob[j] >= threshold {
                        label[j] = next;
                        stack.push(j);
                    }
                }
            }
        }
        let mut points = Vec::with_capacity(rows.len() * 4);
        for (y, (x0, x1)) in rows {
            let (y, x0, x1) = (y as f32, x0 as f32, x1 as f32 + 1.0);
            points.extend_from_slice(&[(x0, y), (x1, y), (x0, y + 1.0), (x1, y + 1.0)]);
        }
        out.push(Region { points, score: sum / n as f32, pixels: n });
    }
    out.sort_by_key(|b| std::cmp::Reverse(b.pixels));
    out.truncate(max);
    out
}

/// Convex hull (Andrew's monotone chain), counter-clockwise, no repeated end point.
pub(crate) fn convex_hull(mut pts: Vec<(f32, f32)>) -> Vec<(f32, f32)> {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let cross = |o: (f32, f32), a: (f32, f32), b: (f32, f32)| (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0);
    let mut hull: Vec<(f32, f32)> = Vec::with_capacity(pts.len() * 2);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(f32, f32)>> =
            if pass == 0 { Box::new(pts.iter()) } else { Box::new(pts.iter().rev()) };
        for &p in iter {
            while hull.len() >= start + 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

/// A rotated rectangle: centre, unit axis `u` (along `width`), and the perpendicular `v`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct RotatedRect {
    pub cx: f32,
    pub cy: f32,
    pub ux: f32,
    pub uy: f32,
    pub width: f32,
    pub height: f32,
}

impl RotatedRect {
    pub(crate) fn corners(&self) -> [(f32, f32); 4] {
        let (hw, hh) = (self.width / 2.0, self.height / 2.0);
        let (vx, vy) = (-self.uy, self.ux);
        let p = |a: f32, b: f32| (self.cx + a * self.ux + b * vx, self.cy + a * self.uy + b * vy);
        [p(-hw, -hh), p(hw, -hh), p(hw, hh), p(-hw, hh)]
    }

    /// Axis-aligned bounds: x0, y0, x1, y1.
    pub(crate) fn bounds(&self) -> [f32; 4] {
        let c = self.corners();
        let xs = c.iter().map(|p| p.0);
        let ys = c.iter().map(|p| p.1);
        [
            xs.clone().fold(f32::MAX, f32::min),
            ys.clone().fold(f32::MAX, f32::min),
            xs.fold(f32::MIN, f32::max),
            ys.fold(f32::MIN, f32::max),
        ]
    }

    /// The same rectangle with its axis turned towards the horizontal (reading direction).
    pub(crate) fn reading(self) -> RotatedRect {
        let mut r = self;
        if r.ux.abs() < r.uy.abs() {
            // swap axes: the long horizontal-ish side becomes `u`
            r = RotatedRect { ux: -r.uy, uy: r.ux, width: r.height, height: r.width, ..r };
        }
        if r.ux < 0.0 {
            r.ux = -r.ux;
            r.uy = -r.uy;
        }
        r
    }

    pub(crate) fn scaled(self, sx: f32, sy: f32) -> RotatedRect {
        // Axis-dependent scaling of a rotated rectangle: scale its corners and refit.
        let c = self.corners().map(|(x, y)| (x * sx, y * sy));
        let (e1, e2) = ((c[1].0 - c[0].0, c[1].1 - c[0].1), (c[3].0 - c[0].0, c[3].1 - c[0].1));
        let w = (e1.0 * e1.0 + e1.1 * e1.1).sqrt();
        let h = (e2.0 * e2.0 + e2.1 * e2.1).sqrt();
        let (ux, uy) = if w > 0.0 { (e1.0 / w, e1.1 / w) } else { (1.0, 0.0) };
        RotatedRect { cx: self.cx * sx, cy: self.cy * sy, ux, uy, width: w, height: h }
    }
}

/// Minimum-area enclosing rectangle of a convex polygon (rotating calipers over its edges).
pub(crate) fn min_area_rect(hull: &[(f32, f32)]) -> Option<RotatedRect> {
    if hull.len() < 3 {
        return None;
    }
    let mut best: Option<(f32, RotatedRect)> = None;
    for i in 0..hull.len() {
        let (a, b) = (hull[i], hull[(i + 1) % hull.len()]);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len = (dx * dx + dy * dy).sqrt();
        if len == 0.0 {
            continue;
        }
        let (ux, uy) = (dx / len, dy / len);
        let (mut lo_u, mut hi_u, mut lo_v, mut hi_v) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for p in hull {
            let (px, py) = (p.0 - a.0, p.1 - a.1);
            let (pu, pv) = (px * ux + py * uy, -px * uy + py * ux);
            lo_u = lo_u.min(pu);
            hi_u = hi_u.max(pu);
            lo_v = lo_v.min(pv);
            hi_v = hi_v.max(pv);
        }
        let area = (hi_u - lo_u) * (hi_v - lo_v);
        if best.as_ref().is_none_or(|(ba, _)| area < *ba) {
            let (mu, mv) = ((lo_u + hi_u) / 2.0, (lo_v + hi_v) / 2.0);
            let cx = a.0 + mu * ux - mv * uy;
            let cy = a.1 + mu * uy + mv * ux;
            best = Some((area, RotatedRect { cx, cy, ux, uy, width: hi_u - lo_u, height: hi_v - lo_v }));
        }
    }
    best.map(|(_, r)| r)
}

/// Samples the rectangle out of `img` (bilinear), `u` pointing right, `v` down.
pub(crate) fn crop_rotated(img: &RgbImage, r: &RotatedRect) -> RgbImage {
    let w = r.width.round().max(1.0) as u32;
    let h = r.height.round().max(1.0) as u32;
    let (vx, vy) = (-r.uy, r.ux);
    let (iw, ih) = (img.width() as f32, img.height() as f32);
    RgbImage::from_fn(w, h, |x, y| {
        let a = x as f32 + 0.5 - w as f32 / 2.0;
        let b = y as f32 + 0.5 - h as f32 / 2.0;
        let sx = (r.cx + a * r.ux + b * vx - 0.5).clamp(0.0, iw - 1.0);
        let sy = (r.cy + a * r.uy + b * vy - 0.5).clamp(0.0, ih - 1.0);
        bilinear(img, sx, sy)
    })
}

fn bilinear(img: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(img.width() - 1), (y0 + 1).min(img.height() - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let p = |xx, yy| img.get_pixel(xx, yy).0;
    let (a, b, c, d) = (p(x0, y0), p(x1, y0), p(x0, y1), p(x1, y1));
    let mut out = [0u8; 3];
    for i in 0..3 {
        let top = a[i] as f32 * (1.0 - fx) + b[i] as f32 * fx;
        let bot = c[i] as f32 * (1.0 - fx) + d[i] as f32 * fx;
        out[i] = (top * (1.0 - fy) + bot * fy).round() as u8;
    }
    Rgb(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_aligned_block_gives_its_rectangle() {
        let (w, h) = (20, 10);
        let mut prob = vec![0f32; w * h];
        for y in 2..6 {
            for x in 3..15 {
                prob[y * w + x] = 0.9;
            }
        }
        let r = regions(&prob, w, h, 0.3, 10);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].pixels, 48);
        let rect = min_area_rect(&convex_hull(r[0].points.clone())).unwrap().reading();
        assert!((rect.width - 12.0).abs() < 1e-4 && (rect.height - 4.0).abs() < 1e-4, "{rect:?}");
        assert!((rect.cx - 9.0).abs() < 1e-4 && (rect.cy - 4.0).abs() < 1e-4);
        assert_eq!(rect.bounds(), [3.0, 2.0, 15.0, 6.0]);
    }

    #[test]
    fn rotated_points_give_a_tilted_rectangle() {
        let a = 0.3f32;
        let (c, s) = (a.cos(), a.sin());
        let pts: Vec<(f32, f32)> = [(0.0, 0.0), (10.0, 0.0), (10.0, 2.0), (0.0, 2.0)]
            .iter()
            .map(|&(x, y)| (x * c - y * s, x * s + y * c))
            .collect();
        let r = min_area_rect(&convex_hull(pts)).unwrap().reading();
        assert!((r.width - 10.0).abs() < 1e-3 && (r.height - 2.0).abs() < 1e-3, "{r:?}");
        assert!((r.uy / r.ux - a.tan()).abs() < 1e-3);
    }
}

//! A small baseline JPEG encoder that writes what PIL's `image.save(buf, "JPEG")` writes by
//! default: 4:2:0 chroma (the `image` crate's encoder only writes 4:4:4), the standard tables of
//! ITU T.81 Annex K with libjpeg's quality scaling, no optimised Huffman tables, JFIF 1.1.
//! Colour conversion and chroma down-sampling follow libjpeg's integer rules; the DCT is a plain
//! floating-point one (libjpeg's integer DCT differs by at most one step in a few coefficients).

use image::RgbImage;

/// Natural-order index of each zig-zag position.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
    47, 55, 62, 63,
];

/// Annex K.1 and K.2, natural order.
const LUMA_Q: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51,
    87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
];
const CHROMA_Q: [u16; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99,
];

/// Annex K.3–K.6: code counts per length (1..=16), then the symbols.
const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
const AC_LUMA_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14,
    0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09,
    0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a,
    0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65,
    0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
    0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9,
    0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
    0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea,
    0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
];
const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
const AC_CHROMA_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22, 0x32,
    0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16,
    0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39,
    0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
    0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86,
    0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8,
    0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9,
    0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
];

/// libjpeg's quality scaling of a base table (baseline: every entry in 1..=255).
pub fn scaled_table(base: &[u16; 64], quality: u8) -> [u16; 64] {
    let q = u32::from(quality.clamp(1, 100));
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    base.map(|v| ((u32::from(v) * scale + 50) / 100).clamp(1, 255) as u16)
}

/// Canonical Huffman codes: `(code, length)` per symbol.
struct Huffman {
    codes: [(u16, u8); 256],
}

impl Huffman {
    fn new(bits: &[u8; 16], values: &[u8]) -> Huffman {
        let mut codes = [(0u16, 0u8); 256];
        let (mut code, mut k) = (0u16, 0usize);
        for (len, &count) in bits.iter().enumerate() {
            for _ in 0..count {
                codes[values[k] as usize] = (code, len as u8 + 1);
                code += 1;
                k += 1;
            }
            code <<= 1;
        }
        Huffman { codes }
    }
}

/// Entropy-coded bytes with 0xFF stuffing.
struct Bits {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, len: u8) {
        if len == 0 {
            return;
        }
        self.acc = (self.acc << len) | (value & ((1u32 << len) - 1));
        self.n += u32::from(len);
        while self.n >= 8 {
            let byte = (self.acc >> (self.n - 8)) as u8;
            self.out.push(byte);
            if byte == 0xff {
                self.out.push(0);
            }
            self.n -= 8;
        }
        self.acc &= (1u32 << self.n) - 1;
    }

    fn code(&mut self, h: &Huffman, symbol: u8) {
        let (code, len) = h.codes[symbol as usize];
        self.put(u32::from(code), len);
    }

    /// Pads the last byte with one bits.
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n as u8;
            self.put((1 << pad) - 1, pad);
        }
        self.out
    }
}

/// Magnitude category and the value's bits as JPEG codes them.
fn category(v: i32) -> (u8, u32) {
    let n = (32 - v.unsigned_abs().leading_zeros()) as u8;
    let bits = if v < 0 { (v - 1) as u32 } else { v as u32 };
    (n, bits)
}

/// One component's planes, block by block.
struct Plane {
    w: usize,
    data: Vec<u8>,
}

impl Plane {
    fn block(&self, bx: usize, by: usize) -> [f32; 64] {
        let mut b = [0f32; 64];
        for y in 0..8 {
            let row = (by * 8 + y) * self.w + bx * 8;
            for x in 0..8 {
                b[y * 8 + x] = f32::from(self.data[row + x]) - 128.0;
            }
        }
        b
    }
}

struct Dct {
    /// `c[u][x] = C(u)/2 · cos((2x+1)uπ/16)`
    c: [[f32; 8]; 8],
}

impl Dct {
    fn new() -> Dct {
        let mut c = [[0f32; 8]; 8];
        for (u, row) in c.iter_mut().enumerate() {
            let cu = if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 };
            for (x, v) in row.iter_mut().enumerate() {
                *v = (0.5 * cu * (((2 * x + 1) * u) as f64 * std::f64::consts::PI / 16.0).cos()) as f32;
            }
        }
        Dct { c }
    }

    /// Quantised coefficients in natural order (rounded half away from zero, as libjpeg does).
    fn quantise(&self, block: &[f32; 64], q: &[u16; 64]) -> [i32; 64] {
        let mut rows = [0f32; 64];
        for y in 0..8 {
            for u in 0..8 {
                rows[y * 8 + u] = (0..8).map(|x| self.c[u][x] * block[y * 8 + x]).sum();
            }
        }
        let mut out = [0i32; 64];
        for v in 0..8 {
            for u in 0..8 {
                let f: f32 = (0..8).map(|y| self.c[v][y] * rows[y * 8 + u]).sum();
                out[v * 8 + u] = (f / f32::from(q[v * 8 + u])).round() as i32;
            }
        }
        out
    }
}

fn segment(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
    out.extend_from_slice(&[0xff, marker]);
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// Encodes `img` as a baseline, 4:2:0 JPEG. Images wider or taller than 65 535 pixels, or empty,
/// cannot be JPEG: they give an error.
pub fn encode_rgb(img: &RgbImage, quality: u8) -> anyhow::Result<Vec<u8>> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    anyhow::ensure!((1..=65_535).contains(&w) && (1..=65_535).contains(&h), "cannot encode a {w}×{h} JPEG");
    // whole MCUs of 16×16, the edges replicated (as libjpeg pads)
    let (pw, ph) = (w.div_ceil(16) * 16, h.div_ceil(16) * 16);
    let (mut yp, mut cbp, mut crp) = (vec![0u8; pw * ph], vec![0u8; pw * ph], vec![0u8; pw * ph]);
    const ONE_HALF: i32 = 1 << 15;
    let fix = |x: f64| (x * 65536.0 + 0.5) as i32;
    let (yr, yg, yb) = (fix(0.299), fix(0.587), fix(0.114));
    let (ur, ug, half) = (fix(0.16874), fix(0.33126), fix(0.5));
    let (vg, vb) = (fix(0.41869), fix(0.08131));
    let offset = 128 << 16;
    for y in 0..ph {
        for x in 0..pw {
            let p = img.get_pixel(x.min(w - 1) as u32, y.min(h - 1) as u32).0;
            let (r, g, b) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
            let i = y * pw + x;
            yp[i] = ((yr * r + yg * g + yb * b + ONE_HALF) >> 16) as u8;
            cbp[i] = ((-ur * r - ug * g + half * b + offset + ONE_HALF - 1) >> 16) as u8;
            crp[i] = ((half * r - vg * g - vb * b + offset + ONE_HALF - 1) >> 16) as u8;
        }
    }
    // 2×2 averages, the rounding bias alternating 1, 2 along a row (libjpeg's h2v2 rule)
    let (cw, ch) = (pw / 2, ph / 2);
    let down = |full: &[u8]| -> Vec<u8> {
        let mut out = vec![0u8; cw * ch];
        for y in 0..ch {
            for x in 0..cw {
                let s = |dx: usize, dy: usize| u32::from(full[(2 * y + dy) * pw + 2 * x + dx]);
                let bias = 1 + (x as u32 & 1);
                out[y * cw + x] = ((s(0, 0) + s(1, 0) + s(0, 1) + s(1, 1) + bias) >> 2) as u8;
            }
        }
        out
    };
    let luma = Plane { w: pw, data: yp };
    let (cb, cr) = (Plane { w: cw, data: down(&cbp) }, Plane { w: cw, data: down(&crp) });

    let lq = scaled_table(&LUMA_Q, quality);
    let cq = scaled_table(&CHROMA_Q, quality);
    let (dc_l, ac_l) = (Huffman::new(&DC_LUMA_BITS, &DC_VALUES), Huffman::new(&AC_LUMA_BITS, &AC_LUMA_VALUES));
    let (dc_c, ac_c) = (Huffman::new(&DC_CHROMA_BITS, &DC_VALUES), Huffman::new(&AC_CHROMA_BITS, &AC_CHROMA_VALUES));
    let dct = Dct::new();
    let mut bits = Bits { out: Vec::with_capacity(w * h / 2), acc: 0, n: 0 };
    let mut preds = [0i32; 3];
    let mut block = |bits: &mut Bits, plane: &Plane, bx: usize, by: usize, comp: usize| {
        let (q, dc, ac) = if comp == 0 { (&lq, &dc_l, &ac_l) } else { (&cq, &dc_c, &ac_c) };
        let coef = dct.quantise(&plane.block(bx, by), q);
        let (n, v) = category(coef[0] - preds[comp]);
        preds[comp] = coef[0];
        bits.code(dc, n);
        bits.put(v, n);
        let mut run = 0u8;
        for &k in &ZIGZAG[1..] {
            let c = coef[k];
            if c == 0 {
                run += 1;
                continue;
            }
            while run > 15 {
                bits.code(ac, 0xf0);
                run -= 16;
            }
            let (n, v) = category(c);
            bits.code(ac, (run << 4) | n);
            bits.put(v, n);
            run = 0;
        }
        if run > 0 {
            bits.code(ac, 0x00);
        }
    };
    for my in 0..ph / 16 {
        for mx in 0..pw / 16 {
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                block(&mut bits, &luma, 2 * mx + dx, 2 * my + dy, 0);
            }
            block(&mut bits, &cb, mx, my, 1);
            block(&mut bits, &cr, mx, my, 2);
        }
    }
    let scan = bits.finish();

    let mut out = Vec::with_capacity(scan.len() + 700);
    out.extend_from_slice(&[0xff, 0xd8]);
    segment(&mut out, 0xe0, &[b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]);
    let mut dqt = Vec::with_capacity(130);
    for (id, t) in [(0u8, &lq), (1, &cq)] {
        dqt.push(id);
        dqt.extend(ZIGZAG.iter().map(|&k| t[k] as u8));
    }
    segment(&mut out, 0xdb, &dqt);
    let (wb, hb) = ((w as u16).to_be_bytes(), (h as u16).to_be_bytes());
    segment(&mut out, 0xc0, &[8, hb[0], hb[1], wb[0], wb[1], 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    let mut dht = Vec::with_capacity(420);
    for (class_id, b, v) in [
        (0x00u8, &DC_LUMA_BITS, &DC_VALUES[..]),
        (0x10, &AC_LUMA_BITS, &AC_LUMA_VALUES[..]),
        (0x01, &DC_CHROMA_BITS, &DC_VALUES[..]),
        (0x11, &AC_CHROMA_BITS, &AC_CHROMA_VALUES[..]),
    ] {
        dht.push(class_id);
        dht.extend_from_slice(b);
        dht.extend_from_slice(v);
    }
    segment(&mut out, 0xc4, &dht);
    segment(&mut out, 0xda, &[3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
    out.extend_from_slice(&scan);
    out.extend_from_slice(&[0xff, 0xd9]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> RgbImage {
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).expect("decodes").to_rgb8()
    }

    fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
        let mse = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>()
            / a.as_raw().len() as f64;
        10.0 * (255.0f64.powi(2) / mse.max(1e-9)).log10()
    }

    fn scene(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let r = 128.0 + 100.0 * (fx * 9.0).sin() * (fy * 4.0).cos();
            let g = 255.0 * fy;
            let b = if (x / 16 + y / 16) % 2 == 0 { 200.0 } else { 40.0 };
            image::Rgb([r as u8, g as u8, b as u8])
        })
    }

    #[test]
    fn quality_75_tables_are_libjpegs() {
        let l = scaled_table(&LUMA_Q, 75);
        assert_eq!(&l[..8], &[8, 6, 5, 8, 12, 20, 26, 31]);
        assert_eq!(&scaled_table(&CHROMA_Q, 75)[..8], &[9, 9, 12, 24, 50, 50, 50, 50]);
        assert_eq!(scaled_table(&LUMA_Q, 1)[63], 255, "baseline tables are capped at 255");
    }

    #[test]
    fn round_trips_at_every_size_and_is_420() {
        for (w, h) in [(224, 224), (37, 23), (1, 1), (17, 33)] {
            let img = scene(w, h);
            let bytes = encode_rgb(&img, 75).unwrap();
            let back = decode(&bytes);
            assert_eq!(back.dimensions(), (w, h));
            if w >= 32 {
                assert!(psnr(&img, &back) > 24.0, "{w}×{h}: psnr {}", psnr(&img, &back));
            }
            // SOF0: luma 2×2, chroma 1×1
            let sof = bytes.windows(2).position(|m| m == [0xff, 0xc0]).unwrap();
            assert_eq!(&bytes[sof + 10..sof + 19], &[1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        }
        let img = scene(224, 224);
        let (q95, q75) = (encode_rgb(&img, 95).unwrap(), encode_rgb(&img, 75).unwrap());
        assert!(q95.len() > q75.len());
        assert!(psnr(&img, &decode(&q95)) > psnr(&img, &decode(&q75)));
        assert!(encode_rgb(&RgbImage::new(0, 4), 75).is_err());
    }

    #[test]
    fn flat_colours_survive() {
        for c in [[0u8, 0, 0], [255, 255, 255], [200, 30, 90], [128, 128, 128]] {
            let img = RgbImage::from_pixel(48, 40, image::Rgb(c));
            let back = decode(&encode_rgb(&img, 75).unwrap());
            for p in back.pixels() {
                for k in 0..3 {
                    assert!((i32::from(p.0[k]) - i32::from(c[k])).abs() <= 3, "{c:?} came back as {:?}", p.0);
                }
            }
        }
    }
}

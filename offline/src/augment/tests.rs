//! The port against the reference: the fixture cases `scripts/tune/augment_reference.py`
//! writes from the subnet's own code, and the properties of each step.

use image::Rgb;

use super::distort::{cv_resize, gaussian_kernel_q8};
use super::params::sample_crop;
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
    let seen: std::collections::BTreeSet<u8> = (0..50).map(|i| two.params(&format!("f{i}"), 64, 64).level).collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 3]);
}

#[test]
fn weighted_levels_are_drawn_in_proportion_and_unweighted_ones_as_before() {
    let w = Style { levels: Levels::parse("0:1,1:2,2:3.5,3:3.5").unwrap(), seed: 72 };
    let mut n = [0usize; 4];
    for i in 0..4000 {
        n[w.params(&format!("f{i}"), 640, 480).level as usize] += 1;
    }
    for (l, want) in [0.1, 0.2, 0.35, 0.35].into_iter().enumerate() {
        let got = n[l] as f64 / 4000.0;
        assert!((got - want).abs() < 0.03, "level {l}: {got} drawn, {want} wanted");
    }
    // an unweighted set spends one `below` draw, as it did before weights existed: the views
    // (and the embedding cache's keys) of existing runs stay what they were
    let u = Style { levels: Levels::parse("0-3").unwrap(), seed: 72 };
    let mut rng = Rng::keyed(72, "a.jpg");
    let level = [0u8, 1, 2, 3][rng.below(4) as usize];
    assert_eq!(u.params("a.jpg", 640, 480), Params::sample_level(&mut rng, level, 640, 480));
}

#[test]
fn levels_parse() {
    assert_eq!(Levels::parse("0-3").unwrap().as_slice(), &[0, 1, 2, 3]);
    assert_eq!(Levels::parse("2,0").unwrap().as_slice(), &[0, 2]);
    assert_eq!(Levels::parse("0-1,3").unwrap().to_string(), "0,1,3");
    for bad in ["4", "3-1", "", "a", "0-"] {
        assert!(Levels::parse(bad).is_err(), "{bad:?}");
    }
    let w = Levels::parse("0:1, 1:2,2:3.5,3:3.5").unwrap();
    assert_eq!((w.as_slice(), w.to_string().as_str()), (&[0u8, 1, 2, 3][..], "0:1,1:2,2:3.5,3:3.5"));
    assert_eq!(Levels::parse("0:0,2:1").unwrap().as_slice(), &[2], "a level weighted 0 is never drawn");
    for bad in ["0:1,1", "0:-1", "0:x", "0:0", "1:1,1:2", "5:1"] {
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
    assert!(black_share(&apply(&img, &with(1, 20.0, full, &[]))) > black_share(&apply(&img, &with(1, 5.0, full, &[]))));
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
        img.as_raw().iter().zip(level0.as_raw()).map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs()).sum::<f64>() / n;
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
    // a missing fixture source fails: a skipped comparison would pass without comparing
    assert!(data.is_dir(), "no shared data at {} (set CASCADE_SHARED): this test compares with it", data.display());
    let text = std::fs::read_to_string(repo.join("tests/fixtures/augment_reference.json")).expect("fixture");
    let fixture: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    let near_black_max = fixture["near_black_max"].as_u64().expect("near_black_max") as u8;
    let grid = fixture["grid"].as_u64().expect("grid") as u32;
    let decode = |bytes: &[u8]| image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).unwrap().to_rgb8();
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

//! JPEG decoding at the size the models need, in one run.
//!
//! 1. In-process, every side interleaved image by image. Validators' challenges (224², PIL
//!    quality 75): the server's decoder for them (zune-jpeg, through `image`) against
//!    libjpeg-turbo and jpeg-decoder. 12 MP photos: decoded in full (zune-jpeg; libjpeg-turbo),
//!    against decoded at 1/2, 1/4 and 1/8 in the DCT by libjpeg-turbo (what `serve` does for
//!    the registry's need; jpeg-decoder's 1/2 beside it), each then prepared for the `roadwork`
//!    classifier as the engine does.
//! 2. End to end: the real server's `speed` hotkey answering the same photos over HTTP with
//!    `--decode-min-side 0` (every image in full: the peer) and with the default (twice the
//!    largest input of the shipped registry: 1/2 for a 12 MP photo) and 448 (1/4): latency, and
//!    the answer's change against the change an ordinary resize of the same photo makes.
//!
//! The 12 MP photos are made from real street frames of ../shared/data/roadwork-more (no phone
//! photos are in the data): cropped to 4:3, upscaled to 4032×3024, sensor-like noise added,
//! JPEG quality 90 (`image`'s encoder): about 1.7 MB each, a little less dense than a phone
//! camera's 12 MP file (2–5 MB), so the full decode here is if anything cheaper than a phone's.
//!
//!     cargo run --release -p cascade-bench --bin decode-bench -- [--rounds 5]

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use cascade_bench::{header, repo, row, summarise};
use cascade_common::image::{decode_for, decode_image, header as read_header, IngressLimits};
use image::RgbImage;

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).cloned()
}

const PHOTO: (u32, u32) = (4032, 3024);

/// A phone-sized photo from the street frame at `src` (see the top of the file).
fn photo(src: &Path, seed: u64) -> anyhow::Result<Vec<u8>> {
    let img = image::open(src)?.to_rgb8();
    let (w, h) = img.dimensions();
    let (cw, ch) = if w * 3 > h * 4 { (h * 4 / 3, h) } else { (w, w * 3 / 4) };
    let crop = image::imageops::crop_imm(&img, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
    let mut big = RgbImage::new(PHOTO.0, PHOTO.1);
    let opts = fast_image_resize::ResizeOptions::new()
        .resize_alg(fast_image_resize::ResizeAlg::Convolution(fast_image_resize::FilterType::Lanczos3));
    fast_image_resize::Resizer::new().resize(&crop, &mut big, &opts)?;
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for p in big.as_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let noise = (state % 9) as i16 - 4;
        *p = (i16::from(*p) + noise).clamp(0, 255) as u8;
    }
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&big)?;
    Ok(out.into_inner())
}

/// The same photo as an ordinary app would resize and save it (3/4 size, Lanczos, quality 90):
/// the reference for how much an answer moves when nothing but the resize changes.
fn resaved(jpeg: &[u8]) -> anyhow::Result<Vec<u8>> {
    let img = image::load_from_memory(jpeg)?.to_rgb8();
    let mut small = RgbImage::new(img.width() * 3 / 4, img.height() * 3 / 4);
    let opts = fast_image_resize::ResizeOptions::new()
        .resize_alg(fast_image_resize::ResizeAlg::Convolution(fast_image_resize::FilterType::Lanczos3));
    fast_image_resize::Resizer::new().resize(&img, &mut small, &opts)?;
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&small)?;
    Ok(out.into_inner())
}

/// jpeg-decoder at `1/scale` (1 for full size), the decoded bytes' length.
fn jpeg_decoder(bytes: &[u8], scale: u16) -> anyhow::Result<Vec<u8>> {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.read_info()?;
    let info = d.info().ok_or_else(|| anyhow::anyhow!("no header"))?;
    d.scale(info.width.div_ceil(scale), info.height.div_ceil(scale))?;
    Ok(d.decode()?)
}

/// libjpeg-turbo at `1/scale`.
fn turbo(bytes: &[u8], scale: u32) -> anyhow::Result<RgbImage> {
    cascade_common::image::libjpeg_turbo(bytes, read_header(bytes)?, scale).map_err(anyhow::Error::msg)
}

/// One in-process side: a name and how it turns bytes into something of the image's size.
type Side<'a> = (String, Box<dyn Fn(&[u8]) -> anyhow::Result<usize> + 'a>);

fn run_sides(title: &str, images: &[Vec<u8>], rounds: usize, sides: &[Side]) -> anyhow::Result<()> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    for r in 0..rounds + 1 {
        for img in images {
            for (i, (_, f)) in sides.iter().enumerate() {
                let t = Instant::now();
                std::hint::black_box(f(img)?);
                if r > 0 {
                    samples[i].push(t.elapsed());
                }
            }
        }
    }
    header(title);
    for ((name, _), s) in sides.iter().zip(samples) {
        row(name, &summarise(s));
    }
    Ok(())
}

/// The `roadwork` classifier of the shipped registry.
fn classifier(root: &Path) -> anyhow::Result<cascade_engines::ModelSpec> {
    let reg = cascade_engines::Registry::load(&root.join("policies/models.toml"))
        .map_err(|e| anyhow::anyhow!("the shipped registry: {e}"))?;
    let m = reg.models.iter().find(|m| m.name == "roadwork").ok_or_else(|| anyhow::anyhow!("no roadwork model"))?;
    Ok(m.clone())
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(5);
    let root = repo();
    let work = std::env::temp_dir().join(format!("cascade-decode-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let limits = IngressLimits { max_body_bytes: 64 << 20, ..IngressLimits::default() };

    // --- validators' challenges ---
    let small: Vec<Vec<u8>> =
        cascade_bench::challenges(&work, 200)?.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let sides: Vec<Side> = vec![
        ("zune-jpeg via image (the server's)".into(), Box::new(|b: &[u8]| Ok(decode_image(b, &limits)?.len()))),
        ("libjpeg-turbo".into(), Box::new(|b: &[u8]| Ok(turbo(b, 1)?.len()))),
        ("jpeg-decoder".into(), Box::new(|b: &[u8]| Ok(jpeg_decoder(b, 1)?.len()))),
    ];
    run_sides(
        &format!("decode a validator challenge (224², PIL quality 75), {} images × {rounds} rounds", small.len()),
        &small,
        rounds,
        &sides,
    )?;

    // --- 12 MP photos ---
    let data = root.parent().expect("parent").join("shared/data/roadwork-more");
    let manifest = std::fs::read_to_string(data.join("manifest.csv"))?;
    let mut per_folder = std::collections::BTreeMap::<String, usize>::new();
    let mut sources = Vec::new();
    for l in manifest.lines().skip(1) {
        let path = l.split(',').next().unwrap_or_default();
        let folder = path.split('/').next().unwrap_or_default().to_string();
        let n = per_folder.entry(folder).or_default();
        if *n < 2 {
            *n += 1;
            sources.push(data.join(path));
        }
    }
    let photos: Vec<Vec<u8>> =
        sources.iter().enumerate().map(|(i, p)| photo(p, i as u64 + 1)).collect::<anyhow::Result<_>>()?;
    let mean_mb = photos.iter().map(Vec::len).sum::<usize>() as f64 / photos.len() as f64 / 1e6;
    let classifier = classifier(&root)?;
    let spec = &classifier.input;
    let prepared = |img: &RgbImage| {
        let mut out = vec![0f32; 3 * (spec.width * spec.height) as usize];
        cascade_engines::prepare(img, spec, &mut out);
        out.len()
    };
    let mut sides: Vec<Side> = vec![
        (
            "full, zune-jpeg (min side 0), then the input".into(),
            Box::new(|b: &[u8]| Ok(prepared(&decode_for(b, read_header(b)?, &limits, 0)?.image))),
        ),
        ("full, libjpeg-turbo, then the input".into(), Box::new(|b: &[u8]| Ok(prepared(&turbo(b, 1)?)))),
        (
            "1/2, jpeg-decoder, then the input".into(),
            Box::new(|b: &[u8]| {
                let (w, h) = read_header(b).map(|h| (h.width.div_ceil(2), h.height.div_ceil(2)))?;
                let img = RgbImage::from_raw(w, h, jpeg_decoder(b, 2)?).ok_or_else(|| anyhow::anyhow!("size"))?;
                Ok(prepared(&img))
            }),
        ),
    ];
    for (scale, min_side) in [(2, 960), (4, 448), (8, 224)] {
        sides.push((
            format!("1/{scale}, libjpeg-turbo (min side {min_side}), then the input"),
            Box::new(move |b: &[u8]| {
                let d = decode_for(b, read_header(b)?, &limits, min_side)?;
                anyhow::ensure!(d.scale == scale && d.fell_back.is_none(), "scale {} {:?}", d.scale, d.fell_back);
                Ok(prepared(&d.image))
            }),
        ));
    }
    run_sides(
        &format!(
            "decode a 12 MP photo ({}×{}, {mean_mb:.1} MB mean) and prepare the classifier's input, {} photos × {rounds} rounds",
            PHOTO.0,
            PHOTO.1,
            photos.len()
        ),
        &photos,
        rounds,
        &sides,
    )?;

    // --- end to end ---
    let components = root.join("target/components");
    let policies = root.join("policies");
    let mut servers = Vec::new();
    for min_side in ["0", "auto", "448"] {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--no-watch"),
            OsStr::new("--components"),
            components.as_os_str(),
            OsStr::new("--policies"),
            policies.as_os_str(),
            OsStr::new("--max-body-bytes"),
            OsStr::new("67108864"),
        ];
        if min_side != "auto" {
            args.extend([OsStr::new("--decode-min-side"), OsStr::new(min_side)]);
        }
        servers.push((min_side, cascade_bench::serve(args)?));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(60))).build().into();
    let ask = |base: &str, body: &[u8]| -> anyhow::Result<(Duration, f64)> {
        let t = Instant::now();
        let mut r = agent.post(&format!("{base}/v1/predict/speed")).header("Content-Type", "image/jpeg").send(body)?;
        let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
        let p = v["prediction"].as_f64().ok_or_else(|| anyhow::anyhow!("the server answered {v}"))?;
        Ok((t.elapsed(), p))
    };
    let resaved: Vec<Vec<u8>> = photos.iter().map(|p| resaved(p)).collect::<anyhow::Result<_>>()?;
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); servers.len()];
    let mut scores: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut resize_scores = Vec::new();
    for r in 0..rounds + 1 {
        for (i, p) in photos.iter().enumerate() {
            // distinct bytes each round: no decode or model result is shared between requests
            let body = cascade_bench::distinct_jpeg(p, (r * 1000 + i) as u64);
            for (k, (_, (_, base))) in servers.iter().enumerate() {
                let (took, score) = ask(base, &body)?;
                if r > 0 {
                    lat[k].push(took);
                }
                if r == 0 {
                    scores[k].push(score);
                }
            }
            if r == 0 {
                resize_scores.push(ask(&servers[0].1 .1, &resaved[i])?.1);
            }
        }
    }
    for (_, (child, _)) in &mut servers {
        let _ = child.kill();
    }
    let _ = std::fs::remove_dir_all(&work);
    header(&format!(
        "a 12 MP photo answered by `speed` over HTTP (image/jpeg body), {} photos × {rounds} rounds, round trip",
        photos.len()
    ));
    let names =
        ["--decode-min-side 0: full decode (peer)", "default (960): 1/2 in the DCT", "--decode-min-side 448: 1/4"];
    for (k, name) in names.iter().enumerate() {
        row(name, &summarise(lat[k].clone()));
    }
    let change = |a: &[f64], b: &[f64]| {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
        (d.iter().sum::<f64>() / d.len() as f64, d.iter().copied().fold(0.0, f64::max))
    };
    println!("\nthe answer's change against the full decode's, per photo: mean |Δ| / largest |Δ|\n");
    println!("| what | mean abs change | largest |");
    println!("|---|---|---|");
    for (k, name) in names.iter().enumerate().skip(1) {
        let (m, x) = change(&scores[k], &scores[0]);
        println!("| {name} | {m:.4} | {x:.4} |");
    }
    let (m, x) = change(&resize_scores, &scores[0]);
    println!("| reference: the photo resized to 3/4 and saved again, full decode | {m:.4} | {x:.4} |");
    Ok(())
}

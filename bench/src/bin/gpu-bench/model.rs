//! Model-only throughput of a registry model through the engine (its worker queue, batching,
//! pre-processing of already-sized inputs, the session on its device): batches of 1, 8 and 64
//! submitted at once, images/s from the model time the engine reports (a batch's upload,
//! pre-processing, run and read-back, one batch at a time), and the wall time from the first
//! submission to the last answer (which also counts the queue's hand-offs; for a model whose
//! `max_batch` is below the group, the only figure: its groups run as several batches). Then, at the largest batch, the
//! sustained rate: three batches' worth of images kept in flight, so that the pipelined worker
//! stages one batch while the session runs another, as under load; images/s from the wall clock.
//! Every answer is checked: the images submitted are four different pictures in turn, each
//! answered alone first, and the turn shifts by one picture from one group of requests to the
//! next (so that the answers of the batch before, or of the other input slot, would be another
//! picture's); the four are those of twelve made-up pictures whose lone answers differ most. An
//! answer is off when it is not within 0.002 + 0.2 % of its own picture's lone answer (its score
//! and top labels' probabilities, or an embedding's values) or, where the pictures' answers lie
//! apart, when another picture's is closer; a NaN is off. The labels themselves are not compared
//! (near-equal probabilities may swap places between batch sizes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_engines::{JobInput, Output};

/// Different pictures in turn, so that an answer read from the wrong output shows.
const PICTURES: usize = 4;
/// Pictures tried, of which the `PICTURES` answered most differently are used.
const CANDIDATES: u32 = 12;

/// Candidate `k`: blocky pseudo-random colours (blocks 1, 3, 8 or 28 pixels wide) for k < 8, then
/// orange-and-white stripes (a roadwork barrier's colours, which a roadwork head scores high),
/// plain orange, a black-to-white ramp, plain blue.
fn picture_candidate(k: u32, w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| match k {
        8 if (x + y) / 24 % 2 == 0 => image::Rgb([255, 110, 0]),
        8 => image::Rgb([245, 245, 245]),
        9 => image::Rgb([255, 110, 0]),
        10 => image::Rgb([(x * 255 / w.max(1)) as u8; 3]),
        11 => image::Rgb([20, 60, 200]),
        _ => {
            let scale = [1, 3, 8, 28][k as usize % 4];
            let mut v = (x / scale) as u64 | ((y / scale) as u64) << 20 | (k as u64) << 40;
            v = (v ^ (v >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            v = (v ^ (v >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            v ^= v >> 31;
            image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        }
    })
}

/// An answer as numbers to compare: a classification's score and top labels' probabilities,
/// an embedding's values (nothing for other kinds: they are not checked).
fn numbers(out: &Output) -> Vec<f32> {
    match out {
        Output::Classification { score, top } => std::iter::once(*score).chain(top.iter().map(|(_, p)| *p)).collect(),
        Output::Embedding(e) => e.clone(),
        _ => Vec::new(),
    }
}

/// How far `v` is from `reference`, in units of the tolerance (0.002 + 0.2 % of the reference's
/// value): at most 1 is within it; NaN (or another length) is infinitely far.
fn distance(v: &[f32], reference: &[f32]) -> f32 {
    if v.len() != reference.len() {
        return f32::INFINITY;
    }
    v.iter().zip(reference).fold(0.0, |far: f32, (a, b)| {
        let d = (a - b).abs() / (0.002 + 0.002 * b.abs());
        if d.is_nan() {
            f32::INFINITY
        } else {
            far.max(d)
        }
    })
}

/// args: POLICIES_DIR MODEL [BATCHES=1,8,64] [SECONDS=5]
pub fn main(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(args.len() >= 2, "usage: gpu-bench model POLICIES_DIR MODEL [BATCHES] [SECONDS]");
    let model = &args[1];
    let batches: Vec<usize> =
        args.get(2).map(|s| s.split(',').filter_map(|b| b.parse().ok()).collect()).unwrap_or(vec![1, 8, 64]);
    let seconds: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let (models, spec) = super::load_one(&args[0], model)?;
    // candidate pictures, each answered alone; the four whose lone answers lie farthest apart are
    // the ones submitted
    let mut candidates = Vec::new();
    for k in 0..CANDIDATES {
        let p = Arc::new(picture_candidate(k, spec.input.width, spec.input.height));
        let deadline = Instant::now() + Duration::from_secs(30);
        let r = models.submit(model, spec.kind, JobInput::Image(p.clone()), deadline)?.recv_deadline(deadline)?;
        candidates.push((p, numbers(&r.output?)));
    }
    // for comparing two files of one network (a rewrite, another precision) outside this run
    let lone: Vec<&Vec<f32>> = candidates.iter().map(|c| &c.1).collect();
    println!("lone answers of the {CANDIDATES} candidate pictures: {}", serde_json::to_string(&lone)?);
    let mut chosen = vec![candidates.swap_remove(0)];
    while chosen.len() < PICTURES {
        let far = |c: &(Arc<image::RgbImage>, Vec<f32>)| {
            chosen.iter().map(|p| distance(&c.1, &p.1)).fold(f32::INFINITY, f32::min)
        };
        let best = (0..candidates.len()).max_by(|&a, &b| far(&candidates[a]).total_cmp(&far(&candidates[b])));
        chosen.push(candidates.swap_remove(best.unwrap_or(0)));
    }
    let (pictures, reference): (Vec<_>, Vec<_>) = chosen.into_iter().unzip();
    let apart = (0..PICTURES)
        .flat_map(|a| (a + 1..PICTURES).map(move |b| (a, b)))
        .map(|(a, b)| distance(&reference[a], &reference[b]))
        .fold(f32::INFINITY, f32::min);
    let check = Check {
        pictures,
        reference,
        apart,
        groups: std::cell::Cell::new(0),
        answers: std::cell::Cell::new(0),
        off: std::cell::Cell::new(0),
    };
    println!("| model | device | batch | batches | images/s | batch p50 ms | wall p50 ms |");
    println!("|-------|--------|-------|---------|----------|--------------|-------------|");
    for &b in &batches {
        let (mut per_batch, mut walls) = (Vec::new(), Vec::new());
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let mut warm = 3;
        let mut split = 0usize;
        while Instant::now() < until || warm > 0 {
            let deadline = Instant::now() + Duration::from_secs(30);
            let g = check.group();
            let sent = Instant::now();
            let rxs: Vec<_> = (0..b)
                .map(|i| models.submit(model, spec.kind, JobInput::Image(check.picture(g, i)), deadline))
                .collect::<Result<_, _>>()?;
            let mut compute = Duration::ZERO;
            let mut sizes = Vec::new();
            for (i, rx) in rxs.into_iter().enumerate() {
                let r = rx.recv_deadline(deadline)?;
                check.answer(g, i, &r.output?);
                compute = compute.max(r.compute);
                sizes.push(r.batch);
            }
            let wall = sent.elapsed();
            if warm > 0 {
                warm -= 1;
                continue;
            }
            walls.push(wall.as_secs_f64() * 1e3);
            if sizes.iter().all(|s| *s == b) {
                per_batch.push(compute.as_secs_f64() * 1e3);
            } else {
                split += 1;
            }
        }
        walls.sort_by(f64::total_cmp);
        let wall = walls.get(walls.len() / 2).copied().unwrap_or(f64::NAN);
        per_batch.sort_by(f64::total_cmp);
        // a group the engine split into several batches (max_batch below b) has no one batch's
        // model time: its images/s and wall time still count
        let (n, p50) = match per_batch.get(per_batch.len() / 2) {
            Some(&p50) => (per_batch.len().to_string(), p50),
            None => (format!("0 ({split} groups split)"), wall),
        };
        println!(
            "| {model} | {} | {b} | {n} | {:.1} | {} | {wall:.3} |",
            spec.device,
            b as f64 / (p50 / 1e3),
            if per_batch.is_empty() { "—".to_string() } else { format!("{p50:.3}") },
        );
    }
    if let Some(&b) = batches.iter().max() {
        // on the engines' log stream: what follows (CASCADE_GPU_TRACE's lines) is load, not one
        // batch at a time
        eprintln!("gpu-bench: sustained load from here");
        sustained(&models, model, &spec, &check, b, seconds)?;
    }
    println!();
    println!(
        "answers checked against each picture's lone answer: {}, off: {} (the pictures' lone answers lie {apart:.1} tolerances apart at the closest{})",
        check.answers.get(),
        check.off.get(),
        if apart > 2.0 { "" } else { ": too close for the check to tell pictures apart" }
    );
    anyhow::ensure!(check.off.get() == 0, "{} answers were off: the engine mixed outputs up", check.off.get());
    Ok(())
}

/// The pictures submitted in turn and their lone answers; how many groups of requests were
/// sent (the turn shifts by one picture a group), how many answers were checked, and off.
struct Check {
    pictures: Vec<Arc<image::RgbImage>>,
    reference: Vec<Vec<f32>>,
    /// How far apart (in tolerances) the closest two pictures' lone answers lie.
    apart: f32,
    groups: std::cell::Cell<usize>,
    answers: std::cell::Cell<usize>,
    off: std::cell::Cell<usize>,
}

impl Check {
    /// The number of the next group of requests.
    fn group(&self) -> usize {
        let g = self.groups.get();
        self.groups.set(g + 1);
        g
    }

    /// The picture of request `i` of group `g`.
    fn picture(&self, g: usize, i: usize) -> Arc<image::RgbImage> {
        self.pictures[(i + g) % PICTURES].clone()
    }

    /// Checks the answer to request `i` of group `g`.
    fn answer(&self, g: usize, i: usize, out: &Output) {
        self.answers.set(self.answers.get() + 1);
        let v = numbers(out);
        let own = (i + g) % PICTURES;
        let d = distance(&v, &self.reference[own]);
        // another picture's answer closer counts only where the pictures' answers are apart
        let closer =
            self.apart > 2.0 && self.reference.iter().enumerate().any(|(k, r)| k != own && distance(&v, r) < d);
        let within = d <= 1.0; // false for NaN
        if !within || closer {
            self.off.set(self.off.get() + 1);
        }
    }
}

/// Keeps `3 × b` images in flight for `seconds` (each finished group of `b` replaced at once)
/// and prints images/s over the wall clock, with the batch sizes the engine formed.
fn sustained(
    models: &cascade_engines::Models,
    model: &str,
    spec: &cascade_engines::ModelSpec,
    check: &Check,
    b: usize,
    seconds: f64,
) -> anyhow::Result<()> {
    const DEPTH: usize = 3;
    let submit = || -> anyhow::Result<(usize, Vec<_>)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let g = check.group();
        let rxs = (0..b)
            .map(|i| Ok(models.submit(model, spec.kind, JobInput::Image(check.picture(g, i)), deadline)?))
            .collect::<anyhow::Result<_>>()?;
        Ok((g, rxs))
    };
    let mut flight: std::collections::VecDeque<_> = (0..DEPTH).map(|_| submit()).collect::<Result<_, _>>()?;
    // the first DEPTH groups warm the pipeline up; the clock starts when they are back
    let (mut done, mut batches, mut warm) = (0usize, Vec::new(), DEPTH);
    let mut started = Instant::now();
    let mut until = started + Duration::from_secs(3600);
    while let Some((g, group)) = flight.pop_front() {
        for (i, rx) in group.into_iter().enumerate() {
            let r = rx.recv_deadline(Instant::now() + Duration::from_secs(30))?;
            check.answer(g, i, &r.output?);
            if warm == 0 {
                batches.push(r.batch);
            }
        }
        if warm > 0 {
            warm -= 1;
            if warm == 0 {
                started = Instant::now();
                until = started + Duration::from_secs_f64(seconds);
            }
        } else {
            done += b;
        }
        if Instant::now() < until {
            flight.push_back(submit()?);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let mean_batch = batches.iter().sum::<usize>() as f64 / batches.len().max(1) as f64;
    println!();
    println!("| model | device | in flight | images | sustained images/s | ms per {b} images | mean batch |");
    println!("|-------|--------|-----------|--------|--------------------|-------------|------------|");
    println!(
        "| {model} | {} | {} | {done} | {:.1} | {:.3} | {mean_batch:.1} |",
        spec.device,
        DEPTH * b,
        done as f64 / wall,
        wall * 1e3 / (done as f64 / b as f64)
    );
    Ok(())
}

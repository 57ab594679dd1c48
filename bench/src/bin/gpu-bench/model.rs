//! Model-only throughput of a registry model through the engine (its worker queue, batching,
//! pre-processing of already-sized inputs, the session on its device): batches of 1, 8 and 64
//! submitted at once, images/s from the model time the engine reports (a batch's upload,
//! pre-processing, run and read-back, one batch at a time). Then, at the largest batch, the
//! sustained rate: three batches' worth of images kept in flight, so that the pipelined worker
//! stages one batch while the session runs another, as under load; images/s from the wall clock.
//! Every answer is checked: the images submitted are four different pictures in turn, each
//! answered alone first, and an answer further than 0.01 from its picture's lone answer (its
//! score or a top label's probability, or any value of an embedding) is counted as off — an
//! answer read from another batch's or another slot's output would be (the labels themselves
//! are not compared: near-equal probabilities may swap places between batch sizes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_engines::{JobInput, Output};

/// Different pictures in turn, so that an answer read from the wrong output shows.
const PICTURES: usize = 4;

/// An answer as numbers to compare: a classification's score and top labels' probabilities,
/// an embedding's values (nothing for other kinds: they are not checked).
fn numbers(out: &Output) -> Vec<f32> {
    match out {
        Output::Classification { score, top } => std::iter::once(*score).chain(top.iter().map(|(_, p)| *p)).collect(),
        Output::Embedding(e) => e.clone(),
        _ => Vec::new(),
    }
}

/// Whether `out` is off from its picture's lone answer.
fn off(out: &Output, reference: &[f32]) -> bool {
    let v = numbers(out);
    v.len() != reference.len() || v.iter().zip(reference).any(|(a, b)| (a - b).abs() > 0.01)
}

/// args: POLICIES_DIR MODEL [BATCHES=1,8,64] [SECONDS=5]
pub fn main(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(args.len() >= 2, "usage: gpu-bench model POLICIES_DIR MODEL [BATCHES] [SECONDS]");
    let model = &args[1];
    let batches: Vec<usize> =
        args.get(2).map(|s| s.split(',').filter_map(|b| b.parse().ok()).collect()).unwrap_or(vec![1, 8, 64]);
    let seconds: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let (models, spec) = super::load_one(&args[0], model)?;
    let pictures: Vec<Arc<image::RgbImage>> = (0..PICTURES as u32)
        .map(|k| {
            Arc::new(image::RgbImage::from_fn(spec.input.width, spec.input.height, |x, y| {
                image::Rgb([(x * (3 + k)) as u8, (y * (5 + 2 * k)) as u8, ((x + y * k) * 7) as u8])
            }))
        })
        .collect();
    let mut reference = Vec::new();
    for p in &pictures {
        let deadline = Instant::now() + Duration::from_secs(30);
        let r = models.submit(model, spec.kind, JobInput::Image(p.clone()), deadline)?.recv_deadline(deadline)?;
        reference.push(numbers(&r.output?));
    }
    let check = Check { pictures, reference, answers: std::cell::Cell::new(0), off: std::cell::Cell::new(0) };
    println!("| model | device | batch | batches | images/s | batch p50 ms |");
    println!("|-------|--------|-------|---------|----------|--------------|");
    for &b in &batches {
        let mut per_batch = Vec::new();
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let mut warm = 3;
        let mut split = 0usize;
        while Instant::now() < until || warm > 0 {
            let deadline = Instant::now() + Duration::from_secs(30);
            let rxs: Vec<_> = (0..b)
                .map(|i| models.submit(model, spec.kind, JobInput::Image(check.picture(i)), deadline))
                .collect::<Result<_, _>>()?;
            let mut compute = Duration::ZERO;
            let mut sizes = Vec::new();
            for (i, rx) in rxs.into_iter().enumerate() {
                let r = rx.recv_deadline(deadline)?;
                check.answer(i, &r.output?);
                compute = compute.max(r.compute);
                sizes.push(r.batch);
            }
            if warm > 0 {
                warm -= 1;
                continue;
            }
            if sizes.iter().all(|s| *s == b) {
                per_batch.push(compute.as_secs_f64() * 1e3);
            } else {
                split += 1;
            }
        }
        anyhow::ensure!(
            !per_batch.is_empty(),
            "every batch of {b} was split ({split} times): raise max_batch / max_delay_us"
        );
        per_batch.sort_by(f64::total_cmp);
        let p50 = per_batch[per_batch.len() / 2];
        println!(
            "| {model} | {} | {b} | {} | {:.1} | {:.3} |",
            spec.device,
            per_batch.len(),
            b as f64 / (p50 / 1e3),
            p50
        );
    }
    if let Some(&b) = batches.iter().max() {
        sustained(&models, model, &spec, &check, b, seconds)?;
    }
    println!();
    println!(
        "answers checked against each picture's lone answer: {}, off by more than 0.01: {}",
        check.answers.get(),
        check.off.get()
    );
    anyhow::ensure!(check.off.get() == 0, "{} answers were off: the engine mixed outputs up", check.off.get());
    Ok(())
}

/// The pictures submitted in turn and their lone answers; how many answers were checked, and off.
struct Check {
    pictures: Vec<Arc<image::RgbImage>>,
    reference: Vec<Vec<f32>>,
    answers: std::cell::Cell<usize>,
    off: std::cell::Cell<usize>,
}

impl Check {
    fn picture(&self, i: usize) -> Arc<image::RgbImage> {
        self.pictures[i % self.pictures.len()].clone()
    }

    fn answer(&self, i: usize, out: &Output) {
        self.answers.set(self.answers.get() + 1);
        if off(out, &self.reference[i % self.reference.len()]) {
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
    let submit = || -> anyhow::Result<Vec<_>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        (0..b).map(|i| Ok(models.submit(model, spec.kind, JobInput::Image(check.picture(i)), deadline)?)).collect()
    };
    let mut flight: std::collections::VecDeque<_> = (0..DEPTH).map(|_| submit()).collect::<Result<_, _>>()?;
    // the first DEPTH groups warm the pipeline up; the clock starts when they are back
    let (mut done, mut batches, mut warm) = (0usize, Vec::new(), DEPTH);
    let mut started = Instant::now();
    let mut until = started + Duration::from_secs(3600);
    while let Some(group) = flight.pop_front() {
        for (i, rx) in group.into_iter().enumerate() {
            let r = rx.recv_deadline(Instant::now() + Duration::from_secs(30))?;
            check.answer(i, &r.output?);
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

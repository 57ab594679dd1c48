//! Model-only throughput of a registry model through the engine (its worker queue, batching,
//! pre-processing of already-sized inputs, the session on its device): batches of 1, 8 and 64
//! submitted at once, images/s from the model time the engine reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_engines::JobInput;

/// args: POLICIES_DIR MODEL [BATCHES=1,8,64] [SECONDS=5]
pub fn main(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(args.len() >= 2, "usage: gpu-bench model POLICIES_DIR MODEL [BATCHES] [SECONDS]");
    let model = &args[1];
    let batches: Vec<usize> =
        args.get(2).map(|s| s.split(',').filter_map(|b| b.parse().ok()).collect()).unwrap_or(vec![1, 8, 64]);
    let seconds: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let (models, spec) = super::load_one(&args[0], model)?;
    let img = Arc::new(image::RgbImage::from_fn(spec.input.width, spec.input.height, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 5) as u8, ((x + y) * 7) as u8])
    }));
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
                .map(|_| models.submit(model, spec.kind, JobInput::Image(img.clone()), deadline))
                .collect::<Result<_, _>>()?;
            let mut compute = Duration::ZERO;
            let mut sizes = Vec::new();
            for rx in rxs {
                let r = rx.recv_deadline(deadline)?;
                r.output?;
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
    Ok(())
}

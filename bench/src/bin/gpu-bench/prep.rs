//! GPU vs CPU pre-processing of the same images for one model's input spec: the largest and
//! mean absolute difference of the normalised values (also in 8-bit levels), and the time for
//! the batch on each side.

use std::time::Instant;

use cascade_engines::{prepare, prepare_on_gpu, Device};

/// args: POLICIES MODEL IMAGES…
pub fn main(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(args.len() >= 3, "usage: gpu-bench prep POLICIES MODEL IMAGES…");
    let (_, spec) = super::registry_of(&args[0], &args[1])?;
    let Device::Cuda(dev) = spec.device else { anyhow::bail!("model {} is not on a CUDA device", spec.name) };
    let images: Vec<image::RgbImage> =
        args[2..].iter().map(|p| Ok(image::open(p)?.to_rgb8())).collect::<anyhow::Result<_>>()?;
    let refs: Vec<&image::RgbImage> = images.iter().collect();
    let per = 3 * (spec.input.width * spec.input.height) as usize;
    let started = Instant::now();
    let mut cpu = vec![0f32; per * images.len()];
    for (img, slot) in images.iter().zip(cpu.chunks_exact_mut(per)) {
        prepare(img, &spec.input, slot);
    }
    let cpu_t = started.elapsed();
    let (gpu, gpu_t) = prepare_on_gpu(dev, &spec.input, &refs).map_err(|e| anyhow::anyhow!(e))?;
    let level = spec.input.scale / spec.input.std.iter().copied().fold(f32::INFINITY, f32::min);
    let diffs: Vec<f32> = cpu.iter().zip(&gpu).map(|(a, b)| (a - b).abs()).collect();
    let max = diffs.iter().copied().fold(0.0, f32::max);
    let mean = diffs.iter().sum::<f32>() / diffs.len().max(1) as f32;
    let off = diffs.iter().filter(|d| **d > level * 0.5).count();
    let sizes: Vec<String> = images.iter().map(|i| format!("{}x{}", i.width(), i.height())).collect();
    println!(
        "{}",
        serde_json::json!({
            "model": spec.name, "images": images.len(), "sizes": sizes,
            "max_abs": max, "mean_abs": mean, "max_levels": max / level, "values_off_by_a_level": off, "values": diffs.len(),
            "cpu_ms": cpu_t.as_secs_f64() * 1e3, "gpu_ms": gpu_t.as_secs_f64() * 1e3,
        })
    );
    Ok(())
}

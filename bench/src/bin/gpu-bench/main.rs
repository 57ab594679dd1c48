//! GPU benchmarks and checks, run by scripts/gpu/run.sh on the GPU machine (each also runs on a
//! CPU registry). Subcommands:
//! - `model POLICIES MODEL [BATCHES] [SECONDS]`: model-only throughput through the engine;
//! - `prep POLICIES MODEL IMAGES…`: GPU vs CPU pre-processing, values and time;
//! - `e2e POLICIES MODEL JPEG_DIR CONCURRENCY SECONDS [RATE]`: JPEG bytes → score in process;
//! - `http URL JPEG_DIR CONCURRENCY SECONDS [RATE]`: the same against a running `cascade serve`;
//! - `nvjpeg JPEG_DIR [IN_FLIGHT] [ROUNDS]`: nvJPEG on the GPU against the server's CPU decoder.
//!
//! Load figures are printed as one JSON object per line (see `load::Figures`), for the table
//! scripts/gpu/run.sh prints beside the Python peer's.

mod load;
mod model;
mod nvjpeg;
mod prep;

use cascade_engines::{ModelSpec, Models, Registry};

fn main() -> anyhow::Result<()> {
    // on stderr: the engines' warnings always (a model that falls back to runs without CUDA
    // graphs says so, and why), their per-batch and per-call timing lines with CASCADE_GPU_TRACE
    let level = if std::env::var_os("CASCADE_GPU_TRACE").is_some() { "info" } else { "warn" };
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(level).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        Some("model") => model::main(rest),
        Some("prep") => prep::main(rest),
        Some("e2e") => load::e2e(rest),
        Some("http") => load::http(rest),
        Some("nvjpeg") => nvjpeg::main(rest),
        _ => anyhow::bail!("usage: gpu-bench model|prep|e2e|http|nvjpeg … (see the source's header)"),
    }
}

/// The registry in `policies` reduced to `model`, and that model's spec.
fn registry_of(policies: &str, model: &str) -> anyhow::Result<(Registry, ModelSpec)> {
    let mut reg = Registry::load(&std::path::Path::new(policies).join("models.toml"))?;
    reg.models.retain(|m| m.name == model);
    let spec = reg.models.first().ok_or_else(|| anyhow::anyhow!("no model {model} in {policies}"))?.clone();
    Ok((reg, spec))
}

/// Loads only `model` from the registry in `policies`.
fn load_one(policies: &str, model: &str) -> anyhow::Result<(Models, ModelSpec)> {
    let (reg, spec) = registry_of(policies, model)?;
    let models = Models::load(&reg, &cascade_engines::runtime_library()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok((models, spec))
}

//! `cascade infer`: one registry model on image files, for operators checking a model.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_engines::{JobInput, ModelKind, Models, Output, Registry};
use serde_json::json;

use cascade_common::image::{decode_image, IngressLimits};
use cascade_host::config::MODELS_FILE;
use clap::Args;

#[derive(Args)]
pub struct InferCommand {
    /// Hotkey files (`*.toml`) and the model registry (`models.toml`); default: `./policies`, else
    /// the one beside the binary's `target/` folder.
    #[arg(long, env = "CASCADE_POLICIES", default_value_os_t = cascade_host::default_policies())]
    policies: PathBuf,
    /// Model name in the registry.
    #[arg(long)]
    model: String,
    /// Detector: minimum confidence.
    #[arg(long, default_value_t = 0.25)]
    min_confidence: f32,
    /// Run each image this many times and report the median time.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Embedder: print every value of the embedding (default: its first eight).
    #[arg(long)]
    full: bool,
    /// VLM: the question to ask about each image.
    #[arg(long, default_value = "Is there active road construction in this image? Answer YES or NO.")]
    prompt: String,
    /// JPEG or PNG files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

impl InferCommand {
    /// Runs `model` on each image `repeat` times; prints the last result and the median times.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let (policies, model, images, repeat) = (&self.policies, self.model.as_str(), &self.images, self.repeat);
        let mut registry = Registry::load(&policies.join(MODELS_FILE))?;
        // only the model asked for is loaded: the others' start-up (CUDA warm-up) is not this check's
        if let Some((_, file)) = registry.absent.iter().find(|(name, _)| name == model) {
            anyhow::bail!("model {model} is optional and left out: {} is absent", file.display());
        }
        let Some(kind) = registry.models.iter().find(|m| m.name == model).map(|m| m.kind) else {
            let names: Vec<&str> = registry.models.iter().map(|m| m.name.as_str()).collect();
            anyhow::bail!("no model {model} in the registry (it has {})", names.join(", "));
        };
        registry.models.retain(|m| m.name == model);
        let models = Models::load(&registry, &cascade_engines::runtime_library())
            .map_err(|errs| anyhow::anyhow!(errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")))?;
        for path in images {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let img = decode_image(&bytes, &IngressLimits::default())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let img = Arc::new(img);
            let (mut wall, mut compute) = (Vec::new(), Vec::new());
            let mut last = None;
            for _ in 0..repeat.max(1) {
                let input = match kind {
                    ModelKind::Detector => JobInput::Detect(img.clone(), self.min_confidence),
                    ModelKind::Vlm => JobInput::Ask(img.clone(), self.prompt.clone()),
                    _ => JobInput::Image(img.clone()),
                };
                let started = Instant::now();
                let reply = models.run(model, kind, input, Instant::now() + Duration::from_secs(60))?;
                wall.push(started.elapsed().as_secs_f64() * 1e3);
                compute.push(reply.compute.as_secs_f64() * 1e3);
                last = Some(reply);
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (ms, model_ms) = (median(&mut wall), median(&mut compute));
            let reply = last.expect("at least one run");
            let result = match reply.output? {
                Output::Classification { score, top } => json!({"score": score, "top": top}),
                Output::Embedding(v) if self.full => json!({"dim": v.len(), "values": v}),
                Output::Embedding(v) => json!({"dim": v.len(), "head": &v[..v.len().min(8)]}),
                Output::Detections(d) => json!(d
                    .iter()
                    .map(|d| json!({"label": d.label, "confidence": d.confidence, "box": d.bbox}))
                    .collect::<Vec<_>>()),
                Output::TextLines(l) => json!(l
                    .iter()
                    .map(|l| json!({"text": l.text, "confidence": l.confidence, "box": l.bbox}))
                    .collect::<Vec<_>>()),
                Output::Answer(a) => json!({"text": a.text, "p_yes": a.p_yes, "source": a.source.as_str()}),
            };
            println!(
                "{}",
                json!({"image": path, "ms": ms, "model_ms": model_ms, "runs": repeat.max(1), "result": result})
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

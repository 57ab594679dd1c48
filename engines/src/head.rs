//! A small trained head applied to an embedder's output, so that "backbone + head" is one
//! classifier in the registry. The head is a JSON file (`cascade-head/1`) written by
//! `cascade train-head`: feature standardisation, then dense layers. A head records the
//! backbone it was trained on (ONNX file, input preparation, feature dimension); a classifier
//! that would feed it another input preparation is refused here at load, and one whose output
//! has another dimension by the worker when it opens the model, each naming both. The file's
//! name alone may differ (an fp16 conversion or a copy of the same backbone).

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::spec::{Activation, InputSpec, ModelSpec};
use crate::LoadError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub format: String,
    /// Labels of the outputs; a single output is the probability of the last label.
    pub labels: Vec<String>,
    pub input_dim: usize,
    /// Per-feature standardisation: (x − mean) / std; empty when folded into the first layer.
    #[serde(default)]
    pub mean: Vec<f32>,
    #[serde(default)]
    pub std: Vec<f32>,
    pub layers: Vec<Dense>,
    /// What the head was trained on; absent in heads written before it was recorded (those
    /// are checked for their dimension only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone: Option<Backbone>,
    /// Anything the trainer wants to keep beside the weights (metrics, command line).
    #[serde(default)]
    pub provenance: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dense {
    /// `[out][in]`.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
    pub relu: bool,
}

pub const FORMAT: &str = "cascade-head/1";

/// The backbone a head was trained on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Backbone {
    /// The registry name it was trained through (`dino-embed`); informative.
    pub model: String,
    /// The ONNX file's name (no folder), for messages: conversions and copies may rename it.
    pub file: String,
    /// The input preparation, as [`describe_input`] writes it: what must match.
    pub input: String,
    /// Features the backbone gives (the head's `input_dim`).
    pub dim: usize,
}

/// A model's input preparation in one comparable line: size, resize rule, colour order and
/// normalisation.
pub fn describe_input(i: &InputSpec) -> String {
    let short = i.resize_short.map_or(String::new(), |s| format!(" short {s}"));
    // the default filter is left unnamed: heads recorded before the filter could be chosen match
    let mut filter = match i.resample {
        crate::spec::Resample::Bilinear => String::new(),
        r => format!(" resample {r:?}"),
    };
    if i.resize_floor {
        filter.push_str(" floor");
    }
    format!(
        "{}x{} {:?}{short} {:?} scale {} mean {:?} std {:?}{filter}",
        i.width, i.height, i.resize, i.color, i.scale, i.mean, i.std
    )
    .to_lowercase()
}

impl Backbone {
    /// The backbone of a registry model whose output has `dim` features.
    pub fn of(spec: &ModelSpec, dim: usize) -> Backbone {
        Backbone { model: spec.name.clone(), file: file_name(&spec.file), input: describe_input(&spec.input), dim }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into_owned())
}

/// The head a model names, loaded and checked against the model; `None` when it names none.
pub(crate) fn of_model(spec: &ModelSpec) -> Result<Option<Arc<Head>>, LoadError> {
    let Some(p) = &spec.head else { return Ok(None) };
    let h = Head::load_for(p, spec).map_err(|reason| LoadError::Spec { model: spec.name.clone(), reason })?;
    if spec.activation != Activation::Sigmoid && h.outputs() == 1 {
        return Err(LoadError::Spec {
            model: spec.name.clone(),
            reason: "a one-output head needs activation = \"sigmoid\"".into(),
        });
    }
    Ok(Some(Arc::new(h)))
}

impl Head {
    pub fn load(path: &Path) -> Result<Head, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("head {}: {e}", path.display()))?;
        let h: Head = serde_json::from_str(&text).map_err(|e| format!("head {}: {e}", path.display()))?;
        h.check().map_err(|e| format!("head {}: {e}", path.display()))?;
        Ok(h)
    }

    /// [`Head::load`], then refuses a head trained on another backbone or input than `spec`'s.
    pub fn load_for(path: &Path, spec: &ModelSpec) -> Result<Head, String> {
        let h = Head::load(path)?;
        h.fits(spec).map_err(|e| format!("head {}: {e}", path.display()))?;
        Ok(h)
    }

    /// Whether the model `spec` prepares its input as the backbone this head was trained on
    /// did (the output's dimension is checked when the model is opened).
    pub fn fits(&self, spec: &ModelSpec) -> Result<(), String> {
        let Some(b) = &self.backbone else { return Ok(()) };
        let (file, input) = (file_name(&spec.file), describe_input(&spec.input));
        if b.input != input {
            return Err(format!(
                "trained for {} ({}, input {}, {} features), but model {} runs {} (input {})",
                b.file, b.model, b.input, b.dim, spec.name, file, input
            ));
        }
        Ok(())
    }

    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format {:?}, expected {FORMAT:?}", self.format));
        }
        if self.mean.len() != self.std.len() || !(self.mean.is_empty() || self.mean.len() == self.input_dim) {
            return Err("mean and std must both be empty or have input_dim entries".into());
        }
        let mut dim = self.input_dim;
        for (i, l) in self.layers.iter().enumerate() {
            if l.weights.is_empty() || l.weights.iter().any(|r| r.len() != dim) || l.bias.len() != l.weights.len() {
                return Err(format!("layer {i}: weights must be [out][{dim}] with out biases"));
            }
            dim = l.weights.len();
        }
        if self.layers.is_empty() {
            return Err("no layers".into());
        }
        if let Some(b) = self.backbone.as_ref().filter(|b| b.dim != self.input_dim) {
            return Err(format!("input_dim {} but its backbone {} gives {} features", self.input_dim, b.file, b.dim));
        }
        Ok(())
    }

    /// Folds the standardisation into the first layer (it is linear), leaving a smaller file
    /// with the same outputs.
    pub fn fold_standardisation(&mut self) {
        if self.mean.is_empty() {
            return;
        }
        let first = &mut self.layers[0];
        for (row, b) in first.weights.iter_mut().zip(first.bias.iter_mut()) {
            for ((w, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *w /= s;
                *b -= *w * m;
            }
        }
        self.mean.clear();
        self.std.clear();
    }

    /// Output logits for one embedding.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut v: Vec<f32> = if self.mean.is_empty() {
            x.to_vec()
        } else {
            x.iter().zip(&self.mean).zip(&self.std).map(|((x, m), s)| (x - m) / s).collect()
        };
        for l in &self.layers {
            v = l
                .weights
                .iter()
                .zip(&l.bias)
                .map(|(row, b)| {
                    let z = row.iter().zip(&v).map(|(w, x)| w * x).sum::<f32>() + b;
                    if l.relu {
                        z.max(0.0)
                    } else {
                        z
                    }
                })
                .collect();
        }
        v
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.weights.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_keeps_outputs() {
        let mut h = Head {
            format: FORMAT.into(),
            labels: vec!["other".into(), "roadwork".into()],
            input_dim: 3,
            mean: vec![1.0, -2.0, 0.5],
            std: vec![2.0, 0.5, 1.0],
            layers: vec![
                Dense { weights: vec![vec![0.3, -0.2, 0.1], vec![1.0, 0.0, -1.0]], bias: vec![0.1, -0.1], relu: true },
                Dense { weights: vec![vec![0.7, -0.4]], bias: vec![0.05], relu: false },
            ],
            backbone: None,
            provenance: serde_json::Value::Null,
        };
        h.check().unwrap();
        let x = [0.3, 1.7, -2.0];
        let before = h.forward(&x);
        h.fold_standardisation();
        h.check().unwrap();
        let after = h.forward(&x);
        assert!((before[0] - after[0]).abs() < 1e-5, "{before:?} {after:?}");
    }

    fn spec(file: &str, short: u32) -> ModelSpec {
        let toml = format!(
            "[[model]]\nname = \"roadwork\"\nkind = \"classifier\"\nfile = \"{file}\"\ninput = {{ width = 224, height = 224, resize = \"center_crop\", resize_short = {short}, mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }}\n"
        );
        let reg: crate::spec::Registry = toml::from_str(&toml).unwrap();
        reg.models.into_iter().next().unwrap()
    }

    #[test]
    fn a_head_for_another_backbone_or_input_is_refused_naming_both() {
        let trained_on = spec("../target/models/dinov2_vits14.onnx", 224);
        let mut h = Head {
            format: FORMAT.into(),
            labels: vec!["other".into(), "roadwork".into()],
            input_dim: 2,
            mean: vec![],
            std: vec![],
            layers: vec![Dense { weights: vec![vec![1.0, -1.0]], bias: vec![0.0], relu: false }],
            backbone: Some(Backbone::of(&trained_on, 2)),
            provenance: serde_json::Value::Null,
        };
        h.check().unwrap();
        h.fits(&trained_on).unwrap();
        // the same backbone elsewhere, or converted to fp16 under another name, fits
        h.fits(&spec("/elsewhere/dinov2_vits14.onnx", 224)).unwrap();
        h.fits(&spec("/gpu/dinov2_vits14_fp16.onnx", 224)).unwrap();
        // another input preparation (here: EfficientNet's short side of 256) is refused, naming both
        let e = h.fits(&spec("../target/models/efficientnet_lite0.onnx", 256)).unwrap_err();
        assert!(e.contains("dinov2_vits14.onnx") && e.contains("efficientnet_lite0.onnx"), "{e}");
        assert!(e.contains("short 224") && e.contains("short 256"), "{e}");
        // a head whose recorded dimension disagrees with its weights is inconsistent
        h.backbone.as_mut().unwrap().dim = 768;
        assert!(h.check().unwrap_err().contains("768"));
        // heads written before backbones were recorded still load (dimension checked by the worker)
        h.backbone = None;
        h.fits(&spec("../target/models/efficientnet_lite0.onnx", 256)).unwrap();
        let json = serde_json::to_string(&h).unwrap();
        assert!(!json.contains("backbone"), "{json}");
    }
}

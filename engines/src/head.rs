//! A small trained head applied to an embedder's output, so that "backbone + head" is one
//! classifier in the registry. The head is a JSON file (`cascade-head/1`) written by
//! `cascade train-head`: feature standardisation, then dense layers.

use std::path::Path;

use serde::{Deserialize, Serialize};

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

impl Head {
    pub fn load(path: &Path) -> Result<Head, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("head {}: {e}", path.display()))?;
        let h: Head = serde_json::from_str(&text).map_err(|e| format!("head {}: {e}", path.display()))?;
        h.check().map_err(|e| format!("head {}: {e}", path.display()))?;
        Ok(h)
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
}

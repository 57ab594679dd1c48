//! A hotkey's calibration: the map from its fused score to the probability it answers, so that
//! 0.5 is the right cut on the validators' 50/50 mix (their reward rounds at 0.5). Fitted by
//! `cascade calibrate` on held-out scores (Platt scaling on the score's logit, classes weighted
//! alike) and named by the hotkey file:
//!
//! ```toml
//! calibration = "calibration/speed.json"
//! ```
//!
//! The file records the hotkey it was fitted for and the SHA-256 of every head the fitted
//! scores went through; a file that names another hotkey, or a head that is no longer the
//! registry's, is refused at load naming both (its scores came from another model).

use std::collections::BTreeMap;
use std::path::Path;

use cascade_engines::Models;
use serde::{Deserialize, Serialize};

/// The calibration file's format (`format` in the file).
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub format: u32,
    /// The hotkey whose fused scores were fitted.
    pub hotkey: String,
    /// `platt`: p = sigmoid(a · logit(score) + b).
    pub method: String,
    pub a: f64,
    pub b: f64,
    /// Registry model name → SHA-256 of its head file when the scores were produced.
    pub heads: BTreeMap<String, String>,
    /// What the fit saw and how it did (written by `cascade calibrate`; not read).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub report: serde_json::Value,
}

/// Scores are clamped this far from 0 and 1 before their logit.
const EPS: f64 = 1e-6;

impl Calibration {
    /// The calibrated probability of a fused score in [0, 1].
    pub fn apply(&self, score: f32) -> f32 {
        let z = self.a * logit(f64::from(score)) + self.b;
        (1.0 / (1.0 + (-z).exp())) as f32
    }

    /// Reads `file` (relative paths against `base`) and checks it against the hotkey and the
    /// registry's heads.
    pub fn load(file: &Path, base: &Path, hotkey: &str, models: &Models) -> Result<Calibration, String> {
        let path = if file.is_absolute() { file.to_path_buf() } else { base.join(file) };
        let shown = file.display();
        let bytes = crate::files::read_regular(&path, crate::files::MAX_CONFIG_BYTES)
            .map_err(|e| format!("calibration {shown}: {e}"))?;
        let c: Calibration =
            serde_json::from_slice(&bytes).map_err(|e| format!("calibration {shown}: not a calibration file: {e}"))?;
        if c.format != FORMAT {
            return Err(format!("calibration {shown}: format {} (this build reads {FORMAT})", c.format));
        }
        if c.method != "platt" {
            return Err(format!("calibration {shown}: method {:?} (this build applies \"platt\")", c.method));
        }
        if !(c.a.is_finite() && c.b.is_finite() && c.a > 0.0) {
            return Err(format!(
                "calibration {shown}: a = {}, b = {} (a must be a positive number: a calibration never reverses the ranking)",
                c.a, c.b
            ));
        }
        if c.hotkey != hotkey {
            return Err(format!(
                "calibration {shown} was fitted for hotkey {:?}, not {hotkey:?}: fit one for this hotkey (`cascade calibrate --hotkey {hotkey}`)",
                c.hotkey
            ));
        }
        for (model, want) in &c.heads {
            let have = head_sha(models, model).map_err(|e| format!("calibration {shown}: {e}"))?;
            if &have != want {
                return Err(format!(
                    "calibration {shown} was fitted on scores of {model}'s head {} but the registry's {model} now has head {}: refit it (`cascade calibrate --hotkey {hotkey}`)",
                    short(want),
                    short(&have)
                ));
            }
        }
        Ok(c)
    }
}

/// The logit a calibration is applied to (and fitted on, `cascade calibrate`), the score
/// clamped [`EPS`] away from 0 and 1.
pub fn logit(score: f64) -> f64 {
    let s = score.clamp(EPS, 1.0 - EPS);
    (s / (1.0 - s)).ln()
}

fn short(sha: &str) -> String {
    format!("sha256 {}…", &sha[..sha.len().min(12)])
}

/// SHA-256 of the head file of registry model `model`.
pub fn head_sha(models: &Models, model: &str) -> Result<String, String> {
    spec_head_sha(models.spec(model).ok_or_else(|| format!("no model {model} in the registry"))?)
}

/// SHA-256 of the head file of a registry entry (what a calibration records).
pub fn spec_head_sha(spec: &cascade_engines::ModelSpec) -> Result<String, String> {
    let model = &spec.name;
    let head = spec.head.as_ref().ok_or_else(|| format!("model {model} has no head"))?;
    let bytes = crate::files::read_regular(head, crate::files::MAX_CONFIG_BYTES * 16)
        .map_err(|e| format!("{model}'s head {}: {e}", head.display()))?;
    Ok(crate::files::sha256_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(a: f64, b: f64) -> Calibration {
        Calibration {
            format: 1,
            hotkey: "speed".into(),
            method: "platt".into(),
            a,
            b,
            heads: BTreeMap::new(),
            report: serde_json::Value::Null,
        }
    }

    #[test]
    fn identity_keeps_scores_and_a_shift_moves_the_cut() {
        let id = cal(1.0, 0.0);
        for s in [0.01f32, 0.3, 0.5, 0.77, 0.99] {
            assert!((id.apply(s) - s).abs() < 1e-5, "{s}");
        }
        // b = -logit(0.6): a score of 0.6 becomes 0.5, the ranking is kept
        let shift = cal(1.0, -(0.6f64 / 0.4).ln());
        assert!((shift.apply(0.6) - 0.5).abs() < 1e-5);
        assert!(shift.apply(0.59) < 0.5 && shift.apply(0.61) > 0.5);
        // saturated scores stay finite and inside [0, 1]
        for s in [0.0f32, 1.0] {
            let p = cal(3.0, 1.0).apply(s);
            assert!(p.is_finite() && (0.0..=1.0).contains(&p));
        }
    }
}

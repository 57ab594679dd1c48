//! Classifier and embedder outputs: logits to probabilities, rows to vectors.

use crate::spec::{Activation, ModelSpec};

/// Probabilities for one image's logits.
pub(crate) fn probabilities(logits: &[f32], act: Activation) -> Vec<f32> {
    match act {
        Activation::None => logits.to_vec(),
        Activation::Sigmoid => logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
        Activation::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut p: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
            let sum: f32 = p.iter().sum();
            p.iter_mut().for_each(|x| *x /= sum);
            p
        }
    }
}

/// The model's score: the sum of its positive labels' probabilities. A single sigmoid output
/// is itself the score.
pub(crate) fn score(spec: &ModelSpec, probs: &[f32]) -> f32 {
    if probs.len() == 1 {
        return probs[0];
    }
    spec.positive_indices(probs.len()).iter().filter_map(|&i| probs.get(i)).sum::<f32>().clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one() {
        let p = probabilities(&[1.0, 2.0, 3.0], Activation::Softmax);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
        // values worked out by hand: e^k / (1 + e + e^2)
        let d = 1.0 + 1f32.exp() + 2f32.exp();
        assert!((p[0] - 1.0 / d).abs() < 1e-6 && (p[2] - 2f32.exp() / d).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn sigmoid_gives_the_known_values() {
        // 1 / (1 + e^-x): 0.5 at 0, 3/4 at ln 3, 1/4 at -ln 3
        let p = probabilities(&[0.0, 3f32.ln(), -(3f32.ln())], Activation::Sigmoid);
        for (got, want) in p.iter().zip([0.5, 0.75, 0.25]) {
            assert!((got - want).abs() < 1e-6, "{p:?}");
        }
    }
}

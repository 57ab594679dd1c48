//! Binary classification figures: confusion matrix, accuracy, MCC, F1, and the validator's
//! reward `(0.5·MCC + 0.5·accuracy)³`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub n: u64,
    pub accuracy: f64,
    pub mcc: f64,
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub reward: f64,
    pub confusion: Confusion,
}

impl Confusion {
    /// `pred` is P(roadwork); the validator reads > 0.5 as roadwork.
    pub fn add(&mut self, pred: f32, label: bool) {
        match (pred > 0.5, label) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, false) => self.tn += 1,
            (false, true) => self.fn_ += 1,
        }
    }

    pub fn figures(&self) -> Figures {
        let (tp, fp, tn, fn_) = (self.tp as f64, self.fp as f64, self.tn as f64, self.fn_ as f64);
        let n = tp + fp + tn + fn_;
        let div = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
        let accuracy = div(tp + tn, n);
        let precision = div(tp, tp + fp);
        let recall = div(tp, tp + fn_);
        let f1 = div(2.0 * precision * recall, precision + recall);
        let mcc = div(tp * tn - fp * fn_, ((tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_)).sqrt());
        let reward = (0.5 * mcc + 0.5 * accuracy).powi(3);
        Figures { n: n as u64, accuracy, mcc, f1, precision, recall, reward, confusion: *self }
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcc_and_reward() {
        let mut c = Confusion::default();
        for (p, l) in [(0.9, true), (0.8, true), (0.2, false), (0.6, false), (0.4, true)] {
            c.add(p, l);
        }
        let f = c.figures();
        assert_eq!(c, Confusion { tp: 2, fp: 1, tn: 1, fn_: 1 });
        assert!((f.accuracy - 0.6).abs() < 1e-12);
        assert!((f.mcc - 1.0 / 6.0).abs() < 1e-9, "{}", f.mcc);
        assert!((f.reward - (0.5 * f.mcc + 0.3).powi(3)).abs() < 1e-12);
        let mut half = Confusion::default();
        half.add(0.5, true);
        assert_eq!(half.fn_, 1, "0.5 is read as no roadwork");
    }
}

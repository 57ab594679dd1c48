//! Binary classification figures: confusion matrix, accuracy, MCC, F1, and the validator's
//! reward `(0.5·MCC + 0.5·accuracy)³`; and 95 % bootstrap intervals for accuracy and MCC, so a
//! figure of a few dozen images is read as the range it is.

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

/// Groups smaller than this are reported as too small to read.
pub const MIN_READABLE: u64 = 30;
/// Bootstrap resamples behind an interval.
pub const BOOTSTRAP_REPS: usize = 2000;

/// Each answer as (said roadwork, is roadwork): what intervals are drawn from.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub answers: Vec<(bool, bool)>,
}

/// 95 % percentile-bootstrap intervals.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Intervals {
    pub accuracy: [f64; 2],
    pub mcc: [f64; 2],
}

impl Sample {
    /// `pred` is P(roadwork), read as the validator reads it (> 0.5).
    pub fn add(&mut self, pred: f32, label: bool) {
        self.answers.push((pred > 0.5, label));
    }

    pub fn confusion(&self) -> Confusion {
        let mut c = Confusion::default();
        for &(said, is) in &self.answers {
            c.add(if said { 1.0 } else { 0.0 }, is);
        }
        c
    }

    /// Whether the group is large enough to read a figure from.
    pub fn readable(&self) -> bool {
        self.answers.len() as u64 >= MIN_READABLE
    }

    /// 95 % intervals from `reps` resamples with replacement (deterministic for a seed).
    pub fn intervals(&self, reps: usize, seed: u64) -> Option<Intervals> {
        let n = self.answers.len();
        if n == 0 || reps == 0 {
            return None;
        }
        let mut rng = SplitMix(seed ^ 0x9e37_79b9_7f4a_7c15);
        let (mut acc, mut mcc) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
        for _ in 0..reps {
            let mut c = Confusion::default();
            for _ in 0..n {
                let (said, is) = self.answers[(rng.next() % n as u64) as usize];
                c.add(if said { 1.0 } else { 0.0 }, is);
            }
            let f = c.figures();
            acc.push(f.accuracy);
            mcc.push(f.mcc);
        }
        acc.sort_by(f64::total_cmp);
        mcc.sort_by(f64::total_cmp);
        let ci = |v: &[f64]| [percentile(v, 0.025), percentile(v, 0.975)];
        Some(Intervals { accuracy: ci(&acc), mcc: ci(&mcc) })
    }
}

/// A small, fast generator for resampling (splitmix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
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
        // worked out by hand: (0.5 · 1/6 + 0.5 · 0.6)³ = (23/60)³ = 12167/216000
        assert!((f.reward - 12167.0 / 216000.0).abs() < 1e-12, "{}", f.reward);
        // and a case with no errors: MCC 1, accuracy 1, reward 1
        let mut perfect = Confusion::default();
        for (p, l) in [(0.9, true), (0.1, false), (0.7, true), (0.3, false)] {
            perfect.add(p, l);
        }
        let pf = perfect.figures();
        assert_eq!((pf.mcc, pf.accuracy, pf.reward), (1.0, 1.0, 1.0));
        let mut half = Confusion::default();
        half.add(0.5, true);
        assert_eq!(half.fn_, 1, "0.5 is read as no roadwork");
    }

    #[test]
    fn bootstrap_intervals_hold_the_figure_and_narrow_with_more_images() {
        // 80 % right, both classes even
        let sample = |n: usize| {
            let mut s = Sample::default();
            for i in 0..n {
                let label = i % 2 == 0;
                let right = i % 10 < 8;
                s.add(if label == right { 0.9 } else { 0.1 }, label);
            }
            s
        };
        let (small, large) = (sample(40), sample(1000));
        let f = large.confusion().figures();
        let (a, b) = (small.intervals(BOOTSTRAP_REPS, 1).unwrap(), large.intervals(BOOTSTRAP_REPS, 1).unwrap());
        assert!(b.accuracy[0] <= f.accuracy && f.accuracy <= b.accuracy[1], "{b:?}");
        assert!(b.mcc[0] <= f.mcc && f.mcc <= b.mcc[1], "{b:?} {}", f.mcc);
        assert!(a.mcc[1] - a.mcc[0] > 2.0 * (b.mcc[1] - b.mcc[0]), "{a:?} vs {b:?}");
        // about ±0.025 for accuracy 0.8 over 1000 images
        assert!((b.accuracy[1] - b.accuracy[0] - 0.05).abs() < 0.015, "{b:?}");
        assert_eq!(small.intervals(100, 7), small.intervals(100, 7), "a seed gives the same interval");
        assert!(!sample(29).readable() && sample(30).readable());
        assert_eq!(Sample::default().intervals(10, 1), None);
    }
}

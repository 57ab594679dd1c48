//! Greedy CTC decoding of the recogniser's per-step probabilities.

/// Argmax per step; repeats collapse and the blank (0) separates; confidence is the mean of
/// the kept maxima.
pub(super) fn greedy(rows: &[f32], classes: usize, dict: &[String]) -> (String, f32) {
    let mut text = String::new();
    let (mut sum, mut n) = (0f32, 0usize);
    let mut prev = usize::MAX;
    for step in rows.chunks_exact(classes) {
        let (idx, p) = step.iter().enumerate().fold((0usize, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        if idx != 0 && idx != prev {
            if let Some(ch) = dict.get(idx) {
                text.push_str(ch);
                sum += p;
                n += 1;
            }
        }
        prev = idx;
    }
    (text, if n == 0 { 0.0 } else { sum / n as f32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_repeats_and_blanks() {
        let dict: Vec<String> = ["", "A", "B", " "].iter().map(|s| s.to_string()).collect();
        // steps: A A blank A B space
        let steps = [1usize, 1, 0, 1, 2, 3];
        let mut rows = vec![0.0f32; steps.len() * 4];
        for (t, &i) in steps.iter().enumerate() {
            rows[t * 4 + i] = 0.9;
        }
        let (text, conf) = greedy(&rows, 4, &dict);
        assert_eq!(text, "AAB ");
        assert!((conf - 0.9).abs() < 1e-6);
    }
}

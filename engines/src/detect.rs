//! Detector output decoding (YOLOX head) and class-wise non-maximum suppression.

use crate::preprocess::Prepared;
use crate::spec::{DetectorSpec, InputSpec};

/// Decodes one image's `[cells, 5 + classes]` rows: boxes above `min_conf`, in input pixels.
pub fn decode_yolox(
    rows: &[f32],
    width: usize,
    spec: &DetectorSpec,
    input: &InputSpec,
    min_conf: f32,
) -> Vec<(u32, f32, [f32; 4])> {
    let mut out = Vec::new();
    let classes = width.saturating_sub(5);
    if classes == 0 {
        return out;
    }
    let mut cell = 0usize;
    for &stride in &spec.strides {
        let (gw, gh) = (input.width / stride, input.height / stride);
        for gy in 0..gh {
            for gx in 0..gw {
                let Some(r) = rows.get(cell * width..(cell + 1) * width) else { return out };
                cell += 1;
                let obj = r[4];
                if obj < min_conf {
                    continue;
                }
                let (best, score) =
                    r[5..]
                        .iter()
                        .enumerate()
                        .fold((0usize, f32::MIN), |acc, (i, &s)| if s > acc.1 { (i, s) } else { acc });
                let conf = obj * score;
                if conf < min_conf {
                    continue;
                }
                let s = stride as f32;
                let cx = (r[0] + gx as f32) * s;
                let cy = (r[1] + gy as f32) * s;
                let w = r[2].exp() * s;
                let h = r[3].exp() * s;
                out.push((best as u32, conf, [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]));
            }
        }
    }
    out
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Class-wise NMS: keeps the best box of each overlapping group of the same class.
pub fn nms(mut boxes: Vec<(u32, f32, [f32; 4])>, iou_threshold: f32, max: usize) -> Vec<(u32, f32, [f32; 4])> {
    boxes.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept: Vec<(u32, f32, [f32; 4])> = Vec::new();
    for b in boxes {
        if kept.len() >= max {
            break;
        }
        if kept.iter().all(|k| k.0 != b.0 || iou(&k.2, &b.2) <= iou_threshold) {
            kept.push(b);
        }
    }
    kept
}

/// Maps input-pixel boxes back to the original image and clamps them to it.
pub fn to_original(b: [f32; 4], p: &Prepared, w: u32, h: u32) -> [f32; 4] {
    let (x0, y0) = p.to_original(b[0], b[1]);
    let (x1, y1) = p.to_original(b[2], b[3]);
    let (w, h) = (w as f32, h as f32);
    [x0.clamp(0.0, w), y0.clamp(0.0, h), x1.clamp(0.0, w), y1.clamp(0.0, h)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nms_is_class_wise() {
        let a = (0, 0.9, [0.0, 0.0, 10.0, 10.0]);
        let b = (0, 0.8, [1.0, 1.0, 10.0, 10.0]);
        let c = (1, 0.7, [1.0, 1.0, 10.0, 10.0]);
        let kept = nms(vec![b, a, c], 0.45, 10);
        assert_eq!(kept, vec![a, c]);
    }

    #[test]
    fn decode_one_cell() {
        let spec = DetectorSpec { strides: vec![32], ..DetectorSpec::default() };
        let input = InputSpec { width: 64, height: 32, ..InputSpec::default() };
        // two cells (2×1 grid); the second has a box of 32×32 centred at (48, 16)
        let mut rows = vec![0f32; 2 * 7];
        rows[7..].copy_from_slice(&[0.5, 0.5, 0.0, 0.0, 0.9, 0.1, 0.8]);
        let d = decode_yolox(&rows, 7, &spec, &input, 0.5);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, 1);
        assert!((d[0].1 - 0.72).abs() < 1e-6);
        assert_eq!(d[0].2, [32.0, 0.0, 64.0, 32.0]);
    }
}

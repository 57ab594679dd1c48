//! Detector output decoding — YOLOX, Ultralytics YOLOv8/YOLO11 raw heads, end-to-end YOLO
//! exports and the DETR family — the load-time check that a file's outputs fit its format, and
//! class-wise non-maximum suppression.

use crate::preprocess::Prepared;
use crate::spec::{Activation, DetectorFormat, DetectorSpec, InputSpec};

/// A box before mapping back: class, confidence, x0, y0, x1, y1 in input pixels.
pub(crate) type Raw = (u32, f32, [f32; 4]);

/// One image's outputs: the primary output's values and per-image dimensions (the batch
/// dimension dropped), and for a two-output DETR the class scores.
pub(crate) struct ImageOutputs<'a> {
    pub out: &'a [f32],
    pub dims: &'a [i64],
    pub logits: Option<(&'a [f32], &'a [i64])>,
}

/// Decodes one image's outputs by the registry's format; boxes at or above `min_conf`, NMS
/// applied where the format needs it.
pub(crate) fn decode(
    o: &ImageOutputs,
    spec: &DetectorSpec,
    input: &InputSpec,
    classes: usize,
    min_conf: f32,
) -> Vec<Raw> {
    let last = o.dims.last().copied().unwrap_or(0).max(0) as usize;
    match spec.format {
        DetectorFormat::Yolox => {
            nms(decode_yolox(o.out, last, spec, input, min_conf), spec.nms_iou, spec.max_detections)
        }
        DetectorFormat::Yolov8 => {
            let (a, b) = (dim(o.dims, 0), dim(o.dims, 1));
            // exported as [4 + classes, anchors]; the transpose when the rows are the anchors
            let channels_first = if classes > 0 { a == 4 + classes } else { a < b };
            let boxes = decode_yolov8(o.out, if channels_first { (a, b) } else { (b, a) }, channels_first, min_conf);
            nms(boxes, spec.nms_iou, spec.max_detections)
        }
        DetectorFormat::YoloEnd2end => {
            let mut out: Vec<Raw> = o
                .out
                .chunks_exact(last.max(1))
                .filter(|r| r.len() >= 6 && r[4] >= min_conf && r[4].is_finite())
                .map(|r| (r[5].max(0.0) as u32, r[4], [r[0], r[1], r[2], r[3]]))
                .collect();
            out.truncate(spec.max_detections);
            out
        }
        DetectorFormat::Detr => {
            let (w, h) = (input.width as f32, input.height as f32);
            let (boxes, scores, width): (Vec<&[f32]>, Vec<&[f32]>, usize) = match o.logits {
                Some((l, ldims)) => {
                    let lw = ldims.last().copied().unwrap_or(0).max(1) as usize;
                    (o.out.chunks_exact(4).collect(), l.chunks_exact(lw).collect(), lw)
                }
                None => {
                    let rows: Vec<&[f32]> = o.out.chunks_exact(last.max(5)).collect();
                    (
                        rows.iter().map(|r| &r[..4]).collect(),
                        rows.iter().map(|r| &r[4..]).collect(),
                        last.saturating_sub(4),
                    )
                }
            };
            let mut out = Vec::new();
            for (b, sc) in boxes.iter().zip(&scores) {
                let probs = class_probabilities(sc, spec.activation);
                let Some((best, conf)) = best(&probs[..width.min(probs.len())]) else { continue };
                if conf < min_conf {
                    continue;
                }
                let (cx, cy, bw, bh) = (b[0] * w, b[1] * h, b[2] * w, b[3] * h);
                out.push((best as u32, conf, [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0]));
            }
            out.sort_by(|a, b| b.1.total_cmp(&a.1));
            out.truncate(spec.max_detections);
            out
        }
    }
}

fn dim(dims: &[i64], i: usize) -> usize {
    dims.get(i).copied().unwrap_or(0).max(0) as usize
}

/// The best class and its score.
fn best(scores: &[f32]) -> Option<(usize, f32)> {
    scores.iter().copied().enumerate().filter(|(_, s)| s.is_finite()).max_by(|a, b| a.1.total_cmp(&b.1))
}

/// A DETR query's class probabilities; softmax drops the last ("no object") class.
fn class_probabilities(scores: &[f32], act: Activation) -> Vec<f32> {
    match act {
        Activation::None => scores.to_vec(),
        Activation::Sigmoid => scores.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
        Activation::Softmax => {
            let m = scores.iter().copied().fold(f32::MIN, f32::max);
            let e: Vec<f32> = scores.iter().map(|&x| (x - m).exp()).collect();
            let sum: f32 = e.iter().sum();
            e[..e.len().saturating_sub(1)].iter().map(|v| v / sum).collect()
        }
    }
}

/// Ultralytics raw head: `dims` = (4 + classes, anchors); centre x, y, width, height and class
/// probabilities per anchor, stored channel-major when `channels_first`.
pub(crate) fn decode_yolov8(out: &[f32], dims: (usize, usize), channels_first: bool, min_conf: f32) -> Vec<Raw> {
    let (ch, anchors) = dims;
    if ch < 5 || out.len() < ch * anchors {
        return Vec::new();
    }
    let at = |c: usize, a: usize| if channels_first { out[c * anchors + a] } else { out[a * ch + c] };
    let mut res = Vec::new();
    for a in 0..anchors {
        let (mut cls, mut conf) = (0usize, f32::MIN);
        for c in 4..ch {
            let v = at(c, a);
            if v > conf {
                (cls, conf) = (c - 4, v);
            }
        }
        if conf < min_conf || !conf.is_finite() {
            continue;
        }
        let (cx, cy, w, h) = (at(0, a), at(1, a), at(2, a), at(3, a));
        res.push((cls as u32, conf, [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]));
    }
    res
}

/// Checks at load that the file's outputs fit the registry's format: `outputs` are (name,
/// shape) with -1 for dynamic dimensions; `primary` is the output boxes are read from.
pub(crate) fn check_layout(
    spec: &DetectorSpec,
    outputs: &[(String, Vec<i64>)],
    primary: &str,
    classes: usize,
) -> Result<(), String> {
    let found = || {
        let all: Vec<String> = outputs.iter().map(|(n, s)| format!("{n} {s:?}")).collect();
        all.join(", ")
    };
    let shape = |name: &str| outputs.iter().find(|(n, _)| n == name).map(|(_, s)| s.as_slice());
    let fits = |d: i64, want: usize| d < 0 || d as usize == want;
    let at_least = |d: i64, want: usize| d < 0 || d as usize >= want;
    let p = shape(primary).unwrap_or(&[]);
    let ok = match spec.format {
        DetectorFormat::Yolox => p.len() == 3 && at_least(p[2], 6) && (classes == 0 || fits(p[2], 5 + classes)),
        DetectorFormat::Yolov8 => {
            p.len() == 3
                && if classes > 0 {
                    fits(p[1], 4 + classes) || fits(p[2], 4 + classes)
                } else {
                    at_least(p[1], 5) || at_least(p[2], 5)
                }
        }
        DetectorFormat::YoloEnd2end => p.len() == 3 && fits(p[2], 6),
        DetectorFormat::Detr => match &spec.logits {
            None => p.len() == 3 && at_least(p[2], 5) && (classes == 0 || fits(p[2], 4 + classes)),
            Some(l) => {
                let Some(ls) = shape(l) else {
                    return Err(format!(
                        "detector.logits names output {l}, which the model lacks (it has {})",
                        found()
                    ));
                };
                let extra = usize::from(spec.activation == Activation::Softmax);
                p.len() == 3
                    && fits(p[2], 4)
                    && ls.len() == 3
                    && (p[1] < 0 || ls[1] < 0 || p[1] == ls[1])
                    && (classes == 0 || fits(ls[2], classes + extra))
            }
        },
    };
    if ok {
        return Ok(());
    }
    let want = match spec.format {
        DetectorFormat::Yolox => "[N, cells, 5 + classes]".to_string(),
        DetectorFormat::Yolov8 => "[N, 4 + classes, anchors] (or its transpose)".to_string(),
        DetectorFormat::YoloEnd2end => "[N, detections, 6]".to_string(),
        DetectorFormat::Detr if spec.logits.is_some() => {
            "boxes [N, queries, 4] and logits [N, queries, classes]".into()
        }
        DetectorFormat::Detr => "[N, queries, 4 + classes]".to_string(),
    };
    let labels = if classes > 0 { format!(" with {classes} labels") } else { String::new() };
    Err(format!(
        "outputs match no {} layout{labels}: expected {want} from output {primary}; found {}",
        spec.format.as_str(),
        found()
    ))
}

/// Class names from an Ultralytics export's `names` metadata, a Python dict literal such as
/// `{0: 'person', 1: "men's"}`; `None` when it is not one.
pub(crate) fn ultralytics_names(meta: &str) -> Option<Vec<String>> {
    let body = meta.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut names: Vec<(usize, String)> = Vec::new();
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let colon = rest.find(':')?;
        let idx: usize = rest[..colon].trim().parse().ok()?;
        let after = rest[colon + 1..].trim_start();
        let quote = after.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let end = after[1..].find(quote)? + 1;
        names.push((idx, after[1..end].to_string()));
        rest = after[end + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    names.sort();
    names.iter().enumerate().all(|(i, (k, _))| i == *k).then(|| names.into_iter().map(|(_, n)| n).collect())
}

/// Decodes one image's `[cells, 5 + classes]` rows: boxes above `min_conf`, in input pixels.
fn decode_yolox(
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
pub(crate) fn nms(mut boxes: Vec<(u32, f32, [f32; 4])>, iou_threshold: f32, max: usize) -> Vec<(u32, f32, [f32; 4])> {
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
pub(crate) fn to_original(b: [f32; 4], p: &Prepared, w: u32, h: u32) -> [f32; 4] {
    let (x0, y0) = p.to_original(b[0], b[1]);
    let (x1, y1) = p.to_original(b[2], b[3]);
    let (w, h) = (w as f32, h as f32);
    [x0.clamp(0.0, w), y0.clamp(0.0, h), x1.clamp(0.0, w), y1.clamp(0.0, h)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yolov8_heads_decode_channels_first_and_transposed() {
        // 2 classes, 3 anchors; anchor 1 holds class 1 at 0.8, a 20×10 box centred at (50, 40)
        let mut cf = vec![0f32; 6 * 3];
        for (c, v) in [(0, 50.0), (1, 40.0), (2, 20.0), (3, 10.0), (4, 0.1), (5, 0.8)] {
            cf[c * 3 + 1] = v;
        }
        let want = vec![(1u32, 0.8f32, [40.0f32, 35.0, 60.0, 45.0])];
        assert_eq!(decode_yolov8(&cf, (6, 3), true, 0.5), want);
        let mut t = vec![0f32; 3 * 6];
        for c in 0..6 {
            t[6 + c] = cf[c * 3 + 1];
        }
        assert_eq!(decode_yolov8(&t, (6, 3), false, 0.5), want);
        let spec = DetectorSpec { format: DetectorFormat::Yolov8, ..DetectorSpec::default() };
        let input = InputSpec::default();
        let o = ImageOutputs { out: &t, dims: &[3, 6], logits: None };
        assert_eq!(decode(&o, &spec, &input, 2, 0.5), want, "orientation told by the label count");
    }

    #[test]
    fn detr_queries_decode_normalised_boxes_with_their_activation() {
        let input = InputSpec { width: 100, height: 200, ..InputSpec::default() };
        // one output: [queries, 4 + 2]
        let rows = [0.5, 0.5, 0.2, 0.1, 0.9, 0.05, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3];
        let spec = DetectorSpec { format: DetectorFormat::Detr, ..DetectorSpec::default() };
        let o = ImageOutputs { out: &rows, dims: &[2, 6], logits: None };
        assert_eq!(decode(&o, &spec, &input, 2, 0.5), vec![(0, 0.9, [40.0, 90.0, 60.0, 110.0])]);
        // two outputs, softmax over 2 classes + "no object"
        let boxes = [0.5, 0.5, 0.2, 0.1];
        let logits = [0.0, 3.0, 0.0];
        let spec = DetectorSpec { logits: Some("logits".into()), activation: Activation::Softmax, ..spec };
        let o = ImageOutputs { out: &boxes, dims: &[1, 4], logits: Some((&logits, &[1, 3])) };
        let d = decode(&o, &spec, &input, 2, 0.5);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, 1);
        assert!((d[0].1 - 3f32.exp() / (2.0 + 3f32.exp())).abs() < 1e-6);
    }

    #[test]
    fn end_to_end_rows_are_taken_as_they_are() {
        let rows = [10.0, 20.0, 30.0, 40.0, 0.7, 2.0, 0.0, 0.0, 1.0, 1.0, 0.1, 0.0];
        let spec = DetectorSpec { format: DetectorFormat::YoloEnd2end, ..DetectorSpec::default() };
        let o = ImageOutputs { out: &rows, dims: &[2, 6], logits: None };
        assert_eq!(decode(&o, &spec, &InputSpec::default(), 0, 0.25), vec![(2, 0.7, [10.0, 20.0, 30.0, 40.0])]);
    }

    #[test]
    fn layouts_are_checked_against_the_outputs_found() {
        let v8 = DetectorSpec { format: DetectorFormat::Yolov8, ..DetectorSpec::default() };
        let out = |s: &[i64]| vec![("output0".to_string(), s.to_vec())];
        assert!(check_layout(&v8, &out(&[1, 84, 8400]), "output0", 80).is_ok());
        assert!(check_layout(&v8, &out(&[-1, 8400, 84]), "output0", 80).is_ok());
        let e = check_layout(&v8, &out(&[1, 85, 8400]), "output0", 80).unwrap_err();
        assert!(e.contains("no yolov8 layout with 80 labels") && e.contains("output0 [1, 85, 8400]"), "{e}");
        let e2e = DetectorSpec { format: DetectorFormat::YoloEnd2end, ..DetectorSpec::default() };
        assert!(check_layout(&e2e, &out(&[1, 300, 6]), "output0", 80).is_ok());
        assert!(check_layout(&e2e, &out(&[1, 84, 8400]), "output0", 80).is_err());
        let detr =
            DetectorSpec { format: DetectorFormat::Detr, logits: Some("labels".into()), ..DetectorSpec::default() };
        let two = vec![("dets".to_string(), vec![1, 300, 4]), ("labels".to_string(), vec![1, 300, 91])];
        assert!(check_layout(&detr, &two, "dets", 91).is_ok());
        let e = check_layout(&detr, &two[..1], "dets", 91).unwrap_err();
        assert!(e.contains("names output labels, which the model lacks"), "{e}");
    }

    #[test]
    fn ultralytics_names_metadata_is_read() {
        assert_eq!(
            ultralytics_names("{0: 'person', 1: \"men's\", 2: 'traffic light'}").unwrap(),
            vec!["person", "men's", "traffic light"]
        );
        assert_eq!(ultralytics_names("{}").unwrap(), Vec::<String>::new());
        assert!(ultralytics_names("person,car").is_none());
        assert!(ultralytics_names("{1: 'a'}").is_none(), "indices must start at 0 without gaps");
    }

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

//! The OCR pipeline behind `read-text`: DBNet text detection (binarise, regions, minimum-area
//! boxes, unclip, map back), optional 0°/180° orientation, CTC recognition of the line crops
//! in batches. PP-OCR conventions: BGR, (x/255 − 0.5)/0.5, recogniser height 48.

mod ctc;
pub(crate) mod geometry;

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use image::imageops;
use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;

use crate::engine::queue::{reply_all, take_one};
use crate::engine::{Engine, Job, ModelStats, Output, TextLine};
use crate::lifecycle::Launch;
use crate::precision::Precision;
use crate::preprocess::prepare;
use crate::session::{session, session_for};
use crate::spec::{ColorOrder, Device, InputSpec, ModelSpec, OcrSpec, ResizeMode};
use crate::{EngineError, LoadError};
use geometry::{convex_hull, crop_rotated, min_area_rect, regions, RotatedRect};

const REC_HEIGHT: u32 = 48;
const REC_MIN_WIDTH: u32 = 320;
/// Widest line crop (width / height) the recogniser gets; longer lines are squeezed.
const REC_MAX_RATIO: f32 = 40.0;
const CLS_SIZE: (u32, u32) = (192, 48);
/// On CUDA the recogniser always runs this wide (lines up to 20 times their height; longer
/// ones are squeezed), `rec_batch` rows, and the orientation model `rec_batch` rows: ONNX
/// Runtime's CUDA kernels re-plan whenever an input shape differs from the previous run's
/// (measured on an H200: most OCR calls 7 ms, one in eight ~350 ms, as line widths and counts
/// vary), so one fixed shape each, padded, costs far less than the shapes the text would give.
const REC_CUDA_WIDTH: u32 = 960;

pub(crate) struct OcrSessions {
    pub det: Session,
    pub rec: Session,
    pub cls: Option<Session>,
    /// Index i of the recogniser's output is `dict[i]`; 0 is the CTC blank.
    pub dict: Vec<String>,
}

pub(crate) struct OcrWorker {
    pub s: OcrSessions,
    pub spec: Arc<ModelSpec>,
    pub stats: Arc<ModelStats>,
}

/// Builds the dictionary from the recogniser's `character` metadata: blank, the characters,
/// then a space.
pub(crate) fn dictionary(meta: &str) -> Vec<String> {
    let mut d = vec![String::new()];
    d.extend(meta.lines().map(|l| l.trim_end_matches('\r').to_string()));
    d.push(" ".into());
    d
}

/// Starts the model's workers, each with its own three sessions, warmed on CUDA.
pub(crate) fn start(l: &mut Launch<'_>) -> Result<(), LoadError> {
    let (env, spec, stats) = (l.env.clone(), l.spec.clone(), l.stats.clone());
    l.workers(|| {
        let (env, spec, stats) = (env.clone(), spec.clone(), stats.clone());
        move || {
            let mut w = OcrWorker { s: ocr_sessions(&env, &spec)?, spec: spec.clone(), stats: stats.clone() };
            if matches!(spec.device, Device::Cuda(_)) {
                w.warm_up()
                    .map_err(|e| LoadError::Spec { model: spec.name.clone(), reason: format!("warm-up: {e}") })?;
            }
            Ok(w)
        }
    })
}

/// The three PP-OCR sessions and the recogniser's dictionary (its `character` metadata).
fn ocr_sessions(env: &ort::environment::Environment, spec: &ModelSpec) -> Result<OcrSessions, LoadError> {
    let o = spec
        .ocr
        .as_ref()
        .ok_or_else(|| LoadError::Spec { model: spec.name.clone(), reason: "no [ocr] table".into() })?;
    let det = session(env, spec)?;
    let rec = session_for(env, spec, &o.rec)?;
    let cls = o.cls.as_ref().map(|c| session_for(env, spec, c)).transpose()?;
    // the OCR pipeline feeds and reads f32 only (its inputs vary in shape per image and line)
    for (s, file) in
        [(Some(&det), &spec.file), (Some(&rec), &o.rec), (cls.as_ref(), o.cls.as_ref().unwrap_or(&spec.file))]
    {
        if let Some(s) = s {
            if Precision::of_input(s, spec)? != Precision::F32 {
                return Err(LoadError::Spec {
                    model: spec.name.clone(),
                    reason: format!("{}: OCR models must be fp32 (this one takes fp16 input)", file.display()),
                });
            }
        }
    }
    let meta = rec.metadata().ok().and_then(|m| m.custom("character")).ok_or_else(|| LoadError::Spec {
        model: spec.name.clone(),
        reason: format!("{} has no `character` metadata (the dictionary)", o.rec.display()),
    })?;
    let dict = dictionary(&meta);
    if let Some(classes) = rec.outputs().first().and_then(|o| o.dtype().tensor_shape()).and_then(|s| s.last().copied())
    {
        if classes > 0 && classes as usize != dict.len() {
            return Err(LoadError::Spec {
                model: spec.name.clone(),
                reason: format!("recogniser outputs {classes} classes; its dictionary gives {}", dict.len()),
            });
        }
    }
    Ok(OcrSessions { det, rec, cls, dict })
}

impl Engine for OcrWorker {
    fn serve(&mut self, job: Job, _rx: &Receiver<Job>) {
        let Some(job) = take_one(job, &self.stats) else { return };
        let started = Instant::now();
        let r = self.read(job.input.image()).map(|lines| vec![Output::TextLines(lines)]);
        reply_all(vec![job], r, started, &self.stats);
    }
}

impl OcrWorker {
    fn ocr(&self) -> &OcrSpec {
        self.spec.ocr.as_ref().expect("checked at load: an OCR model has its [ocr] table")
    }

    pub(crate) fn read(&mut self, img: &RgbImage) -> Result<Vec<TextLine>, EngineError> {
        let t0 = Instant::now();
        let boxes = self.detect(img)?;
        let t_det = t0.elapsed();
        let mut crops: Vec<(RotatedRect, RgbImage)> = boxes
            .into_iter()
            .map(|r| {
                let mut c = crop_rotated(img, &r);
                if c.height() as f32 >= 1.5 * c.width() as f32 {
                    c = imageops::rotate270(&c);
                }
                (r, c)
            })
            .collect();
        let t_crop = t0.elapsed();
        if self.s.cls.is_some() && !crops.is_empty() {
            self.orient(&mut crops)?;
        }
        let t_cls = t0.elapsed();
        let texts = self.recognise(crops.iter().map(|(_, c)| c).collect())?;
        if crate::gpu::trace() {
            // CASCADE_GPU_TRACE=1: where one OCR call's time goes (detection includes its
            // pre-processing and post-processing)
            let us = |d: std::time::Duration| d.as_micros() as u64;
            tracing::info!(
                model = %self.spec.name,
                lines = crops.len(),
                det_us = us(t_det),
                crop_us = us(t_crop - t_det),
                cls_us = us(t_cls - t_crop),
                rec_us = us(t0.elapsed() - t_cls),
                "ocr call"
            );
        }
        let min_conf = self.ocr().min_confidence;
        let mut lines: Vec<TextLine> = crops
            .iter()
            .zip(texts)
            .filter(|(_, (t, c))| !t.trim().is_empty() && *c >= min_conf)
            .map(|((r, _), (text, confidence))| TextLine { text, confidence, bbox: r.bounds() })
            .collect();
        // Reading order: rows (10 px bands of the line centre), then left to right.
        lines.sort_by(|a, b| {
            let band = |l: &TextLine| ((l.bbox[1] + l.bbox[3]) / 20.0).floor();
            band(a).total_cmp(&band(b)).then(a.bbox[0].total_cmp(&b.bbox[0]))
        });
        Ok(lines)
    }

    /// Text regions as rotated rectangles in original-image pixels.
    fn detect(&mut self, img: &RgbImage) -> Result<Vec<RotatedRect>, EngineError> {
        let o = self.ocr().clone();
        let name = self.spec.name.clone();
        let (iw, ih) = (img.width() as f32, img.height() as f32);
        let mut s = (o.det_short as f32 / iw.min(ih)).max(1.0);
        if iw.max(ih) * s > o.det_max as f32 {
            s = o.det_max as f32 / iw.max(ih);
        }
        let round32 = |v: f32| (((v / 32.0).round() as u32).max(1)) * 32;
        let (dw, dh) = (round32(iw * s), round32(ih * s));
        let spec = InputSpec {
            width: dw,
            height: dh,
            color: ColorOrder::Bgr,
            scale: 1.0 / 255.0,
            mean: [0.5; 3],
            std: [0.5; 3],
            resize: ResizeMode::Stretch,
            resize_short: None,
            pad: 0.0,
            ..InputSpec::default()
        };
        let mut buf = vec![0f32; 3 * (dw * dh) as usize];
        let p = prepare(img, &spec, &mut buf);
        let t = TensorRef::from_array_view(([1usize, 3, dh as usize, dw as usize], &buf[..]))
            .map_err(|e| fail(&name, e))?;
        let t_run = Instant::now();
        let out = self.s.det.run(ort::inputs![t]).map_err(|e| fail(&name, e))?;
        if crate::gpu::trace() {
            tracing::info!(model = %name, w = dw, h = dh, run_us = t_run.elapsed().as_micros() as u64, "ocr detection run");
        }
        let (_, prob) = out[0].try_extract_tensor::<f32>().map_err(|e| fail(&name, e))?;
        if prob.len() != (dw * dh) as usize {
            return Err(fail(&name, format!("detector output has {} values for a {dw}×{dh} input", prob.len())));
        }
        let mut rects = Vec::new();
        for r in regions(prob, dw as usize, dh as usize, o.bin_thresh, 1000) {
            if r.score < o.box_thresh {
                continue;
            }
            let Some(mut rect) = min_area_rect(&convex_hull(r.points)) else { continue };
            if rect.width.min(rect.height) < 3.0 {
                continue;
            }
            let d = rect.width * rect.height * o.unclip_ratio / (2.0 * (rect.width + rect.height));
            rect.width += 2.0 * d;
            rect.height += 2.0 * d;
            if rect.width.min(rect.height) < 5.0 {
                continue;
            }
            rects.push(rect.scaled(1.0 / p.scale_x, 1.0 / p.scale_y).reading());
            if rects.len() >= o.max_lines {
                break;
            }
        }
        Ok(rects)
    }

    fn on_cuda(&self) -> bool {
        matches!(self.spec.device, Device::Cuda(_))
    }

    /// Runs each session once at its CUDA shapes (a 224×224 image's detection input, the fixed
    /// recognition and orientation inputs), so that the first requests pay no set-up.
    pub(crate) fn warm_up(&mut self) -> Result<(), EngineError> {
        let grey = RgbImage::from_pixel(224, 224, image::Rgb([128, 128, 128]));
        self.detect(&grey)?;
        let mut line = vec![(RotatedRect::default(), RgbImage::from_pixel(200, 48, image::Rgb([128, 128, 128])))];
        if self.s.cls.is_some() {
            self.orient(&mut line)?;
        }
        self.recognise(vec![&line[0].1])?;
        Ok(())
    }

    /// Turns crops the orientation model reads as upside down (score > 0.9).
    fn orient(&mut self, crops: &mut [(RotatedRect, RgbImage)]) -> Result<(), EngineError> {
        let (w, h) = CLS_SIZE;
        let name = self.spec.name.clone();
        let per = self.ocr().rec_batch.max(1);
        let fixed = self.on_cuda();
        for group in crops.chunks_mut(per) {
            let batch: Vec<&RgbImage> = group.iter().map(|(_, c)| c).collect();
            let rows = if fixed { per } else { batch.len() };
            let mut buf = line_batch(&batch, w, h, w);
            buf.resize(rows * 3 * (w * h) as usize, 0.0);
            let t = TensorRef::from_array_view(([rows, 3, h as usize, w as usize], &buf[..]))
                .map_err(|e| fail(&name, e))?;
            let cls = self.s.cls.as_mut().expect("orient runs only with a cls session");
            let out = cls.run(ort::inputs![t]).map_err(|e| fail(&name, e))?;
            let (_, probs) = out[0].try_extract_tensor::<f32>().map_err(|e| fail(&name, e))?;
            for (i, (_, c)) in group.iter_mut().enumerate() {
                if probs.get(i * 2 + 1).is_some_and(|p| *p > 0.9) {
                    *c = imageops::rotate180(c);
                }
            }
        }
        Ok(())
    }

    /// Recognises line crops in batches of similar aspect ratio; text and confidence per crop.
    fn recognise(&mut self, crops: Vec<&RgbImage>) -> Result<Vec<(String, f32)>, EngineError> {
        let mut out = vec![(String::new(), 0f32); crops.len()];
        let name = self.spec.name.clone();
        let ratio = |c: &RgbImage| c.width() as f32 / c.height().max(1) as f32;
        let mut order: Vec<usize> = (0..crops.len()).collect();
        order.sort_by(|&a, &b| ratio(crops[a]).total_cmp(&ratio(crops[b])));
        let per = self.ocr().rec_batch.max(1);
        let fixed = self.on_cuda();
        for chunk in order.chunks(per) {
            let batch: Vec<&RgbImage> = chunk.iter().map(|&i| crops[i]).collect();
            let max_ratio = batch
                .iter()
                .map(|c| ratio(c))
                .fold(REC_MIN_WIDTH as f32 / REC_HEIGHT as f32, f32::max)
                .min(REC_MAX_RATIO);
            let w = (REC_HEIGHT as f32 * max_ratio).ceil() as u32;
            // on CUDA one shape for every run (see REC_CUDA_WIDTH)
            let (rows, slot_w, w) =
                if fixed { (per, REC_CUDA_WIDTH, w.min(REC_CUDA_WIDTH)) } else { (batch.len(), w, w) };
            let mut buf = line_batch(&batch, slot_w, REC_HEIGHT, w);
            buf.resize(rows * 3 * (slot_w * REC_HEIGHT) as usize, 0.0);
            let t = TensorRef::from_array_view(([rows, 3, REC_HEIGHT as usize, slot_w as usize], &buf[..]))
                .map_err(|e| fail(&name, e))?;
            let res = self.s.rec.run(ort::inputs![t]).map_err(|e| fail(&name, e))?;
            let (shape, probs) = res[0].try_extract_tensor::<f32>().map_err(|e| fail(&name, e))?;
            let (steps, classes) = (shape[1] as usize, shape[2] as usize);
            for (k, &i) in chunk.iter().enumerate() {
                let rows = &probs[k * steps * classes..(k + 1) * steps * classes];
                out[i] = ctc::greedy(rows, classes, &self.s.dict);
            }
        }
        Ok(out)
    }
}

fn fail(model: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Inference { model: model.to_string(), reason: e.to_string() }
}

/// Line crops resized to `height` keeping their ratio (at most `max_w` wide), left-aligned
/// in a `width`-wide slot padded with 0 (mid-grey after normalisation); BGR, (x/255−0.5)/0.5.
fn line_batch(crops: &[&RgbImage], width: u32, height: u32, max_w: u32) -> Vec<f32> {
    let plane = (width * height) as usize;
    let mut buf = vec![0f32; crops.len() * 3 * plane];
    for (k, c) in crops.iter().enumerate() {
        let rw = ((height as f32 * c.width() as f32 / c.height().max(1) as f32).ceil() as u32).clamp(1, max_w);
        let r = crate::preprocess::resize(c, rw, height);
        let slot = &mut buf[k * 3 * plane..(k + 1) * 3 * plane];
        for (x, y, px) in r.enumerate_pixels() {
            let i = (y * width + x) as usize;
            for (ch, &src) in [2usize, 1, 0].iter().enumerate() {
                slot[ch * plane + i] = px.0[src] as f32 / 127.5 - 1.0;
            }
        }
    }
    buf
}

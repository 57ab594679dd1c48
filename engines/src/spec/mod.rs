//! The model registry: what each named model is and how its input is prepared; the remote
//! kinds' tables are in `remote` and `vlm`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::LoadError;

mod hf;
mod remote;
mod vlm;

pub use remote::{BreakerSpec, RemoteSpec};
pub use vlm::VlmSpec;

/// `models.toml`: `[[model]]` entries. Relative files are relative to the registry file;
/// `${VAR}` in a path is taken from the environment.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    #[serde(default, rename = "model")]
    pub models: Vec<ModelSpec>,
    /// Optional models left out because their file is absent (name, file).
    #[serde(skip)]
    pub absent: Vec<(String, PathBuf)>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    /// The ONNX file (every kind but `vlm`, which lives behind an HTTP endpoint).
    #[serde(default)]
    pub file: PathBuf,
    /// A model exported from a Hugging Face checkpoint: the folder holding `model.onnx`,
    /// `config.json` and `preprocessor_config.json`, which give the file and input (and a
    /// classifier's labels, unless it has a `head`). An `embedder` or a `classifier`.
    pub hf: Option<PathBuf>,
    pub kind: ModelKind,
    #[serde(default)]
    pub input: InputSpec,
    /// Class labels in output order; a file with one label per line may be given instead.
    #[serde(default)]
    pub labels: Vec<String>,
    pub labels_file: Option<PathBuf>,
    /// Classifier: the labels whose probabilities add up to the score (default: the last label).
    #[serde(default)]
    pub positive: Vec<String>,
    /// Classifier: how logits become probabilities.
    #[serde(default)]
    pub activation: Activation,
    /// The output to read (default: the first).
    pub output: Option<String>,
    #[serde(default)]
    pub detector: DetectorSpec,
    /// Classifier: a trained head (`cascade train-head`) applied to the model's output.
    pub head: Option<PathBuf>,
    /// OCR: `file` is the text detector; this names the recogniser and the settings.
    pub ocr: Option<OcrSpec>,
    /// VLM: the OpenAI-compatible endpoint and how to ask it (`workers` = requests in flight).
    pub vlm: Option<VlmSpec>,
    /// A classifier, embedder or detector served by a KServe v2 server instead of a file.
    pub remote: Option<RemoteSpec>,
    /// ONNX Runtime intra-op threads per session.
    #[serde(default = "one")]
    pub threads: usize,
    /// Sessions (each on its own thread) serving the model's queue.
    #[serde(default = "one")]
    pub workers: usize,
    /// Largest batch one run takes (1 for models with a fixed batch dimension).
    #[serde(default = "one")]
    pub max_batch: usize,
    /// How long the first request of a batch may wait for company.
    #[serde(default)]
    pub max_delay_us: u64,
    /// `cpu` (default) or `cuda:N`: where the model runs.
    #[serde(default)]
    pub device: Device,
    /// With `device = "cuda:N"`: run on the CPU (logged and counted) when CUDA cannot be used,
    /// instead of refusing to load.
    #[serde(default)]
    pub cpu_fallback: bool,
    /// Share this model's results across hotkeys and arms through the host's stage cache
    /// (default). `false` for models whose answer must be recomputed per request.
    #[serde(default = "yes")]
    pub cache: bool,
    /// A model whose file is absent is left out (with a note) instead of failing the load:
    /// for stages an operator may or may not provide (a detector, say).
    #[serde(default)]
    pub optional: bool,
    /// Requests waiting beyond this are refused as overload.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// On CUDA: where images become the model's input. `auto` (default) uses the GPU kernels
    /// and falls back to the CPU with a warning when NVRTC is missing; `gpu` refuses to load
    /// without them; `cpu` always prepares on the CPU.
    #[serde(default)]
    pub preprocess: Preprocess,
    /// Load on first use and unload after `idle_unload_s` without requests: for rarely used
    /// stages. The file is still checked when the registry loads.
    #[serde(default)]
    pub lazy: bool,
    #[serde(default = "default_idle_unload")]
    pub idle_unload_s: u64,
    /// ONNX Runtime CUDA provider settings (ignored on the CPU).
    #[serde(default)]
    pub cuda: CudaOptions,
}

/// How a CUDA session uses device memory. The defaults are ONNX Runtime's: an arena that grows
/// in powers of two, no limit, and cuDNN allowed its largest workspace (fastest convolutions,
/// most memory).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CudaOptions {
    /// Cap on the session's arena, in MiB.
    pub memory_limit_mb: Option<u64>,
    /// `power_of_two` (default) or `same_as_requested`: how the arena grows.
    pub arena_extend: ArenaExtend,
    /// false: cuDNN convolutions limited to a small workspace.
    pub conv_max_workspace: Option<bool>,
    /// true: ONNX Runtime runs convolutions in NHWC layout where it can (tensor-core friendly
    /// for fp16 models; the model's input stays NCHW).
    pub prefer_nhwc: bool,
    /// Each worker prepares its next batch on the device (gather, upload, kernel, into a second
    /// input buffer) while its session runs the current one (default; needs GPU
    /// pre-processing). Measured on an H200: +16 % (DINOv2) to +31 % (fp16 EfficientNet)
    /// images/s at 256 in flight, level at 8 and 64.
    pub pipeline: bool,
    /// The kernels ONNX Runtime may pick for fused attention nodes (its `sdpa_kernel`; a graph
    /// fused by `scripts/fp16.py --transformer` or `export_backbone.py --fuse` has them): any of
    /// `flash`, `efficient`, `trt_fused`, `cudnn_flash`, `math`. Unset: ONNX Runtime's choice.
    pub attention: Option<Vec<AttentionKernel>>,
    /// How cuDNN picks convolution algorithms: `heuristic` (default: nothing benchmarked, so
    /// a new input shape costs no search) or `exhaustive` (each shape benchmarked once, when
    /// it is warmed at load; fits models whose batch shapes are all warmed).
    pub conv_search: ConvSearch,
    /// CUDA graphs: each warmed batch shape (and input slot) is captured once and replayed on
    /// every later run, which saves the kernel launches (most of a small batch's time for a
    /// transformer). Needs GPU pre-processing and every node of the model on the CUDA provider
    /// (ONNX Runtime refuses otherwise, and the model then runs without graphs, logged).
    pub graph: bool,
}

/// A family of attention kernels in ONNX Runtime's CUDA provider.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKernel {
    Flash,
    Efficient,
    TrtFused,
    CudnnFlash,
    Math,
}

/// cuDNN's convolution algorithm search.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConvSearch {
    #[default]
    Heuristic,
    Exhaustive,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            memory_limit_mb: None,
            arena_extend: ArenaExtend::default(),
            conv_max_workspace: None,
            prefer_nhwc: false,
            pipeline: true,
            attention: None,
            conv_search: ConvSearch::Heuristic,
            graph: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ArenaExtend {
    #[default]
    PowerOfTwo,
    SameAsRequested,
}

fn default_idle_unload() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Preprocess {
    #[default]
    Auto,
    Cpu,
    Gpu,
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

fn default_queue() -> usize {
    256
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(u32),
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| serde::de::Error::custom(format!("device {other:?}: use \"cpu\" or \"cuda:N\""))),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Classifier,
    Embedder,
    Detector,
    /// Text detection + recognition (PP-OCR): `read-text`.
    Ocr,
    /// A vision-language model behind an OpenAI-compatible chat-completions endpoint: `ask`.
    Vlm,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Classifier => "classifier",
            ModelKind::Embedder => "embedder",
            ModelKind::Detector => "detector",
            ModelKind::Ocr => "ocr",
            ModelKind::Vlm => "vlm",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Softmax,
    Sigmoid,
    /// The model already outputs probabilities.
    None,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InputSpec {
    pub width: u32,
    pub height: u32,
    pub color: ColorOrder,
    /// value = (pixel × scale − mean) / std, per channel in the model's colour order.
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: ResizeMode,
    /// Centre-crop: the short side is first scaled to this (default: the crop size).
    pub resize_short: Option<u32>,
    /// Centre-crop: the long side after scaling is truncated to whole pixels, as `transformers`'
    /// image processors compute it (`hf` folders set it), instead of rounded.
    pub resize_floor: bool,
    /// Letterbox: the value of padded pixels (before normalisation).
    pub pad: f32,
    /// The resize filter (Hugging Face processors name theirs in `resample`: DINOv2, CLIP and
    /// ConvNeXt resize bicubically).
    pub resample: Resample,
}

impl Default for InputSpec {
    fn default() -> Self {
        InputSpec {
            width: 224,
            height: 224,
            color: ColorOrder::Rgb,
            scale: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            resize: ResizeMode::Stretch,
            resize_short: None,
            resize_floor: false,
            pad: 114.0,
            resample: Resample::Bilinear,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ColorOrder {
    Rgb,
    Bgr,
}

/// A resize filter, as PIL names them (PIL's numbering is `resample` in a processor config:
/// 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming). Every one is a convolution
/// over the source (antialiased when shrinking), as PIL resizes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Resample {
    Nearest,
    Lanczos,
    #[default]
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Resample {
    /// PIL's number for the filter, as processor configs write it.
    pub fn from_pil(n: u32) -> Option<Resample> {
        [Resample::Nearest, Resample::Lanczos, Resample::Bilinear, Resample::Bicubic, Resample::Box, Resample::Hamming]
            .get(n as usize)
            .copied()
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Scale both sides to the input size.
    Stretch,
    /// Keep the aspect ratio, place top-left, pad the rest.
    Letterbox,
    /// Scale the short side, then cut the centre.
    CenterCrop,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorSpec {
    pub format: DetectorFormat,
    /// YOLOX: the head's strides.
    pub strides: Vec<u32>,
    pub nms_iou: f32,
    pub max_detections: usize,
    /// DETR with class scores in an output of their own (RF-DETR `labels`, Hugging Face
    /// `logits`): its name; `output` (or the first) then holds the boxes.
    pub logits: Option<String>,
    /// DETR: how class scores become probabilities: `none` (already probabilities, as
    /// Ultralytics RT-DETR exports), `sigmoid` (RF-DETR), `softmax` (Hugging Face DETR, whose
    /// last class is "no object" and is dropped).
    pub activation: Activation,
}

impl Default for DetectorSpec {
    fn default() -> Self {
        DetectorSpec {
            format: DetectorFormat::Yolox,
            strides: vec![8, 16, 32],
            nms_iou: 0.45,
            max_detections: 100,
            logits: None,
            activation: Activation::None,
        }
    }
}

/// PP-OCR pipeline settings (DBNet detection, optional orientation, CTC recognition).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OcrSpec {
    /// Recognition model; its metadata entry `character` is the dictionary.
    pub rec: PathBuf,
    /// Optional 0°/180° orientation classifier.
    pub cls: Option<PathBuf>,
    /// Detection input: the short side is scaled up to this (never down) ...
    #[serde(default = "ocr_short")]
    pub det_short: u32,
    /// ... and the long side capped at this; both rounded to multiples of 32.
    #[serde(default = "ocr_max")]
    pub det_max: u32,
    /// Probability map binarisation threshold.
    #[serde(default = "ocr_bin")]
    pub bin_thresh: f32,
    /// Minimum mean probability of a text region.
    #[serde(default = "ocr_box")]
    pub box_thresh: f32,
    /// Region expansion: distance = area × ratio / perimeter.
    #[serde(default = "ocr_unclip")]
    pub unclip_ratio: f32,
    /// Lines recognised below this confidence are dropped.
    #[serde(default = "ocr_conf")]
    pub min_confidence: f32,
    #[serde(default = "ocr_lines")]
    pub max_lines: usize,
    /// Line crops recognised per run.
    #[serde(default = "ocr_batch")]
    pub rec_batch: usize,
}

fn ocr_short() -> u32 {
    736
}
fn ocr_max() -> u32 {
    1280
}
fn ocr_bin() -> f32 {
    0.3
}
fn ocr_box() -> f32 {
    0.5
}
fn ocr_unclip() -> f32 {
    1.6
}
fn ocr_conf() -> f32 {
    0.3
}
fn ocr_lines() -> usize {
    50
}
fn ocr_batch() -> usize {
    8
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DetectorFormat {
    /// Raw YOLOX head: `[dx, dy, log w, log h, objectness, classes…]` per grid cell.
    Yolox,
    /// Ultralytics YOLOv8 / YOLO11 raw head: `[4 + classes, anchors]` (as exported; the
    /// transpose is read too): centre x, y, width, height in input pixels and class
    /// probabilities, no objectness; NMS follows.
    Yolov8,
    /// End-to-end (NMS-free or NMS-in-graph) exports — YOLOv10, YOLO26, Ultralytics
    /// `nms=True`: `[detections, 6]` = x0, y0, x1, y1, score, class in input pixels.
    YoloEnd2end,
    /// DETR family — RT-DETR, RF-DETR, Hugging Face DETR: per query, centre x, y, width,
    /// height normalised to the input and class scores, in one output `[queries, 4 +
    /// classes]` or two (`logits` names the second).
    Detr,
}

impl DetectorFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorFormat::Yolox => "yolox",
            DetectorFormat::Yolov8 => "yolov8",
            DetectorFormat::YoloEnd2end => "yolo_end2end",
            DetectorFormat::Detr => "detr",
        }
    }
}

impl Registry {
    /// Reads a registry file; paths in it are resolved against the file's folder.
    pub fn load(file: &Path) -> Result<Registry, LoadError> {
        let err = |reason: String| LoadError::Registry { file: file.to_path_buf(), reason };
        let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
        let mut reg: Registry = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut seen = BTreeMap::new();
        for m in &mut reg.models {
            if seen.insert(m.name.clone(), ()).is_some() {
                return Err(err(format!("model {} is defined twice", m.name)));
            }
            if let Some(v) = &mut m.vlm {
                v.url = expand(&v.url).map_err(|r| err(format!("model {}: vlm.url: {r}", m.name)))?;
            }
            if let Some(r) = &mut m.remote {
                r.url = expand(&r.url).map_err(|e| err(format!("model {}: remote.url: {e}", m.name)))?;
            }
            if let Some(dir) = m.hf.clone() {
                let dir = resolve(base, &dir).map_err(|r| err(format!("model {}: {r}", m.name)))?;
                hf::apply(m, &dir).map_err(|r| err(format!("model {}: {r}", m.name)))?;
                m.hf = Some(dir);
            }
            if !m.is_remote() {
                if m.file.as_os_str().is_empty() {
                    return Err(err(format!("model {}: file is missing", m.name)));
                }
                m.file = resolve(base, &m.file).map_err(|r| err(format!("model {}: {r}", m.name)))?;
            }
            if m.optional && !m.present() {
                continue;
            }
            if let Some(f) = &m.labels_file {
                let f = resolve(base, f).map_err(|r| err(format!("model {}: {r}", m.name)))?;
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| err(format!("model {}: labels file {}: {e}", m.name, f.display())))?;
                m.labels = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
                m.labels_file = Some(f);
            }
            if let Some(h) = &m.head {
                m.head = Some(resolve(base, h).map_err(|r| err(format!("model {}: {r}", m.name)))?);
            }
            if let Some(o) = &mut m.ocr {
                o.rec = resolve(base, &o.rec).map_err(|r| err(format!("model {}: {r}", m.name)))?;
                if let Some(c) = &o.cls {
                    o.cls = Some(resolve(base, c).map_err(|r| err(format!("model {}: {r}", m.name)))?);
                }
            }
            m.check().map_err(|r| err(format!("model {}: {r}", m.name)))?;
        }
        let (present, absent): (Vec<ModelSpec>, Vec<ModelSpec>) =
            reg.models.into_iter().partition(|m| !m.optional || m.present());
        reg.models = present;
        reg.absent = absent.into_iter().map(|m| (m.name, m.file)).collect();
        Ok(reg)
    }

    pub fn get(&self, name: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.name == name)
    }
}

impl ModelSpec {
    /// The short side, in pixels, an image needs for this model to see it as well as at full
    /// size: its input (or the short side it resizes to first), OCR's detection size, a VLM's
    /// image side. The host decodes big JPEGs no smaller than twice the largest of these.
    pub fn input_side(&self) -> u32 {
        match self.kind {
            ModelKind::Ocr => self.ocr.as_ref().map_or(0, |o| o.det_short),
            ModelKind::Vlm => self.vlm.as_ref().map_or(0, |v| v.image_side),
            _ => self.input.width.max(self.input.height).max(self.input.resize_short.unwrap_or(0)),
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.input.width == 0 || self.input.height == 0 {
            return Err("input width and height must be positive".into());
        }
        if self.input.std.contains(&0.0) {
            return Err("input std must not be 0".into());
        }
        if self.workers == 0 || self.threads == 0 || self.max_batch == 0 {
            return Err("workers, threads and max_batch must be at least 1".into());
        }
        if self.lazy && self.idle_unload_s == 0 {
            return Err("idle_unload_s must be at least 1 with lazy = true".into());
        }
        if self.preprocess == Preprocess::Gpu && self.device == Device::Cpu {
            return Err("preprocess = \"gpu\" needs device = \"cuda:N\"".into());
        }
        if (self.kind == ModelKind::Ocr) != self.ocr.is_some() {
            return Err("kind = \"ocr\" and an [ocr] table go together".into());
        }
        if (self.kind == ModelKind::Vlm) != self.vlm.is_some() {
            return Err("kind = \"vlm\" and a vlm = { url, model } table go together".into());
        }
        if let Some(r) = &self.remote {
            if matches!(self.kind, ModelKind::Ocr | ModelKind::Vlm) {
                return Err(format!(
                    "a {} cannot be remote (classifiers, embedders and detectors can)",
                    self.kind.as_str()
                ));
            }
            if !self.file.as_os_str().is_empty() {
                return Err(format!("a remote model has no file (it is served at {})", r.url));
            }
            r.check()?;
        }
        match &self.vlm {
            Some(v) if !self.file.as_os_str().is_empty() => {
                return Err(format!("a vlm has no file (it is served at {})", v.url));
            }
            Some(v) => v.check()?,
            None if self.remote.is_none() && self.file.as_os_str().is_empty() => return Err("file is missing".into()),
            None => {}
        }
        for p in &self.positive {
            if !self.labels.contains(p) {
                return Err(format!("positive label {p:?} is not among the labels"));
            }
        }
        Ok(())
    }

    /// Whether what the model needs here is present: its file (a remote model always is).
    pub fn present(&self) -> bool {
        self.is_remote() || self.file.exists()
    }

    /// Served elsewhere (a VLM endpoint, a KServe server) rather than from a file.
    pub fn is_remote(&self) -> bool {
        self.kind == ModelKind::Vlm || self.remote.is_some()
    }

    /// Indices of the labels that count towards a classifier's score.
    pub fn positive_indices(&self, classes: usize) -> Vec<usize> {
        if self.positive.is_empty() {
            return vec![classes.saturating_sub(1)];
        }
        self.positive.iter().filter_map(|p| self.labels.iter().position(|l| l == p)).collect()
    }

    pub fn label(&self, i: usize) -> String {
        self.labels.get(i).cloned().unwrap_or_else(|| i.to_string())
    }
}

/// Expands `${VAR}` and resolves relative paths against `base`.
fn resolve(base: &Path, p: &Path) -> Result<PathBuf, String> {
    let p = PathBuf::from(expand(&p.to_string_lossy())?);
    Ok(if p.is_absolute() { p } else { base.join(p) })
}

/// Replaces every `${VAR}` by the environment variable's value.
fn expand(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest: &str = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').ok_or_else(|| format!("unclosed ${{ in {s}"))? + i;
        let var = &rest[i + 2..end];
        let val = std::env::var(var).map_err(|_| format!("environment variable {var} (in {s}) is not set"))?;
        out.push_str(&val);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(extra: &str) -> Result<Registry, LoadError> {
        let dir = std::env::temp_dir().join(format!("cascade-spec-{}-{}", std::process::id(), extra.len()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("models.toml");
        std::fs::write(&file, format!("[[model]]\nname = \"m\"\nfile = \"m.onnx\"\nkind = \"classifier\"\n{extra}\n"))
            .expect("write");
        Registry::load(&file)
    }

    #[test]
    fn gpu_settings_parse_and_typos_are_refused() {
        let r = registry("device = \"cuda:1\"\nlazy = true\nidle_unload_s = 60\npreprocess = \"gpu\"\ncuda = { arena_extend = \"same_as_requested\", memory_limit_mb = 512, prefer_nhwc = true, pipeline = false, attention = [\"flash\", \"efficient\"], conv_search = \"exhaustive\", graph = true }").expect("valid");
        let m = &r.models[0];
        assert_eq!(m.device, Device::Cuda(1));
        assert!(m.lazy && m.idle_unload_s == 60 && m.preprocess == Preprocess::Gpu);
        assert_eq!(m.cuda.arena_extend, ArenaExtend::SameAsRequested);
        assert!(!m.cuda.pipeline);
        assert!(CudaOptions::default().pipeline, "pipelined unless turned off");
        assert_eq!(m.cuda.memory_limit_mb, Some(512));
        assert!(m.cuda.prefer_nhwc);
        assert_eq!(m.cuda.attention, Some(vec![AttentionKernel::Flash, AttentionKernel::Efficient]));
        assert_eq!(m.cuda.conv_search, ConvSearch::Exhaustive);
        assert!(m.cuda.graph && !CudaOptions::default().graph);
        assert_eq!(CudaOptions::default().conv_search, ConvSearch::Heuristic);
        let kernel = registry("device = \"cuda:0\"\ncuda = { attention = [\"fast\"] }").expect_err("unknown kernel");
        assert!(kernel.to_string().contains("unknown variant `fast`"), "{kernel}");
        let typo = registry("device = \"cuda:0\"\ncuda = { arena = \"same_as_requested\" }").expect_err("unknown key");
        assert!(typo.to_string().contains("unknown field `arena`"), "{typo}");
        let cpu_gpu = registry("preprocess = \"gpu\"").expect_err("gpu pre-processing on the CPU");
        assert!(cpu_gpu.to_string().contains("preprocess = \"gpu\" needs device"), "{cpu_gpu}");
        let idle = registry("lazy = true\nidle_unload_s = 0").expect_err("zero idle");
        assert!(idle.to_string().contains("idle_unload_s must be at least 1"), "{idle}");
    }

    #[test]
    fn the_side_each_model_needs() {
        let side = |extra: &str| registry(extra).expect("valid").models[0].input_side();
        assert_eq!(side("input = { width = 224, height = 224, resize = \"center_crop\", resize_short = 256 }"), 256);
        assert_eq!(side("input = { width = 416, height = 320 }"), 416);
        let ocr =
            "[[model]]\nname = \"o\"\nfile = \"d.onnx\"\nkind = \"ocr\"\nocr = { rec = \"r.onnx\", det_short = 480 }";
        let m = toml::from_str::<Registry>(ocr).expect("ocr").models[0].clone();
        assert_eq!(m.input_side(), 480);
    }
}

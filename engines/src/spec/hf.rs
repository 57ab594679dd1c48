//! A registry entry pointed at a model exported from a Hugging Face checkpoint (`hf =
//! "folder"`): the ONNX file, the labels (`config.json`'s `id2label`) and the preprocessing
//! (`preprocessor_config.json`: size, centre crop or `crop_pct`, rescale, mean and std, the
//! resize filter) are read from the exported files, as `transformers`' image processors read
//! them, instead of typed by hand. `scripts/models/hf_export.py` writes such a folder for an
//! image classifier; `scripts/train/export_backbone.py` for a vision backbone (an `embedder`,
//! or a `classifier` with a `head`, whose labels the entry names: the backbone has none).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Activation, InputSpec, ModelKind, ModelSpec, Resample, ResizeMode};

/// The ONNX file of an exported folder: `model.onnx`, or `onnx/model.onnx` (the layout of
/// `optimum` exports published on the Hub).
pub(super) fn model_file(dir: &Path) -> PathBuf {
    let nested = dir.join("onnx").join("model.onnx");
    if !dir.join("model.onnx").exists() && nested.exists() {
        nested
    } else {
        dir.join("model.onnx")
    }
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    id2label: BTreeMap<String, String>,
    #[serde(default)]
    problem_type: Option<String>,
}

/// `preprocessor_config.json` as `transformers` writes it (the keys image classifiers use).
#[derive(Deserialize)]
struct Preprocessor {
    #[serde(default = "yes")]
    do_resize: bool,
    size: Option<Size>,
    #[serde(default)]
    do_center_crop: bool,
    crop_size: Option<Size>,
    /// ConvNeXt: resize the short side to `shortest_edge / crop_pct`, then crop `shortest_edge`.
    crop_pct: Option<f32>,
    #[serde(default = "yes")]
    do_rescale: bool,
    rescale_factor: Option<f32>,
    #[serde(default = "yes")]
    do_normalize: bool,
    image_mean: Option<Channels>,
    image_std: Option<Channels>,
    /// PIL's filter number; processors default to bilinear (2) when they do not say.
    resample: Option<u32>,
}

fn yes() -> bool {
    true
}

/// A size as processors write it: `{"height", "width"}`, `{"shortest_edge"}` or one number.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum Size {
    Hw { height: u32, width: u32 },
    Short { shortest_edge: u32 },
    One(u32),
}

#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum Channels {
    Three([f32; 3]),
    One(f32),
}

impl Channels {
    fn three(self) -> [f32; 3] {
        match self {
            Channels::Three(v) => v,
            Channels::One(v) => [v; 3],
        }
    }
}

fn read<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<T, String> {
    let f = dir.join(name);
    let text = std::fs::read_to_string(&f).map_err(|e| format!("hf: {}: {e}", f.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("hf: {}: {e}", f.display()))
}

/// Fills `m` from the exported folder `dir`: file, input, and for a classifier without a head
/// the labels and activation.
pub(super) fn apply(m: &mut ModelSpec, dir: &Path) -> Result<(), String> {
    let headless_classifier = m.kind == ModelKind::Classifier && m.head.is_none();
    match m.kind {
        ModelKind::Classifier | ModelKind::Embedder => {}
        k => return Err(format!("hf: a {} cannot be read from an exported image model", k.as_str())),
    }
    if headless_classifier && (!m.labels.is_empty() || m.labels_file.is_some()) {
        return Err("hf: the labels come from the folder's config.json (id2label); remove labels / labels_file".into());
    }
    if m.input != InputSpec::default() {
        return Err("hf: the input comes from the folder's preprocessor_config.json; remove [input]".into());
    }
    if !m.file.as_os_str().is_empty() {
        return Err("hf: the ONNX file is the folder's model.onnx; remove file".into());
    }
    m.file = model_file(dir);
    if headless_classifier {
        let config: Config = read(dir, "config.json")?;
        let mut ids: Vec<(usize, String)> = config
            .id2label
            .into_iter()
            .map(|(k, v)| {
                k.parse::<usize>().map(|i| (i, v)).map_err(|_| format!("hf: config.json: id2label key {k:?}"))
            })
            .collect::<Result<_, _>>()?;
        ids.sort();
        if ids.is_empty() || ids.iter().enumerate().any(|(i, (k, _))| i != *k) {
            return Err("hf: config.json: id2label must number the classes 0, 1, … without gaps".into());
        }
        m.labels = ids.into_iter().map(|(_, v)| v).collect();
        if config.problem_type.as_deref() == Some("multi_label_classification") {
            m.activation = Activation::Sigmoid;
        }
    }
    let p: Preprocessor = read(dir, "preprocessor_config.json")?;
    m.input = input(&p)?;
    Ok(())
}

fn input(p: &Preprocessor) -> Result<InputSpec, String> {
    let mut input = InputSpec {
        resize_floor: true,
        scale: if p.do_rescale { p.rescale_factor.unwrap_or(1.0 / 255.0) } else { 1.0 },
        resample: match p.resample {
            None => Resample::Bilinear,
            Some(n) => Resample::from_pil(n).ok_or_else(|| {
                format!("hf: preprocessor_config.json: resample {n} is not one of PIL's filters (0-5)")
            })?,
        },
        ..InputSpec::default()
    };
    if p.do_normalize {
        input.mean = p.image_mean.map_or([0.5; 3], Channels::three);
        input.std = p.image_std.map_or([0.5; 3], Channels::three);
    }
    if !p.do_resize {
        return Err("hf: do_resize = false: the model takes any size, which this engine does not feed".into());
    }
    let crop = if p.do_center_crop { p.crop_size } else { None };
    match (p.size, crop, p.crop_pct) {
        (Some(Size::Hw { height, width }), None, _) => {
            (input.width, input.height, input.resize) = (width, height, ResizeMode::Stretch);
        }
        (Some(Size::One(s)), None, _) => (input.width, input.height, input.resize) = (s, s, ResizeMode::Stretch),
        // ConvNeXt below 384: the short side to shortest_edge / crop_pct, then the centre
        (Some(Size::Short { shortest_edge }), None, Some(pct)) if shortest_edge < 384 => {
            input.width = shortest_edge;
            input.height = shortest_edge;
            input.resize = ResizeMode::CenterCrop;
            input.resize_short = Some((shortest_edge as f32 / pct) as u32);
        }
        (Some(Size::Short { shortest_edge }), None, _) => {
            (input.width, input.height, input.resize) = (shortest_edge, shortest_edge, ResizeMode::Stretch);
        }
        (size, Some(c), _) => {
            let (w, h) = match c {
                Size::Hw { height, width } => (width, height),
                Size::Short { shortest_edge: s } | Size::One(s) => (s, s),
            };
            (input.width, input.height, input.resize) = (w, h, ResizeMode::CenterCrop);
            input.resize_short = match size {
                Some(Size::Short { shortest_edge }) | Some(Size::One(shortest_edge)) => Some(shortest_edge),
                Some(Size::Hw { height, width }) if height == width => Some(height),
                Some(Size::Hw { .. }) => {
                    return Err("hf: a non-square resize before a centre crop is not supported".into())
                }
                None => None,
            };
        }
        (None, None, _) => return Err("hf: preprocessor_config.json has no size".into()),
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(json: &str) -> InputSpec {
        input(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn processors_as_transformers_writes_them() {
        // ViTImageProcessor (google/vit-base-patch16-224)
        let vit = pre(r#"{"do_normalize": true, "do_rescale": true, "do_resize": true, "image_mean": [0.5, 0.5, 0.5],
                "image_processor_type": "ViTImageProcessor", "image_std": [0.5, 0.5, 0.5], "resample": 2,
                "rescale_factor": 0.00392156862745098, "size": {"height": 224, "width": 224}}"#);
        assert_eq!((vit.width, vit.height, vit.resize), (224, 224, ResizeMode::Stretch));
        assert_eq!((vit.mean, vit.std, vit.resample), ([0.5; 3], [0.5; 3], Resample::Bilinear));
        // ConvNextImageProcessor (facebook/convnext-tiny-224): crop_pct 0.875
        let cnx = pre(r#"{"crop_pct": 0.875, "do_normalize": true, "do_rescale": true, "do_resize": true,
                "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3,
                "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224}}"#);
        assert_eq!((cnx.width, cnx.resize, cnx.resize_short), (224, ResizeMode::CenterCrop, Some(256)));
        assert_eq!((cnx.mean, cnx.resample), ([0.485, 0.456, 0.406], Resample::Bicubic));
        // a resize then a centre crop (BiT, older DeiT)
        let crop = pre(r#"{"do_center_crop": true, "crop_size": {"height": 224, "width": 224}, "do_resize": true,
                "size": {"shortest_edge": 256}, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}"#);
        assert_eq!((crop.width, crop.resize, crop.resize_short), (224, ResizeMode::CenterCrop, Some(256)));
        assert_eq!(crop.resample, Resample::Bilinear, "a processor that names no filter resizes bilinearly");
        let bad = input(&serde_json::from_str(r#"{"size": {"height": 8, "width": 8}, "resample": 7}"#).unwrap());
        assert_eq!(bad.unwrap_err(), "hf: preprocessor_config.json: resample 7 is not one of PIL's filters (0-5)");
        assert!(input(&serde_json::from_str(r#"{"do_resize": false}"#).unwrap()).is_err());
        assert!(input(&serde_json::from_str(r#"{}"#).unwrap()).unwrap_err().contains("no size"));
    }
}

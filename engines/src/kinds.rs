//! The one table of engine kinds: which engine serves a model of the registry, and how its
//! workers start. A new kind is a module that implements [`crate::engine::Engine`] and has a
//! `start` function, plus one row here.

use crate::lifecycle::Launch;
use crate::spec::{ModelKind, ModelSpec};
use crate::LoadError;

/// Starts a model's workers through the [`Launch`] it is given.
type Start = fn(&mut Launch<'_>) -> Result<(), LoadError>;

/// One engine kind.
pub(crate) struct Kind {
    /// For logs.
    pub name: &'static str,
    /// Whether this kind serves the model (the first row that does is the one).
    serves: fn(&ModelSpec) -> bool,
    pub start: Start,
}

/// Every engine kind, in the order a model is matched against them.
static KINDS: &[Kind] = &[
    // an OpenAI-compatible chat-completions endpoint (`kind = "vlm"` with its `vlm` table)
    Kind { name: "vlm", serves: |s| s.vlm.is_some(), start: crate::vlm::start },
    // PP-OCR: three ONNX sessions on one worker
    Kind { name: "ocr", serves: |s| s.kind == ModelKind::Ocr, start: crate::ocr::start },
    // a classifier, embedder or detector on a KServe v2 server (`remote = { url }`)
    Kind { name: "kserve", serves: |s| s.remote.is_some(), start: crate::remote::kserve::start },
    // a classifier, embedder or detector from an ONNX file: what is left
    Kind { name: "onnx", serves: |_| true, start: crate::onnx::start },
];

/// The kind that serves `spec`.
pub(crate) fn of(spec: &ModelSpec) -> &'static Kind {
    KINDS.iter().find(|k| (k.serves)(spec)).unwrap_or(&KINDS[KINDS.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> ModelSpec {
        let toml = format!("[[model]]\nname = \"m\"\n{extra}\n");
        let reg: crate::Registry = toml::from_str(&toml).expect("registry");
        reg.models.into_iter().next().expect("one model")
    }

    #[test]
    fn each_model_finds_its_kind() {
        let onnx = spec("kind = \"classifier\"\nfile = \"m.onnx\"");
        assert_eq!(of(&onnx).name, "onnx");
        let kserve = spec("kind = \"detector\"\nremote = { url = \"http://k:8000\" }");
        assert_eq!(of(&kserve).name, "kserve");
        let ocr = spec("kind = \"ocr\"\nfile = \"det.onnx\"\nocr = { rec = \"rec.onnx\" }");
        assert_eq!(of(&ocr).name, "ocr");
        let vlm = spec("kind = \"vlm\"\nvlm = { url = \"http://v:8000/v1\", model = \"q\" }");
        assert_eq!(of(&vlm).name, "vlm");
    }
}

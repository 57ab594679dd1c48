//! `keywords`: a text scorer. Positive and negative phrases are matched case- and
//! spacing-insensitively over the OCR lines joined in reading order (so a phrase may run across
//! line breaks). Negative phrases are matched first and their text is masked, so "END ROAD WORK"
//! counts against roadwork and its inner "ROAD WORK" does not count for it.

mod matcher;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

wit_bindgen::generate!({
    path: "../../wit/v1.0.0",
    world: "text-scorer-component",
});

use cascade::policy::types::{ComponentInfo, Error, TextLine};
use exports::cascade::policy::meta::Guest as Meta;
use exports::cascade::policy::text_scorer::Guest as TextScorer;
use matcher::Matcher;

const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "required": ["positive"],
  "properties": {
    "positive": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
    "negative": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
    "min_confidence": {"type": "number", "minimum": 0, "maximum": 1},
    "gain": {"type": "number", "minimum": 0}
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    positive: BTreeMap<String, f32>,
    #[serde(default)]
    negative: BTreeMap<String, f32>,
    /// OCR lines below this confidence are ignored.
    #[serde(default = "default_min_conf")]
    min_confidence: f32,
    /// Steepness of the logistic that turns summed phrase weights into a score.
    #[serde(default = "default_gain")]
    gain: f32,
}

fn default_min_conf() -> f32 {
    0.5
}

fn default_gain() -> f32 {
    2.0
}

struct Scorer {
    matcher: Matcher,
    min_confidence: f32,
    gain: f32,
}

static SCORER: OnceLock<Scorer> = OnceLock::new();

struct Component;

impl Meta for Component {
    fn info() -> ComponentInfo {
        ComponentInfo {
            name: "keywords".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            params_schema: SCHEMA.into(),
        }
    }

    fn configure(json: String) -> Result<(), String> {
        let p: Params = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        let matcher = Matcher::new(&p.positive, &p.negative)?;
        let s = Scorer { matcher, min_confidence: p.min_confidence, gain: p.gain };
        SCORER.set(s).map_err(|_| "already configured".to_string())
    }
}

impl TextScorer for Component {
    fn score_text(lines: Vec<TextLine>) -> Result<Option<f32>, Error> {
        let s = SCORER.get().ok_or_else(|| Error::InvalidArgument("keywords used before configure".into()))?;
        let mut kept: Vec<&TextLine> = lines.iter().filter(|l| l.confidence >= s.min_confidence).collect();
        // Reading order: top to bottom by line centre, then left to right.
        kept.sort_by(|a, b| {
            let ca = (a.region.y0 + a.region.y1) / 2.0;
            let cb = (b.region.y0 + b.region.y1) / 2.0;
            ca.total_cmp(&cb).then(a.region.x0.total_cmp(&b.region.x0))
        });
        let text: Vec<&str> = kept.iter().map(|l| l.text.as_str()).collect();
        let m = s.matcher.score(&text.join(" "));
        if m.positive == 0.0 && m.negative == 0.0 {
            return Ok(None);
        }
        let x = s.gain * (m.positive - m.negative);
        Ok(Some(1.0 / (1.0 + (-x).exp())))
    }
}

export!(Component);

//! `weighted`: a fuser. The weighted mean of the named scores it has weights for, renormalised
//! over the scores present, so a missing stage does not drag the result towards zero.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

wit_bindgen::generate!({
    path: "../../wit/v1.0.0",
    world: "fuser-component",
});

use cascade::policy::types::{ComponentInfo, Error, NamedScore};
use exports::cascade::policy::fuser::Guest as Fuser;
use exports::cascade::policy::meta::Guest as Meta;

const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "required": ["weights"],
  "properties": {
    "weights": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
    "unknown": {"type": "string", "enum": ["ignore", "error"]}
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    weights: BTreeMap<String, f32>,
    /// What to do with a score that has no weight: leave it out, or refuse.
    #[serde(default)]
    unknown: Unknown,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Unknown {
    #[default]
    Ignore,
    Error,
}

static PARAMS: OnceLock<Params> = OnceLock::new();

struct Component;

impl Meta for Component {
    fn info() -> ComponentInfo {
        ComponentInfo {
            name: "weighted".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            params_schema: SCHEMA.into(),
        }
    }

    fn configure(json: String) -> Result<(), String> {
        let p: Params = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        if p.weights.values().all(|w| *w == 0.0) {
            return Err("weights: at least one weight must be positive".into());
        }
        PARAMS.set(p).map_err(|_| "already configured".to_string())
    }
}

impl Fuser for Component {
    fn fuse(scores: Vec<NamedScore>) -> Result<f32, Error> {
        let p = PARAMS
            .get()
            .ok_or_else(|| Error::InvalidArgument("weighted used before configure".into()))?;
        let (mut num, mut den) = (0.0f32, 0.0f32);
        for s in &scores {
            match p.weights.get(&s.name) {
                Some(w) => {
                    num += w * s.score;
                    den += w;
                }
                None if p.unknown == Unknown::Error => {
                    return Err(Error::InvalidArgument(format!("no weight for score {:?}", s.name)));
                }
                None => {}
            }
        }
        if den == 0.0 {
            let names: Vec<&str> = scores.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::InvalidArgument(format!("no weighted score among {names:?}")));
        }
        Ok((num / den).clamp(0.0, 1.0))
    }
}

export!(Component);

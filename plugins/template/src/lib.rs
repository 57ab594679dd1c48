//! `template-router`: the smallest useful router, a starting point for a new policy.
//! Copy this folder, rename the package and the `info()` name, and change `decide`.
//! It classifies once and answers the score, or the fallback the host configures on error.

use std::sync::OnceLock;

use serde::Deserialize;

wit_bindgen::generate!({
    path: "../../wit/v1.0.0",
    world: "router-component",
});

use cascade::policy::primitives::classify;
use cascade::policy::types::{ComponentInfo, Error, Image};
use exports::cascade::policy::meta::Guest as Meta;
use exports::cascade::policy::router::{Decision, Guest as Router, RequestMeta};

const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "required": ["model"],
  "properties": {
    "model": {"type": "string"}
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: String,
}

static PARAMS: OnceLock<Params> = OnceLock::new();

struct Component;

impl Meta for Component {
    fn info() -> ComponentInfo {
        ComponentInfo {
            name: "template-router".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            params_schema: SCHEMA.into(),
        }
    }

    fn configure(json: String) -> Result<(), String> {
        let p: Params = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        PARAMS.set(p).map_err(|_| "already configured".to_string())
    }
}

impl Router for Component {
    fn decide(img: &Image, _req: RequestMeta) -> Result<Decision, Error> {
        let p = PARAMS.get().ok_or_else(|| Error::InvalidArgument("not configured".into()))?;
        let c = classify(&p.model, img)?;
        let prediction = if c.score == 0.5 { 0.499 } else { c.score };
        Ok(Decision { prediction, stage: "classify".into(), reason: format!("{}={:.3}", p.model, c.score) })
    }
}

export!(Component);

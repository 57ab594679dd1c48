//! `misbehave`: a router for the host's tests only (never bound in shipped policies). It
//! classifies once, then traps, loops forever or allocates without bound when the score is
//! above the configured value, so tests can show that the host survives each.

use std::sync::OnceLock;

use serde::Deserialize;

wit_bindgen::generate!({
    path: "../../../wit/v1.0.0",
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
    "model": {"type": "string"},
    "trap_above": {"type": "number"},
    "spin_above": {"type": "number"},
    "grow_above": {"type": "number"}
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: String,
    /// Misbehaviour switches, used by the host's tests: trap, loop forever or allocate
    /// without bound when the score is above the value.
    trap_above: Option<f32>,
    spin_above: Option<f32>,
    grow_above: Option<f32>,
}

static PARAMS: OnceLock<Params> = OnceLock::new();

struct Component;

impl Meta for Component {
    fn info() -> ComponentInfo {
        ComponentInfo {
            name: "misbehave".into(),
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
        if p.trap_above.is_some_and(|t| c.score > t) {
            core::arch::wasm32::unreachable();
        }
        if p.spin_above.is_some_and(|t| c.score > t) {
            let mut x: u64 = 1;
            loop {
                x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        if p.grow_above.is_some_and(|t| c.score > t) {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 1 << 20]);
                core::hint::black_box(&hog);
            }
        }
        let prediction = if c.score == 0.5 { 0.499 } else { c.score };
        Ok(Decision { prediction, stage: "classify".into(), reason: format!("{}={:.3}", p.model, c.score) })
    }
}

export!(Component);

//! `weighted`: a fuser. The weighted mean of the named scores it has weights for, renormalised
//! over the scores present, so a missing stage does not drag the result towards zero.
//! Since 1.1.0, scores named under `boost` can only raise that mean (noisy-OR): weak evidence
//! such as "a person was seen" adds to a classifier's score instead of averaging it down.

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
    "boost": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
    "unknown": {"type": "string", "enum": ["ignore", "error"]}
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    weights: BTreeMap<String, f32>,
    /// Scores that can raise the weighted mean but never lower it: with base `m`,
    /// `1 − (1 − m)·Π(1 − w·s)` over the boost scores present.
    #[serde(default)]
    boost: BTreeMap<String, f32>,
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
        p.check()?;
        PARAMS.set(p).map_err(|_| "already configured".to_string())
    }
}

impl Params {
    fn check(&self) -> Result<(), String> {
        if self.weights.values().all(|w| *w == 0.0) {
            return Err("weights: at least one weight must be positive".into());
        }
        if let Some(n) = self.boost.keys().find(|n| self.weights.contains_key(*n)) {
            return Err(format!("{n:?} is both weighted and a boost; name it once"));
        }
        if let Some((n, w)) = self.boost.iter().find(|(_, w)| !(0.0..=1.0).contains(*w)) {
            return Err(format!("boost {n:?}: {w} must be 0 to 1"));
        }
        Ok(())
    }

    fn fuse(&self, scores: &[NamedScore]) -> Result<f32, Error> {
        let (mut num, mut den) = (0.0f32, 0.0f32);
        let mut unboosted = 1.0f32;
        for s in scores {
            if let Some(w) = self.weights.get(&s.name) {
                num += w * s.score;
                den += w;
            } else if let Some(w) = self.boost.get(&s.name) {
                unboosted *= 1.0 - w * s.score.clamp(0.0, 1.0);
            } else if self.unknown == Unknown::Error {
                return Err(Error::InvalidArgument(format!("no weight for score {:?}", s.name)));
            }
        }
        if den == 0.0 {
            let names: Vec<&str> = scores.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::InvalidArgument(format!("no weighted score among {names:?}")));
        }
        let mean = (num / den).clamp(0.0, 1.0);
        Ok(1.0 - (1.0 - mean) * unboosted)
    }
}

impl Fuser for Component {
    fn fuse(scores: Vec<NamedScore>) -> Result<f32, Error> {
        let p = PARAMS.get().ok_or_else(|| Error::InvalidArgument("weighted used before configure".into()))?;
        p.fuse(&scores)
    }
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: &str) -> Result<Params, String> {
        let p: Params = serde_json::from_str(json).map_err(|e| e.to_string())?;
        p.check().map(|_| p)
    }

    fn fuse(p: &Params, scores: &[(&str, f32)]) -> f32 {
        let s: Vec<NamedScore> = scores.iter().map(|(n, v)| NamedScore { name: n.to_string(), score: *v }).collect();
        p.fuse(&s).map_err(|e| format!("{e:?}")).unwrap()
    }

    #[test]
    fn weighted_mean_over_the_scores_present() {
        let p = params(r#"{"weights": {"a": 1, "b": 3}}"#).unwrap();
        assert!((fuse(&p, &[("a", 0.2), ("b", 0.6)]) - 0.5).abs() < 1e-6);
        assert!((fuse(&p, &[("a", 0.2)]) - 0.2).abs() < 1e-6);
        // a score without a weight is left out by default
        assert!((fuse(&p, &[("a", 0.2), ("c", 1.0)]) - 0.2).abs() < 1e-6);
    }

    #[test]
    fn a_boost_raises_the_mean_and_never_lowers_it() {
        let p = params(r#"{"weights": {"cls": 1}, "boost": {"objects": 0.5}}"#).unwrap();
        // 1 − (1 − 0.4)·(1 − 0.5·0.6) = 0.58
        assert!((fuse(&p, &[("cls", 0.4), ("objects", 0.6)]) - 0.58).abs() < 1e-6);
        // weak evidence still does not pull a confident classifier down
        assert!(fuse(&p, &[("cls", 0.9), ("objects", 0.1)]) >= 0.9);
        assert!((fuse(&p, &[("cls", 0.4), ("objects", 0.0)]) - 0.4).abs() < 1e-6);
    }

    #[test]
    fn boosts_alone_are_not_enough_and_are_checked() {
        let p = params(r#"{"weights": {"cls": 1}, "boost": {"objects": 1}}"#).unwrap();
        let s = vec![NamedScore { name: "objects".into(), score: 0.9 }];
        assert!(p.fuse(&s).is_err());
        assert!(params(r#"{"weights": {"a": 1}, "boost": {"a": 0.5}}"#)
            .err()
            .unwrap()
            .contains("both weighted and a boost"));
        assert!(params(r#"{"weights": {"a": 1}, "boost": {"b": 1.5}}"#).err().unwrap().contains("must be 0 to 1"));
        assert!(params(r#"{"weights": {"a": 0}}"#).is_err());
    }

    #[test]
    fn schema_accepts_boost() {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        assert!(schema["properties"].get("boost").is_some());
    }
}

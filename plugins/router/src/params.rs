//! The router's parameters and their JSON Schema (checked by the host before `configure`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cascade::policy::types::Detection;

pub const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "required": ["stages"],
  "properties": {
    "tie_break": {"type": "string", "enum": ["up", "down"]},
    "stages": {
      "type": "array",
      "minItems": 1,
      "items": {
        "type": "object",
        "additionalProperties": false,
        "required": ["name"],
        "properties": {
          "name": {"type": "string"},
          "classify": {"type": "array", "items": {"type": "string"}},
          "flip": {"type": "boolean"},
          "read_text": {"type": "string"},
          "detect": {
            "type": "object",
            "additionalProperties": false,
            "required": ["model", "classes"],
            "properties": {
              "model": {"type": "string"},
              "name": {"type": "string"},
              "min_confidence": {"type": "number", "minimum": 0, "maximum": 1},
              "classes": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
              "absent_score": {"type": "number", "minimum": 0, "maximum": 1}
            }
          },
          "ask": {
            "type": "object",
            "additionalProperties": false,
            "required": ["model", "prompt"],
            "properties": {
              "model": {"type": "string"},
              "name": {"type": "string"},
              "prompt": {"type": "string"}
            }
          },
          "min_budget_ms": {"type": "integer", "minimum": 0},
          "exit_low": {"type": "number", "minimum": 0, "maximum": 1},
          "exit_high": {"type": "number", "minimum": 0, "maximum": 1},
          "on_error": {"type": "string", "enum": ["skip", "fail"]}
        }
      }
    }
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub tie_break: TieBreak,
}

impl Params {
    pub fn check(&self) -> Result<(), String> {
        if self.stages.is_empty() {
            return Err("stages: at least one stage is needed".into());
        }
        for (i, s) in self.stages.iter().enumerate() {
            if s.classify.is_empty() && s.read_text.is_none() && s.detect.is_none() && s.ask.is_none() {
                return Err(format!("stages[{i}] ({}): runs no primitive", s.name));
            }
            if let (Some(lo), Some(hi)) = (s.exit_low, s.exit_high) {
                if lo >= hi {
                    return Err(format!("stages[{i}] ({}): exit_low {lo} must be below exit_high {hi}", s.name));
                }
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    #[serde(default)]
    pub classify: Vec<String>,
    /// Run this stage on the horizontal mirror (test-time augmentation); scores get `:flip`.
    #[serde(default)]
    pub flip: bool,
    pub read_text: Option<String>,
    pub detect: Option<DetectStage>,
    pub ask: Option<AskStage>,
    /// Skip this stage (unless it is the last) when less of the request's budget is left.
    pub min_budget_ms: Option<u32>,
    pub exit_low: Option<f32>,
    pub exit_high: Option<f32>,
    #[serde(default)]
    pub on_error: OnError,
}

#[derive(Deserialize, Default, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// A failing primitive adds no evidence; the reason notes it.
    #[default]
    Skip,
    /// A failing primitive fails the decision (the host answers the fallback).
    Fail,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum TieBreak {
    /// An exact 0.5 becomes 0.5 + 1e-3.
    Up,
    /// An exact 0.5 becomes 0.5 − 1e-3 (what the validator's rounding would make of it).
    #[default]
    Down,
}

impl TieBreak {
    pub fn apply(self, p: f32) -> f32 {
        if p != 0.5 {
            return p;
        }
        match self {
            TieBreak::Up => 0.501,
            TieBreak::Down => 0.499,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectStage {
    pub model: String,
    #[serde(default = "detect_name")]
    pub name: String,
    #[serde(default = "default_min_conf")]
    pub min_confidence: f32,
    /// Label → how much one such detection says "roadwork" (noisy-OR over detections).
    pub classes: BTreeMap<String, f32>,
    /// Evidence when none of the classes is seen; absent when unset.
    pub absent_score: Option<f32>,
}

fn detect_name() -> String {
    "objects".into()
}

fn default_min_conf() -> f32 {
    0.35
}

impl DetectStage {
    /// Noisy-OR of per-class weights over the detections at or above the minimum confidence.
    pub fn evidence(&self, dets: &[Detection]) -> Option<f32> {
        let mut none = 1.0f32;
        let mut seen = false;
        for d in dets.iter().filter(|d| d.confidence >= self.min_confidence) {
            if let Some(w) = self.classes.get(&d.label) {
                none *= 1.0 - w.clamp(0.0, 1.0);
                seen = true;
            }
        }
        if seen {
            Some(1.0 - none)
        } else {
            self.absent_score
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskStage {
    pub model: String,
    pub prompt: String,
    #[serde(default = "ask_name")]
    pub name: String,
}

fn ask_name() -> String {
    "vlm".into()
}

impl AskStage {
    /// A yes/no answer to a score: a leading "yes" is evidence for roadwork.
    pub fn score(&self, answer: &str) -> f32 {
        let a = answer.trim_start().to_lowercase();
        if a.starts_with("yes") {
            0.9
        } else if a.starts_with("no") {
            0.1
        } else {
            0.5
        }
    }
}

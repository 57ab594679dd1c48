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
          "zoom": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
              "grid": {"type": "integer", "minimum": 2, "maximum": 4},
              "overlap": {"type": "number", "minimum": 0, "maximum": 0.5},
              "reduce": {"type": "string", "enum": ["max", "mean"]}
            }
          },
          "read_text": {"type": "string"},
          "detect": {
            "type": "object",
            "additionalProperties": false,
            "required": ["model"],
            "properties": {
              "model": {"type": "string"},
              "name": {"type": "string"},
              "min_confidence": {"type": "number", "minimum": 0, "maximum": 1},
              "classes": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
              "absent_score": {"type": "number", "minimum": 0, "maximum": 1},
              "counts": {
                "type": "array",
                "items": {
                  "type": "object",
                  "additionalProperties": false,
                  "required": ["class", "at_least"],
                  "properties": {
                    "class": {"type": "string"},
                    "at_least": {"type": "integer", "minimum": 1}
                  }
                }
              },
              "count_score": {"type": "number", "minimum": 0, "maximum": 1},
              "agree": {
                "type": "object",
                "additionalProperties": false,
                "required": ["model"],
                "properties": {
                  "model": {"type": "string"},
                  "min_confidence": {"type": "number", "minimum": 0, "maximum": 1},
                  "at_least": {"type": "integer", "minimum": 1},
                  "high": {"type": "number", "minimum": 0, "maximum": 1},
                  "low": {"type": "number", "minimum": 0, "maximum": 1}
                }
              }
            }
          },
          "ask": {
            "type": "object",
            "additionalProperties": false,
            "required": ["model", "prompt"],
            "properties": {
              "model": {"type": "string"},
              "name": {"type": "string"},
              "prompt": {"type": "string"},
              "yes_means": {"type": "string", "enum": ["roadwork", "no_roadwork"]}
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
            if let Some(z) = &s.zoom {
                if s.classify.is_empty() {
                    return Err(format!("stages[{i}] ({}): zoom needs a model to classify", s.name));
                }
                z.check().map_err(|e| format!("stages[{i}] ({}): zoom: {e}", s.name))?;
            }
            if let Some(d) = &s.detect {
                if d.classes.is_empty() && d.counts.is_empty() {
                    return Err(format!("stages[{i}] ({}): detect needs `classes` or `counts`", s.name));
                }
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
    /// Classify tiles of the image instead of the whole (scores get `:zoom`); the stage's other
    /// primitives still see the whole image.
    pub zoom: Option<Zoom>,
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

/// A grid of overlapping tiles, each classified on its own: the host resizes a tile to the
/// model's input, so a small distant cone or sign in a wide scene gets four times the pixels.
/// The tiles' scores reduce to one piece of evidence.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Zoom {
    /// Tiles per side.
    #[serde(default = "default_grid")]
    pub grid: u32,
    /// How far neighbouring tiles overlap, as a fraction of the image side (an object on a
    /// seam is whole in one of them).
    #[serde(default = "default_overlap")]
    pub overlap: f32,
    #[serde(default)]
    pub reduce: Reduce,
}

fn default_grid() -> u32 {
    2
}

fn default_overlap() -> f32 {
    0.125
}

impl Zoom {
    pub fn check(&self) -> Result<(), String> {
        if !(2..=4).contains(&self.grid) {
            return Err(format!("grid {} must be 2 to 4", self.grid));
        }
        if !(0.0..=0.5).contains(&self.overlap) {
            return Err(format!("overlap {} must be 0 to 0.5", self.overlap));
        }
        Ok(())
    }

    /// The tiles of a `width`×`height` image, row by row, as pixel boxes `[x0, y0, x1, y1]`.
    /// Each tile spans `(1 + (grid − 1)·overlap) / grid` of a side; together they cover it.
    /// Edges are rounded to whole pixels.
    pub fn tiles(&self, width: u32, height: u32) -> Vec<[f32; 4]> {
        let n = self.grid.max(1);
        let span = (1.0 + (n - 1) as f32 * self.overlap) / n as f32;
        let step = if n > 1 { (1.0 - span) / (n - 1) as f32 } else { 0.0 };
        let (w, h) = (width as f32, height as f32);
        let mut out = Vec::with_capacity((n * n) as usize);
        for row in 0..n {
            for col in 0..n {
                let (x, y) = (col as f32 * step, row as f32 * step);
                let px = |f: f32, side: f32| (f * side).round().clamp(0.0, side);
                out.push([px(x, w), px(y, h), px(x + span, w), px(y + span, h)]);
            }
        }
        out
    }
}

/// How the tiles' scores become one.
#[derive(Deserialize, Default, Debug, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    /// The most roadwork-like tile: a work zone often fills only a corner of the scene.
    #[default]
    Max,
    Mean,
}

impl Reduce {
    pub fn apply(self, scores: &[f32]) -> Option<f32> {
        if scores.is_empty() {
            return None;
        }
        Some(match self {
            Reduce::Max => scores.iter().copied().fold(f32::MIN, f32::max),
            Reduce::Mean => scores.iter().sum::<f32>() / scores.len() as f32,
        })
    }
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
    #[serde(default)]
    pub classes: BTreeMap<String, f32>,
    /// Evidence when none of the classes is seen; absent when unset.
    pub absent_score: Option<f32>,
    /// Count rules, any of which makes the evidence `count_score` ("≥ 3 cones or ≥ 1 worker").
    #[serde(default)]
    pub counts: Vec<CountRule>,
    #[serde(default = "default_count_score")]
    pub count_score: f32,
    /// A second detector that must agree.
    pub agree: Option<Agree>,
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CountRule {
    pub class: String,
    pub at_least: u32,
}

/// Agreement of two detectors over the stage's classes: both see at least `at_least` → `high`;
/// both see none → `low`; one sees them and the other does not → no evidence (the decision
/// goes on to the next stage: escalation).
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Agree {
    pub model: String,
    #[serde(default = "default_min_conf")]
    pub min_confidence: f32,
    #[serde(default = "one")]
    pub at_least: u32,
    #[serde(default = "default_count_score")]
    pub high: f32,
    #[serde(default = "default_agree_low")]
    pub low: f32,
}

fn one() -> u32 {
    1
}

fn default_count_score() -> f32 {
    0.95
}

fn default_agree_low() -> f32 {
    0.05
}

/// What a detection stage concluded.
#[derive(Debug, PartialEq)]
pub enum Found {
    Score(f32),
    Nothing,
    /// The two detectors disagree: (first's count, second's count).
    Disagree(u32, u32),
}

fn detect_name() -> String {
    "objects".into()
}

fn default_min_conf() -> f32 {
    0.35
}

impl DetectStage {
    /// Every class the stage looks at (weights and count rules), for `detect-classes`.
    pub fn wanted(&self) -> Vec<String> {
        let mut all: Vec<String> = self.classes.keys().cloned().collect();
        all.extend(self.counts.iter().map(|c| c.class.clone()));
        all.sort();
        all.dedup();
        all
    }

    /// Detections of the stage's classes at or above `min_conf`.
    fn count(&self, dets: &[Detection], min_conf: f32) -> u32 {
        let wanted = self.wanted();
        dets.iter().filter(|d| d.confidence >= min_conf && wanted.contains(&d.label)).count() as u32
    }

    /// The stage's evidence: agreement of the two detectors when `agree` is set (`second`
    /// holds the other detector's boxes); else a count rule that holds, else the weights'
    /// noisy-OR, else `absent_score`.
    pub fn found(&self, dets: &[Detection], second: Option<&[Detection]>) -> Found {
        if let (Some(a), Some(other)) = (&self.agree, second) {
            let (n1, n2) = (self.count(dets, self.min_confidence), self.count(other, a.min_confidence));
            return if n1 >= a.at_least && n2 >= a.at_least {
                Found::Score(a.high)
            } else if n1 == 0 && n2 == 0 {
                Found::Score(a.low)
            } else {
                Found::Disagree(n1, n2)
            };
        }
        let seen = |class: &str| {
            dets.iter().filter(|d| d.confidence >= self.min_confidence && d.label == class).count() as u32
        };
        if self.counts.iter().any(|r| seen(&r.class) >= r.at_least) {
            return Found::Score(self.count_score);
        }
        match self.evidence(dets) {
            Some(s) => Found::Score(s),
            None => Found::Nothing,
        }
    }

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
        } else if self.count(dets, self.min_confidence) == 0 {
            self.absent_score
        } else {
            None
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
    /// What a "yes" to the prompt says: roadwork (default), or its absence (for questions
    /// such as "Is the work finished?").
    #[serde(default)]
    pub yes_means: YesMeans,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum YesMeans {
    #[default]
    Roadwork,
    NoRoadwork,
}

fn ask_name() -> String {
    "vlm".into()
}

impl AskStage {
    /// The answer's P(yes) as evidence for roadwork; none when the answer was no yes or no.
    pub fn score(&self, p_yes: Option<f32>) -> Option<f32> {
        let p = p_yes.filter(|p| p.is_finite())?.clamp(0.0, 1.0);
        Some(match self.yes_means {
            YesMeans::Roadwork => p,
            YesMeans::NoRoadwork => 1.0 - p,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zoom(grid: u32, overlap: f32) -> Zoom {
        Zoom { grid, overlap, reduce: Reduce::Max }
    }

    #[test]
    fn two_by_two_tiles_overlap_and_cover_the_image() {
        let t = zoom(2, 0.125).tiles(224, 224);
        assert_eq!(t.len(), 4);
        // each tile spans 9/16 of a side: 126 px, the second starting at 98
        assert_eq!(t[0], [0.0, 0.0, 126.0, 126.0]);
        assert_eq!(t[1], [98.0, 0.0, 224.0, 126.0]);
        assert_eq!(t[2], [0.0, 98.0, 126.0, 224.0]);
        assert_eq!(t[3], [98.0, 98.0, 224.0, 224.0]);
    }

    #[test]
    fn tiles_follow_a_non_square_image_and_stay_inside_it() {
        for grid in 2..=4 {
            for overlap in [0.0, 0.125, 0.5] {
                let t = zoom(grid, overlap).tiles(320, 180);
                assert_eq!(t.len(), (grid * grid) as usize);
                for [x0, y0, x1, y1] in &t {
                    assert!(*x0 >= 0.0 && *y0 >= 0.0 && *x1 <= 320.0 && *y1 <= 180.0 && x0 < x1 && y0 < y1);
                }
                let last = t.last().unwrap();
                assert!((last[2] - 320.0).abs() < 1e-3 && (last[3] - 180.0).abs() < 1e-3, "{grid} {overlap}: {last:?}");
            }
        }
        // no overlap: a 3×3 grid of exact thirds
        let t = zoom(3, 0.0).tiles(300, 300);
        assert_eq!(t[4], [100.0, 100.0, 200.0, 200.0]);
    }

    #[test]
    fn reduce_takes_the_max_or_the_mean_and_nothing_of_nothing() {
        assert_eq!(Reduce::Max.apply(&[0.2, 0.9, 0.4]), Some(0.9));
        assert_eq!(Reduce::Mean.apply(&[0.2, 0.4]), Some(0.3));
        assert_eq!(Reduce::Max.apply(&[]), None);
    }

    fn parse(json: &str) -> Result<Params, String> {
        let p: Params = serde_json::from_str(json).map_err(|e| e.to_string())?;
        p.check().map(|_| p)
    }

    #[test]
    fn zoom_parses_with_defaults_and_is_checked() {
        let p = parse(r#"{"stages": [{"name": "z", "classify": ["roadwork"], "zoom": {}}]}"#).unwrap();
        assert_eq!(p.stages[0].zoom, Some(Zoom { grid: 2, overlap: 0.125, reduce: Reduce::Max }));
        let p =
            parse(r#"{"stages": [{"name": "z", "classify": ["m"], "zoom": {"grid": 3, "reduce": "mean"}}]}"#).unwrap();
        assert_eq!(p.stages[0].zoom.unwrap().reduce, Reduce::Mean);
        assert!(parse(r#"{"stages": [{"name": "z", "read_text": "ocr", "zoom": {}}]}"#)
            .err()
            .unwrap()
            .contains("zoom needs a model"));
        assert!(parse(r#"{"stages": [{"name": "z", "classify": ["m"], "zoom": {"grid": 9}}]}"#)
            .err()
            .unwrap()
            .contains("grid 9"));
        assert!(parse(r#"{"stages": [{"name": "z", "classify": ["m"], "zoom": {"tiles": 4}}]}"#).is_err());
    }

    fn det(label: &str, confidence: f32) -> Detection {
        use crate::cascade::policy::types::Bbox;
        Detection { label: label.into(), class_id: 0, confidence, region: Bbox { x0: 0.0, y0: 0.0, x1: 1.0, y1: 1.0 } }
    }

    fn detect_stage(json: &str) -> DetectStage {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn count_rules_hold_on_counts_at_the_confidence() {
        let d = detect_stage(
            r#"{"model": "y", "min_confidence": 0.4, "counts": [{"class": "cone", "at_least": 3}, {"class": "worker", "at_least": 1}], "absent_score": 0.1}"#,
        );
        let cones = |n: usize, c: f32| vec![det("cone", c); n];
        assert_eq!(d.found(&cones(3, 0.5), None), Found::Score(0.95));
        assert_eq!(d.found(&cones(3, 0.3), None), Found::Score(0.1), "below the confidence: none seen");
        assert_eq!(d.found(&cones(2, 0.5), None), Found::Nothing, "some cones, no rule: no evidence");
        assert_eq!(d.found(&[det("worker", 0.9)], None), Found::Score(0.95));
        assert_eq!(d.found(&[det("car", 0.9)], None), Found::Score(0.1));
        assert_eq!(d.wanted(), vec!["cone", "worker"]);
    }

    #[test]
    fn two_detectors_agree_or_escalate() {
        let d = detect_stage(
            r#"{"model": "a", "counts": [{"class": "cone", "at_least": 1}], "agree": {"model": "b", "at_least": 2}}"#,
        );
        let two = vec![det("cone", 0.9), det("cone", 0.8)];
        assert_eq!(d.found(&two, Some(&two)), Found::Score(0.95));
        assert_eq!(d.found(&[], Some(&[])), Found::Score(0.05));
        assert_eq!(d.found(&two, Some(&[])), Found::Disagree(2, 0));
        assert_eq!(d.found(&two[..1], Some(&two)), Found::Disagree(1, 2), "below at_least on one side");
    }

    #[test]
    fn a_detect_stage_needs_classes_or_counts() {
        let e = parse(r#"{"stages": [{"name": "d", "detect": {"model": "y"}}]}"#).err().unwrap();
        assert!(e.contains("detect needs `classes` or `counts`"), "{e}");
    }

    #[test]
    fn schema_names_every_stage_field() {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        let stage = &schema["properties"]["stages"]["items"]["properties"];
        for key in ["zoom", "flip", "classify", "read_text", "detect", "ask", "exit_low", "exit_high"] {
            assert!(stage.get(key).is_some(), "{key} missing from the schema");
        }
        let zoom = &stage["zoom"]["properties"];
        for key in ["grid", "overlap", "reduce"] {
            assert!(zoom.get(key).is_some(), "zoom.{key} missing from the schema");
        }
    }
}

//! The prediction log's on-disk format, version 1: JSON Lines segments
//! (`predictions-<unix ms>.jsonl`), one [`Record`] per answered request, written whole and
//! flushed line by line, so a segment is readable while it is written (a reader skips a
//! partial last line). Images, when kept, live beside them as `images/<sha256>.<jpg|png>`.

use cascade_engines::{Answer, Detection, Output, ScoreSource, TextLine};
use serde::{Deserialize, Serialize};

/// The format version this build writes; readers refuse records of a later one.
pub const VERSION: u32 = 1;

/// One answered request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    /// Unix time of the answer, in milliseconds.
    pub t: u64,
    /// The request's id: the served answer and its shadow share it.
    pub id: String,
    pub hotkey: String,
    /// `stable` or `candidate`.
    pub arm: String,
    /// A shadow answer (not sent to the caller).
    #[serde(default)]
    pub shadow: bool,
    /// `http` or `axon`.
    pub via: String,
    /// The validator's hotkey (axon).
    pub caller: Option<String>,
    /// sha-256 of the request's image bytes (hex).
    pub image: String,
    /// The image's content key (the stage cache's), hex: results are keyed by it.
    pub key: String,
    pub width: u32,
    pub height: u32,
    /// None when nothing could be answered.
    pub prediction: Option<f32>,
    /// The fused score before the hotkey's calibration, when one was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<f32>,
    pub stage: String,
    /// `policy`, `fallback`, `partial` or `none`.
    pub source: String,
    pub model_ms: f64,
    pub ms: f64,
    /// The image, relative to the log folder, when the sampling rule kept it.
    pub image_file: Option<String>,
    /// Every primitive result the request produced.
    pub results: Vec<Logged>,
}

/// One primitive result: on which image (content key, hex), which call, what it gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Logged {
    pub image: String,
    pub primitive: String,
    pub model: String,
    #[serde(default)]
    pub args: String,
    pub output: LoggedOutput,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoggedOutput {
    Classification { score: f32, top: Vec<(String, f32)> },
    Embedding(Vec<f32>),
    Detections(Vec<LoggedBox>),
    TextLines(Vec<LoggedBox>),
    Answer { text: String, p_yes: Option<f32>, source: String },
    Error(String),
}

/// A detection (label, class, confidence) or a text line (text, confidence) and its box.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedBox {
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub class_id: u32,
    #[serde(default)]
    pub text: String,
    pub confidence: f32,
    pub bbox: [f32; 4],
}

/// Whether every number of an output is finite (JSON has no NaN: serde writes `null`, which
/// would not read back).
fn finite(o: &Output) -> bool {
    let ok = |v: f32| v.is_finite();
    match o {
        Output::Classification { score, top } => ok(*score) && top.iter().all(|(_, p)| ok(*p)),
        Output::Embedding(v) => v.iter().all(|x| ok(*x)),
        Output::Detections(d) => d.iter().all(|d| ok(d.confidence) && d.bbox.iter().all(|x| ok(*x))),
        Output::TextLines(l) => l.iter().all(|l| ok(l.confidence) && l.bbox.iter().all(|x| ok(*x))),
        Output::Answer(a) => a.p_yes.is_none_or(ok),
    }
}

impl LoggedOutput {
    pub fn of(o: &Output) -> LoggedOutput {
        if !finite(o) {
            return LoggedOutput::Error("the output held non-finite numbers (not logged)".into());
        }
        match o {
            Output::Classification { score, top } => LoggedOutput::Classification { score: *score, top: top.clone() },
            Output::Embedding(v) => LoggedOutput::Embedding(v.clone()),
            Output::Detections(d) => LoggedOutput::Detections(
                d.iter()
                    .map(|d| LoggedBox {
                        label: d.label.clone(),
                        class_id: d.class_id,
                        text: String::new(),
                        confidence: d.confidence,
                        bbox: d.bbox,
                    })
                    .collect(),
            ),
            Output::TextLines(l) => LoggedOutput::TextLines(
                l.iter()
                    .map(|l| LoggedBox {
                        label: String::new(),
                        class_id: 0,
                        text: l.text.clone(),
                        confidence: l.confidence,
                        bbox: l.bbox,
                    })
                    .collect(),
            ),
            Output::Answer(a) => {
                LoggedOutput::Answer { text: a.text.clone(), p_yes: a.p_yes, source: a.source.as_str().into() }
            }
        }
    }

    /// The engine output again (`None` for a logged error).
    pub fn output(&self) -> Option<Output> {
        Some(match self {
            LoggedOutput::Classification { score, top } => Output::Classification { score: *score, top: top.clone() },
            LoggedOutput::Embedding(v) => Output::Embedding(v.clone()),
            LoggedOutput::Detections(d) => Output::Detections(
                d.iter()
                    .map(|b| Detection {
                        class_id: b.class_id,
                        label: b.label.clone(),
                        confidence: b.confidence,
                        bbox: b.bbox,
                    })
                    .collect(),
            ),
            LoggedOutput::TextLines(l) => Output::TextLines(
                l.iter().map(|b| TextLine { text: b.text.clone(), confidence: b.confidence, bbox: b.bbox }).collect(),
            ),
            LoggedOutput::Answer { text, p_yes, source } => Output::Answer(Answer {
                text: text.clone(),
                p_yes: *p_yes,
                source: match source.as_str() {
                    "logprobs" => ScoreSource::Logprobs,
                    "parsed" => ScoreSource::Parsed,
                    _ => ScoreSource::None,
                },
            }),
            LoggedOutput::Error(_) => return None,
        })
    }
}

pub fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

/// A 16-byte content key from its hex form.
pub fn unhex16(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// One line of a segment as a record, or why it is not one (not JSON, another format version,
/// fields that do not fit). Untrusted input: the offline tools read logs from anywhere.
pub fn parse_line(line: &[u8]) -> Result<Record, String> {
    let v = serde_json::from_slice::<serde_json::Value>(line).map_err(|e| format!("not a JSON record ({e})"))?;
    match v.get("v").and_then(|x| x.as_u64()) {
        None => Err("no format version `v` (not a cascade prediction log record)".to_string()),
        Some(n) if n != u64::from(VERSION) => Err(format!("format version {n}; this build reads version {VERSION}")),
        Some(_) => {
            serde_json::from_value::<Record>(v).map_err(|e| format!("record does not fit version {VERSION}: {e}"))
        }
    }
}

impl Record {
    /// The kept image's path inside the log folder `dir`, when the record names one that stays
    /// inside it (a plain relative path: no `..`, no root, no drive).
    pub fn image_path(&self, dir: &std::path::Path) -> Option<std::path::PathBuf> {
        let f = std::path::Path::new(self.image_file.as_deref()?);
        f.components().all(|c| matches!(c, std::path::Component::Normal(_))).then(|| dir.join(f))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_seeds_are_records_and_a_hostile_path_stays_inside() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/log_line");
        let ok = super::parse_line(&std::fs::read(dir.join("record.json")).unwrap()).unwrap();
        assert_eq!(
            ok.image_path(std::path::Path::new("/log")).unwrap(),
            std::path::Path::new("/log/images/9f86d081884c7d65.jpg")
        );
        let hostile = super::parse_line(&std::fs::read(dir.join("hostile.json")).unwrap()).unwrap();
        assert_eq!(hostile.image_path(std::path::Path::new("/log")), None);
        assert!(super::parse_line(b"{\"v\": 2}").unwrap_err().contains("format version 2"));
    }
}

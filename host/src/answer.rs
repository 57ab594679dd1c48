//! What a hotkey answers one request with, whoever asked (HTTP, the axon, a smoke request, an
//! offline tool): the prediction, where it came from, the trace of the stages that ran.

use serde::Serialize;

use crate::runtime::request::TraceEntry;

/// What an answer's prediction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The router decided.
    Policy,
    /// The hotkey's fixed answer for failures.
    Fallback,
    /// The scores models had already produced when the policy failed.
    Partial,
    /// Nothing to answer with: `prediction` is NaN and the caller answers an error.
    None,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Policy => "policy",
            Source::Fallback => "fallback",
            Source::Partial => "partial",
            Source::None => "none",
        }
    }

    /// The `outcome` label of the request metrics and the status page.
    pub fn outcome(self) -> &'static str {
        match self {
            Source::Policy => "ok",
            Source::Fallback => "fallback",
            Source::Partial => "partial",
            Source::None => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub prediction: f32,
    /// The fused score before the hotkey's calibration, when one was applied (what
    /// `cascade calibrate` fits on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<f32>,
    pub stage: String,
    pub reason: String,
    /// True when the policy could not decide (the answer is then `source`'s).
    pub fallback: bool,
    pub source: Source,
    /// `stable` or `candidate`.
    pub arm: &'static str,
    pub trace: Vec<TraceEntry>,
    /// Model compute spent on this request, in milliseconds.
    pub model_ms: f64,
}

/// Milliseconds as answers state them: to 0.1 ms (finer digits are noise, not information).
pub(crate) fn tenth_ms(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// `serialize_with` for a duration in milliseconds: to 0.1 ms.
pub(crate) fn ser_tenth_ms<S: serde::Serializer>(ms: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(tenth_ms(*ms))
}

/// The validator reads exactly 0.5 as "no roadwork"; an answer is never exactly 0.5.
pub(crate) fn never_half(p: f32) -> f32 {
    if p == 0.5 {
        0.499
    } else {
        p
    }
}

//! A hotkey's live policy: its bound components and the rules around them (budget, fallback,
//! the answer's range). `answer` is the one code path for `serve`, `check` and offline tools.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_engines::{Image, Models};
use serde::Serialize;

use crate::runtime::request::{RequestCtx, TraceEntry};
use crate::config::ComponentRef;
use crate::runtime::{Bound, Plugin, Role, RoleSet};

pub struct Hotkey {
    pub name: String,
    pub ss58: Option<String>,
    pub file: PathBuf,
    pub fallback: f32,
    pub budget: Duration,
    pub router: Arc<Bound>,
    pub roles: Arc<RoleSet>,
    /// What each role's config asked for and what it resolved to (for reloads).
    pub bindings: Vec<(ComponentRef, Role, Arc<Plugin>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub prediction: f32,
    pub stage: String,
    pub reason: String,
    /// True when the hotkey's fallback answered because the policy could not.
    pub fallback: bool,
    pub trace: Vec<TraceEntry>,
    /// Model compute spent on this request, in milliseconds.
    pub model_ms: f64,
}

/// The validator reads exactly 0.5 as "no roadwork"; an answer is never exactly 0.5.
pub fn never_half(p: f32) -> f32 {
    if p == 0.5 {
        0.499
    } else {
        p
    }
}

impl Hotkey {
    pub fn answer(&self, models: &Arc<Models>, image: Image) -> Answer {
        self.answer_with(models, image, true)
    }

    /// An answer that leaves no trace in the metrics (smoke requests of a reload).
    pub fn answer_quietly(&self, models: &Arc<Models>, image: Image) -> Answer {
        self.answer_with(models, image, false)
    }

    fn answer_with(&self, models: &Arc<Models>, image: Image, counted: bool) -> Answer {
        let ctx = RequestCtx::new(models.clone(), &self.name, Instant::now() + self.budget);
        let r = self.router.decide(&ctx, self.roles.clone(), image, self.budget);
        let (prediction, stage, reason, fallback) = match r {
            Ok(Ok(d)) if d.prediction.is_finite() && (0.0..=1.0).contains(&d.prediction) => {
                (never_half(d.prediction), d.stage, d.reason, false)
            }
            Ok(Ok(d)) => self.fall_back(counted, "invalid-prediction", format!("router answered {} (outside [0, 1])", d.prediction)),
            Ok(Err(e)) => self.fall_back(counted, "policy-error", format!("router error: {}", crate::runtime::show_error(&e))),
            Err(e) => {
                if counted {
                    crate::metrics::global().component_event(&self.name, "router", e.kind());
                    tracing::warn!(hotkey = %self.name, component = %self.router.plugin.name, error = %e, "router failed");
                }
                self.fall_back(counted, e.kind(), format!("router {} {e}", self.router.plugin.name))
            }
        };
        Answer { prediction, stage, reason, fallback, trace: ctx.trace(), model_ms: ctx.model_time().as_secs_f64() * 1e3 }
    }

    fn fall_back(&self, counted: bool, why: &str, reason: String) -> (f32, String, String, bool) {
        if counted {
            crate::metrics::global().fallback(&self.name, why);
        }
        (self.fallback, "fallback".into(), reason, true)
    }
}

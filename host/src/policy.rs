//! A hotkey's live policy: its bound components (a stable arm and, during a rollout, a
//! candidate) and the rules around them (budget, fallback, the answer's range). `serve` is the
//! request path (async: the request's task awaits the policy); `answer` is the same decision
//! without rollout routing, for smoke requests and offline tools (which wait for it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::answer::{never_half, Answer, Source};
use crate::config::{ComponentRef, Side};
use crate::rollout::Rollout;
use crate::runtime::request::RequestCtx;
use crate::runtime::{block_on, Bound, Plugin, Role, RoleSet};
use crate::wit::Error;
use cascade_engines::{Image, Models};

/// One set of bound components: a router and the roles it reaches.
pub struct Arm {
    pub router: Arc<Bound>,
    pub roles: Arc<RoleSet>,
}

pub struct Hotkey {
    pub name: String,
    pub ss58: Option<String>,
    pub file: PathBuf,
    /// A fixed answer for failures, when the operator chose one.
    pub fallback: Option<f32>,
    pub budget: Duration,
    pub stable: Arm,
    pub candidate: Option<Arm>,
    pub rollout: Option<Arc<Rollout>>,
    pub axon: crate::config::AxonConfig,
    /// What each role's config asked for and what it resolved to (for reloads).
    pub bindings: Vec<(ComponentRef, Role, Arc<Plugin>)>,
    /// The prediction log, when the hotkey keeps one.
    pub log: Option<Arc<crate::predlog::Log>>,
    /// The calibration file as the hotkey file names it, and what it holds.
    pub calibration: Option<(PathBuf, crate::calibration::Calibration)>,
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::Stable => "stable",
        Side::Candidate => "candidate",
    }
}

impl Hotkey {
    fn arm(&self, side: Side) -> &Arm {
        match side {
            Side::Candidate => self.candidate.as_ref().unwrap_or(&self.stable),
            Side::Stable => &self.stable,
        }
    }

    /// The side that serves when no request key is involved: the rollout's winner, else stable.
    fn default_side(&self) -> Side {
        self.rollout.as_ref().and_then(|r| r.winner()).unwrap_or(Side::Stable)
    }

    /// What a validator would get at this hotkey's axon, in one line (`chain::describe`,
    /// named), when the hotkey serves the subnet.
    pub fn describe_axon(&self, chain: &crate::chain::Chain) -> Option<String> {
        let ss58 = self.ss58.as_deref()?;
        Some(format!("{} {}", self.name, crate::chain::describe(ss58, &self.axon, chain)))
    }

    /// What keeps validators from answers at this hotkey's axon (`chain::health`), when the
    /// hotkey serves the subnet.
    pub fn alarms(&self, chain: &crate::chain::Chain) -> Vec<crate::chain::health::Alarm> {
        self.ss58
            .as_deref()
            .map(|ss58| crate::chain::health::alarms(&self.name, ss58, &self.axon, chain))
            .unwrap_or_default()
    }

    /// The decision without rollout routing (offline tools): the winner or the stable arm.
    pub fn answer(&self, models: &Arc<Models>, image: Image) -> Answer {
        let ctx = RequestCtx::new(models.clone(), &self.name, Instant::now() + self.budget);
        block_on(self.decide(self.default_side(), &ctx, image, true))
    }

    /// An arm's answer in a request context made by the caller (`cascade replay`: one
    /// answering from the prediction log), leaving no trace in the metrics: the candidate's
    /// when `candidate` and the hotkey has one, else the stable arm's.
    pub fn answer_in(&self, ctx: &Arc<RequestCtx>, image: Image, candidate: bool) -> Answer {
        let side = if candidate && self.candidate.is_some() { Side::Candidate } else { Side::Stable };
        block_on(self.decide(side, ctx, image, false))
    }

    /// An answer that leaves no trace in the metrics (smoke requests of a reload).
    pub(crate) fn answer_quietly(&self, models: &Arc<Models>, image: Image) -> Answer {
        let ctx = RequestCtx::new(models.clone(), &self.name, Instant::now() + self.budget);
        block_on(self.decide(Side::Stable, &ctx, image, false))
    }

    /// A dry run of one arm (see `RequestCtx::dry`): every stage is reached, so a stage's
    /// configuration error (a class its detector lacks, a model of the wrong kind) is found at
    /// load. A policy that cannot answer without real evidence is not an error here; a
    /// configuration error the router returns, or a trap, is.
    pub(crate) fn dry_run(&self, models: &Arc<Models>, candidate: bool) -> Option<Result<(), String>> {
        let side = if candidate {
            self.candidate.as_ref()?;
            Side::Candidate
        } else {
            Side::Stable
        };
        let ctx = RequestCtx::new(models.clone(), &self.name, Instant::now() + self.budget).dry_run();
        let img = Arc::new(image::RgbImage::from_pixel(224, 224, image::Rgb([128, 128, 128])));
        let arm = self.arm(side);
        Some(match arm.router.decide_blocking(&ctx, arm.roles.clone(), img, self.budget) {
            Ok(Err(e @ (Error::InvalidArgument(_) | Error::UnknownModel(_) | Error::WrongKind(_)))) => Err(e.message()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("router {} {e}", arm.router.plugin.name)),
        })
    }

    /// The candidate's smoke request.
    pub(crate) fn candidate_quietly(&self, models: &Arc<Models>, image: Image) -> Option<Answer> {
        self.candidate.as_ref()?;
        let ctx = RequestCtx::new(models.clone(), &self.name, Instant::now() + self.budget);
        Some(block_on(self.decide(Side::Candidate, &ctx, image, false)))
    }

    /// The request path: the rollout picks the arm (sticky by `sticky`); a shadow copy of the
    /// other arm runs off the response path, sharing this request's memoised model results.
    /// The budget counts from `arrived`, so reading and decoding the image spend it too.
    /// `origin` keys the image for the stage cache (a hash of the request's encoded bytes).
    /// `prov` says where the request came from, for the prediction log.
    pub async fn serve(
        self: &Arc<Self>,
        models: &Arc<Models>,
        image: Image,
        sticky: u64,
        arrived: Instant,
        origin: [u8; 16],
        prov: crate::predlog::Provenance,
    ) -> Answer {
        let ctx = RequestCtx::new(models.clone(), &self.name, arrived + self.budget).with_origin(origin);
        let id = self.log.as_ref().map(|_| crate::predlog::request_id()).unwrap_or_default();
        let log = |ctx: &RequestCtx, a: &Answer, shadow: bool, ms: f64| {
            if let Some(l) = &self.log {
                l.record(&crate::predlog::Whose { hotkey: &self.name, id: &id, shadow }, &prov, ctx, a, ms);
            }
        };
        let Some(ro) = self.rollout.clone() else {
            let a = self.decide(Side::Stable, &ctx, image, true).await;
            log(&ctx, &a, false, arrived.elapsed().as_secs_f64() * 1e3);
            return a;
        };
        let route = ro.route(sticky);
        let started = Instant::now();
        let a = self.decide(route.serve, &ctx, image.clone(), true).await;
        ro.record(route.serve, a.fallback, a.trace.len() > 1, started.elapsed().as_secs_f64() * 1e3);
        log(&ctx, &a, false, arrived.elapsed().as_secs_f64() * 1e3);
        if route.shadow {
            let logged = self.log.as_ref().map(|_| (id.clone(), prov.clone()));
            self.shadow(&ro, route.serve, ctx, image, a.prediction, logged);
        }
        a
    }

    fn shadow(
        self: &Arc<Self>,
        ro: &Arc<Rollout>,
        served: Side,
        ctx: Arc<RequestCtx>,
        image: Image,
        served_pred: f32,
        logged: Option<(String, crate::predlog::Provenance)>,
    ) {
        let other = if served == Side::Stable { Side::Candidate } else { Side::Stable };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let inflight = &ro.shadow.inflight;
        if inflight.fetch_add(1, std::sync::atomic::Ordering::AcqRel) >= ro.max_inflight() {
            inflight.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            ro.shadow.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            crate::metrics::global().shadow(&self.name, "skipped");
            return;
        }
        let (me, ro) = (self.clone(), ro.clone());
        rt.spawn(async move {
            let started = Instant::now();
            let a = me.decide(other, &ctx, image, false).await;
            ro.record(other, a.fallback, a.trace.len() > 1, started.elapsed().as_secs_f64() * 1e3);
            if let (Some(l), Some((id, prov))) = (&me.log, &logged) {
                let who = crate::predlog::Whose { hotkey: &me.name, id, shadow: true };
                l.record(&who, prov, &ctx, &a, started.elapsed().as_secs_f64() * 1e3);
            }
            if a.fallback {
                crate::metrics::global().shadow(&me.name, "failed");
            } else {
                ro.record_shadow(served_pred, a.prediction);
            }
            ro.shadow.inflight.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        });
    }

    async fn decide(&self, side: Side, ctx: &Arc<RequestCtx>, image: Image, counted: bool) -> Answer {
        let arm = self.arm(side);
        let r = arm.router.decide(ctx, arm.roles.clone(), image, self.budget).await;
        let decided = match r {
            Ok(Ok(d)) if d.prediction.is_finite() && (0.0..=1.0).contains(&d.prediction) => {
                let raw = self.calibration.as_ref().map(|_| d.prediction);
                let p = self.calibration.as_ref().map_or(d.prediction, |(_, c)| c.apply(d.prediction));
                Ok((never_half(p), raw, d.stage, d.reason))
            }
            Ok(Ok(d)) => Err(("invalid-prediction", format!("router answered {} (outside [0, 1])", d.prediction))),
            Ok(Err(e)) => Err(("policy-error", format!("router error: {}", e.message()))),
            Err(e) => {
                if counted {
                    crate::metrics::global().component_event(&self.name, "router", e.kind());
                    tracing::warn!(hotkey = %self.name, component = %arm.router.plugin.name, error = %e, "router failed");
                }
                Err((e.kind(), format!("router {} {e}", arm.router.plugin.name)))
            }
        };
        let (prediction, raw, stage, reason, source) = match decided {
            Ok((p, raw, stage, reason)) => (p, raw, stage, reason, Source::Policy),
            Err((why, reason)) => {
                let (p, stage, reason, source) = self.fall_back(ctx, counted, why, reason);
                (p, None, stage, reason, source)
            }
        };
        Answer {
            prediction,
            raw,
            stage,
            reason,
            fallback: source != Source::Policy,
            source,
            arm: side_name(side),
            trace: ctx.trace(),
            model_ms: ctx.model_time().as_secs_f64() * 1e3,
        }
    }

    /// What a failed policy answers: the fixed fallback if the hotkey has one, else the scores
    /// that models already produced for this request, else nothing (NaN; the caller errs).
    fn fall_back(
        &self,
        ctx: &RequestCtx,
        counted: bool,
        why: &'static str,
        reason: String,
    ) -> (f32, String, String, Source) {
        if counted {
            crate::metrics::global().fallback(&self.name, why);
        }
        if let Some(f) = self.fallback {
            return (f, "fallback".into(), reason, Source::Fallback);
        }
        match ctx.evidence() {
            Some((p, models)) => {
                if counted {
                    crate::metrics::global().partial(&self.name, &models);
                }
                let p = never_half(p.clamp(0.0, 1.0));
                (p, "partial".into(), format!("{reason}; answered from {models}"), Source::Partial)
            }
            None => (f32::NAN, "failed".into(), reason, Source::None),
        }
    }
}

//! `cascade-router`: an ordered list of stages, each running one or more host primitives
//! concurrently; evidence accumulates as named scores, is fused by the hotkey's fuser after
//! every stage, and a stage may end the decision early on a low or high threshold.
//! Built for `cascade:policy@1.1.0`: a stage can require a time budget (`min_budget_ms`), and
//! detection asks the host only for the classes that count as evidence. Since 1.2.0 a stage
//! can classify zoomed tiles of the image (`zoom`), so that a work zone that fills only a
//! corner of a wide scene is seen large. Built for `cascade:policy@1.2.0` since 1.3.0: an `ask`
//! stage scores a VLM's yes/no answer with the host's P(yes) (`ask-score`: token
//! log-probabilities when the endpoint gives them, else the answer's words).

mod params;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use params::{Found, OnError, Params, Stage, Zoom};

wit_bindgen::generate!({
    path: "../../wit/v1.2.0",
    world: "router-component",
});

use cascade::policy::primitives::{ask_score, classify, detect_classes, remaining_ms, run_all, Call, Outcome};
use cascade::policy::roles;
use cascade::policy::types::{Bbox, ComponentInfo, Detection, Error, Image, NamedScore};
use exports::cascade::policy::meta::Guest as Meta;
use exports::cascade::policy::router::{Decision, Guest as Router, RequestMeta};

static PARAMS: OnceLock<Params> = OnceLock::new();
/// What each stage asks, worked out once at `configure` (by stage index): the `run-all` list
/// and the evidence names, so a decision allocates neither.
static PLANS: OnceLock<Vec<Plan>> = OnceLock::new();

/// A stage's calls on the whole image and the evidence name of each, its detector's and its
/// zoom tiles' evidence names, and the classes its detectors are asked for.
struct Plan {
    calls: Vec<Call>,
    names: Vec<String>,
    detect_name: String,
    classes: Vec<String>,
    zoom_calls: Vec<Call>,
    zoom_names: Vec<String>,
}

impl Plan {
    fn of(stage: &Stage) -> Plan {
        let suffix = if stage.flip { ":flip" } else { "" };
        let classify = || stage.classify.iter().map(|m| Call::Classify(m.clone()));
        let (mut calls, mut names): (Vec<Call>, Vec<String>) = match stage.zoom {
            Some(_) => (Vec::new(), Vec::new()),
            None => (classify().collect(), stage.classify.iter().map(|m| format!("{m}{suffix}")).collect()),
        };
        if let Some(m) = &stage.read_text {
            calls.push(Call::ReadText(m.clone()));
            names.push(format!("text{suffix}"));
        }
        // detection goes through `detect-classes`, not `run-all`: only the classes that count
        // come back
        if let Some(a) = &stage.ask {
            calls.push(Call::Ask((a.model.clone(), a.prompt.clone())));
            names.push(format!("{}{suffix}", a.name));
        }
        let (zoom_calls, zoom_names) = match stage.zoom {
            Some(_) => (classify().collect(), stage.classify.iter().map(|m| format!("{m}:zoom{suffix}")).collect()),
            None => (Vec::new(), Vec::new()),
        };
        Plan {
            calls,
            names,
            detect_name: stage.detect.as_ref().map(|d| format!("{}{suffix}", d.name)).unwrap_or_default(),
            classes: stage.detect.as_ref().map(|d| d.wanted()).unwrap_or_default(),
            zoom_calls,
            zoom_names,
        }
    }
}

struct Component;

impl Meta for Component {
    fn info() -> ComponentInfo {
        ComponentInfo {
            name: "cascade-router".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            params_schema: params::SCHEMA.into(),
        }
    }

    fn configure(json: String) -> Result<(), String> {
        let p: Params = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        p.check()?;
        let plans = p.stages.iter().map(Plan::of).collect();
        PARAMS.set(p).map_err(|_| "already configured".to_string())?;
        PLANS.set(plans).map_err(|_| "already configured".to_string())
    }
}

/// Evidence gathered so far, by name (the names live in `PLANS`), in name order; a name given
/// again replaces its score. A handful of entries: a sorted vector, no tree nodes.
#[derive(Default)]
struct Evidence(Vec<(&'static str, f32)>);

impl Evidence {
    fn insert(&mut self, name: &'static str, score: f32) {
        match self.0.binary_search_by(|(n, _)| (*n).cmp(name)) {
            Ok(i) => self.0[i].1 = score,
            Err(i) => self.0.insert(i, (name, score)),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn mean(&self) -> f32 {
        self.0.iter().map(|e| e.1).sum::<f32>() / self.0.len() as f32
    }
}

impl Router for Component {
    fn decide(img: &Image, _req: RequestMeta) -> Result<Decision, Error> {
        let (Some(p), Some(plans)) = (PARAMS.get(), PLANS.get()) else {
            return Err(Error::InvalidArgument("router used before configure".into()));
        };
        let mut evidence = Evidence(Vec::with_capacity(8));
        let mut notes: Vec<String> = Vec::new();
        let mut flipped: Option<Image> = None;
        let last = p.stages.len() - 1;
        for (i, stage) in p.stages.iter().enumerate() {
            if let Some(need) = stage.min_budget_ms {
                let left = remaining_ms();
                if left < need && i != last {
                    notes.push(format!("{} skipped: {left} ms left, needs {need}", stage.name));
                    continue;
                }
            }
            let target = if stage.flip { &*flipped.get_or_insert_with(|| img.flip_horizontal()) } else { img };
            run_stage(stage, &plans[i], target, &mut evidence, &mut notes)?;
            if evidence.is_empty() {
                if i == last {
                    let why =
                        if notes.is_empty() { "no primitive produced a score".to_string() } else { notes.join("; ") };
                    return Err(Error::Component(format!("no evidence after the last stage: {why}")));
                }
                continue;
            }
            let fused = fuse(&evidence)?;
            let exit = if i == last {
                Some("final")
            } else if stage.exit_low.is_some_and(|t| fused <= t) {
                Some("exit-low")
            } else if stage.exit_high.is_some_and(|t| fused >= t) {
                Some("exit-high")
            } else {
                None
            };
            if let Some(kind) = exit {
                // built by hand: `format!` machinery is most of a decision's time inside Wasm
                let mut reason = String::with_capacity(64 + 16 * evidence.0.len());
                for part in [kind, " at ", &stage.name, ": fused "] {
                    reason.push_str(part);
                }
                push_fixed3(&mut reason, fused);
                reason.push_str(" from ");
                show(&mut reason, &evidence);
                if !notes.is_empty() {
                    reason.push_str(&format!(" [{}]", notes.join("; ")));
                }
                return Ok(Decision {
                    prediction: p.tie_break.apply(fused.clamp(0.0, 1.0)),
                    stage: stage.name.clone(),
                    reason,
                });
            }
        }
        unreachable!("the last stage always answers or errors")
    }
}

/// Issues every primitive of the stage in one `run-all`, then folds the results into evidence.
fn run_stage(
    stage: &Stage,
    plan: &'static Plan,
    img: &Image,
    ev: &mut Evidence,
    notes: &mut Vec<String>,
) -> Result<(), Error> {
    // with zoom, the classifiers see the tiles, the other primitives the whole image
    if let Some(z) = &stage.zoom {
        run_zoom(stage, plan, z, img, ev, notes)?;
    }
    if let Some(d) = &stage.detect {
        let classes = &plan.classes;
        let first = detections(&d.model, d.min_confidence, classes, img, stage.on_error, notes)?;
        let second = match &d.agree {
            Some(a) => detections(&a.model, a.min_confidence, classes, img, stage.on_error, notes)?,
            None => None,
        };
        // agreement needs both detectors: with one missing the stage has no evidence
        let first = first.filter(|_| d.agree.is_none() || second.is_some());
        if let Some(dets) = first {
            match d.found(&dets, second.as_deref()) {
                Found::Score(s) => {
                    ev.insert(&plan.detect_name, s);
                }
                Found::Nothing => {}
                Found::Disagree(a, b) => notes.push(format!(
                    "{}: detectors disagree ({} sees {a}, {} sees {b}): escalating",
                    d.name,
                    d.model,
                    d.agree.as_ref().map(|x| x.model.as_str()).unwrap_or("")
                )),
            }
        }
    }
    let calls = &plan.calls;
    if calls.is_empty() {
        return Ok(());
    }
    for ((call, result), name) in calls.iter().zip(run_calls(img, calls)).zip(&plan.names) {
        let outcome = match result {
            Ok(o) => o,
            Err(e) if stage.on_error == OnError::Skip => {
                notes.push(format!("{} skipped: {}", call_name(call), show_error(&e)));
                continue;
            }
            Err(e) => return Err(e),
        };
        match outcome {
            Outcome::Classify(c) => {
                ev.insert(name, c.score);
            }
            Outcome::ReadText(lines) => {
                if let Some(s) = roles::score_text(&lines)? {
                    ev.insert(name, s);
                }
            }
            Outcome::Detect(_) => {}
            Outcome::Ask(_) => {
                let Some(a) = &stage.ask else { continue };
                // the answer `run-all` fetched, with its score: the host's memo answers this
                // without asking the model again
                let scored = match ask_score(&a.model, img, &a.prompt) {
                    Ok(s) => s,
                    Err(e) if stage.on_error == OnError::Skip => {
                        notes.push(format!("ask({}) skipped: {}", a.model, show_error(&e)));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match a.score(scored.p_yes) {
                    Some(s) => {
                        ev.insert(name, s);
                    }
                    None => notes.push(format!("ask({}): no yes or no in {:?}", a.model, short(&scored.text))),
                }
            }
            Outcome::Embed(_) => {}
        }
    }
    Ok(())
}

/// `run-all`, except that a lone classification goes through `classify`, which crosses the
/// boundary without lowering a list of variants or allocating one for the result.
fn run_calls(img: &Image, calls: &[Call]) -> Results {
    match calls {
        [Call::Classify(m)] => Results::One(Some(classify(m, img).map(Outcome::Classify))),
        _ => Results::All(run_all(img, calls).into_iter()),
    }
}

/// The results of `run_calls`, in call order.
enum Results {
    One(Option<Result<Outcome, Error>>),
    All(std::vec::IntoIter<Result<Outcome, Error>>),
}

impl Iterator for Results {
    type Item = Result<Outcome, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Results::One(r) => r.take(),
            Results::All(it) => it.next(),
        }
    }
}

/// The detections of `model` among `classes`; `None` when it failed and the stage skips
/// failures. `invalid-argument` (a class the detector does not have) is a configuration error
/// and always fails the decision, so that the load-time dry run refuses it.
fn detections(
    model: &str,
    conf: f32,
    classes: &[String],
    img: &Image,
    on_error: OnError,
    notes: &mut Vec<String>,
) -> Result<Option<Vec<Detection>>, Error> {
    match detect_classes(model, img, conf, classes) {
        Ok(d) => Ok(Some(d)),
        Err(e @ Error::InvalidArgument(_)) => Err(e),
        Err(e) if on_error == OnError::Skip => {
            notes.push(format!("detect({model}) skipped: {}", show_error(&e)));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Classifies every tile of the zoom grid (all the stage's models in one `run-all` per tile)
/// and adds one score per model, `<model>:zoom`, reduced over the tiles that answered.
fn run_zoom(
    stage: &Stage,
    plan: &'static Plan,
    z: &Zoom,
    img: &Image,
    ev: &mut Evidence,
    notes: &mut Vec<String>,
) -> Result<(), Error> {
    let calls = &plan.zoom_calls;
    let mut scores: Vec<Vec<f32>> = vec![Vec::new(); calls.len()];
    for [x0, y0, x1, y1] in z.tiles(img.width(), img.height()) {
        let tile = match img.crop(Bbox { x0, y0, x1, y1 }) {
            Ok(t) => t,
            Err(e) if stage.on_error == OnError::Skip => {
                notes.push(format!("zoom tile skipped: {}", show_error(&e)));
                continue;
            }
            Err(e) => return Err(e),
        };
        for ((call, result), out) in calls.iter().zip(run_calls(&tile, calls)).zip(scores.iter_mut()) {
            match result {
                Ok(Outcome::Classify(c)) => out.push(c.score),
                Ok(_) => {}
                Err(e) if stage.on_error == OnError::Skip => {
                    notes.push(format!("{} on a zoom tile skipped: {}", call_name(call), show_error(&e)));
                }
                Err(e) => return Err(e),
            }
        }
    }
    for (name, tile_scores) in plan.zoom_names.iter().zip(&scores) {
        if let Some(s) = z.reduce.apply(tile_scores) {
            ev.insert(name, s);
        }
    }
    Ok(())
}

/// Set once the host has said no fuser is bound: the binding is fixed for an instance's life
/// (a new config makes new instances), so later decisions skip the call.
static NO_FUSER: AtomicBool = AtomicBool::new(false);

/// The hotkey's fuser; without one, a single score stands for itself and several are averaged.
fn fuse(ev: &Evidence) -> Result<f32, Error> {
    let mean = || ev.mean();
    if NO_FUSER.load(Ordering::Relaxed) {
        return Ok(mean());
    }
    let scores: Vec<NamedScore> = ev.0.iter().map(|(n, s)| NamedScore { name: n.to_string(), score: *s }).collect();
    match roles::fuse(&scores) {
        Err(Error::UnboundRole(_)) => {
            NO_FUSER.store(true, Ordering::Relaxed);
            Ok(mean())
        }
        other => other,
    }
}

/// Appends a score with three decimals by integer arithmetic: `{:.3}` pulls in the exact float
/// formatter, which is most of a decision's time inside Wasm. Scores are in [0, 1].
fn push_fixed3(out: &mut String, v: f32) {
    if !v.is_finite() {
        let _ = write!(out, "{v}");
        return;
    }
    // half away from zero, as `round` does, without its libm call inside Wasm
    let m = (v.abs() as f64 * 1000.0 + 0.5).floor() as u64;
    if v < 0.0 && m != 0 {
        out.push('-');
    }
    match m / 1000 {
        whole @ 0..=9 => out.push(char::from(b'0' + whole as u8)),
        whole => {
            let _ = write!(out, "{whole}");
        }
    }
    out.push('.');
    let frac = m % 1000;
    for d in [frac / 100, frac / 10 % 10, frac % 10] {
        out.push(char::from(b'0' + d as u8));
    }
}

/// Appends the evidence as `name=score, …`.
fn show(out: &mut String, ev: &Evidence) {
    for (i, (n, s)) in ev.0.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(n);
        out.push('=');
        push_fixed3(out, *s);
    }
}

/// The first 60 characters of an answer, for a note.
fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

fn call_name(c: &Call) -> String {
    match c {
        Call::Classify(m) => format!("classify({m})"),
        Call::Detect((m, _)) => format!("detect({m})"),
        Call::ReadText(m) => format!("read-text({m})"),
        Call::Embed(m) => format!("embed({m})"),
        Call::Ask((m, _)) => format!("ask({m})"),
    }
}

fn show_error(e: &Error) -> String {
    match e {
        Error::UnknownModel(m) => format!("unknown model {m}"),
        Error::WrongKind(m) => format!("wrong kind: {m}"),
        Error::Engine(m) => format!("engine: {m}"),
        Error::DeadlineExceeded => "deadline exceeded".into(),
        Error::InvalidArgument(m) => format!("invalid argument: {m}"),
        Error::UnboundRole(m) => format!("unbound role {m}"),
        Error::Component(m) => format!("component: {m}"),
    }
}

export!(Component);

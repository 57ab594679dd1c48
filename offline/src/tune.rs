//! `cascade tune`: a hotkey's exit thresholds and fusion weights swept over a labelled set.
//! Each image's evidence after every stage (and each stage's model time) is computed once, by
//! the hotkey's own components with the stages cut after 1, 2, … n and no early exit (the
//! models run once: later cuts are answered by the stage cache); then every setting of the
//! space is simulated (`tune_space`), so thousands of settings take seconds. Reports the
//! cost/accuracy frontier, the chosen setting's figures in-sample and by leave-one-group-out
//! (the choice is remade without the held-out group), writes the candidate as a hotkey file
//! with a canary rollout, and draws the frontier and the threshold sweep (`tune_svg`).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::augment::{Levels, Style};
use super::manifest::{self, Example};
use super::train::load_example;
use super::tune_space::{self, Setting, Space, SpaceFile, MAX_SETTINGS};
use super::Progress;
use cascade_common::scores::{Confusion, Figures};
use cascade_host::load::{self, Sources};
use cascade_host::runtime::request::RequestCtx;
use cascade_host::runtime::{Bound, Runtime};

#[derive(clap::Args)]
pub struct TuneArgs {
    /// The hotkey (its `name`) whose thresholds and weights are swept.
    #[arg(long)]
    pub hotkey: String,
    /// Labelled manifests (`path,label`); folds leave out one source (first folder) at a time.
    #[arg(long = "manifest", required = true)]
    pub manifests: Vec<std::path::PathBuf>,
    /// Level 0 of the validator's augmentation for every image.
    #[arg(long)]
    pub validator_style: bool,
    /// Validator augmentation levels, one drawn per image (`0-3`).
    #[arg(long, value_parser = Levels::parse)]
    pub levels: Option<Levels>,
    /// Seed of the per-image level and augmentation draws.
    #[arg(long, default_value_t = 72)]
    pub seed: u64,
    /// A TOML file of values per threshold and weight (default: every non-final stage's
    /// thresholds on a grid).
    #[arg(long)]
    pub space: Option<std::path::PathBuf>,
    /// `mcc` or `reward`.
    #[arg(long, default_value = "mcc")]
    pub objective: String,
    /// Choose only settings within this model time per request.
    #[arg(long)]
    pub max_ms: Option<f64>,
    /// The candidate hotkey file to write.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// The frontier and threshold sweep picture.
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
}

/// One image's evidence after each stage and the model time each stage added.
pub struct Probe {
    pub label: bool,
    pub group: String,
    pub evidence: Vec<Option<BTreeMap<String, f32>>>,
    pub cost_ms: Vec<f64>,
}

/// The named scores of a `cascade-router` reason: `... from a=0.100, b:zoom=0.200 [notes]`.
fn evidence_of(reason: &str) -> Option<BTreeMap<String, f32>> {
    let from = reason.split_once(" from ")?.1;
    let list = from.split(" [").next().unwrap_or(from);
    list.split(", ")
        .map(|kv| kv.rsplit_once('=').and_then(|(k, v)| Some((k.to_string(), v.trim().parse::<f32>().ok()?))))
        .collect()
}

/// The outcome of one setting over a set of images.
#[derive(Clone, Copy, Default)]
pub struct Outcome {
    pub confusion: Confusion,
    pub failed: u64,
    pub cost_ms: f64,
}

impl Outcome {
    pub fn figures(&self) -> Figures {
        self.confusion.figures()
    }
    pub fn ms(&self) -> f64 {
        self.cost_ms / self.confusion.figures().n.max(1) as f64
    }
}

/// How a setting's answers are simulated: whether the hotkey fuses, and the calibration its
/// answers go through before the 0.5 cut (as served).
#[derive(Clone, Copy)]
pub struct Sim<'a> {
    pub has_fuser: bool,
    pub calibration: Option<&'a cascade_host::calibration::Calibration>,
}

pub fn simulate(probes: &[&Probe], s: &Setting, sim: Sim) -> Outcome {
    let mut o = Outcome::default();
    for p in probes {
        match tune_space::decide(&p.evidence, s, sim.has_fuser) {
            Some((pred, stages)) => {
                let pred = sim.calibration.map_or(pred, |c| c.apply(pred));
                o.confusion.add(pred, p.label);
                o.cost_ms += p.cost_ms[..stages].iter().sum::<f64>();
            }
            None => {
                // no answer: scored as a wrong one, so that failing more never looks better
                o.failed += 1;
                o.confusion.add(if p.label { 0.0 } else { 1.0 }, p.label);
                o.cost_ms += p.cost_ms.iter().sum::<f64>();
            }
        }
    }
    o
}

fn score(o: &Outcome, objective: &str) -> f64 {
    let f = o.figures();
    if objective == "reward" {
        f.reward
    } else {
        f.mcc
    }
}

/// The best setting index by the objective within the cost cap (ties: the cheaper).
fn choose(outcomes: &[(usize, Outcome)], objective: &str, max_ms: Option<f64>) -> Option<usize> {
    outcomes
        .iter()
        .filter(|(_, o)| max_ms.is_none_or(|m| o.ms() <= m))
        .max_by(|a, b| score(&a.1, objective).total_cmp(&score(&b.1, objective)).then(b.1.ms().total_cmp(&a.1.ms())))
        .map(|(i, _)| *i)
}

pub fn tune(rt: &Arc<Runtime>, src: &Sources, a: &TuneArgs) -> anyhow::Result<ExitCode> {
    if !matches!(a.objective.as_str(), "mcc" | "reward") {
        anyhow::bail!("--objective {:?}: mcc or reward", a.objective);
    }
    let (state, hk) = load::load_for(rt, src, &a.hotkey)?;
    let hk = &*hk;
    let router = &hk.stable.router;
    if router.plugin.name != "cascade-router" {
        anyhow::bail!("tune simulates cascade-router; {} uses {}", a.hotkey, router.plugin.name);
    }
    let params: Value = serde_json::from_str(&router.params)?;
    let stages = params["stages"].as_array().cloned().unwrap_or_default();
    let names: Vec<String> = stages.iter().map(|s| s["name"].as_str().unwrap_or("").to_string()).collect();
    let fuser = hk.stable.roles.fuser.clone();
    let fuser_params: Value = match &fuser {
        Some(f) if f.plugin.name == "weighted" => serde_json::from_str(&f.params)?,
        Some(f) => anyhow::bail!("tune simulates the weighted fuser; {} uses {}", a.hotkey, f.plugin.name),
        None => json!({}),
    };
    let num_map = |v: &Value| -> BTreeMap<String, f32> {
        v.as_object()
            .map(|m| m.iter().filter_map(|(k, x)| Some((k.clone(), x.as_f64()? as f32))).collect())
            .unwrap_or_default()
    };
    let base = Setting {
        exits: stages
            .iter()
            .map(|s| (s["exit_low"].as_f64().map(|v| v as f32), s["exit_high"].as_f64().map(|v| v as f32)))
            .collect(),
        weights: num_map(&fuser_params["weights"]),
        boost: num_map(&fuser_params["boost"]),
    };
    let space_file: Option<SpaceFile> = match &a.space {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            Some(toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?)
        }
        None => None,
    };
    let space = Space::new(base.clone(), &names, space_file).map_err(|e| anyhow::anyhow!(e))?;
    let size = space.size();
    if space.exits.is_empty() && space.weights.is_empty() && space.boost.is_empty() {
        anyhow::bail!("the tune space is empty: nothing to vary (a one-stage policy without a space file?)");
    }
    if size > MAX_SETTINGS {
        anyhow::bail!("the tune space has {size} settings, more than {MAX_SETTINGS}: narrow it");
    }

    // the evidence after each stage, once per image
    let cut: Vec<Arc<Bound>> = (1..=stages.len())
        .map(|i| {
            let mut p = params.clone();
            let mut st: Vec<Value> = stages[..i].to_vec();
            for s in &mut st {
                if let Some(o) = s.as_object_mut() {
                    o.remove("exit_low");
                    o.remove("exit_high");
                }
            }
            p["stages"] = Value::Array(st);
            Bound::new(rt.clone(), router.plugin.clone(), &hk.name, p.to_string(), router.limits)
                .map(Arc::new)
                .map_err(|e| anyhow::anyhow!("cutting {} after stage {i}: {e}", a.hotkey))
        })
        .collect::<anyhow::Result<_>>()?;
    let loaded = manifest::load_all(&a.manifests)?;
    let style = Style::from_flags(a.validator_style, a.levels.clone(), a.seed);
    let mut probes = Vec::with_capacity(loaded.examples.len());
    let mut progress = Progress::new("tune: evidence", loaded.examples.len());
    let started = Instant::now();
    for ex in &loaded.examples {
        progress.tick();
        match probe(&state.models, hk, &cut, ex, style.as_ref()) {
            Ok(p) => probes.push(p),
            Err(e) => eprintln!("{}: {e:#} (left out)", ex.row),
        }
    }
    let probe_s = started.elapsed().as_secs_f64();
    if probes.is_empty() {
        anyhow::bail!("no image could be evaluated");
    }

    // every setting over every image
    let started = Instant::now();
    let all: Vec<&Probe> = probes.iter().collect();
    let sim = Sim { has_fuser: fuser.is_some(), calibration: hk.calibration.as_ref().map(|(_, c)| c) };
    let settings: Vec<(usize, Setting)> = (0..size).filter_map(|k| space.nth(k).map(|s| (k as usize, s))).collect();
    let mut progress = Progress::new("tune: settings", settings.len());
    let outcomes: Vec<(usize, Outcome)> = settings
        .iter()
        .enumerate()
        .map(|(j, (_, s))| {
            progress.tick();
            (j, simulate(&all, s, sim))
        })
        .collect();
    let sweep_s = started.elapsed().as_secs_f64();
    let current = simulate(&all, &base, sim);
    let best =
        choose(&outcomes, &a.objective, a.max_ms).ok_or_else(|| anyhow::anyhow!("no setting within --max-ms"))?;
    let chosen = &settings[best].1;

    // the choice remade without each group, scored on it
    let mut groups: HashMap<&str, Vec<&Probe>> = HashMap::new();
    for p in &probes {
        groups.entry(p.group.as_str()).or_default().push(p);
    }
    let (mut cv, mut cv_current) = (Confusion::default(), Confusion::default());
    let mut cv_ms = 0f64;
    if groups.len() > 1 {
        let mut progress = Progress::new("tune: grouped folds", groups.len());
        for (g, held) in &groups {
            progress.tick();
            let train: Vec<&Probe> = probes.iter().filter(|p| p.group != *g).collect();
            let outs: Vec<(usize, Outcome)> =
                settings.iter().enumerate().map(|(j, (_, s))| (j, simulate(&train, s, sim))).collect();
            let Some(b) = choose(&outs, &a.objective, a.max_ms) else { continue };
            let o = simulate(held, &settings[b].1, sim);
            add(&mut cv, &o.confusion);
            cv_ms += o.cost_ms;
            add(&mut cv_current, &simulate(held, &base, sim).confusion);
        }
    }

    let frontier = pareto(&outcomes);
    let sweeps = sweeps(&all, chosen, &names, sim);
    println!(
        "tune {}: {} images ({} groups), evidence in {probe_s:.1} s, {} settings in {sweep_s:.2} s",
        a.hotkey,
        probes.len(),
        groups.len(),
        settings.len()
    );
    let flat = frontier.len() == 1;
    if flat {
        let (o, f) = (&outcomes[frontier[0]].1, outcomes[frontier[0]].1.figures());
        println!(
            "the frontier is one point: no setting is both cheaper and better than {:.2} ms/request at MCC {:.3}{}",
            o.ms(),
            f.mcc,
            if outcomes.iter().all(|(_, x)| (x.ms() - o.ms()).abs() < 1e-9 && x.figures().mcc == f.mcc) {
                " (every setting answers these images the same: the space changes nothing here)"
            } else {
                ""
            }
        );
    }
    println!("cost/accuracy frontier (model ms per request → {}):", a.objective);
    println!("  {:>8} {:>7} {:>7} {:>8}  setting", "ms", "MCC", "reward", "accuracy");
    for &j in frontier.iter().take(15) {
        let (o, f) = (&outcomes[j].1, outcomes[j].1.figures());
        println!(
            "  {:>8.2} {:>7.3} {:>7.3} {:>8.3}  {}",
            o.ms(),
            f.mcc,
            f.reward,
            f.accuracy,
            describe(&settings[j].1, &names)
        );
    }
    let row = |name: &str, o: &Outcome| {
        let f = o.figures();
        println!(
            "  {name:<28} MCC {:.3}  reward {:.3}  accuracy {:.3}  {:.2} ms/request",
            f.mcc,
            f.reward,
            f.accuracy,
            o.ms()
        );
    };
    println!("figures:");
    row("current (in-sample)", &current);
    row("chosen (in-sample)", &outcomes[best].1);
    if groups.len() > 1 {
        let n = (cv.figures().n).max(1) as f64;
        let f = cv.figures();
        println!(
            "  {:<28} MCC {:.3}  reward {:.3}  accuracy {:.3}  {:.2} ms/request   (current: MCC {:.3})",
            "chosen by leave-one-group-out",
            f.mcc,
            f.reward,
            f.accuracy,
            cv_ms / n,
            cv_current.figures().mcc
        );
    }
    println!("chosen: {}", describe(chosen, &names));
    let chosen_mcc = outcomes[best].1.figures().mcc;
    for note in sweep_notes(&sweeps, chosen_mcc, &space, &names, &a.objective, a.max_ms, &all, chosen, sim) {
        println!("  note: {note}");
    }
    // the simulation checked: the chosen setting through the real components
    let (agree, checked) = check_chosen(
        rt,
        &state.models,
        hk,
        &params,
        chosen,
        &fuser_params,
        &loaded.examples,
        style.as_ref(),
        &probes,
        sim,
    )?;
    println!("checked through the components: {agree} of {checked} answers as simulated");
    super::tune_candidate::write(
        &hk.file,
        &a.out,
        &with_exits(&params, chosen),
        fuser.as_ref().map(|_| with_weights(&fuser_params, chosen)).as_ref(),
    )?;
    println!("candidate hotkey file (canary rollout): {}", a.out.display());
    if let Some(svg) = &a.svg {
        let points: Vec<(f64, f64)> = outcomes.iter().map(|(_, o)| (o.ms(), o.figures().mcc)).collect();
        let front: Vec<(f64, f64)> =
            frontier.iter().map(|&j| (outcomes[j].1.ms(), outcomes[j].1.figures().mcc)).collect();
        let mut notes = vec![format!(
            "chosen: in-sample MCC {:.3} (current {:.3}){}",
            chosen_mcc,
            current.figures().mcc,
            if flat { "; the frontier is one point" } else { "" }
        )];
        if groups.len() > 1 {
            notes.push(format!(
                "the choice remade without each of {} groups, scored on it (leave-one-group-out): MCC {:.3} (current {:.3})",
                groups.len(),
                cv.figures().mcc,
                cv_current.figures().mcc
            ));
        }
        let pic = super::tune_svg::draw(&super::tune_svg::Picture {
            title: format!("cascade tune {} — {} images, {} settings", a.hotkey, probes.len(), settings.len()),
            points: &points,
            front: &front,
            current: (current.ms(), current.figures().mcc),
            chosen: (outcomes[best].1.ms(), chosen_mcc),
            sweeps: &sweeps,
            notes,
        });
        std::fs::write(svg, pic).map_err(|e| anyhow::anyhow!("{}: {e}", svg.display()))?;
        println!("frontier and threshold sweep: {}", svg.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn add(a: &mut Confusion, b: &Confusion) {
    a.tp += b.tp;
    a.fp += b.fp;
    a.tn += b.tn;
    a.fn_ += b.fn_;
}

/// Runs the cut routers on one image in one request context: stage i's evidence is the
/// reason of the router cut after it; its cost is the model time it added.
fn probe(
    models: &Arc<cascade_engines::Models>,
    hk: &cascade_host::policy::Hotkey,
    cut: &[Arc<Bound>],
    ex: &Example,
    style: Option<&Style>,
) -> anyhow::Result<Probe> {
    let (img, _) = load_example(ex, style)?;
    let img = Arc::new(img);
    let mut evidence = Vec::with_capacity(cut.len());
    let mut cost_ms = Vec::with_capacity(cut.len());
    for r in cut {
        let ctx = RequestCtx::new(models.clone(), &hk.name, Instant::now() + hk.budget);
        let d = r.decide_blocking(&ctx, hk.stable.roles.clone(), img.clone(), hk.budget);
        evidence.push(match d {
            Ok(Ok(d)) => evidence_of(&d.reason),
            _ => None,
        });
        // the stage cache answers what earlier cuts computed: only this stage's calls cost
        let t = ctx.model_time();
        cost_ms.push(t.as_secs_f64() * 1e3);
    }
    Ok(Probe { label: ex.label, group: ex.source.clone(), evidence, cost_ms })
}

/// Runs the chosen setting through the hotkey's own router and fuser components on every image
/// and counts the answers equal (to the reason's three decimals) to the simulation's.
#[allow(clippy::too_many_arguments)]
fn check_chosen(
    rt: &Arc<Runtime>,
    models: &Arc<cascade_engines::Models>,
    hk: &cascade_host::policy::Hotkey,
    params: &Value,
    chosen: &Setting,
    fuser_params: &Value,
    examples: &[Example],
    style: Option<&Style>,
    probes: &[Probe],
    sim: Sim,
) -> anyhow::Result<(usize, usize)> {
    let p = with_exits(params, chosen);
    let router =
        Bound::new(rt.clone(), hk.stable.router.plugin.clone(), &hk.name, p.to_string(), hk.stable.router.limits)
            .map_err(|e| anyhow::anyhow!("the chosen router settings: {e}"))?;
    let fuser = match &hk.stable.roles.fuser {
        Some(f) => {
            let fp = with_weights(fuser_params, chosen);
            Some(Arc::new(
                Bound::new(rt.clone(), f.plugin.clone(), &hk.name, fp.to_string(), f.limits)
                    .map_err(|e| anyhow::anyhow!("the chosen fuser settings: {e}"))?,
            ))
        }
        None => None,
    };
    let roles = Arc::new(cascade_host::runtime::RoleSet { text_scorer: hk.stable.roles.text_scorer.clone(), fuser });
    let (mut agree, mut n) = (0, 0);
    let mut progress = Progress::new("tune: check", probes.len());
    let mut it = probes.iter();
    for ex in examples {
        let Ok((img, _)) = load_example(ex, style) else { continue };
        let Some(pr) = it.next() else { break };
        progress.tick();
        let ctx = RequestCtx::new(models.clone(), &hk.name, Instant::now() + hk.budget);
        let real = match router.decide_blocking(&ctx, roles.clone(), Arc::new(img), hk.budget) {
            Ok(Ok(d)) => Some(d.prediction),
            _ => None,
        };
        let simulated = tune_space::decide(&pr.evidence, chosen, sim.has_fuser).map(|(p, _)| p);
        n += 1;
        if match (real, simulated) {
            // the router reports evidence to three decimals
            (Some(a), Some(b)) => (a - b).abs() < 2e-3,
            (None, None) => true,
            _ => false,
        } {
            agree += 1;
        }
    }
    Ok((agree, n))
}

/// Indices of the settings no other beats on both cost and the objective, cheapest first.
fn pareto(outcomes: &[(usize, Outcome)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..outcomes.len()).collect();
    idx.sort_by(|&a, &b| {
        outcomes[a]
            .1
            .ms()
            .total_cmp(&outcomes[b].1.ms())
            .then(outcomes[b].1.figures().mcc.total_cmp(&outcomes[a].1.figures().mcc))
    });
    let mut best = f64::NEG_INFINITY;
    idx.into_iter()
        .filter(|&j| {
            let m = outcomes[j].1.figures().mcc;
            (m > best).then(|| best = m).is_some()
        })
        .collect()
}

/// MCC against each threshold of the first stage that has them, the rest as chosen.
fn sweeps(probes: &[&Probe], chosen: &Setting, names: &[String], sim: Sim) -> Vec<super::tune_svg::Sweep> {
    let Some(i) = chosen.exits.iter().position(|(l, h)| l.is_some() || h.is_some()) else { return Vec::new() };
    let grid: Vec<f32> = (1..20).map(|k| k as f32 * 0.05).collect();
    let mut out = Vec::new();
    for high in [false, true] {
        let points = grid
            .iter()
            .filter_map(|&v| {
                let s = with_threshold(chosen, i, high, v)?;
                Some((v as f64, simulate(probes, &s, sim).figures().mcc))
            })
            .collect();
        let at = if high { chosen.exits[i].1 } else { chosen.exits[i].0 };
        out.push(super::tune_svg::Sweep {
            name: format!("{}.{}", names[i], if high { "exit_high" } else { "exit_low" }),
            points,
            chosen_at: at.map(f64::from),
        });
    }
    out
}

/// The setting with one threshold moved (`None` when it would cross the other).
fn with_threshold(s: &Setting, stage: usize, high: bool, v: f32) -> Option<Setting> {
    let mut s = s.clone();
    if high {
        s.exits[stage].1 = Some(v);
    } else {
        s.exits[stage].0 = Some(v);
    }
    let (lo, hi) = s.exits[stage];
    (!lo.zip(hi).is_some_and(|(l, h)| l >= h)).then_some(s)
}

/// Why the sweep's best point is not the chosen setting, when the sweep shows a better MCC.
#[allow(clippy::too_many_arguments)]
fn sweep_notes(
    sweeps: &[super::tune_svg::Sweep],
    chosen_mcc: f64,
    space: &Space,
    names: &[String],
    objective: &str,
    max_ms: Option<f64>,
    probes: &[&Probe],
    chosen: &Setting,
    sim: Sim,
) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(stage) = chosen.exits.iter().position(|(l, h)| l.is_some() || h.is_some()) else { return notes };
    for (w, high) in sweeps.iter().zip([false, true]) {
        let Some(&(v, m)) = w.points.iter().max_by(|a, b| a.1.total_cmp(&b.1)) else { continue };
        if m <= chosen_mcc + 1e-9 {
            continue;
        }
        let why = if objective != "mcc" {
            format!("the objective is {objective}, not MCC")
        } else if let Some(o) = with_threshold(chosen, stage, high, v as f32)
            .map(|s| simulate(probes, &s, sim))
            .filter(|o| max_ms.is_some_and(|cap| o.ms() > cap))
        {
            format!("it costs {:.2} ms/request, above --max-ms", o.ms())
        } else {
            let values: Vec<String> = space
                .exits
                .iter()
                .filter(|(i, h, _)| *i == stage && *h == high)
                .flat_map(|(_, _, vs)| vs.iter().map(|v| v.map_or("none".into(), |v| format!("{v:.2}"))))
                .collect();
            format!(
                "{v:.2} is not among the tune space's values for {}.{} ({}); add it to a --space file to try it",
                names[stage],
                if high { "exit_high" } else { "exit_low" },
                if values.is_empty() { "the space does not vary it".to_string() } else { values.join(", ") }
            )
        };
        notes.push(format!(
            "the sweep of {} reaches MCC {m:.3} at {v:.2}, above the chosen setting's {chosen_mcc:.3} in-sample; not chosen because {why}",
            w.name
        ));
    }
    notes
}

fn describe(s: &Setting, names: &[String]) -> String {
    let mut parts: Vec<String> = s
        .exits
        .iter()
        .zip(names)
        .filter(|((l, h), _)| l.is_some() || h.is_some())
        .map(|((l, h), n)| {
            format!(
                "{n} {}–{}",
                l.map_or("-".into(), |v| format!("{v:.2}")),
                h.map_or("-".into(), |v| format!("{v:.2}"))
            )
        })
        .collect();
    if !s.weights.is_empty() {
        let w: Vec<String> = s.weights.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("weights {}", w.join(" ")));
    }
    parts.join("; ")
}

/// The router's parameters with the setting's exit thresholds (to four decimals).
pub(crate) fn with_exits(params: &Value, s: &Setting) -> Value {
    let mut p = params.clone();
    if let Some(stages) = p["stages"].as_array_mut() {
        for (st, (lo, hi)) in stages.iter_mut().zip(&s.exits) {
            let Some(o) = st.as_object_mut() else { continue };
            for (k, v) in [("exit_low", lo), ("exit_high", hi)] {
                match v {
                    Some(v) => o.insert(k.into(), json!((*v as f64 * 1e4).round() / 1e4)),
                    None => o.remove(k),
                };
            }
        }
    }
    p
}

/// The fuser's parameters with the setting's weights and boosts.
pub(crate) fn with_weights(params: &Value, s: &Setting) -> Value {
    let mut p = params.clone();
    p["weights"] = json!(s.weights);
    p["boost"] = json!(s.boost);
    p
}

#[cfg(test)]
mod tests {
    #[test]
    fn evidence_is_read_from_the_reason() {
        let e =
            super::evidence_of("final at z: fused 0.500 from roadwork=0.930, roadwork:zoom=0.100 [ocr skipped: x=y]")
                .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e["roadwork:zoom"], 0.1);
        assert!(super::evidence_of("exit-high at c: fused 1.000").is_none());
    }
}

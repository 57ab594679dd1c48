//! `cascade replay`: a candidate policy (any hotkey file with its components) over logged
//! requests, answering each primitive call from the log's results and running the models only
//! for calls the log does not hold (on the logged image, when it was kept). Reports what would
//! change against what was answered and, with labels, accuracy, MCC and the reward for both.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::logcmd::{self, FilterArgs};
use super::manifest;
use super::Progress;
use cascade_common::scores::Confusion;
use cascade_host::load::{self, Sources};
use cascade_host::predlog::format::{unhex16, Record};
use cascade_host::runtime::cache::Preset;
use cascade_host::runtime::request::RequestCtx;
use cascade_host::runtime::Runtime;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The candidate hotkey in --policies.
    #[arg(long)]
    pub hotkey: String,
    /// The log folder and which of its records to replay.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// A labelled manifest (`path,label`; an exported hard-case set once labelled).
    // images are matched to records by content
    #[arg(long)]
    pub labels: Option<std::path::PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The log's results for one record, by content key, primitive, model and arguments.
fn preset(r: &Record, pixels: bool) -> Preset {
    let mut p = Preset { pixels, ..Preset::default() };
    for l in &r.results {
        let (Some(key), Some(out)) = (unhex16(&l.image), l.output.output()) else { continue };
        let primitive: &'static str = match l.primitive.as_str() {
            "classify" => "classify",
            "detect" => "detect",
            "read-text" => "read-text",
            "embed" => "embed",
            "ask" => "ask",
            _ => continue,
        };
        p.results.insert((key, primitive, l.model.clone(), l.args.clone()), out);
    }
    p
}

/// Labels by the sha-256 of each manifest image's bytes; rows that cannot be read are reported.
fn labels_by_content(file: &std::path::Path) -> anyhow::Result<HashMap<String, bool>> {
    let loaded = manifest::load_reporting(file)?;
    for p in &loaded.problems {
        eprintln!("{p}");
    }
    let mut out = HashMap::new();
    for ex in loaded.examples {
        match std::fs::read(&ex.path) {
            Ok(b) => {
                out.insert(cascade_host::files::sha256_hex(&b), ex.label);
            }
            Err(e) => eprintln!("{}: {}: {e} (left out)", ex.row, ex.path.display()),
        }
    }
    Ok(out)
}

pub fn replay(rt: &Arc<Runtime>, src: &Sources, a: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let (state, hk) = load::load_for(rt, src, &a.hotkey)?;
    let hk = &*hk;
    let (log, filter) = (&a.filter.log, a.filter.filter()?);
    let records: Vec<Record> = logcmd::load(log)?.into_iter().filter(|r| filter.keeps(r)).collect();
    if records.is_empty() {
        anyhow::bail!("{}: no record matches the filter", log.display());
    }
    let labels = a.labels.as_deref().map(labels_by_content).transpose()?;
    let (mut agree, mut up, mut down, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let (mut hits, mut misses, mut unanswerable) = (0u64, 0u64, 0u64);
    let mut delta = 0f64;
    let mut stages: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let (mut model_ms, mut logged_ms) = (0f64, 0f64);
    let (mut was, mut now) = (Confusion::default(), Confusion::default());
    let mut progress = Progress::new("replay", records.len());
    for r in &records {
        progress.tick();
        let image = r.image_file.as_ref().and_then(|f| std::fs::read(log.join(f)).ok());
        let pixels = match image.as_deref().map(|b| cascade_common::image::decode_image(b, &Default::default())) {
            Some(Ok(img)) => Some(img),
            _ => None,
        };
        let preset = Arc::new(preset(r, pixels.is_some()));
        // without the image, a grey one of its size: crops and tiles fall where they fell
        let img = pixels
            .unwrap_or_else(|| image::RgbImage::from_pixel(r.width.max(1), r.height.max(1), image::Rgb([128; 3])));
        let mut ctx = RequestCtx::new(state.models.clone(), &a.hotkey, Instant::now() + hk.budget);
        if let Some(k) = unhex16(&r.key) {
            ctx = ctx.with_origin(k);
        }
        let ctx = ctx.with_preset(preset.clone());
        // a file with a [candidate] (as `tune` writes) is replayed as its candidate
        let ans = hk.answer_in(&ctx, Arc::new(img), true);
        hits += preset.hits.load(Ordering::Relaxed);
        let m = preset.misses.load(Ordering::Relaxed);
        if preset.pixels {
            misses += m;
        } else {
            unanswerable += m;
        }
        model_ms += ctx.model_time().as_secs_f64() * 1e3;
        logged_ms += r.model_ms;
        stages.entry(r.stage.clone()).or_default().0 += 1;
        stages.entry(ans.stage.clone()).or_default().1 += 1;
        let (Some(old), true) = (r.prediction, ans.prediction.is_finite()) else {
            failed += 1;
            continue;
        };
        delta += (ans.prediction - old).abs() as f64;
        match ((old > 0.5), (ans.prediction > 0.5)) {
            (a, b) if a == b => agree += 1,
            (false, true) => up += 1,
            _ => down += 1,
        }
        if let Some(label) = labels.as_ref().and_then(|l| l.get(&r.image)) {
            was.add(old, *label);
            now.add(ans.prediction, *label);
        }
    }
    let n = records.len() as u64;
    let answered = n - failed;
    let report = json!({
        "hotkey": a.hotkey,
        "records": n,
        "answered": answered,
        "failed": failed,
        "agreement": agree as f64 / answered.max(1) as f64,
        "flips": {"to_roadwork": up, "to_none": down},
        "mean_abs_change": delta / answered.max(1) as f64,
        "calls": {"from_log": hits, "rerun": misses, "unanswerable": unanswerable},
        "model_ms_per_request": {"logged": logged_ms / n as f64, "rerun_now": model_ms / n as f64},
        "stages": stages.iter().map(|(s, (o, c))| (s.clone(), json!({"logged": o, "candidate": c}))).collect::<serde_json::Map<_, _>>(),
        "labelled": labels.as_ref().map(|_| json!({"logged": was.figures(), "candidate": now.figures()})),
    });
    if a.json {
        println!("{report}");
        return Ok(ExitCode::SUCCESS);
    }
    let arm = if hk.candidate.is_some() { "its candidate arm" } else { "its stable arm" };
    println!(
        "replayed {n} logged request(s) through {} ({arm}; {} answered, {failed} without an answer)",
        a.hotkey, answered
    );
    println!(
        "agreement with what was answered: {:.1}%  flips: {up} to roadwork, {down} to none  mean |change| {:.3}",
        100.0 * agree as f64 / answered.max(1) as f64,
        delta / answered.max(1) as f64
    );
    println!("primitive calls: {hits} from the log, {misses} re-run on the kept image, {unanswerable} unanswerable (no image kept)");
    println!("model time per request: logged {:.1} ms, re-run now {:.1} ms", logged_ms / n as f64, model_ms / n as f64);
    for (s, (o, c)) in &stages {
        println!("  stage {s:<18} logged {o:>5}  candidate {c:>5}");
    }
    if labels.is_some() {
        let (w, c) = (was.figures(), now.figures());
        println!("labelled: {} of {n}", w.n);
        println!("  {:<10} accuracy {:.3}  MCC {:.3}  reward {:.3}", "logged", w.accuracy, w.mcc, w.reward);
        println!("  {:<10} accuracy {:.3}  MCC {:.3}  reward {:.3}", "candidate", c.accuracy, c.mcc, c.reward);
    }
    Ok(ExitCode::SUCCESS)
}

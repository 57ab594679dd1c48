//! `cascade log`: list and filter what hotkeys answered (the prediction log), and export hard
//! cases — the uncertain band, and images the two arms of a rollout disagreed on — as a
//! manifest with an empty `label` column and the images beside it, ready for labelling and
//! then for `train-head`, `eval` and `replay --labels`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::log_read;
use cascade_host::predlog::format::Record;

/// Which logged records to take.
#[derive(clap::Args, Clone)]
pub struct FilterArgs {
    /// The log folder (a hotkey's `log.dir`).
    #[arg(long)]
    pub log: PathBuf,
    /// Records of this hotkey only.
    #[arg(long = "from-hotkey")]
    pub from_hotkey: Option<String>,
    /// Unix seconds, or -30m / -24h / -7d.
    #[arg(long)]
    pub since: Option<String>,
    /// Records up to this time: unix seconds, or -30m / -24h / -7d.
    #[arg(long)]
    pub until: Option<String>,
    /// Predictions in LO-HI (e.g. 0.3-0.7); `export` defaults to 0.3-0.7.
    #[arg(long)]
    pub band: Option<String>,
    /// Records answered at this stage (the router's exit) only.
    #[arg(long)]
    pub stage: Option<String>,
    /// `stable` or `candidate`.
    #[arg(long)]
    pub arm: Option<String>,
    /// The validator's hotkey (axon requests).
    #[arg(long)]
    pub caller: Option<String>,
    /// Shadow answers too.
    #[arg(long)]
    pub shadow: bool,
}

impl FilterArgs {
    pub fn filter(&self) -> anyhow::Result<Filter> {
        let e = |s: String| anyhow::anyhow!(s);
        Ok(Filter {
            hotkey: self.from_hotkey.clone(),
            since: self.since.as_deref().map(parse_time).transpose().map_err(e)?,
            until: self.until.as_deref().map(parse_time).transpose().map_err(e)?,
            band: self.band.as_deref().map(parse_band).transpose().map_err(e)?,
            stage: self.stage.clone(),
            arm: self.arm.clone(),
            caller: self.caller.clone(),
            shadow: self.shadow,
        })
    }
}

/// Which records to take.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub hotkey: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// Predictions inside [lo, hi].
    pub band: Option<(f32, f32)>,
    pub stage: Option<String>,
    pub arm: Option<String>,
    pub caller: Option<String>,
    /// Shadow answers too (default: only what was served).
    pub shadow: bool,
}

/// `1700000000` (unix seconds) or `-24h`, `-30m`, `-7d` (before now).
pub fn parse_time(s: &str) -> Result<u64, String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if let Some(rel) = s.strip_prefix('-') {
        let (n, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: u64 = n.parse().map_err(|_| format!("time {s:?}: unix seconds or -Nm, -Nh, -Nd"))?;
        let secs = match unit {
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(format!("time {s:?}: unit m, h or d")),
        };
        return Ok(now.saturating_sub(n * secs));
    }
    s.parse().map_err(|_| format!("time {s:?}: unix seconds or -Nm, -Nh, -Nd"))
}

/// `0.3-0.7`.
pub fn parse_band(s: &str) -> Result<(f32, f32), String> {
    let (a, b) = s.split_once('-').ok_or_else(|| format!("band {s:?}: LO-HI, e.g. 0.3-0.7"))?;
    let (lo, hi): (f32, f32) =
        (a.parse().map_err(|_| format!("band {s:?}"))?, b.parse().map_err(|_| format!("band {s:?}"))?);
    if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
        return Err(format!("band {s:?}: LO ≤ HI, both in [0, 1]"));
    }
    Ok((lo, hi))
}

impl Filter {
    pub fn keeps(&self, r: &Record) -> bool {
        let secs = r.t / 1000;
        (self.shadow || !r.shadow)
            && self.hotkey.as_ref().is_none_or(|h| &r.hotkey == h)
            && self.since.is_none_or(|s| secs >= s)
            && self.until.is_none_or(|u| secs <= u)
            && self.band.is_none_or(|(lo, hi)| r.prediction.is_some_and(|p| (lo..=hi).contains(&p)))
            && self.stage.as_ref().is_none_or(|s| &r.stage == s)
            && self.arm.as_ref().is_none_or(|a| &r.arm == a)
            && self.caller.as_ref().is_none_or(|c| r.caller.as_ref() == Some(c))
    }
}

/// Reads the log, reporting skipped lines on stderr.
pub fn load(dir: &Path) -> anyhow::Result<Vec<Record>> {
    let scan = log_read::scan(dir).map_err(|e| anyhow::anyhow!(e))?;
    for p in &scan.problems {
        eprintln!("skipped: {p}");
    }
    if scan.skipped > 0 {
        eprintln!(
            "{} line(s) skipped in {} segment(s); {} record(s) read",
            scan.skipped,
            scan.segments,
            scan.records.len()
        );
    }
    Ok(scan.records)
}

pub fn list(dir: &Path, f: &Filter, json: bool) -> anyhow::Result<ExitCode> {
    let recs: Vec<Record> = load(dir)?.into_iter().filter(|r| f.keeps(r)).collect();
    let mut stages: BTreeMap<&str, u64> = BTreeMap::new();
    let out = std::io::stdout();
    let mut out = out.lock();
    for r in &recs {
        *stages.entry(r.stage.as_str()).or_default() += 1;
        if json {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        } else {
            let p = r.prediction.map_or("-".to_string(), |p| format!("{p:.3}"));
            writeln!(
                out,
                "{} {:<12} {:<9}{} {:<6} {:>6} {:<16} {:>7.1} ms  {}{}",
                r.t / 1000,
                r.hotkey,
                r.arm,
                if r.shadow { "*" } else { " " },
                r.via,
                p,
                r.stage,
                r.ms,
                r.image.chars().take(12).collect::<String>(),
                r.caller.as_ref().map(|c| format!(" from {c}")).unwrap_or_default()
            )?;
        }
    }
    if !json {
        let shares: Vec<String> = stages.iter().map(|(s, n)| format!("{s} {n}")).collect();
        writeln!(out, "{} record(s); stages: {}", recs.len(), shares.join(", "))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Exports the filtered records' images (one row per image) and, with `disagreements`, the
/// images whose served answer and shadow answer fall on different sides of 0.5.
pub fn export(dir: &Path, out: &Path, f: &Filter, disagreements: bool) -> anyhow::Result<ExitCode> {
    let all = load(dir)?;
    let mut picked: Vec<(&Record, Option<f32>)> = Vec::new();
    if disagreements {
        let mut by_id: HashMap<&str, Vec<&Record>> = HashMap::new();
        for r in &all {
            by_id.entry(r.id.as_str()).or_default().push(r);
        }
        let f = Filter { band: None, shadow: false, ..f.clone() };
        for r in all.iter().filter(|r| !r.shadow && f.keeps(r)) {
            let other = by_id.get(r.id.as_str()).and_then(|v| v.iter().find(|o| o.shadow)).and_then(|o| o.prediction);
            if let (Some(a), Some(b)) = (r.prediction, other) {
                if (a > 0.5) != (b > 0.5) {
                    picked.push((r, Some(b)));
                }
            }
        }
    } else {
        let f = Filter { band: f.band.or(Some((0.3, 0.7))), ..f.clone() };
        picked = all.iter().filter(|r| f.keeps(r)).map(|r| (r, None)).collect();
    }
    std::fs::create_dir_all(out.join("images"))?;
    let mut csv = csv::Writer::from_path(out.join("manifest.csv"))?;
    // `challenge` = 1: the images are what the validators sent; the offline tools use them as read
    csv.write_record([
        "path",
        "label",
        "prediction",
        "raw",
        "other_prediction",
        "hotkey",
        "arm",
        "stage",
        "time",
        "image",
        "challenge",
    ])?;
    let (mut rows, mut no_image) = (0usize, 0usize);
    let mut seen = std::collections::HashSet::new();
    for (r, other) in picked {
        if !seen.insert(r.image.clone()) {
            continue;
        }
        if r.image_file.is_none() {
            no_image += 1;
            continue;
        }
        // the log is untrusted input: only a regular file inside the log folder is copied
        let Some(src) = r.image_path(dir) else {
            eprintln!("record at {}: image_file {:?} leaves the log folder; skipped", r.t, r.image_file);
            no_image += 1;
            continue;
        };
        let name = src.file_name().map(|n| n.to_owned()).unwrap_or_default();
        let regular = std::fs::symlink_metadata(&src).is_ok_and(|m| m.file_type().is_file());
        if !regular || std::fs::copy(&src, out.join("images").join(&name)).is_err() {
            eprintln!("{}: missing or not a regular file (the record at {} names it)", src.display(), r.t);
            no_image += 1;
            continue;
        }
        let p = |x: Option<f32>| x.map_or(String::new(), |v| format!("{v:.4}"));
        let row = [
            format!("images/{}", name.to_string_lossy()),
            String::new(),
            p(r.prediction),
            p(r.raw),
            p(other),
            r.hotkey.clone(),
            r.arm.clone(),
            r.stage.clone(),
            (r.t / 1000).to_string(),
            r.image.clone(),
            "1".into(),
        ];
        csv.write_record(row.iter().map(|c| cell(c).into_owned()))?;
        rows += 1;
    }
    csv.flush()?;
    println!(
        "{}: {rows} image(s) to label{}",
        out.join("manifest.csv").display(),
        if no_image > 0 { format!("; {no_image} record(s) had no kept image (see log.images)") } else { String::new() }
    );
    Ok(ExitCode::SUCCESS)
}

/// A cell a spreadsheet shows as text: one that starts like a formula (`=`, `+`, `-`, `@`, a
/// tab or a carriage return) gets a leading `'` (OWASP's rule for CSV injection). Quoting of
/// commas, quotes and newlines is the `csv` writer's.
fn cell(v: &str) -> std::borrow::Cow<'_, str> {
    match v.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') if v.parse::<f64>().is_err() => format!("'{v}").into(),
        _ => v.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(image: &str, image_file: &str, stage: &str, t: u64) -> String {
        serde_json::json!({
            "v": 1, "t": t, "id": "r", "hotkey": "speed", "arm": "stable", "via": "axon", "caller": null,
            "image": image, "key": "00", "width": 224, "height": 224, "prediction": 0.5, "stage": stage,
            "source": "policy", "model_ms": 1.0, "ms": 2.0, "image_file": image_file, "results": []
        })
        .to_string()
    }

    /// The outside suite's findings on untrusted logs: a multibyte character at byte 12 of
    /// `image` panicked `list`; `image_file` escaped the folder (`/etc/passwd` became an image
    /// to label); a stage with a comma, a newline or a formula broke the manifest or reached a
    /// spreadsheet as a formula; a FIFO named like a segment hung `list`.
    #[test]
    fn a_hostile_log_is_read_without_harm() {
        let root = std::env::temp_dir().join(format!("logcmd-hostile-{}", std::process::id()));
        let (dir, out) = (root.join("log"), root.join("out"));
        std::fs::create_dir_all(dir.join("images")).unwrap();
        std::fs::write(root.join("secret.jpg"), b"outside the log").unwrap();
        std::fs::write(dir.join("images/ok.jpg"), b"kept image").unwrap();
        let lines = [
            record("abcdefghijkéé-multibyte-at-12", "images/ok.jpg", "=HYPERLINK(\"http://x\"),\nboom", 1_000),
            record("b2", "../secret.jpg", "classifier", 2_000),
            record("b3", "/etc/passwd", "classifier", 3_000),
        ];
        std::fs::write(dir.join("predictions-1000-0.jsonl"), lines.join("\n") + "\n").unwrap();
        let fifo = dir.join("predictions-2000-0.jsonl");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success(), "mkfifo");

        let all = Filter { band: Some((0.0, 1.0)), ..Filter::default() };
        list(&dir, &all, false).unwrap();
        export(&dir, &out, &all, false).unwrap();
        let manifest = std::fs::read_to_string(out.join("manifest.csv")).unwrap();
        let mut rd = csv::Reader::from_reader(manifest.as_bytes());
        let stage = rd.headers().unwrap().iter().position(|h| h == "stage").expect("a stage column");
        let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 1, "only the image inside the folder: {manifest}");
        assert_eq!(&rows[0][stage], "'=HYPERLINK(\"http://x\"),\nboom", "quoted whole, formula neutralised");
        let copied: Vec<_> = std::fs::read_dir(out.join("images")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(copied, vec![std::ffi::OsString::from("ok.jpg")]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

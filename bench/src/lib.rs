//! Shared pieces of the benchmark programs: timing summaries and table printing.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The repository root (benchmarks read `target/` and `policies/` from it).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo").to_path_buf()
}

/// Starts the real server, `target/release/cascade serve --listen 127.0.0.1:0` followed by
/// `args` (`RUST_LOG=warn`, stderr inherited): the process and its base URL, read from the
/// "listening on" line it prints once ready.
pub fn serve<I, S>(args: I) -> anyhow::Result<(Child, String)>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    // CASCADE_BIN: another build to measure (an A/B against the previous commit's binary)
    let bin = std::env::var_os("CASCADE_BIN").map_or_else(|| repo().join("target/release/cascade"), PathBuf::from);
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
    match line.trim().strip_prefix("listening on ") {
        Some(base) => Ok((child, base.to_string())),
        None => {
            let _ = child.kill();
            anyhow::bail!("the server said {line:?} instead of where it listens")
        }
    }
}

/// The challenge images: `cascade challenges` of both data sets, `n` spread over them.
pub fn challenges(work: &Path, n: usize) -> anyhow::Result<Vec<PathBuf>> {
    let root = repo();
    let data = root.parent().expect("parent").join("shared/data");
    let out = work.join("challenges");
    let ok = Command::new(root.join("target/release/cascade"))
        .args(["challenges", "--views", "1", "--levels", "0-3", "--seed", "72", "--manifest"])
        .arg(data.join("roadwork-dev/manifest.csv"))
        .arg("--manifest")
        .arg(data.join("roadwork-more/manifest.csv"))
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(ok.success(), "cascade challenges failed (are ../shared/data and target/release/cascade there?)");
    let manifest = std::fs::read_to_string(out.join("manifest.csv"))?;
    let all: Vec<PathBuf> = manifest.lines().skip(1).filter_map(|l| l.split(',').next()).map(|p| out.join(p)).collect();
    anyhow::ensure!(!all.is_empty(), "no challenges written");
    let step = (all.len() / n.max(1)).max(1);
    Ok(all.into_iter().step_by(step).take(n).collect())
}

/// Resident memory of a process, in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// p50 / p99 / mean of a set of samples, in microseconds.
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
    pub n: usize,
}

pub fn summarise(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |p: f64| us(samples[((samples.len() - 1) as f64 * p).round() as usize]);
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64;
    Summary { p50: at(0.5), p99: at(0.99), mean, n: samples.len() }
}

pub fn row(name: &str, s: &Summary) {
    println!("| {name:<44} | {:>7} | {:>9.2} | {:>9.2} | {:>9.2} |", s.n, s.p50, s.p99, s.mean);
}

pub fn header(title: &str) {
    println!("\n{title}\n");
    println!("| {:<44} | {:>7} | {:>9} | {:>9} | {:>9} |", "what", "n", "p50 µs", "p99 µs", "mean µs");
    println!("|{:-<46}|{:->9}|{:->11}|{:->11}|{:->11}|", "", "", "", "", "");
}

/// `jpeg` made distinct by a comment segment carrying `n` right after the start marker: the
/// same pixels in different bytes, so that no cache keyed by the bytes (the stage cache, the
/// shared decodes) answers it.
pub fn distinct_jpeg(jpeg: &[u8], n: u64) -> Vec<u8> {
    let note = format!("request {n}");
    let len = (note.len() + 2) as u16;
    let mut out = Vec::with_capacity(jpeg.len() + note.len() + 4);
    out.extend_from_slice(&jpeg[..2.min(jpeg.len())]);
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(note.as_bytes());
    out.extend_from_slice(jpeg.get(2..).unwrap_or_default());
    out
}

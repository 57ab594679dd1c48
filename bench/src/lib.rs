//! Shared pieces of the benchmark programs: timing summaries and table printing.

use std::path::PathBuf;
use std::time::Duration;

/// The repository root (benchmarks read `target/` and `policies/` from it).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo").to_path_buf()
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

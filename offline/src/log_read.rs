//! Reading a log folder: every segment in time order, record by record. A line that does not
//! parse (a truncated last line of a segment being written, a corrupted block) is skipped and
//! reported with its file and line; a record of another format version is skipped and
//! counted; the rest is read.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use cascade_host::predlog::format::{parse_line, Record};

#[derive(Default)]
pub struct Scan {
    pub records: Vec<Record>,
    /// `file:line: why` for the first skipped lines.
    pub problems: Vec<String>,
    /// Lines skipped in all.
    pub skipped: u64,
    pub segments: usize,
}

/// The segments of `dir`, oldest first.
pub fn segments(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("predictions-") && n.ends_with(".jsonl")
        })
        .collect();
    // names carry the opening time in ms: order by that number, not by text
    v.sort_by_key(|p| {
        let n = p.file_stem().and_then(|n| n.to_str()).unwrap_or("");
        let ms: u64 = n.trim_start_matches("predictions-").split('-').next().and_then(|x| x.parse().ok()).unwrap_or(0);
        (ms, p.clone())
    });
    Ok(v)
}

/// Reads every record of `dir`.
pub fn scan(dir: &Path) -> Result<Scan, String> {
    let mut s = Scan::default();
    let files = segments(dir)?;
    if files.is_empty() {
        return Err(format!("{}: no prediction log segments (predictions-*.jsonl)", dir.display()));
    }
    for f in files {
        s.segments += 1;
        // a FIFO or a device named like a segment would block the read or never end
        if !std::fs::symlink_metadata(&f).is_ok_and(|m| m.file_type().is_file()) {
            s.skipped += 1;
            s.problems.push(format!("{}: not a regular file, skipped", f.display()));
            continue;
        }
        let file = std::fs::File::open(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
            let Ok(line) = line else { break };
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            match parse_line(&line) {
                Ok(r) => s.records.push(r),
                Err(why) => {
                    s.skipped += 1;
                    if s.problems.len() < 20 {
                        s.problems.push(format!("{}:{}: {why}", f.display(), i + 1));
                    }
                }
            }
        }
    }
    Ok(s)
}

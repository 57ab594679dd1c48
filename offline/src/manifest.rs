//! Labelled manifests: CSV with `path` and `label` columns (paths relative to the manifest,
//! label 1 = roadwork); an optional `source` column, and the folder a path starts with, tell
//! where an image comes from (see [`Example::source`]); an optional `challenge` column (1) marks
//! images that already are what a validator sends (see [`Example::challenge`]), with their
//! augmentation `level` when known; an `original` column groups rows drawn from one image
//! ([`Example::group`]). Other columns are ignored. Quoted fields are understood. A bad row (a label outside {0, 1}, a `challenge` value
//! outside {0, 1}, too few columns) is reported with its file and line and left out; the rest
//! is used.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Example {
    pub path: PathBuf,
    pub label: bool,
    /// The group an image belongs to for source balancing and grouped folds: the first folder
    /// of its `path` (the data sets keep one source per folder), else the first word of its
    /// `source` column, else `"-"`.
    pub source: String,
    /// The image is a challenge as a validator sent it (a logged request from `cascade log
    /// export`, or `cascade challenges` output): the offline tools use it as read, one view,
    /// instead of drawing the validator's augmentation over it a second time.
    pub challenge: bool,
    /// The augmentation level a challenge was drawn at, when the manifest says (`level`).
    pub level: Option<u8>,
    /// Rows that are views of one image (`cascade challenges` output names it in `original`):
    /// cross-validation keeps them on one side of every fold.
    pub group: Option<String>,
    /// `file:line`, for reports.
    pub row: String,
}

/// Rows of one or several manifests, and what was wrong with the rows left out.
#[derive(Debug, Default)]
pub struct Loaded {
    pub examples: Vec<Example>,
    pub problems: Vec<String>,
}

/// Splits one CSV line, honouring double quotes.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// A field as CSV writes it: quoted when it holds a comma, a quote or a line break.
pub fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Logical CSV records: a quoted field may span lines.
fn records(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    let mut quotes = 0usize;
    for (n, line) in text.lines().enumerate() {
        if cur.is_empty() {
            start = n + 1;
        } else {
            cur.push('\n');
        }
        cur.push_str(line);
        quotes += line.matches('"').count();
        if quotes.is_multiple_of(2) {
            if !cur.trim().is_empty() {
                out.push((start, std::mem::take(&mut cur)));
            }
            cur.clear();
            quotes = 0;
        }
    }
    if !cur.trim().is_empty() {
        out.push((start, cur));
    }
    out
}

fn source_of(path: &str, source_col: Option<&str>) -> String {
    let p = path.trim().trim_start_matches("./");
    if let Some((first, _)) = p.split_once('/') {
        if !first.is_empty() && first != ".." && !p.starts_with('/') {
            return first.to_string();
        }
    }
    source_col.and_then(|s| s.split_whitespace().next()).map_or_else(|| "-".to_string(), str::to_string)
}

/// One manifest: its usable rows and a line per bad row. Fails only when the file cannot be
/// read or has no `path`/`label` header.
pub fn load_reporting(file: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let recs = records(&text);
    let mut it = recs.into_iter();
    let (_, head) = it.next().ok_or_else(|| anyhow::anyhow!("{}: empty manifest", file.display()))?;
    let header = fields(&head);
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let (Some(pi), Some(li)) = (col("path"), col("label")) else {
        anyhow::bail!("{}: needs `path` and `label` columns, has {header:?}", file.display());
    };
    let si = col("source");
    let ci = col("challenge");
    let (lvi, oi) = (col("level"), col("original"));
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = Loaded::default();
    for (line, rec) in it {
        let row = format!("{}:{line}", file.display());
        let f = fields(&rec);
        let (Some(p), Some(l)) = (f.get(pi), f.get(li)) else {
            out.problems.push(format!("{row}: too few columns (left out)"));
            continue;
        };
        let label = match l.trim() {
            "1" | "true" => true,
            "0" | "false" => false,
            other => {
                out.problems.push(format!("{row}: label {other:?} is not 0 or 1 (left out)"));
                continue;
            }
        };
        if p.trim().is_empty() {
            out.problems.push(format!("{row}: empty path (left out)"));
            continue;
        }
        let challenge = match ci.and_then(|i| f.get(i)).map(|c| c.trim()) {
            None | Some("" | "0" | "false") => false,
            Some("1" | "true") => true,
            Some(other) => {
                out.problems.push(format!("{row}: challenge {other:?} is not 0 or 1 (left out)"));
                continue;
            }
        };
        let level = match lvi.and_then(|i| f.get(i)).map(|c| c.trim()) {
            None | Some("") => None,
            Some(l) => match l.parse::<u8>() {
                Ok(l) if l <= 3 => Some(l),
                _ => {
                    out.problems.push(format!("{row}: level {l:?} is not 0, 1, 2 or 3 (left out)"));
                    continue;
                }
            },
        };
        let group = oi.and_then(|i| f.get(i)).map(|g| g.trim().to_string()).filter(|g| !g.is_empty());
        let source = source_of(p, si.and_then(|i| f.get(i)).map(String::as_str));
        out.examples.push(Example { path: base.join(p.trim()), label, source, challenge, level, group, row });
    }
    Ok(out)
}

/// Several manifests in order; bad rows are reported on stderr and left out.
pub fn load_all(files: &[PathBuf]) -> anyhow::Result<Loaded> {
    let mut all = Loaded::default();
    for f in files {
        let l = load_reporting(f)?;
        all.examples.extend(l.examples);
        all.problems.extend(l.problems);
    }
    for p in &all.problems {
        eprintln!("{p}");
    }
    anyhow::ensure!(!all.examples.is_empty(), "no usable rows in {files:?}");
    Ok(all)
}

/// One manifest; bad rows are reported on stderr and left out.
pub fn load(file: &Path) -> anyhow::Result<Vec<Example>> {
    Ok(load_all(&[file.to_path_buf()])?.examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields() {
        assert_eq!(fields(r#"a,"b, c",1"#), vec!["a", "b, c", "1"]);
        assert_eq!(fields(r#""say ""hi""",2"#), vec![r#"say "hi""#, "2"]);
    }

    /// `text` written as `m.csv` in a folder of its own, loaded as a manifest.
    fn load_text(tag: &str, text: &str) -> Loaded {
        let dir = std::env::temp_dir().join(format!("cascade-manifest-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = dir.join("m.csv");
        std::fs::write(&m, text).unwrap();
        let l = load_reporting(&m).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        l
    }

    #[test]
    fn bad_rows_are_reported_and_the_rest_used() {
        let l = load_text(
            "bad",
            "path,label,source,note\ntracon/a.jpg,1,\"github:x/y@1 TraCon\",\"two\nlines\"\nb.jpg,2,s,n\nc.jpg,0,\"web:z extra\",n\n,1,s,n\nd.jpg\n",
        );
        assert_eq!(l.examples.len(), 2, "{l:?}");
        assert_eq!(l.examples[0].source, "tracon");
        assert!(l.examples[0].label);
        assert_eq!(l.examples[1].source, "web:z");
        assert!(!l.examples[1].label);
        assert_eq!(l.problems.len(), 3, "{:?}", l.problems);
        assert!(l.problems[0].contains("m.csv:4") && l.problems[0].contains("\"2\""), "{:?}", l.problems);
        assert!(l.problems[2].contains("too few columns"), "{:?}", l.problems);
        assert!(l.examples.iter().all(|e| !e.challenge), "no `challenge` column: none is");
    }

    #[test]
    fn challenge_column_marks_images_used_as_read() {
        let l = load_text(
            "challenge",
            "path,label,challenge,level,original\na.jpg,1,1,2,x.png\nb.jpg,0,,,\nc.jpg,0,0,,\nd.jpg,1,yes,,\ne.jpg,1,true,,x.png\nf.jpg,1,1,7,\n",
        );
        let marked: Vec<bool> = l.examples.iter().map(|e| e.challenge).collect();
        assert_eq!(marked, [true, false, false, true], "{l:?}");
        assert_eq!(l.problems.len(), 2, "{:?}", l.problems);
        assert!(l.problems[0].contains("m.csv:5") && l.problems[0].contains("\"yes\""), "{:?}", l.problems);
        assert!(l.problems[1].contains("m.csv:7") && l.problems[1].contains("level \"7\""), "{:?}", l.problems);
        let levels: Vec<Option<u8>> = l.examples.iter().map(|e| e.level).collect();
        assert_eq!(levels, [Some(2), None, None, None]);
        let groups: Vec<Option<&str>> = l.examples.iter().map(|e| e.group.as_deref()).collect();
        assert_eq!(groups, [Some("x.png"), None, None, Some("x.png")]);
    }
}

//! Labelled manifests: CSV with `path` and `label` columns (paths relative to the manifest,
//! label 1 = roadwork); other columns are ignored. Quoted fields are understood.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Example {
    pub path: PathBuf,
    pub label: bool,
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

pub fn load(file: &Path) -> anyhow::Result<Vec<Example>> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = fields(lines.next().ok_or_else(|| anyhow::anyhow!("{}: empty manifest", file.display()))?);
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let (Some(pi), Some(li)) = (col("path"), col("label")) else {
        anyhow::bail!("{}: needs `path` and `label` columns, has {header:?}", file.display());
    };
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        let f = fields(line);
        let (Some(p), Some(l)) = (f.get(pi), f.get(li)) else {
            anyhow::bail!("{} line {}: too few columns", file.display(), n + 2);
        };
        let label = match l.trim() {
            "1" | "true" => true,
            "0" | "false" => false,
            other => anyhow::bail!("{} line {}: label {other:?} is not 0 or 1", file.display(), n + 2),
        };
        out.push(Example { path: base.join(p.trim()), label });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields() {
        assert_eq!(fields(r#"a,"b, c",1"#), vec!["a", "b, c", "1"]);
        assert_eq!(fields(r#""say ""hi""",2"#), vec![r#"say "hi""#, "2"]);
    }
}

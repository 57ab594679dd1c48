//! `cascade challenges`: the JPEGs a validator would send of labelled images, written out.
//!
//! Each image of the manifests gives `views` challenges, drawn exactly as `train-head` and
//! `eval` draw them (same seed, same per-file keys, same port of the validator's augmentation
//! and JPEG), so a tool outside this binary (an experiment in Python, another miner, a human
//! looking at what the validator's levels do) sees the very bytes the offline loop scores.
//! Writes `OUT/<source>/<n>.jpg` (one folder per source, so that the written manifest keeps the
//! grouping `--cv source` and the grouped evaluation rely on) and `OUT/manifest.csv`
//! (`path,label,source,level,view,original,challenge`, readable by every command that takes a
//! manifest; `challenge` = 1 tells them the images are challenges already, not to augment again).
//! Unreadable images are reported per row and left out.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::augment::{self, Style};
use super::manifest;
use super::train::{read_source, view_key};

pub struct ChallengeArgs {
    pub manifests: Vec<PathBuf>,
    pub out: PathBuf,
    pub style: Style,
    pub views: usize,
}

/// Writes the challenges; returns how many were written.
pub fn write(a: &ChallengeArgs) -> anyhow::Result<usize> {
    anyhow::ensure!(a.views >= 1, "--views must be at least 1");
    let loaded = manifest::load_all(&a.manifests)?;
    for p in &loaded.problems {
        eprintln!("{p} (left out)");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let csv_path = a.out.join("manifest.csv");
    let mut csv = std::io::BufWriter::new(
        std::fs::File::create(&csv_path).with_context(|| format!("creating {}", csv_path.display()))?,
    );
    writeln!(csv, "path,label,source,level,view,original,challenge")?;
    let mut written = 0usize;
    for ex in &loaded.examples {
        let src = match read_source(&ex.path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e:#} (left out)", ex.row);
                continue;
            }
        };
        let folder = folder_name(&ex.source);
        let dir = a.out.join(&folder);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for view in 0..a.views {
            let p = a.style.params(&view_key(&src.sha, view), src.img.width(), src.img.height());
            let name = format!("{written:06}.jpg");
            std::fs::write(dir.join(&name), augment::challenge_jpeg(&src.img, &p))
                .with_context(|| format!("writing {folder}/{name}"))?;
            writeln!(
                csv,
                "{folder}/{name},{},{},{},{view},{},1",
                u8::from(ex.label),
                quote(&ex.source),
                p.level,
                quote(&ex.path.display().to_string())
            )?;
            written += 1;
        }
    }
    csv.flush()?;
    Ok(written)
}

/// A source as a folder name: letters, digits, `-` and `_` kept, anything else `_`.
fn folder_name(source: &str) -> String {
    let s: String =
        source.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if s.is_empty() {
        "_".to_string()
    } else {
        s
    }
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::augment::Levels;
    use super::super::train::challenge_view;
    use super::*;

    #[test]
    fn writes_the_draws_train_head_makes_grouped_by_source() {
        let dir = std::env::temp_dir().join(format!("cascade-challenges-{}", std::process::id()));
        let data = dir.join("data");
        std::fs::create_dir_all(data.join("street")).unwrap();
        let img = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        img.save(data.join("street/a.png")).unwrap();
        let m = data.join("manifest.csv");
        std::fs::write(&m, "path,label,source\nstreet/a.png,1,x\nstreet/missing.png,0,x\n").unwrap();
        let out = dir.join("out");
        let style = Style { levels: Levels::parse("0-3").unwrap(), seed: 7 };
        let args = ChallengeArgs { manifests: vec![m], out: out.clone(), style: style.clone(), views: 3 };
        assert_eq!(write(&args).unwrap(), 3, "the unreadable row is left out, the other gives 3 views");

        let back = manifest::load(&out.join("manifest.csv")).unwrap();
        assert_eq!(back.len(), 3);
        let src = read_source(&data.join("street/a.png")).unwrap();
        for (view, ex) in back.iter().enumerate() {
            assert_eq!(ex.source, "street", "the written manifest keeps the source grouping");
            assert!(ex.challenge, "marked as challenges: the offline tools will not augment them again");
            assert!(ex.label);
            let written = image::open(&ex.path).unwrap().to_rgb8();
            assert_eq!(written.dimensions(), (224, 224));
            // the same draw and bytes the offline loop embeds for this view
            let (expected, _) = challenge_view(&src, &style, view).unwrap();
            let bytes = std::fs::read(&ex.path).unwrap();
            let decoded = crate::server::ingress::decode_image(&bytes, &Default::default()).unwrap();
            assert_eq!(decoded.as_raw(), expected.as_raw(), "view {view}");
        }
        let csv = std::fs::read_to_string(out.join("manifest.csv")).unwrap();
        assert!(csv.starts_with("path,label,source,level,view,original,challenge\n"), "{csv}");
        assert!(csv.lines().nth(1).unwrap().ends_with("street/a.png,1"), "{csv}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

//! `cascade challenges`: the JPEGs a validator would send of labelled images, written out.
//!
//! Each image of the manifests gives `views` challenges, drawn exactly as `train-head` and
//! `eval` draw them (same seed, same per-file keys, same port of the validator's augmentation
//! and JPEG), so a tool outside this binary (an experiment in Python, another miner, a human
//! looking at what the validator's levels do) sees the very bytes the offline loop scores.
//! Writes `OUT/<source>/<n>.jpg` (one folder per source, so that the written manifest keeps the
//! grouping `--cv source` and the grouped evaluation rely on) and `OUT/manifest.csv`
//! (`path,label,source,level,view,original,challenge`, readable by every command that takes a
//! manifest; `challenge` = 1 tells them the images are challenges already, not to augment again;
//! `original` is the absolute path of the image drawn from). A row that already is a challenge
//! is copied as it is, once. `level` is read back (eval reports these images per level) and
//! `original` groups the views of one image, which cross-validation keeps in one fold.
//! Unreadable images are reported per row and left out.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::augment::{self, Style};
use super::manifest;
use super::train::{read_source, view_key};
use cascade_host::files::sha256_hex;

#[derive(clap::Args)]
pub struct ChallengeArgs {
    /// Labelled CSV (`path,label[,source]`); repeat for several.
    #[arg(long = "manifest", required = true)]
    pub manifests: Vec<PathBuf>,
    /// Output folder (`manifest.csv` and a folder of JPEGs per source).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub style: Style,
    /// Challenges per image; view 0 is the draw `eval` makes, all are those `train-head --views` makes.
    #[arg(long, default_value_t = 1)]
    pub views: usize,
}

/// Writes the challenges; returns how many were written.
pub fn write(a: &ChallengeArgs) -> anyhow::Result<usize> {
    anyhow::ensure!(a.views >= 1, "--views must be at least 1");
    // level 0 draws nothing at random: more views would be copies of one JPEG
    let views = if a.style.levels.as_slice() == [0] { 1 } else { a.views };
    if views < a.views {
        eprintln!("--views {}: level 0 has nothing random; one view per image", a.views);
    }
    // bad rows were reported by the loader
    let loaded = manifest::load_all(&a.manifests)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let csv_path = a.out.join("manifest.csv");
    let mut csv = std::io::BufWriter::new(
        std::fs::File::create(&csv_path).with_context(|| format!("creating {}", csv_path.display()))?,
    );
    writeln!(csv, "path,label,source,level,view,original,challenge")?;
    let mut folders = Folders::default();
    let mut written = 0usize;
    for ex in &loaded.examples {
        let src = match read_source(&ex.path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e:#} (left out)", ex.row);
                continue;
            }
        };
        let folder = folders.of(&ex.source);
        let dir = a.out.join(folder);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let original = std::fs::canonicalize(&ex.path).unwrap_or_else(|_| ex.path.clone());
        let original = manifest::quote(&original.display().to_string());
        let source = manifest::quote(&ex.source);
        let label = u8::from(ex.label);
        if ex.challenge {
            // already what a validator sent: kept byte for byte, never augmented again
            let ext = ex.path.extension().and_then(|e| e.to_str()).unwrap_or("jpg").to_ascii_lowercase();
            let name = format!("{written:06}.{ext}");
            std::fs::copy(&ex.path, dir.join(&name)).with_context(|| format!("copying {}", ex.path.display()))?;
            writeln!(csv, "{folder}/{name},{label},{source},,0,{original},1")?;
            written += 1;
            continue;
        }
        for view in 0..views {
            let p = a.style.params(&view_key(&src.sha, view), src.img.width(), src.img.height());
            let name = format!("{written:06}.jpg");
            std::fs::write(dir.join(&name), augment::challenge_jpeg(&src.img, &p))
                .with_context(|| format!("writing {folder}/{name}"))?;
            writeln!(csv, "{folder}/{name},{label},{source},{},{view},{original},1", p.level)?;
            written += 1;
        }
    }
    csv.flush()?;
    Ok(written)
}

/// One output folder per source: the source's name with anything but letters, digits, `-` and
/// `_` replaced by `_`, and a short hash of the source added when two sources would share one.
#[derive(Default)]
struct Folders {
    of_source: std::collections::HashMap<String, String>,
    taken: std::collections::HashSet<String>,
}

impl Folders {
    fn of(&mut self, source: &str) -> &str {
        if !self.of_source.contains_key(source) {
            let clean: String = source
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .collect();
            let mut folder = if clean.is_empty() { "_".to_string() } else { clean };
            if self.taken.contains(&folder) {
                // 8 hex digits of the source's sha-256: stable across runs
                folder = format!("{folder}-{}", &sha256_hex(source.as_bytes())[..8]);
            }
            self.taken.insert(folder.clone());
            self.of_source.insert(source.to_string(), folder);
        }
        &self.of_source[source]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::Levels;
    use crate::train::challenge_view;

    #[test]
    fn writes_the_draws_train_head_makes_grouped_by_source() {
        let dir = std::env::temp_dir().join(format!("cascade-challenges-{}", std::process::id()));
        let data = dir.join("data");
        std::fs::create_dir_all(data.join("street")).unwrap();
        let img = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        img.save(data.join("street/a.png")).unwrap();
        // a logged challenge (already what a validator sent) beside the data set
        std::fs::create_dir_all(data.join("logged")).unwrap();
        let sent =
            crate::jpeg::encode_rgb(&image::RgbImage::from_pixel(224, 224, image::Rgb([9, 99, 199])), 75).unwrap();
        std::fs::write(data.join("logged/b.jpg"), &sent).unwrap();
        let m = data.join("manifest.csv");
        std::fs::write(
            &m,
            "path,label,source,challenge\nstreet/a.png,1,x,0\nstreet/missing.png,0,x,0\nlogged/b.jpg,0,y,1\n",
        )
        .unwrap();
        let out = dir.join("out");
        let style = Style { levels: Levels::parse("0-3").unwrap(), seed: 7 };
        let args = ChallengeArgs { manifests: vec![m], out: out.clone(), style: style.clone(), views: 3 };
        assert_eq!(write(&args).unwrap(), 4, "the unreadable row is left out; 3 views and the logged challenge");

        let back = manifest::load(&out.join("manifest.csv")).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back[3].source, "logged");
        assert!(back[3].challenge && !back[3].label);
        assert_eq!(std::fs::read(&back[3].path).unwrap(), sent, "a challenge is copied byte for byte");
        let src = read_source(&data.join("street/a.png")).unwrap();
        for (view, ex) in back.iter().take(3).enumerate() {
            assert_eq!(ex.source, "street", "the written manifest keeps the source grouping");
            assert!(ex.challenge, "marked as challenges: the offline tools will not augment them again");
            assert!(ex.label);
            let written = image::open(&ex.path).unwrap().to_rgb8();
            assert_eq!(written.dimensions(), (224, 224));
            // the same draw and bytes the offline loop embeds for this view
            let (expected, params) = challenge_view(&src, &style, view).unwrap();
            assert_eq!(ex.level, Some(params.level), "the level it was drawn at, read back");
            assert_eq!(ex.group, back[0].group, "the views of one image are one group");
            let bytes = std::fs::read(&ex.path).unwrap();
            let decoded = cascade_common::image::decode_image(&bytes, &Default::default()).unwrap();
            assert_eq!(decoded.as_raw(), expected.as_raw(), "view {view}");
        }
        let csv = std::fs::read_to_string(out.join("manifest.csv")).unwrap();
        assert!(csv.starts_with("path,label,source,level,view,original,challenge\n"), "{csv}");
        let first = csv.lines().nth(1).unwrap();
        let original = std::fs::canonicalize(data.join("street/a.png")).unwrap();
        assert!(first.ends_with(&format!(",{},1", original.display())), "the original, absolute: {csv}");
        let logged = csv.lines().nth(4).unwrap();
        assert!(logged.starts_with("logged/000003.jpg,0,logged,,0,"), "no level, view 0: {csv}");
        // level 0 alone: one view, whatever --views says
        let out0 = dir.join("out0");
        let args0 = ChallengeArgs { out: out0, style: Style { levels: Levels::only(0), seed: 7 }, ..args };
        assert_eq!(write(&args0).unwrap(), 2);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn sources_that_clean_to_one_name_get_folders_of_their_own() {
        let mut f = Folders::default();
        assert_eq!(f.of("gtsdb_germany"), "gtsdb_germany");
        assert_eq!(f.of("web:z"), "web_z");
        let other = f.of("web_z").to_string();
        assert!(other.starts_with("web_z-") && other.len() == "web_z-".len() + 8, "{other}");
        assert_eq!(f.of("web:z"), "web_z", "stable per source");
        assert_eq!(f.of(""), "_");
    }
}

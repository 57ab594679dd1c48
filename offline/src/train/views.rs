//! What the head is trained on: each labelled image read as the server would decode it, turned
//! into the challenge views a validator would send, and embedded by the backbone (from the
//! cache where it has them).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_engines::{JobInput, Models, Output};

use crate::augment::{self, Params, Style};
use crate::embed_cache::{self, EmbedCache};
use crate::manifest::Example;
use crate::Progress;
use cascade_common::image::{decode_image, IngressLimits};

/// An image file as the server would decode it, with the hash of its bytes (which keys its
/// augmentation draws, so they do not depend on how a manifest spells the path).
pub struct SourceImage {
    pub sha: String,
    pub img: image::RgbImage,
}

pub fn read_source(path: &Path) -> anyhow::Result<SourceImage> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let img =
        decode_image(&bytes, &IngressLimits::default()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(SourceImage { sha: embed_cache::sha256_hex(&bytes), img })
}

/// View `view` of an image as a validator would send it, decoded as the server decodes it,
/// and the augmentation drawn for it: keyed by the run's seed, the file's hash and the view.
pub fn challenge_view(src: &SourceImage, style: &Style, view: usize) -> anyhow::Result<(image::RgbImage, Params)> {
    let params = style.params(&view_key(&src.sha, view), src.img.width(), src.img.height());
    Ok((challenge(src, &params)?, params))
}

/// What keys view `view`'s draws: the file's hash (view 0, as `eval` draws) or `hash#view`.
pub(crate) fn view_key(sha: &str, view: usize) -> String {
    if view == 0 {
        sha.to_string()
    } else {
        format!("{sha}#{view}")
    }
}

/// The challenge JPEG of `params`, decoded as the server decodes it.
fn challenge(src: &SourceImage, params: &Params) -> anyhow::Result<image::RgbImage> {
    let jpeg = augment::challenge_jpeg(&src.img, params);
    decode_image(&jpeg, &IngressLimits::default()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Reads an example as the policy would see it: as read, or (with a style) as the challenge a
/// validator would send of it, decoded as the server decodes it; with the level drawn. An
/// example that already is a challenge ([`Example::challenge`]) is read as it is.
pub fn load_example(ex: &Example, style: Option<&Style>) -> anyhow::Result<(image::RgbImage, Option<u8>)> {
    let src = read_source(&ex.path)?;
    let Some(style) = style_for(ex, style) else {
        return Ok((src.img, None));
    };
    let (img, params) = challenge_view(&src, style, 0).with_context(|| ex.path.display().to_string())?;
    Ok((img, Some(params.level)))
}

/// The augmentation an example gets: none for an image that already is a challenge.
pub fn style_for<'a>(ex: &Example, style: Option<&'a Style>) -> Option<&'a Style> {
    if ex.challenge {
        None
    } else {
        style
    }
}

/// One training row: a view of an example and its embedding.
pub(super) struct Row {
    pub ex: usize,
    pub view: usize,
    pub level: Option<u8>,
    pub x: Vec<f32>,
}

/// Embeddings of every view of the readable examples, from the cache where it has them;
/// unreadable rows are reported and left out. Also the backbone's time per new embedding.
pub(super) fn embed_all(
    models: &Models,
    backbone: &str,
    examples: &[Example],
    style: Option<&Style>,
    views: usize,
    cache: &mut EmbedCache,
) -> anyhow::Result<(Vec<Row>, Vec<String>, Option<f64>)> {
    let kind = models.spec(backbone).with_context(|| format!("no model {backbone} in the registry"))?.kind;
    let mut progress = Progress::new("embedding", examples.len());
    let mut rows = Vec::with_capacity(examples.len() * views);
    let mut unreadable = Vec::new();
    let (mut computed, mut compute_s) = (0usize, 0f64);
    for (c, chunk) in examples.chunks(16).enumerate() {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut pending = Vec::new();
        for (j, ex) in chunk.iter().enumerate() {
            let i = c * 16 + j;
            let src = match read_source(&ex.path) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}: {e:#} (left out)", ex.row);
                    unreadable.push(format!("{}: {e:#}", ex.row));
                    progress.tick();
                    continue;
                }
            };
            // a challenge is used as read, once: its augmentation was drawn by the validator
            let style = style_for(ex, style);
            let views = if ex.challenge { 1 } else { views };
            for view in 0..views {
                // the draws first: a cached view needs no augmentation at all
                let params = style.map(|s| s.params(&view_key(&src.sha, view), src.img.width(), src.img.height()));
                let key = match &params {
                    Some(p) => format!("{}|{p:?}", src.sha),
                    None => format!("{}|as-read", src.sha),
                };
                let level = params.as_ref().map(|p| p.level);
                match cache.get(&key) {
                    Some(x) => rows.push(Row { ex: i, view, level, x }),
                    None => {
                        let img = match &params {
                            Some(p) => challenge(&src, p)?,
                            None => src.img.clone(),
                        };
                        let rx = models.submit(backbone, kind, JobInput::Image(Arc::new(img)), deadline)?;
                        pending.push((i, view, level, key, rx));
                    }
                }
            }
            progress.tick();
        }
        for (i, view, level, key, rx) in pending {
            let reply = rx.recv_deadline(deadline).context("backbone timed out")?;
            compute_s += reply.compute.as_secs_f64() / reply.batch.max(1) as f64;
            computed += 1;
            match reply.output? {
                Output::Embedding(x) => {
                    cache.put(key, x.clone());
                    rows.push(Row { ex: i, view, level, x });
                }
                _ => anyhow::bail!("{backbone} is not an embedder (kind = \"embedder\")"),
            }
        }
    }
    rows.sort_by_key(|r| (r.ex, r.view));
    let per = (computed > 0).then(|| compute_s * 1e3 / computed as f64);
    Ok((rows, unreadable, per))
}

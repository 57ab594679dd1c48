//! The prediction log: what each hotkey answered, with every primitive result the request
//! produced and, under a sampling rule, the image — the raw material of `cascade log` (hard
//! cases), `cascade replay` and tuning. Recording hands a record to the folder's writer thread
//! (`writer`) and returns; the format is in `format`; its readers are the offline tools' (`cascade-offline`).

pub mod format;
pub(crate) mod metrics;

mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::answer::Answer;
use crate::config::{ImageRule, LogConfig};
use crate::runtime::request::RequestCtx;
use format::{hex, Logged, LoggedOutput, Record, VERSION};
pub use writer::Counts;
use writer::{Entry, Writer};

/// Where a request came from, for its record.
#[derive(Clone)]
pub struct Provenance {
    /// `http` or `axon`.
    pub via: &'static str,
    /// The validator's hotkey on the axon.
    pub caller: Option<String>,
    /// The image as received.
    pub bytes: bytes::Bytes,
}

/// Whose answer a record is: the hotkey, the request's id, and whether it was a shadow's.
pub struct Whose<'a> {
    pub hotkey: &'a str,
    pub id: &'a str,
    pub shadow: bool,
}

/// A hotkey's log: its folder's writer and its sampling rule.
pub struct Log {
    writer: Arc<Writer>,
    rule: ImageRule,
    max_image: u64,
    segment_bytes: u64,
    segment_age: Duration,
    seen: AtomicU64,
}

/// One writer per folder in the process, shared by the hotkeys (and reloads) that log there;
/// held weakly, so a folder no hotkey logs to any more lets its writer thread end.
fn writers() -> &'static Mutex<HashMap<PathBuf, std::sync::Weak<Writer>>> {
    static W: OnceLock<Mutex<HashMap<PathBuf, std::sync::Weak<Writer>>>> = OnceLock::new();
    W.get_or_init(Default::default)
}

/// Every live log folder's counters (for the metrics and the status page).
pub fn counts() -> Vec<(PathBuf, Arc<Counts>)> {
    let mut w = writers().lock().unwrap_or_else(|p| p.into_inner());
    w.retain(|_, x| x.strong_count() > 0);
    w.iter().filter_map(|(d, x)| Some((d.clone(), x.upgrade()?.counts.clone()))).collect()
}

impl Log {
    /// The log `cfg` describes, its folder relative to `base` (the hotkey file's folder).
    pub fn open(cfg: &LogConfig, base: &Path) -> Result<Arc<Log>, String> {
        let rule = cfg.rule()?;
        let dir = if cfg.dir.is_absolute() { cfg.dir.clone() } else { base.join(&cfg.dir) };
        // a symbolic link is followed; one to nothing is said as such, not as "File exists"
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) && !dir.exists() {
            let to = std::fs::read_link(&dir).map(|t| t.display().to_string()).unwrap_or_default();
            return Err(format!("log.dir {} is a symbolic link to {to}, which does not exist", dir.display()));
        }
        // one writer per folder, however the path is spelt
        std::fs::create_dir_all(&dir).map_err(|e| format!("log.dir {}: {e}", dir.display()))?;
        let dir = dir.canonicalize().map_err(|e| format!("log.dir {}: {e}", dir.display()))?;
        let writer = {
            let mut w = writers().lock().unwrap_or_else(|p| p.into_inner());
            match w.get(&dir).and_then(std::sync::Weak::upgrade) {
                Some(x) => x,
                None => {
                    let x = Arc::new(Writer::start(&dir).map_err(|e| format!("log.dir {}: {e}", dir.display()))?);
                    w.insert(dir.clone(), Arc::downgrade(&x));
                    x
                }
            }
        };
        Ok(Arc::new(Log {
            writer,
            rule,
            max_image: cfg.max_image_kb * 1024,
            segment_bytes: cfg.segment_mb << 20,
            segment_age: Duration::from_secs(cfg.segment_s),
            seen: AtomicU64::new(0),
        }))
    }

    fn keeps_image(&self, prediction: f32) -> bool {
        match self.rule {
            ImageRule::None => false,
            ImageRule::All => true,
            ImageRule::Uncertain(lo, hi) => prediction.is_nan() || (lo..=hi).contains(&prediction),
            ImageRule::Every(n) => self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(n),
        }
    }

    /// Records one answer (`who.id` is shared by a served answer and its shadow).
    pub fn record(&self, who: &Whose, prov: &Provenance, ctx: &RequestCtx, a: &Answer, ms: f64) {
        self.record_as(who.hotkey, who.id, who.shadow, prov, ctx, a, ms)
    }

    #[allow(clippy::too_many_arguments)]
    fn record_as(
        &self,
        hotkey: &str,
        id: &str,
        shadow: bool,
        prov: &Provenance,
        ctx: &RequestCtx,
        a: &Answer,
        ms: f64,
    ) {
        let ext = if prov.bytes.starts_with(&[0x89, b'P', b'N', b'G']) { "png" } else { "jpg" };
        let keep = (self.keeps_image(a.prediction) && (prov.bytes.len() as u64) <= self.max_image).then_some(ext);
        let (width, height) = ctx.original_size();
        let record = Record {
            v: VERSION,
            t: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            id: id.to_string(),
            hotkey: hotkey.to_string(),
            arm: a.arm.to_string(),
            shadow,
            via: prov.via.to_string(),
            caller: prov.caller.clone(),
            // the writer hashes the bytes, off the request path
            image: String::new(),
            key: ctx.origin().map(|k| hex(&k)).unwrap_or_default(),
            width,
            height,
            prediction: a.prediction.is_finite().then_some(a.prediction),
            raw: a.raw,
            stage: a.stage.clone(),
            source: a.source.as_str().to_string(),
            model_ms: a.model_ms,
            ms,
            image_file: None,
            results: ctx
                .results()
                .into_iter()
                .map(|(key, call, r)| Logged {
                    image: key.map(|k| hex(&k)).unwrap_or_default(),
                    primitive: call.primitive.to_string(),
                    model: call.model,
                    args: call.args,
                    output: match r {
                        Ok(o) => LoggedOutput::of(&o),
                        Err(e) => LoggedOutput::Error(e.message()),
                    },
                })
                .collect(),
        };
        self.writer.send(Entry {
            record,
            bytes: prov.bytes.clone(),
            keep,
            segment_bytes: self.segment_bytes,
            segment_age: self.segment_age,
        });
    }
}

/// A request id: unique in the process and ordered by time.
pub(crate) fn request_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    format!("{ms:x}-{:x}", N.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dangling_symlink_as_the_log_folder_is_named() {
        let base = std::env::temp_dir().join(format!("predlog-link-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        std::os::unix::fs::symlink(base.join("nowhere"), base.join("logs")).unwrap();
        let cfg: crate::config::LogConfig = toml::from_str("dir = \"logs\"").unwrap();
        let e = super::Log::open(&cfg, &base).err().expect("refused");
        assert!(e.contains("is a symbolic link to") && e.contains("nowhere, which does not exist"), "{e}");
        // a link to a folder is followed
        std::fs::create_dir_all(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("good")).unwrap();
        let cfg: crate::config::LogConfig = toml::from_str("dir = \"good\"").unwrap();
        assert!(super::Log::open(&cfg, &base).is_ok());
        std::fs::remove_dir_all(&base).unwrap();
    }
}

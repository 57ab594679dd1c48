//! On-disk cache of compiled components, keyed by the content's sha256 and the engine's
//! compatibility hash (settings, wasmtime version, CPU features): a warm reload deserialises
//! in a millisecond instead of compiling for a hundred. Any cache failure (corrupt entry, full
//! disk, read-only folder) costs only a compile.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

pub struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

pub use crate::files::sha256_hex;

impl CompileCache {
    /// `dir = None` disables the disk cache.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> CompileCache {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        CompileCache { dir, engine_key: format!("{:016x}", h.finish()) }
    }

    fn entry(&self, hash: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{hash}-{}.cwasm", self.engine_key)))
    }

    /// The compiled component for these bytes: from the cache, or compiled (and cached).
    pub fn component(&self, engine: &Engine, bytes: &[u8], hash: &str) -> wasmtime::Result<(Component, bool)> {
        if let Some(path) = self.entry(hash) {
            if path.exists() {
                match deserialize(engine, &path) {
                    Ok(c) => return Ok((c, true)),
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "compile cache entry unusable; recompiling");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        let c = Component::new(engine, bytes)?;
        if let Some(path) = self.entry(hash) {
            if let Err(e) = store(&c, &path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the compile cache; continuing without");
            }
        }
        Ok((c, false))
    }
}

/// Writes beside the entry and renames, so a reader never sees a partial file.
fn store(c: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = c.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: entries are written only by `store` above from `Component::serialize` of this
    // engine configuration (the file name carries the engine's compatibility hash), and are
    // renamed into place whole. wasmtime still checks the header and version on load.
    unsafe { Component::deserialize_file(engine, path) }
}

//! An on-disk cache of backbone embeddings for `train-head`, so that retraining a head (per
//! fold, per setting) never runs the backbone twice on the same input. One file per backbone
//! identity (registry name, ONNX bytes, input preparation, output), records keyed by the
//! image file's content hash and the exact augmentation drawn for the view.
//!
//! Like the compile cache, it degrades gracefully: a file that cannot be read, written or
//! that is truncated leaves the cache working in memory (or from the records before the
//! damage), logged once; it never fails a run.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use cascade_engines::ModelSpec;
use sha2::{Digest, Sha256};

const MAGIC: &[u8] = b"cascade-embeddings/1\n";

pub struct EmbedCache {
    path: Option<PathBuf>,
    file: Option<File>,
    map: HashMap<String, Vec<f32>>,
    pub hits: usize,
    pub misses: usize,
}

/// Hex SHA-256 of some bytes (the one the host keys every content by).
pub use cascade_host::files::sha256_hex;

/// What makes two embeddings of the same input comparable: the model's bytes, how its input
/// is prepared and which output is read. Names the cache file.
pub fn backbone_id(spec: &ModelSpec) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    let mut f = File::open(&spec.file).map_err(|e| anyhow::anyhow!("{}: {e}", spec.file.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.update(cascade_engines::head::describe_input(&spec.input).as_bytes());
    h.update(spec.output.as_deref().unwrap_or("").as_bytes());
    let safe: String =
        spec.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    Ok(format!("{safe}-{}", &hex::encode(h.finalize())[..16]))
}

impl EmbedCache {
    /// A cache that keeps nothing on disk.
    pub fn memory() -> EmbedCache {
        EmbedCache { path: None, file: None, map: HashMap::new(), hits: 0, misses: 0 }
    }

    /// The cache file `dir/<id>.bin`, created if absent; any failure leaves a memory-only cache.
    pub fn open(dir: &Path, id: &str) -> EmbedCache {
        let path = dir.join(format!("{id}.bin"));
        let mut c = EmbedCache::memory();
        match Self::read(&path, &mut c.map) {
            Ok(file) => {
                c.file = Some(file);
                c.path = Some(path);
            }
            Err(e) => eprintln!("embedding cache {}: {e}; not kept on disk this run", path.display()),
        }
        c
    }

    /// Loads the records of `path` (creating it), cuts a damaged tail, and returns the file
    /// open for appending.
    fn read(path: &Path, map: &mut HashMap<String, Vec<f32>>) -> std::io::Result<File> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut good = 0usize;
        if bytes.starts_with(MAGIC) {
            let mut at = MAGIC.len();
            good = at;
            while let Some((key, v, next)) = record(&bytes, at) {
                map.insert(key, v);
                at = next;
                good = next;
            }
            if good < bytes.len() {
                eprintln!(
                    "embedding cache {}: {} damaged bytes at the end dropped",
                    path.display(),
                    bytes.len() - good
                );
            }
        } else if !bytes.is_empty() {
            eprintln!("embedding cache {}: not a cache file; starting it afresh", path.display());
        }
        if good == 0 {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(MAGIC)?;
        } else {
            file.set_len(good as u64)?;
            file.seek(SeekFrom::Start(good as u64))?;
        }
        Ok(file)
    }

    pub fn get(&mut self, key: &str) -> Option<Vec<f32>> {
        let v = self.map.get(key).cloned();
        if v.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        v
    }

    /// Keeps an embedding (and appends it to the file, one write per record).
    pub fn put(&mut self, key: String, v: Vec<f32>) {
        if let Some(f) = &mut self.file {
            let mut rec = Vec::with_capacity(8 + key.len() + 4 * v.len());
            rec.extend_from_slice(&(key.len() as u32).to_le_bytes());
            rec.extend_from_slice(key.as_bytes());
            rec.extend_from_slice(&(v.len() as u32).to_le_bytes());
            for x in &v {
                rec.extend_from_slice(&x.to_le_bytes());
            }
            if let Err(e) = f.write_all(&rec) {
                eprintln!(
                    "embedding cache {}: {e}; not kept on disk from here",
                    self.path.as_deref().unwrap_or(Path::new("?")).display()
                );
                self.file = None;
            }
        }
        self.map.insert(key, v);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// The record at `at`: key, vector and the next offset; `None` at the end or on damage.
fn record(b: &[u8], at: usize) -> Option<(String, Vec<f32>, usize)> {
    let klen = u32_at(b, at)?;
    if klen > 4096 {
        return None;
    }
    let key = std::str::from_utf8(b.get(at + 4..at + 4 + klen)?).ok()?.to_string();
    let dim = u32_at(b, at + 4 + klen)?;
    if dim == 0 || dim > 1 << 20 {
        return None;
    }
    let start = at + 8 + klen;
    let raw = b.get(start..start + 4 * dim)?;
    let v = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Some((key, v, start + 4 * dim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_a_damaged_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("cascade-embed-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut c = EmbedCache::open(&dir, "m-1");
            assert!(c.get("a").is_none());
            c.put("a".into(), vec![1.0, 2.0]);
            c.put("b|level 1".into(), vec![3.0; 5]);
        }
        let file = dir.join("m-1.bin");
        // a record cut in half by a crash
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&[3, 0, 0, 0, b'x']).unwrap();
        drop(f);
        {
            let mut c = EmbedCache::open(&dir, "m-1");
            assert_eq!(c.len(), 2);
            assert_eq!(c.get("a"), Some(vec![1.0, 2.0]));
            assert_eq!(c.get("b|level 1").map(|v| v.len()), Some(5));
            c.put("c".into(), vec![0.5]);
        }
        let mut c = EmbedCache::open(&dir, "m-1");
        assert_eq!(c.len(), 3, "appends after the cut are readable");
        assert_eq!(c.get("c"), Some(vec![0.5]));
        // not a cache file: started afresh, never an error
        std::fs::write(dir.join("m-2.bin"), b"garbage").unwrap();
        let c = EmbedCache::open(&dir, "m-2");
        assert!(c.is_empty());
        // an unusable folder: memory only
        let blocked = dir.join("m-1.bin").join("sub");
        let mut c = EmbedCache::open(&blocked, "m-3");
        c.put("k".into(), vec![1.0]);
        assert_eq!(c.get("k"), Some(vec![1.0]));
        std::fs::remove_dir_all(&dir).ok();
    }
}

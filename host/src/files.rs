//! Reading the files that reload live. Anything in the watched folders can be named `*.wasm`
//! or `*.toml`: a FIFO would block a plain `read` for good, a link to `/dev/zero` would read
//! until memory runs out. Only regular files are read, opened without blocking, up to a cap.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Largest component file read.
pub(crate) const MAX_COMPONENT_BYTES: u64 = 64 << 20;
/// Largest configuration file (hotkey, registry, chain settings, metagraph snapshot) read.
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Lower-case hex sha-256 of `bytes` (content keys: compiled components, configs, snapshots).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file (a pipe, device or folder is never read)")]
    NotRegular,
    #[error("larger than {0} bytes")]
    TooLarge(u64),
}

impl ReadError {
    pub(crate) fn not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The whole of a regular file of at most `cap` bytes (links are followed).
pub(crate) fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    // refuse before opening: opening a FIFO for reading blocks until a writer comes
    if !std::fs::metadata(path)?.is_file() {
        return Err(ReadError::NotRegular);
    }
    // and again on what was opened, in case the name was swapped in between
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    if meta.len() > cap {
        return Err(ReadError::TooLarge(cap));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge(cap));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_cap() {
        let dir = std::env::temp_dir().join(format!("cascade-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.toml");
        std::fs::write(&f, b"name = 1").unwrap();
        assert_eq!(read_regular(&f, 100).unwrap(), b"name = 1");
        assert!(matches!(read_regular(&f, 3), Err(ReadError::TooLarge(3))));
        assert!(matches!(read_regular(&dir, 100), Err(ReadError::NotRegular)));
        assert!(matches!(read_regular(Path::new("/dev/zero"), 100), Err(ReadError::NotRegular)));
        let fifo = dir.join("f.wasm");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.as_ref().is_ok_and(|s| s.success()), "mkfifo {}: {made:?}", fifo.display());
        // returns at once instead of waiting for a writer
        assert!(matches!(read_regular(&fifo, 100), Err(ReadError::NotRegular)));
        let link = dir.join("zero.wasm");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(read_regular(&link, 100), Err(ReadError::NotRegular)));
        assert!(read_regular(&dir.join("missing"), 100).unwrap_err().not_found());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

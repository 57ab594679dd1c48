//! The process's one ONNX Runtime environment, loaded from a library path at run time.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::LoadError;

static ENV: OnceLock<Environment> = OnceLock::new();

/// Where the library is looked for: `ORT_DYLIB_PATH`, else `<exe dir>/../ort/libonnxruntime.so`
/// (what `make setup` installs beside `target/`).
pub fn runtime_library() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    dir.join("ort").join("libonnxruntime.so")
}

/// Loads the library once per process (ONNX Runtime allows one environment) and returns it.
pub(crate) fn init_runtime(path: &Path) -> Result<Environment, LoadError> {
    if let Some(env) = ENV.get() {
        return Ok(env.clone());
    }
    let err = |reason: String| LoadError::Runtime { path: path.to_path_buf(), reason };
    if !path.exists() {
        return Err(err("not found (run `make setup`, or set ORT_DYLIB_PATH)".into()));
    }
    let env = ort::init_from(path)
        .map_err(|e| err(e.to_string()))?
        .with_name("cascade")
        .build()
        .map_err(|e| err(e.to_string()))?;
    Ok(ENV.get_or_init(|| env).clone())
}

//! The `onnx` engine kind: a classifier, embedder or detector from an ONNX file, one ONNX
//! Runtime session per worker (`worker`), batching what waits in the model's queue. On CUDA
//! a worker with GPU pre-processing is split into a staging thread and a runner thread
//! (`pipeline`).

mod pipeline;
mod worker;

use std::sync::Arc;

use crate::lifecycle::Launch;
use crate::LoadError;

/// Starts the model's workers; every worker opens its session before this returns (a lazy
/// model's first one too), so labels found in the file's metadata are in the served spec.
pub(crate) fn start(l: &mut Launch<'_>) -> Result<(), LoadError> {
    let head = crate::head::of_model(&l.spec)?;
    let found: worker::FoundLabels = Arc::default();
    let (env, spec, stats) = (l.env.clone(), l.spec.clone(), l.stats.clone());
    l.workers(|| {
        let (env, spec, stats, head, found) = (env.clone(), spec.clone(), stats.clone(), head.clone(), found.clone());
        move || pipeline::open(&env, &spec, head.clone(), &stats, &found)
    })?;
    // labels the file named
    if let Some(labels) = found.get() {
        let mut s = (*l.spec).clone();
        s.labels = labels.clone();
        l.spec = Arc::new(s);
    }
    Ok(())
}

//! Model engines for `cascade`. Every model named in the registry gets its own ONNX Runtime
//! session(s) on dedicated worker threads fed by a queue; the queue is where requests from all
//! hotkeys meet and are batched. Callers hand in decoded images and get small results back
//! (probabilities, boxes, vectors); tensors, sessions and threads stay inside this crate.

mod classify;
mod detect;
mod error;
mod gpu;
pub mod head;
mod lifecycle;
mod models;
mod ocr;
mod precision;
mod preprocess;
mod runtime;
mod session;
mod spec;
mod worker;

pub use detect::{nms, Detection};
pub use error::{EngineError, LoadError};
pub use gpu::prepare_on_gpu;
pub use models::{ModelStats, Models};
pub use ocr::TextLine;
pub use preprocess::{prepare, Prepared};
pub use runtime::{init_runtime, runtime_library};
pub use session::CPU_FALLBACKS;
pub use spec::{ColorOrder, DetectorFormat, Device, InputSpec, ModelKind, ModelSpec, Preprocess, Registry, ResizeMode};
pub use worker::{Job, JobInput, Output, Reply};

/// A decoded image as the engines take it: 8-bit RGB, shared between calls of one request.
pub type Image = std::sync::Arc<image::RgbImage>;

//! Model engines for `cascade`. Every model named in the registry gets its own ONNX Runtime
//! session(s) on dedicated worker threads fed by a queue; the queue is where requests from all
//! hotkeys meet and are batched. Callers hand in decoded images and get small results back
//! (probabilities, boxes, vectors); tensors, sessions and threads stay inside this crate.

mod classify;
mod detect;
mod engine;
mod error;
mod gpu;
pub mod head;
mod lifecycle;
mod models;
mod ocr;
mod pipeline;
mod precision;
mod preprocess;
mod remote;
mod runtime;
mod session;
mod spec;
mod vlm;
mod worker;

pub use engine::{Answer, Detection, JobInput, ModelStats, Output, Reply, ScoreSource, TextLine};
pub use error::{EngineError, LoadError};
pub use gpu::prepare_on_gpu;
pub use models::Models;
pub use preprocess::prepare;
pub use remote::kserve::RemoteSpec;
pub use remote::BreakerSpec;
pub use runtime::runtime_library;
pub use session::CPU_FALLBACKS;
pub use spec::{Device, ModelKind, ModelSpec, Registry};
pub use vlm::VlmSpec;

/// A decoded image as the engines take it: 8-bit RGB, shared between calls of one request.
pub type Image = std::sync::Arc<image::RgbImage>;

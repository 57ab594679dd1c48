//! Model engines for `cascade`. Every model named in the registry gets its own ONNX Runtime
//! session(s) on dedicated worker threads fed by a queue; the queue is where requests from all
//! hotkeys meet and are batched. Callers hand in decoded images and get small results back
//! (probabilities, boxes, vectors); tensors, sessions and threads stay inside this crate.
//!
//! `engine` is what every engine kind shares (the job, reply and output types, the `Engine`
//! trait, the queue helpers); `kinds` is the one table of engine kinds (`onnx`, `ocr`,
//! `remote::kserve`, `vlm`), which `models` starts; `spec` is the registry they are read from.

#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(unreachable_pub)]

mod classify;
mod decode;
mod detect;
mod engine;
mod error;
mod gpu;
pub mod head;
mod kinds;
mod lifecycle;
mod models;
mod ocr;
mod onnx;
mod ops;
mod parallel;
mod precision;
mod preprocess;
mod remote;
mod runtime;
mod session;
mod spec;
mod vlm;

pub use engine::{
    Answer, Detection, Image, JobInput, ModelStats, Output, RecvError, Reply, ReplyReceiver, ScoreSource, TextLine,
};
pub use error::{EngineError, LoadError};
pub use gpu::prepare_on_gpu;
pub use models::Models;
pub use preprocess::prepare;
pub use runtime::runtime_library;
pub use session::CPU_FALLBACKS;
pub use spec::{BreakerSpec, Device, ModelKind, ModelSpec, Registry, RemoteSpec, VlmSpec};

//! The crate's two error types: why a model could not be loaded, and why one call failed.

use std::path::PathBuf;

/// Why a model could not be loaded; names the model and the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("ONNX Runtime library {path}: {reason}")]
    Runtime { path: PathBuf, reason: String },
    #[error("model {model}: file {file} not found")]
    Missing { model: String, file: PathBuf },
    #[error("model {model} ({file}): {reason}")]
    Session { model: String, file: PathBuf, reason: String },
    #[error("model {model}: {reason}")]
    Spec { model: String, reason: String },
    #[error("model registry {file}: {reason}")]
    Registry { file: PathBuf, reason: String },
}

/// Why one inference call failed. Expected failures: the caller turns them into values.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error("unknown model {0}")]
    UnknownModel(String),
    #[error("model {model} is a {kind}, not usable for {wanted}")]
    WrongKind { model: String, kind: &'static str, wanted: &'static str },
    #[error("deadline exceeded")]
    DeadlineExceeded,
    #[error("model {model} queue is full")]
    Overloaded { model: String },
    #[error("model {model}: {reason}")]
    Inference { model: String, reason: String },
    #[error("model {model}: worker stopped")]
    Stopped { model: String },
    /// A remote model's circuit breaker is open: the call was not made.
    #[error("model {model}: {reason}")]
    Unavailable { model: String, reason: String },
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

//! The pieces that both the serving host (`cascade-host`) and the offline tools
//! (`cascade-offline`) need, kept in a crate that depends on neither so that neither has to
//! import the other: decoding an untrusted JPEG or PNG within size limits, and the binary
//! classification figures (MCC, accuracy, the validator's reward, percentiles) that the
//! rollout rules and the evaluation reports both compute.

pub mod image;
pub mod scores;

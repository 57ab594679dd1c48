//! A VLM's registry settings: `vlm = { url, model, ... }` on a `kind = "vlm"` entry.

use serde::Deserialize;

use super::remote::{check_endpoint, BreakerSpec};

/// How to reach an OpenAI-compatible chat-completions endpoint (vLLM, SGLang, llama.cpp
/// server, a hosted API) and how to ask it. The API key is read from the environment variable
/// `api_key_env` names, never from the file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VlmSpec {
    /// Base URL up to and including the version, e.g. `http://127.0.0.1:8000/v1`
    /// (`${VAR}` is expanded); requests go to `{url}/chat/completions`.
    pub url: String,
    /// The model name the server serves.
    pub model: String,
    /// Environment variable holding the API key, sent as `Authorization: Bearer`.
    pub api_key_env: Option<String>,
    /// The image is scaled down (never up) so that its long side is at most this...
    #[serde(default = "image_side")]
    pub image_side: u32,
    /// ... and sent as a JPEG data URL of this quality.
    #[serde(default = "jpeg_quality")]
    pub jpeg_quality: u8,
    /// Optional system message before the question.
    pub system: Option<String>,
    #[serde(default)]
    pub temperature: f32,
    #[serde(default = "max_tokens")]
    pub max_tokens: u32,
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stop: Vec<String>,
    /// Ask for token log-probabilities (P(yes) from the first answer token). Servers that do
    /// not offer them are answered from the text.
    #[serde(default = "yes")]
    pub logprobs: bool,
    #[serde(default = "top_logprobs")]
    pub top_logprobs: u32,
    /// Longest wait for one attempt; always cut to what is left of the request's budget
    /// less `reserve_ms`.
    #[serde(default = "timeout_ms")]
    pub timeout_ms: u64,
    /// Time of the request's budget the VLM leaves to what follows it (a cheaper stage that
    /// answers when the VLM cannot, the reply itself): a slow endpoint never takes it all.
    #[serde(default = "reserve_ms")]
    pub reserve_ms: u64,
    /// Attempts after the first, made only while the budget allows the backoff and a try.
    #[serde(default = "retries")]
    pub retries: u32,
    /// Wait before the first retry, doubled for each further one.
    #[serde(default = "backoff_ms")]
    pub backoff_ms: u64,
    /// Largest response body read.
    #[serde(default = "max_response_kb")]
    pub max_response_kb: u64,
    #[serde(default)]
    pub breaker: BreakerSpec,
}

fn image_side() -> u32 {
    448
}
fn jpeg_quality() -> u8 {
    85
}
fn max_tokens() -> u32 {
    16
}
fn yes() -> bool {
    true
}
fn top_logprobs() -> u32 {
    5
}
fn timeout_ms() -> u64 {
    5000
}
fn reserve_ms() -> u64 {
    300
}
fn retries() -> u32 {
    1
}
fn backoff_ms() -> u64 {
    100
}
fn max_response_kb() -> u64 {
    1024
}

impl VlmSpec {
    pub(crate) fn check(&self) -> Result<(), String> {
        check_endpoint("vlm", &self.url, self.api_key_env.as_deref())?;
        if self.model.is_empty() {
            return Err("vlm.model is empty".into());
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err(format!("vlm.jpeg_quality {} must be 1 to 100", self.jpeg_quality));
        }
        if !(32..=4096).contains(&self.image_side) {
            return Err(format!("vlm.image_side {} must be 32 to 4096", self.image_side));
        }
        if self.max_tokens == 0 || self.timeout_ms == 0 || self.breaker.failures == 0 || self.max_response_kb == 0 {
            return Err(
                "vlm.max_tokens, vlm.timeout_ms, vlm.max_response_kb and vlm.breaker.failures must be at least 1"
                    .into(),
            );
        }
        if self.top_logprobs > 20 {
            return Err(format!("vlm.top_logprobs {} is above the API's limit of 20", self.top_logprobs));
        }
        Ok(())
    }

    /// The endpoint requests go to.
    pub(crate) fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.url.trim_end_matches('/'))
    }
}

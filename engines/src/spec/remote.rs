//! The settings every remote engine's table shares (the circuit breaker, the endpoint's
//! checks) and the KServe kind's own: `remote = { url, ... }` on a classifier, embedder or
//! detector.

use serde::Deserialize;

/// The circuit breaker: after `failures` failed calls in a row the endpoint is considered down
/// for `open_ms`; calls fail at once (typed, counted) until one probe call succeeds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSpec {
    pub failures: u32,
    pub open_ms: u64,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec { failures: 5, open_ms: 5000 }
    }
}

/// The checks every remote endpoint's settings share: an http(s) URL, and the API key's
/// environment variable set (`what` names the table: `vlm`, `remote`).
pub(crate) fn check_endpoint(what: &str, url: &str, api_key_env: Option<&str>) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{what}.url {url:?} must start with http:// or https://"));
    }
    if let Some(v) = api_key_env {
        if std::env::var_os(v).is_none() {
            return Err(format!("{what}.api_key_env: environment variable {v} is not set"));
        }
    }
    Ok(())
}

/// `remote = { url, ... }` on a classifier, embedder or detector: the model runs on a KServe
/// v2 server; the image is prepared here (the entry's `input`) and the output is read here
/// (head, activation, detector decoding) as for a local file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// The server's root, e.g. `http://triton:8000` (`${VAR}` is expanded).
    pub url: String,
    /// The model's name on the server (default: the registry name).
    pub model: Option<String>,
    pub version: Option<String>,
    /// Environment variable holding a bearer token, if the server wants one.
    pub api_key_env: Option<String>,
    /// Longest wait for one attempt (cut to the request's remaining budget).
    #[serde(default = "timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "retries")]
    pub retries: u32,
    #[serde(default = "backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "max_response_mb")]
    pub max_response_mb: u64,
    #[serde(default)]
    pub breaker: BreakerSpec,
}

fn timeout_ms() -> u64 {
    2000
}
fn retries() -> u32 {
    1
}
fn backoff_ms() -> u64 {
    50
}
fn max_response_mb() -> u64 {
    64
}

impl RemoteSpec {
    pub(crate) fn check(&self) -> Result<(), String> {
        check_endpoint("remote", &self.url, self.api_key_env.as_deref())?;
        if self.timeout_ms == 0 || self.breaker.failures == 0 || self.max_response_mb == 0 {
            return Err(
                "remote.timeout_ms, remote.max_response_mb and remote.breaker.failures must be at least 1".into()
            );
        }
        Ok(())
    }
}

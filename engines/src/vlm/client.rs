//! One chat-completions call with the image as a data URL: per-attempt timeouts inside the
//! request's budget, retries with backoff only while the budget allows another try, and the
//! model's circuit breaker around it all.

use std::io::Cursor;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::answer;
use super::breaker::Breaker;
use super::settings::VlmSpec;
use crate::engine::{Answer, ModelStats};
use crate::{EngineError, Image};

/// The least time worth starting an attempt with.
const MIN_ATTEMPT: Duration = Duration::from_millis(20);

pub(crate) struct Client {
    pub(crate) name: String,
    spec: VlmSpec,
    endpoint: String,
    key: Option<String>,
    agent: ureq::Agent,
    pub(crate) breaker: Breaker,
    stats: Arc<ModelStats>,
}

/// How one attempt failed, and whether another may help.
struct Failure {
    reason: String,
    /// The server (or the way to it) failed: counts against the breaker and may be retried.
    server: bool,
}

impl Client {
    pub fn new(name: &str, spec: &VlmSpec, stats: Arc<ModelStats>) -> Client {
        let key = spec.api_key_env.as_ref().and_then(|v| std::env::var(v).ok());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_millis(spec.timeout_ms.min(2000))))
            .max_idle_connections_per_host(64)
            .build()
            .into();
        Client {
            name: name.to_string(),
            endpoint: spec.endpoint(),
            spec: spec.clone(),
            key,
            agent,
            breaker: Breaker::new(spec.breaker),
            stats,
        }
    }

    /// Asks `prompt` about `img`, answering before `deadline` or with an error.
    pub fn ask(&self, img: &Image, prompt: &str, deadline: Instant) -> Result<Answer, EngineError> {
        if let Err(open) = self.breaker.admit() {
            self.stats.fast_failures.fetch_add(1, Ordering::Relaxed);
            return Err(EngineError::Unavailable {
                model: self.name.clone(),
                reason: format!(
                    "{} is considered down (circuit open; next probe in {} ms)",
                    self.endpoint,
                    open.0.as_millis()
                ),
            });
        }
        let body = self.body(img, prompt)?;
        // the part of the request's budget this call may use
        let deadline = deadline.checked_sub(Duration::from_millis(self.spec.reserve_ms)).unwrap_or(deadline);
        let mut backoff = Duration::from_millis(self.spec.backoff_ms);
        let mut attempt = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < MIN_ATTEMPT {
                self.breaker.abandon();
                return Err(EngineError::DeadlineExceeded);
            }
            let timeout = left.min(Duration::from_millis(self.spec.timeout_ms));
            let failure = match self.attempt(&body, timeout) {
                Ok(a) => {
                    self.breaker.success(&self.stats);
                    return Ok(a);
                }
                Err(f) => f,
            };
            if failure.server && self.breaker.failure(&self.stats) {
                tracing::warn!(model = %self.name, endpoint = %self.endpoint, reason = %failure.reason, "circuit opened");
            }
            let error = || EngineError::Inference {
                model: self.name.clone(),
                reason: format!("{}: {}", self.endpoint, failure.reason),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if !failure.server || attempt >= self.spec.retries || left < backoff + MIN_ATTEMPT {
                if left < MIN_ATTEMPT && failure.reason.contains("timed out") {
                    return Err(EngineError::DeadlineExceeded);
                }
                return Err(error());
            }
            if self.breaker.admit().is_err() {
                return Err(error());
            }
            std::thread::sleep(backoff);
            backoff *= 2;
            attempt += 1;
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn attempt(&self, body: &Value, timeout: Duration) -> Result<Answer, Failure> {
        let mut req = self.agent.post(&self.endpoint).config().timeout_global(Some(timeout)).build();
        if let Some(k) = &self.key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let mut resp = req.send_json(body).map_err(|e| Failure { reason: transport(&e), server: true })?;
        let status = resp.status().as_u16();
        let limit = self.spec.max_response_kb * 1024;
        let text = resp.body_mut().with_config().limit(limit).read_to_string().map_err(|e| Failure {
            reason: format!("HTTP {status}, reading the body: {}", transport(&e)),
            server: true,
        })?;
        if status != 200 {
            // 408, 429 and 5xx are the server's state; other 4xx are this request (or the
            // configuration) and will not get better by retrying
            let server = status == 408 || status == 429 || status >= 500;
            return Err(Failure { reason: format!("HTTP {status}: {}", snippet(&text)), server });
        }
        answer::read(&text).map_err(|e| Failure { reason: e.to_string(), server: true })
    }

    /// The request body: the question with the image as a JPEG data URL.
    fn body(&self, img: &Image, prompt: &str) -> Result<Value, EngineError> {
        let url = data_url(img, self.spec.image_side, self.spec.jpeg_quality)
            .map_err(|reason| EngineError::InvalidInput(format!("model {}: {reason}", self.name)))?;
        let mut messages = Vec::new();
        if let Some(s) = &self.spec.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": url}},
        ]}));
        let mut body = json!({
            "model": self.spec.model,
            "messages": messages,
            "max_tokens": self.spec.max_tokens,
            "temperature": self.spec.temperature,
            "stream": false,
        });
        if let Some(p) = self.spec.top_p {
            body["top_p"] = json!(p);
        }
        if !self.spec.stop.is_empty() {
            body["stop"] = json!(self.spec.stop);
        }
        if self.spec.logprobs {
            body["logprobs"] = json!(true);
            body["top_logprobs"] = json!(self.spec.top_logprobs);
        }
        Ok(body)
    }
}

/// The image scaled down to `side` on its long side (never up), as a JPEG data URL.
pub(crate) fn data_url(img: &Image, side: u32, quality: u8) -> Result<String, String> {
    let (w, h) = (img.width(), img.height());
    let long = w.max(h);
    let mut buf = Cursor::new(Vec::new());
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality);
    if long > side {
        let s = side as f64 / long as f64;
        let (nw, nh) = (((w as f64 * s).round() as u32).max(1), ((h as f64 * s).round() as u32).max(1));
        let small = image::imageops::resize(&**img, nw, nh, image::imageops::FilterType::Triangle);
        small.write_with_encoder(encoder)
    } else {
        img.write_with_encoder(encoder)
    }
    .map_err(|e| format!("encoding the image: {e}"))?;
    Ok(format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(buf.get_ref())))
}

fn transport(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::ConnectionFailed => "connection refused or failed".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::BodyExceedsLimit(n) => format!("response larger than {n} bytes"),
        ureq::Error::Io(io) => format!("connection lost: {io}"),
        other => other.to_string(),
    }
}

fn snippet(s: &str) -> String {
    let t: String = s.chars().take(200).collect();
    if t.len() < s.len() {
        format!("{t}…")
    } else {
        t
    }
}

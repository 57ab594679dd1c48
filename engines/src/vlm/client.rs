//! One chat-completions call with the image as a data URL, made through the model's
//! [`Remote`] (breaker, per-attempt timeouts inside the budget, retries).

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::answer;
use crate::engine::{Answer, Image, ModelStats};
use crate::remote::{agent, Breaker, Failure, Remote, Retry};
use crate::spec::VlmSpec;
use crate::EngineError;

pub(crate) struct Client {
    pub(crate) remote: Remote,
    spec: VlmSpec,
    key: Option<String>,
    agent: ureq::Agent,
    stats: Arc<ModelStats>,
}

impl Client {
    pub(super) fn new(name: &str, spec: &VlmSpec, stats: Arc<ModelStats>) -> Client {
        Client {
            remote: Remote { model: name.to_string(), endpoint: spec.endpoint(), breaker: Breaker::new(spec.breaker) },
            key: spec.api_key_env.as_ref().and_then(|v| std::env::var(v).ok()),
            agent: agent(Duration::from_millis(spec.timeout_ms.min(2000))),
            spec: spec.clone(),
            stats,
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.remote.model
    }

    /// Asks `prompt` about `img`, answering before `deadline` less the reserve, or with an error.
    pub(super) fn ask(&self, img: &Image, prompt: &str, deadline: Instant) -> Result<Answer, EngineError> {
        let deadline = deadline.checked_sub(Duration::from_millis(self.spec.reserve_ms)).unwrap_or(deadline);
        let retry = Retry {
            timeout: Duration::from_millis(self.spec.timeout_ms),
            retries: self.spec.retries,
            backoff: Duration::from_millis(self.spec.backoff_ms),
        };
        let prepare = || self.body(img, prompt);
        self.remote.call(&self.stats, &retry, deadline, prepare, |body, timeout| self.attempt(body, timeout))
    }

    fn attempt(&self, body: &Value, timeout: Duration) -> Result<Answer, Failure> {
        let mut req = self.agent.post(&self.remote.endpoint).config().timeout_global(Some(timeout)).build();
        if let Some(k) = &self.key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let mut resp = req.send_json(body).map_err(|e| Failure::transport(&e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(self.spec.max_response_kb * 1024)
            .read_to_string()
            .map_err(|e| Failure::transport(&e))?;
        if status != 200 {
            return Err(Failure::status(status, &text));
        }
        answer::read(&text).map_err(|e| match e {
            // a reply without answer text (cut by max_tokens): asking again will not help
            answer::BadReply::NoContent(_) => Failure::answered(e.to_string()),
            _ => Failure { reason: e.to_string(), server: true, timed_out: false },
        })
    }

    /// The request body: the question with the image as a JPEG data URL.
    fn body(&self, img: &Image, prompt: &str) -> Result<Value, EngineError> {
        let url = data_url(img, self.spec.image_side, self.spec.jpeg_quality)
            .map_err(|reason| EngineError::InvalidInput(format!("model {}: {reason}", self.name())))?;
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

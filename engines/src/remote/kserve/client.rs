//! A KServe v2 / Open Inference Protocol REST client (Triton, KServe, MLServer, Seldon): the
//! model's metadata at load, and inference on f32 tensors with JSON data. Every error names
//! the model and the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::ModelStats;
use crate::remote::{agent, snippet, Breaker, Failure, Remote, Retry};
use crate::spec::RemoteSpec;
use crate::EngineError;

/// One tensor of the model's metadata.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TensorMeta {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Metadata {
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

#[derive(Serialize)]
struct InputTensor<'a> {
    name: &'a str,
    shape: [usize; 4],
    datatype: &'static str,
    data: &'a [f32],
}

#[derive(Serialize)]
struct Wanted<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Request<'a> {
    inputs: [InputTensor<'a>; 1],
    outputs: Vec<Wanted<'a>>,
}

/// An output tensor as read: its shape and values.
pub(crate) type OutputTensor = (Vec<i64>, Vec<f32>);

#[derive(Deserialize)]
struct Response {
    outputs: Vec<OutTensor>,
}

#[derive(Deserialize)]
struct OutTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

pub(crate) struct KServe {
    pub remote: Remote,
    /// `{url}/v2/models/{model}[/versions/{v}]`
    base: String,
    key: Option<String>,
    agent: ureq::Agent,
    retry: Retry,
    limit: u64,
    stats: Arc<ModelStats>,
}

impl KServe {
    pub(super) fn new(name: &str, spec: &RemoteSpec, stats: Arc<ModelStats>) -> KServe {
        let model = spec.model.clone().unwrap_or_else(|| name.to_string());
        let mut base = format!("{}/v2/models/{model}", spec.url.trim_end_matches('/'));
        if let Some(v) = &spec.version {
            base.push_str(&format!("/versions/{v}"));
        }
        KServe {
            remote: Remote {
                model: name.to_string(),
                endpoint: format!("{base}/infer"),
                breaker: Breaker::new(spec.breaker),
            },
            base,
            key: spec.api_key_env.as_ref().and_then(|v| std::env::var(v).ok()),
            agent: agent(Duration::from_millis(spec.timeout_ms.min(2000))),
            retry: Retry {
                timeout: Duration::from_millis(spec.timeout_ms),
                retries: spec.retries,
                backoff: Duration::from_millis(spec.backoff_ms),
            },
            limit: spec.max_response_mb << 20,
            stats,
        }
    }

    fn authorised<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.key {
            Some(k) => req.header("Authorization", &format!("Bearer {k}")),
            None => req,
        }
    }

    /// The model's metadata (one attempt, at load).
    pub(super) fn metadata(&self, timeout: Duration) -> Result<Metadata, String> {
        let req = self.authorised(self.agent.get(&self.base).config().timeout_global(Some(timeout)).build());
        let mut resp = req.call().map_err(|e| format!("{}: {}", self.base, Failure::transport(&e).reason))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| format!("{}: {e}", self.base))?;
        if status != 200 {
            return Err(format!("{}: {}", self.base, Failure::status(status, &text).reason));
        }
        serde_json::from_str(&text).map_err(|e| format!("{}: metadata is not KServe v2 JSON: {e}", self.base))
    }

    /// Runs the model on one f32 input; returns the named outputs (shape, values) in order.
    pub(super) fn infer(
        &self,
        input: &str,
        shape: [usize; 4],
        data: &[f32],
        outputs: &[&str],
        deadline: Instant,
    ) -> Result<Vec<OutputTensor>, EngineError> {
        let prepare = || {
            let body = Request {
                inputs: [InputTensor { name: input, shape, datatype: "FP32", data }],
                outputs: outputs.iter().map(|name| Wanted { name }).collect(),
            };
            serde_json::to_vec(&body).map_err(|e| EngineError::InvalidInput(e.to_string()))
        };
        self.remote
            .call(&self.stats, &self.retry, deadline, prepare, |body, timeout| self.attempt(body, outputs, timeout))
    }

    fn attempt(&self, body: &[u8], outputs: &[&str], timeout: Duration) -> Result<Vec<OutputTensor>, Failure> {
        let req = self.agent.post(&self.remote.endpoint).config().timeout_global(Some(timeout)).build();
        let req = self.authorised(req).header("Content-Type", "application/json");
        let mut resp = req.send(body).map_err(|e| Failure::transport(&e))?;
        let status = resp.status().as_u16();
        let text =
            resp.body_mut().with_config().limit(self.limit).read_to_string().map_err(|e| Failure::transport(&e))?;
        if status != 200 {
            return Err(Failure::status(status, &text));
        }
        let r: Response = serde_json::from_str(&text).map_err(|e| Failure {
            reason: format!("malformed JSON: {e}: {}", snippet(&text)),
            server: true,
            timed_out: false,
        })?;
        // a server that answers with the wrong tensors will not answer better on a retry
        let wrong = Failure::answered;
        outputs
            .iter()
            .map(|want| {
                let t = r.outputs.iter().find(|t| t.name == *want).ok_or_else(|| {
                    let got: Vec<&str> = r.outputs.iter().map(|t| t.name.as_str()).collect();
                    wrong(format!("no output {want} in the reply (it has {got:?})"))
                })?;
                if !matches!(t.datatype.as_str(), "FP32" | "FP64" | "FP16") {
                    return Err(wrong(format!("output {want} has datatype {}; expected FP32", t.datatype)));
                }
                let mut values = Vec::new();
                flatten(&t.data, &mut values).map_err(|e| wrong(format!("output {want}: {e}")))?;
                let n: i64 = t.shape.iter().product();
                if t.shape.iter().any(|d| *d < 0) || n as usize != values.len() {
                    return Err(wrong(format!("output {want} has shape {:?} but {} values", t.shape, values.len())));
                }
                Ok((t.shape.clone(), values))
            })
            .collect()
    }
}

/// The numbers of a tensor's `data`, flat or nested.
fn flatten(v: &Value, out: &mut Vec<f32>) -> Result<(), String> {
    match v {
        Value::Number(n) => out.push(n.as_f64().ok_or("a number out of range")? as f32),
        Value::Array(a) => {
            for x in a {
                flatten(x, out)?;
            }
        }
        other => return Err(format!("data holds {other} where numbers belong")),
    }
    Ok(())
}

//! A classifier, embedder or detector served by a KServe v2 server: jobs are batched as for a
//! local model, images are prepared here, the batch goes to the server as one request, and
//! the outputs are read here (head, activation, detector decoding) as for a local file. Its
//! registry settings are `spec::RemoteSpec`; `client` speaks the protocol.

mod client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::decode::Decode;
use crate::detect::check_layout;
use crate::engine::queue::{gather, reply_all};
use crate::engine::{Engine, Job, ModelStats};
use crate::head::Head;
use crate::lifecycle::Launch;
use crate::preprocess::{prepare, Prepared};
use crate::spec::{ModelKind, ModelSpec};
use crate::{EngineError, LoadError};
use client::{KServe, Metadata};

/// Starts the model's workers, sharing one client (its breaker and connections); each reads
/// and checks the server's metadata as it opens.
pub(crate) fn start(l: &mut Launch<'_>) -> Result<(), LoadError> {
    let head = crate::head::of_model(&l.spec)?;
    let Some(r) = &l.spec.remote else {
        return Err(LoadError::Spec { model: l.spec.name.clone(), reason: "no remote table".into() });
    };
    let client = Arc::new(KServe::new(&l.spec.name, r, l.stats.clone()));
    let (spec, stats) = (l.spec.clone(), l.stats.clone());
    l.workers(|| {
        let (client, spec, stats, head) = (client.clone(), spec.clone(), stats.clone(), head.clone());
        move || RemoteWorker::open(client.clone(), &spec, head.clone(), &stats)
    })
}

struct RemoteWorker {
    client: Arc<KServe>,
    spec: Arc<ModelSpec>,
    head: Option<Arc<Head>>,
    stats: Arc<ModelStats>,
    input_name: String,
    output_name: String,
    logits_name: Option<String>,
    buf: Vec<f32>,
}

/// How long the load-time metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

impl RemoteWorker {
    /// Reads the model's metadata from the server and checks it against the registry (one
    /// image input of the configured size, the output to read, the head's dimension, a
    /// detector's layout): a mismatch, or a server that cannot be reached, refuses the load.
    pub(crate) fn open(
        client: Arc<KServe>,
        spec: &Arc<ModelSpec>,
        head: Option<Arc<Head>>,
        stats: &Arc<ModelStats>,
    ) -> Result<RemoteWorker, LoadError> {
        let err = |reason: String| LoadError::Spec { model: spec.name.clone(), reason };
        let meta = client.metadata(METADATA_TIMEOUT).map_err(|e| err(format!("KServe metadata: {e}")))?;
        let (input_name, output_name) =
            check(&meta, spec).map_err(|e| err(format!("{}: {e}", client.remote.endpoint)))?;
        let dims = |name: &str| meta.outputs.iter().find(|o| o.name == name).map(|o| o.shape.clone());
        if let (Some(h), Some(&dim)) = (&head, dims(&output_name).as_ref().and_then(|s| s.last())) {
            if dim > 0 && dim as usize != h.input_dim {
                return Err(err(format!(
                    "head expects {} features; the server's output {output_name} has {dim}",
                    h.input_dim
                )));
            }
        }
        let logits_name = spec.detector.logits.clone().filter(|_| spec.kind == ModelKind::Detector);
        if spec.kind == ModelKind::Detector {
            let outs: Vec<(String, Vec<i64>)> =
                meta.outputs.iter().map(|o| (o.name.clone(), o.shape.clone())).collect();
            check_layout(&spec.detector, &outs, &output_name, spec.labels.len()).map_err(err)?;
        }
        Ok(RemoteWorker {
            client,
            spec: spec.clone(),
            head,
            stats: stats.clone(),
            input_name,
            output_name,
            logits_name,
            buf: Vec::new(),
        })
    }

    fn run_batch(&mut self, jobs: Vec<Job>) {
        let started = Instant::now();
        let (h, w) = (self.spec.input.height as usize, self.spec.input.width as usize);
        let elems = 3 * h * w;
        self.buf.clear();
        self.buf.resize(elems * jobs.len(), 0.0);
        let prepared: Vec<Prepared> = jobs
            .iter()
            .zip(self.buf.chunks_exact_mut(elems))
            .map(|(j, slot)| prepare(j.input.image(), &self.spec.input, slot))
            .collect();
        let deadline = jobs.iter().map(|j| j.deadline).min().unwrap_or(started);
        let mut wanted = vec![self.output_name.as_str()];
        wanted.extend(self.logits_name.as_deref());
        let result = self.client.infer(&self.input_name, [jobs.len(), 3, h, w], &self.buf, &wanted, deadline).and_then(
            |mut outs| {
                let logits = if outs.len() > 1 { outs.pop() } else { None };
                let (shape, data) = outs.pop().ok_or_else(|| EngineError::Inference {
                    model: self.spec.name.clone(),
                    reason: "the server returned no output".into(),
                })?;
                let how = Decode { spec: &self.spec, head: self.head.as_deref(), output_name: &self.output_name };
                how.outputs(&shape, &data, &jobs, &prepared, logits.as_ref())
            },
        );
        reply_all(jobs, result, started, &self.stats);
    }
}

impl Engine for RemoteWorker {
    fn serve(&mut self, first: Job, rx: &Receiver<Job>) {
        let live = gather(first, rx, &self.spec, &self.stats);
        if !live.is_empty() {
            self.run_batch(live);
        }
    }
}

/// The input and output names to use, checked against the server's metadata.
fn check(meta: &Metadata, spec: &ModelSpec) -> Result<(String, String), String> {
    let [input] = meta.inputs.as_slice() else {
        return Err(format!("expected one input, the server's model has {}", meta.inputs.len()));
    };
    let want = [3, spec.input.height as i64, spec.input.width as i64];
    if input.shape.len() != 4 || input.shape[1..].iter().zip(want).any(|(&d, w)| d > 0 && d != w) {
        return Err(format!(
            "expected input [N, 3, {}, {}] (the registry's size); the server has {} {:?}",
            want[1], want[2], input.name, input.shape
        ));
    }
    if input.datatype != "FP32" {
        return Err(format!("input {} takes {}; this client sends FP32", input.name, input.datatype));
    }
    // batches go as gathered (1 to max_batch rows): a fixed batch dimension fits only 1 = 1
    if input.shape[0] > 0 && !(input.shape[0] == 1 && spec.max_batch == 1) {
        return Err(format!(
            "input batch dimension is fixed at {}; a remote model needs a dynamic batch (or a batch of 1 with max_batch = 1)",
            input.shape[0]
        ));
    }
    let names: Vec<&str> = meta.outputs.iter().map(|o| o.name.as_str()).collect();
    let output = match &spec.output {
        Some(o) if names.contains(&o.as_str()) => o.clone(),
        Some(o) => return Err(format!("expected an output named {o}; the server's model has {names:?}")),
        None => names.first().ok_or("the server's model has no output")?.to_string(),
    };
    Ok((input.name.clone(), output))
}

//! The `vlm` engine kind: a vision-language model behind an OpenAI-compatible chat-completions
//! endpoint, reached by `ask`. Each worker thread holds one call in flight, so `workers` is the
//! model's concurrency limit; the queue in front of them is the one every kind has. Its
//! registry settings are `spec::vlm`.

mod answer;
mod client;

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::engine::queue::{reply_all, take_one};
use crate::engine::{Engine, Job, JobInput, ModelStats, Output};
use crate::lifecycle::Launch;
use crate::{EngineError, LoadError};

use client::Client;

/// Starts the model's workers, sharing one client (its breaker and connections).
pub(crate) fn start(l: &mut Launch<'_>) -> Result<(), LoadError> {
    let Some(v) = &l.spec.vlm else {
        return Err(LoadError::Spec { model: l.spec.name.clone(), reason: "no vlm table".into() });
    };
    let client = Arc::new(Client::new(&l.spec.name, v, l.stats.clone()));
    let stats = l.stats.clone();
    l.workers(|| {
        let (client, stats) = (client.clone(), stats.clone());
        move || Ok(VlmWorker { client: client.clone(), stats: stats.clone() })
    })
}

struct VlmWorker {
    client: Arc<Client>,
    stats: Arc<ModelStats>,
}

impl Engine for VlmWorker {
    fn serve(&mut self, job: Job, _rx: &Receiver<Job>) {
        let Some(job) = take_one(job, &self.stats) else { return };
        let started = Instant::now();
        let output = match &job.input {
            JobInput::Ask(img, prompt) => self.client.ask(img, prompt, job.deadline).map(Output::Answer),
            _ => Err(EngineError::InvalidInput(format!("model {} only answers questions (ask)", self.client.name()))),
        };
        reply_all(vec![job], output.map(|o| vec![o]), started, &self.stats);
    }
}

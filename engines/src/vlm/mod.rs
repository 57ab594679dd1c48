//! The `vlm` engine kind: a vision-language model behind an OpenAI-compatible chat-completions
//! endpoint, reached by `ask`. Each worker thread holds one call in flight, so `workers` is the
//! model's concurrency limit; the queue in front of them is the one every kind has.

mod answer;
mod client;
mod settings;

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

pub use settings::VlmSpec;

use crate::engine::{Engine, Job, JobInput, ModelStats, Output};
use crate::EngineError;

pub(crate) use client::Client;

pub(crate) struct VlmWorker {
    pub client: Arc<Client>,
    pub stats: Arc<ModelStats>,
}

impl Engine for VlmWorker {
    fn serve(&mut self, job: Job, _rx: &Receiver<Job>) {
        let Some(job) = crate::worker::take_one(job, &self.stats) else { return };
        let started = Instant::now();
        let output = match &job.input {
            JobInput::Ask(img, prompt) => self.client.ask(img, prompt, job.deadline).map(Output::Answer),
            _ => Err(EngineError::InvalidInput(format!("model {} only answers questions (ask)", self.client.name()))),
        };
        crate::worker::reply_all(vec![job], output.map(|o| vec![o]), started, &self.stats);
    }
}

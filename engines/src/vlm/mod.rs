//! The `vlm` engine kind: a vision-language model behind an OpenAI-compatible chat-completions
//! endpoint, reached by `ask`. Each worker thread holds one call in flight, so `workers` is the
//! model's concurrency limit; the queue in front of them is the one every kind has.

mod answer;
mod client;
mod settings;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

pub use settings::VlmSpec;

use crate::engine::{Engine, Job, JobInput, ModelStats, Output, Reply};
use crate::EngineError;

pub(crate) use client::Client;

pub(crate) struct VlmWorker {
    pub client: Arc<Client>,
    pub stats: Arc<ModelStats>,
}

impl Engine for VlmWorker {
    fn serve(&mut self, job: Job, _rx: &Receiver<Job>) {
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        let queued = job.enqueued.elapsed();
        if job.deadline <= Instant::now() {
            self.stats.expired.fetch_add(1, Ordering::Relaxed);
            let _ = job.reply.send(Reply {
                output: Err(EngineError::DeadlineExceeded),
                compute: Duration::ZERO,
                queued,
                batch: 0,
            });
            return;
        }
        let started = Instant::now();
        let output = match &job.input {
            JobInput::Ask(img, prompt) => self.client.ask(img, prompt, job.deadline).map(Output::Answer),
            _ => Err(EngineError::InvalidInput(format!("model {} only answers questions (ask)", self.client.name()))),
        };
        let took = started.elapsed();
        match &output {
            Ok(_) => self.stats.record(1, took),
            Err(_) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = job.reply.send(Reply { output, compute: took, queued, batch: 1 });
    }
}

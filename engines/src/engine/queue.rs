//! The queue side every engine kind shares: gathering a batch from a model's queue, counting
//! jobs off it, answering the ones already late, and sending each job its reply.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::{Job, ModelStats, Output, Reply};
use crate::spec::ModelSpec;
use crate::EngineError;

/// Sends each job of a batch its result (or the batch's error) and counts the run.
pub(crate) fn reply_all(
    jobs: Vec<Job>,
    result: Result<Vec<Output>, EngineError>,
    started: Instant,
    stats: &ModelStats,
) {
    let (n, compute) = (jobs.len(), started.elapsed());
    stats.record(n, compute);
    match result {
        Ok(outputs) => {
            for (j, o) in jobs.into_iter().zip(outputs) {
                let queued = started - j.enqueued;
                let _ = j.reply.send(Reply { output: Ok(o), compute, queued, batch: n });
            }
        }
        Err(e) => {
            stats.failures.fetch_add(n as u64, Ordering::Relaxed);
            for j in jobs {
                let queued = started - j.enqueued;
                let _ = j.reply.send(Reply { output: Err(e.clone()), compute, queued, batch: n });
            }
        }
    }
}

/// Takes `first` and gathers more from `rx` until the batch is full, `max_delay_us` has passed
/// or the earliest deadline in hand would be missed; answers the jobs already late; returns
/// the live ones.
pub(crate) fn gather(first: Job, rx: &Receiver<Job>, spec: &ModelSpec, stats: &ModelStats) -> Vec<Job> {
    let max_delay = Duration::from_micros(spec.max_delay_us);
    let mut batch = vec![first];
    let mut until = Instant::now() + max_delay;
    while batch.len() < spec.max_batch {
        until = until.min(batch.iter().map(|j| j.deadline).min().unwrap_or(until));
        match rx.recv_deadline(until) {
            Ok(j) => batch.push(j),
            Err(_) => break,
        }
    }
    settle(batch, stats)
}

/// A gathered batch counted off the queue: the jobs already late are answered, the live ones
/// returned.
pub(crate) fn settle(batch: Vec<Job>, stats: &ModelStats) -> Vec<Job> {
    stats.queued.fetch_sub(batch.len() as i64, Ordering::Relaxed);
    let now = Instant::now();
    let (live, late): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.deadline > now);
    for j in late {
        expire(j, stats, now);
    }
    live
}

/// `gather` for engines that serve jobs one at a time (OCR, a VLM): the job counted off the
/// queue, or answered at once when its deadline has passed.
pub(crate) fn take_one(job: Job, stats: &ModelStats) -> Option<Job> {
    stats.queued.fetch_sub(1, Ordering::Relaxed);
    let now = Instant::now();
    if job.deadline > now {
        return Some(job);
    }
    expire(job, stats, now);
    None
}

/// Answers a job that waited past its deadline without running it.
pub(crate) fn expire(j: Job, stats: &ModelStats, now: Instant) {
    stats.expired.fetch_add(1, Ordering::Relaxed);
    let _ = j.reply.send(Reply {
        output: Err(EngineError::DeadlineExceeded),
        compute: Duration::ZERO,
        queued: now - j.enqueued,
        batch: 0,
    });
}

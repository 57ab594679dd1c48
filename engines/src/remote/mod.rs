//! What every remote engine shares (a VLM endpoint, a KServe v2 server): the circuit breaker,
//! and one call made with per-attempt timeouts inside the request's budget and retries with
//! backoff only while the budget allows another try.

mod breaker;
pub(crate) mod kserve;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(crate) use breaker::Breaker;
use breaker::Ticket;

use crate::engine::ModelStats;
use crate::EngineError;

/// The least time worth starting an attempt with.
const MIN_ATTEMPT: Duration = Duration::from_millis(20);

/// How one attempt failed, and whether another may help.
pub(crate) struct Failure {
    pub reason: String,
    /// The server (or the way to it) failed: counts against the breaker and may be retried.
    pub server: bool,
    /// The attempt ran out of time.
    pub timed_out: bool,
}

impl Failure {
    /// A transport failure (refused, lost, timed out): the server's side.
    pub(crate) fn transport(e: &ureq::Error) -> Failure {
        let reason = match e {
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            ureq::Error::ConnectionFailed => "connection refused or failed".into(),
            ureq::Error::HostNotFound => "host not found".into(),
            ureq::Error::BodyExceedsLimit(n) => format!("response larger than {n} bytes"),
            ureq::Error::Io(io) => format!("connection lost: {io}"),
            other => other.to_string(),
        };
        Failure { reason, server: true, timed_out: matches!(e, ureq::Error::Timeout(_)) }
    }

    /// A reply that will not get better by retrying (the wrong tensors, no answer text).
    pub(crate) fn answered(reason: String) -> Failure {
        Failure { reason, server: false, timed_out: false }
    }

    /// A non-200 status: 408, 429 and 5xx are the server's state; other 4xx are this request
    /// (or the configuration) and will not get better by retrying.
    pub(crate) fn status(status: u16, body: &str) -> Failure {
        let server = status == 408 || status == 429 || status >= 500;
        Failure { reason: format!("HTTP {status}: {}", snippet(body)), server, timed_out: false }
    }
}

/// How hard to try.
pub(crate) struct Retry {
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
}

/// A remote model's endpoint with its breaker: names the model and the server in every error.
pub(crate) struct Remote {
    pub model: String,
    pub endpoint: String,
    pub breaker: Breaker,
}

impl Remote {
    /// Builds the request with `prepare` once the breaker lets the call through (an open
    /// circuit costs no encoding), then runs `attempt` (given the request and its timeout)
    /// until it succeeds, fails for good, or the budget (up to `deadline`) leaves no room for
    /// another try.
    pub(crate) fn call<T, B>(
        &self,
        stats: &ModelStats,
        retry: &Retry,
        deadline: Instant,
        prepare: impl FnOnce() -> Result<B, EngineError>,
        mut attempt: impl FnMut(&B, Duration) -> Result<T, Failure>,
    ) -> Result<T, EngineError> {
        let ticket = match self.breaker.admit() {
            Ok(t) => t,
            Err(open) => {
                stats.fast_failures.fetch_add(1, Ordering::Relaxed);
                return Err(EngineError::Unavailable {
                    model: self.model.clone(),
                    reason: format!(
                        "{} is considered down (circuit open; next probe in {} ms)",
                        self.endpoint,
                        open.0.as_millis()
                    ),
                });
            }
        };
        let request = match prepare() {
            Ok(r) => r,
            Err(e) => {
                // the request could not be built: no verdict on the server
                self.breaker.abandon(ticket);
                return Err(e);
            }
        };
        let mut held = ticket;
        let mut backoff = retry.backoff;
        let mut tries = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < MIN_ATTEMPT {
                self.breaker.abandon(held);
                return Err(EngineError::DeadlineExceeded);
            }
            let timeout = left.min(retry.timeout);
            let failure = match attempt(&request, timeout) {
                Ok(v) => {
                    self.breaker.success(stats);
                    return Ok(v);
                }
                Err(f) => f,
            };
            // out of the request's time, not the server's: no verdict on the server
            if failure.timed_out && timeout < retry.timeout {
                self.breaker.abandon(held);
                return Err(EngineError::DeadlineExceeded);
            }
            if !failure.server {
                // the server answered, if not usefully: it is up
                self.breaker.success(stats);
            } else if self.breaker.failure(stats) {
                tracing::warn!(model = %self.model, endpoint = %self.endpoint, reason = %failure.reason, "circuit opened");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let again = failure.server && tries < retry.retries && left >= backoff + MIN_ATTEMPT;
            match again.then(|| self.breaker.admit()) {
                Some(Ok(t)) => held = Ticket { probe: held.probe || t.probe },
                _ => {
                    return Err(EngineError::Inference {
                        model: self.model.clone(),
                        reason: format!("{}: {}", self.endpoint, failure.reason),
                    });
                }
            }
            std::thread::sleep(backoff);
            backoff *= 2;
            tries += 1;
            stats.retries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(crate) fn snippet(s: &str) -> String {
    let t: String = s.chars().take(200).collect();
    if t.len() < s.len() {
        format!("{t}…")
    } else {
        t
    }
}

/// An agent for one remote model: status codes are answers, not errors.
pub(crate) fn agent(connect: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(connect))
        .max_idle_connections_per_host(64)
        .build()
        .into()
}

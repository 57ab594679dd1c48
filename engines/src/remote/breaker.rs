//! A circuit breaker per remote model, shared by its workers: after `failures` failed calls in
//! a row the endpoint is considered down for `open_ms`, during which calls fail at once; then
//! one call at a time is let through as a probe, and its success closes the circuit.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::engine::ModelStats;
use crate::spec::BreakerSpec;

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is in flight; everyone else fails fast until it reports.
    Probing,
}

pub(crate) struct Breaker {
    spec: BreakerSpec,
    state: Mutex<State>,
}

/// Why a call was not let through: how long until the next probe.
pub(crate) struct Open(pub Duration);

/// A call let through; `probe` when it is the one call that tests an open circuit (only it may
/// give the probe slot back with [`Breaker::abandon`]).
#[derive(Clone, Copy)]
pub(crate) struct Ticket {
    pub probe: bool,
}

impl Breaker {
    pub(crate) fn new(spec: BreakerSpec) -> Breaker {
        Breaker { spec, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a call through, or says the circuit is open.
    pub(crate) fn admit(&self) -> Result<Ticket, Open> {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => Ok(Ticket { probe: false }),
            State::Open { until } if Instant::now() >= until => {
                *s = State::Probing;
                Ok(Ticket { probe: true })
            }
            State::Open { until } => Err(Open(until.saturating_duration_since(Instant::now()))),
            State::Probing => Err(Open(Duration::ZERO)),
        }
    }

    pub(crate) fn success(&self, stats: &ModelStats) {
        let mut s = self.lock();
        if !matches!(*s, State::Closed { .. }) {
            stats.breaker_open.store(0, Ordering::Relaxed);
            tracing::info!("circuit closed: the endpoint answers again");
        }
        *s = State::Closed { failures: 0 };
    }

    /// Records a failed call; returns true when this failure opened the circuit.
    pub(crate) fn failure(&self, stats: &ModelStats) -> bool {
        let mut s = self.lock();
        let open = match *s {
            State::Closed { failures } => failures + 1 >= self.spec.failures,
            // a failed probe, or a call admitted before the circuit opened
            State::Probing | State::Open { .. } => true,
        };
        *s = if open {
            stats.breaker_open.store(1, Ordering::Relaxed);
            State::Open { until: Instant::now() + Duration::from_millis(self.spec.open_ms) }
        } else {
            match *s {
                State::Closed { failures } => State::Closed { failures: failures + 1 },
                _ => unreachable!("only a closed circuit stays closed"),
            }
        };
        open
    }

    /// A probe that ended without a verdict on the server (the request's budget ran out
    /// first) frees the probe slot without closing or reopening the circuit. Only the
    /// probe's own ticket may.
    pub(crate) fn abandon(&self, t: Ticket) {
        let mut s = self.lock();
        if t.probe && matches!(*s, State::Probing) {
            *s = State::Open { until: Instant::now() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_fails_fast_and_probes_back() {
        let stats = ModelStats::default();
        let b = Breaker::new(BreakerSpec { failures: 3, open_ms: 30 });
        assert!(!b.failure(&stats) && !b.failure(&stats));
        b.success(&stats); // a success resets the count
        assert!(!b.failure(&stats) && !b.failure(&stats));
        assert!(b.failure(&stats), "the third failure in a row opens");
        assert_eq!(stats.breaker_open.load(Ordering::Relaxed), 1);
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok_and(|t| t.probe), "one probe after open_ms");
        assert!(b.admit().is_err(), "only one probe at a time");
        assert!(b.failure(&stats), "a failed probe reopens");
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok());
        b.success(&stats);
        assert_eq!(stats.breaker_open.load(Ordering::Relaxed), 0);
        assert!(b.admit().is_ok_and(|t| !t.probe) && b.admit().is_ok(), "closed again");
        // a non-probe cannot give back a probe slot it does not hold
        assert!(!b.failure(&stats) && !b.failure(&stats) && b.failure(&stats), "three in a row open it again");
        std::thread::sleep(Duration::from_millis(40));
        let probe = b.admit().ok().expect("the probe");
        b.abandon(Ticket { probe: false });
        assert!(b.admit().is_err(), "still probing");
        b.abandon(probe);
        assert!(b.admit().is_ok_and(|t| t.probe), "the slot is free again");
    }
}

//! Policies are called straight from a request's task, on a tokio worker thread (server/front.rs):
//! an answer from the caches then costs no thread hand-off. What blocks the thread goes through
//! [`blocking`], which first tells tokio (`block_in_place`: the worker's other tasks move to
//! another thread while this one waits): a wait for a model, an instantiation, and every call
//! of a heavy component (its calls' average compute past [`HEAVY_CALL`]).

use std::cell::Cell;
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};

/// A component whose calls compute longer than this on average (waits for models not counted)
/// is heavy: its calls leave the worker thread first, as a model wait does.
pub(crate) const HEAVY_CALL: Duration = Duration::from_millis(1);

thread_local! {
    /// Time this thread has spent in `blocking`.
    static WAITED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Runs `f`, which blocks this thread: on a worker of tokio's multi-threaded runtime, hands the
/// worker's other tasks over first; anywhere else (a reload thread, a shadow call's blocking
/// thread, an offline tool) it just runs.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let started = Instant::now();
    let r = match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    };
    WAITED.with(|w| w.set(w.get() + started.elapsed()));
    r
}

/// Time this thread has spent in [`blocking`] so far: a call's own compute is its wall time
/// less the growth of this.
pub(crate) fn waited() -> Duration {
    WAITED.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_counted_on_a_worker_and_elsewhere() {
        let before = waited();
        blocking(|| std::thread::sleep(Duration::from_millis(5)));
        assert!(waited() - before >= Duration::from_millis(5));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
        let on_worker = rt.block_on(async {
            tokio::spawn(async {
                let before = waited();
                // on a worker: block_in_place, which a current-thread runtime would refuse
                blocking(|| std::thread::sleep(Duration::from_millis(5)));
                waited() - before
            })
            .await
            .expect("task")
        });
        assert!(on_worker >= Duration::from_millis(5));
        let single = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        assert_eq!(single.block_on(async { blocking(|| 7) }), 7, "a current-thread runtime just runs it");
    }
}

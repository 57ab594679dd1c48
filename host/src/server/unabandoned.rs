//! A request's policy must run to its end even when the client hangs up (hyper then drops the
//! request's future): its answer is counted and logged, and a model result other hotkeys wait
//! for is finished rather than failed. Spawning every policy as a task of its own would do it
//! but wakes a second worker per request; this wrapper runs the future in place and only when
//! it is dropped unfinished hands the rest to a new task.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// `fut`, awaited in place, finished on a task of its own if dropped before it completes.
pub(crate) fn unabandoned<F>(fut: F) -> Unabandoned<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Unabandoned(Some(Box::pin(fut)))
}

pub(crate) struct Unabandoned<F: Future + Send + 'static>(Option<Pin<Box<F>>>)
where
    F::Output: Send + 'static;

impl<F> Future for Unabandoned<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(fut) = self.0.as_mut() else { panic!("Unabandoned polled after it completed") };
        let out = fut.as_mut().poll(cx);
        if out.is_ready() {
            self.0 = None;
        }
        out
    }
}

impl<F> Drop for Unabandoned<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let (Some(fut), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(fut);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_dropped_future_is_finished_and_an_awaited_one_runs_in_place() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().expect("rt");
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        rt.block_on(async move {
            let slow = unabandoned(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                d.store(true, Ordering::SeqCst);
            });
            // the caller gives up first, as hyper does when a client hangs up
            assert!(tokio::time::timeout(Duration::from_millis(5), slow).await.is_err());
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        assert!(done.load(Ordering::SeqCst), "finished after its caller dropped it");
        assert_eq!(rt.block_on(unabandoned(async { 7 })), 7);
    }
}

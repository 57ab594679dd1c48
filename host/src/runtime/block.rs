//! Components are called async (pool.rs); the server awaits them on the request's task. Callers
//! that are not async — a reload binding a component, a load-time dry run, the offline tools —
//! wait here for the same futures: on a thread of tokio's multi-threaded runtime through its
//! handle (a worker first hands its other tasks over), anywhere else on a current-thread runtime
//! of this thread's own, with timers (a model call's deadline is a timer).

use std::future::Future;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

thread_local! {
    static LOCAL: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread tokio runtime");
}

/// Runs `f` to completion on this thread.
pub fn block_on<F: Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    match Handle::try_current() {
        // a worker hands its tasks over; a blocking-pool thread just waits
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| h.block_on(f)),
        // inside a current-thread runtime this thread cannot wait: another thread does
        Ok(_) => std::thread::scope(|s| s.spawn(|| LOCAL.with(|rt| rt.block_on(f))).join())
            .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        Err(_) => LOCAL.with(|rt| rt.block_on(f)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn timed() -> u32 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        7
    }

    #[test]
    fn waits_outside_any_runtime_on_a_worker_and_inside_a_current_thread_runtime() {
        assert_eq!(block_on(timed()), 7, "no runtime: this thread's own");
        let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().expect("rt");
        let on_worker = multi.block_on(async { tokio::spawn(async { block_on(timed()) }).await.expect("task") });
        assert_eq!(on_worker, 7, "a worker of the multi-threaded runtime");
        let blocking = multi.block_on(async { tokio::task::spawn_blocking(|| block_on(timed())).await.expect("task") });
        assert_eq!(blocking, 7, "its blocking pool");
        let single = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("rt");
        assert_eq!(single.block_on(async { block_on(timed()) }), 7, "a current-thread runtime");
    }
}

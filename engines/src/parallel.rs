//! A small process-wide pool of threads for the host-side work around a big batch: writing a GPU
//! batch's pixels into pinned staging, and turning a big batch's output rows into answers. Both
//! sit on a batch's critical path, between runs the device does not overlap; spawning threads
//! for each batch cost tens of microseconds per thread there. The pool is apart from ONNX
//! Runtime's threads and is built on first use: a process that never has a big batch never
//! starts it.

use std::sync::OnceLock;

/// The variable that sets the pool's size.
const THREADS_VAR: &str = "CASCADE_HOST_THREADS";
/// Most threads the pool is given, by default or asked.
const MAX_THREADS: usize = 64;

/// Threads of the pool (and so how many parts a batch's staging is split into):
/// `CASCADE_HOST_THREADS` when it is a number from 1 to 64, else half the cores, 1 to 8.
fn threads() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let asked = std::env::var(THREADS_VAR).ok();
        let (n, refused) = choose(cores, asked.as_deref());
        if let Some(v) = refused {
            tracing::warn!(var = THREADS_VAR, value = %v, threads = n, "not a number of threads from 1 to 64; using the default");
        }
        n
    })
}

/// The pool size for `cores` and the variable's value, and the value when it was refused.
fn choose(cores: usize, asked: Option<&str>) -> (usize, Option<String>) {
    let default = (cores / 2).clamp(1, 8);
    match asked.map(str::trim) {
        None | Some("") => (default, None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => (n, None),
            _ => (default, Some(v.to_string())),
        },
    }
}

/// The pool, or `None` where one thread is all there is (or the threads could not be started:
/// the callers then do the work on their own thread, as they would for a small batch).
pub(crate) fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = threads();
        if n < 2 {
            return None;
        }
        match rayon::ThreadPoolBuilder::new().num_threads(n).thread_name(|i| format!("cascade-host-{i}")).build() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "the host thread pool could not start; big batches are staged and finished on one thread");
                None
            }
        }
    })
    .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_is_half_the_cores_unless_asked() {
        assert_eq!(choose(16, None), (8, None));
        assert_eq!(choose(2, None), (1, None));
        assert_eq!(choose(1, None), (1, None));
        assert_eq!(choose(128, None), (8, None), "at most 8 by default");
        assert_eq!(choose(16, Some(" 12 ")), (12, None));
        assert_eq!(choose(2, Some("4")), (4, None), "asked for, more than the cores");
        for bad in ["0", "65", "-1", "eight"] {
            assert_eq!(choose(16, Some(bad)), (8, Some(bad.to_string())), "{bad}");
        }
    }
}

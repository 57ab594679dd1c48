//! Accepting connections and routing each request to its door: a synapse path to the axon,
//! `/admin` to the admin API, the rest to the HTTP API. A hotkey's own axon port serves the
//! synapse routes and nothing else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::http::{self, Resp};
use super::state::Server;
use super::{admin, axon};

/// `accept` failures, logged at most once a second with how many there were.
#[derive(Default)]
struct AcceptFailures {
    since: Option<Instant>,
    count: u64,
}

impl AcceptFailures {
    fn note(&mut self, e: &std::io::Error) {
        self.count += 1;
        if self.since.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(error = %e, failures = self.count, "accept failed");
            self.since = Some(Instant::now());
            self.count = 0;
        }
    }
}

impl Server {
    /// Accepts connections until the process ends. On a `pinned` listener every subnet
    /// request is for that hotkey.
    /// Open connections are capped (`connections`, shared by every listener): past the cap,
    /// new ones wait in the kernel's queue instead of failing `accept` for everyone once the
    /// process runs out of file descriptors.
    pub async fn run(self: Arc<Self>, listener: TcpListener, pinned: Option<String>) -> std::io::Result<()> {
        let mut failures = AcceptFailures::default();
        // this listener's own cap: a flood of it leaves slots to the others
        let listeners = self.listeners.load(std::sync::atomic::Ordering::SeqCst);
        let mine = Arc::new(tokio::sync::Semaphore::new(super::conns::listener_cap(self.max_connections, listeners)));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut stop = self.stopping.subscribe();
        loop {
            if *stop.borrow() {
                break;
            }
            let own_slot = tokio::select! {
                s = mine.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
                _ = stop.changed() => break,
            };
            let slot = tokio::select! {
                s = self.connections.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
                _ = stop.changed() => break,
            };
            let (stream, peer): (_, SocketAddr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        failures.note(&e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            // one address holding its cap: closed at once, its slots stay with the others
            let Some(ip_slot) = self.per_ip.take(peer.ip()) else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let first_byte = self.first_byte_timeout;
            let me = self.clone();
            let timeout = self.read_timeout;
            let pinned = pinned.clone();
            let svc = service_fn(move |req| {
                let (me, pinned) = (me.clone(), pinned.clone());
                async move { Ok::<_, Infallible>(me.handle(req, peer, pinned.as_deref()).await) }
            });
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                // a connection that sends nothing is closed well before the header timeout
                // that protects one mid-request
                let mut one = [0u8; 1];
                if !matches!(tokio::time::timeout(first_byte, stream.peek(&mut one)).await, Ok(Ok(1..))) {
                    drop((slot, own_slot, ip_slot));
                    return;
                }
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(timeout)
                    .serve_connection(TokioIo::new(stream), svc);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, "connection ended");
                }
                drop((slot, own_slot, ip_slot));
            });
        }
        // stop accepting, let the requests in flight finish (idle keep-alive connections are
        // closed), up to the drain limit
        drop(listener);
        let open = graceful.count();
        match tokio::time::timeout(self.drain, graceful.shutdown()).await {
            Ok(()) => tracing::info!(connections = open, "drained"),
            Err(_) => tracing::warn!(
                limit_s = self.drain.as_secs_f64(),
                "drain limit reached; connections still open were cut"
            ),
        }
        Ok(())
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr, pinned: Option<&str>) -> Resp {
        let path = req.uri().path().to_string();
        if axon::is_synapse_path(&path) {
            return axon::handle(self, req, pinned).await;
        }
        if pinned.is_some() {
            // a hotkey's own (public) axon port serves the synapse routes and nothing else:
            // not the HTTP API, not the metrics, not the admin API
            return axon::not_found(&path);
        }
        if path == "/admin" || path.starts_with("/admin/") {
            return match admin::handle(self, &req, peer) {
                Ok(r) => r,
                Err(r) => http::refusal(r),
            };
        }
        if (path == "/metrics" || path == "/healthz") && admin::rebinding(&req, peer) {
            return http::refusal(super::ingress::Refusal::new(
                hyper::StatusCode::FORBIDDEN,
                "foreign-host",
                "a local request naming another host (DNS rebinding?): use localhost or an IP address",
            ));
        }
        http::handle(self, req, &path).await
    }
}

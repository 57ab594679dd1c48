//! `cascade serve`: every hotkey of the policies folder over HTTP (and its own axon port
//! where one is set), reloaded live from the watched folders and on SIGHUP, drained on SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cascade_host::load;
use cascade_host::reload::Reloader;
use cascade_host::runtime::cache;
use cascade_host::server::{decoded, IngressLimits, Server, Serving};
use clap::Args;
use parking_lot::Mutex;

use super::SourceArgs;

#[derive(Args)]
pub struct ServeCommand {
    /// Address of the HTTP API, the status page and the shared axon port (0.0.0.0:PORT to serve
    /// validators; a hotkey's own `axon.listen` opens a port of its own).
    #[arg(long, default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    #[command(flatten)]
    src: SourceArgs,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Largest image width or height.
    #[arg(long, default_value_t = 8192)]
    max_side: u32,
    /// Largest image area in pixels.
    #[arg(long, default_value_t = 40_000_000)]
    max_pixels: u64,
    /// Seconds a client may take to send headers and body.
    #[arg(long, default_value_t = 10)]
    read_timeout_s: u64,
    /// Compiled components are cached here (default: `target/component-cache` beside the binary).
    #[arg(long)]
    compile_cache: Option<PathBuf>,
    /// Do not watch the folders (changes then need a restart).
    #[arg(long)]
    no_watch: bool,
    /// Token that lets non-loopback callers use the admin API.
    #[arg(long, env = "CASCADE_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Open connections served at once (default: 4096, or less if the open-file limit is lower).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Open connections one peer address may hold; more are closed at once (one stranger's idle
    /// sockets cannot take every slot).
    #[arg(long, default_value_t = cascade_host::server::conns::DEFAULT_PER_IP)]
    max_connections_per_ip: usize,
    /// Seconds a new connection may stay silent before it is closed (a request's headers then
    /// have --read-timeout-s).
    #[arg(long, default_value_t = cascade_host::server::conns::DEFAULT_FIRST_BYTE.as_secs_f64())]
    first_byte_timeout_s: f64,
    /// Memory decodes of images over 1 MP may hold until their answers, in MiB (a 40 MP photo
    /// takes 267); past it they wait, then get 503 `busy`. Validators' small images have a
    /// pool of their own and never wait behind them.
    #[arg(long, default_value_t = cascade_host::server::state::DEFAULT_DECODE_MEMORY_MB)]
    decode_memory_mb: u32,
    /// Big JPEGs (over 1 MP) are decoded at 1/2, 1/4 or 1/8 of their size in the DCT, keeping
    /// the short side at this or more (default: twice the largest input of the loaded models,
    /// 960 for the shipped registry); 0 decodes every image in full.
    #[arg(long)]
    decode_min_side: Option<u32>,
    /// Refuse to start when any file is refused (default: serve the hotkeys that load, and list
    /// the refused files on /admin until they are fixed).
    #[arg(long)]
    strict_start: bool,
    /// On SIGTERM or Ctrl-C, seconds to let requests in flight finish before exiting.
    #[arg(long, default_value_t = 20)]
    drain_s: u64,
    /// Memory for primitive results shared across hotkeys and arms (0 turns the cache off).
    #[arg(long, default_value_t = cache::DEFAULT_MB)]
    stage_cache_mb: usize,
    /// How long a shared result stays valid, in seconds.
    #[arg(long, default_value_t = 300)]
    stage_cache_ttl_s: u64,
    /// Memory for decoded request images shared by requests with the same bytes (a challenge
    /// sent to several hotkeys decodes once; 0 turns the sharing off).
    #[arg(long, default_value_t = decoded::DEFAULT_MB)]
    decoded_cache_mb: usize,
}

impl ServeCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let a = self;
        cache::configure(a.stage_cache_mb, Duration::from_secs(a.stage_cache_ttl_s));
        decoded::configure(a.decoded_cache_mb, decoded::DEFAULT_TTL);
        let (rt, src) = a.src.setup()?;
        let cache = a.compile_cache.clone().unwrap_or_else(|| cascade_host::beside_exe("component-cache"));
        let mut reloader = Reloader::new(rt, src.clone(), Some(cache));
        let first = reloader.reload();
        if !first.refused.is_empty() {
            for p in &first.refused {
                eprintln!("problem: {}: {}", p.file.display(), p.reason);
            }
            // a broken file keeps out what it defines, not every other hotkey: the rest are
            // served (the refusals stay listed on /admin until fixed), unless asked otherwise
            if a.strict_start || first.hotkeys.is_empty() {
                anyhow::bail!(
                    "{} problem(s) in {} / {}; nothing served",
                    first.refused.len(),
                    src.policies.display(),
                    src.components.display()
                );
            }
            tracing::warn!(
                refused = first.refused.len(),
                serving = ?first.hotkeys.keys().collect::<Vec<_>>(),
                "starting with the files above refused: what they define is not served until they are fixed (--strict-start refuses to start instead)"
            );
        }
        for p in &first.plugins {
            tracing::info!("component {}", load::describe_plugin(p));
        }
        for w in &first.warnings {
            tracing::warn!("{w}");
        }
        let hotkeys: Vec<String> = first.hotkeys.keys().cloned().collect();
        let pinned: Vec<(String, std::net::SocketAddr)> =
            first.hotkeys.values().filter_map(|h| h.axon.listen.map(|l| (h.name.clone(), l))).collect();
        let serving = Serving {
            models: first.models.clone(),
            chain: first.chain.clone(),
            hotkeys: first.hotkeys.clone(),
            generation: 1,
        };
        let limits = IngressLimits { max_body_bytes: a.max_body_bytes, max_side: a.max_side, max_pixels: a.max_pixels };
        // The common soft limit of 1024 open files is too few for a busy axon: raise it to the
        // hard limit, and keep connections well below whatever it is.
        let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
        let fit = (files.saturating_sub(256) as usize).max(64);
        let max_connections = a.max_connections.unwrap_or(cascade_host::server::DEFAULT_MAX_CONNECTIONS.min(fit));
        if max_connections > fit {
            tracing::warn!(
                max_connections,
                open_files = files,
                "--max-connections is above what the open-file limit allows"
            );
        }
        let mut server = Server::new(serving, limits, Duration::from_secs(a.read_timeout_s), a.admin_token.clone());
        server.set_max_connections(max_connections);
        server.set_max_connections_per_ip(a.max_connections_per_ip);
        server.set_decode_memory_mb(a.decode_memory_mb);
        server.decode_min_side = a.decode_min_side;
        if !(a.first_byte_timeout_s.is_finite() && a.first_byte_timeout_s > 0.0) {
            anyhow::bail!("--first-byte-timeout-s {}: a positive number of seconds", a.first_byte_timeout_s);
        }
        server.first_byte_timeout = Duration::from_secs_f64(a.first_byte_timeout_s);
        server.listeners.store(1 + pinned.len(), std::sync::atomic::Ordering::SeqCst);
        server.drain = Duration::from_secs(a.drain_s);
        let server = Arc::new(server);
        server.status.lock().record(&first);
        let force_snapshot = reloader.force_snapshot_switch();
        let reloader = Arc::new(Mutex::new(Some(reloader)));
        // one reload at a time, from the watcher or from SIGHUP; `None` once serving has stopped
        let reload: Arc<dyn Fn() + Send + Sync> = {
            let (reloader, target) = (reloader.clone(), server.clone());
            Arc::new(move || {
                let snap = reloader.lock().as_mut().map(Reloader::reload);
                if let Some(snap) = snap {
                    target.apply(snap);
                }
            })
        };
        let _ = server.reload_hook.set((reload.clone(), force_snapshot));
        if !a.no_watch {
            cascade_host::reload::watch::spawn(&src.components, &src.policies, reload.clone())
                .context("watching the components and policies folders")?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .max_blocking_threads(256)
            .thread_name("cascade")
            .build()?;
        let stopping = server.clone();
        let served = runtime.block_on(async move {
            let listener =
                tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("binding {}", a.listen))?;
            let addr = listener.local_addr()?;
            tracing::info!(listen = %addr, ?hotkeys, "serving");
            // One machine-readable line on stdout, for scripts and tests that listen on port 0.
            println!("listening on http://{addr}");
            // hotkeys pinned to listeners of their own (one port per miner)
            let mut pinned_listeners = Vec::new();
            for (name, h) in &pinned {
                let l =
                    tokio::net::TcpListener::bind(h).await.with_context(|| format!("binding {h} for hotkey {name}"))?;
                tracing::info!(listen = %h, hotkey = %name, "serving a pinned hotkey");
                server.pinned.write().insert(name.clone(), *h);
                println!("hotkey {name} listening on http://{}", l.local_addr()?);
                pinned_listeners.push((name.clone(), l));
            }
            // the alarms (validators refused, a stale snapshot, a wrong announced address) in
            // the log at once and whenever they change
            tokio::spawn(server.clone().watch_health());
            let mut serving = vec![tokio::spawn(server.clone().run(listener, None))];
            serving
                .extend(pinned_listeners.into_iter().map(|(name, l)| tokio::spawn(server.clone().run(l, Some(name)))));
            use tokio::signal::unix::{signal, SignalKind};
            let (mut term, mut hup) = (signal(SignalKind::terminate())?, signal(SignalKind::hangup())?);
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted; draining"); break; }
                    _ = term.recv() => { tracing::info!("SIGTERM; draining"); break; }
                    _ = hup.recv() => {
                        // re-read everything, as a file change does; a broken file is refused and
                        // the last good version keeps serving
                        tracing::info!("SIGHUP; reloading");
                        let reload = reload.clone();
                        let _ = tokio::task::spawn_blocking(move || reload()).await;
                    }
                }
            }
            server.begin_shutdown();
            for s in serving {
                let _ = s.await;
            }
            Ok(ExitCode::SUCCESS)
        });
        // Release every model before `main` returns: the runtime's tasks go first, then the
        // reloader's registry and the server's models, which the watcher thread would otherwise
        // keep alive past exit, so no worker is still releasing a CUDA session while the libraries
        // tear down. Dropping the last `Models` (with `first`, below) waits for its workers.
        drop(runtime);
        // a reload stuck on a file (it reads regular files only, but a slow disk can still hang)
        // never holds up shutdown
        match reloader.try_lock_for(Duration::from_secs(5)) {
            Some(mut r) => drop(r.take()),
            None => tracing::warn!("a reload is still running; exiting without waiting for it"),
        }
        stopping.stop_serving();
        served
    }
}

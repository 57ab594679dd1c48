//! The `cascade` command: `serve`, `check`.

mod loop_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cascade_host::load::{self, Sources};
use cascade_host::reload::Reloader;
use cascade_host::runtime::{Runtime, RuntimeConfig};
use cascade_host::server::{IngressLimits, Server, Serving};
use clap::{Args, Parser, Subcommand};
use parking_lot::Mutex;

#[derive(Parser)]
#[command(name = "cascade", version, about = "Roadwork inference server with policies as WebAssembly components")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log lines as `text` or as JSON objects (`json`, one per line, for log collectors).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve every hotkey of the policies folder over HTTP.
    Serve(ServeArgs),
    /// Validate configs, models and components; print what would run and every problem.
    Check(SourceArgs),
    /// Run one registry model on image files and print what it returns (JSON lines).
    Infer(InferArgs),
    /// Run a hotkey's live policy over a labelled manifest and report accuracy, MCC, reward.
    Eval(EvalCli),
    /// Train a classifier head on frozen-backbone embeddings (k-fold report, JSON head out).
    TrainHead(TrainCli),
    /// The prediction log: list what hotkeys answered, export hard cases for labelling.
    Log(loop_cli::LogCli),
    /// Run a candidate hotkey over logged requests (answering from the log's results) and
    /// report what would change; with labels, accuracy, MCC and reward for both.
    Replay(ReplayCli),
    /// Sweep a hotkey's exit thresholds and fusion weights over labelled images: the
    /// cost/accuracy frontier, grouped cross-validation, a candidate hotkey file, an SVG.
    Tune(TuneCli),
    /// Write the JPEGs a validator would send of labelled images (the offline loop's draws) and
    /// a manifest of them, for tools outside this binary.
    Challenges(ChallengesCli),
}

#[derive(Args)]
struct ChallengesCli {
    /// Labelled CSV (`path,label[,source]`); repeat for several.
    #[arg(long, required = true)]
    manifest: Vec<PathBuf>,
    /// Output folder (`manifest.csv` and a folder of JPEGs per source).
    #[arg(long)]
    out: PathBuf,
    /// Validator augmentation levels to draw from, one per view (`0-3`, `0,2`).
    #[arg(long, default_value = "0-3", value_parser = cascade_host::offline::augment::Levels::parse)]
    levels: cascade_host::offline::augment::Levels,
    /// Challenges per image; view 0 is the draw `eval` makes, all are those `train-head --views` makes.
    #[arg(long, default_value_t = 1)]
    views: usize,
    #[arg(long, default_value_t = 72)]
    seed: u64,
}

#[derive(Args)]
struct TuneCli {
    #[command(flatten)]
    src: SourceArgs,
    #[arg(long)]
    hotkey: String,
    /// Labelled manifests (`path,label`); folds leave out one source (first folder) at a time.
    #[arg(long, required = true)]
    manifest: Vec<PathBuf>,
    /// Level 0 of the validator's augmentation for every image.
    #[arg(long)]
    validator_style: bool,
    /// Validator augmentation levels, one drawn per image (`0-3`).
    #[arg(long, value_parser = cascade_host::offline::augment::Levels::parse)]
    levels: Option<cascade_host::offline::augment::Levels>,
    #[arg(long, default_value_t = 72)]
    seed: u64,
    /// A TOML file of values per threshold and weight (default: every non-final stage's
    /// thresholds on a grid).
    #[arg(long)]
    space: Option<PathBuf>,
    /// `mcc` or `reward`.
    #[arg(long, default_value = "mcc")]
    objective: String,
    /// Choose only settings within this model time per request.
    #[arg(long)]
    max_ms: Option<f64>,
    /// The candidate hotkey file to write.
    #[arg(long)]
    out: PathBuf,
    /// The frontier and threshold sweep picture.
    #[arg(long)]
    svg: Option<PathBuf>,
}

#[derive(Args)]
struct ReplayCli {
    #[command(flatten)]
    src: SourceArgs,
    /// The candidate hotkey in --policies.
    #[arg(long)]
    hotkey: String,
    #[command(flatten)]
    filter: loop_cli::FilterArgs,
    /// A labelled manifest (`path,label`; an exported hard-case set once labelled).
    #[arg(long)]
    labels: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvalCli {
    #[command(flatten)]
    src: SourceArgs,
    #[arg(long)]
    hotkey: String,
    /// CSV with `path,label` columns (paths relative to it).
    #[arg(long)]
    manifest: PathBuf,
    /// Turn each image into what validators send: centre crop, 224×224, JPEG quality 75.
    #[arg(long)]
    validator_style: bool,
    /// Validator augmentation levels to draw from, one per image uniformly (`0-3`, `0,2`); reports per level.
    #[arg(long, value_parser = cascade_host::offline::augment::Levels::parse)]
    levels: Option<cascade_host::offline::augment::Levels>,
    /// Seed of the per-image level and augmentation draws.
    #[arg(long, default_value_t = 72)]
    seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also write one JSON line per image (level, prediction, stage, evidence) to this file.
    #[arg(long)]
    rows: Option<PathBuf>,
}

#[derive(Args)]
struct TrainCli {
    #[arg(long, default_value = "policies")]
    policies: PathBuf,
    /// An embedder in the registry.
    #[arg(long)]
    backbone: String,
    /// Labelled CSV (`path,label[,source]`); repeat to train on several.
    #[arg(long, required = true)]
    manifest: Vec<PathBuf>,
    /// Where the head (JSON) goes.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    validator_style: bool,
    /// Validator augmentation levels to draw from, one per image (`0-3`, `0,2`), seeded by `--seed`.
    #[arg(long, value_parser = cascade_host::offline::augment::Levels::parse)]
    levels: Option<cascade_host::offline::augment::Levels>,
    /// Augmented views per image (each drawn from `--levels`), embedded once and cached.
    #[arg(long, default_value_t = 1)]
    views: usize,
    /// Every source (an image's first folder) weighs the same, then the classes are evened out.
    #[arg(long)]
    balance_sources: bool,
    /// Cross-validation: `random` (stratified folds of images), `source` (leave one source out), `none`.
    #[arg(long, default_value = "random")]
    cv: cascade_host::offline::train::Cv,
    /// Folds of `--cv random`.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Fit a Platt scaling on the out-of-fold scores (so 0.5 is the cut) and fold it into the head.
    #[arg(long)]
    calibrate: bool,
    /// Embedding cache folder (default: `target/embed-cache` beside the binary).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Keep embeddings in memory only.
    #[arg(long)]
    no_cache: bool,
    /// Write every view's embedding as JSON lines here.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Hidden units of a one-hidden-layer head (0: logistic regression).
    #[arg(long, default_value_t = 0)]
    hidden: usize,
    #[arg(long, default_value_t = 0.01)]
    l2: f32,
    #[arg(long, default_value_t = 300)]
    epochs: usize,
    #[arg(long, default_value_t = 72)]
    seed: u64,
    /// Also write out-of-fold scores (path,label,score,fold) here.
    #[arg(long)]
    oof: Option<PathBuf>,
}

#[derive(Args)]
struct InferArgs {
    #[arg(long, default_value = "policies")]
    policies: PathBuf,
    /// Model name in the registry.
    #[arg(long)]
    model: String,
    /// Detector: minimum confidence.
    #[arg(long, default_value_t = 0.25)]
    min_confidence: f32,
    /// Run each image this many times and report the median time.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// VLM: the question to ask about each image.
    #[arg(long, default_value = "Is there active road construction in this image? Answer YES or NO.")]
    prompt: String,
    /// JPEG or PNG files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Args)]
struct SourceArgs {
    /// Hotkey files (`*.toml`) and the model registry (`models.toml`).
    #[arg(long, default_value = "policies")]
    policies: PathBuf,
    /// Compiled components (`*.wasm`); default: `target/components` beside the binary.
    #[arg(long, env = "CASCADE_COMPONENTS")]
    components: Option<PathBuf>,
    /// Most component instances alive at once.
    #[arg(long, default_value_t = 512)]
    max_instances: u32,
    /// Linear memory cap of one component instance, in MiB.
    #[arg(long, default_value_t = 64)]
    component_memory_mb: usize,
}

#[derive(Args)]
struct ServeArgs {
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
    /// On SIGTERM or Ctrl-C, seconds to let requests in flight finish before exiting.
    #[arg(long, default_value_t = 20)]
    drain_s: u64,
    /// Memory for primitive results shared across hotkeys and arms (0 turns the cache off).
    #[arg(long, default_value_t = cascade_host::runtime::cache::DEFAULT_MB)]
    stage_cache_mb: usize,
    /// How long a shared result stays valid, in seconds.
    #[arg(long, default_value_t = 300)]
    stage_cache_ttl_s: u64,
    /// Memory for decoded request images shared by requests with the same bytes (a challenge
    /// sent to several hotkeys decodes once; 0 turns the sharing off).
    #[arg(long, default_value_t = cascade_host::server::decoded::DEFAULT_MB)]
    decoded_cache_mb: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,ort=warn".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
    let r = match cli.cmd {
        Cmd::Serve(a) => serve(a),
        Cmd::Check(a) => check(a),
        Cmd::Infer(a) => {
            let q = cascade_host::infer::Query { min_conf: a.min_confidence, prompt: a.prompt, repeat: a.repeat };
            cascade_host::infer::infer(&a.policies, &a.model, &q, &a.images)
        }
        Cmd::Log(a) => loop_cli::log(a),
        Cmd::Tune(a) => setup(&a.src).and_then(|(rt, src)| {
            let args = cascade_host::offline::tune::TuneArgs {
                hotkey: a.hotkey,
                manifests: a.manifest,
                validator_style: a.validator_style,
                levels: a.levels,
                seed: a.seed,
                space: a.space,
                objective: a.objective,
                max_ms: a.max_ms,
                out: a.out,
                svg: a.svg,
            };
            cascade_host::offline::tune::tune(&rt, &src, &args)
        }),
        Cmd::Replay(a) => setup(&a.src).and_then(|(rt, src)| {
            let args = cascade_host::offline::replay::ReplayArgs {
                hotkey: a.hotkey,
                log: a.filter.log.clone(),
                filter: a.filter.filter()?,
                labels: a.labels,
                json: a.json,
            };
            cascade_host::offline::replay::replay(&rt, &src, &args)
        }),
        Cmd::Eval(a) => setup(&a.src).and_then(|(rt, src)| {
            let args = cascade_host::offline::eval::EvalArgs {
                hotkey: a.hotkey,
                manifest: a.manifest,
                validator_style: a.validator_style,
                levels: a.levels,
                seed: a.seed,
                json: a.json,
                rows: a.rows,
            };
            cascade_host::offline::eval::eval(&rt, &src, &args)
        }),
        Cmd::Challenges(a) => {
            let args = cascade_host::offline::challenges::ChallengeArgs {
                manifests: a.manifest,
                out: a.out,
                style: cascade_host::offline::augment::Style { levels: a.levels, seed: a.seed },
                views: a.views,
            };
            cascade_host::offline::challenges::write(&args).map(|n| {
                println!("wrote {n} challenges to {}", args.out.display());
                ExitCode::SUCCESS
            })
        }
        Cmd::TrainHead(a) => cascade_host::offline::train::train(&cascade_host::offline::train::TrainArgs {
            policies: a.policies,
            backbone: a.backbone,
            manifests: a.manifest,
            out: a.out,
            validator_style: a.validator_style,
            levels: a.levels,
            views: a.views,
            balance_sources: a.balance_sources,
            cv: a.cv,
            folds: a.folds,
            calibrate: a.calibrate,
            hidden: a.hidden,
            l2: a.l2,
            epochs: a.epochs,
            seed: a.seed,
            oof: a.oof,
            cache: (!a.no_cache).then(|| a.cache.unwrap_or_else(|| cascade_host::beside_exe("embed-cache"))),
            dump: a.dump,
        }),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn setup(a: &SourceArgs) -> anyhow::Result<(Arc<Runtime>, Sources)> {
    let rt = Runtime::new(RuntimeConfig { max_instances: a.max_instances, max_memory: a.component_memory_mb << 20 })
        .context("starting the component runtime")?;
    let src = Sources {
        policies: a.policies.clone(),
        components: a.components.clone().unwrap_or_else(|| cascade_host::beside_exe("components")),
        ort_library: cascade_engines::runtime_library(),
    };
    Ok((Arc::new(rt), src))
}

fn check(a: SourceArgs) -> anyhow::Result<ExitCode> {
    let (rt, src) = setup(&a)?;
    println!("policies:   {}", src.policies.display());
    println!("components: {}", src.components.display());
    // one pass of the same pipeline `serve` runs: every problem is printed once
    let (state, problems) = load::load_all(&rt, &src);
    for p in &state.plugins {
        println!("component   {}", load::describe_plugin(p));
    }
    for m in &state.registry.models {
        match (&m.vlm, &m.remote) {
            (Some(v), _) => println!("model       {} {} {} ({})", m.name, m.kind.as_str(), v.url, v.model),
            (_, Some(r)) => println!("model       {} {} {} (KServe v2)", m.name, m.kind.as_str(), r.url),
            _ => println!("model       {} {} {}", m.name, m.kind.as_str(), m.file.display()),
        }
    }
    for h in state.hotkeys.values() {
        let role = |b: &Option<Arc<cascade_host::runtime::Bound>>| {
            b.as_ref().map_or("-".to_string(), |b| format!("{}@{}", b.plugin.name, b.plugin.version))
        };
        println!(
            "hotkey      {} router={}@{} text_scorer={} fuser={} fallback={} ({})",
            h.name,
            h.stable.router.plugin.name,
            h.stable.router.plugin.version,
            role(&h.stable.roles.text_scorer),
            role(&h.stable.roles.fuser),
            h.fallback.map_or("none".to_string(), |f| f.to_string()),
            h.file.display()
        );
        if let Some(line) = cascade_host::chain::describe(h, &state.chain) {
            println!("axon        {line}");
        }
    }
    for w in &state.warnings {
        println!("warning     {w}");
    }
    if problems.is_empty() {
        println!("ok");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("problem     {p}");
    }
    println!("{} problem(s)", problems.len());
    Ok(ExitCode::FAILURE)
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    cascade_host::runtime::cache::configure(a.stage_cache_mb, Duration::from_secs(a.stage_cache_ttl_s));
    cascade_host::server::decoded::configure(a.decoded_cache_mb, cascade_host::server::decoded::DEFAULT_TTL);
    let (rt, src) = setup(&a.src)?;
    let cache = a.compile_cache.clone().unwrap_or_else(|| cascade_host::beside_exe("component-cache"));
    let mut reloader = Reloader::new(rt, src.clone(), Some(cache));
    let first = reloader.reload();
    if !first.refused.is_empty() {
        for p in &first.refused {
            eprintln!("problem: {}: {}", p.file.display(), p.reason);
        }
        anyhow::bail!(
            "{} problem(s) in {} / {}; nothing served",
            first.refused.len(),
            src.policies.display(),
            src.components.display()
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
    server.drain = Duration::from_secs(a.drain_s);
    let server = Arc::new(server);
    server.status.lock().record(&first);
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
            let l = tokio::net::TcpListener::bind(h).await.with_context(|| format!("binding {h} for hotkey {name}"))?;
            tracing::info!(listen = %h, hotkey = %name, "serving a pinned hotkey");
            server.pinned.write().insert(name.clone(), *h);
            println!("hotkey {name} listening on http://{}", l.local_addr()?);
            pinned_listeners.push((name.clone(), l));
        }
        let mut serving = vec![tokio::spawn(server.clone().run(listener, None))];
        serving.extend(pinned_listeners.into_iter().map(|(name, l)| tokio::spawn(server.clone().run(l, Some(name)))));
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

//! End-to-end load, JPEG bytes in → score out: in process through the engine (`e2e`: the
//! server's decoder, the model's queue and batching, pre-processing, the session) or over HTTP
//! against `cascade serve` (`http`, every request's bytes distinct). Closed loop at a given concurrency, or open loop at a fixed
//! rate (latency counted from each request's scheduled time, so queueing shows in p99).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_engines::JobInput;
use cascade_host::server::ingress::{decode_image, IngressLimits};

type Call = Arc<dyn Fn(&[u8]) -> anyhow::Result<()> + Send + Sync>;

/// args: POLICIES MODEL JPEG_DIR CONCURRENCY SECONDS [RATE]
pub fn e2e(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(args.len() >= 5, "usage: gpu-bench e2e POLICIES MODEL JPEG_DIR CONCURRENCY SECONDS [RATE]");
    let (models, spec) = super::load_one(&args[0], &args[1])?;
    let models = Arc::new(models);
    let limits = IngressLimits::default();
    let name = spec.name.clone();
    let m2 = models.clone();
    let call: Call = Arc::new(move |bytes: &[u8]| {
        let img = decode_image(bytes, &limits).map_err(|r| anyhow::anyhow!("{}", r.message))?;
        let deadline = Instant::now() + Duration::from_secs(9);
        let reply = models.run(&name, spec.kind, JobInput::Image(Arc::new(img)), deadline)?;
        reply.output?;
        Ok(())
    });
    let mut figures = report("cascade-engine", &args[1], &args[2..], call)?;
    // batches the engine ran over the whole run (warm-up included)
    if let Some((_, st)) = m2.stats().find(|(n, _)| *n == args[1]) {
        let (items, runs) = (st.items.load(Ordering::Relaxed), st.runs.load(Ordering::Relaxed));
        figures["mean_batch"] = serde_json::json!(items as f64 / runs.max(1) as f64);
        figures["gpu_mib"] = serde_json::json!(st.gpu_bytes.load(Ordering::Relaxed) >> 20);
    }
    println!("{figures}");
    Ok(())
}

/// args: URL JPEG_DIR CONCURRENCY SECONDS [RATE]
pub fn http(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(args.len() >= 4, "usage: gpu-bench http URL JPEG_DIR CONCURRENCY SECONDS [RATE]");
    let url = args[0].clone();
    thread_local! {
        static AGENT: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    }
    // every request's bytes distinct, as a validator's challenges are: no cache answers them
    let sent = AtomicU64::new(0);
    let call: Call = Arc::new(move |bytes: &[u8]| {
        let bytes = cascade_bench::distinct_jpeg(bytes, sent.fetch_add(1, Ordering::Relaxed));
        let mut resp = AGENT.with(|a| a.post(&url).header("Content-Type", "image/jpeg").send(&bytes[..]))?;
        let body = resp.body_mut().read_to_string()?;
        anyhow::ensure!(resp.status() == 200 && !body.contains("\"fallback\":true"), "{}: {body}", resp.status());
        Ok(())
    });
    println!("{}", report("cascade-http", &args[0], &args[1..], call)?);
    Ok(())
}

/// rest: JPEG_DIR CONCURRENCY SECONDS [RATE]; the figures as a JSON object.
fn report(side: &str, model: &str, rest: &[String], call: Call) -> anyhow::Result<serde_json::Value> {
    let mut jpegs = Vec::new();
    for e in std::fs::read_dir(&rest[0])? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "jpg" || x == "jpeg") {
            jpegs.push(std::fs::read(&p)?);
        }
    }
    anyhow::ensure!(!jpegs.is_empty(), "no JPEGs in {}", rest[0]);
    let jpegs = Arc::new(jpegs);
    let conc: usize = rest[1].parse()?;
    let secs: f64 = rest[2].parse()?;
    let rate: Option<f64> = rest.get(3).map(|r| r.parse()).transpose()?;
    // warm-up: every batch shape and the allocator's steady state
    drive(conc, 2.0, None, &jpegs, &call);
    let (lat, errors, elapsed) = drive(conc, secs, rate, &jpegs, &call);
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
    };
    Ok(serde_json::json!({
        "side": side, "model": model, "mode": if rate.is_some() { "open" } else { "closed" },
        "concurrency": conc, "rate": rate, "n": lat.len(), "errors": errors,
        "rps": lat.len() as f64 / elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
    }))
}

/// Runs the load; returns sorted latencies (ms), the error count and the elapsed seconds.
fn drive(conc: usize, secs: f64, rate: Option<f64>, jpegs: &Arc<Vec<Vec<u8>>>, call: &Call) -> (Vec<f64>, u64, f64) {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let (sched_tx, sched_rx) = crossbeam_channel::unbounded::<Instant>();
    if let Some(r) = rate {
        // open loop: the schedule is fixed up front; workers take the next due request
        let total = (r * secs) as usize;
        for i in 0..total {
            let _ = sched_tx.send(start + Duration::from_secs_f64(i as f64 / r));
        }
    }
    drop(sched_tx);
    let workers: Vec<_> = (0..conc)
        .map(|_| {
            let (jpegs, call, next, errors, sched) =
                (jpegs.clone(), call.clone(), next.clone(), errors.clone(), sched_rx.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                loop {
                    let due = if rate.is_some() {
                        match sched.recv() {
                            Ok(t) => t,
                            Err(_) => break,
                        }
                    } else {
                        if Instant::now() >= until {
                            break;
                        }
                        Instant::now()
                    };
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    match call(&jpegs[i % jpegs.len()]) {
                        Ok(()) => lat.push(due.elapsed().as_secs_f64() * 1e3),
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("first error: {e:#}");
                            }
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<f64> = workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect();
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    (lat, errors.load(Ordering::Relaxed), elapsed)
}

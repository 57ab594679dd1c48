//! Many hotkeys in one process (issue 28 part 5): `cascade serve` with N hotkeys that run the
//! shipped `speed` policy under distinct names, the smallest N being the peer, all in one run on
//! the same traffic. For each N: the time from spawn to the "listening" line (every hotkey
//! loaded, configured and smoke-tested, the models loaded once), resident memory then and after
//! the load, and the throughput and latency of one request stream — validator-style challenges
//! (`cascade challenges`, levels 0-3), every request's bytes distinct so that no cache answers,
//! sent round-robin over the N hotkeys by `--clients` clients for `--seconds`.
//!
//!   cargo run --release -p cascade-bench --bin hotkeys-bench -- [--hotkeys 2,25,100] [--seconds 20] [--clients 4]
//!
//! Prints one table and, per added hotkey past the first N, the start time and memory it cost.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cascade_bench::{distinct_jpeg, repo, rss_kib};

fn arg(name: &str, default: &str) -> String {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

/// The shipped registry (paths made absolute) and heads, and `n` copies of the `speed` hotkey
/// named `hk-000`, `hk-001`, … (without its calibration, which names the hotkey it was fitted for).
fn policies(dir: &Path, n: usize) -> anyhow::Result<()> {
    let root = repo();
    let src = root.join("policies");
    for sub in ["calibration", "heads"] {
        std::fs::create_dir_all(dir.join(sub))?;
        for e in std::fs::read_dir(src.join(sub))? {
            let p = e?.path();
            std::fs::copy(&p, dir.join(sub).join(p.file_name().expect("name")))?;
        }
    }
    std::fs::copy(src.join("coco_labels.txt"), dir.join("coco_labels.txt"))?;
    let target = root.join("target");
    let registry =
        std::fs::read_to_string(src.join("models.toml"))?.replace("\"../target/", &format!("\"{}/", target.display()));
    std::fs::write(dir.join("models.toml"), registry)?;
    // a calibration is fitted for one hotkey name: the copies go without (a table lookup less)
    let speed: String = std::fs::read_to_string(src.join("speed.toml"))?
        .lines()
        .filter(|l| !l.starts_with("calibration = "))
        .map(|l| format!("{l}\n"))
        .collect();
    anyhow::ensure!(speed.contains("name = \"speed\""), "policies/speed.toml does not name itself `speed`");
    for i in 0..n {
        let name = format!("hk-{i:03}");
        std::fs::write(
            dir.join(format!("{name}.toml")),
            speed.replace("name = \"speed\"", &format!("name = \"{name}\"")),
        )?;
    }
    Ok(())
}

struct Run {
    n: usize,
    start_s: f64,
    rss_start_mib: f64,
    rss_end_mib: f64,
    ok: u64,
    failed: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn run(n: usize, images: &Arc<Vec<Vec<u8>>>, seconds: f64, clients: usize, work: &Path) -> anyhow::Result<Run> {
    let dir = work.join(format!("policies-{n}"));
    policies(&dir, n)?;
    let components = repo().join("target/components");
    let t0 = Instant::now();
    let (mut child, base) = cascade_bench::serve([
        OsStr::new("--no-watch"),
        OsStr::new("--components"),
        components.as_os_str(),
        OsStr::new("--policies"),
        dir.as_os_str(),
    ])?;
    let start_s = t0.elapsed().as_secs_f64();
    let rss_start = rss_kib(child.id());
    let next = Arc::new(AtomicUsize::new(0));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let t1 = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (next, ok, failed, lat, images, base) =
                (next.clone(), ok.clone(), failed.clone(), lat.clone(), images.clone(), base.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().into();
                while Instant::now() < until {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let jpeg = distinct_jpeg(&images[i % images.len()], i as u64);
                    let body = serde_json::json!({"image": base64::engine::general_purpose::STANDARD.encode(&jpeg)})
                        .to_string();
                    let t = Instant::now();
                    let good = agent
                        .post(&format!("{base}/v1/predict/hk-{:03}", i % n))
                        .header("Content-Type", "application/json")
                        .send(body.as_bytes())
                        .ok()
                        .and_then(|mut r| r.body_mut().read_to_string().ok())
                        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                        .is_some_and(|v| v["prediction"].is_number());
                    if good {
                        ok.fetch_add(1, Ordering::Relaxed);
                        lat.lock().expect("lock").push(t.elapsed().as_secs_f64() * 1e3);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let took = t1.elapsed().as_secs_f64();
    let rss_end = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let mut l = lat.lock().expect("lock").clone();
    l.sort_by(f64::total_cmp);
    let at = |p: f64| l.get(((l.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(f64::NAN);
    let ok = ok.load(Ordering::Relaxed);
    Ok(Run {
        n,
        start_s,
        rss_start_mib: rss_start as f64 / 1024.0,
        rss_end_mib: rss_end as f64 / 1024.0,
        ok,
        failed: failed.load(Ordering::Relaxed),
        rps: ok as f64 / took,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    })
}

fn main() -> anyhow::Result<()> {
    let ns: Vec<usize> = arg("--hotkeys", "2,25,100").split(',').filter_map(|v| v.parse().ok()).collect();
    let seconds: f64 = arg("--seconds", "20").parse()?;
    let clients: usize = arg("--clients", "4").parse()?;
    anyhow::ensure!(!ns.is_empty() && ns.iter().all(|n| *n >= 1), "--hotkeys takes counts like 2,25,100");
    let work = std::env::temp_dir().join(format!("cascade-hotkeys-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let images: Vec<Vec<u8>> =
        cascade_bench::challenges(&work, 64)?.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let images = Arc::new(images);
    let mut runs = Vec::new();
    for &n in &ns {
        runs.push(run(n, &images, seconds, clients, &work)?);
    }
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "\n`speed` under N names in one `cascade serve`, {clients} clients for {seconds:.0} s each, every request's image distinct\n"
    );
    println!(
        "| hotkeys | start s | RSS at start MiB | RSS after load MiB | answered | failed | req/s | p50 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {:.2} | {:.1} | {:.1} | {} | {} | {:.1} | {:.1} | {:.1} |",
            r.n, r.start_s, r.rss_start_mib, r.rss_end_mib, r.ok, r.failed, r.rps, r.p50_ms, r.p99_ms
        );
    }
    let first = &runs[0];
    for r in &runs[1..] {
        let extra = r.n.saturating_sub(first.n).max(1) as f64;
        println!(
            "per hotkey past {}: start {:+.1} ms, RSS {:+.2} MiB at start, {:+.2} MiB after load; throughput {:+.1} %",
            first.n,
            1e3 * (r.start_s - first.start_s) / extra,
            (r.rss_start_mib - first.rss_start_mib) / extra,
            (r.rss_end_mib - first.rss_end_mib) / extra,
            100.0 * (r.rps - first.rps) / first.rps
        );
    }
    Ok(())
}

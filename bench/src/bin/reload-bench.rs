//! Live swaps under load: 32 clients on `/v1/predict/{hotkey}` while the hotkey's config and
//! its router component are replaced 200 times, alternating valid and broken versions.
//! Reports failures, answers from refused versions, p99 during swaps vs a quiet baseline,
//! write-to-serving latency, and memory after 10 vs 200 swaps.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cascade_bench::{repo, summarise};

fn config(stage: &str) -> String {
    format!("name = \"live\"\nfallback = 0.3\n[router]\ncomponent = \"cascade-router@^1\"\n[[router.params.stages]]\nname = \"{stage}\"\nclassify = [\"tint\"]\non_error = \"fail\"\n")
}

/// A 64×64 JPEG no other (client, k) pair sends: its corner pixels spell the pair.
fn distinct(client: u64, k: u64) -> Vec<u8> {
    let mut i = image::RgbImage::from_pixel(64, 64, image::Rgb([200, 120, 40]));
    for (bit, x) in (0..48).enumerate() {
        let on = ((client << 40 | k) >> bit) & 1 == 1;
        i.put_pixel(x, 0, if on { image::Rgb([255, 255, 255]) } else { image::Rgb([0, 0, 0]) });
    }
    let mut out = std::io::Cursor::new(Vec::new());
    i.write_to(&mut out, image::ImageFormat::Jpeg).expect("a JPEG");
    out.into_inner()
}

fn replace(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

struct Load {
    sent: AtomicU64,
    failed: AtomicU64,
    refused_answers: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

fn main() -> anyhow::Result<()> {
    let swaps: usize = std::env::var("SWAPS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let clients: usize = 32;
    let root = repo();
    let dir = std::env::temp_dir().join(format!("cascade-reload-bench-{}", std::process::id()));
    let comps = dir.join("components");
    std::fs::create_dir_all(&comps)?;
    for f in std::fs::read_dir(root.join("target/components"))? {
        let p = f?.path();
        std::fs::copy(&p, comps.join(p.file_name().expect("name")))?;
    }
    let models = root.join("target/test-models");
    if !models.join("tint.onnx").exists() {
        Command::new(root.join(".venv/bin/python"))
            .arg(root.join("tests/models/make_test_models.py"))
            .arg(&models)
            .status()?;
    }
    std::fs::write(dir.join("models.toml"), format!("[[model]]\nname = \"tint\"\nfile = \"{}\"\nkind = \"classifier\"\ninput = {{ width = 32, height = 32 }}\nmax_batch = 8\nmax_delay_us = 200\n", models.join("tint.onnx").display()))?;
    let cfg = dir.join("live.toml");
    std::fs::write(&cfg, config("v0"))?;
    let mut child = Command::new(root.join("target/release/cascade"))
        .args(["serve", "--listen", "127.0.0.1:0", "--policies"])
        .arg(&dir)
        .arg("--components")
        .arg(&comps)
        .arg("--compile-cache")
        .arg(dir.join("cache"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
    let url = format!("{}/v1/predict/live", line.trim().trim_start_matches("listening on "));
    let probe_url = url.clone();
    let img = {
        let i = image::RgbImage::from_pixel(224, 224, image::Rgb([200, 120, 40]));
        let mut out = std::io::Cursor::new(Vec::new());
        i.write_to(&mut out, image::ImageFormat::Jpeg)?;
        out.into_inner()
    };
    let probe_img = img.clone();

    let next_client = Arc::new(AtomicU64::new(0));
    let run_load = move |dur: Option<Duration>, stop: Arc<AtomicBool>| -> Arc<Load> {
        let load = Arc::new(Load {
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            refused_answers: AtomicU64::new(0),
            latencies: Mutex::new(Vec::new()),
        });
        let started = Instant::now();
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (load, stop, url) = (load.clone(), stop.clone(), url.clone());
                let client = next_client.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || {
                    let mut k: u64 = 0;
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(20)))
                        .build()
                        .into();
                    while !stop.load(Ordering::Relaxed) && dur.is_none_or(|d| started.elapsed() < d) {
                        let t = Instant::now();
                        load.sent.fetch_add(1, Ordering::Relaxed);
                        // a distinct image every request: the stage cache must not answer for the
                        // models while versions swap
                        k += 1;
                        let img = distinct(client, k);
                        match agent.post(&url).header("Content-Type", "image/jpeg").send(&img[..]) {
                            Ok(mut r) if r.status() == 200 => {
                                let v: serde_json::Value =
                                    serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
                                        .unwrap_or_default();
                                if v["stage"].as_str().unwrap_or("").starts_with("refused") || v["fallback"] == true {
                                    load.refused_answers.fetch_add(1, Ordering::Relaxed);
                                }
                                load.latencies.lock().expect("lock").push(t.elapsed());
                            }
                            _ => {
                                load.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        load
    };

    // quiet baseline
    let quiet = run_load(Some(Duration::from_secs(5)), Arc::new(AtomicBool::new(false)));
    // swaps under load
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let stop = stop.clone();
        let run = run_load.clone();
        std::thread::spawn(move || run(None, stop))
    };
    let router = comps.join("cascade_router.wasm");
    let good_router = std::fs::read(&router)?;
    let probe: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut to_serving = Vec::new();
    let (mut rss10, mut rss_end) = (0, 0);
    for n in 1..=swaps {
        // broken versions: a schema violation named "refused-n", and a truncated component
        replace(&cfg, config(&format!("refused-{n}")).replace("on_error", "on_eror").as_bytes());
        replace(&router, &good_router[..good_router.len() / 3]);
        std::thread::sleep(Duration::from_millis(120));
        replace(&router, &good_router);
        // the valid version: time until it answers
        let stage = format!("v{n}");
        let t = Instant::now();
        replace(&cfg, config(&stage).as_bytes());
        loop {
            let mut r = probe.post(&probe_url).header("Content-Type", "image/jpeg").send(&probe_img[..])?;
            let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
            if v["stage"] == stage.as_str() {
                to_serving.push(t.elapsed());
                break;
            }
            anyhow::ensure!(t.elapsed() < Duration::from_secs(10), "v{n} never served");
            std::thread::sleep(Duration::from_millis(5));
        }
        if n == 10 {
            rss10 = cascade_bench::rss_kib(pid);
        }
        rss_end = cascade_bench::rss_kib(pid);
    }
    stop.store(true, Ordering::Relaxed);
    let busy = loader.join().map_err(|_| anyhow::anyhow!("load thread"))?;
    let _ = child.kill();
    let _ = std::fs::remove_dir_all(&dir);
    let q = summarise(quiet.latencies.lock().expect("lock").clone());
    let b = summarise(busy.latencies.lock().expect("lock").clone());
    let w = summarise(to_serving);
    println!("\n{clients} clients, {swaps} swaps (each: broken config + truncated component, then the component back and a valid config)\n");
    println!("| figure                                   | value |");
    println!("|------------------------------------------|-------|");
    println!("| requests sent during swaps               | {} |", busy.sent.load(Ordering::Relaxed));
    println!("| failed (non-200 or no answer)            | {} |", busy.failed.load(Ordering::Relaxed));
    println!("| answered by a refused version / fallback | {} |", busy.refused_answers.load(Ordering::Relaxed));
    println!("| p50 / p99 ms, quiet                      | {:.2} / {:.2} |", q.p50 / 1e3, q.p99 / 1e3);
    println!("| p50 / p99 ms, during swaps               | {:.2} / {:.2} |", b.p50 / 1e3, b.p99 / 1e3);
    println!("| write → serving ms p50 / p99 (cache warm)| {:.1} / {:.1} |", w.p50 / 1e3, w.p99 / 1e3);
    println!("| RSS after 10 swaps / after {swaps}           | {} MB / {} MB |", rss10 / 1024, rss_end / 1024);
    // a swap that fails a request or answers from a refused version fails the bench
    let (failed, refused) = (busy.failed.load(Ordering::Relaxed), busy.refused_answers.load(Ordering::Relaxed));
    if failed > 0 || refused > 0 {
        println!("FAIL: {failed} failed requests and {refused} answers from refused versions during swaps");
        std::process::exit(1);
    }
    println!("PASS: no request failed or was answered by a refused version during {swaps} swaps");
    Ok(())
}

//! Soak: mixed traffic against the real server for a long run (default 30 minutes), on
//! loopback only, bounded in time. Good requests on both shipped hotkeys (real street frames
//! from `../shared/data`, sent as validators send them), bad inputs of every kind, subnet
//! requests signed by an admitted validator key and by unknown keys, and hot reloads (valid
//! and broken) of a hotkey file. Every `--every-s` it prints a row: answers by kind, failed
//! good requests, p50/p99 of the good ones in that window, the server's resident memory.
//!
//!   cargo run --release -p cascade-bench --bin soak -- [--minutes 30] [--every-s 30] [--workers 4]
//!       [--cascade PATH] [--variants 40]   (distinct challenges per frame, 64 frames)
//!
//! Exit status 1 if any request got an unexpected status, or resident memory grew more than
//! 10 % after warm-up (the first quarter of the run) to the end or to any later peak.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use cascade_bench::repo;
use cascade_host::ss58;
use schnorrkel::Keypair;

#[derive(Default)]
struct Window {
    counts: BTreeMap<String, u64>,
    good_ms: Vec<f64>,
    failed: Vec<String>,
}

fn arg(name: &str, default: u64) -> u64 {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Validator challenges of real street frames: each of `n` frames drawn through the subnet's
/// augmentation levels `variants` times (seeded), so that most requests carry an image the
/// server has not seen (the stage cache would otherwise answer nearly all of them).
fn images(n: usize, variants: usize) -> Vec<Vec<u8>> {
    use cascade_offline::augment::{challenge_jpeg, Params, Rng};
    let data = repo().join("../shared/data/roadwork-more");
    let text = std::fs::read_to_string(data.join("manifest.csv")).expect("../shared/data/roadwork-more/manifest.csv");
    let frames: Vec<image::RgbImage> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .take(n)
        .filter_map(|p| image::open(data.join(p)).ok().map(|i| i.to_rgb8()))
        .collect();
    let mut rng = Rng::new(72);
    let mut out = Vec::with_capacity(frames.len() * variants);
    for _ in 0..variants {
        for f in &frames {
            let p = Params::sample(&mut rng, f.width(), f.height());
            out.push(challenge_jpeg(f, &p));
        }
    }
    out
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A synapse request for `miner` signed by `key` (as the Python dendrite signs it).
fn synapse(key: &Keypair, miner: &str, uuid: &str, image_b64: &str) -> (Vec<(String, String)>, String) {
    let hash = cascade_host::server::axon::EMPTY_BODY_HASH;
    let me = ss58::encode(&key.public.to_bytes());
    let nonce = now_ns();
    let msg = format!("{nonce}.{me}.{miner}.{uuid}.{hash}");
    let sig = key.sign_simple(b"substrate", msg.as_bytes());
    let headers = vec![
        ("bt_header_axon_hotkey".into(), miner.to_string()),
        ("bt_header_dendrite_hotkey".into(), me.clone()),
        ("bt_header_dendrite_uuid".into(), uuid.to_string()),
        ("bt_header_dendrite_nonce".into(), nonce.to_string()),
        ("bt_header_dendrite_signature".into(), format!("0x{}", hex::encode(sig.to_bytes()))),
        ("computed_body_hash".into(), hash.to_string()),
        ("timeout".into(), "9.0".into()),
    ];
    let body = serde_json::json!({"name": "ImageSynapse", "timeout": 9.0, "image": image_b64, "prediction": -1.0});
    (headers, body.to_string())
}

fn policies(dir: &Path, miner: &str, validator: &str) {
    std::fs::create_dir_all(dir).expect("policies dir");
    for f in ["models.toml", "speed.toml", "accuracy.toml", "chain.toml"] {
        let text = std::fs::read_to_string(repo().join("policies").join(f)).expect("shipped policy");
        // the registry names files relative to the shipped folder
        let text = text.replace("\"../", &format!("\"{}/", repo().display()));
        std::fs::write(dir.join(f), text).expect("write");
    }
    let _ = std::fs::create_dir_all(dir.join("heads"));
    let _ = std::fs::copy(repo().join("policies/heads/roadwork.json"), dir.join("heads/roadwork.json"));
    let _ = std::fs::copy(repo().join("policies/coco_labels.txt"), dir.join("coco_labels.txt"));
    let _ = std::fs::create_dir_all(dir.join("calibration"));
    for h in ["speed", "accuracy"] {
        let _ = std::fs::copy(
            repo().join(format!("policies/calibration/{h}.json")),
            dir.join(format!("calibration/{h}.json")),
        );
    }
    // the miner is speed under another name: speed's calibration names speed, so it goes
    let speed: String = std::fs::read_to_string(dir.join("speed.toml"))
        .expect("speed")
        .lines()
        .filter(|l| !l.starts_with("calibration = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let axon =
        speed.replace("name = \"speed\"", "name = \"miner\"") + &format!("\n[axon]\nallow = [\"{validator}\"]\n") + "";
    std::fs::write(dir.join("miner.toml"), axon.replacen("\n", &format!("\nss58 = \"{miner}\"\n"), 1)).expect("miner");
}

fn main() -> anyhow::Result<()> {
    let minutes = arg("--minutes", 30);
    let every = Duration::from_secs(arg("--every-s", 30));
    let workers = arg("--workers", 4) as usize;
    let dir = std::env::temp_dir().join(format!("cascade-soak-{}", std::process::id()));
    let (miner, validator, stranger) = (Keypair::generate(), Keypair::generate(), Keypair::generate());
    let miner_ss58 = ss58::encode(&miner.public.to_bytes());
    policies(&dir, &miner_ss58, &ss58::encode(&validator.public.to_bytes()));
    // `--cascade PATH` runs a copy kept out of the way of rebuilds
    let args: Vec<String> = std::env::args().collect();
    let bin: PathBuf = args
        .iter()
        .position(|x| x == "--cascade")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/release/cascade"));
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--policies"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("server.log"))?)
        .env("RUST_LOG", "warn")
        .spawn()?;
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let base = loop {
        let l = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("server exited; see {}", dir.join("server.log").display()))??;
        if let Some(u) = l.strip_prefix("listening on ") {
            break u.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let imgs = Arc::new(images(64, arg("--variants", 40) as usize));
    anyhow::ensure!(!imgs.is_empty(), "no images");
    let b64: Arc<Vec<String>> =
        Arc::new(imgs.iter().map(|i| base64::engine::general_purpose::STANDARD.encode(i)).collect());
    let window = Arc::new(Mutex::new(Window::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(minutes * 60);
    let (validator, stranger) = (Arc::new(validator), Arc::new(stranger));

    let mut handles = Vec::new();
    for w in 0..workers {
        let (base, imgs, b64, window, stop, miner, validator, stranger) = (
            base.clone(),
            imgs.clone(),
            b64.clone(),
            window.clone(),
            stop.clone(),
            miner_ss58.clone(),
            validator.clone(),
            stranger.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let agent = agent();
            let uuid = format!("soak-{w}-{}", now_ns());
            let mut i: usize = w * 7919;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let pick = (i >> 33) % 100;
                let img = &imgs[(i >> 20) % imgs.len()];
                let started = Instant::now();
                // (kind, expected status, actual status)
                // a good answer's source: a fallback or partial answer is counted apart
                let mut source = String::new();
                let (kind, want, got): (&str, u16, u16) = if pick < 50 {
                    let hk = if pick.is_multiple_of(2) { "speed" } else { "accuracy" };
                    let r = agent.post(&format!("{base}/v1/predict/{hk}")).content_type("image/jpeg").send(&img[..]);
                    let got = match r {
                        Ok(mut r) => {
                            let status = r.status().as_u16();
                            let v: serde_json::Value = r.body_mut().read_json().unwrap_or(serde_json::Value::Null);
                            source = v["source"].as_str().unwrap_or("").to_string();
                            status
                        }
                        Err(_) => 0,
                    };
                    ("good", 200, got)
                } else if pick < 65 {
                    // each bad input gets its documented refusal (README, "Ask it"); a 500 or a
                    // dropped connection (0) is a failure
                    let (ct, body, want): (&str, Vec<u8>, u16) = match pick % 5 {
                        0 => ("application/json", b"{\"image\": \"@@@\"}".to_vec(), 400),
                        1 => ("image/jpeg", img[..img.len() / 3].to_vec(), 422),
                        2 => ("text/plain", img.clone(), 415),
                        3 => ("application/json", b"[1,2,3]".to_vec(), 400),
                        _ => ("image/jpeg", vec![0u8; 5 << 20], 413),
                    };
                    let r = agent.post(&format!("{base}/v1/predict/speed")).content_type(ct).send(&body[..]);
                    ("bad-input", want, r.map(|r| r.status().as_u16()).unwrap_or(0))
                } else {
                    let (key, kind, want) = if pick < 90 {
                        (&*validator, "axon-validator", 200)
                    } else {
                        (&*stranger, "axon-stranger", 403)
                    };
                    let (headers, body) = synapse(key, &miner, &uuid, &b64[(i >> 20) % b64.len()]);
                    let mut req = agent.post(&format!("{base}/ImageSynapse")).content_type("application/json");
                    for (k, v) in &headers {
                        req = req.header(k, v);
                    }
                    let r = req.send(body.as_bytes());
                    (kind, want, r.map(|r| r.status().as_u16()).unwrap_or(0))
                };
                let ms = started.elapsed().as_secs_f64() * 1e3;
                let mut w = window.lock().expect("window");
                *w.counts.entry(format!("{kind} {got}")).or_default() += 1;
                if want != 0 && got != want {
                    w.failed.push(format!("{kind}: {got} (wanted {want})"));
                }
                if kind == "good" && got == 200 {
                    w.good_ms.push(ms);
                    if source != "policy" {
                        *w.counts.entry("good-fallback".into()).or_default() += 1;
                    }
                }
            }
        }));
    }
    // hot reloads: a valid change every 20 s, and now and then a broken one that is fixed
    {
        let (dir, stop) = (dir.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let file = dir.join("speed.toml");
            let good = std::fs::read_to_string(&file).expect("speed");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(20));
                n += 1;
                let text = if n.is_multiple_of(5) {
                    good.replace("exit_low", "exit_lo")
                } else {
                    good.replace("0.25", if n.is_multiple_of(2) { "0.24" } else { "0.25" })
                };
                let tmp = dir.join("speed.partial");
                let _ = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &file));
            }
            let _ = std::fs::write(&file, good);
        }));
    }

    println!(
        "soak: {minutes} min, {workers} workers, rows every {} s; server pid {pid}, policies {}",
        every.as_secs(),
        dir.display()
    );
    println!(
        "\n| t (s) | good ok | of them fallback | good failed | p50 ms | p99 ms | bad-input | axon ok | axon 403 | other | RSS MiB |"
    );
    println!("|------:|--------:|-----------------:|------------:|-------:|-------:|----------:|--------:|---------:|------:|--------:|");
    let started = Instant::now();
    let (mut rss, mut failed_total, mut all_failures, mut fallback_total) = (Vec::new(), 0u64, Vec::new(), 0u64);
    while Instant::now() < deadline {
        std::thread::sleep(
            every.min(deadline.saturating_duration_since(Instant::now())).max(Duration::from_millis(10)),
        );
        let w = std::mem::take(&mut *window.lock().expect("window"));
        let mut ms = w.good_ms.clone();
        ms.sort_by(f64::total_cmp);
        let at = |p: f64| if ms.is_empty() { 0.0 } else { ms[((ms.len() - 1) as f64 * p).round() as usize] };
        let count = |prefix: &str| w.counts.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum::<u64>();
        let good_failed =
            w.failed.iter().filter(|f| f.starts_with("good") || f.starts_with("axon-validator")).count() as u64;
        failed_total += w.failed.len() as u64;
        fallback_total += w.counts.get("good-fallback").copied().unwrap_or(0);
        all_failures.extend(w.failed.iter().take(5).cloned());
        let r = cascade_bench::rss_kib(pid);
        rss.push(r);
        println!(
            "| {:>5} | {:>7} | {:>16} | {:>11} | {:>6.1} | {:>6.1} | {:>9} | {:>7} | {:>8} | {:>5} | {:>7.1} |",
            started.elapsed().as_secs(),
            w.counts.get("good 200").copied().unwrap_or(0),
            w.counts.get("good-fallback").copied().unwrap_or(0),
            good_failed,
            at(0.5),
            at(0.99),
            count("bad-input"),
            w.counts.get("axon-validator 200").copied().unwrap_or(0),
            w.counts.get("axon-stranger 403").copied().unwrap_or(0),
            w.failed.len() as u64 - good_failed,
            r as f64 / 1024.0
        );
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let _ = child.kill();
    let _ = child.wait();
    // memory is judged after warm-up (the first quarter: lazily loaded models, warm component
    // instances, the stage cache filling); the whole-run growth is printed too
    let pct = |a: u64, b: u64| if a > 0 { (b as f64 - a as f64) / a as f64 * 100.0 } else { 0.0 };
    let first = rss.get(1).or(rss.first()).copied().unwrap_or(0);
    let warm = rss.get(rss.len() / 4).copied().unwrap_or(first);
    let last = rss.last().copied().unwrap_or(0);
    let peak = rss.iter().skip(rss.len() / 4).copied().max().unwrap_or(last);
    let growth = pct(warm, last).max(pct(warm, peak));
    println!(
        "\nfailed requests (any kind, wrong status): {failed_total}; good requests answered by a fallback or partial evidence: {fallback_total}; RSS {:.1} MiB after the first window, {:.1} after warm-up, {:.1} at the end (peak {:.1}): {:+.1} % over the run, {growth:+.1} % after warm-up",
        first as f64 / 1024.0,
        warm as f64 / 1024.0,
        last as f64 / 1024.0,
        peak as f64 / 1024.0,
        pct(first, last)
    );
    for f in all_failures.iter().take(20) {
        println!("  {f}");
    }
    let ok = failed_total == 0 && growth <= 10.0;
    println!("{}", if ok { "PASS" } else { "FAIL" });
    std::process::exit(if ok { 0 } else { 1 });
}

//! Host overhead per HTTP request, model time excluded: the real `cascade serve` (a one-stage
//! policy on a tiny real ONNX classifier) against a bare hyper server that only reads the body
//! and answers fixed JSON, with the same client, the same keep-alive connection pattern and the
//! same validator-sized JPEG body. Two kinds of traffic, interleaved: the same image again (a
//! challenge reaching another hotkey: decode and models shared from the first request) and a
//! distinct image every time (bytes differ by a JPEG comment, so nothing is shared: it is
//! decoded and the model runs; its reported time is subtracted).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use cascade_bench::{distinct_jpeg, header, repo, row, summarise};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const POLICY: &str = r#"
name = "bench"
fallback = 0.3
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "tint"
classify = ["tint"]
"#;

/// What validators send: a photo centre-cropped to 224×224, JPEG quality 75 (a dev image from
/// ../shared when there, else a synthetic scene).
fn validator_jpeg() -> Vec<u8> {
    let shared =
        repo().parent().expect("parent").join("shared/data/roadwork-dev/dashcam_mi3lab_workzone/charlotte_f0075.jpg");
    let img = match image::open(&shared) {
        Ok(i) => {
            let i = i.to_rgb8();
            let side = i.width().min(i.height());
            let sq =
                image::imageops::crop_imm(&i, (i.width() - side) / 2, (i.height() - side) / 2, side, side).to_image();
            image::imageops::resize(&sq, 224, 224, image::imageops::FilterType::Triangle)
        }
        Err(_) => {
            image::RgbImage::from_fn(224, 224, |x, y| image::Rgb([(x + y) as u8, (x / 2) as u8, 200 - (y / 2) as u8]))
        }
    };
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 75).encode_image(&img).expect("jpeg");
    out.into_inner()
}

/// One kind of traffic's samples: client round trip, the model time the server reported, the
/// round trip and the server's own time each less that model time, and its decode time.
#[derive(Default)]
struct Traffic {
    total: Vec<Duration>,
    model: Vec<Duration>,
    overhead: Vec<Duration>,
    handler: Vec<Duration>,
    decode: Vec<Duration>,
    /// The round trip less the model and the decode.
    bare: Vec<Duration>,
}

/// The `Server-Timing` header's entries (`decode`, `model`, `total`), to the microsecond.
fn timing(header: &str, name: &str) -> Duration {
    header
        .split(',')
        .filter_map(|e| e.trim().split_once(";dur="))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .map_or(Duration::ZERO, |ms| Duration::from_secs_f64(ms / 1e3))
}

impl Traffic {
    /// One request's round trip `took` and the server's `Server-Timing` header.
    fn push(&mut self, took: Duration, server_timing: &str) {
        let m = timing(server_timing, "model");
        self.total.push(took);
        self.model.push(m);
        self.overhead.push(took.saturating_sub(m));
        self.handler.push(timing(server_timing, "total").saturating_sub(m));
        let d = timing(server_timing, "decode");
        self.decode.push(d);
        self.bare.push(took.saturating_sub(m).saturating_sub(d));
    }

    /// Prints the rows under `label`; the round trip and server-side figures less model time.
    fn report(&self, label: &str) -> (cascade_bench::Summary, cascade_bench::Summary, cascade_bench::Summary) {
        row(&format!("{label}: client round trip"), &summarise(self.total.clone()));
        row(&format!("{label}: model compute (reported)"), &summarise(self.model.clone()));
        let o = summarise(self.overhead.clone());
        row(&format!("{label}: round trip − model"), &o);
        let h = summarise(self.handler.clone());
        row(&format!("{label}: server-side, handler − model"), &h);
        row(&format!("{label}: server-side, decode"), &summarise(self.decode.clone()));
        let b = summarise(self.bare.clone());
        row(&format!("{label}: round trip − model − decode"), &b);
        (o, h, b)
    }
}

fn bare_server() -> SocketAddr {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        rt.block_on(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else { continue };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                        let out = format!("{{\"prediction\": 0.7, \"bytes\": {body}}}");
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(out))))
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
                });
            }
        })
    });
    addr
}

fn main() -> anyhow::Result<()> {
    let iters: usize = std::env::var("ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let root = repo();
    let models = root.join("target/test-models");
    if !models.join("tint.onnx").exists() {
        let ok = Command::new(root.join(".venv/bin/python"))
            .arg(root.join("tests/models/make_test_models.py"))
            .arg(&models)
            .status()?;
        anyhow::ensure!(ok.success(), "building the test model failed (run make setup)");
    }
    let dir = std::env::temp_dir().join(format!("cascade-http-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("models.toml"),
        format!(
            "[[model]]\nname = \"tint\"\nfile = \"{}\"\nkind = \"classifier\"\ninput = {{ width = 32, height = 32 }}\n",
            models.join("tint.onnx").display()
        ),
    )?;
    std::fs::write(dir.join("bench.toml"), POLICY)?;
    let (mut child, base) = cascade_bench::serve([std::ffi::OsStr::new("--policies"), dir.as_os_str()])?;
    // the same policy with the prediction log on (images off): its cost, measured in the same run
    // beside the first server's folder, not inside it: its log files would wake that server's
    // file watcher on every record
    let logged = dir.with_extension("logged");
    std::fs::create_dir_all(&logged)?;
    std::fs::copy(dir.join("models.toml"), logged.join("models.toml"))?;
    std::fs::write(logged.join("bench.toml"), format!("{POLICY}\n[log]\ndir = \"log\"\nimages = \"none\"\n"))?;
    let (mut child_log, base_log) = cascade_bench::serve([std::ffi::OsStr::new("--policies"), logged.as_os_str()])?;

    let jpeg = validator_jpeg();
    let body = serde_json::json!({"image": base64::engine::general_purpose::STANDARD.encode(&jpeg)}).to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
    let bare = format!("http://{}/", bare_server());
    let cascade_url = format!("{base}/v1/predict/bench");
    let logged_url = format!("{base_log}/v1/predict/bench");
    let mut with_log = Vec::new();

    let (mut same, mut fresh_img, mut peer) = (Traffic::default(), Traffic::default(), Vec::new());
    let post = |url: &str, body: &str| -> anyhow::Result<(Duration, serde_json::Value, String)> {
        let t = Instant::now();
        let mut r = agent.post(url).header("Content-Type", "application/json").send(body.as_bytes())?;
        let text = r.body_mut().read_to_string()?;
        let took = t.elapsed();
        let timing = r.headers().get("server-timing").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        Ok((took, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null), timing))
    };
    for i in 0..iters * 2 {
        let fresh = serde_json::json!({"image": base64::engine::general_purpose::STANDARD.encode(distinct_jpeg(&jpeg, i as u64))})
            .to_string();
        let (took, _, t) = post(&cascade_url, &body)?;
        let (took_fresh, vf, tf) = post(&cascade_url, &fresh)?;
        anyhow::ensure!(vf["prediction"].is_number(), "cascade answered {vf}");
        anyhow::ensure!(tf.contains("model;dur="), "no Server-Timing header: {tf:?}");
        let (took_peer, _, _) = post(&bare, &body)?;
        let (took_log, _, _) = post(&logged_url, &body)?;
        if i >= iters {
            with_log.push(took_log);
            same.push(took, &t);
            fresh_img.push(took_fresh, &tf);
            peer.push(took_peer);
        }
    }
    let mut decode = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        std::hint::black_box(cascade_common::image::decode_image(&jpeg, &Default::default())?);
        decode.push(t.elapsed());
    }
    let _ = child.kill();
    let _ = child_log.kill();
    let records = std::fs::read_dir(logged.join("log"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|t| t.lines().count())
                .sum::<usize>()
        })
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&logged);
    header(&format!(
        "one request: JSON body with a base64 224×224 JPEG ({} bytes), sequential keep-alive, {iters} each",
        jpeg.len()
    ));
    let mean = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64;
    let (rps, rps_log) = (1.0 / mean(&same.total), 1.0 / mean(&with_log));
    row("same image again + prediction log: round trip", &summarise(with_log));
    let (o, h, _) = same.report("same image again");
    let (od, hd, bd) = fresh_img.report("distinct image");
    let peer_s = summarise(peer);
    row("peer: bare hyper, read body, fixed JSON", &peer_s);
    let d = summarise(decode);
    row("JPEG decode alone (the server's decoder)", &d);
    println!(
        "prediction log: {rps:.0} req/s without, {rps_log:.0} req/s with ({:+.1} %; {records} records written; target: at most 5 % fewer)",
        100.0 * (rps_log - rps) / rps
    );
    println!(
        "\nhost overhead p50 above the bare-hyper floor (target ≤ 100 µs): same image again {:.1} µs (server-side {:.1} µs); distinct image {:.1} µs (server-side {:.1} µs; JPEG decode alone {:.1} µs), less its own decode {:.1} µs",
        o.p50 - peer_s.p50,
        h.p50,
        od.p50 - peer_s.p50,
        hd.p50,
        d.p50,
        bd.p50 - peer_s.p50
    );
    Ok(())
}

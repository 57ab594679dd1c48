//! The remote engines' client overhead: each call through the engine (queue, image encoding or
//! preparation, request building, reply parsing, breaker) against the peer, a direct HTTP POST
//! of a prebuilt request to the same server, in one run; then the latency of failures with the
//! server gone, before and after the circuit breaker opens.
//!
//!     cargo run --release -p cascade-bench --bin remote-bench -- [CALLS]
//!
//! Servers: the OpenAI chat-completions stand-in (`tests/standins/openai_chat.py`, .venv) and
//! MLServer (`.cache/mlserver-venv`, `scripts/mlserver_venv.sh`) serving the `tint` test model.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_bench::repo;
use cascade_engines::{JobInput, ModelKind, Models, Registry};
use serde_json::json;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

fn standin() -> anyhow::Result<(Proc, String)> {
    let mut child = Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("tests/standins/openai_chat.py"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
    let url = line.trim().strip_prefix("listening on ").unwrap_or_default().to_string();
    Ok((Proc(child), url))
}

fn mlserver(dir: &std::path::Path) -> anyhow::Result<(Proc, String)> {
    let port = free_port();
    std::fs::copy(repo().join("tests/kserve/onnx_runtime.py"), dir.join("onnx_runtime.py"))?;
    let settings = json!({"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0, "host": "127.0.0.1"});
    std::fs::write(dir.join("settings.json"), settings.to_string())?;
    std::fs::create_dir_all(dir.join("tint"))?;
    let tint = repo().join("target/test-models/tint.onnx");
    let s = json!({"name": "tint", "implementation": "onnx_runtime.OnnxModel", "parameters": {"uri": tint}});
    std::fs::write(dir.join("tint/model-settings.json"), s.to_string())?;
    let child = Command::new(repo().join(".cache/mlserver-venv/bin/mlserver"))
        .arg("start")
        .arg(dir)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(90);
    while ureq::get(&format!("{url}/v2/models/tint/ready")).call().map(|r| r.status() != 200).unwrap_or(true) {
        anyhow::ensure!(Instant::now() < until, "MLServer did not get ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((Proc(child), url))
}

/// Median and 99th percentile of `f`'s wall time over `n` calls, in ms.
/// Times `a` (the peer) and `b` (the engine) interleaved, call for call, so that a drift of
/// the machine or the server over the run weighs on both alike: (p50, p99) of each, in ms.
#[allow(clippy::type_complexity)]
fn time_pair(
    n: usize,
    mut a: impl FnMut() -> anyhow::Result<()>,
    mut b: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<((f64, f64), (f64, f64))> {
    for _ in 0..5 {
        a()?;
        b()?;
    }
    let (mut ta, mut tb): (Vec<f64>, Vec<f64>) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        // alternate which goes first
        let mut one = |peer: bool| -> anyhow::Result<()> {
            let s = Instant::now();
            if peer {
                a()?;
                ta.push(s.elapsed().as_secs_f64() * 1e3);
            } else {
                b()?;
                tb.push(s.elapsed().as_secs_f64() * 1e3);
            }
            Ok(())
        };
        one(i % 2 == 0)?;
        one(i % 2 == 1)?;
    }
    let q = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        (t[t.len() / 2], t[(t.len() * 99 / 100).min(t.len() - 1)])
    };
    Ok((q(ta), q(tb)))
}

fn main() -> anyhow::Result<()> {
    let calls: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let dir = std::env::temp_dir().join(format!("remote-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("mls"))?;
    let (_vlm, vlm_url) = standin()?;
    let (mut mls, mls_url) = mlserver(&dir.join("mls"))?;
    std::fs::write(
        dir.join("models.toml"),
        format!(
            r#"[[model]]
name = "vl"
kind = "vlm"
vlm = {{ url = "{vlm_url}", model = "standin-vl", retries = 0, breaker = {{ failures = 3, open_ms = 60000 }} }}

[[model]]
name = "remote-tint"
kind = "classifier"
labels = ["other", "roadwork"]
input = {{ width = 32, height = 32 }}
remote = {{ url = "{mls_url}", model = "tint", retries = 0, breaker = {{ failures = 3, open_ms = 60000 }} }}
"#
        ),
    )?;
    let reg = Registry::load(&dir.join("models.toml"))?;
    let models = Models::load(&reg, &cascade_engines::runtime_library()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let img = Arc::new(image::RgbImage::from_pixel(224, 224, image::Rgb([240, 120, 20])));
    let prompt = "Is there ACTIVE road construction in this image? Answer YES or NO.";
    let deadline = || Instant::now() + Duration::from_secs(5);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();

    // the VLM: engine vs a direct POST of the same request, prebuilt (image already encoded)
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).encode_image(&*img)?;
    use base64::Engine as _;
    let url = format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(jpeg.get_ref()));
    let body = json!({"model": "standin-vl", "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": url}}]}], "max_tokens": 16, "temperature": 0.0, "stream": false, "logprobs": true, "top_logprobs": 5}).to_string();
    let (vlm_direct, vlm_engine) = time_pair(
        calls,
        || {
            let mut r = agent
                .post(&format!("{vlm_url}/chat/completions"))
                .header("Content-Type", "application/json")
                .send(&body)?;
            r.body_mut().read_to_string()?;
            Ok(())
        },
        || {
            models.run("vl", ModelKind::Vlm, JobInput::Ask(img.clone(), prompt.into()), deadline())?.output?;
            Ok(())
        },
    )?;

    // KServe: engine (prepare 32×32, one FP32 tensor, parse) vs a direct POST of that tensor
    let tensor: Vec<f32> = (0..3 * 32 * 32).map(|i| [0.94, 0.47, 0.08][i / 1024]).collect();
    let kbody = json!({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": tensor}], "outputs": [{"name": "logits"}]}).to_string();
    let (ks_direct, ks_engine) = time_pair(
        calls,
        || {
            let mut r = agent
                .post(&format!("{mls_url}/v2/models/tint/infer"))
                .header("Content-Type", "application/json")
                .send(&kbody)?;
            r.body_mut().read_to_string()?;
            Ok(())
        },
        || {
            models.run("remote-tint", ModelKind::Classifier, JobInput::Image(img.clone()), deadline())?.output?;
            Ok(())
        },
    )?;

    // the servers gone: refused connections until the breaker opens, then fast failures
    drop(_vlm);
    mls.0.kill()?;
    mls.0.wait()?;
    let fail = |model: &str, kind: ModelKind, input: JobInput| -> (f64, bool) {
        let s = Instant::now();
        let r = models.run(model, kind, input, deadline()).map(|r| r.output.is_err());
        (s.elapsed().as_secs_f64() * 1e3, r.unwrap_or(true))
    };
    let mut rows = Vec::new();
    for (name, model, kind) in [("VLM", "vl", ModelKind::Vlm), ("KServe", "remote-tint", ModelKind::Classifier)] {
        let input = || match kind {
            ModelKind::Vlm => JobInput::Ask(img.clone(), prompt.into()),
            _ => JobInput::Image(img.clone()),
        };
        let refused: Vec<(f64, bool)> = (0..3).map(|_| fail(model, kind, input())).collect();
        let open_calls: Vec<(f64, bool)> = (0..calls).map(|_| fail(model, kind, input())).collect();
        // the verdicts: every call failed, and the breaker opened (the model says so)
        anyhow::ensure!(
            refused.iter().chain(&open_calls).all(|c| c.1),
            "{name}: a call succeeded with the server gone"
        );
        let breaker_open = models
            .stats()
            .find(|(m, _)| *m == model)
            .map(|(_, s)| s.breaker_open.load(std::sync::atomic::Ordering::Relaxed))
            .unwrap_or(0);
        anyhow::ensure!(breaker_open == 1, "{name}: the breaker did not open after 3 refused calls");
        let refused: Vec<f64> = refused.iter().map(|c| c.0).collect();
        let mut open: Vec<f64> = open_calls.iter().map(|c| c.0).collect();
        open.sort_by(f64::total_cmp);
        rows.push((name, refused.iter().sum::<f64>() / 3.0, open[calls / 2], open[calls * 99 / 100]));
    }

    println!("remote engines, {calls} calls each (ms; engine = through cascade's queue and client)");
    println!("| server | direct POST p50 | engine p50 | overhead p50 | direct p99 | engine p99 |");
    println!("|---|---|---|---|---|---|");
    for (name, d, e) in [
        ("VLM (OpenAI stand-in, 224² JPEG)", vlm_direct, vlm_engine),
        ("KServe v2 (MLServer, tint 32²)", ks_direct, ks_engine),
    ] {
        println!("| {name} | {:.3} | {:.3} | {:+.3} | {:.3} | {:.3} |", d.0, e.0, e.0 - d.0, d.1, e.1);
    }
    println!("\nserver gone (ms): connection refused (mean of the 3 calls that open the breaker), then fast failure");
    println!("| engine | refused | open p50 | open p99 |");
    println!("|---|---|---|---|");
    for (name, refused, p50, p99) in rows {
        println!("| {name} | {refused:.3} | {p50:.4} | {p99:.4} |");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

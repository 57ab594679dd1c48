//! The CPU default's answer against one plain fp32 call (issue 28): what a `speed` answer costs
//! the real server, with the classifier's DINOv2 in fp32 and in int8 (and int8 without the
//! mirrored second look), against the peer — one `session.run` of the fp32 DINOv2 file through
//! onnxruntime's own Python API with the same thread count (`bench/ort_peer.py`, the .venv's
//! onnxruntime, the same library version as the engine's). Same images, same run, interleaved
//! image by image: validator-style challenges of both labelled sets (`cascade challenges`,
//! levels 0-3, seed 72), each sent once to every server over HTTP as a JSON body.
//!
//!   cargo run --release -p cascade-bench --bin cpu-bench -- [--images 150] [--threads 2] [--hotkey speed]
//!
//! Prints one table: per side, the model time the server reported (`model_ms`) and its whole
//! time (`ms`) at p50 and mean, each against the peer's p50/mean, the share of answers that
//! took the second look, and how far int8's answers moved from fp32's.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use cascade_bench::repo;

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).cloned()
}

/// One side's samples, in ms.
#[derive(Default)]
struct Side {
    model: Vec<f64>,
    total: Vec<f64>,
    second_look: usize,
    predictions: Vec<f64>,
}

fn p50(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// A copy of the shipped policies whose registry paths are absolute, the classifier on `dino`
/// and, with `one_look`, the hotkey's second (mirrored) stage left out.
fn policies(root: &Path, out: &Path, hotkey: &str, dino: &str, one_look: bool) -> anyhow::Result<()> {
    let src = root.join("policies");
    std::fs::create_dir_all(out.join("calibration"))?;
    std::fs::create_dir_all(out.join("heads"))?;
    for sub in ["calibration", "heads"] {
        for e in std::fs::read_dir(src.join(sub))? {
            let p = e?.path();
            std::fs::copy(&p, out.join(sub).join(p.file_name().expect("name")))?;
        }
    }
    std::fs::copy(src.join("coco_labels.txt"), out.join("coco_labels.txt"))?;
    let target = root.join("target");
    // absolute paths, and the `roadwork` classifier's file replaced
    let mut model = String::new();
    let mut replaced = false;
    let mut registry = String::new();
    for l in std::fs::read_to_string(src.join("models.toml"))?.lines() {
        if l.trim() == "[[model]]" {
            model.clear();
        } else if let Some(n) = l.strip_prefix("name = ") {
            model = n.trim_matches('"').to_string();
        }
        let l = if model == "roadwork" && l.starts_with("file = ") {
            replaced = true;
            format!("file = \"{}\"", target.join("models").join(dino).display())
        } else {
            l.replace("\"../target/", &format!("\"{}/", target.display()))
        };
        registry.push_str(&l);
        registry.push('\n');
    }
    anyhow::ensure!(replaced, "the shipped registry has no `roadwork` classifier file to point at {dino}");
    std::fs::write(out.join("models.toml"), registry)?;
    let mut policy = std::fs::read_to_string(src.join(format!("{hotkey}.toml")))?;
    if one_look {
        // the stages after the first, up to the fuser
        let first = policy.find("[[router.params.stages]]").ok_or_else(|| anyhow::anyhow!("{hotkey} has no stages"))?;
        let second = policy[first + 1..].find("[[router.params.stages]]").map(|i| i + first + 1);
        let fuser = policy.find("[fuser]").unwrap_or(policy.len());
        if let Some(s) = second {
            policy.replace_range(s..fuser, "");
        }
    }
    std::fs::write(out.join(format!("{hotkey}.toml")), policy)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let n: usize = arg("--images").and_then(|v| v.parse().ok()).unwrap_or(150);
    let threads: usize = arg("--threads").and_then(|v| v.parse().ok()).unwrap_or(2);
    let hotkey = arg("--hotkey").unwrap_or_else(|| "speed".into());
    let root = repo();
    let work = std::env::temp_dir().join(format!("cascade-cpu-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let images = cascade_bench::challenges(&work, n)?;

    let sides = [
        ("fp32 DINOv2", "dinov2_vits14.onnx", false),
        ("int8 DINOv2", "dinov2_vits14_int8.onnx", false),
        ("int8 DINOv2, first look only", "dinov2_vits14_int8.onnx", true),
    ];
    let mut servers = Vec::new();
    for (i, (_, dino, one)) in sides.iter().enumerate() {
        let dir = work.join(format!("policies-{i}"));
        policies(&root, &dir, &hotkey, dino, *one)?;
        let components = root.join("target/components");
        let args = [
            OsStr::new("--no-watch"),
            OsStr::new("--components"),
            components.as_os_str(),
            OsStr::new("--policies"),
            dir.as_os_str(),
        ];
        servers.push(cascade_bench::serve(args)?);
    }
    let mut peer = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("bench/ort_peer.py"))
        .arg(root.join("target/models/dinov2_vits14.onnx"))
        .arg(threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut peer_in = peer.stdin.take().expect("stdin");
    let mut peer_out = BufReader::new(peer.stdout.take().expect("stdout"));
    let mut line = String::new();
    peer_out.read_line(&mut line)?;
    anyhow::ensure!(line.trim() == "ready", "the peer said {line:?}");

    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().into();
    let mut peer_ms = Vec::new();
    let mut got: Vec<Side> = sides.iter().map(|_| Side::default()).collect();
    let warm = 5.min(images.len());
    for (k, img) in images.iter().enumerate() {
        writeln!(peer_in, "{}", img.display())?;
        line.clear();
        peer_out.read_line(&mut line)?;
        let t: f64 = line.trim().parse().map_err(|_| anyhow::anyhow!("the peer said {line:?}"))?;
        let body = serde_json::json!({"image": base64::engine::general_purpose::STANDARD.encode(std::fs::read(img)?)})
            .to_string();
        let mut answers = Vec::new();
        for (_, base) in &servers {
            let mut r = agent
                .post(&format!("{base}/v1/predict/{hotkey}"))
                .header("Content-Type", "application/json")
                .send(body.as_bytes())?;
            let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
            anyhow::ensure!(v["prediction"].is_number(), "{} answered {v}", img.display());
            answers.push(v);
        }
        if k < warm {
            continue;
        }
        peer_ms.push(t);
        for (side, v) in got.iter_mut().zip(&answers) {
            side.model.push(v["model_ms"].as_f64().unwrap_or(0.0));
            side.total.push(v["ms"].as_f64().unwrap_or(0.0));
            side.predictions.push(v["prediction"].as_f64().unwrap_or(0.0));
            side.second_look += usize::from(v["stage"].as_str() != Some("classifier"));
        }
    }
    drop(peer_in);
    let _ = peer.wait();
    for (mut c, _) in servers {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&work);

    let (pp, pm) = (p50(&peer_ms), mean(&peer_ms));
    println!(
        "\n`{hotkey}` answers on the CPU, {} validator-style challenges (levels 0-3), each side interleaved image by image; \
         peer: one plain fp32 onnxruntime call, {threads} threads\n",
        peer_ms.len()
    );
    println!("| side | model ms p50 | mean | vs peer p50 | vs peer mean | server ms p50 | mean | second look | answers crossing 0.5 vs fp32 | largest change |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| peer: onnxruntime Python, fp32 DINOv2, one call | {pp:.1} | {pm:.1} | 1.00 | 1.00 | – | – | – | – | – |"
    );
    let reference = got[0].predictions.clone();
    for ((name, _, _), s) in sides.iter().zip(&got) {
        let crossing = s.predictions.iter().zip(&reference).filter(|(a, b)| (**a > 0.5) != (**b > 0.5)).count();
        let change = s.predictions.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        println!(
            "| `{hotkey}`, {name} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} | {:.0} % | {crossing} | {change:.3} |",
            p50(&s.model),
            mean(&s.model),
            p50(&s.model) / pp,
            mean(&s.model) / pm,
            p50(&s.total),
            mean(&s.total),
            100.0 * s.second_look as f64 / s.model.len().max(1) as f64
        );
    }
    println!("\ntarget (issue 28): a `{hotkey}` answer at most 0.75x the peer's call");
    Ok(())
}

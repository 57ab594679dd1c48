//! Remote engines over KServe v2 REST against a real KServe v2 server from PyPI (MLServer,
//! `tests/support/kserve.rs`) running real models: the `tint` test classifier, and the
//! shipped roadwork classifier's DINOv2 backbone with its head applied here. Remote results
//! must equal local ones; a server with the wrong output type, one that does not match the
//! registry, and one that dies are handled as the README says.

use std::time::{Duration, Instant};

use cascade_tests::kserve::MlServer;
use cascade_tests::*;

/// One MLServer at a time: each takes a core while it starts.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const ORANGE: [u8; 3] = [240, 120, 20];
const BLUE: [u8; 3] = [30, 60, 200];

fn remote_tint(name: &str, url: &str, model: &str, extra: &str) -> String {
    format!(
        "\n[[model]]\nname = \"{name}\"\nkind = \"classifier\"\nlabels = [\"other\", \"roadwork\"]\npositive = [\"roadwork\"]\ninput = {{ width = 32, height = 32 }}\nmax_batch = 8\nmax_delay_us = 50000\nremote = {{ url = \"{url}\", model = \"{model}\", timeout_ms = 10000, retries = 1, backoff_ms = 20, breaker = {{ failures = 2, open_ms = 60000 }} }}\n{extra}"
    )
}

/// A hotkey that asks `model` and, when that fails, the local `tint`.
fn hotkey(name: &str, model: &str) -> String {
    format!(
        "name = \"{name}\"\n[router]\ncomponent = \"cascade-router@^1\"\n[[router.params.stages]]\nname = \"remote\"\nclassify = [\"{model}\"]\nexit_low = 0.3\nexit_high = 0.7\n[[router.params.stages]]\nname = \"tint\"\nclassify = [\"tint\"]\n"
    )
}

fn ask(server: &Server, hk: &str, rgb: [u8; 3], width: u32) -> Value {
    let (status, v) = predict(server, hk, &jpeg(&solid(width, 48, rgb)));
    assert_eq!(status, 200, "{v}");
    v
}

#[test]
fn remote_models_answer_as_local_ones_and_failures_stay_typed() {
    let _one = serial();
    let tint = test_models().join("tint.onnx");
    let mut ml =
        MlServer::start(&[("tint", &tint, json!({})), ("tint-int", &tint, json!({"output_datatype": "INT64"}))]);
    let d = TempDir::new("kserve");
    let mut reg = test_registry();
    reg.push_str(&remote_tint("remote-tint", &ml.url, "tint", ""));
    reg.push_str(&remote_tint("remote-int", &ml.url, "tint-int", ""));
    d.write("models.toml", &reg);
    d.write("remote.toml", &hotkey("remote", "remote-tint"));
    d.write("wrongtype.toml", &hotkey("wrongtype", "remote-int"));
    d.write("local.toml", &hotkey("local", "tint"));
    let server = Server::start(&d.0, false, &[]);

    // the same answer as the local file, batched on the client side as for local models
    for rgb in [ORANGE, BLUE] {
        let (r, l) = (ask(&server, "remote", rgb, 64), ask(&server, "local", rgb, 64));
        assert_eq!(r["stage"], "remote", "{r}");
        assert!((num(&r["prediction"]) - num(&l["prediction"])).abs() < 1e-5, "remote {r} vs local {l}");
    }
    let handles: Vec<_> = (0..8u32)
        .map(|i| {
            let url = server.url("/v1/predict/remote");
            std::thread::spawn(move || post(&url, "image/jpeg", &jpeg(&solid(70 + i, 48, ORANGE))))
        })
        .collect();
    for h in handles {
        let (status, v) = h.join().expect("thread");
        assert_eq!(status, 200, "{v}");
    }
    let (_, metrics) = get(&server.url("/metrics"));
    // ten images went to the remote model; eight of them at once, with 50 ms to gather a batch:
    // fewer runs than images
    let count = |family: &str| -> f64 {
        let prefix = format!("{family}{{model=\"remote-tint\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().parse().expect("a number"))
            .unwrap_or(0.0)
    };
    let (runs, items) = (count("cascade_model_runs_total"), count("cascade_model_items_total"));
    assert!(items >= 10.0 && runs >= 1.0 && runs < items, "runs {runs}, items {items}: {metrics}");

    // the server answers INT64 where FP32 belongs: a typed error naming model and server,
    // not retried; the policy goes on with the local classifier
    let v = ask(&server, "wrongtype", ORANGE, 64);
    assert_eq!(v["stage"], "tint", "{v}");
    let t = v["trace"].to_string();
    assert!(
        t.contains("model remote-int")
            && t.contains("/v2/models/tint-int/infer")
            && t.contains("datatype INT64; expected FP32"),
        "{v}"
    );

    // the server dies: the attempt and its retry fail (two failures: the circuit opens), the
    // policy answers from the local classifier, and the next requests fail fast
    ml.kill();
    let v = ask(&server, "remote", ORANGE, 80);
    assert_eq!(v["stage"], "tint", "{v}");
    assert!(v["trace"].to_string().contains("connection"), "{v}");
    let started = Instant::now();
    let v = ask(&server, "remote", ORANGE, 82);
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    assert!(v["trace"].to_string().contains("circuit open"), "{v}");
}

#[test]
fn the_shipped_classifier_runs_remotely_with_its_head_here() {
    let _one = serial();
    let dino = repo().join("target/models/dinov2_vits14.onnx");
    let ml = MlServer::start(&[("dinov2", &dino, json!({}))]);
    let d = TempDir::new("kserve-dino");
    let heads = repo().join("policies/heads/roadwork.json");
    let input = r#"input = { width = 224, height = 224, resize = "center_crop", resize_short = 224, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }"#;
    let common = format!("kind = \"classifier\"\noutput = \"embedding\"\nhead = \"{}\"\nactivation = \"sigmoid\"\nlabels = [\"other\", \"roadwork\"]\npositive = [\"roadwork\"]\n{input}\n", heads.display());
    d.write(
        "models.toml",
        &format!(
            "[[model]]\nname = \"local\"\nfile = \"{}\"\n{common}\n[[model]]\nname = \"remote\"\n{common}remote = {{ url = \"{}\", model = \"dinov2\", timeout_ms = 5000 }}\n",
            dino.display(),
            ml.url
        ),
    );
    let img = shared().join("data/roadwork-more").join(first_image());
    let score = |model: &str| {
        let out =
            cascade().args(["infer", "--model", model, "--policies"]).arg(&d.0).arg(&img).output().expect("infer");
        assert!(out.status.success(), "{model}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        num(&v["result"]["score"])
    };
    let (local, remote) = (score("local"), score("remote"));
    assert!((local - remote).abs() < 1e-4, "local {local} vs remote {remote}");
}

/// The first image of the street-level set.
fn first_image() -> String {
    let m = std::fs::read_to_string(shared().join("data/roadwork-more/manifest.csv")).expect("manifest");
    m.lines().nth(1).and_then(|l| l.split(',').next()).expect("a row").to_string()
}

#[test]
fn a_server_that_does_not_fit_the_registry_is_refused_at_load() {
    let _one = serial();
    let tint = test_models().join("tint.onnx");
    let ml = MlServer::start(&[("tint", &tint, json!({}))]);
    let comps = components(false);
    let d = TempDir::new("kserve-refused");
    let wrong_size =
        remote_tint("r", &ml.url, "tint", "").replace("width = 32, height = 32", "width = 64, height = 64");
    for (entry, says) in [
        (
            wrong_size,
            "expected input [N, 3, 64, 64] (the registry's size); the server has input [-1, 3, 32, 32]".to_string(),
        ),
        (remote_tint("r", &ml.url, "nope", ""), "/v2/models/nope: HTTP 404".to_string()),
        (
            remote_tint("r", "http://127.0.0.1:9", "tint", ""),
            "KServe metadata: http://127.0.0.1:9/v2/models/tint: connection".to_string(),
        ),
        (
            remote_tint("r", &ml.url, "tint", "output = \"probs\""),
            "expected an output named probs; the server's model has [\"logits\"]".to_string(),
        ),
    ] {
        d.write("models.toml", &entry);
        let (code, out) = run(&["check"], &d.0, &comps.0);
        assert_ne!(code, 0, "{entry}: {out}");
        assert!(out.contains(&says), "{says}: {out}");
    }
}

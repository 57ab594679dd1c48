//! Support for the integration tests: start the real `cascade` binary on a free port with a
//! policies folder written by the test, talk HTTP to it, make images.

use std::io::{BufRead, BufReader, Cursor};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

pub use serde_json::{json, Value};

pub mod kserve;
pub mod standin;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// `../shared` beside the repository (or `CASCADE_SHARED`).
pub fn shared() -> PathBuf {
    std::env::var_os("CASCADE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().parent().expect("parent").join("shared"))
}

pub fn binary() -> PathBuf {
    let b = repo().join("target/release/cascade");
    assert!(b.exists(), "{} is missing: run `make setup`", b.display());
    b
}

/// The `cascade` binary as a command, pointed at the ONNX Runtime library set-up installed.
pub fn cascade() -> Command {
    let mut c = Command::new(binary());
    c.env("ORT_DYLIB_PATH", repo().join("target/ort/libonnxruntime.so"));
    c
}

/// Runs `cascade infer --model MODEL` on one image; returns the text of the lines it read.
pub fn read_text(policies: &Path, model: &str, image: &Path) -> (Value, String) {
    let out = cascade()
        .args(["infer", "--model", model, "--policies"])
        .arg(policies)
        .arg(image)
        .output()
        .expect("run cascade infer");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let lines: Vec<String> = v["result"]
        .as_array()
        .map(|a| a.iter().map(|l| l["text"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default();
    (v, lines.join(" "))
}

pub fn test_models() -> PathBuf {
    let d = repo().join("target/test-models");
    assert!(d.join("tint.onnx").exists(), "test models missing: run scripts/test.sh (it builds them)");
    d
}

/// A scratch folder, removed on drop.
pub struct TempDir(pub PathBuf);

/// Scratch folders made by this process so far: every test runs in one process (`tests/it`),
/// so the process id alone does not keep two tests' folders apart.
static TEMP_DIRS: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    /// A new, empty folder of its own, even for two tests that ask with the same tag at once.
    pub fn new(tag: &str) -> TempDir {
        let n = TEMP_DIRS.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("cascade-test-{tag}-{}-{n}-{}", std::process::id(), nanos()));
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// The model registry the tests use: the `tint` classifier and embedder built by
/// `tests/models/make_test_models.py`, and YOLOX-Nano from `../shared`.
pub fn test_registry() -> String {
    let m = test_models();
    let y = shared().join("models/yolox_nano");
    format!(
        r#"
[[model]]
name = "tint"
file = "{tint}"
kind = "classifier"
labels = ["other", "roadwork"]
positive = ["roadwork"]
input = {{ width = 32, height = 32 }}
max_batch = 8
max_delay_us = 200

[[model]]
name = "tint-embed"
file = "{embed}"
kind = "embedder"
input = {{ width = 32, height = 32 }}

[[model]]
name = "ocr"
kind = "ocr"
file = "{ocr}/ch_PP-OCRv4_det_infer.onnx"
ocr = {{ rec = "{ocr}/ch_PP-OCRv4_rec_infer.onnx", cls = "{ocr}/ch_ppocr_mobile_v2.0_cls_infer.onnx", det_short = 480 }}

[[model]]
name = "yolox"
file = "{yolox}"
kind = "detector"
labels_file = "{labels}"
input = {{ width = 416, height = 416, color = "bgr", scale = 1.0, resize = "letterbox", pad = 114.0 }}
"#,
        tint = m.join("tint.onnx").display(),
        embed = m.join("tint_embed.onnx").display(),
        yolox = y.join("yolox_nano.onnx").display(),
        labels = y.join("coco_classes.txt").display(),
        ocr = repo().join("target/models/ocr").display(),
    )
}

/// An image rendered by `tests/models/render_signs.py` (run by scripts/test.sh).
pub fn sign(name: &str) -> Vec<u8> {
    let p = repo().join("target/test-images").join(format!("{name}.jpg"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (scripts/test.sh renders it)", p.display()))
}

/// A policies folder with the test registry and the given hotkey files.
pub fn policies(tag: &str, hotkeys: &[(&str, &str)]) -> TempDir {
    let d = TempDir::new(tag);
    d.write("models.toml", &test_registry());
    for (name, text) in hotkeys {
        d.write(&format!("{name}.toml"), text);
    }
    d
}

/// Components built by set-up, plus the test-only ones when asked.
pub fn components(with_test_components: bool) -> TempDir {
    let d = TempDir::new("components");
    let mut dirs = vec![repo().join("target/components")];
    if with_test_components {
        dirs.push(repo().join("target/test-components"));
    }
    for dir in dirs {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e} (run make setup)", dir.display())) {
            let p = e.expect("entry").path();
            // components for contracts this host refuses are added by the tests that want them
            let future = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("future_"));
            if p.extension().is_some_and(|x| x == "wasm") && !future {
                std::fs::copy(&p, d.0.join(p.file_name().expect("name"))).expect("copy component");
            }
        }
    }
    d
}

/// A test-only component built by set-up (`target/test-components`).
pub fn test_component(file: &str) -> Vec<u8> {
    let p = repo().join("target/test-components").join(file);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run make setup)", p.display()))
}

/// A small image the `tint` classifier scores above 0.5 (orange).
pub fn tint_high() -> Vec<u8> {
    png(&solid(16, 16, [255, 90, 0]))
}

/// Small images the `tint` classifier scores below 0.5 (blues), distinct for each `i`.
pub fn tint_low(i: u32) -> Vec<u8> {
    png(&solid(16, 16, [0, (i * 7 % 60) as u8, 200]))
}

/// Serves two hotkeys on policy components built by set-up and checks their answers: `looks`, a
/// template router (`router`, always looking twice on `tint`) fused 1:3 by `fuser`; `text`, the
/// Rust router's tint and OCR stages with `text_scorer` (0.95 for "road work") and `text_fuser`.
/// Every role is served by the named components, whatever their language.
pub fn serve_every_role(tag: &str, files: &[&str], router: &str, fuser: &str, text_scorer: &str, text_fuser: &str) {
    let looks = format!(
        "name = \"looks\"\n[router]\ncomponent = \"{router}@^0\"\nparams = {{ model = \"tint\", unsure = [0.0, 1.0] }}\n\
         [fuser]\ncomponent = \"{fuser}@^0\"\nparams.weights = {{ tint = 1.0, \"tint:flip\" = 3.0 }}\n"
    );
    let text = format!(
        r#"
name = "text"
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "tint"
classify = ["tint"]
[[router.params.stages]]
name = "text"
read_text = "ocr"
on_error = "fail"
[text_scorer]
component = "{text_scorer}@^0"
params = {{ words = ["road work", "baustelle"] }}
[fuser]
component = "{text_fuser}@^0"
params.weights = {{ tint = 0.01, text = 2.0 }}
"#
    );
    let dir = policies(tag, &[("looks", &looks), ("text", &text)]);
    let server = Server::start_with(&dir.0, false, files, &[]);
    let score = |v: &Value, i: usize| -> f64 {
        v["trace"][i]["result"].as_str().unwrap_or("").trim_start_matches("score=").parse().expect("a score")
    };
    for i in 0..4 {
        let (s, v) = predict(&server, "looks", &tint_low(i));
        assert_eq!(s, 200, "{v}");
        // unsure everywhere: both looks, fused 1:3
        assert_eq!(v["stage"], "classifier-flip", "{v}");
        let want = (score(&v, 0) + 3.0 * score(&v, 1)) / 4.0;
        assert!((num(&v["prediction"]) - want).abs() < 2e-4, "{want} vs {v}");
    }
    // the scorer's 0.95 for the words, nothing for a speed limit
    let (s, v) = predict(&server, "text", &sign("road_work_ahead"));
    assert_eq!(s, 200, "{v}");
    assert!(v["reason"].as_str().unwrap_or("").contains("text=0.950") && num(&v["prediction"]) > 0.9, "{v}");
    let (s, v) = predict(&server, "text", &sign("speed_limit"));
    assert_eq!(s, 200, "{v}");
    assert!(!v["reason"].as_str().unwrap_or("").contains("text="), "{v}");
    let st = status(&server);
    for (hotkey, role, c) in [
        ("looks", "router", router),
        ("looks", "fuser", fuser),
        ("text", "text_scorer", text_scorer),
        ("text", "fuser", text_fuser),
    ] {
        assert_eq!(st["hotkeys"][hotkey][role]["component"], c, "{st}");
    }
}

/// A server whose hotkeys each bind the misbehaving test router `component` (built by set-up as
/// `file`) on `tint` with `fallback = 0.3`, misbehaving above 0.5 as each hotkey's extra
/// parameters (TOML inline-table entries) say.
pub fn misbehaving_server(tag: &str, component: &str, file: &str, hotkeys: &[(&str, &str)]) -> (TempDir, Server) {
    let texts: Vec<(&str, String)> = hotkeys
        .iter()
        .map(|(name, params)| {
            let text = format!(
                "name = \"{name}\"\nfallback = 0.3\n[router]\ncomponent = \"{component}@^0\"\n\
                 params = {{ model = \"tint\", above = 0.5, {params} }}\n"
            );
            (*name, text)
        })
        .collect();
    let refs: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let dir = policies(tag, &refs);
    let server = Server::start_with(&dir.0, false, &[file], &[]);
    (dir, server)
}

/// A hotkey whose stable arm is the Rust router's one `tint` stage (`fallback = 0.3`), with the
/// `candidate_router` (a TOML inline table) under the `rollout` section's lines.
pub fn rollout_hotkey(name: &str, rollout: &str, candidate_router: &str) -> String {
    format!(
        r#"
name = "{name}"
fallback = 0.3
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "stable"
classify = ["tint"]
on_error = "fail"

[candidate]
router = {candidate_router}

[rollout]
{rollout}
"#
    )
}

/// A Python or JavaScript policy component built by set-up (`target/policy-components`).
pub fn policy_component(file: &str) -> PathBuf {
    let p = repo().join("target/policy-components").join(file);
    assert!(p.is_file(), "{}: missing (run make setup)", p.display());
    p
}

/// The shipped registry with its relative paths made absolute, in a folder of its own, beside
/// `hotkeys` (file name, text).
pub fn shipped_registry_with(tag: &str, hotkeys: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new(tag);
    let pol = repo().join("policies");
    let registry = std::fs::read_to_string(pol.join("models.toml")).expect("registry");
    let registry = registry
        .replace("\"../", &format!("\"{}/", repo().display()))
        .replace("\"heads/", &format!("\"{}/heads/", pol.display()))
        .replace("\"coco_labels.txt\"", &format!("\"{}/coco_labels.txt\"", pol.display()));
    dir.write("models.toml", &registry);
    for (name, text) in hotkeys {
        dir.write(name, text);
    }
    dir
}

/// A running `cascade serve`; killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    pub log: PathBuf,
    /// The server's own copy of the components folder (tests may change it).
    pub components: TempDir,
}

impl Server {
    pub fn start(policies: &Path, test_components: bool, extra: &[&str]) -> Server {
        Server::start_env(policies, test_components, extra, &[])
    }

    /// `start` with environment variables for the server (API keys, say).
    pub fn start_env(policies: &Path, test_components: bool, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_full(policies, test_components, &[], extra, env)
    }

    /// `start` with policy components built by set-up (`target/policy-components`, by file
    /// name) added to the server's components folder.
    pub fn start_with(policies: &Path, test_components: bool, policy_components: &[&str], extra: &[&str]) -> Server {
        Server::start_full(policies, test_components, policy_components, extra, &[])
    }

    fn start_full(
        policies: &Path,
        test_components: bool,
        policy_components: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let comps = components(test_components);
        for f in policy_components {
            std::fs::copy(policy_component(f), comps.0.join(f)).expect("copy a policy component");
        }
        let log = policies.join("server.log");
        let mut child = cascade()
            .envs(env.iter().copied())
            .args(["serve", "--listen", "127.0.0.1:0", "--policies"])
            .arg(policies)
            .arg("--components")
            .arg(&comps.0)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn cascade");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
        };
        Server { child, base, log, components: comps }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A figure of the server process's `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGINT (Ctrl-C) and waits up to `secs` for the exit; its status, or None if it
    /// is still running then.
    pub fn interrupt(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        self.signal("INT");
        self.wait_exit(secs)
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
    }

    /// Waits up to `secs` for the process to exit; its status, or None if it still runs.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `secs` with `what`.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /admin/status` as JSON.
pub fn status(server: &Server) -> Value {
    let (s, body) = get(&server.url("/admin/status"));
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

/// The refusals `/admin/status` lists, as "file: reason" lines.
pub fn refusals(server: &Server) -> Vec<String> {
    status(server)["refusals"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| format!("{}: {}", r["file"].as_str().unwrap_or(""), r["reason"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

/// POST with a content type; returns the status and the body as JSON (or a string).
pub fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let (status, v, _) = post_timed(url, content_type, body);
    (status, v)
}

/// `post`, with the answer's `Server-Timing` header (empty when there is none).
pub fn post_timed(url: &str, content_type: &str, body: &[u8]) -> (u16, Value, String) {
    let mut r =
        agent().post(url).header("Content-Type", content_type).send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    let timing = r.headers().get("server-timing").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), timing)
}

pub fn get(url: &str) -> (u16, String) {
    let mut r = agent().get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
}

/// POST `{"image": base64}` to a hotkey.
pub fn predict(server: &Server, hotkey: &str, image: &[u8]) -> (u16, Value) {
    use base64::Engine as _;
    let body = json!({"image": base64::engine::general_purpose::STANDARD.encode(image)});
    post(&server.url(&format!("/v1/predict/{hotkey}")), "application/json", body.to_string().as_bytes())
}

pub fn solid(w: u32, h: u32, rgb: [u8; 3]) -> image::RgbImage {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
}

pub fn jpeg(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).expect("encode jpeg");
    out.into_inner()
}

pub fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("encode png");
    out.into_inner()
}

/// A number from a JSON value, or a panic naming the value.
pub fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Runs a one-shot `cascade` command (`check`, `serve` that fails) on these folders.
pub fn run(args: &[&str], policies: &std::path::Path, components: &std::path::Path) -> (i32, String) {
    let out = cascade()
        .args(args)
        .arg("--policies")
        .arg(policies)
        .arg("--components")
        .arg(components)
        .output()
        .expect("run cascade");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// The smallest hotkey file over the test registry: one `tint` classifier stage, fallback 0.3.
pub fn tint_hotkey(name: &str) -> String {
    format!(
        "name = \"{name}\"\nfallback = 0.3\n[router]\ncomponent = \"cascade-router@^1\"\n[[router.params.stages]]\nname = \"tint\"\nclassify = [\"tint\"]\n"
    )
}

/// A registry of the tint embedder and a `roadwork` classifier on `classifier_file` with the
/// head `head.json` beside it (the accuracy and calibration tests train that head).
pub fn head_registry(dir: &TempDir, classifier_file: &std::path::Path, side: u32) -> std::path::PathBuf {
    head_registry_with(dir, classifier_file, "embedding", side, "")
}

/// The same with the classifier's output and extra input settings chosen.
pub fn head_registry_with(
    dir: &TempDir,
    classifier_file: &std::path::Path,
    output: &str,
    side: u32,
    input_extra: &str,
) -> std::path::PathBuf {
    let m = test_models();
    dir.write(
        "models.toml",
        &format!(
            r#"
[[model]]
name = "tint-embed"
file = "{embed}"
kind = "embedder"
input = {{ width = 32, height = 32 }}

[[model]]
name = "roadwork"
file = "{classifier}"
kind = "classifier"
output = "{output}"
head = "head.json"
activation = "sigmoid"
labels = ["other", "roadwork"]
positive = ["roadwork"]
input = {{ width = {side}, height = {side}{input_extra} }}
"#,
            embed = m.join("tint_embed.onnx").display(),
            classifier = classifier_file.display(),
        ),
    );
    dir.0.clone()
}

/// `cascade train-head` of [`head_registry`]'s head (`head.json` in `dir`) on the tint embedder,
/// over `manifest`, without cross-validation; panics with train-head's error when it fails.
pub fn train_tint_head(dir: &TempDir, manifest: &std::path::Path, epochs: &str) {
    let out = cascade()
        .args(["train-head", "--backbone", "tint-embed", "--cv", "none", "--epochs", epochs, "--policies"])
        .arg(&dir.0)
        .arg("--manifest")
        .arg(manifest)
        .arg("--out")
        .arg(dir.0.join("head.json"))
        .output()
        .expect("train-head");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Orange-ish scenes are roadwork, blue-grey ones are not; a little texture so views differ.
pub fn scene(roadwork: bool, k: u32) -> image::RgbImage {
    image::RgbImage::from_fn(96 + 8 * k, 80, |x, y| {
        let t = ((x * 7 + y * 13 + k * 5) % 23) as u8;
        if roadwork {
            image::Rgb([200 + t, 110 + t, 30])
        } else {
            image::Rgb([60 + t, 90 + t, 150 + t])
        }
    })
}

/// A validator's query at `miner`'s axon with a zero signature (refused for it, or earlier for
/// want of a snapshot): its status.
pub fn unsigned_synapse(server: &Server, miner: &str, validator: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let r = agent
        .post(&server.url("/ImageSynapse"))
        .header("bt_header_axon_hotkey", miner)
        .header("bt_header_dendrite_hotkey", validator)
        .header("bt_header_dendrite_uuid", "u")
        .header("bt_header_dendrite_nonce", "1899999999999999999")
        .header("bt_header_dendrite_signature", "0x00")
        .header("computed_body_hash", "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a")
        .send(&b"{}"[..])
        .expect("send");
    r.status().as_u16()
}

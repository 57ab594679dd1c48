//! Broken configs and components stop `serve` with the file and the reason; `check` reports
//! every problem, not only the first.

use cascade_tests::*;

const GOOD: &str = r#"
name = "good"
fallback = 0.3
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "tint"
classify = ["tint"]
"#;

/// Unknown key inside the router's parameters: refused by the component's schema.
const UNKNOWN_PARAM: &str = r#"
name = "typo"
fallback = 0.3
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "tint"
classify = ["tint"]
exit_lo = 0.1
"#;

/// Ill-typed parameter and a missing component version.
const ILL_TYPED: &str = r#"
name = "typed"
fallback = 0.3
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "tint"
classify = ["tint"]
exit_high = "high"
[fuser]
component = "weighted@^7"
params.weights = { tint = 1.0 }
"#;

#[test]
fn check_reports_every_problem_and_serve_refuses_to_start() {
    let comps = components(false);
    std::fs::write(comps.0.join("broken.wasm"), b"\0asm but not really").expect("write");
    let dir = policies("startup", &[("good", GOOD), ("typo", UNKNOWN_PARAM), ("typed", ILL_TYPED)]);

    let (code, out) = run(&["check"], &dir.0, &comps.0);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken.wasm: not a valid component"), "{out}");
    assert!(out.contains("typo.toml: router.params.stages[0].exit_lo: unknown key"), "{out}");
    assert!(out.contains("typed.toml: router.params.stages[0].exit_high: expected number, found string"), "{out}");
    // every problem of a file on its line, each file once
    assert!(out.contains("; fuser.component: no version of weighted matches ^7"), "{out}");
    assert!(out.contains("3 problem(s)"), "{out}");

    let (code, out) = run(&["serve", "--listen", "127.0.0.1:0", "--strict-start"], &dir.0, &comps.0);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("typo.toml: router.params.stages[0].exit_lo: unknown key"), "{out}");
    assert!(!out.contains("listening on"), "{out}");

    // by default the good hotkey is served and the refused files are listed until fixed
    let server = Server::start(&dir.0, false, &[]);
    assert_eq!(predict(&server, "good", &jpeg(&solid(32, 32, [200, 90, 10]))).0, 200);
    let refused = refusals(&server);
    assert!(
        refused.iter().any(|r| r.contains("exit_lo")) && refused.iter().any(|r| r.contains("weighted")),
        "{refused:?}"
    );
    assert!(server.log().contains("starting with the files above refused"), "{}", server.log());
    assert_eq!(predict(&server, "typo", &jpeg(&solid(32, 32, [200, 90, 10]))).0, 404);
}

#[test]
fn check_passes_a_good_folder_and_names_what_would_run() {
    let comps = components(false);
    let dir = policies("startup-good", &[("good", GOOD)]);
    let (code, out) = run(&["check"], &dir.0, &comps.0);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hotkey      good router=cascade-router@1.3.1"), "{out}");
    assert!(out.contains("model       yolox detector"), "{out}");
}

#[test]
fn config_errors_name_file_and_key() {
    let comps = components(false);
    let bad_toml = "name = \"x\"\nfallback = 0.5\n[router]\ncomponent = \"cascade-router@^1\"\n";
    let unknown_top = format!("{GOOD}\nsurprise = true\n").replace("name = \"good\"", "name = \"other\"");
    let missing_model = GOOD.replace("name = \"good\"", "name = \"ghost\"").replace("[\"tint\"]", "[\"ghost-model\"]");
    let dir = policies("startup-config", &[("half", bad_toml), ("top", &unknown_top), ("ghost", &missing_model)]);
    let (code, out) = run(&["check"], &dir.0, &comps.0);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("half.toml: fallback 0.5"), "{out}");
    assert!(out.contains("top.toml:") && out.contains("surprise"), "{out}");
    // a policy whose only model is missing cannot answer its smoke request
    assert!(out.contains("ghost.toml: smoke request failed") && out.contains("unknown model ghost-model"), "{out}");
    // with the stage that names it and what the registry has
    let line = out.lines().find(|l| l.contains("ghost-model")).unwrap_or_default();
    assert!(
        line.contains("; named by stage ")
            && line.contains("; the registry (models.toml) has: ")
            && line.contains("tint"),
        "{line}"
    );
    // each problem once, and counted right: no log line repeats a refusal of the first load
    let problems = out.lines().filter(|l| l.starts_with("problem")).count();
    assert_eq!(problems, 3, "{out}");
    assert!(out.contains("\n3 problem(s)\n"), "{out}");
    assert!(!out.contains("keeps serving"), "nothing serves yet: {out}");
}

#[test]
fn broken_models_are_refused_by_name_with_expected_and_found() {
    let comps = components(false);
    let dir = TempDir::new("models");
    let m = test_models();
    let truncated = dir.0.join("truncated.onnx");
    let bytes = std::fs::read(m.join("tint.onnx")).expect("tint");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).expect("write");
    let registry = format!(
        r#"
[[model]]
name = "wrong-size"
file = "{tint}"
kind = "classifier"
input = {{ width = 64, height = 64 }}

[[model]]
name = "wrong-output"
file = "{tint}"
kind = "classifier"
output = "probabilities"
input = {{ width = 32, height = 32 }}

[[model]]
name = "cut-short"
file = "{truncated}"
kind = "classifier"
input = {{ width = 32, height = 32 }}

[[model]]
name = "not-there"
file = "{missing}"
kind = "classifier"

[[model]]
name = "fixed-batch"
file = "{fixed}"
kind = "classifier"
input = {{ width = 32, height = 32 }}
max_batch = 8
"#,
        tint = m.join("tint.onnx").display(),
        truncated = truncated.display(),
        missing = dir.0.join("missing.onnx").display(),
        fixed = m.join("tint_fixed.onnx").display(),
    );
    dir.write("models.toml", &registry);
    dir.write("good.toml", GOOD);
    let (code, out) = run(&["check"], &dir.0, &comps.0);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("model wrong-size: expected input [N, 3, 64, 64] (the registry's size); found input with shape [-1, 3, 32, 32]"), "{out}");
    assert!(
        out.contains("model wrong-output: expected an output named probabilities; the model has [\"logits\"]"),
        "{out}"
    );
    assert!(out.contains("model cut-short (") && out.contains("truncated.onnx"), "{out}");
    assert!(out.contains("model not-there: file") && out.contains("not found"), "{out}");
    assert!(out.contains("model fixed-batch: input batch dimension is fixed at 1; max_batch 8 is too large"), "{out}");
}

#[test]
fn cuda_requested_without_cuda_fails_at_load_unless_cpu_fallback() {
    let comps = components(false);
    let dir = TempDir::new("cuda");
    let tint = test_models().join("tint.onnx");
    let reg = |fallback: bool| {
        format!(
            "[[model]]\nname = \"tint\"\nfile = \"{}\"\nkind = \"classifier\"\ninput = {{ width = 32, height = 32 }}\ndevice = \"cuda:0\"\ncpu_fallback = {fallback}\n",
            tint.display()
        )
    };
    dir.write("good.toml", GOOD);
    dir.write("models.toml", &reg(false));
    let (code, out) = run(&["check"], &dir.0, &comps.0);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("model tint: asks for device cuda:0 but CUDA cannot be used here"), "{out}");
    dir.write("models.toml", &reg(true));
    let (code, out) = run(&["check"], &dir.0, &comps.0);
    assert_eq!(code, 0, "with cpu_fallback the model runs on the CPU: {out}");
    assert!(out.contains("CUDA unavailable; running on the CPU"), "{out}");
}

/// The value of one sample line of `/metrics`, e.g. `cascade_model_loaded{model="tint"}`.
fn metric(server: &Server, sample: &str) -> Option<f64> {
    let (_, text) = get(&server.url("/metrics"));
    text.lines().find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

#[test]
fn a_lazy_model_loads_on_use_unloads_when_idle_and_is_still_checked_at_start() {
    let tint = test_models().join("tint.onnx");
    let reg = |file: &std::path::Path| {
        format!(
            "[[model]]\nname = \"tint\"\nfile = \"{}\"\nkind = \"classifier\"\nlabels = [\"other\", \"roadwork\"]\ninput = {{ width = 32, height = 32 }}\nlazy = true\nidle_unload_s = 1\n",
            file.display()
        )
    };
    let dir = policies("lazy", &[("good", GOOD)]);
    dir.write("models.toml", &reg(&tint));
    let server = Server::start(&dir.0, false, &["--no-watch"]);
    let loaded = "cascade_model_loaded{model=\"tint\"}";
    let loads = "cascade_model_loads_total{model=\"tint\"}";
    // the start-up smoke request loaded it; idle for a second, it is unloaded
    eventually(10, "the idle lazy model is unloaded", || (metric(&server, loaded) == Some(0.0)).then_some(()));
    let before = metric(&server, loads).expect("loads metric");
    let (code, body) = predict(&server, "good", &jpeg(&solid(64, 64, [200, 120, 20])));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["fallback"], false, "answered by the model, not the fallback: {body}");
    assert_eq!(body["stage"], "tint", "{body}");
    assert_eq!(metric(&server, loads), Some(before + 1.0), "a request reloads it");
    eventually(10, "unloaded again", || (metric(&server, loaded) == Some(0.0)).then_some(()));
    drop(server);

    // a broken file is refused at start even though the model would load only on use
    let bad = dir.write("truncated.onnx", "not a model");
    dir.write("models.toml", &reg(&bad));
    let comps = components(false);
    let (code, out) = run(&["check"], &dir.0, &comps.0);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("model tint") && out.contains("truncated.onnx"), "{out}");
}

#[test]
fn infer_names_the_models_it_has_and_an_optional_one_left_out() {
    let dir = TempDir::new("infer-names");
    let tint = test_models().join("tint.onnx");
    dir.write(
        "models.toml",
        &format!(
            "[[model]]\nname = \"tint\"\nfile = \"{}\"\nkind = \"classifier\"\ninput = {{ width = 32, height = 32 }}\n\n[[model]]\nname = \"ghost\"\nfile = \"ghost.onnx\"\nkind = \"detector\"\noptional = true\ninput = {{ width = 32, height = 32 }}\n",
            tint.display()
        ),
    );
    let img = dir.0.join("x.png");
    std::fs::write(&img, png(&solid(32, 32, [10, 20, 30]))).expect("write");
    let infer = |model: &str| {
        let out = cascade()
            .args(["infer", "--model", model, "--policies"])
            .arg(&dir.0)
            .arg(&img)
            .output()
            .expect("run cascade infer");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (ok, err) = infer("nope");
    assert!(!ok && err.contains("no model nope in the registry (it has tint)"), "{err}");
    let (ok, err) = infer("ghost");
    assert!(
        !ok && err.contains("model ghost is optional and left out") && err.contains("ghost.onnx is absent"),
        "{err}"
    );
    let (ok, err) = infer("tint");
    assert!(ok, "{err}");
}

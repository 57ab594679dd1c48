//! Policies written in Python (componentize-py, built by set-up into target/policy-components):
//! served beside the Rust components in every role, the Python `accuracy` answering as the Rust
//! one on dev images, failures turned into counted errors while the instance keeps serving, the
//! build's refusals, and a canary from a Rust arm to a Python one and back.

use std::path::Path;

use cascade_tests::*;

const ROUTER: &str = "py-template-router.wasm";
const TEXT: &str = "py-template-text-scorer.wasm";
const FUSER: &str = "py-template-fuser.wasm";
const MISBEHAVE: &str = "py-python-misbehave.wasm";

#[test]
fn python_components_serve_every_role_beside_the_rust_ones() {
    // a Python router and fuser; a Rust router asking the Python text scorer
    let files = [ROUTER, TEXT, FUSER];
    serve_every_role(
        "python-roles",
        &files,
        "py-template-router",
        "py-template-fuser",
        "py-template-text-scorer",
        "py-template-fuser",
    );
}

/// `n` labelled dev images of each class from both data sets, in manifest order.
fn dev_images(n: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for set in ["roadwork-dev", "roadwork-more"] {
        let root = shared().join("data").join(set);
        let m = std::fs::read_to_string(root.join("manifest.csv")).expect("manifest");
        for label in ["0", "1"] {
            let rows = m.lines().skip(1).filter(|l| l.split(',').nth(1) == Some(label));
            for row in rows.step_by(37).take(n) {
                let path = row.split(',').next().unwrap_or("").to_string();
                out.push((format!("{set}/{path}"), std::fs::read(root.join(&path)).expect("image")));
            }
        }
    }
    out
}

#[test]
fn the_python_and_javascript_accuracy_answer_as_the_rust_components_on_dev_images() {
    let shipped = std::fs::read_to_string(repo().join("policies/accuracy.toml")).expect("accuracy.toml");
    // calibrations are fitted per hotkey name: both copies answer the fused score
    let uncalibrated: String = shipped.lines().filter(|l| !l.starts_with("calibration")).collect::<Vec<_>>().join("\n");
    let rust = uncalibrated.replace("name = \"accuracy\"", "name = \"acc-rust\"");
    let python = uncalibrated
        .replace("name = \"accuracy\"", "name = \"acc-py\"")
        .replace("cascade-router@^1", "py-accuracy-router@^0")
        .replace("weighted@^1", "py-weighted@^0");
    assert_ne!(rust.replace("acc-rust", ""), python.replace("acc-py", ""), "the Python copy names its components");
    // the JavaScript router with the Rust fuser
    let js = uncalibrated
        .replace("name = \"accuracy\"", "name = \"acc-js\"")
        .replace("cascade-router@^1", "js-accuracy-router@^0");
    let dir = shipped_registry_with(
        "python-accuracy",
        &[("acc-rust.toml", &rust), ("acc-py.toml", &python), ("acc-js.toml", &js)],
    );
    let server = Server::start_with(
        &dir.0,
        false,
        &["py-accuracy-router.wasm", "py-accuracy-fuser.wasm", "js-accuracy-router.wasm"],
        &[],
    );
    let images = dev_images(3);
    assert!(images.len() >= 10, "{}", images.len());
    let mut stages = std::collections::BTreeSet::new();
    for (path, bytes) in &images {
        let (s, r) = predict(&server, "acc-rust", bytes);
        assert_eq!(s, 200, "{path}: {r}");
        let (s, p) = predict(&server, "acc-py", bytes);
        assert_eq!(s, 200, "{path}: {p}");
        assert_eq!(
            (p["source"].as_str(), p["stage"].as_str()),
            (Some("policy"), r["stage"].as_str()),
            "{path}: {r} {p}"
        );
        let (a, b) = (num(&r["prediction"]), num(&p["prediction"]));
        assert!((a - b).abs() < 1e-5, "{path}: Rust {a} vs Python {b}\n{r}\n{p}");
        stages.insert(r["reason"].as_str().unwrap_or("").split(' ').next().unwrap_or("").to_string());
    }
    // the images reach both an early exit and the second look
    assert!(stages.len() >= 2, "{stages:?}");
}

#[test]
fn python_failures_are_counted_errors_and_the_last_good_instance_keeps_serving() {
    let (_dir, server) = misbehaving_server(
        "python-failures",
        "py-misbehave",
        MISBEHAVE,
        &[
            ("raise", "mode = \"raise\""),
            ("loop", "mode = \"loop\""),
            ("grow", "mode = \"grow\""),
            ("open", "mode = \"open\""),
            ("sleep", "mode = \"sleep\""),
            ("print", "mode = \"print\""),
            ("badconf", "fail_configure = true"),
        ],
    );
    let expect = [
        ("raise", "ValueError: score"),
        ("loop", "ran out of fuel"),
        ("grow", "memory limit"),
        ("open", "FileNotFoundError"),
        ("sleep", "not available to plugins (no network, no timers) (it printed: about to sleep)"),
    ];
    for (hotkey, text) in expect {
        let (s, v) = predict(&server, hotkey, &tint_high());
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["source"], "fallback", "{hotkey}: {v}");
        assert!((num(&v["prediction"]) - 0.3).abs() < 1e-6, "{hotkey}: {v}");
        let reason = v["reason"].as_str().unwrap_or("");
        assert!(reason.contains(text), "{hotkey}: wanted {text:?} in {v}");
        // the same hotkey answers the next request by policy (a new instance where one was lost)
        let (s, v) = predict(&server, hotkey, &tint_low(1));
        assert_eq!((s, v["source"].as_str()), (200, Some("policy")), "{hotkey}: {v}");
    }
    // where the exception was raised, by file and line
    let (_, v) = predict(&server, "raise", &tint_high());
    assert!(v["reason"].as_str().unwrap_or("").contains("misbehave.py:"), "{v}");
    // printing never fails a call
    let (s, v) = predict(&server, "print", &tint_high());
    assert_eq!((s, v["source"].as_str()), (200, Some("policy")), "{v}");
    // configure raised: the hotkey is refused with the exception, the others serve
    let refused = refusals(&server).join("\n");
    assert!(refused.contains("RuntimeError: configure refuses on purpose (misbehave.py:"), "{refused}");
    let (_, m) = get(&server.url("/metrics"));
    for (hotkey, kind) in [("loop", "fuel"), ("grow", "memory"), ("sleep", "trap")] {
        let line = format!("cascade_component_events_total{{hotkey=\"{hotkey}\",role=\"router\",kind=\"{kind}\"}} 1");
        assert!(m.contains(&line), "{line} missing:\n{m}");
    }
    assert!(m.contains("cascade_fallbacks_total{hotkey=\"raise\",reason=\"policy-error\"}"), "{m}");
}

/// `cascade policy build` on `source` (written as `name` to a folder of its own under `dir`: the
/// build checks every module beside the file), output to `out`.
fn build(dir: &TempDir, name: &str, source: &str, out: &Path, extra: &[&str]) -> (i32, String) {
    let own = dir.0.join(name.trim_end_matches(".py"));
    std::fs::create_dir_all(&own).expect("a folder for the file");
    let file = own.join(name);
    std::fs::write(&file, source).expect("write the policy");
    let o = cascade()
        .args(["policy", "build"])
        .arg(&file)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .expect("run cascade policy build");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), text)
}

const SCORER: &str = "def score_text(lines):\n    return None\n";

#[test]
fn the_build_refuses_bad_python_before_it_reaches_a_components_folder() {
    let dir = TempDir::new("python-build");
    let out = dir.0.join("out.wasm");
    let cases = [
        ("syntax.py", "def score_text(lines)\n    return None\n", "syntax.py:1:", "SyntaxError"),
        (
            "net.py",
            "import socket\n\ndef score_text(lines):\n    return None\n",
            "net.py:1: imports 'socket'",
            "network",
        ),
        (
            "proc.py",
            "def score_text(lines):\n    from subprocess import run\n    return None\n",
            "proc.py:2",
            "processes",
        ),
        ("none.py", "X = 1\n", "defines none of decide", "fuse"),
        (
            "two.py",
            "def fuse(s):\n    return 0.5\n\ndef decide(i, r):\n    pass\n",
            "defines fuse, decide",
            "one file per role",
        ),
    ];
    for (name, source, a, b) in cases {
        let (code, text) = build(&dir, name, source, &out, &[]);
        assert_eq!(code, 1, "{name}: {text}");
        assert!(text.contains(a) && text.contains(b), "{name}: wanted {a:?} and {b:?} in {text}");
        assert!(!out.exists(), "{name}: nothing is written");
    }
    // an exception at import time: componentize-py runs the module once and fails the build
    let (code, text) = build(&dir, "boom.py", &format!("{SCORER}raise KeyError('at import')\n"), &out, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("KeyError") && text.contains("at import"), "{text}");
    // parameters the schema or configure refuses
    let (code, text) = build(
        &dir,
        "conf.py",
        &format!("{SCORER}PARAMS_SCHEMA = {{'type': 'object', 'required': ['w']}}\n"),
        &out,
        &["--params", "{}"],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("parameters refused by the schema") && text.contains("w"), "{text}");
    assert!(!out.exists());
    // an older contract is served; a newer one is refused by the host's semver rule
    let (code, text) =
        build(&dir, "old.py", SCORER, &out, &["--wit", &repo().join("wit/v1.0.0").display().to_string()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("text-scorer (contract 1.0.0)"), "{text}");
    let newer = TempDir::new("wit-1-3");
    for e in std::fs::read_dir(repo().join("wit/v1.2.0")).expect("wit") {
        let p = e.expect("entry").path();
        let t = std::fs::read_to_string(&p).expect("wit file").replace("cascade:policy@1.2.0", "cascade:policy@1.3.0");
        newer.write(&p.file_name().expect("name").to_string_lossy(), &t);
    }
    let out2 = dir.0.join("new.wasm");
    let (code, text) = build(&dir, "new.py", SCORER, &out2, &["--wit", &newer.0.display().to_string()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("built for cascade:policy@1.3.0"), "{text}");
    assert!(!out2.exists());
}

const CANARY: &str =
    "mode = \"canary\"\nsteps = [50, 100]\nmin_requests = 4\nmax_error_rate = 0.0\nmin_agreement = 0.9";

#[test]
fn a_python_candidate_is_promoted_under_load_and_a_broken_edit_rolled_back() {
    let good = rollout_hotkey(
        "good",
        CANARY,
        r#"{ component = "py-template-router@^0", params = { model = "tint", unsure = [0.0, 1.0] } }"#,
    );
    // raises on high scores only, so that it passes the smoke request and reaches the canary
    let bad = rollout_hotkey(
        "bad",
        CANARY,
        r#"{ component = "py-misbehave@^0", params = { model = "tint", mode = "raise", above = 0.5 } }"#,
    );
    let dir = policies("python-canary", &[("good", &good), ("bad", &bad)]);
    let server = Server::start_with(&dir.0, false, &[ROUTER, MISBEHAVE], &[]);
    // load: four clients on both hotkeys while the rules are judged
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (good_ro, bad_ro) = std::thread::scope(|s| {
        for t in 0..4u32 {
            let (server, stop) = (&server, &stop);
            s.spawn(move || {
                let mut i = t * 1000;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    for (h, img) in [("good", tint_low(i)), ("bad", tint_low(i)), ("bad", tint_high())] {
                        let (code, v) = predict(server, h, &img);
                        assert_eq!(code, 200, "{h}: {v}");
                    }
                }
            });
        }
        let good_ro = eventually(60, "the Python candidate promoted", || {
            let r = status(&server)["hotkeys"]["good"]["rollout"].clone();
            (r["winner"] == "candidate").then_some(r)
        });
        let bad_ro = eventually(60, "the raising candidate rolled back", || {
            let r = status(&server)["hotkeys"]["bad"]["rollout"].clone();
            (r["winner"] == "stable").then_some(r)
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (good_ro, bad_ro)
    });
    assert!(good_ro["history"].to_string().contains("promote: canary: every step passed"), "{good_ro}");
    assert!(bad_ro["history"].to_string().contains("rollback: rule failed: error rate"), "{bad_ro}");
    let (_, v) = predict(&server, "good", &tint_low(7));
    assert_eq!((v["arm"].as_str(), v["stage"].as_str()), (Some("candidate"), Some("classifier-flip")), "{v}");

    // a broken edit of the Python router: the build refuses it and the served file is untouched
    let served = server.components.0.join(ROUTER);
    let before = std::fs::read(&served).expect("served component");
    let scratch = TempDir::new("python-edit");
    let broken = std::fs::read_to_string(repo().join("plugins/python/template/router.py"))
        .expect("template")
        .replace("def decide(image, request):", "def decide(image, request)");
    let (code, text) = build(&scratch, "router.py", &broken, &served, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("SyntaxError"), "{text}");
    assert_eq!(std::fs::read(&served).expect("served component"), before, "the served component is unchanged");
    // parameters its configure refuses: the reload is refused, the promoted version keeps serving
    let refused = good.replace("unsure = [0.0, 1.0]", "unsure = [0.9, 0.1]");
    std::fs::write(dir.0.join("good.toml"), refused).expect("edit");
    let why = eventually(30, "the edit refused", || {
        let r = refusals(&server).join("\n");
        r.contains("unsure: 0.9 is above 0.1").then_some(r)
    });
    assert!(why.contains("router.py:"), "{why}");
    let (s, v) = predict(&server, "good", &tint_low(8));
    assert_eq!((s, v["arm"].as_str(), v["source"].as_str()), (200, Some("candidate"), Some("policy")), "{v}");
}

#[test]
fn the_readme_walkthrough_serves_a_new_python_policy_live() {
    let rust = "name = \"rs\"\n[router]\ncomponent = \"template-router@^1\"\nparams = { model = \"tint\" }\n";
    let dir = policies("python-walkthrough", &[("rs", rust)]);
    let server = Server::start(&dir.0, false, &[]);
    let work = TempDir::new("walkthrough");
    let o = cascade().args(["policy", "new"]).arg(work.0.join("My Policy")).output().expect("policy new");
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("lower-case letters"), "{o:?}");
    let folder = work.0.join("my-policy");
    let o = cascade().args(["policy", "new", "--lang", "python"]).arg(&folder).output().expect("policy new");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["router.py", "text_scorer.py", "fuser.py"] {
        let text = std::fs::read_to_string(folder.join(f)).expect("a template file");
        assert!(text.contains("NAME = \"my-policy-"), "{f}: named after its folder");
    }
    // built straight into the server's (watched) components folder
    let o = cascade()
        .args(["policy", "build"])
        .arg(folder.join("router.py"))
        .arg("--components")
        .arg(&server.components.0)
        .args(["--params", r#"{"model": "tint"}"#])
        .output()
        .expect("policy build");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("my-policy-router.wasm: my-policy-router@0.1.0 router (contract 1.2.0)"), "{text}");
    dir.write(
        "mine.toml",
        "name = \"mine\"\n[router]\ncomponent = \"my-policy-router@^0\"\nparams = { model = \"tint\" }\n",
    );
    let v = eventually(60, "the new hotkey served", || {
        let (s, v) = predict(&server, "mine", &tint_low(3));
        (s == 200).then_some(v)
    });
    assert_eq!(v["source"], "policy", "{v}");
    assert!(v["stage"] == "classifier" || v["stage"] == "classifier-flip", "{v}");
}

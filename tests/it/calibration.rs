//! A hotkey's calibration end to end, on the tiny `tint` embedder with a trained head:
//! `cascade calibrate` fits one on held-out scores (rows of other hotkeys and unlabelled rows
//! skipped), the served answer is the calibrated score, and a file fitted for another hotkey or
//! on another head is refused naming both — at start (`check`) and live, where a retrained head
//! is refused until the calibration is refitted while the last good state keeps answering.

use std::path::{Path, PathBuf};

use cascade_tests::*;

fn train_head(dir: &TempDir, epochs: &str) {
    let mut csv = String::from("path,label\n");
    for k in 0..4 {
        for (label, roadwork) in [(1, true), (0, false)] {
            let name = format!("{label}_{k}.jpg");
            std::fs::write(dir.0.join(&name), jpeg(&scene(roadwork, k))).expect("write image");
            csv.push_str(&format!("{name},{label}\n"));
        }
    }
    let manifest = dir.write("train.csv", &csv);
    train_tint_head(dir, &manifest, epochs);
}

fn hotkey(name: &str, calibration: &str) -> String {
    format!(
        "name = \"{name}\"\n{calibration}\n[router]\ncomponent = \"cascade-router@^1\"\n[[router.params.stages]]\nname = \"classifier\"\nclassify = [\"roadwork\"]\non_error = \"fail\"\n"
    )
}

/// Held-out scores that call too much roadwork: both classes spread, none centred at 0.62.
fn scores(dir: &TempDir) -> PathBuf {
    let mut csv = String::from("hotkey,level,label,prediction\n");
    for i in 0..40 {
        let j = f64::from(i) / 40.0;
        csv.push_str(&format!("cal,{},1,{:.3}\n", i % 4, 0.62 + 0.35 * j));
        csv.push_str(&format!("cal,{},0,{:.3}\n", i % 4, 0.40 + 0.40 * j));
    }
    csv.push_str("other,0,1,0.01\nother,0,0,0.99\n"); // another hotkey's rows: skipped
    csv.push_str("cal,0,,0.5\n"); // unlabelled: skipped
    dir.write("scores.csv", &csv)
}

fn calibrate(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = cascade().arg("calibrate").arg("--policies").arg(dir).args(args).output().expect("calibrate");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

fn check(dir: &Path) -> (bool, String) {
    let comps = components(false);
    let (code, text) = run(&["check"], dir, &comps.0);
    (code == 0, text)
}

fn sigmoid_logit(a: f64, b: f64, p: f64) -> f64 {
    1.0 / (1.0 + (-(a * (p / (1.0 - p)).ln() + b)).exp())
}

fn sha256(file: &Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(file).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("a digest").to_string()
}

#[test]
fn calibrate_fits_the_served_answer_and_refuses_another_hotkey_or_head() {
    let dir = TempDir::new("calibration");
    head_registry(&dir, &test_models().join("tint_embed.onnx"), 32);
    train_head(&dir, "40");
    dir.write("cal.toml", &hotkey("cal", ""));
    let scores = scores(&dir);
    let out = dir.0.join("calibration/cal.json");

    // too few labelled rows of one class: refused with the counts
    let few = dir.write("few.csv", "label,prediction\n1,0.9\n0,0.2\n");
    let (ok, text) = calibrate(&dir.0, &["--hotkey", "cal", "--scores", &few.display().to_string(), "--out", "x.json"]);
    assert!(!ok && text.contains("2 labelled scores") && text.contains("at least 10"), "{text}");

    let (ok, text) = calibrate(
        &dir.0,
        &["--hotkey", "cal", "--scores", &scores.display().to_string(), "--out", &out.display().to_string()],
    );
    assert!(ok, "{text}");
    assert!(text.contains("80 labelled scores (40 roadwork, 1 unlabelled skipped)"), "{text}");
    assert!(text.contains("level 3:"), "per-level report: {text}");
    let cal: Value = serde_json::from_slice(&std::fs::read(&out).expect("calibration file")).expect("json");
    assert_eq!(cal["hotkey"], "cal");
    let head_sha = sha256(&dir.0.join("head.json"));
    assert_eq!(cal["heads"]["roadwork"], head_sha.as_str(), "the classifier named by `classify` is recorded");
    let (a, b) = (num(&cal["a"]), num(&cal["b"]));
    // before: nearly everything said roadwork; after: about half, and 0.62 is no longer roadwork
    let (before, after) =
        (num(&cal["report"]["before"]["says_roadwork"]), num(&cal["report"]["after"]["says_roadwork"]));
    assert!(before > 0.7 && (0.35..0.65).contains(&after), "{before} -> {after}");
    assert!(sigmoid_logit(a, b, 0.62) < 0.5 && sigmoid_logit(a, b, 0.9) > 0.5, "a {a} b {b}");
    assert!(num(&cal["report"]["after"]["mcc"]) > num(&cal["report"]["before"]["mcc"]));

    // a `raw` column (the score before a calibration, as `log export` writes it) is what is
    // fitted where it has a value: the same raw scores behind other served answers, same fit
    let text = std::fs::read_to_string(&scores).expect("scores");
    let mut lines = text.lines();
    let mut with_raw = format!("{},raw\n", lines.next().expect("header"));
    for l in lines {
        let (head, p) = l.rsplit_once(',').expect("a row");
        with_raw.push_str(&format!("{head},0.990,{p}\n"));
    }
    let raw_file = dir.write("raw.csv", &with_raw);
    let again = dir.0.join("again.json");
    let (ok, text) = calibrate(
        &dir.0,
        &["--hotkey", "cal", "--scores", &raw_file.display().to_string(), "--out", &again.display().to_string()],
    );
    assert!(ok, "{text}");
    let again: Value = serde_json::from_slice(&std::fs::read(&again).expect("file")).expect("json");
    assert!((num(&again["a"]) - a).abs() < 1e-9 && (num(&again["b"]) - b).abs() < 1e-9, "{again}");

    // the served answer is the calibrated classifier score
    dir.write("cal.toml", &hotkey("cal", "calibration = \"calibration/cal.json\""));
    let (ok, text) = check(&dir.0);
    assert!(ok, "{text}");
    let img = dir.0.join("1_0.jpg");
    let raw = {
        let o = cascade()
            .args(["infer", "--model", "roadwork", "--policies"])
            .arg(&dir.0)
            .arg(&img)
            .output()
            .expect("infer");
        num(&serde_json::from_str::<Value>(String::from_utf8_lossy(&o.stdout).lines().next().expect("a line"))
            .expect("json")["result"]["score"])
    };
    let server = Server::start(&dir.0, false, &[]);
    let (s, v) = predict(&server, "cal", &std::fs::read(&img).expect("image"));
    assert_eq!(s, 200, "{v}");
    let want = sigmoid_logit(a, b, raw.clamp(1e-6, 1.0 - 1e-6));
    assert!((num(&v["prediction"]) - want).abs() < 1e-3, "served {} for raw {raw}, calibrated {want}", v["prediction"]);
    assert!((num(&v["raw"]) - raw).abs() < 1e-3, "the answer carries the score before calibration: {v}");
    let st = status(&server);
    let shown = &st["hotkeys"]["cal"]["calibration"];
    assert_eq!((shown["file"].as_str(), num(&shown["a"])), (Some("calibration/cal.json"), a), "status: {shown}");

    // a retrained head while the server runs: the registry change is refused naming the
    // calibration and both heads; the last good state keeps answering the same
    let old_head = std::fs::read(dir.0.join("head.json")).expect("head");
    train_head(&dir, "7");
    let r = eventually(15, "head change refused", || refusals(&server).into_iter().find(|r| r.contains("models.toml")));
    assert!(r.contains("calibration calibration/cal.json") && r.contains("roadwork's head sha256"), "{r}");
    let (_, again) = predict(&server, "cal", &std::fs::read(&img).expect("image"));
    assert_eq!(again["prediction"], v["prediction"], "the last good models and calibration answer");
    drop(server);

    // at start: the new head with the old calibration is refused naming both
    let (ok, text) = check(&dir.0);
    assert!(!ok && text.contains(&format!("sha256 {}", &head_sha[..12])), "{text}");
    std::fs::write(dir.0.join("head.json"), &old_head).expect("restore head");
    assert!(check(&dir.0).0);

    // a calibration fitted for another hotkey: refused naming both
    let mut other = cal.clone();
    other["hotkey"] = "speed".into();
    std::fs::write(&out, serde_json::to_vec(&other).expect("json")).expect("write");
    let (ok, text) = check(&dir.0);
    assert!(!ok && text.contains("fitted for hotkey \"speed\", not \"cal\""), "{text}");
    // a slope that reverses the ranking, and a file that is not a calibration: refused
    for (bad, needle) in [
        (r#"{"format":1,"hotkey":"cal","method":"platt","a":-1.0,"b":0.0,"heads":{}}"#, "a must be a positive number"),
        ("[1,2]", "not a calibration file"),
    ] {
        std::fs::write(&out, bad).expect("write");
        let (ok, text) = check(&dir.0);
        assert!(!ok && text.contains(needle), "{needle}: {text}");
    }
}

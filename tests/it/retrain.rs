//! `scripts/train/retrain.py` end to end on stand-ins (the tiny `tint` embedder, a head trained
//! here, drawn scenes in three groups): a new head, the hotkey's policy on it tuned, both arms
//! evaluated per level, the live hotkey file written with the candidate as an evidence canary
//! that `cascade check` accepts, and the report; an evaluation set that shares images with the
//! training data is refused with the count.

use std::path::{Path, PathBuf};

use cascade_tests::*;

const HOTKEY: &str = r#"# the live hotkey: two looks
name = "two"
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "first"
classify = ["roadwork"]
exit_low = 0.3
exit_high = 0.7
[[router.params.stages]]
name = "mirror"
classify = ["roadwork"]
flip = true
[fuser]
component = "weighted@^1"
params.weights = { roadwork = 1.0, "roadwork:flip" = 1.0 }
[log]
dir = "logs"
uncertain = [0.3, 0.7]
"#;

/// `n` scenes per class in folder `group`, and their manifest.
fn images(dir: &TempDir, group: &str, first: u32, n: u32) -> PathBuf {
    std::fs::create_dir_all(dir.0.join(group)).expect("mkdir");
    let mut csv = String::from("path,label\n");
    for k in first..first + n {
        for (label, roadwork) in [(1, true), (0, false)] {
            let name = format!("{group}/{label}_{k}.jpg");
            std::fs::write(dir.0.join(&name), jpeg(&scene(roadwork, k))).expect("write image");
            csv.push_str(&format!("{name},{label}\n"));
        }
    }
    dir.write(&format!("{group}.csv"), &csv)
}

fn retrain(policies: &Path, work: &Path, manifests: &[&Path], eval: &Path) -> (i32, String) {
    let comps = components(false);
    let mut cmd = std::process::Command::new(repo().join(".venv/bin/python"));
    cmd.arg(repo().join("scripts/train/retrain.py"))
        .args(["--hotkey", "two", "--backbone", "tint-embed", "--train-args", "--levels 0-3 --views 2 --cv none"])
        .arg("--policies")
        .arg(policies)
        .arg("--work")
        .arg(work)
        .arg("--eval-manifest")
        .arg(eval)
        .arg("--components")
        .arg(&comps.0)
        .arg("--cascade")
        .arg(repo().join("target/release/cascade"));
    for m in manifests {
        cmd.arg("--manifest").arg(m);
    }
    let out = cmd.output().expect("retrain.py");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_retrain_writes_a_tuned_canary_candidate_and_its_report() {
    let dir = TempDir::new("retrain");
    head_registry(&dir, &test_models().join("tint_embed.onnx"), 32);
    dir.write("two.toml", HOTKEY);
    let east = images(&dir, "east", 0, 6);
    let west = images(&dir, "west", 6, 6);
    let north = images(&dir, "north", 12, 8);
    // the live head: trained on one group
    train_tint_head(&dir, &east, "20");

    let work = dir.0.join("work");
    let (code, text) = retrain(&dir.0, &work, &[&east, &west], &north);
    assert_eq!(code, 0, "{text}");
    for step in [
        "== 1. data",
        "== 2. train",
        "== 3. candidate policy, tuned",
        "== 4. evaluate",
        "== 5. the hotkey",
        "== 6. report",
    ] {
        assert!(text.contains(step), "{step}: {text}");
    }
    assert!(text.contains("live: MCC") && text.contains("candidate: MCC"), "{text}");

    // the live file keeps its policy and gains the candidate on the new model, as a canary
    let written = std::fs::read_to_string(work.join("policies/two.toml")).expect("hotkey file");
    assert!(written.starts_with("# the live hotkey: two looks"), "{written}");
    let (stable, rest) = written.split_once("[candidate]").expect("a candidate");
    assert!(!stable.contains("roadwork-next") && rest.contains("\"roadwork-next\""), "{written}");
    assert!(stable.contains("[log]\ndir = \"logs\"\nuncertain = [0.3, 0.7]"), "the live file keeps its log: {written}");
    let cand = std::fs::read_to_string(work.join("candidate/two.toml")).expect("candidate");
    assert!(!cand.contains("[log]") && !cand.contains("uncertain"), "the candidate copy logs nothing: {cand}");
    assert!(rest.contains("mode = \"canary\"") && rest.contains("evidence = { report = \"replay.json\""), "{written}");
    let registry = std::fs::read_to_string(work.join("policies/models.toml")).expect("registry");
    assert!(
        registry.contains("name = \"roadwork-next\"") && registry.contains("roadwork-next.head.json"),
        "{registry}"
    );
    let comps = components(false);
    let (code, checked) = run(&["check"], &work.join("policies"), &comps.0);
    assert_eq!(code, 0, "{checked}");

    // the report: both arms per level and per group, reliability, confusion, the frontier
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("report.json")).expect("report")).expect("report json");
    for arm in ["live", "candidate"] {
        let levels = report[arm]["per_level"].as_object().expect("levels");
        assert_eq!(levels.values().map(|l| l["n"].as_u64().unwrap()).sum::<u64>(), 16, "{report}");
        assert_eq!(report[arm]["per_group"]["north"]["n"], 16, "{report}");
        let c = &report[arm]["confusion"];
        let total: u64 = ["tp", "fp", "tn", "fn"].iter().map(|k| c[*k].as_u64().unwrap()).sum();
        assert_eq!(total, 16, "{report}");
    }
    let page = std::fs::read_to_string(work.join("report.html")).expect("report.html");
    for needle in [
        "class=\"bar live\"",
        "class=\"bar candidate\"",
        "class=\"reliability candidate\"",
        "class=\"confusion live\"",
        "polyline",
    ] {
        assert!(page.contains(needle), "{needle} missing from the report");
    }
}

#[test]
fn an_evaluation_set_that_shares_training_images_is_refused() {
    let dir = TempDir::new("retrain-shared");
    head_registry(&dir, &test_models().join("tint_embed.onnx"), 32);
    dir.write("two.toml", HOTKEY);
    let east = images(&dir, "east", 0, 3);
    // the same pictures under other names
    std::fs::create_dir_all(dir.0.join("copy")).expect("mkdir");
    let mut csv = String::from("path,label\n");
    for k in 0..2 {
        std::fs::copy(dir.0.join(format!("east/1_{k}.jpg")), dir.0.join(format!("copy/{k}.jpg"))).expect("copy");
        csv.push_str(&format!("copy/{k}.jpg,1\n"));
    }
    let shared = dir.write("shared.csv", &csv);
    let (code, text) = retrain(&dir.0, &dir.0.join("work"), &[&east], &shared);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("the evaluation manifest shares 2 of its 2 images with the training data (by content): refused"),
        "{text}"
    );
}

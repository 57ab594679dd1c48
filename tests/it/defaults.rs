//! The embedded default: the shipped policies with the default models built by set-up
//! (EfficientNet-Lite0 + the trained head, PP-OCRv4), on real dev images.

use cascade_tests::*;

fn dev(path: &str) -> Vec<u8> {
    std::fs::read(shared().join("data/roadwork-dev").join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The first manifest rows of a source, with their labels.
fn rows(prefix: &str, label: &str, n: usize) -> Vec<String> {
    let m = std::fs::read_to_string(shared().join("data/roadwork-dev/manifest.csv")).expect("manifest");
    m.lines()
        .skip(1)
        .filter(|l| l.starts_with(prefix) && l.split(',').nth(1) == Some(label))
        .take(n)
        .map(|l| l.split(',').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn default_policies_serve_real_images() {
    let mut server = Server::start(&repo().join("policies"), false, &[]);
    for path in rows("tracon/", "1", 3) {
        let (s, v) = predict(&server, "speed", &dev(&path));
        assert_eq!(s, 200, "{v}");
        assert!(num(&v["prediction"]) > 0.5, "{path}: cones should be roadwork: {v}");
    }
    for path in rows("udacity_carnd_mit/", "0", 3) {
        let (s, v) = predict(&server, "accuracy", &dev(&path));
        assert_eq!(s, 200, "{v}");
        assert!(num(&v["prediction"]) < 0.5, "{path}: an empty freeway is not roadwork: {v}");
        assert_eq!(v["trace"][0]["model"], "roadwork");
    }
    // Ctrl-C: the server lets its models go (workers joined, the watcher's copy included) and exits cleanly
    let status = server.interrupt(30).unwrap_or_else(|| panic!("serve did not stop on SIGINT:\n{}", server.log()));
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(server.log().contains("interrupted; draining"), "{}", server.log());
}

#[test]
fn the_evidence_example_reads_a_sign_the_classifier_has_never_seen() {
    let evidence = std::fs::read_to_string(repo().join("examples/hotkeys/evidence.toml")).expect("example");
    let dir = shipped_registry_with("evidence", &[("evidence.toml", &evidence)]);
    let server = Server::start(&dir.0, false, &[]);
    let (s, v) = predict(&server, "evidence", &sign("end_road_work"));
    assert_eq!(s, 200, "{v}");
    let trace = v["trace"].as_array().unwrap();
    // the classifier alone is unsure of it: the check below always runs, not only when it is
    assert_eq!(v["stage"], "evidence", "the sign reaches the evidence stage: {v}");
    let ocr = trace.iter().find(|t| t["primitive"] == "read-text").expect("OCR ran");
    assert!(ocr["result"].as_str().unwrap().contains("END"), "{v}");
    assert!(num(&v["prediction"]) < 0.5, "END ROAD WORK must not read as roadwork: {v}");
}

#[test]
fn eval_reports_figures_and_counts_unreadable_rows() {
    let dir = TempDir::new("eval");
    let mut csv = String::from("path,label,extra\n");
    for p in rows("tracon/", "1", 4).iter().chain(rows("udacity_carnd_mit/", "0", 4).iter()) {
        let label = if p.starts_with("tracon/") { 1 } else { 0 };
        csv.push_str(&format!("{},{label},x\n", shared().join("data/roadwork-dev").join(p).display()));
    }
    csv.push_str("missing.jpg,1,x\n");
    dir.write("corrupt.jpg", "not a jpeg");
    csv.push_str("corrupt.jpg,0,x\n");
    let manifest = dir.write("manifest.csv", &csv);
    let out = cascade()
        .args(["eval", "--hotkey", "accuracy", "--validator-style", "--json", "--manifest"])
        .arg(&manifest)
        .current_dir(repo())
        .output()
        .expect("run eval");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["n"], 8, "{v}");
    assert_eq!(v["errors"], 2, "{v}");
    for key in ["accuracy", "mcc", "f1", "precision", "recall", "reward", "model_ms_per_request"] {
        assert!(v[key].is_number(), "{key} in {v}");
    }
    assert!(num(&v["accuracy"]) >= 0.75, "{v}");
    let c = &v["confusion"];
    assert_eq!(num(&c["tp"]) + num(&c["fp"]) + num(&c["tn"]) + num(&c["fn"]), 8.0);
    assert!(v["stage_share"]["classifier"].is_number(), "{v}");
    assert!(v["latency_ms"]["p99"].is_number());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.jpg") && stderr.contains("corrupt.jpg"), "{stderr}");
}

#[test]
fn an_image_without_text_reads_as_no_lines() {
    let dir = TempDir::new("notext");
    let img = dir.0.join("plain.png");
    std::fs::write(&img, png(&solid(224, 224, [90, 120, 90]))).expect("write");
    let (v, _) = read_text(&repo().join("policies"), "ocr", &img);
    assert_eq!(v["result"], json!([]), "{v}");
}

/// The EfficientNet classifier (its head is heads/roadwork-effnet.json since the default runs
/// DINOv2) converted by scripts/fp16.py (fp16 input, weights and output) runs through the same
/// engine and scores real images as the fp32 model does, within fp16 rounding.
#[test]
fn an_fp16_conversion_of_the_default_classifier_scores_like_fp32() {
    let fp16 = repo().join("target/test-models/efficientnet_lite0_fp16.onnx");
    assert!(fp16.exists(), "run scripts/test.sh (it converts the fp16 model)");
    let dir = TempDir::new("fp16");
    let registry = |file: &std::path::Path| {
        format!(
            "[[model]]\nname = \"roadwork\"\nkind = \"classifier\"\nfile = \"{}\"\noutput = \"embedding\"\nhead = \"{}\"\nactivation = \"sigmoid\"\nlabels = [\"other\", \"roadwork\"]\npositive = [\"roadwork\"]\ninput = {{ width = 224, height = 224, resize = \"center_crop\", resize_short = 256, mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }}\n",
            file.display(),
            repo().join("policies/heads/roadwork-effnet.json").display()
        )
    };
    let images: Vec<_> = rows("tracon/", "1", 3)
        .into_iter()
        .chain(rows("udacity_carnd_mit/", "0", 3))
        .map(|p| shared().join("data/roadwork-dev").join(p))
        .collect();
    let scores = |tag: &str, file: &std::path::Path| {
        let d = dir.0.join(tag);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("models.toml"), registry(file)).expect("write registry");
        let out = cascade()
            .env("RUST_LOG", "info")
            .args(["infer", "--model", "roadwork", "--policies"])
            .arg(&d)
            .args(&images)
            .output()
            .expect("run cascade infer");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        (
            lines.iter().map(|v| num(&v["result"]["score"])).collect::<Vec<f64>>(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (full, _) = scores("fp32", &repo().join("target/models/efficientnet_lite0.onnx"));
    let (half, log) = scores("fp16", &fp16);
    assert!(log.contains("fp16 model"), "the converted model should be fed as fp16: {log}");
    assert_eq!(full.len(), images.len());
    for (i, (a, b)) in full.iter().zip(&half).enumerate() {
        assert!((a - b).abs() < 0.02, "{}: fp32 {a} vs fp16 {b}", images[i].display());
        assert_eq!(*a > 0.5, *b > 0.5, "{}: fp32 {a} vs fp16 {b} decide differently", images[i].display());
    }
    assert!(full[..3].iter().all(|s| *s > 0.5) && full[3..].iter().all(|s| *s < 0.5), "{full:?}");
}

//! Detectors in the layouts operators export — Ultralytics YOLOv8/YOLO11 raw heads (and their
//! transpose), end-to-end YOLO exports, RT-DETR and RF-DETR — decoded by the real engine on
//! real ONNX Runtime outputs (`tests/models/layout_detectors.py`: every layout reports the same
//! four boxes with the image's class probabilities, so the decoders must agree), count rules
//! and two-detector agreement in `cascade-router`, and what is refused at load.

use cascade_tests::*;

const ORANGE: [u8; 3] = [240, 120, 20];
const BLUE: [u8; 3] = [30, 60, 200];

/// The layout detectors: (registry name, file, detector settings, extra keys).
const LAYOUTS: [(&str, &str, &str, &str); 5] = [
    ("det-yolov8", "det_yolov8.onnx", "format = \"yolov8\"", ""),
    ("det-yolov8-t", "det_yolov8_t.onnx", "format = \"yolov8\"", ""),
    ("det-e2e", "det_e2e.onnx", "format = \"yolo_end2end\"", ""),
    ("det-rtdetr", "det_rtdetr.onnx", "format = \"detr\"", ""),
    (
        "det-rfdetr",
        "det_rfdetr.onnx",
        "format = \"detr\", logits = \"labels\", activation = \"sigmoid\"",
        "output = \"dets\"\nlabels = [\"cone\", \"worker\", \"car\"]\n",
    ),
];

fn entry(name: &str, file: &str, detector: &str, extra: &str) -> String {
    format!(
        "\n[[model]]\nname = \"{name}\"\nfile = \"{}\"\nkind = \"detector\"\ninput = {{ width = 64, height = 64 }}\ndetector = {{ {detector} }}\nmax_batch = 4\n{extra}",
        test_models().join(file).display()
    )
}

fn registry() -> String {
    let mut r = test_registry();
    for (name, file, detector, extra) in LAYOUTS {
        r.push_str(&entry(name, file, detector, extra));
    }
    r
}

/// (label, confidence, box) of each detection, boxes rounded to 0.1 px.
fn boxes(v: &Value) -> Vec<(String, f64, Vec<i64>)> {
    let mut out: Vec<(String, f64, Vec<i64>)> = v["result"]
        .as_array()
        .expect("detections")
        .iter()
        .map(|d| {
            let b = d["box"].as_array().expect("box").iter().map(|x| (num(x) * 10.0).round() as i64).collect();
            (d["label"].as_str().unwrap_or("").to_string(), num(&d["confidence"]), b)
        })
        .collect();
    out.sort_by(|a, b| a.2.cmp(&b.2));
    out
}

#[test]
fn every_layout_decodes_to_the_same_boxes() {
    let d = TempDir::new("layouts");
    d.write("models.toml", &registry());
    // 128×96: boxes map back through the resize to the original pixels
    let img = d.0.join("orange.jpg");
    std::fs::write(&img, jpeg(&solid(128, 96, ORANGE))).expect("image");
    let mut seen = Vec::new();
    for (name, ..) in LAYOUTS {
        let out = cascade()
            .args(["infer", "--model", name, "--min-confidence", "0.5", "--policies"])
            .arg(&d.0)
            .arg(&img)
            .output()
            .expect("cascade infer");
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON line");
        let b = boxes(&v);
        assert_eq!(b.len(), 4, "{name}: four cones: {v}");
        assert!(b.iter().all(|(l, c, _)| l == "cone" && *c > 0.9), "{name}: {b:?}");
        // the quadrants' centres, 16×16 input px = 32×24 original px
        assert_eq!(b[0].2, vec![160, 120, 480, 360], "{name}: {b:?}");
        seen.push((name, b));
    }
    for (name, b) in &seen[1..] {
        for (x, y) in b.iter().zip(&seen[0].1) {
            assert!((x.1 - y.1).abs() < 1e-4 && x.2 == y.2, "{name} disagrees with {}: {x:?} vs {y:?}", seen[0].0);
        }
    }
}

fn hotkey(name: &str, detect: &str) -> String {
    format!(
        r#"name = "{name}"
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "objects"
detect = {detect}
exit_low = 0.2
exit_high = 0.8
[[router.params.stages]]
name = "tint"
classify = ["tint"]
"#
    )
}

#[test]
fn count_rules_and_agreement_decide_or_escalate() {
    let d = TempDir::new("counts");
    d.write("models.toml", &registry());
    let rules = r#"{ model = "det-yolov8", min_confidence = 0.5, counts = [{ class = "cone", at_least = 3 }, { class = "worker", at_least = 1 }], absent_score = 0.1 }"#;
    d.write("counts.toml", &hotkey("counts", rules));
    let agree = r#"{ model = "det-e2e", counts = [{ class = "cone", at_least = 1 }], agree = { model = "det-rfdetr", at_least = 2 } }"#;
    d.write("agree.toml", &hotkey("agree", agree));
    let picky = r#"{ model = "det-e2e", counts = [{ class = "cone", at_least = 1 }], agree = { model = "det-rtdetr", min_confidence = 0.999 } }"#;
    d.write("picky.toml", &hotkey("picky", picky));
    let server = Server::start(&d.0, false, &[]);

    let ask = |hk: &str, rgb: [u8; 3]| {
        let (status, v) = predict(&server, hk, &jpeg(&solid(64, 64, rgb)));
        assert_eq!(status, 200, "{v}");
        v
    };
    // four cones ≥ 3: roadwork, decided by the detector
    let v = ask("counts", ORANGE);
    assert_eq!((v["stage"].as_str(), num(&v["prediction"])), (Some("objects"), 0.95f32 as f64), "{v}");
    // no cone and no worker (the blue image shows cars): absent_score
    let v = ask("counts", BLUE);
    assert_eq!(v["stage"], "objects", "{v}");
    assert!((num(&v["prediction"]) - 0.1).abs() < 1e-6, "{v}");
    // two detectors: both see the cones, both see none
    let v = ask("agree", ORANGE);
    assert_eq!((v["stage"].as_str(), num(&v["prediction"])), (Some("objects"), 0.95f32 as f64), "{v}");
    let v = ask("agree", BLUE);
    assert!(v["stage"] == "objects" && (num(&v["prediction"]) - 0.05).abs() < 1e-6, "{v}");
    // they disagree (the second sees nothing at 0.999): no evidence, the next stage decides
    let v = ask("picky", ORANGE);
    assert_eq!(v["stage"], "tint", "{v}");
    assert!(
        v["reason"].as_str().unwrap_or("").contains("detectors disagree (det-e2e sees 4, det-rtdetr sees 0)"),
        "{v}"
    );
}

#[test]
fn layouts_and_classes_that_do_not_fit_are_refused_at_load() {
    let comps = components(false);
    // a YOLOv8 head registered as an end-to-end export: refused naming the shapes found
    let d = TempDir::new("bad-layout");
    d.write("models.toml", &entry("det", "det_yolov8.onnx", "format = \"yolo_end2end\"", ""));
    let (code, out) = run(&["check"], &d.0, &comps.0);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("outputs match no yolo_end2end layout") && out.contains("output0 [-1, 7, 4]"), "{out}");

    // a count rule on a class the detector does not have: the dry run refuses it, naming
    // the labels (from the file's metadata)
    let d = TempDir::new("bad-class");
    d.write("models.toml", &registry());
    let rule = r#"{ model = "det-yolov8", counts = [{ class = "barrel", at_least = 2 }] }"#;
    d.write("barrels.toml", &hotkey("barrels", rule));
    let (code, out) = run(&["check"], &d.0, &comps.0);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("detector det-yolov8 has no class \"barrel\"; its labels: cone, worker, car"), "{out}");
}

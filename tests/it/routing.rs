//! The real server with the shipped components and real ONNX models: early exit, escalation,
//! fusion with a missing score, memoisation, detection, and misbehaving components.

use cascade_tests::*;

const SPEED: &str = r#"
name = "speed"
fallback = 0.3

[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "tint"
classify = ["tint"]
exit_low = 0.2
exit_high = 0.8
[[router.params.stages]]
name = "tint-flip"
classify = ["tint"]
flip = true

[fuser]
component = "weighted@^1"
params.weights = { tint = 1.0, "tint:flip" = 1.0 }
"#;

/// Stage 2 asks for detections; on a plain image there are none, so only the classifier's
/// score reaches the fuser, which must renormalise its weight.
const FUSION: &str = r#"
name = "fusion"
fallback = 0.3

[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "tint"
classify = ["tint"]
[[router.params.stages]]
name = "evidence"
classify = ["tint"]
detect = { model = "yolox", min_confidence = 0.3, classes = { person = 0.5, truck = 0.6 } }

[fuser]
component = "weighted@^1"
params.weights = { tint = 0.4, objects = 0.6 }
"#;

fn misbehaving(name: &str, switch: &str) -> String {
    format!(
        r#"
name = "{name}"
fallback = 0.25
[limits]
fuel = 20000000
call_ms = 2000
[router]
component = "misbehave@1"
params = {{ model = "tint", {switch} = 0.5 }}
"#
    )
}

#[test]
fn early_exit_and_escalation() {
    let dir = policies("routing", &[("speed", SPEED)]);
    let server = Server::start(&dir.0, false, &[]);

    let (s, v) = predict(&server, "speed", &jpeg(&solid(64, 64, [255, 120, 0])));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stage"], "tint", "orange exits high at stage 1: {v}");
    assert!(num(&v["prediction"]) > 0.8);
    assert_eq!(v["trace"].as_array().unwrap().len(), 1);

    let (_, v) = predict(&server, "speed", &png(&solid(64, 64, [0, 0, 255])));
    assert_eq!(v["stage"], "tint", "blue exits low at stage 1: {v}");
    assert!(num(&v["prediction"]) < 0.2);

    // grey is undecided after stage 1: it escalates to the flip stage and fuses both
    let (_, v) = predict(&server, "speed", &png(&solid(64, 64, [128, 128, 128])));
    assert_eq!(v["stage"], "tint-flip", "{v}");
    let trace = v["trace"].as_array().unwrap();
    assert_eq!(trace.len(), 2);
    assert!(trace.iter().all(|t| t["primitive"] == "classify" && t["model"] == "tint"));
    assert!(v["reason"].as_str().unwrap().contains("tint:flip="), "{v}");
    assert_ne!(num(&v["prediction"]), 0.5);
}

#[test]
fn fusion_renormalises_over_present_scores_and_memoises() {
    let dir = policies("fusion", &[("fusion", FUSION)]);
    let server = Server::start(&dir.0, false, &[]);
    let (s, v) = predict(&server, "fusion", &png(&solid(96, 96, [200, 150, 60])));
    assert_eq!(s, 200, "{v}");
    let trace = v["trace"].as_array().unwrap();
    let classify: Vec<&Value> = trace.iter().filter(|t| t["primitive"] == "classify").collect();
    assert_eq!(classify.len(), 2, "{v}");
    assert_eq!(classify[0]["cached"], false);
    assert_eq!(classify[1]["cached"], true, "the second identical call is served from the memo: {v}");
    let detect = trace.iter().find(|t| t["primitive"] == "detect").expect("detector ran");
    assert!(detect["result"].as_str().unwrap().starts_with("0 boxes"), "{v}");
    // only `tint` is present: the fused score is the classifier's own, not 0.4 × it
    let tint: f64 = classify[0]["result"].as_str().unwrap().trim_start_matches("score=").parse().unwrap();
    assert!((num(&v["prediction"]) - tint).abs() < 1e-3, "{v}");
    assert!(!v["reason"].as_str().unwrap().contains("objects="), "{v}");
}

#[test]
fn detector_finds_vehicles_in_a_real_frame() {
    let manifest = std::fs::read_to_string(shared().join("data/roadwork-dev/manifest.csv")).expect("manifest");
    let frame = manifest
        .lines()
        .skip(1)
        .find(|l| l.starts_with("dashcam_mi3lab_workzone/"))
        .and_then(|l| l.split(',').next())
        .expect("a dash-camera frame");
    let bytes = std::fs::read(shared().join("data/roadwork-dev").join(frame)).expect("frame");
    let hk = r#"
name = "detect"
fallback = 0.3
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "objects"
detect = { model = "yolox", min_confidence = 0.3, classes = { car = 0.2, truck = 0.5, person = 0.5, bus = 0.3 }, absent_score = 0.1 }
on_error = "fail"
"#;
    let dir = policies("detect", &[("detect", hk)]);
    let server = Server::start(&dir.0, false, &[]);
    let (s, v) = predict(&server, "detect", &bytes);
    assert_eq!(s, 200, "{v}");
    let result = v["trace"][0]["result"].as_str().unwrap();
    assert!(["car", "truck", "person", "bus"].iter().any(|c| result.contains(c)), "{frame}: {result}");
    // the evidence worked out from the boxes the trace lists ("N boxes: car 0.87, ..."): the
    // noisy-OR of the class weights over boxes at or above min_confidence
    let (count, boxes) = result.split_once(" boxes: ").expect("a detection trace");
    let count: usize = count.parse().expect("a box count");
    assert!(count <= 8, "every box is listed (the trace lists eight): {result}");
    let weights = [("car", 0.2), ("truck", 0.5), ("person", 0.5), ("bus", 0.3)];
    let mut none = 1.0;
    for b in boxes.split(", ") {
        let (label, conf) = b.rsplit_once(' ').expect("label and confidence");
        let conf: f64 = conf.parse().expect("a confidence");
        assert!((conf - 0.3).abs() > 0.005, "a box at the cut, rounded in the trace: {result}");
        if let Some((_, w)) = weights.iter().find(|(c, _)| *c == label).filter(|_| conf >= 0.3) {
            none *= 1.0 - w;
        }
    }
    let want = 1.0 - none;
    assert!(
        (num(&v["prediction"]) - want).abs() < 1e-3,
        "{frame}: {} for {result}, worked out {want}",
        v["prediction"]
    );
}

#[test]
fn misbehaving_components_cost_a_fallback_not_the_host() {
    let dir = policies(
        "misbehave",
        &[
            ("trap", &misbehaving("trap", "trap_above")),
            ("spin", &misbehaving("spin", "spin_above")),
            ("grow", &misbehaving("grow", "grow_above")),
        ],
    );
    let mut server = Server::start(&dir.0, true, &["--component-memory-mb", "16"]);
    let orange = jpeg(&solid(48, 48, [255, 100, 0]));
    let blue = jpeg(&solid(48, 48, [0, 0, 255]));
    for (hk, kind) in [("trap", "trap"), ("spin", "fuel"), ("grow", "memory")] {
        for _ in 0..2 {
            let (s, v) = predict(&server, hk, &orange);
            assert_eq!(s, 200, "{hk}: {v}");
            assert_eq!(v["fallback"], true, "{hk}: {v}");
            assert_eq!(v["stage"], "fallback");
            assert_eq!(num(&v["prediction"]), 0.25);
            assert!(v["reason"].as_str().unwrap().contains("misbehave"), "{v}");
        }
        // the same hotkey still answers honestly when its component behaves
        let (s, v) = predict(&server, hk, &blue);
        assert_eq!(s, 200);
        assert_eq!(v["fallback"], false, "{hk}: {v}");
        assert!(num(&v["prediction"]) < 0.1);
        let (_, metrics) = get(&server.url("/metrics"));
        let line = format!("cascade_component_events_total{{hotkey=\"{hk}\",role=\"router\",kind=\"{kind}\"}} 2");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
        assert!(metrics.contains(&format!("cascade_fallbacks_total{{hotkey=\"{hk}\",reason=\"{kind}\"}} 2")));
    }
    assert!(server.alive());
}

#[test]
fn health_and_metrics() {
    let dir = policies("health", &[("speed", SPEED)]);
    let server = Server::start(&dir.0, false, &[]);
    let (s, body) = get(&server.url("/healthz"));
    assert_eq!(s, 200);
    assert!(body.contains("\"speed\""), "{body}");
    predict(&server, "speed", &jpeg(&solid(32, 32, [255, 0, 0])));
    let (s, m) = get(&server.url("/metrics"));
    assert_eq!(s, 200);
    assert!(m.contains("cascade_requests_total{hotkey=\"speed\",stage=\"tint\",outcome=\"ok\"} 1"), "{m}");
    assert!(m.contains("cascade_request_duration_seconds_count{hotkey=\"speed\"} 1"));
    assert!(m.contains("cascade_model_items_total{model=\"tint\"}"));
    assert!(m.contains("cascade_hotkey_model_seconds_total{hotkey=\"speed\",model=\"tint\"}"));
}

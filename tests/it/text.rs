//! OCR accuracy (rendered signs and a real dash-camera frame) and the keyword logic through
//! the real server: positive phrases, negative phrases that outweigh the words inside them,
//! non-English phrases, and text that says nothing.

use cascade_tests::*;

/// Stage 1 has no exits, so every image reaches the OCR stage; the text decides.
const SIGNS: &str = r#"
name = "signs"
fallback = 0.3
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
component = "keywords@^1"
params.positive = { "road work" = 1.5, "workers ahead" = 1.5, "road closed" = 1.2, "baustelle" = 1.5 }
params.negative = { "end road work" = 2.0, "road work ends" = 2.0 }

[fuser]
component = "weighted@^1"
params.weights = { tint = 0.2, text = 2.0 }
"#;

/// Lines `cascade infer` reads in one image, joined by spaces.
fn read(policies: &std::path::Path, image: &std::path::Path) -> String {
    read_text(policies, "ocr", image).1
}

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_uppercase()
}

#[test]
fn ocr_reads_rendered_signs_and_a_real_work_zone_frame() {
    let dir = policies("ocr", &[]);
    let images = repo().join("target/test-images");
    for (name, expected) in [
        ("road_work_ahead", "ROAD WORK AHEAD"),
        ("end_road_work", "END ROAD WORK"),
        ("road_work_ends", "ROAD WORK ENDS"),
        ("workers_ahead", "WORKERS AHEAD"),
        ("road_closed", "ROAD CLOSED"),
        ("baustelle", "BAUSTELLE"),
        ("speed_limit", "SPEED LIMIT 55"),
    ] {
        let got = read(&dir.0, &images.join(format!("{name}.jpg")));
        assert_eq!(squash(&got), squash(expected), "{name}: read {got:?}");
    }
    // a dash-camera frame from a US work zone with a "WORK AHEAD" sign
    let frame = shared().join("data/roadwork-dev/dashcam_mi3lab_workzone/charlotte_f0075.jpg");
    let got = read(&dir.0, &frame);
    assert!(got.contains("WORK") && got.contains("AHEAD"), "read {got:?}");
}

#[test]
fn keywords_decide_with_negative_phrases_outweighing_their_inner_words() {
    let dir = policies("signs", &[("signs", SIGNS)]);
    let server = Server::start(&dir.0, false, &[]);
    let answer = |name: &str| {
        let (s, v) = predict(&server, "signs", &sign(name));
        assert_eq!(s, 200, "{name}: {v}");
        assert_eq!(v["stage"], "text", "{name}: {v}");
        v
    };
    for name in ["road_work_ahead", "workers_ahead", "road_closed", "baustelle"] {
        let v = answer(name);
        assert!(num(&v["prediction"]) > 0.7, "{name} should read as roadwork: {v}");
        assert!(v["reason"].as_str().unwrap().contains("text="), "{v}");
    }
    for name in ["end_road_work", "road_work_ends"] {
        let v = answer(name);
        assert!(num(&v["prediction"]) < 0.2, "{name} should read as the end of roadwork: {v}");
    }
    // text without any phrase is no evidence: the classifier's score stands alone
    let v = answer("speed_limit");
    assert!(!v["reason"].as_str().unwrap().contains("text="), "{v}");
    let ocr = v["trace"].as_array().unwrap().iter().find(|t| t["primitive"] == "read-text").expect("OCR ran");
    assert!(ocr["result"].as_str().unwrap().contains("SPEED"), "{v}");
}

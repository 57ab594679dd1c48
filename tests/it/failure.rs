//! What a failed policy answers. Without a `fallback` (the shipped default) it is the scores
//! models had already produced, never a made-up constant; with one, that constant.

use cascade_tests::*;

/// Classifies, then traps on orange images (the score is high): a policy that fails after a
/// model has scored the image.
fn trapping(fallback: Option<f32>) -> String {
    let f = fallback.map(|f| format!("fallback = {f}\n")).unwrap_or_default();
    format!("name = \"trap\"\n{f}[router]\ncomponent = \"misbehave@1\"\nparams = {{ model = \"tint\", trap_above = 0.5 }}\n")
}

#[test]
fn a_failed_policy_answers_partial_evidence_or_its_explicit_fallback() {
    let orange = jpeg(&solid(32, 32, [255, 120, 0]));
    let dir = policies("failure-partial", &[("trap", &trapping(None))]);
    let server = Server::start(&dir.0, true, &[]);
    let (s, v) = predict(&server, "trap", &orange);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["source"], "partial", "{v}");
    assert_eq!(v["fallback"], true, "{v}");
    // the classifier's own score on this image (`cascade infer`), not a constant
    let file = dir.write("orange.jpg", "");
    std::fs::write(&file, &orange).expect("write image");
    let out =
        cascade().args(["infer", "--model", "tint", "--policies"]).arg(&dir.0).arg(&file).output().expect("infer");
    let line = String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string).expect("one JSON line");
    let score = num(&serde_json::from_str::<Value>(&line).expect("json")["result"]["score"]);
    let p = num(&v["prediction"]);
    assert!(score > 0.5 && (p - score).abs() < 1e-4, "partial {p}, the classifier's score {score}: {v}");
    assert!(v["reason"].as_str().unwrap_or("").contains("answered from tint"), "{v}");
    let (_, m) = get(&server.url("/metrics"));
    assert!(m.contains("cascade_partial_answers_total{hotkey=\"trap\",model=\"tint\"} 1"), "{m}");
    assert!(m.contains("cascade_requests_total{hotkey=\"trap\",stage=\"partial\",outcome=\"partial\"} 1"), "{m}");
    drop(server);

    let dir = policies("failure-fallback", &[("trap", &trapping(Some(0.3)))]);
    let server = Server::start(&dir.0, true, &[]);
    let (s, v) = predict(&server, "trap", &orange);
    assert_eq!((s, v["source"].as_str()), (200, Some("fallback")), "{v}");
    assert_eq!(num(&v["prediction"]), 0.3_f32 as f64, "{v}");
}

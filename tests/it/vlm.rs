//! The `vlm` engine behind `ask` / `ask-score`, end to end: the real server, the real router
//! component, and a local stand-in of an OpenAI-compatible chat-completions server
//! (`tests/standins/openai_chat.py`; no VLM can run here). The stand-in answers "roadwork" for
//! orange-red images. Every hotkey asks first and falls back on the `tint` classifier, so a
//! failing endpoint shows as the policy going on without it.

use std::time::{Duration, Instant};

use cascade_tests::standin::OpenAiStandIn;
use cascade_tests::*;

const ORANGE: [u8; 3] = [240, 120, 20];
const BLUE: [u8; 3] = [30, 60, 200];

/// Every VLM but `vl` sends the key in `STANDIN_KEY`.
const KEY: &str = ", api_key_env = \"STANDIN_KEY\"";

/// The test registry plus VLMs on the stand-in (two failures in a row open the circuit for
/// 600 ms; one retry after 50 ms).
fn registry(url: &str) -> String {
    let mut r = test_registry();
    for (name, model, extra) in [
        ("vl", "standin-vl", ""),
        ("vl-words", "standin-vl-words", KEY),
        ("vl-think", "standin-vl-think", KEY),
        ("vl-describe", "standin-vl-describe", KEY),
        ("vl-refuse", "standin-vl-refuse", KEY),
        ("vl-keyed", "standin-vl", KEY),
    ] {
        r.push_str(&format!(
            "\n[[model]]\nname = \"{name}\"\nkind = \"vlm\"\nworkers = 4\nvlm = {{ url = \"{url}\", model = \"{model}\", timeout_ms = 3000, retries = 1, backoff_ms = 50, breaker = {{ failures = 2, open_ms = 600 }}{extra} }}\n"
        ));
    }
    r
}

/// A hotkey that asks `model` (exit below 0.2 or above 0.8), then classifies with `tint`.
fn hotkey(name: &str, model: &str, budget_ms: u64) -> String {
    format!(
        r#"name = "{name}"
budget_ms = {budget_ms}
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "vlm"
ask = {{ model = "{model}", prompt = "Is there ACTIVE road construction in this image? Answer YES or NO." }}
exit_low = 0.2
exit_high = 0.8
[[router.params.stages]]
name = "tint"
classify = ["tint"]
"#
    )
}

fn setup(tag: &str, api_key: Option<&str>) -> (OpenAiStandIn, TempDir) {
    let standin = OpenAiStandIn::start(api_key);
    let d = TempDir::new(tag);
    d.write("models.toml", &registry(&standin.url));
    for (name, model) in [
        ("ask", "vl"),
        ("words", "vl-words"),
        ("think", "vl-think"),
        ("describe", "vl-describe"),
        ("refuse", "vl-refuse"),
        ("keyed", "vl-keyed"),
    ] {
        d.write(&format!("{name}.toml"), &hotkey(name, model, 4000));
    }
    d.write("tight.toml", &hotkey("tight", "vl", 800));
    (standin, d)
}

fn ask(server: &Server, hotkey: &str, rgb: [u8; 3]) -> Value {
    ask_sized(server, hotkey, rgb, 64)
}

/// Images of different widths are different images to the stage cache.
fn ask_sized(server: &Server, hotkey: &str, rgb: [u8; 3], width: u32) -> Value {
    let (status, v) = predict(server, hotkey, &jpeg(&solid(width, 64, rgb)));
    assert_eq!(status, 200, "{v}");
    v
}

fn trace_of(v: &Value) -> String {
    v["trace"].to_string()
}

#[test]
fn answers_are_scored_from_logprobs_or_words_after_reasoning() {
    let (standin, pol) = setup("vlm-scores", Some("sekret"));
    let server = Server::start_env(&pol.0, false, &[], &[("STANDIN_KEY", "sekret")]);

    let yes = ask(&server, "keyed", ORANGE);
    assert_eq!(yes["stage"], "vlm", "{yes}");
    assert!(num(&yes["prediction"]) > 0.95, "{yes}");
    assert!(trace_of(&yes).contains("(logprobs)"), "{yes}");
    let no = ask(&server, "keyed", BLUE);
    assert_eq!(no["stage"], "vlm", "{no}");
    assert!(num(&no["prediction"]) < 0.05, "{no}");

    // no log-probabilities from this model: the certainty words decide
    let words = ask(&server, "words", ORANGE);
    assert_eq!(words["stage"], "vlm", "{words}");
    assert!((num(&words["prediction"]) - 0.97).abs() < 1e-6, "{words}");
    assert!(trace_of(&words).contains("(parsed)"), "{words}");

    // a reasoning block before the answer: the answer after it counts, with its logprobs
    let think = ask(&server, "think", BLUE);
    assert_eq!(think["stage"], "vlm", "{think}");
    assert!(num(&think["prediction"]) < 0.05 && trace_of(&think).contains("answer=\\\"NO\\\""), "{think}");

    // neither yes nor no, or a refusal: no evidence, the classifier answers
    for hk in ["describe", "refuse"] {
        let v = ask(&server, hk, ORANGE);
        assert_eq!(v["stage"], "tint", "{hk}: {v}");
        assert!(v["reason"].as_str().unwrap_or("").contains("no yes or no"), "{hk}: {v}");
    }

    // without the key the stand-in says 401: not retried, not the server's fault
    let before = standin.requests();
    let unkeyed = ask(&server, "ask", ORANGE);
    assert_eq!(unkeyed["stage"], "tint", "{unkeyed}");
    assert!(trace_of(&unkeyed).contains("HTTP 401"), "{unkeyed}");
    assert_eq!(standin.requests() - before, 1, "a 401 is not retried");

    // the same question about the same image is asked once (stage cache), whichever hotkey
    let before = standin.requests();
    let again = ask(&server, "keyed", ORANGE);
    assert_eq!(again["prediction"], yes["prediction"]);
    assert_eq!(standin.requests(), before, "a repeated question is answered from the stage cache");
}

#[test]
fn failing_endpoints_fail_inside_the_budget_and_the_breaker_fails_fast_then_probes_back() {
    let (standin, pol) = setup("vlm-failures", None);
    let server = Server::start_env(&pol.0, false, &[], &[("STANDIN_KEY", "unused")]);
    // distinct images, so that no answer comes from the stage cache
    let mut width = 64;
    let mut ask = |server: &Server, hotkey: &str| {
        width += 1;
        ask_sized(server, hotkey, ORANGE, width)
    };

    for (mode, says) in
        [("500", "HTTP 500"), ("malformed", "malformed JSON"), ("empty", "no choices"), ("die", "connection")]
    {
        standin.mode(mode, 0);
        let before = standin.requests();
        let v = ask(&server, "ask");
        assert_eq!(v["stage"], "tint", "{mode}: the policy goes on without the VLM: {v}");
        assert!(trace_of(&v).contains(says), "{mode}: {v}");
        assert_eq!(standin.requests() - before, 2, "{mode}: one retry");
        // each of these opened the circuit (two failures in a row): wait for the probe
        std::thread::sleep(Duration::from_millis(700));
        standin.mode("ok", 0);
        let ok = ask(&server, "ask");
        assert_eq!(ok["stage"], "vlm", "{mode}: the probe closes the circuit again: {ok}");
    }

    // down: the first request opens the circuit, the next ones fail at once without a call
    standin.mode("503", 0);
    ask(&server, "ask");
    let before = standin.requests();
    let started = Instant::now();
    let fast = ask(&server, "ask");
    assert!(started.elapsed() < Duration::from_millis(500), "fails fast: {:?}", started.elapsed());
    assert!(trace_of(&fast).contains("circuit open"), "{fast}");
    assert_eq!(standin.requests(), before, "an open circuit makes no call");
    let (_, metrics) = get(&server.url("/metrics"));
    assert!(metrics.contains("cascade_model_breaker_open{model=\"vl\"} 1"), "{metrics}");
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("cascade_model_fast_failures_total{model=\"vl\"} ") && !l.ends_with(" 0")));
    // back up: after open_ms one probe goes through and closes it
    standin.mode("ok", 0);
    std::thread::sleep(Duration::from_millis(700));
    let back = ask(&server, "ask");
    assert_eq!(back["stage"], "vlm", "{back}");
    let (_, metrics) = get(&server.url("/metrics"));
    assert!(metrics.contains("cascade_model_breaker_open{model=\"vl\"} 0"), "{metrics}");

    // a probe the server answers with a 4xx: the server is up, the circuit closes (it must not
    // stay half-open with no probe left to close it)
    standin.mode("503", 0);
    ask(&server, "ask");
    std::thread::sleep(Duration::from_millis(700));
    standin.mode("400", 0);
    let v = ask(&server, "ask");
    assert!(trace_of(&v).contains("HTTP 400"), "the probe reached the server: {v}");
    standin.mode("ok", 0);
    let v = ask(&server, "ask");
    assert_eq!(v["stage"], "vlm", "closed after a probe answered 400: {v}");

    // slower than the request's budget (800 ms): the VLM gives up 300 ms before its end
    // (`reserve_ms`), and the classifier answers inside the budget
    standin.mode("slow", 5000);
    let started = Instant::now();
    let slow = ask(&server, "tight");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "answered at {took:?}, not after the VLM's 5 s");
    assert_eq!(slow["stage"], "tint", "{slow}");
    assert!(trace_of(&slow).contains("deadline") || trace_of(&slow).contains("timed out"), "{slow}");
    standin.mode("ok", 0);
}

#[test]
fn a_vlm_entry_is_checked_at_load() {
    let d = TempDir::new("vlm-check");
    let comps = components(false);
    for (entry, says) in [
        ("vlm = { url = \"localhost:1\", model = \"m\" }", "must start with http://"),
        (
            "vlm = { url = \"http://127.0.0.1:1/v1\", model = \"m\", api_key_env = \"CASCADE_NO_SUCH_KEY\" }",
            "CASCADE_NO_SUCH_KEY is not set",
        ),
        ("vlm = { url = \"http://127.0.0.1:1/v1\", model = \"m\", top_logprobs = 50 }", "top_logprobs 50"),
        ("vlm = { url = \"http://127.0.0.1:1/v1\", model = \"m\", temprature = 0.1 }", "unknown field `temprature`"),
        ("file = \"x.onnx\"\nvlm = { url = \"http://127.0.0.1:1/v1\", model = \"m\" }", "a vlm has no file"),
    ] {
        d.write("models.toml", &format!("[[model]]\nname = \"v\"\nkind = \"vlm\"\n{entry}\n"));
        let (code, out) = run(&["check"], &d.0, &comps.0);
        assert_ne!(code, 0, "{entry}: {out}");
        assert!(out.contains(says), "{entry}: {out}");
    }
}

//! Rollouts on the real server: A/B split (sticky), shadow copies (never returned), canary
//! promotion and rollback by rules, blue-green switches through the admin API, and the
//! decision surviving a restart.

use cascade_tests::*;

const CANDIDATE: &str = r#"{ component = "cascade-router@^1", params = { stages = [{ name = "cand", classify = ["tint"], on_error = "fail" }] } }"#;
const TRAPPING: &str = r#"{ component = "misbehave@1", params = { model = "tint", trap_above = 0.5 } }"#;

fn image(i: u32) -> Vec<u8> {
    png(&solid(16, 16, [(i * 37 % 256) as u8, (i * 91 % 256) as u8, (i * 13 % 256) as u8]))
}

fn arm(server: &Server, hotkey: &str, img: &[u8]) -> (String, Value) {
    let (s, v) = predict(server, hotkey, img);
    assert_eq!(s, 200, "{v}");
    (v["arm"].as_str().unwrap_or("").to_string(), v)
}

fn admin(server: &Server, hotkey: &str, action: &str) -> (u16, Value) {
    post(&server.url(&format!("/admin/hotkeys/{hotkey}/{action}")), "application/json", b"{}")
}

#[test]
fn ab_split_is_sticky_and_counted_per_arm() {
    let dir = policies("ab", &[("ab", &rollout_hotkey("ab", "mode = \"ab\"\nshare = 50", CANDIDATE))]);
    let server = Server::start(&dir.0, false, &[]);
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..40 {
        let (a, v) = arm(&server, "ab", &image(i));
        assert_eq!(v["stage"], if a == "candidate" { "cand" } else { "stable" }, "{v}");
        *seen.entry(a.clone()).or_insert(0) += 1;
        // the same image again: the same arm
        assert_eq!(arm(&server, "ab", &image(i)).0, a);
    }
    assert!(
        seen.get("stable").copied().unwrap_or(0) >= 8 && seen.get("candidate").copied().unwrap_or(0) >= 8,
        "{seen:?}"
    );
    let (_, m) = get(&server.url("/metrics"));
    assert!(m.contains("cascade_arm_requests_total{hotkey=\"ab\",arm=\"candidate\",outcome=\"ok\"}"), "{m}");
    let st = status(&server);
    assert_eq!(num(&st["hotkeys"]["ab"]["rollout"]["candidate_share"]), 50.0, "{st}");
}

#[test]
fn shadow_answers_are_compared_but_never_returned() {
    let dir = policies("shadow", &[("sh", &rollout_hotkey("sh", "mode = \"shadow\"\nmax_inflight = 4", CANDIDATE))]);
    let server = Server::start(&dir.0, false, &[]);
    for i in 0..20 {
        let (a, v) = arm(&server, "sh", &image(i));
        assert_eq!(a, "stable", "{v}");
        assert_eq!(v["stage"], "stable");
    }
    let shadow = eventually(10, "shadow comparisons", || {
        let s = status(&server)["hotkeys"]["sh"]["rollout"]["shadow"].clone();
        (num(&s["compared"]) + num(&s["skipped"]) >= 20.0).then_some(s)
    });
    assert!(num(&shadow["compared"]) >= 1.0, "{shadow}");
    assert_eq!(num(&shadow["agreement"]), 1.0, "the same classifier agrees with itself: {shadow}");
}

#[test]
fn canary_promotes_when_rules_hold_and_rolls_back_when_they_fail() {
    let good = rollout_hotkey(
        "good",
        "mode = \"canary\"\nsteps = [50, 100]\nmin_requests = 4\nmax_error_rate = 0.0\nmin_agreement = 0.9",
        CANDIDATE,
    );
    let bad =
        rollout_hotkey("bad", "mode = \"canary\"\nsteps = [50, 100]\nmin_requests = 4\nmax_error_rate = 0.0", TRAPPING);
    let dir = policies("canary", &[("good", &good), ("bad", &bad)]);
    let server = Server::start(&dir.0, true, &[]);
    let mut i = 0;
    let ro = eventually(30, "canary promoted", || {
        i += 1;
        arm(&server, "good", &image(i));
        let r = status(&server)["hotkeys"]["good"]["rollout"].clone();
        (r["winner"] == "candidate").then_some(r)
    });
    let history = ro["history"].to_string();
    assert!(history.contains("step passed") && history.contains("promote: canary: every step passed"), "{ro}");
    assert_eq!(arm(&server, "good", &image(999)).0, "candidate");

    // the trapping candidate costs fallbacks: the error-rate rule rolls it back
    let ro = eventually(30, "canary rolled back", || {
        i += 1;
        arm(&server, "bad", &png(&solid(16, 16, [255, 90, 0])));
        arm(&server, "bad", &image(i));
        let r = status(&server)["hotkeys"]["bad"]["rollout"].clone();
        (r["winner"] == "stable").then_some(r)
    });
    assert!(ro["history"].to_string().contains("rollback: rule failed: error rate"), "{ro}");
    for j in 0..5 {
        assert_eq!(arm(&server, "bad", &image(1000 + j)).0, "stable");
    }
    let (_, m) = get(&server.url("/metrics"));
    assert!(m.contains("cascade_rollout_events_total{hotkey=\"bad\",event=\"rollback\"} 1"), "{m}");
}

#[test]
fn blue_green_switches_through_the_admin_api_and_survives_a_restart() {
    let dir = policies(
        "bluegreen",
        &[("bg", &rollout_hotkey("bg", "mode = \"blue-green\"\nactive = \"stable\"", CANDIDATE))],
    );
    {
        let server = Server::start(&dir.0, false, &[]);
        assert_eq!(arm(&server, "bg", &image(1)).0, "stable");
        let (s, v) = admin(&server, "bg", "promote");
        assert_eq!(s, 200, "{v}");
        for i in 0..5 {
            assert_eq!(arm(&server, "bg", &image(i)).0, "candidate");
        }
        let (s, _) = admin(&server, "bg", "rollback");
        assert_eq!(s, 200);
        assert_eq!(arm(&server, "bg", &image(2)).0, "stable");
        let (s, _) = admin(&server, "bg", "promote");
        assert_eq!(s, 200);
        let (s, v) = admin(&server, "nobody", "promote");
        assert_eq!(s, 404, "{v}");
    }
    assert!(dir.0.join("bg.state.json").exists());
    let server = Server::start(&dir.0, false, &[]);
    assert_eq!(arm(&server, "bg", &image(3)).0, "candidate", "the promotion survives the restart");
    let st = status(&server);
    assert!(st["hotkeys"]["bg"]["rollout"]["history"].to_string().contains("promote: admin API"), "{st}");
}

#[test]
fn a_canary_waits_for_its_time_and_for_labelled_evidence() {
    let rule = |report: &str| {
        format!("mode = \"canary\"\nsteps = [50]\nmin_requests = 2\nmin_step_s = 3\nevidence = {{ report = \"{report}\", min_labelled = 3 }}")
    };
    let dir = policies(
        "evidence",
        &[
            ("proven", &rollout_hotkey("proven", &rule("proven.json"), CANDIDATE)),
            ("worse", &rollout_hotkey("worse", &rule("worse.json"), CANDIDATE)),
        ],
    );
    let server = Server::start(&dir.0, false, &[]);
    // timed from readiness (the step began at load, before it; a loaded machine may take a
    // while between the two): without min_step_s the two requests it needs take milliseconds
    let started = std::time::Instant::now();
    let rollout = |hk: &str| status(&server)["hotkeys"][hk]["rollout"].clone();
    let mut i = 0;
    // enough requests and time, but no evidence yet: the canary holds at its last step
    let ro = eventually(30, "holding for evidence", || {
        i += 1;
        arm(&server, "proven", &image(i));
        let r = rollout("proven");
        r["history"].to_string().contains("waiting for labelled evidence").then_some(r)
    });
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "min_step_s holds the step for three seconds: {:?}",
        started.elapsed()
    );
    assert!(ro["winner"].is_null(), "{ro}");
    // a labelled replay in which the candidate does better: promoted
    let report = |cand: f64| {
        format!(r#"{{"labelled": {{"logged": {{"mcc": 0.4, "n": 3}}, "candidate": {{"mcc": {cand}, "n": 3}}}}}}"#)
    };
    dir.write("proven.json", &report(0.6));
    let ro = eventually(30, "promoted on evidence", || {
        i += 1;
        arm(&server, "proven", &image(i));
        let r = rollout("proven");
        (r["winner"] == "candidate").then_some(r)
    });
    assert!(
        ro["history"].to_string().contains("labelled evidence: candidate MCC 0.600 vs logged 0.400 (3 images)"),
        "{ro}"
    );
    // one in which it does worse: rolled back
    dir.write("worse.json", &report(0.2));
    let ro = eventually(30, "rolled back on evidence", || {
        i += 1;
        arm(&server, "worse", &image(i));
        let r = rollout("worse");
        (r["winner"] == "stable").then_some(r)
    });
    assert!(ro["history"].to_string().contains("labelled evidence: candidate MCC 0.200 < logged 0.400"), "{ro}");
}

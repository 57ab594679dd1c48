//! The process's life under a supervisor: SIGTERM drains requests in flight before exiting,
//! SIGHUP re-reads everything (a broken file is refused, the last good version serves), and
//! `--log-format json` writes one JSON object per log line.

use std::time::{Duration, Instant};

use cascade_tests::*;

/// A router that spins on orange images until its 2 s call limit: requests that take time.
const SLOW: &str = r#"
name = "slow"
fallback = 0.25
[limits]
fuel = 100000000000
call_ms = 2000
[router]
component = "misbehave@1"
params = { model = "tint", spin_above = 0.5 }
"#;

#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits() {
    let dir = policies("drain", &[("slow", SLOW)]);
    let mut server = Server::start(&dir.0, true, &["--drain-s", "15", "--log-format", "json"]);
    let orange = jpeg(&solid(32, 32, [255, 120, 0]));
    let inflight: Vec<_> = (0..6)
        .map(|_| {
            let (url, img) = (server.url("/v1/predict/slow"), orange.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let r = post(&url, "image/jpeg", &img);
                (r, started.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    server.signal("TERM");
    // every request that was in flight is answered, none cut mid-answer
    for t in inflight {
        let ((s, v), took) = t.join().expect("thread");
        assert_eq!(s, 200, "{v}");
        assert!(took >= Duration::from_millis(1500), "it really was in flight: {took:?}");
    }
    let status = server.wait_exit(15).expect("exits after draining");
    assert!(status.success(), "{status:?}");
    let drained = asked.elapsed();
    assert!(drained < Duration::from_secs(10), "drained in {drained:?}");
    // the logs are JSON lines and say so
    let log = server.log();
    let lines: Vec<serde_json::Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty() && lines.len() == log.lines().count(), "every line is JSON:\n{log}");
    assert!(lines.iter().any(|l| l["message"] == "SIGTERM; draining"), "{log}");
    assert!(lines.iter().any(|l| l["message"] == "drained"), "{log}");
}

/// Policies run on the server's worker threads (awaited, not handed to threads of their own):
/// ones that compute for long must yield them, or a few would starve every other request.
#[test]
fn policies_computing_for_long_do_not_hold_the_server() {
    // spinning for 4 s: a server whose policies held its workers would answer after 3.6 s
    let slower = SLOW.replace("call_ms = 2000", "call_ms = 4000");
    let dir = policies("yield", &[("slow", &slower), ("good", &tint_hotkey("good"))]);
    let server = Server::start(&dir.0, true, &[]);
    let orange = jpeg(&solid(32, 32, [255, 120, 0]));
    let blue = jpeg(&solid(32, 32, [0, 0, 255]));
    // more spinning calls than the server has worker threads (it has one per core)
    let spinning: Vec<_> = (0..8)
        .map(|_| {
            let (url, img) = (server.url("/v1/predict/slow"), orange.clone());
            std::thread::spawn(move || post(&url, "image/jpeg", &img))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    for _ in 0..3 {
        let started = Instant::now();
        let (s, v) = predict(&server, "good", &blue);
        let took = started.elapsed();
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["fallback"], false, "{v}");
        assert!(took < Duration::from_millis(1500), "answered in {took:?} beside 8 spinning policies");
    }
    for t in spinning {
        let (s, v) = t.join().expect("thread");
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["stage"], "fallback", "the spin ends at the call limit: {v}");
    }
}

/// A client that hangs up mid-answer (a validator's timeout) does not cut the policy short: the
/// answer is still counted, as the prediction log and the status page would see it.
#[test]
fn a_policy_runs_to_its_end_when_the_client_hangs_up() {
    let dir = policies("hangup", &[("slow", SLOW)]);
    let server = Server::start(&dir.0, true, &[]);
    let orange = jpeg(&solid(32, 32, [255, 120, 0]));
    let impatient: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_millis(300))).build().into();
    let r = impatient.post(&server.url("/v1/predict/slow")).header("Content-Type", "image/jpeg").send(&orange[..]);
    assert!(r.is_err(), "the client gave up before the 2 s spin ended");
    let counted = "cascade_requests_total{hotkey=\"slow\",stage=\"fallback\",outcome=\"fallback\"} 1";
    eventually(10, "the abandoned request is answered and counted", || {
        let (_, m) = get(&server.url("/metrics"));
        m.contains(counted).then_some(())
    });
}

#[test]
fn sighup_rereads_everything_and_refuses_a_broken_file() {
    let dir = policies("sighup", &[("good", &tint_hotkey("good"))]);
    let server = Server::start(&dir.0, false, &["--no-watch"]);
    let stage = || predict(&server, "good", &jpeg(&solid(32, 32, [200, 90, 10]))).1["stage"].clone();
    assert_eq!(stage(), "tint");
    // broken: refused on SIGHUP with the reason, the last good version keeps serving
    dir.write("good.toml", &tint_hotkey("good").replace("classify", "clasify"));
    server.signal("HUP");
    eventually(10, "the broken file is refused", || {
        refusals(&server).into_iter().find(|r| r.contains("good.toml") && r.contains("clasify"))
    });
    assert_eq!(stage(), "tint");
    // fixed: applied on the next SIGHUP
    dir.write("good.toml", &tint_hotkey("good").replace("name = \"tint\"", "name = \"renamed\""));
    server.signal("HUP");
    eventually(10, "the fixed file serves", || (stage() == "renamed").then_some(()));
}

#[test]
fn without_nvml_there_are_no_gpu_series_and_one_info_line() {
    let dir = policies("nvml", &[("good", &tint_hotkey("good"))]);
    let server = Server::start(&dir.0, false, &[]);
    for _ in 0..3 {
        let (s, m) = get(&server.url("/metrics"));
        assert_eq!(s, 200);
        assert!(!m.contains("cascade_gpu_"), "{m}");
        assert!(m.ends_with("# EOF\n"), "{m}");
    }
    let log = server.log();
    assert_eq!(log.matches("NVML is not available").count(), 1, "{log}");
}

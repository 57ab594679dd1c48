//! Subnet 72 requests from the real Python client (bittensor 9.12.2's `Dendrite`, in the venv
//! `scripts/bt_venv.sh` makes) to the real server on loopback: both routes, two hotkeys on one
//! port, a pinned port, replayed and stale nonces, bad and missing signatures, unknown synapses,
//! blacklisted callers, bad bodies; and header-level refusals with plain HTTP.

use std::process::Command;

use cascade_tests::*;

fn python() -> std::path::PathBuf {
    let p = repo().join(".cache/bt-venv/bin/python");
    assert!(p.exists(), "{} is missing: scripts/test.sh runs scripts/bt_venv.sh", p.display());
    p
}

fn dendrite(args: &[&str]) -> Value {
    let out = Command::new(python()).arg(repo().join("tests/interop/dendrite.py")).args(args).output().expect("python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn hotkey(name: &str, ss58: &str, axon: &str) -> String {
    format!("name = \"{name}\"\nss58 = \"{ss58}\"\nfallback = 0.3\n[router]\ncomponent = \"cascade-router@^1\"\n[[router.params.stages]]\nname = \"tint\"\nclassify = [\"tint\"]\n[axon]\n{axon}\n")
}

/// The tests that drive hundreds of Python dendrite requests run one at a time, with a
/// generous read timeout: on a loaded 2-core machine a starved Python client can take longer
/// than the default 10 s to send a request's headers, and the server rightly cuts it off.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const PATIENT: &[&str] = &["--read-timeout-s", "60", "--first-byte-timeout-s", "30"];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[test]
fn the_real_dendrite_gets_python_axon_answers() {
    let _one = serial();
    let wallets = TempDir::new("wallets");
    let w = dendrite(&["wallets", wallets.0.to_str().expect("path")]);
    let s = |k: &str| w[k].as_str().expect("ss58").to_string();
    let pinned = free_port();
    let a = hotkey("a", &s("miner-a"), &format!("allow = [\"{}\"]", s("validator")));
    let b = hotkey("b", &s("miner-b"), &format!("allow = [\"{}\"]", s("validator")));
    let c = hotkey("c", &s("miner-c"), &format!("allow_any_signed = true\nlisten = \"127.0.0.1:{pinned}\""));
    let dir = policies("axon", &[("a", &a), ("b", &b), ("c", &c)]);
    let server = Server::start(&dir.0, false, PATIENT);
    let port: u16 = server.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    use base64::Engine as _;
    let img = base64::engine::general_purpose::STANDARD.encode(sign("road_closed"));
    let spec = json!({"port": port, "pinned_port": pinned, "image": img}).to_string();
    let r = dendrite(&["call", wallets.0.to_str().expect("path"), &spec]);

    for (i, v) in r["multi_axon"].as_array().expect("three answers").iter().enumerate() {
        assert_eq!(v["dendrite_status"], 200, "axon {i} of one call: {v}");
    }
    assert_eq!(r["stranger_flood"]["codes"]["403"], 300, "{r}");
    assert_eq!(r["stranger_flood"]["validator_after"], 200, "{r}");
    assert_eq!(r["out_of_order"]["later_signed"], 200, "{r}");
    assert_eq!(r["out_of_order"]["earlier_signed"], 200, "nonces are per miner hotkey: {r}");
    for ok in ["image_a", "extended_a", "image_b_same_port", "image_c_pinned"] {
        let v = &r[ok];
        assert_eq!(v["success"], true, "{ok}: {v}");
        assert_eq!(v["dendrite_status"], 200, "{ok}: {v}");
        let p = num(&v["prediction"]);
        assert!((0.0..=1.0).contains(&p) && p != 0.5, "{ok}: {v}");
    }
    let code = |k: &str, f: &str| r[k][f].as_u64().unwrap_or(0);
    assert_eq!(code("c_on_shared_port", "dendrite_status"), 403, "{r}");
    assert_eq!(code("unknown_synapse", "dendrite_status"), 404, "{r}");
    assert_eq!(code("blacklisted", "dendrite_status"), 403, "{r}");
    assert_eq!(code("b_only_allows_validator", "dendrite_status"), 403, "{r}");
    assert_eq!((code("replay", "first"), code("replay", "second")), (200, 401), "{r}");
    assert_eq!(code("stale_nonce", "status"), 401, "{r}");
    assert_eq!(code("bad_signature", "status"), 401, "{r}");
    assert_eq!(code("unsigned", "status"), 401, "{r}");
    assert_eq!(code("signed_for_another_axon", "status"), 401, "{r}");
    assert_eq!(code("wrong_types", "status"), 400, "{r}");
    assert_eq!(code("not_an_image", "status"), 400, "{r}");
    assert_eq!(code("get", "status"), 200, "{r}");
    assert!(r["replay"]["message"].as_str().unwrap_or("").contains("nonce"), "{r}");
    // a refused body spends no nonce; an open hotkey refuses nonces an hour ahead
    assert_eq!(code("nonce_after_bad_body", "bad_body"), 400, "{r}");
    assert_eq!(code("nonce_after_bad_body", "same_nonce_good_body"), 200, "{r}");
    let ahead = &r["open_hotkey_future_nonce"];
    assert_eq!(ahead["58_min"]["status"], 401, "{r}");
    assert!(ahead["58_min"]["message"].as_str().unwrap_or("").contains("too far in the future"), "{r}");
    assert_eq!(ahead["1_min"]["status"], 200, "{r}");

    // honest requests kept being served throughout
    let again = dendrite(&["call", wallets.0.to_str().expect("path"), &spec]);
    assert_eq!(again["image_a"]["success"], true, "{again}");
    let (_, m) = get(&server.url("/metrics"));
    assert!(m.contains("cascade_axon_requests_total{status=\"401\"}"), "{m}");
}

#[test]
fn header_problems_are_refused_before_the_body_is_read() {
    let dir = policies(
        "axon-headers",
        &[("a", &hotkey("a", "5FyFVRsgwBT89gGsyif1ZayCDAthzrZxS7fzxCafhwwzkft7", "allow_any_signed = true"))],
    );
    let server = Server::start(&dir.0, false, &[]);
    let url = server.url("/ImageSynapse");
    let base = [
        ("bt_header_axon_hotkey", "5FyFVRsgwBT89gGsyif1ZayCDAthzrZxS7fzxCafhwwzkft7"),
        ("bt_header_dendrite_hotkey", "5CVVhPmJGWpMdEmTpzZp8HVo5DKUCzmvm3BNbVS6YSSecmoN"),
        ("bt_header_dendrite_uuid", "u"),
        ("bt_header_dendrite_nonce", "1899999999999999999"),
        ("bt_header_dendrite_signature", "0x00"),
        ("computed_body_hash", "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"),
    ];
    let send = |skip: &str, replace: (&str, &str)| -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut req = agent.post(&url).header("Content-Type", "application/json");
        for (k, v) in base {
            if k == skip {
                continue;
            }
            req = req.header(k, if k == replace.0 { replace.1 } else { v });
        }
        // a body that would be costly to decode if anything read it
        let mut r = req.send(&b"{\"image\": \"not even base64\"}"[..]).expect("send");
        let status = r.status().as_u16();
        (status, serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null))
    };
    let (s, v) = send("bt_header_dendrite_hotkey", ("", ""));
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("bt_header_dendrite_hotkey"), "{v}");
    let (s, v) = send("", ("bt_header_dendrite_nonce", "12ab"));
    assert_eq!(s, 400, "{v}");
    let (s, v) = send("", ("computed_body_hash", "00"));
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("Hash mismatch"), "{v}");
    // a flood of badly signed requests: refused at the signature, never decoding the image
    for i in 0..50 {
        let (s, v) = send("", ("bt_header_dendrite_nonce", &format!("{}", 1_900_000_000_000_000_000u64 + i)));
        assert_eq!(s, 401, "{v}");
    }
    let (_, m) = get(&server.url("/metrics"));
    assert!(m.contains("cascade_axon_requests_total{status=\"401\"} 50"), "{m}");
    assert!(!m.contains("cascade_requests_total{hotkey=\"a\""), "no policy ran: {m}");
}

fn ss58s(w: &Value) -> impl Fn(&str) -> String + '_ {
    |k: &str| w[k].as_str().expect("ss58").to_string()
}

/// A metagraph snapshot as `scripts/chain/metagraph_sync.py` writes it.
fn snapshot(neurons: &[(&str, bool)], taken_at: f64) -> String {
    snapshot_at(neurons, taken_at, 1000)
}

fn snapshot_at(neurons: &[(&str, bool)], taken_at: f64, block: u64) -> String {
    let ns: Vec<Value> = neurons
        .iter()
        .enumerate()
        .map(|(uid, (key, permit))| json!({"uid": uid, "hotkey": key, "coldkey": key, "stake": 100.0, "validator_permit": permit, "ip": "0.0.0.0", "port": 0}))
        .collect();
    json!({"version": 1, "network": "test", "netuid": 72, "block": block, "taken_at": taken_at, "neurons": ns})
        .to_string()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64()
}

#[test]
fn validators_are_admitted_from_the_metagraph_snapshot_live() {
    let _one = serial();
    let wallets = TempDir::new("wallets-admission");
    let w = dendrite(&["wallets", wallets.0.to_str().expect("path")]);
    let s = ss58s(&w);
    // miner-a admits by the default rule of chain.toml (registered + validator permit)
    let dir = policies("admission", &[("a", &hotkey("a", &s("miner-a"), ""))]);
    dir.write("chain.toml", "netuid = 72\n[admit]\nvalidator_permit = true\n");
    dir.write(
        "metagraph.json",
        &snapshot(&[(&s("validator"), true), (&s("miner-b"), false), (&s("miner-a"), false)], unix_now()),
    );
    let server = Server::start(&dir.0, false, PATIENT);
    let port: u16 = server.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    use base64::Engine as _;
    let img = base64::engine::general_purpose::STANDARD.encode(sign("road_closed"));
    let probe = || {
        let spec =
            json!({"port": port, "miner": "miner-a", "image": img, "callers": ["validator", "miner-b", "stranger"]});
        dendrite(&["admission", wallets.0.to_str().expect("path"), &spec.to_string()])
    };
    let r = probe();
    assert_eq!(r["validator"]["dendrite_status"], 200, "a permitted validator is admitted: {r}");
    assert_eq!(r["miner-b"]["dendrite_status"], 403, "registered without a permit: {r}");
    assert!(r["miner-b"]["message"].as_str().unwrap_or("").contains("no validator permit"), "{r}");
    assert_eq!(r["stranger"]["dendrite_status"], 403, "not registered: {r}");
    assert!(r["stranger"]["message"].as_str().unwrap_or("").contains("not registered on netuid 72"), "{r}");

    // broken snapshots are refused with the reason; the last good one keeps admitting
    dir.write("metagraph.json", "{\"version\": 1, \"netuid\": 72, \"neur");
    eventually(10, "the truncated snapshot is refused", || {
        let (_, st) = get(&server.url("/admin/status"));
        let st: Value = serde_json::from_str(&st).ok()?;
        st["refusals"].to_string().contains("not a metagraph snapshot").then_some(())
    });
    dir.write("metagraph.json", &snapshot(&[(&s("validator"), true)], unix_now() - 30.0 * 86400.0));
    eventually(10, "the month-old snapshot is refused", || {
        let (_, st) = get(&server.url("/admin/status"));
        st.contains("days ago").then_some(())
    });
    dir.write("metagraph.json", &snapshot(&[(&s("validator"), true)], unix_now() + 86400.0));
    eventually(10, "the snapshot from tomorrow is refused", || {
        let (_, st) = get(&server.url("/admin/status"));
        st.contains("s in the future").then_some(())
    });
    dir.write(
        "metagraph.json",
        &snapshot(&[(&s("validator"), true)], unix_now()).replace("\"netuid\":72", "\"netuid\":71"),
    );
    eventually(10, "another subnet's snapshot is refused", || {
        let (_, st) = get(&server.url("/admin/status"));
        st.contains("snapshot of netuid 71 (this host serves netuid 72)").then_some(())
    });
    assert_eq!(probe()["validator"]["dendrite_status"], 200, "the last good snapshot still admits");

    // a new snapshot takes effect without restart: the stranger gained a permit
    dir.write("metagraph.json", &snapshot(&[(&s("validator"), true), (&s("stranger"), true)], unix_now()));
    eventually(10, "the stranger is admitted", || (probe()["stranger"]["dendrite_status"] == 200).then_some(()));
    let (_, m) = get(&server.url("/metrics"));
    assert!(m.contains("cascade_axon_admission_total{result=\"not-registered\"}"), "{m}");
    assert!(m.contains("cascade_metagraph_neurons 2"), "{m}");

    // snapshots are ordered by block: a later block taken by a clock a minute behind is newer,
    // and it revokes the stranger's permit at once
    let status_url = server.url("/admin/status");
    let block = |b: u64| {
        let url = status_url.clone();
        move || {
            let (_, st) = get(&url);
            let st: Value = serde_json::from_str(&st).ok()?;
            (st["chain"]["snapshot"]["block"] == b).then_some(())
        }
    };
    dir.write(
        "metagraph.json",
        &snapshot_at(&[(&s("validator"), true), (&s("stranger"), false)], unix_now() - 60.0, 1001),
    );
    eventually(10, "block 1001 loaded", block(1001));
    assert_eq!(probe()["stranger"]["dendrite_status"], 403, "the permit is revoked");
    // a reorganisation: block 990 is refused as older, until the operator accepts it
    dir.write("metagraph.json", &snapshot_at(&[(&s("validator"), true), (&s("stranger"), true)], unix_now(), 990));
    eventually(10, "block 990 refused", || {
        let (_, st) = get(&server.url("/admin/status"));
        st.contains("snapshot of block 990").then_some(())
    });
    let (status, body) = post(&server.url("/admin/metagraph/accept"), "application/json", b"");
    assert_eq!(status, 202, "{body}");
    eventually(10, "block 990 accepted", block(990));
    assert_eq!(probe()["stranger"]["dendrite_status"], 200);

    let (code, out) = run(&["check"], &dir.0, &components(false).0);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("admits registered + validator permit") && out.contains("NOT REGISTERED"), "{out}");
}

#[test]
fn two_hotkeys_answer_every_concurrent_validator_batch() {
    let _one = serial();
    let wallets = TempDir::new("wallets-batches");
    let w = dendrite(&["wallets", wallets.0.to_str().expect("path")]);
    let s = ss58s(&w);
    let allow = format!("allow = [\"{}\"]", s("validator"));
    let dir =
        policies("batches", &[("a", &hotkey("a", &s("miner-a"), &allow)), ("b", &hotkey("b", &s("miner-b"), &allow))]);
    let server = Server::start(&dir.0, false, PATIENT);
    let port: u16 = server.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    use base64::Engine as _;
    let img = base64::engine::general_purpose::STANDARD.encode(sign("road_closed"));
    let spec = json!({"port": port, "image": img, "n": 200, "timeout": 60}).to_string();
    let r = dendrite(&["batches", wallets.0.to_str().expect("path"), &spec]);
    assert_eq!(r["answers"], 400, "{r}");
    assert_eq!(r["statuses"]["200"], 400, "every answer 200: {r}");
}

/// A hotkey that admits by the metagraph with no snapshot loaded refuses every validator. That
/// is loud everywhere: `check` fails naming the hotkey and the fix, the log warns, `/healthz`
/// says `degraded` (still 200), `/metrics` carries the alarm the alert rules page on, and the
/// status page shows a red banner and the refused validator by name; all of it clears when a
/// snapshot arrives. A chain announcement that differs from `[axon.announce]` fails `check` too.
#[test]
fn a_validator_refused_for_want_of_a_snapshot_is_loud_everywhere() {
    let _one = serial();
    let wallets = TempDir::new("wallets-loud");
    let w = dendrite(&["wallets", wallets.0.to_str().expect("path")]);
    let s = ss58s(&w);
    let dir = policies("loud", &[("a", &hotkey("a", &s("miner-a"), ""))]);
    dir.write("chain.toml", "netuid = 72\n[admit]\nvalidator_permit = true\n");
    let comps = components(false);
    let (code, out) = run(&["check"], &dir.0, &comps.0);
    assert_eq!(code, 1, "check fails: {out}");
    let problem = out.lines().find(|l| l.starts_with("problem")).unwrap_or_else(|| panic!("{out}"));
    assert!(problem.contains(&format!("hotkey a ({}) refuses every validator", s("miner-a"))), "{out}");
    assert!(problem.contains("metagraph.json does not exist") && problem.contains("metagraph_sync.py --once"), "{out}");
    assert!(out.contains("\n1 problem(s)\n"), "{out}");

    let server = Server::start(&dir.0, false, PATIENT);
    let port: u16 = server.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    use base64::Engine as _;
    let img = base64::engine::general_purpose::STANDARD.encode(sign("road_closed"));
    let spec = json!({"port": port, "miner": "miner-a", "image": img, "callers": ["validator"]}).to_string();
    let r = dendrite(&["admission", wallets.0.to_str().expect("path"), &spec]);
    assert_eq!(r["validator"]["dendrite_status"], 403, "{r}");
    assert!(r["validator"]["message"].as_str().unwrap_or("").contains("no metagraph snapshot is loaded"), "{r}");

    let (code, health) = get(&server.url("/healthz"));
    let health: Value = serde_json::from_str(&health).expect("json");
    assert_eq!((code, health["status"].as_str()), (200, Some("degraded")), "{health}");
    assert_eq!(health["alarms"][0]["kind"], "no-snapshot", "{health}");
    assert_eq!(health["alarms"][0]["hotkey"], "a", "{health}");
    let (_, m) = get(&server.url("/metrics"));
    assert!(m.contains("cascade_axon_alarm{hotkey=\"a\",kind=\"no-snapshot\",severity=\"refusing\"} 1"), "{m}");
    let (_, page) = get(&server.url("/admin"));
    assert!(page.contains("id=\"alarms\"") && page.contains("refuses every validator"), "a banner: {page}");
    assert!(page.contains(&s("validator")) && page.contains("403 × 1"), "the refused caller by name: {page}");
    let log = eventually(10, "the log warns", || {
        let l = server.log();
        (l.contains("refuses every validator") && l.contains("refused a caller with 403")).then_some(l)
    });
    assert!(!log.contains("\u{1b}["), "no colour codes in a log that is not a terminal: {log}");

    // a snapshot arrives: every sign clears, and the validator is answered
    dir.write("metagraph.json", &snapshot(&[(&s("validator"), true)], unix_now()));
    eventually(10, "healthy again", || {
        let (_, h) = get(&server.url("/healthz"));
        h.contains("\"status\":\"ok\"").then_some(())
    });
    assert_eq!(dendrite(&["admission", wallets.0.to_str().expect("path"), &spec])["validator"]["dendrite_status"], 200);
    let (_, page) = get(&server.url("/admin"));
    assert!(!page.contains("id=\"alarms\""), "{page}");
    eventually(10, "the log says it cleared", || server.log().contains("no-snapshot cleared").then_some(()));
    let (code, out) = run(&["check"], &dir.0, &comps.0);
    assert_eq!(code, 0, "{out}");

    // the chain announces miner-a somewhere else than [axon.announce] says
    let mut neurons =
        serde_json::from_str::<Value>(&snapshot(&[(&s("validator"), true), (&s("miner-a"), false)], unix_now()))
            .expect("json");
    neurons["neurons"][1]["ip"] = json!("203.0.113.7");
    neurons["neurons"][1]["port"] = json!(8091);
    dir.write("metagraph.json", &neurons.to_string());
    let announce = "[axon.announce]\nwallet = \"w\"\nhotkey = \"h\"\nip = \"203.0.113.9\"\nport = 8091\n";
    dir.write("a.toml", &hotkey("a", &s("miner-a"), announce));
    let (code, out) = run(&["check"], &dir.0, &comps.0);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is announced at 203.0.113.7:8091 but configured for another address: ip 203.0.113.7 on chain, 203.0.113.9 configured"),
        "{out}"
    );
}

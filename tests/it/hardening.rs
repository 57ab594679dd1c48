//! Regression tests for what an outside attack on the server found (loopback only, bounded in
//! count and time): each reproduces a finding and checks the fixed behaviour, then that an
//! honest request is still served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cascade_tests::*;

const HOTKEY: &str = r#"
name = "speed"
fallback = 0.3
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "tint"
classify = ["tint"]
"#;

/// One raw HTTP/1.1 exchange; the whole answer as text (the server closes or `secs` pass).
fn exchange(addr: &str, request: &[u8], secs: u64) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(secs))).expect("timeout");
    s.write_all(request).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

fn honest(server: &Server) {
    let (s, v) = predict(server, "speed", &jpeg(&solid(40, 40, [255, 128, 0])));
    assert_eq!(s, 200, "{v}");
}

/// A real JPEG whose frame header claims 8192×4882: 629-byte bombs of this shape decoded to
/// 40 MP each before.
fn jpeg_claiming_8192x4882() -> Vec<u8> {
    let mut j = jpeg(&solid(16, 16, [10, 10, 10]));
    let sof = j.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline frame header");
    j[sof + 5..sof + 9].copy_from_slice(&[0x13, 0x12, 0x20, 0x00]);
    j
}

#[test]
fn tiny_files_claiming_huge_images_are_refused_before_decoding_even_many_at_once() {
    let dir = policies("bombs", &[("speed", HOTKEY)]);
    let server = Server::start(&dir.0, false, &[]);
    let bomb = jpeg_claiming_8192x4882();
    honest(&server);
    let peak_before = server.memory_kib("VmHWM");
    let started = Instant::now();
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (url, bomb) = (server.url("/v1/predict/speed"), bomb.clone());
            std::thread::spawn(move || post(&url, "image/jpeg", &bomb))
        })
        .collect();
    for t in threads {
        let (s, v) = t.join().expect("thread");
        assert_eq!(s, 422, "{v}");
        assert!(v["error"]["message"].as_str().unwrap_or("").contains("8192×4882"), "{v}");
    }
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    // refused before decoding: one decode of 8192×4882 holds 160 MiB of pixels at least; the
    // peak grew by less than one such decode over 32 bombs
    let grown = server.memory_kib("VmHWM").saturating_sub(peak_before);
    assert!(peak_before > 0 && grown < 100 * 1024, "peak RSS grew {grown} KiB over 32 bombs");
    honest(&server);
}

#[test]
fn early_refusals_close_the_connection_and_expect_continue_is_not_invited() {
    let dir = policies("early", &[("speed", HOTKEY)]);
    let server = Server::start(&dir.0, false, &["--max-body-bytes", "1000"]);
    let a = addr(&server);
    // a refusal before the body is read says so: the client opens a new connection
    let r = exchange(
        &a,
        b"POST /v1/predict/nobody HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5\r\n\r\nhello",
        10,
    );
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    // an oversized body announced with Expect: 100-continue gets the 413 without a 100 first
    let r = exchange(
        &a,
        b"POST /v1/predict/speed HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
        10,
    );
    assert!(r.starts_with("HTTP/1.1 413"), "no 100 Continue before the 413: {r}");
    // a JSON array is not a `{"image": …}` object
    let (s, v) = post(&server.url("/v1/predict/speed"), "application/json", br#"["aGk="]"#);
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid-json")), "{v}");
    honest(&server);
}

#[test]
fn a_dendrite_still_sending_a_large_body_gets_the_axons_refusal_not_a_broken_pipe() {
    let dir = policies("axon-drain", &[("speed", HOTKEY)]);
    let server = Server::start(&dir.0, false, &[]);
    // 12 MiB (past the 4 MiB body limit and any socket buffer), written whole before reading,
    // as aiohttp does, refused for its headers: the client reads the 400; before, the server
    // closed while it was still sending (the same drain serves the 413 of a declared size past
    // the limit)
    let body = vec![b'a'; 12 << 20];
    let mut s = TcpStream::connect(addr(&server)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let head = format!("POST /ImageSynapse HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).expect("headers");
    s.write_all(&body).expect("the whole body is read, not refused mid-way (broken pipe)");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = String::from_utf8_lossy(&out);
    assert!(r.starts_with("HTTP/1.1 400") && r.contains("missing header"), "{r}");
    honest(&server);
}

#[test]
fn the_admin_api_trusts_loopback_only_without_a_foreign_origin_or_host() {
    let dir = policies("admin-origin", &[("speed", HOTKEY)]);
    let server = Server::start(&dir.0, false, &[]);
    let a = addr(&server);
    let ok = exchange(&a, b"GET /admin/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 10);
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // a web page in the operator's browser (its Origin), or DNS rebinding (its Host)
    for req in [
        &b"POST /admin/hotkeys/speed/promote HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..],
        &b"GET /admin/status HTTP/1.1\r\nHost: evil.example:8091\r\nConnection: close\r\n\r\n"[..],
        &b"GET /admin HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"[..],
        &b"GET /admin/fragment HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n"[..],
        &b"GET /admin HTTP/1.1\r\nHost: <script>\r\nConnection: close\r\n\r\n"[..],
        // two Host headers; another local web app's origin on a state change
        &b"GET /admin/status HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"[..],
        &b"POST /admin/hotkeys/speed/promote HTTP/1.1\r\nHost: 127.0.0.1:8091\r\nOrigin: http://localhost:3000\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..],
    ] {
        let r = exchange(&a, req, 10);
        assert!(r.starts_with("HTTP/1.1 403"), "{r}");
        assert!(r.contains("admin-forbidden"), "{r}");
    }
    assert!(ok.to_ascii_lowercase().contains("x-content-type-options: nosniff"), "{ok}");
    // the server's own page may change state (no rollout here: 409, not 403)
    let own = exchange(&a, b"POST /admin/hotkeys/speed/promote HTTP/1.1\r\nHost: 127.0.0.1:8091\r\nOrigin: http://127.0.0.1:8091\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 10);
    assert!(own.starts_with("HTTP/1.1 409"), "{own}");
    // /metrics and /healthz to a rebinding name from this machine: refused; by address: served
    for path in ["/metrics", "/healthz"] {
        let r = exchange(
            &a,
            format!("GET {path} HTTP/1.1\r\nHost: evil.example:8091\r\nConnection: close\r\n\r\n").as_bytes(),
            10,
        );
        assert!(r.starts_with("HTTP/1.1 403") && r.contains("foreign-host"), "{r}");
        let r = exchange(
            &a,
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8091\r\nConnection: close\r\n\r\n").as_bytes(),
            10,
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
}

#[test]
fn a_pinned_axon_port_serves_the_synapse_routes_only() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let pinned = format!(
        "name = \"pinned\"\nss58 = \"5FyFVRsgwBT89gGsyif1ZayCDAthzrZxS7fzxCafhwwzkft7\"\nfallback = 0.3\n[router]\ncomponent = \"cascade-router@^1\"\n[[router.params.stages]]\nname = \"tint\"\nclassify = [\"tint\"]\n[axon]\nallow_any_signed = true\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let dir = policies("pinned-routes", &[("speed", HOTKEY), ("pinned", &pinned)]);
    let server = Server::start(&dir.0, false, &[]);
    let base = format!("http://127.0.0.1:{port}");
    eventually(10, "the pinned port listens", || TcpStream::connect(("127.0.0.1", port)).ok());
    for path in ["/healthz", "/metrics", "/admin/status", "/v1/predict/speed"] {
        let (s, body) = get(&format!("{base}{path}"));
        assert_eq!(s, 404, "{path} on the axon port: {body}");
        assert!(!body.contains("\"hotkeys\""), "no hotkey list leaks: {body}");
    }
    let (s, _) = post(&format!("{base}/v1/predict/speed"), "image/jpeg", &jpeg(&solid(8, 8, [1, 2, 3])));
    assert_eq!(s, 404);
    // the shared port still serves everything
    let (s, _) = get(&server.url("/healthz"));
    assert_eq!(s, 200);
    honest(&server);
}

#[test]
fn many_idle_sockets_do_not_starve_an_honest_request() {
    let dir = policies("idle", &[("speed", HOTKEY)]);
    // connections capped below what this test opens: the rest wait in the kernel's queue
    let server = Server::start(&dir.0, false, &["--max-connections", "64", "--read-timeout-s", "2"]);
    let a = addr(&server);
    let idle = idle_connections(&a, 200, 100);
    // idle ones are dropped at the header timeout; the honest request then gets a slot
    let started = Instant::now();
    honest(&server);
    assert!(started.elapsed() < Duration::from_secs(15), "waited {:?}", started.elapsed());
    drop(idle);
    let log = server.log();
    assert!(log.matches("accept failed").count() < 20, "accept failures are rate-limited:\n{log}");
}

/// A server for `hotkey` with connection limits: in all, per address, and the seconds a
/// connection may stay silent.
fn connection_limited(tag: &str, hotkey: &str, max: u32, per_ip: u32, first_byte_s: u32) -> (TempDir, Server) {
    let dir = policies(tag, &[("speed", hotkey)]);
    let (max, per_ip, first_byte) = (max.to_string(), per_ip.to_string(), first_byte_s.to_string());
    let flags = ["--max-connections", &max, "--max-connections-per-ip", &per_ip, "--first-byte-timeout-s", &first_byte];
    let server = Server::start(&dir.0, false, &flags);
    (dir, server)
}

/// `n` connections to `to` that never send a byte (at least `at_least` of them opened), held
/// long enough for the server to have accepted or queued them.
fn idle_connections(to: &str, n: usize, at_least: usize) -> Vec<TcpStream> {
    let idle: Vec<TcpStream> = (0..n).filter_map(|_| TcpStream::connect(to).ok()).collect();
    assert!(idle.len() >= at_least, "opened {}", idle.len());
    std::thread::sleep(Duration::from_millis(300));
    idle
}

/// A connection from `from` (any loopback address) to the server at `to`.
fn connect_from(from: &str, to: &str) -> TcpStream {
    let to: std::net::SocketAddr = to.parse().expect("addr");
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&format!("{from}:0").parse::<std::net::SocketAddr>().expect("from").into()).expect("bind");
    s.connect_timeout(&to.into(), Duration::from_secs(5)).expect("connect");
    s.into()
}

/// The time to a full answer of `GET /healthz` over a connection from `from`.
fn health_from(from: &str, to: &str) -> (Duration, String) {
    let started = Instant::now();
    let mut s = connect_from(from, to);
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    (started.elapsed(), out)
}

/// The outside suite's finding: 4,200 idle connections from one address held the shared cap
/// of 4,096 and an admitted validator's request took 7.2 s. At a tenth of the scale: a cap per
/// address closes the stranger's surplus at once, a silent connection is closed after the
/// first-byte timeout (not the header timeout), and another address is answered at once.
#[test]
fn idle_connections_from_one_address_do_not_delay_another() {
    let (_dir, server) = connection_limited("idle-flood", HOTKEY, 400, 100, 2);
    let a = addr(&server);
    let idle = idle_connections(&a, 420, 400);
    let (took, out) = health_from("127.0.0.2", &a);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(took < Duration::from_secs(1), "another address waited {took:?}");
    // the flooding address itself is served again once its silent sockets are closed
    std::thread::sleep(Duration::from_millis(2500));
    let (took, out) = health_from("127.0.0.1", &a);
    assert!(out.starts_with("HTTP/1.1 200") && took < Duration::from_secs(1), "{took:?} {out}");
    drop(idle);
}

/// A flood of the shared port leaves slots to a hotkey's own axon port (and the reverse): each
/// listener may hold three quarters of the connections.
#[test]
fn a_flooded_port_leaves_slots_to_the_axon_port() {
    let pinned = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let hk = format!(
        "ss58 = \"5FyFVRsgwBT89gGsyif1ZayCDAthzrZxS7fzxCafhwwzkft7\"\n{HOTKEY}[axon]\nallow_any_signed = true\nlisten = \"127.0.0.1:{pinned}\"\n"
    );
    let (_dir, server) = connection_limited("port-flood", &hk, 100, 1000, 20);
    let idle = idle_connections(&addr(&server), 150, 100);
    let started = Instant::now();
    let out = exchange(
        &format!("127.0.0.1:{pinned}"),
        b"GET /ImageSynapse HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        10,
    );
    assert!(
        !out.is_empty() && started.elapsed() < Duration::from_secs(1),
        "the axon port waited {:?}: {out}",
        started.elapsed()
    );
    drop(idle);
}

/// The outside suite's finding: distinct real 40 MP PNGs of ~117 KB each (flat photos compress
/// that well) pushed memory to 3.7 GB, failed half the burst with late 500s and kept a
/// validator waiting 4.9 s. Here, on two cores, 20 distinct 40 MP PNGs at once against a
/// 600 MiB decode budget (two such decodes): each answered 200 or 503 `busy`, never 500; the
/// server's peak memory grows by about the budget, not by the burst; and a validator-sized
/// image sent in the middle of it is answered at once, from a pool of its own (before, it
/// queued behind every photo for a decoding slot).
#[test]
fn a_burst_of_large_photos_keeps_to_its_memory_and_does_not_hold_up_small_images() {
    let dir = policies("big-burst", &[("speed", HOTKEY)]);
    let server = Server::start(&dir.0, false, &["--decode-memory-mb", "600"]);
    let url = server.url("/v1/predict/speed");
    let small = jpeg(&solid(224, 224, [200, 90, 10]));
    assert_eq!(post(&url, "image/jpeg", &small).0, 200);
    let base = server.memory_kib("VmRSS");
    let photos: Vec<Vec<u8>> = (0..20u8)
        .map(|k| {
            let mut img = solid(6400, 6250, [120, 130 + k, 140]);
            img.put_pixel(u32::from(k) * 7, 3, image::Rgb([k, 0, 0]));
            png(&img)
        })
        .collect();
    let threads: Vec<_> = photos
        .into_iter()
        .map(|p| {
            let url = url.clone();
            std::thread::spawn(move || post(&url, "image/png", &p))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (s, v) = post(&url, "image/jpeg", &jpeg(&solid(224, 224, [10, 90, 200])));
    let small_took = started.elapsed();
    assert_eq!(s, 200, "{v}");
    let answers: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
    for (s, v) in &answers {
        assert!(*s == 200 || (*s == 503 && v["error"]["code"] == "busy"), "{s} {v}");
    }
    let peak = server.memory_kib("VmHWM");
    eprintln!(
        "small {small_took:?}; statuses {:?}; peak {} MiB over {} MiB",
        answers.iter().map(|a| a.0).collect::<Vec<_>>(),
        peak.saturating_sub(base) / 1024,
        base / 1024
    );
    assert!(small_took < Duration::from_millis(500), "the small image waited {small_took:?} behind the burst");
    assert!(
        peak.saturating_sub(base) < 800 * 1024,
        "peak grew by {} MiB over {} MiB at rest (budget 600 MiB)",
        peak.saturating_sub(base) / 1024,
        base / 1024
    );
}

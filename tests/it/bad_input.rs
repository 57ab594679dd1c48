//! Every bad input gets a precise 4xx JSON error, and the next request is served normally.

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

/// A PNG whose header claims `w`×`h` (the pixel data is a token: it is never decoded).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend_from_slice(&(ihdr.len() as u32).to_be_bytes());
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&ihdr);
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    // a token IDAT: a tiny zlib stream, far shorter than the claimed pixels
    let idat: Vec<u8> = [b"IDAT".as_slice(), &[0x78, 0x9C, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]].concat();
    out.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    out.extend_from_slice(&idat);
    out.extend_from_slice(&crc32(&idat).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn assert_error(got: (u16, Value), status: u16, code: &str) {
    let (s, v) = got;
    assert_eq!(s, status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(!v["error"]["message"].as_str().unwrap_or("").is_empty(), "{v}");
}

#[test]
fn each_bad_input_is_refused_precisely_and_the_next_request_is_served() {
    let dir = policies("bad-input", &[("speed", HOTKEY)]);
    let server = Server::start(&dir.0, false, &["--max-body-bytes", "200000", "--max-side", "4000"]);
    let url = server.url("/v1/predict/speed");
    let good = jpeg(&solid(40, 40, [255, 128, 0]));
    let check_good = || {
        let (s, v) = predict(&server, "speed", &good);
        assert_eq!(s, 200, "{v}");
        assert!(num(&v["prediction"]) > 0.5);
    };
    check_good();

    type Case<'a> = (&'a str, Box<dyn Fn() -> (u16, Value) + 'a>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "not base64",
            Box::new(|| post(&url, "application/json", br#"{"image": "@@not base64@@"}"#)),
            400,
            "invalid-base64",
        ),
        ("not json", Box::new(|| post(&url, "application/json", b"{image:")), 400, "invalid-json"),
        ("json without image", Box::new(|| post(&url, "application/json", br#"{"img": "aGk="}"#)), 400, "invalid-json"),
        ("not an image", Box::new(|| predict(&server, "speed", b"just some text, not pixels")), 415, "not-an-image"),
        ("truncated jpeg", Box::new(|| predict(&server, "speed", &good[..good.len() / 2])), 422, "undecodable-image"),
        ("zero-size png", Box::new(|| predict(&server, "speed", &png_header(0, 10))), 422, "undecodable-image"),
        (
            "giant dimensions",
            Box::new(|| predict(&server, "speed", &png_header(100_000, 100_000))),
            413,
            "image-too-large",
        ),
        ("body over the limit", Box::new(|| post(&url, "image/jpeg", &vec![0u8; 300_000])), 413, "body-too-large"),
        ("unknown hotkey", Box::new(|| predict(&server, "nobody", &good)), 404, "unknown-hotkey"),
        ("wrong content type", Box::new(|| post(&url, "text/plain", &good)), 415, "unsupported-media-type"),
        ("raw body that is not a jpeg", Box::new(|| post(&url, "image/jpeg", b"GIF89a.....")), 415, "not-an-image"),
        ("unknown route", Box::new(|| post(&server.url("/v2/whatever"), "application/json", b"{}")), 404, "not-found"),
    ];
    for (what, send, status, code) in cases {
        eprintln!("case: {what}");
        assert_error(send(), status, code);
        check_good();
    }
    // raw JPEG and PNG bodies are accepted as they are
    let (s, v) = post(&url, "image/jpeg", &good);
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(&url, "image/png", &png(&solid(20, 20, [0, 0, 200])));
    assert_eq!(s, 200, "{v}");
    let (_, metrics) = get(&server.url("/metrics"));
    assert!(metrics.contains("cascade_rejected_total{code=\"image-too-large\",status=\"413\"} 1"), "{metrics}");
}

#[test]
fn a_client_that_trickles_its_body_gets_408_and_others_are_served() {
    use std::io::{Read, Write};
    let dir = policies("trickle", &[("speed", HOTKEY)]);
    let server = Server::start(&dir.0, false, &["--read-timeout-s", "1"]);
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
    slow.write_all(
        b"POST /v1/predict/speed HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n",
    )
    .expect("headers");
    slow.write_all(&[0xFF, 0xD8, 0xFF]).expect("a few bytes");
    // meanwhile an honest client is served at once
    let (s, v) = predict(&server, "speed", &jpeg(&solid(40, 40, [255, 128, 0])));
    assert_eq!(s, 200, "{v}");
    slow.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("read-timeout"), "{answer}");
}

/// The shipped components' parameter schemas refuse wrong types, values out of bounds and
/// values outside an enum, through the same check `serve` runs at load: each named by its key
/// path and the rule, with the component's name and version.
#[test]
fn component_parameters_of_the_wrong_type_or_out_of_bounds_are_refused_by_their_schema() {
    let stage = |extra: &str| {
        format!(
            "name = \"p\"\nfallback = 0.3\n[router]\ncomponent = \"cascade-router@^1\"\n[[router.params.stages]]\nname = \"s\"\nclassify = [\"tint\"]\n{extra}\n[fuser]\ncomponent = \"weighted@^1\"\nparams.weights = {{ tint = 1.0 }}\n"
        )
    };
    let cases: [(String, &str); 6] = [
        (stage("exit_low = 1.5"), "router.params.stages[0].exit_low: 1.5 is above the maximum 1"),
        (stage("exit_high = \"high\""), "router.params.stages[0].exit_high: expected number, found string"),
        (stage("zoom = { grid = 9 }"), "router.params.stages[0].zoom.grid: 9 is above the maximum 4"),
        (stage("zoom = { grid = 2, reduce = \"median\" }"), "router.params.stages[0].zoom.reduce"),
        (stage("flip = 1"), "router.params.stages[0].flip: expected boolean, found"),
        (
            stage("").replace("{ tint = 1.0 }", "{ tint = 1.0 }\nparams.boost = { objects = 1.5 }"),
            "fuser.params.boost.objects: 1.5 is above the maximum 1",
        ),
    ];
    let comps = components(false);
    for (text, needle) in cases {
        let dir = policies("schema-bounds", &[("p", &text)]);
        let (code, out) = run(&["check"], &dir.0, &comps.0);
        assert_ne!(code, 0, "{needle}: accepted\n{text}");
        assert!(out.contains(needle) && out.contains("(schema of "), "{needle}:\n{out}");
    }
}

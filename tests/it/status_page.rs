//! The status page (`GET /admin`): rendered by the server (everything readable with JavaScript
//! off), refreshed by its script in a real headless browser (Debian's Chromium) with no
//! JavaScript error, laid out as `tests/fixtures/status_layout.txt` says (the order and extent
//! of its parts, read from the browser's layout and checked on a screenshot), with hostile
//! names and reasons escaped.

use std::process::Command;

use cascade_tests::*;

fn chromium() -> &'static str {
    let found =
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists());
    found.expect("Chromium is missing: scripts/test.sh installs Debian's chromium")
}

/// The page's DOM after its scripts ran, and what the browser logged.
fn render(url: &str) -> (String, String) {
    browse(url, &["--dump-dom"])
}

const WINDOW: (u32, u32) = (1200, 2400);

fn browse(url: &str, what: &[&str]) -> (String, String) {
    let profile = TempDir::new("chromium-profile");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--hide-scrollbars",
        ])
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .args(what)
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn no_js_errors(dom: &str, log: &str) {
    assert!(dom.contains("id=\"js-errors\" hidden"), "the page recorded JavaScript errors:\n{dom}");
    for bad in ["Uncaught", "SyntaxError", "TypeError", "ReferenceError", "Refused to"] {
        assert!(!log.contains(bad), "browser log has {bad}:\n{log}");
    }
}

#[test]
fn the_status_page_renders_and_shows_a_refused_change() {
    let dir = policies("status-page", &[("good", &tint_hotkey("good"))]);
    let server = Server::start(&dir.0, false, &[]);
    let (s, _) = predict(&server, "good", &jpeg(&solid(32, 32, [200, 90, 10])));
    assert_eq!(s, 200);
    let (dom, log) = render(&server.url("/admin"));
    assert!(dom.contains("data-loaded=\"yes\""), "the page read /admin/status:\n{dom}\n{log}");
    assert!(dom.contains("<td>good</td>"), "{dom}");
    assert!(dom.contains("cascade-router@"), "{dom}");
    assert!(dom.contains("<td>tint</td>"), "models and recent answers are listed: {dom}");
    no_js_errors(&dom, &log);

    // a broken change: refused, and the page says why
    dir.write("good.toml", &tint_hotkey("good").replace("classify", "clasify"));
    eventually(10, "refused", || refusals(&server).into_iter().find(|r| r.contains("clasify")));
    let (dom, log) = render(&server.url("/admin"));
    assert!(dom.contains("good.toml") && dom.contains("clasify"), "{dom}");
    no_js_errors(&dom, &log);
}

/// Parts of the page as the script measured them: (name, top, height, width) in CSS pixels.
fn layout(dom: &str) -> Vec<(String, i64, i64, i64)> {
    let attr = dom.split("data-layout=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_else(|| panic!("{dom}"));
    attr.split(';')
        .map(|p| {
            let f: Vec<&str> = p.rsplitn(4, ',').collect();
            let n = |i: usize| f[i].parse::<i64>().unwrap_or_else(|_| panic!("{p}"));
            (f[3].replace("&amp;", "&"), n(2), n(1), n(0))
        })
        .collect()
}

#[test]
fn the_status_page_answers_an_operators_questions_with_or_without_javascript() {
    let ss58 = "5FyFVRsgwBT89gGsyif1ZayCDAthzrZxS7fzxCafhwwzkft7";
    let good = tint_hotkey("good").replacen("fallback", &format!("ss58 = \"{ss58}\"\nfallback"), 1);
    let dir = policies("status-page-full", &[("good", &good)]);
    dir.write("chain.toml", "netuid = 72\n[admit]\nvalidator_permit = true\n");
    let server = Server::start(&dir.0, false, &[]);
    for rgb in [[200, 90, 10], [10, 90, 200], [128, 128, 128]] {
        assert_eq!(predict(&server, "good", &jpeg(&solid(32, 32, rgb))).0, 200);
    }
    let (s, _) = post(&server.url("/v1/predict/good"), "image/jpeg", b"not an image");
    assert_eq!(s, 415);
    assert_eq!(get(&server.url("/no-such-route")).0, 404, "counted under no hotkey");
    // a validator's query, refused for want of a snapshot: listed under its caller
    let validator = "5CVVhPmJGWpMdEmTpzZp8HVo5DKUCzmvm3BNbVS6YSSecmoN";
    assert_eq!(unsigned_synapse(&server, ss58, validator), 403);
    // hostile markup in a file name and in a refusal reason
    dir.write("<img src=x onerror=alert(1)>.toml", "name = \"<script>alert(1)</script>\"\n");
    eventually(10, "the hostile file is refused", || refusals(&server).into_iter().find(|r| r.contains("script")));

    // without JavaScript: the server's HTML already holds every answer
    let (code, page) = get(&server.url("/admin"));
    assert_eq!(code, 200);
    for want in [
        "id=\"alarms\"",
        "refuses every validator",
        "Fix: run scripts/chain/metagraph_sync.py --once",
        "id=\"hk-good-callers\"",
        validator,
        "not registered",
        "403 × 1",
        "id=\"hk-good-stages\"",
        "<td>tint</td><td>ok</td><td>3</td>",
        "id=\"hk-good-scores\"",
        "latency p50 ≤",
        "<td>415</td><td>not-an-image</td><td>1</td>",
        "<td>403</td><td>not-admitted</td><td>1</td>",
        "stage cache hit rate",
        "cascade 0.",
        "<td>cpu</td>",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "&lt;img src=x onerror=alert(1)&gt;.toml",
    ] {
        assert!(page.contains(want), "{want} is missing from the page:\n{page}");
    }
    assert!(!page.contains("<script>alert") && !page.contains("<img src=x"), "markup is escaped: {page}");

    // with JavaScript: refreshed in place, no error, laid out as expected
    let (dom, log) = render(&server.url("/admin"));
    assert!(dom.contains("data-loaded=\"yes\""), "the script refreshed the page:\n{dom}\n{log}");
    no_js_errors(&dom, &log);
    assert!(!dom.contains("<img src=\"x\""), "{dom}");
    let parts = layout(&dom);
    let names: Vec<&str> = parts.iter().map(|p| p.0.split(':').next().unwrap_or("")).collect();
    let expected = std::fs::read_to_string(repo().join("tests/fixtures/status_layout.txt")).expect("layout fixture");
    let expected: Vec<&str> = expected.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let found: Vec<String> = parts.iter().map(|p| p.0.clone()).collect();
    assert_eq!(
        found.iter().map(|f| f.trim_end()).collect::<Vec<_>>(),
        expected,
        "the page's parts, top to bottom: {names:?}"
    );
    for w in parts.windows(2) {
        assert!(w[1].1 > w[0].1, "{} sits below {}: {parts:?}", w[1].0, w[0].0);
    }
    for (name, _, height, width) in &parts {
        assert!(*height > 0 && *width > 600, "{name} is laid out with room ({width}×{height}): {parts:?}");
    }

    // the screenshot shows the banner, red, where the layout puts it
    let shot = TempDir::new("status-shot");
    let png_path = shot.0.join("page.png");
    let (_, log) = browse(&server.url("/admin"), &[&format!("--screenshot={}", png_path.display())]);
    let img = image::open(&png_path).unwrap_or_else(|e| panic!("{e}: {log}")).to_rgb8();
    assert_eq!(img.dimensions(), WINDOW, "{log}");
    let (_, top, height, _) = parts.iter().find(|p| p.0 == "alarms").expect("banner").clone();
    let red = |y0: i64, y1: i64| {
        let (mut n, mut all) = (0u64, 0u64);
        for y in y0.max(0)..y1.min(WINDOW.1 as i64) {
            for x in (0..WINDOW.0).step_by(4) {
                let p = img.get_pixel(x, y as u32);
                all += 1;
                n += u64::from(p[0] > 150 && p[1] < 80 && p[2] < 80);
            }
        }
        n as f64 / all.max(1) as f64
    };
    assert!(red(top, top + height) > 0.5, "the banner band is red: {}", red(top, top + height));
    assert!(red(top + height + 40, top + height + 400) < 0.05, "and nothing below it is");
}

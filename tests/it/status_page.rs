//! The status page (`GET /admin`) in a real headless browser (Debian's Chromium): it renders
//! from `/admin/status` with no JavaScript error, lists the hotkeys, and shows a refused change
//! with its reason once one is made.

use std::process::Command;

use cascade_tests::*;

fn chromium() -> &'static str {
    let found =
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists());
    found.expect("Chromium is missing: scripts/test.sh installs Debian's chromium")
}

/// The page's DOM after its scripts ran, and what the browser logged.
fn render(url: &str) -> (String, String) {
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
            "--dump-dom",
        ])
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

//! Policies written in JavaScript (componentize-js, built by set-up into target/policy-components):
//! served in every role beside Rust and Python ones, anything thrown (an Error or any other
//! value) turned into a counted error, the build's refusals, and a JavaScript arm on either side
//! of a rollout (shadowed under a Rust one; stable under a Python candidate).

use cascade_tests::*;

const ROUTER: &str = "js-template-router.wasm";
const TEXT: &str = "js-template-text-scorer.wasm";
const FUSER: &str = "js-template-fuser.wasm";
const MISBEHAVE: &str = "js-js-misbehave.wasm";

#[test]
fn javascript_components_serve_every_role_beside_rust_and_python_ones() {
    // a JavaScript router and fuser; a Rust router asking the JavaScript text scorer, fused by Python
    let files = [ROUTER, TEXT, FUSER, "py-template-fuser.wasm"];
    serve_every_role(
        "js-roles",
        &files,
        "js-template-router",
        "js-template-fuser",
        "js-template-text-scorer",
        "py-template-fuser",
    );
}

#[test]
fn whatever_javascript_throws_is_a_counted_error_and_the_instance_keeps_serving() {
    let (_dir, server) = misbehaving_server(
        "js-failures",
        "js-misbehave",
        MISBEHAVE,
        &[
            ("error", "mode = \"error\""),
            ("value", "mode = \"value\""),
            ("loop", "mode = \"loop\""),
            ("fetch", "mode = \"fetch\""),
            ("badconf", "fail_configure = true"),
        ],
    );
    let expect = [
        ("error", "TypeError: score 1.000 is too high for this policy (misbehave.js:"),
        ("value", "a non-Error value was thrown: {\"code\":7,\"why\":\"not an Error\"}"),
        ("loop", "ran out of fuel"),
        ("fetch", "Error: fetch is not available to policies"),
    ];
    for (hotkey, text) in expect {
        for _ in 0..2 {
            let (s, v) = predict(&server, hotkey, &tint_high());
            assert_eq!((s, v["source"].as_str()), (200, Some("fallback")), "{hotkey}: {v}");
            assert!(v["reason"].as_str().unwrap_or("").contains(text), "{hotkey}: wanted {text:?} in {v}");
            let (s, v) = predict(&server, hotkey, &tint_low(1));
            assert_eq!((s, v["source"].as_str()), (200, Some("policy")), "{hotkey}: {v}");
        }
    }
    let refused = refusals(&server).join("\n");
    assert!(refused.contains("Error: configure refuses on purpose"), "{refused}");
    let (_, m) = get(&server.url("/metrics"));
    assert!(m.contains("cascade_component_events_total{hotkey=\"loop\",role=\"router\",kind=\"fuel\"} 2"), "{m}");
    for hotkey in ["error", "value", "fetch"] {
        let line = format!("cascade_fallbacks_total{{hotkey=\"{hotkey}\",reason=\"policy-error\"}} 2");
        assert!(m.contains(&line), "{line} missing:\n{m}");
    }
}

#[test]
fn the_build_refuses_bad_javascript_before_it_reaches_a_components_folder() {
    let dir = TempDir::new("js-build");
    let out = dir.0.join("out.wasm");
    let cases = [
        ("syntax.js", "export function fuse(s) {\n  return 0.5\n", "syntax.js:", "SyntaxError"),
        (
            "fs.js",
            "import { readFileSync } from \"node:fs\";\nexport function fuse(s) { return 0.5; }\n",
            "fs.js:1: imports \"node:fs\"",
            "only \"cascade_policy\"",
        ),
        (
            "req.js",
            "export function fuse(s) {\n  const fs = require(\"fs\");\n  return 0.5;\n}\n",
            "req.js:2: require()",
            "not available",
        ),
        (
            "multi.js",
            "import {\n  readFileSync,\n} from \"node:fs\";\nexport function fuse(s) { return 0.5; }\n",
            "multi.js:1: imports \"node:fs\"",
            "only",
        ),
        (
            "reexport.js",
            "export { x } from \"./other.js\";\nexport function fuse(s) { return 0.5; }\n",
            "reexport.js:1: imports \"./other.js\"",
            "only",
        ),
        ("async.js", "export async function fuse(s) { return 0.5; }\n", "fuse is async", "not a Promise"),
        ("none.js", "export const X = 1;\n", "exports none of decide", "fuse"),
        (
            "two.js",
            "export function fuse(s) { return 0.5; }\nexport function scoreText(l) { return undefined; }\n",
            "exports scoreText, fuse",
            "one file per role",
        ),
    ];
    for (name, source, a, b) in cases {
        let file = dir.write(name, source);
        let o = cascade().args(["policy", "build"]).arg(&file).arg("-o").arg(&out).output().expect("run");
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(1), "{name}: {text}");
        assert!(text.contains(a) && text.contains(b), "{name}: wanted {a:?} and {b:?} in {text}");
        assert!(!out.exists(), "{name}: nothing is written");
    }
}

#[test]
fn a_javascript_arm_is_shadowed_under_rust_and_stable_under_a_python_candidate() {
    let candidate = r#"{ component = "js-template-router@^0", params = { model = "tint", unsure = [0.0, 0.0] } }"#;
    let shadow = rollout_hotkey("sh", "mode = \"shadow\"\nmax_inflight = 4", candidate);
    let ab = r#"
name = "ab"
[router]
component = "js-template-router@^0"
params = { model = "tint", unsure = [0.0, 0.0] }
[candidate]
router = { component = "py-template-router@^0", params = { model = "tint", unsure = [0.0, 0.0] } }
[rollout]
mode = "ab"
share = 50
"#;
    let dir = policies("js-rollouts", &[("sh", &shadow), ("ab", ab)]);
    let server = Server::start_with(&dir.0, false, &[ROUTER, "py-template-router.wasm"], &[]);
    let mut arms = std::collections::BTreeMap::new();
    for i in 0..30 {
        let (s, v) = predict(&server, "sh", &tint_low(i));
        assert_eq!((s, v["arm"].as_str(), v["stage"].as_str()), (200, Some("stable"), Some("stable")), "{v}");
        let (s, v) = predict(&server, "ab", &tint_low(i));
        assert_eq!((s, v["stage"].as_str()), (200, Some("classifier")), "{v}");
        *arms.entry(v["arm"].as_str().unwrap_or("").to_string()).or_insert(0) += 1;
    }
    assert!(
        arms.get("stable").copied().unwrap_or(0) >= 5 && arms.get("candidate").copied().unwrap_or(0) >= 5,
        "{arms:?}"
    );
    let sh = eventually(20, "shadow comparisons", || {
        let s = status(&server)["hotkeys"]["sh"]["rollout"]["shadow"].clone();
        (num(&s["compared"]) >= 10.0).then_some(s)
    });
    assert_eq!(num(&sh["agreement"]), 1.0, "the JavaScript router classifies as the Rust one: {sh}");
}

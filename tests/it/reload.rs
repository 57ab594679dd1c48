//! Live changes on the real server: configs and components added, replaced, broken, fixed and
//! deleted while it serves; every broken change refused with its reason while the last good
//! version keeps answering; 1.0.0 components on the 1.2.0 host; newer contracts refused.

use std::path::Path;

use cascade_tests::*;

fn policy(stage: &str, fallback: &str) -> String {
    format!(
        r#"
name = "live"
fallback = {fallback}
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "{stage}"
classify = ["tint"]
on_error = "fail"
"#
    )
}

fn stage_of(server: &Server, hotkey: &str) -> Option<String> {
    let (s, v) = predict(server, hotkey, &jpeg(&solid(32, 32, [200, 90, 10])));
    (s == 200).then(|| v["stage"].as_str().unwrap_or("").to_string())
}

/// Replaces a file the way an operator's `cp` does: write beside, rename over.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn wait_refusal(server: &Server, needle: &str) -> String {
    eventually(10, needle, || refusals(server).into_iter().find(|r| r.contains(needle)))
}

#[test]
fn configs_are_applied_refused_and_fixed_live() {
    let dir = policies("reload-config", &[("live", &policy("one", "0.3"))]);
    let server = Server::start(&dir.0, true, &[]);
    let file = dir.0.join("live.toml");
    assert_eq!(stage_of(&server, "live").as_deref(), Some("one"));
    let g1 = num(&status(&server)["generation"]);

    // a valid change takes effect without restart
    replace(&file, policy("two", "0.3").as_bytes());
    eventually(10, "stage two", || (stage_of(&server, "live").as_deref() == Some("two")).then_some(()));
    assert!(num(&status(&server)["generation"]) > g1);

    // broken changes are refused with file and reason; "two" keeps serving
    let broken: [(&str, String, &str); 5] = [
        ("toml", "name = \"live\"\nfallback = [".to_string(), "TOML parse error"),
        ("schema", policy("three", "0.3").replace("on_error = \"fail\"", "on_eror = \"fail\""), "router.params.stages[0].on_eror: unknown key"),
        ("fallback", policy("three", "0.5"), "fallback 0.5"),
        ("missing model", policy("three", "0.3").replace("[\"tint\"]", "[\"no-such-model\"]"), "unknown model no-such-model"),
        ("trap on smoke", "name = \"live\"\nfallback = 0.3\n[router]\ncomponent = \"misbehave@1\"\nparams = { model = \"tint\", trap_above = 0.0 }\n".to_string(), "smoke request failed: router misbehave trapped"),
    ];
    for (what, text, needle) in broken {
        replace(&file, text.as_bytes());
        let r = wait_refusal(&server, needle);
        assert!(r.contains("live.toml"), "{what}: {r}");
        assert_eq!(stage_of(&server, "live").as_deref(), Some("two"), "{what}: the last good version answers");
        let st = status(&server);
        assert!(
            st["hotkeys"]["live"]["last_refusal"]["reason"].as_str().unwrap_or("").contains(needle),
            "{what}: {st}"
        );
    }
    let (_, metrics) = get(&server.url("/metrics"));
    assert!(metrics.contains("cascade_refused_changes_total 5"), "{metrics}");

    // fixing the file is picked up by the next change
    replace(&file, policy("four", "0.3").as_bytes());
    eventually(10, "stage four", || (stage_of(&server, "live").as_deref() == Some("four")).then_some(()));
    eventually(10, "refusal cleared", || status(&server)["hotkeys"]["live"]["last_refusal"].is_null().then_some(()));

    // a new hotkey file serves; a deleted one stops serving
    std::fs::write(dir.0.join("extra.toml"), policy("x", "0.3").replace("name = \"live\"", "name = \"extra\""))
        .expect("write");
    eventually(10, "extra served", || stage_of(&server, "extra"));
    std::fs::remove_file(dir.0.join("extra.toml")).expect("rm");
    eventually(10, "extra gone", || {
        let (s, _) = predict(&server, "extra", &jpeg(&solid(8, 8, [0, 0, 0])));
        (s == 404).then_some(())
    });
}

#[test]
fn components_are_replaced_refused_and_versioned_live() {
    let dir = policies("reload-components", &[("live", &policy("one", "0.3"))]);
    let server = Server::start(&dir.0, true, &[]);
    let comps = &server.components.0;
    let router = comps.join("cascade_router.wasm");
    let good = std::fs::read(&router).expect("router");

    // a truncated copy (a copy in progress, or a broken build) is refused; the old one serves
    replace(&router, &good[..good.len() / 2]);
    let r = wait_refusal(&server, "cascade_router.wasm");
    assert!(r.contains("not a valid component"), "{r}");
    assert_eq!(stage_of(&server, "live").as_deref(), Some("one"));

    // components for contracts this host does not implement are refused naming both versions
    for (file, found) in [("future_2_0.wasm", "2.0.0"), ("future_1_3.wasm", "1.3.0")] {
        replace(&comps.join(file), &test_component(file));
        let r = wait_refusal(&server, file);
        assert!(
            r.contains(&format!("built for cascade:policy@{found}")) && r.contains("implements cascade:policy@1.2.0"),
            "{r}"
        );
    }

    // the whole file back: accepted again
    replace(&router, &good);
    eventually(10, "router refusal cleared", || {
        (!refusals(&server).iter().any(|r| r.contains("cascade_router.wasm"))).then_some(())
    });

    // a 1.0.0 component (the template) serves on this 1.2.0 host, and the 1.2.0 router uses
    // the 1.1.0 and 1.2.0 additions (class-filtered detection)
    let st = status(&server);
    assert_eq!(st["hotkeys"]["live"]["router"]["contract"], "1.2.0", "{st}");
    std::fs::write(
        dir.0.join("old.toml"),
        "name = \"old\"\nfallback = 0.3\n[router]\ncomponent = \"template-router@1\"\nparams = { model = \"tint\" }\n",
    )
    .expect("write");
    let stage = eventually(10, "old served", || stage_of(&server, "old"));
    assert_eq!(stage, "classify");
    let st = status(&server);
    assert_eq!(st["hotkeys"]["old"]["router"]["contract"], "1.0.0", "{st}");
    std::fs::write(
        dir.0.join("det.toml"),
        "name = \"det\"\nfallback = 0.3\n[router]\ncomponent = \"cascade-router@^1.1\"\n[[router.params.stages]]\nname = \"objects\"\ndetect = { model = \"yolox\", classes = { person = 0.5 }, absent_score = 0.2 }\non_error = \"fail\"\n",
    )
    .expect("write");
    eventually(10, "det served", || stage_of(&server, "det"));
    let (_, v) = predict(&server, "det", &jpeg(&solid(64, 64, [10, 10, 10])));
    assert!(v["trace"][0]["primitive"] == "detect", "{v}");
    assert_eq!(num(&v["prediction"]), 0.2f32 as f64, "{v}");

    // deleting the component a hotkey needs is refused for that hotkey, which keeps its
    // last good binding
    std::fs::remove_file(comps.join("template_router.wasm")).expect("rm");
    std::fs::write(
        dir.0.join("old.toml"),
        "name = \"old\"\nfallback = 0.31\n[router]\ncomponent = \"template-router@1\"\nparams = { model = \"tint\" }\n",
    )
    .expect("write");
    let r = wait_refusal(&server, "old.toml");
    assert!(r.contains("no component named template-router"), "{r}");
    assert_eq!(stage_of(&server, "old").as_deref(), Some("classify"));
}

#[test]
fn a_symlink_swap_and_quick_successive_changes_end_on_the_last_valid_version() {
    let dir = policies("reload-symlink", &[]);
    let versions = TempDir::new("versions");
    for (v, stage) in [("a", "one"), ("b", "two"), ("c", "three")] {
        std::fs::write(versions.0.join(format!("{v}.toml")), policy(stage, "0.3")).expect("write");
    }
    let link = dir.0.join("live.toml");
    std::os::unix::fs::symlink(versions.0.join("a.toml"), &link).expect("symlink");
    let server = Server::start(&dir.0, false, &[]);
    assert_eq!(stage_of(&server, "live").as_deref(), Some("one"));

    // the operator's atomic swap: a new link renamed over the old one
    let swap = |target: &str| {
        let tmp = dir.0.join("live.toml.new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(versions.0.join(target), &tmp).expect("symlink");
        std::fs::rename(&tmp, &link).expect("rename");
    };
    swap("b.toml");
    eventually(10, "stage two through the link", || {
        (stage_of(&server, "live").as_deref() == Some("two")).then_some(())
    });

    // several changes in quick succession, the last one valid: that one serves
    for text in ["name = \"live\"\nfallback = [", "broken", ""] {
        std::fs::write(versions.0.join("c.toml"), text).expect("write");
        swap("c.toml");
    }
    std::fs::write(versions.0.join("c.toml"), policy("three", "0.3")).expect("write");
    swap("b.toml");
    swap("c.toml");
    eventually(10, "stage three", || (stage_of(&server, "live").as_deref() == Some("three")).then_some(()));

    // the target deleted under the link: refused, the last good version answers
    std::fs::remove_file(versions.0.join("c.toml")).expect("rm");
    std::fs::write(versions.0.join("b.toml"), policy("two-again", "0.3")).expect("write");
    swap("c.toml");
    let r = wait_refusal(&server, "live.toml");
    assert!(r.contains("cannot read"), "{r}");
    assert_eq!(stage_of(&server, "live").as_deref(), Some("three"));
}

#[test]
fn only_regular_files_are_read_and_a_hotkey_name_keeps_its_file() {
    let dir = policies("reload-files", &[("live", &policy("one", "0.3"))]);
    let mut server = Server::start(&dir.0, false, &[]);
    assert_eq!(stage_of(&server, "live").as_deref(), Some("one"));
    // a FIFO named like a component or a policy would block a plain read for good; a link to
    // /dev/zero would read until memory runs out
    let mkfifo = |p: &Path| std::process::Command::new("mkfifo").arg(p).status().expect("mkfifo").success();
    assert!(mkfifo(&server.components.0.join("f.wasm")) && mkfifo(&dir.0.join("pipe.toml")));
    std::os::unix::fs::symlink("/dev/zero", dir.0.join("zero.toml")).expect("symlink");
    wait_refusal(&server, "not a regular file");
    // later valid changes still apply
    let file = dir.0.join("live.toml");
    replace(&file, policy("two", "0.3").as_bytes());
    eventually(10, "stage two", || (stage_of(&server, "live").as_deref() == Some("two")).then_some(()));
    std::fs::remove_file(dir.0.join("pipe.toml")).expect("rm");
    std::fs::remove_file(dir.0.join("zero.toml")).expect("rm");

    // a second file claiming the name is refused whichever sorts first, and the owner's later
    // edits still apply
    dir.write("a-copy.toml", &policy("impostor", "0.3"));
    wait_refusal(&server, "hotkey live is also defined in");
    replace(&file, policy("three", "0.3").as_bytes());
    eventually(10, "stage three", || (stage_of(&server, "live").as_deref() == Some("three")).then_some(()));
    // a refused file that is deleted is no longer listed
    std::fs::remove_file(dir.0.join("a-copy.toml")).expect("rm");
    eventually(10, "the deleted file's refusal is gone", || {
        (!refusals(&server).iter().any(|r| r.contains("a-copy.toml") || r.contains("pipe.toml"))).then_some(())
    });
    // and Ctrl-C still stops the server, FIFO and all
    assert!(server.interrupt(15).is_some(), "the server stopped");
}

/// A component file with the same component inside but other bytes (a custom section appended),
/// so that a reload must compile it again.
fn recompiled(bytes: &[u8], n: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    // custom section: id 0, size, name "k" + one byte of payload
    b.extend_from_slice(&[0x00, 0x03, 0x01, b'k', n]);
    b
}

/// `kill -9` while a reload is in flight (a component compiling, a hotkey file changing),
/// at several points of it: every restart on the same folders and compile cache serves,
/// takes no partial cache entry for a whole one, and ends on the files as they are on disk.
#[test]
fn a_kill_during_a_reload_leaves_folders_a_restart_serves() {
    let dir = policies("reload-kill", &[("live", &policy("start", "0.3"))]);
    let cache = TempDir::new("reload-kill-cache");
    let flag = cache.0.display().to_string();
    let router = std::fs::read(repo().join("target/components/cascade_router.wasm")).expect("router component");
    for (round, delay_ms) in [0u64, 30, 80, 150, 300].into_iter().enumerate() {
        let mut server = Server::start(&dir.0, false, &["--compile-cache", &flag]);
        assert!(stage_of(&server, "live").is_some(), "round {round}: serves after the restart:\n{}", server.log());
        let comp = server.components.0.join("cascade_router.wasm");
        replace(&comp, &recompiled(&router, round as u8));
        replace(&dir.0.join("live.toml"), policy(&format!("round{round}"), "0.3").as_bytes());
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        server.signal("KILL");
        assert!(server.wait_exit(10).is_some(), "round {round}: killed");
    }
    let server = Server::start(&dir.0, false, &["--compile-cache", &flag]);
    assert_eq!(stage_of(&server, "live").as_deref(), Some("round4"), "the hotkey file on disk serves");
    assert!(refusals(&server).is_empty(), "{:?}", refusals(&server));
    // the cache holds whole entries only: temporary files of killed writers are never read as
    // entries (they do not end in .cwasm) and every entry loads
    let entries: Vec<std::path::PathBuf> = std::fs::read_dir(&cache.0)
        .expect("cache folder")
        .map(|e| e.expect("entry").path())
        .filter(|e| e.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    for e in &entries {
        assert!(std::fs::metadata(e).expect("entry").len() > 0, "{}", e.display());
    }
    // (how many variants finished compiling before their kill depends on the machine's load:
    // not counted)
    assert!(entries.len() >= 4, "the shipped components' entries: {entries:?}");
    assert!(!server.log().contains("unusable"), "{}", server.log());
}

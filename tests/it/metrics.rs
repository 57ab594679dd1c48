//! The metric names the dashboards and alert rules use, checked against a running server: after
//! traffic that creates every family they name (answers, a refused image, a shadow rollout, a
//! failing policy, a prediction log, a refused axon query, a refused change), the server's own
//! `/metrics` scrape must hold each one, except those `deploy/metric_families.txt` marks
//! `conditional` (a GPU, a loaded metagraph snapshot) — so a renamed metric fails here, not on a
//! dashboard at 3 am.

use cascade_tests::*;

#[test]
fn every_family_the_dashboards_and_rules_name_is_exported() {
    let ss58 = "5FyFVRsgwBT89gGsyif1ZayCDAthzrZxS7fzxCafhwwzkft7";
    let served = format!(
        "name = \"served\"\nss58 = \"{ss58}\"\n[router]\ncomponent = \"cascade-router@^1\"\n[[router.params.stages]]\nname = \"stable\"\nclassify = [\"tint\"]\non_error = \"fail\"\n[candidate]\nrouter = {{ component = \"cascade-router@^1\", params = {{ stages = [{{ name = \"cand\", classify = [\"tint\"], on_error = \"fail\" }}] }} }}\n[rollout]\nmode = \"shadow\"\nmax_inflight = 4\n[log]\ndir = \"logs\"\nimages = \"none\"\n"
    );
    // classifies, then traps on orange images: a failed policy answered from partial evidence
    let trap =
        "name = \"trap\"\n[router]\ncomponent = \"misbehave@1\"\nparams = { model = \"tint\", trap_above = 0.5 }\n";
    // a canary that moves through its steps (rollout events)
    let canary = served
        .replace("name = \"served\"", "name = \"canary\"")
        .replace(&format!("ss58 = \"{ss58}\"\n"), "")
        .replace("mode = \"shadow\"\nmax_inflight = 4", "mode = \"canary\"\nsteps = [50, 100]\nmin_requests = 2");
    let dir = policies("metrics-live", &[("served", &served), ("trap", trap), ("canary", &canary)]);
    dir.write("chain.toml", "netuid = 72\n[admit]\nvalidator_permit = true\n");
    let server = Server::start(&dir.0, true, &[]);
    for (i, rgb) in [[200, 90, 10], [10, 90, 200], [128, 128, 128]].into_iter().enumerate() {
        let img = jpeg(&solid(24 + i as u32, 24, rgb));
        assert_eq!(predict(&server, "served", &img).0, 200);
        assert_eq!(predict(&server, "trap", &img).0, 200);
    }
    for i in 0..12u32 {
        assert_eq!(predict(&server, "canary", &jpeg(&solid(16 + i, 16, [90, 90, 90]))).0, 200);
    }
    let fixed = trap.replace("trap\"\n[router]", "trap\"\nfallback = 0.3\n[router]");
    dir.write("trap.toml", &fixed);
    eventually(10, "a reload", || (num(&status(&server)["generation"]) > 1.0).then_some(()));
    assert_eq!(predict(&server, "trap", &jpeg(&solid(20, 20, [250, 120, 0]))).0, 200, "a fixed fallback");
    assert_eq!(post(&server.url("/v1/predict/served"), "image/jpeg", b"not an image").0, 415);
    dir.write("broken.toml", "name = \"broken\"\n[router]\n");
    eventually(10, "a refused change", || refusals(&server).into_iter().find(|r| r.contains("broken.toml")));
    // a validator's query, refused for want of a snapshot
    assert_eq!(unsigned_synapse(&server, ss58, "5CVVhPmJGWpMdEmTpzZp8HVo5DKUCzmvm3BNbVS6YSSecmoN"), 403);
    // the shadow's comparisons and the log's writes happen off the request path
    eventually(10, "shadow compared and records written", || {
        let (_, m) = get(&server.url("/metrics"));
        ["cascade_shadow_total", "cascade_log_records_total", "cascade_rollout_events_total"]
            .iter()
            .all(|f| m.contains(f))
            .then_some(())
    });
    let (_, scrape) = get(&server.url("/metrics"));
    let file = dir.write("scrape.txt", &scrape);
    // python3 with PyYAML: the system's, or the venv scripts/deploy_checks.sh (run first by
    // scripts/test.sh) makes when the system's lacks it
    let venv = repo().join(".cache/deploy-tools/venv/bin/python");
    let python = if venv.exists() { venv } else { "python3".into() };
    let out = std::process::Command::new(python)
        .arg(repo().join("deploy/check_metric_names.py"))
        .arg("--metrics")
        .arg(&file)
        .arg("--strict")
        .output()
        .expect("python3 (scripts/deploy_checks.sh needs it too)");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n--- scrape ---\n{scrape}");
    assert!(text.contains("families used"), "{text}");
}

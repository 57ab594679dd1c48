//! The improvement loop on the real server: the prediction log (records with every primitive
//! result, images by rule, readable while written), `cascade log` (list, export of the
//! uncertain band), `cascade replay` (a candidate answered from the log's results, models
//! re-run only for what the log lacks, labelled figures), and the log's bad input.

use std::io::Write;

use cascade_tests::*;

const ORANGE: [u8; 3] = [240, 120, 20];
const BLUE: [u8; 3] = [30, 60, 200];
/// `tint` scores this about 0.5: the uncertain band.
const MUDDY: [u8; 3] = [150, 140, 135];

fn logged(name: &str, images: &str) -> String {
    format!("{}\n[log]\ndir = \"log\"\nimages = \"{images}\"\nuncertain = [0.2, 0.8]\n", tint_hotkey(name))
}

fn cascade_out(args: &[&str]) -> (i32, String) {
    let out = cascade().args(args).output().expect("run cascade");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn answers_are_logged_exported_and_replayed() {
    let d = policies("predlog", &[("watched", &logged("watched", "uncertain"))]);
    let server = Server::start(&d.0, false, &[]);
    let mut sent = Vec::new();
    for (i, rgb) in [ORANGE, BLUE, MUDDY, ORANGE, MUDDY].into_iter().enumerate() {
        let img = jpeg(&solid(64 + i as u32, 48, rgb));
        let (status, v) = predict(&server, "watched", &img);
        assert_eq!(status, 200, "{v}");
        sent.push((img, num(&v["prediction"])));
    }
    let log = d.0.join("log");
    // readable while the server runs: every answer is a whole line in a segment
    let records: Vec<Value> = eventually(10, "five records", || {
        let segs: Vec<_> = std::fs::read_dir(&log)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        let recs: Vec<Value> = segs
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect::<Vec<Value>>()
            })
            .collect();
        (recs.len() == 5).then_some(recs)
    });
    for r in &records {
        assert_eq!(
            (r["v"].as_u64(), r["hotkey"].as_str(), r["via"].as_str()),
            (Some(1), Some("watched"), Some("http")),
            "{r}"
        );
        let res = r["results"].as_array().expect("results");
        assert!(
            res.iter().any(|x| x["primitive"] == "classify"
                && x["model"] == "tint"
                && x["output"]["classification"]["score"].is_number()),
            "{r}"
        );
        // images kept only in the uncertain band
        let p = num(&r["prediction"]);
        assert_eq!(r["image_file"].is_string(), (0.2..=0.8).contains(&p), "{r}");
    }

    // list and filter
    let l = log.to_str().unwrap();
    let (code, out) = cascade_out(&["log", "list", "--log", l, "--band", "0.2-0.8"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 record(s); stages: tint 2"), "{out}");
    // export the uncertain band (two requests, one image each) for labelling
    let ex = TempDir::new("export");
    let (code, out) = cascade_out(&["log", "export", "--log", l, "--band", "0.2-0.8", "--out", ex.0.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let manifest = std::fs::read_to_string(ex.0.join("manifest.csv")).expect("manifest");
    let rows: Vec<&str> = manifest.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{manifest}");
    assert!(rows.iter().all(|r| r.split(',').nth(1) == Some("")), "the label column is left empty: {manifest}");
    // labelled by the operator: both are roadwork
    let labelled: String = std::iter::once(manifest.lines().next().unwrap().to_string())
        .chain(rows.iter().map(|r| r.replacen(",,", ",1,", 1)))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(ex.0.join("labelled.csv"), labelled).expect("labels");

    // a candidate that leans to roadwork, replayed over the log: every call from the log
    let cand = TempDir::new("candidate");
    cand.write("models.toml", &test_registry());
    cand.write(
        "eager.toml",
        &format!(
            "{}\n[fuser]\ncomponent = \"weighted@^1\"\nparams.weights = {{ tint = 1.0 }}\nparams.boost = {{ }}\n",
            tint_hotkey("eager")
        ),
    );
    let comps = components(false);
    let replay = |hotkey: &str, extra: &[&str]| {
        let mut args = vec![
            "replay",
            "--hotkey",
            hotkey,
            "--log",
            l,
            "--json",
            "--policies",
            cand.0.to_str().unwrap(),
            "--components",
            comps.0.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (code, out) = cascade_out(&args);
        assert_eq!(code, 0, "{out}");
        let line = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or("{}").to_string();
        serde_json::from_str::<Value>(&line).expect("JSON report")
    };
    let v = replay("eager", &["--labels", ex.0.join("labelled.csv").to_str().unwrap()]);
    assert_eq!(v["records"], 5, "{v}");
    assert_eq!(v["agreement"], 1.0, "the same model and rule: the same answers: {v}");
    assert_eq!(v["calls"]["rerun"], 0, "{v}");
    assert!(v["calls"]["from_log"].as_u64().unwrap() >= 5, "{v}");
    assert_eq!(v["labelled"]["candidate"]["n"], 2, "{v}");
    // a candidate that also looks at the mirror: the log lacks those calls; they run on the
    // kept images and cannot be answered where no image was kept
    cand.write("mirror.toml", "name = \"mirror\"\n[router]\ncomponent = \"cascade-router@^1\"\n[[router.params.stages]]\nname = \"both\"\nclassify = [\"tint\"]\nflip = true\non_error = \"skip\"\n[[router.params.stages]]\nname = \"plain\"\nclassify = [\"tint\"]\n");
    let v = replay("mirror", &[]);
    assert_eq!(v["calls"]["rerun"], 2, "two images kept: {v}");
    assert_eq!(v["calls"]["unanswerable"], 3, "three not kept: {v}");

    // the exported images are what the validator sent (`challenge` = 1): eval reads them as
    // they are even when asked for validator levels, so the logged answers come back
    let rows_file = ex.0.join("rows.jsonl");
    let (code, out) = cascade_out(&[
        "eval",
        "--hotkey",
        "eager",
        "--manifest",
        ex.0.join("labelled.csv").to_str().unwrap(),
        "--levels",
        "0-3",
        "--rows",
        rows_file.to_str().unwrap(),
        "--json",
        "--policies",
        cand.0.to_str().unwrap(),
        "--components",
        comps.0.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let report: Value =
        serde_json::from_str(out.lines().rev().find(|l| l.starts_with('{')).unwrap_or("{}")).expect("report");
    assert_eq!(report["as_sent"]["n"], 2, "both reported as sent: {report}");
    assert_eq!(report["per_level"], serde_json::json!({}), "none drawn through a level: {report}");
    let rows: Vec<Value> = std::fs::read_to_string(&rows_file)
        .expect("rows")
        .lines()
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    let logged: Vec<f64> = sent.iter().map(|(_, p)| *p).collect();
    for r in &rows {
        assert!(r["level"].is_null(), "used as read, not augmented a second time: {r}");
        let p = num(&r["prediction"]);
        assert!(logged.iter().any(|q| (q - p).abs() < 1e-4), "the logged answer again: {r} vs {logged:?}");
    }
}

#[test]
fn a_damaged_log_is_read_around_and_bad_log_settings_are_refused() {
    let d = policies("predlog-bad", &[("watched", &logged("watched", "all"))]);
    let server = Server::start(&d.0, false, &[]);
    for rgb in [ORANGE, BLUE] {
        assert_eq!(predict(&server, "watched", &jpeg(&solid(40, 40, rgb))).0, 200);
    }
    let log = d.0.join("log");
    let seg = eventually(10, "a segment with two records", || {
        let p = std::fs::read_dir(&log)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "jsonl"))?;
        (std::fs::read_to_string(&p).ok()?.lines().count() == 2).then_some(p)
    });
    // a corrupted line, a record from another format version, and a truncated last line
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).expect("segment");
    writeln!(f, "\u{0}\u{0}garbage").unwrap();
    writeln!(f, "{{\"v\": 2, \"t\": 1}}").unwrap();
    write!(f, "{{\"v\": 1, \"t\": 17, \"id\": \"x").unwrap();
    drop(f);
    let (code, out) = cascade_out(&["log", "list", "--log", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 record(s)"), "{out}");
    assert!(
        out.contains(":3: not a JSON record")
            && out.contains(":4: format version 2; this build reads version 1")
            && out.contains(":5: not a JSON record"),
        "{out}"
    );
    assert!(out.contains("3 line(s) skipped"), "{out}");

    // a bad sampling rule is refused by a reload, and the hotkey keeps logging as before
    d.write("watched.toml", &logged("watched", "sometimes"));
    eventually(10, "the refusal", || refusals(&server).into_iter().find(|r| r.contains("log.images \"sometimes\"")));
    assert_eq!(predict(&server, "watched", &jpeg(&solid(41, 40, ORANGE))).0, 200);
    // written off the request path: the counter catches up
    eventually(10, "three records written", || {
        get(&server.url("/metrics")).1.contains("cascade_log_records_total{log=\"log\"} 3").then_some(())
    });
}

#[test]
fn shadow_disagreements_are_exported() {
    // the stable arm sees the whole image; the shadow candidate the best of four tiles
    let hotkey = format!(
        "{}\n[candidate]\nrouter = {{ component = \"cascade-router@^1\", params = {{ stages = [{{ name = \"zoom\", classify = [\"tint\"], zoom = {{ grid = 2 }} }}] }} }}\n[rollout]\nmode = \"shadow\"\n",
        logged("shadowed", "all")
    );
    let d = policies("predlog-shadow", &[("shadowed", &hotkey)]);
    let server = Server::start(&d.0, false, &[]);
    // blue with an orange corner: low as a whole, high in the corner's tile
    let mut corner = solid(64, 64, BLUE);
    for y in 0..28 {
        for x in 0..28 {
            corner.put_pixel(x, y, image::Rgb(ORANGE));
        }
    }
    for img in [corner, solid(64, 64, BLUE), solid(66, 64, ORANGE)] {
        assert_eq!(predict(&server, "shadowed", &png(&img)).0, 200);
    }
    let log = d.0.join("log");
    eventually(10, "three answers and their shadows", || {
        let scan: usize = std::fs::read_dir(&log)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .map(|p| std::fs::read_to_string(p).unwrap_or_default().lines().count())
            .sum();
        (scan == 6).then_some(())
    });
    let ex = TempDir::new("disagree");
    let (code, out) = cascade_out(&[
        "log",
        "export",
        "--log",
        log.to_str().expect("path"),
        "--disagreements",
        "--out",
        ex.0.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{out}");
    let manifest = std::fs::read_to_string(ex.0.join("manifest.csv")).expect("manifest");
    let header: Vec<&str> = manifest.lines().next().expect("a header").split(',').collect();
    let at =
        |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name} column: {manifest}"));
    let rows: Vec<&str> = manifest.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "only the image the arms disagree on: {manifest}");
    let cols: Vec<&str> = rows[0].split(',').collect();
    let (served, shadow): (f64, f64) =
        (cols[at("prediction")].parse().expect("prediction"), cols[at("other_prediction")].parse().expect("other"));
    assert!(served < 0.5 && shadow > 0.5, "{manifest}");
}

/// `kill -9` in the middle of heavy logging: every segment reads back up to its last whole
/// line (a cut-off last line is skipped, nothing else), every record the server counted as
/// written (`cascade_log_records_total`: flushed) is there, and a restart on the same folder
/// goes on logging in a segment of its own.
#[test]
fn a_killed_server_leaves_every_acknowledged_record_readable() {
    let d = policies("predlog-kill", &[("watched", &logged("watched", "all"))]);
    let mut server = Server::start(&d.0, false, &[]);
    let url = server.url("/v1/predict/watched");
    let senders: Vec<_> = (0..4u32)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                for i in 0..400u32 {
                    let img = jpeg(&solid(40 + (i % 50), 30 + t, [(i % 250) as u8, 90, 200]));
                    if post(&url, "image/jpeg", &img).0 == 0 {
                        break;
                    }
                }
            })
        })
        .collect();
    let written = |server: &Server| -> f64 {
        let (_, m) = get(&server.url("/metrics"));
        m.lines()
            .find_map(|l| l.strip_prefix("cascade_log_records_total{log=\"log\"} ")?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    eventually(60, "records being written", || (written(&server) >= 150.0).then_some(()));
    let acknowledged = written(&server);
    server.signal("KILL");
    assert!(server.wait_exit(10).is_some(), "killed");
    for s in senders {
        let _ = s.join();
    }
    let log = d.0.join("log");
    let (code, out) = cascade_out(&["log", "list", "--log", log.to_str().expect("path"), "--json"]);
    assert_eq!(code, 0, "{out}");
    let records = out.lines().filter(|l| l.starts_with('{') && l.contains("\"hotkey\"")).count();
    eprintln!("killed with {acknowledged} records acknowledged; {records} read back");
    assert!(records as f64 >= acknowledged, "{records} records read, {acknowledged} acknowledged as written");
    // only a segment's cut-off last line may be skipped
    for skipped in out.lines().filter(|l| l.starts_with("skipped: ")) {
        let (file, line) =
            skipped["skipped: ".len()..].split(": ").next().and_then(|fl| fl.rsplit_once(':')).expect("file:line");
        let total = std::fs::read_to_string(file).expect("segment").split_inclusive('\n').count();
        assert_eq!(line.parse::<usize>().ok(), Some(total), "only the last line is cut off: {skipped}");
    }
    // a restart goes on in a new segment
    let segments = |log: &std::path::Path| {
        std::fs::read_dir(log)
            .expect("log")
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".jsonl")))
            .count()
    };
    let before = segments(&log);
    let server = Server::start(&d.0, false, &[]);
    assert_eq!(predict(&server, "watched", &jpeg(&solid(33, 33, ORANGE))).0, 200);
    eventually(10, "a new segment", || (segments(&log) > before).then_some(()));
}

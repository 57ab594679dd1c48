//! `cascade tune` on rendered images with the `tint` classifier: a two-stage hotkey whose exit
//! thresholds and weights are swept, the frontier and grouped folds reported, the candidate
//! written as a hotkey file that loads, the simulation checked through the real components,
//! and empty or huge spaces refused with their size.

use cascade_tests::*;

fn hotkey() -> &'static str {
    r#"# two looks at the image; `cascade tune` keeps this comment
name = "two"  # and this one
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "first"
classify = ["tint"]
exit_low = 0.3
exit_high = 0.7
[[router.params.stages]]
name = "mirror"
classify = ["tint"]
flip = true
[fuser]
component = "weighted@^1"
params.weights = { tint = 1.0, "tint:flip" = 1.0 }
"#
}

/// Forty images in two groups: reddish ones are roadwork, bluish ones not, with a muddy
/// middle where the two halves of the image disagree.
fn data(d: &TempDir) -> std::path::PathBuf {
    let mut rows = vec!["path,label".to_string()];
    for g in ["east", "west"] {
        std::fs::create_dir_all(d.0.join(g)).expect("test data");
        for i in 0..20u32 {
            let label = i % 2 == 0;
            let t = i as f32 / 20.0;
            let (r, b) =
                if label { (150.0 + 100.0 * t, 140.0 - 60.0 * t) } else { (150.0 - 100.0 * t, 140.0 + 60.0 * t) };
            let mut img = solid(48, 32, [r as u8, 120, b as u8]);
            // the left third another colour: the mirror sees it elsewhere
            for y in 0..32 {
                for x in 0..16 {
                    img.put_pixel(x, y, image::Rgb([if label { 90 } else { 200 }, 110, 150]));
                }
            }
            let name = format!("{g}/{i}.png");
            std::fs::write(d.0.join(&name), png(&img)).expect("test data");
            rows.push(format!("{name},{}", u8::from(label)));
        }
    }
    let m = d.0.join("manifest.csv");
    std::fs::write(&m, rows.join("\n")).expect("test data");
    m
}

fn tune(pol: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let comps = components(false);
    let mut args = vec!["tune", "--hotkey", "two"];
    args.extend_from_slice(extra);
    run(&args, pol, &comps.0)
}

#[test]
fn a_sweep_reports_the_frontier_and_writes_a_candidate_that_loads() {
    let pol = policies("tune", &[("two", hotkey())]);
    let d = TempDir::new("tune-data");
    let m = data(&d);
    let out = d.0.join("two.toml");
    let svg = d.0.join("frontier.svg");
    let (code, text) = tune(
        &pol.0,
        &["--manifest", m.to_str().unwrap(), "--out", out.to_str().unwrap(), "--svg", svg.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("40 images (2 groups)") && text.contains("64 settings"), "{text}");
    assert!(text.contains("cost/accuracy frontier") && text.contains("chosen by leave-one-group-out"), "{text}");
    assert!(text.contains("checked through the components: 40 of 40"), "{text}");
    let pic = std::fs::read_to_string(&svg).expect("test data");
    assert!(pic.starts_with("<svg") && pic.contains("polyline") && pic.contains("chosen"), "{pic}");
    assert!(pic.contains("class=\"chosen-value\""), "the chosen threshold is marked on the sweep: {pic}");
    assert!(pic.contains("chosen: in-sample MCC") && pic.contains("(leave-one-group-out): MCC"), "{pic}");
    // the chosen setting is no worse than the current one on the same images
    let mcc_after = |text: &str, label: &str| -> f64 {
        let rest = &text[text.find(label).unwrap_or_else(|| panic!("{label:?} in {text}")) + label.len()..];
        rest.trim_start()
            .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .next()
            .unwrap()
            .parse()
            .expect("a number")
    };
    let (chosen, current) = (mcc_after(&pic, "chosen: in-sample MCC"), mcc_after(&pic, "(current"));
    assert!(chosen >= current, "chosen MCC {chosen} < current {current}: {pic}");
    // the candidate file: the stable policy, the tuned candidate, a canary; it loads
    let cand = std::fs::read_to_string(&out).expect("test data");
    assert!(cand.contains("[candidate.router]") && cand.contains("mode = \"canary\""), "{cand}");
    assert!(cand.starts_with(hotkey()), "the operator's file as written, comments and order kept:\n{cand}");
    assert!(
        !cand.contains("[candidate]\n") && !cand.contains("[candidate.router.params]\n"),
        "no empty tables: {cand}"
    );
    let check = policies("tune-check", &[("two", &cand)]);
    let comps = components(false);
    let (code, text) = run(&["check"], &check.0, &comps.0);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn empty_and_huge_spaces_are_refused_with_their_size() {
    let pol = policies("tune-space", &[("two", hotkey())]);
    let d = TempDir::new("tune-space-data");
    let m = data(&d);
    let out = d.0.join("out.toml");
    let empty = d.write("empty.toml", "");
    let (code, text) = tune(
        &pol.0,
        &["--manifest", m.to_str().unwrap(), "--out", out.to_str().unwrap(), "--space", empty.to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(text.contains("the tune space is empty"), "{text}");
    let many: Vec<String> = (0..200).map(|i| format!("{:.4}", i as f32 / 400.0)).collect();
    let huge = d.write(
        "huge.toml",
        &format!("[stages.first]\nexit_low = [{0}]\nexit_high = [{0}]\n[weights]\ntint = [{0}]\n", many.join(", ")),
    );
    let (code, text) = tune(
        &pol.0,
        &["--manifest", m.to_str().unwrap(), "--out", out.to_str().unwrap(), "--space", huge.to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(text.contains("the tune space has 8000000 settings, more than 2000000"), "{text}");
    // a candidate that cannot be written: said, and nothing half-written
    let nowhere = d.0.join("no-such-folder/out.toml");
    let (code, text) = tune(&pol.0, &["--manifest", m.to_str().unwrap(), "--out", nowhere.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(text.contains("cannot write the candidate") && text.contains("no-such-folder/out.toml"), "{text}");
    let wrong = d.write("wrong.toml", "[stages.nope]\nexit_low = [0.1]\n");
    let (_, text) = tune(
        &pol.0,
        &["--manifest", m.to_str().unwrap(), "--out", out.to_str().unwrap(), "--space", wrong.to_str().unwrap()],
    );
    assert!(text.contains("space: no stage \"nope\" (the hotkey's stages: first, mirror)"), "{text}");
}

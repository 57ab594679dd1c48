//! The stage cache on the real server: hotkeys answering the same image at once run each
//! model once and decode the image once; a reloaded model set is computed afresh; a model can
//! opt out.

use cascade_tests::*;

fn metric(server: &Server, sample: &str) -> f64 {
    let (_, text) = get(&server.url("/metrics"));
    text.lines().find_map(|l| l.strip_prefix(sample)?.trim().parse().ok()).unwrap_or(0.0)
}

/// The same image to the three hotkeys at once; every answer 200.
fn burst(server: &Server, img: &[u8]) {
    let threads: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|h| {
            let (url, img) = (server.url(&format!("/v1/predict/{h}")), img.to_vec());
            std::thread::spawn(move || post(&url, "image/jpeg", &img))
        })
        .collect();
    for t in threads {
        let (s, v) = t.join().expect("thread");
        assert_eq!(s, 200, "{v}");
    }
}

#[test]
fn three_hotkeys_on_one_image_run_the_model_once_and_a_reload_recomputes() {
    let dir = policies("cache", &[("a", &tint_hotkey("a")), ("b", &tint_hotkey("b")), ("c", &tint_hotkey("c"))]);
    let server = Server::start(&dir.0, false, &[]);
    let items = "cascade_model_items_total{model=\"tint\"}";
    let misses = "cascade_stage_cache_total{model=\"tint\",result=\"miss\"}";
    let img = jpeg(&solid(48, 48, [250, 130, 20]));
    let before = metric(&server, items);
    let decoded = "cascade_decoded_images_total{result=\"decoded\"}";
    let decodes_before = metric(&server, decoded);
    burst(&server, &img);
    assert_eq!(metric(&server, items) - before, 1.0, "one run for three hotkeys");
    assert_eq!(metric(&server, decoded) - decodes_before, 1.0, "one decode for three hotkeys");
    assert_eq!(metric(&server, "cascade_decoded_images_total{result=\"shared\"}"), 2.0);
    burst(&server, &img);
    assert_eq!(metric(&server, items) - before, 1.0, "and none the second time");
    let shared = metric(&server, "cascade_stage_cache_total{model=\"tint\",result=\"hit\"}")
        + metric(&server, "cascade_stage_cache_total{model=\"tint\",result=\"wait\"}");
    assert!(shared >= 5.0, "{shared}");

    // a new model set (the registry changed): the same image is computed again
    let generation = || status(&server)["generation"].as_u64().unwrap_or(0);
    let g0 = generation();
    let registry = std::fs::read_to_string(dir.0.join("models.toml")).expect("registry");
    dir.write("models.toml", &format!("{registry}\n# changed\n"));
    eventually(10, "the new registry serves", || (generation() > g0).then_some(()));
    // (its smoke requests ran on a grey image; the orange one is new to this model set)
    let misses_before = metric(&server, misses);
    burst(&server, &img);
    assert_eq!(metric(&server, misses) - misses_before, 1.0, "recomputed once after the reload");

    // opted out: every hotkey runs it
    let g1 = generation();
    dir.write("models.toml", &registry.replacen("kind = \"classifier\"", "kind = \"classifier\"\ncache = false", 1));
    eventually(10, "the opt-out serves", || (generation() > g1).then_some(()));
    let before = metric(&server, items);
    burst(&server, &jpeg(&solid(48, 48, [10, 130, 250])));
    assert_eq!(metric(&server, items) - before, 3.0, "no sharing without the cache");
}

#[test]
fn a_big_photo_is_decoded_at_the_size_the_models_need_and_counted() {
    // the test registry's largest input is OCR's 480, so the need is a short side of 960: a
    // 2560×1920 JPEG decodes at 1/2 (1/4 would give 480); with --decode-min-side 0 in full; the
    // answers agree within the resize's noise
    let dir = policies("scaled", &[("a", &tint_hotkey("a"))]);
    let img = jpeg(&image::RgbImage::from_fn(2560, 1920, |x, y| image::Rgb([(x / 11) as u8, (y / 8) as u8, 200])));
    let half = "cascade_decoded_images_total{result=\"scaled-1/2\"}";
    let mut answers = Vec::new();
    for extra in [&[][..], &["--decode-min-side", "0"][..]] {
        let server = Server::start(&dir.0, false, extra);
        let before = metric(&server, half);
        let (status, v, timing) = post_timed(&server.url("/v1/predict/a"), "image/jpeg", &img);
        assert_eq!(status, 200, "{v}");
        assert!(timing.starts_with("decode;dur=") && timing.contains("total;dur="), "{timing:?}");
        answers.push(v["prediction"].as_f64().expect("a prediction"));
        let scaled = metric(&server, half) - before;
        assert_eq!(scaled, if extra.is_empty() { 1.0 } else { 0.0 }, "{extra:?}");
    }
    assert!((answers[0] - answers[1]).abs() < 0.02, "{answers:?}");
}

#[test]
fn a_big_photos_decode_memory_is_reserved_at_its_scaled_size() {
    // 2560×1920 costs 33 MiB to decode in full, 9 MiB at 1/2 (the test registry's need): a
    // 20 MiB budget admits it scaled, refuses it in full, and a JPEG libjpeg-turbo will not
    // scale (CMYK) is refused by name rather than decoded past the budget; with room it is
    // decoded in full and counted
    let dir = policies("scaled-memory", &[("a", &tint_hotkey("a"))]);
    let photo = jpeg(&image::RgbImage::from_fn(2560, 1920, |x, y| image::Rgb([(x / 11) as u8, (y / 8) as u8, 200])));
    let (w, h) = (2560usize, 1920usize);
    let cmyk = turbojpeg::compress(
        turbojpeg::Image {
            pixels: vec![40u8; w * h * 4].as_slice(),
            width: w,
            pitch: w * 4,
            height: h,
            format: turbojpeg::PixelFormat::CMYK,
        },
        90,
        turbojpeg::Subsamp::None,
    )
    .expect("a CMYK JPEG")
    .to_vec();
    let url = |s: &Server| s.url("/v1/predict/a");
    let tight = Server::start(&dir.0, false, &["--decode-memory-mb", "20"]);
    let (status, v) = post(&url(&tight), "image/jpeg", &photo);
    assert_eq!(status, 200, "scaled, it fits: {v}");
    let (status, v) = post(&url(&tight), "image/jpeg", &cmyk);
    assert_eq!((status, v["error"]["code"].as_str()), (413, Some("image-too-large")), "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("could not decode this 2560×1920 JPEG scaled") && msg.contains("--decode-memory-mb 20"),
        "{v}"
    );
    let full = Server::start(&dir.0, false, &["--decode-memory-mb", "20", "--decode-min-side", "0"]);
    let (status, v) = post(&url(&full), "image/jpeg", &photo);
    assert_eq!((status, v["error"]["code"].as_str()), (413, Some("image-too-large")), "in full it does not: {v}");
    let roomy = Server::start(&dir.0, false, &["--decode-memory-mb", "64"]);
    let fell_back = "cascade_decoded_images_total{result=\"fell-back\"}";
    let before = metric(&roomy, fell_back);
    let (status, v) = post(&url(&roomy), "image/jpeg", &cmyk);
    assert_eq!(status, 200, "{v}");
    assert_eq!(metric(&roomy, fell_back) - before, 1.0);
}

/// A short CPU model whose worker is idle runs on the request's own thread, not through its
/// queue (`cascade_model_runs_here_total`); with requests arriving together, run here or
/// queued (how many of each depends on timing), every image is run once and each answer is the
/// one it got alone; `CASCADE_RUN_HERE_US=0` turns it off. (The tests allow runs up to 1 s, so
/// that a loaded machine's slow runs still count as short.)
#[test]
fn a_short_model_runs_on_the_requests_thread_when_its_worker_is_idle() {
    let image = |i: u32| jpeg(&solid(20 + i % 7, 20, [(i * 37 % 256) as u8, 90, (255 - i * 11 % 256) as u8]));
    let here = "cascade_model_runs_here_total{model=\"tint\"}";
    let items = "cascade_model_items_total{model=\"tint\"}";
    let dir = policies("here", &[("a", &tint_hotkey("a"))]);
    let serve = |limit: &str| Server::start_env(&dir.0, false, &[], &[("CASCADE_RUN_HERE_US", limit)]);

    // one at a time: after the model's first run (its time is known from then), every one here
    let server = serve("1000000");
    let (items0, here0) = (metric(&server, items), metric(&server, here));
    let alone: Vec<f64> = (0..24)
        .map(|i| {
            let (s, v) = predict(&server, "a", &image(i));
            assert_eq!(s, 200, "{v}");
            num(&v["prediction"])
        })
        .collect();
    assert_eq!(metric(&server, items) - items0, 24.0);
    assert!(metric(&server, here) - here0 >= 23.0, "{} of 24 run here", metric(&server, here) - here0);

    // all at once on a fresh server: none is lost, the scores agree
    let server = serve("1000000");
    let (items0, here0) = (metric(&server, items), metric(&server, here));
    let threads: Vec<_> = (0..24)
        .map(|i| {
            let (url, img) = (server.url("/v1/predict/a"), image(i));
            std::thread::spawn(move || post(&url, "image/jpeg", &img))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (s, v) = t.join().expect("thread");
        assert_eq!(s, 200, "{v}");
        let p = num(&v["prediction"]);
        assert!((p - alone[i]).abs() < 1e-4, "image {i}: {p} together, {} alone", alone[i]);
    }
    assert_eq!(metric(&server, items) - items0, 24.0, "every image run once");
    eprintln!("all at once: {} of 24 run here", metric(&server, here) - here0);

    // turned off: every one queued
    let server = serve("0");
    for i in 0..4 {
        assert_eq!(predict(&server, "a", &image(i)).0, 200);
    }
    assert_eq!(metric(&server, here), 0.0, "none run here");
}

//! A registry entry pointed at a folder exported from a Hugging Face image-classification
//! checkpoint (`hf = "folder"`): labels from `config.json`, preprocessing from
//! `preprocessor_config.json` (here ConvNeXt's `crop_pct` rule), scored exactly as the same
//! model typed by hand. The folder is a stand-in the test builds: the `tint` test model as
//! `model.onnx` beside the two JSON files in the form `transformers` writes them.

use cascade_tests::*;

fn infer(policies: &std::path::Path, model: &str, image: &std::path::Path) -> Value {
    let out = cascade()
        .args(["infer", "--policies"])
        .arg(policies)
        .args(["--model", model])
        .arg(image)
        .output()
        .expect("infer");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

const CONFIG: &str = r#"{
  "architectures": ["ConvNextForImageClassification"],
  "id2label": {"0": "no_roadwork", "1": "roadwork"},
  "label2id": {"no_roadwork": 0, "roadwork": 1},
  "model_type": "convnext",
  "problem_type": "single_label_classification",
  "torch_dtype": "float32",
  "transformers_version": "4.46.3"
}"#;

const PREPROCESSOR: &str = r#"{
  "crop_pct": 0.875,
  "do_normalize": true,
  "do_rescale": true,
  "do_resize": true,
  "image_mean": [0.485, 0.456, 0.406],
  "image_processor_type": "ConvNextImageProcessor",
  "image_std": [0.229, 0.224, 0.225],
  "resample": 3,
  "rescale_factor": 0.00392156862745098,
  "size": {"shortest_edge": 32}
}"#;

#[test]
fn an_exported_hugging_face_classifier_reads_its_labels_and_preprocessing() {
    let dir = TempDir::new("hf");
    std::fs::create_dir_all(dir.0.join("hub/onnx")).expect("mkdir");
    std::fs::copy(test_models().join("tint.onnx"), dir.0.join("hub/onnx/model.onnx")).expect("copy");
    dir.write("hub/config.json", CONFIG);
    dir.write("hub/preprocessor_config.json", PREPROCESSOR);
    let registry = format!(
        r#"[[model]]
name = "hub"
kind = "classifier"
hf = "hub"
positive = ["roadwork"]

[[model]]
name = "by-hand"
kind = "classifier"
file = "{tint}"
labels = ["no_roadwork", "roadwork"]
positive = ["roadwork"]
input = {{ width = 32, height = 32, resize = "center_crop", resize_short = 37, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225], resample = "bicubic" }}

[[model]]
name = "hub-raw"
kind = "embedder"
hf = "hub"

[[model]]
name = "bilinear-raw"
kind = "embedder"
file = "{tint}"
input = {{ width = 32, height = 32, resize = "center_crop", resize_short = 37, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }}
"#,
        tint = test_models().join("tint.onnx").display()
    );
    dir.write("models.toml", &registry);
    // a wide image whose sides differ in colour: the centre crop decides what the model sees
    let mut img = solid(90, 40, [40, 60, 200]);
    for y in 0..40 {
        for x in 25..65 {
            img.put_pixel(x, y, image::Rgb([220, 90, 30]));
        }
    }
    let path = dir.0.join("wide.png");
    std::fs::write(&path, png(&img)).expect("write");
    let hub = infer(&dir.0, "hub", &path);
    let hand = infer(&dir.0, "by-hand", &path);
    assert_eq!(hub["result"], hand["result"], "the same preprocessing and labels as typed by hand");
    // the processor's `resample: 3` is PIL's bicubic: the folder read as an embedder (the raw
    // logits) differs from the same file resized bilinearly
    let mut seed = 26u32;
    let noise = image::RgbImage::from_fn(90, 40, |_, _| {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        image::Rgb([(seed >> 24) as u8, (seed >> 16) as u8, (seed >> 8) as u8])
    });
    let noisy = dir.0.join("noise.png");
    std::fs::write(&noisy, png(&noise)).expect("write");
    let raw = infer(&dir.0, "hub-raw", &noisy);
    let bilinear = infer(&dir.0, "bilinear-raw", &noisy);
    assert_eq!(raw["result"]["dim"], 2, "{raw}");
    assert_ne!(raw["result"]["head"], bilinear["result"]["head"], "{raw} {bilinear}");
    assert_eq!(hub["result"]["top"][0][0], "roadwork", "{hub}");

    // the export script's check reads the folder the same way and prints the entry to paste
    let py = repo().join(".venv/bin/python");
    let script = repo().join("scripts/models/hf_export.py");
    let out =
        std::process::Command::new(&py).arg(&script).arg("check").arg(dir.0.join("hub")).output().expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("2 labels ['no_roadwork', 'roadwork'], input 32x32")
            && text.contains("positive = [\"roadwork\"]"),
        "{text}"
    );

    // what the folder says is checked like any registry entry
    dir.write("hub/config.json", &CONFIG.replace("\"1\": \"roadwork\"", "\"2\": \"roadwork\""));
    let (code, out) = run(&["check"], &dir.0, &components(false).0);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("model hub: hf: config.json: id2label must number the classes 0, 1, … without gaps"), "{out}");
    let bad =
        std::process::Command::new(&py).arg(&script).arg("check").arg(dir.0.join("hub")).output().expect("python");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("id2label must number the classes"), "{bad:?}");
    dir.write("hub/config.json", CONFIG);
    dir.write("models.toml", &registry.replace("hf = \"hub\"", "hf = \"hub\"\nlabels = [\"a\", \"b\"]"));
    let (_, out) = run(&["check"], &dir.0, &components(false).0);
    assert!(out.contains("hf: the labels come from the folder's config.json (id2label); remove labels"), "{out}");
}

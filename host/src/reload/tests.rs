//! The reload pipeline in process, without a server or a watcher: a policies folder of its
//! own with the `tint` test model (`scripts/test.sh` builds it) and the shipped components
//! (`make setup` builds them), reloaded by hand after each change. The end-to-end tests
//! (`tests/it/reload.rs`) cover the same rules through the running binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::status::ReloadStatus;
use super::{Reloader, Snapshot, Sources};
use crate::runtime::{Runtime, RuntimeConfig};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

/// A folder of its own, removed on drop.
struct Folder(PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hotkey(stage: &str, fallback: &str) -> String {
    format!(
        "name = \"live\"\nfallback = {fallback}\n[router]\ncomponent = \"cascade-router@^1\"\n\
         [[router.params.stages]]\nname = \"{stage}\"\nclassify = [\"tint\"]\non_error = \"fail\"\n"
    )
}

fn reloader(tag: &str) -> (Reloader, Folder) {
    let models = repo().join("target/test-models/tint.onnx");
    assert!(models.exists(), "{}: missing (scripts/test.sh builds it)", models.display());
    let components = repo().join("target/components");
    assert!(components.join("cascade_router.wasm").exists(), "{}: run make setup", components.display());
    let dir = std::env::temp_dir().join(format!("cascade-reload-unit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("policies folder");
    let registry = format!(
        "[[model]]\nname = \"tint\"\nfile = \"{}\"\nkind = \"classifier\"\nlabels = [\"other\", \"roadwork\"]\n\
         positive = [\"roadwork\"]\ninput = {{ width = 32, height = 32 }}\n",
        models.display()
    );
    std::fs::write(dir.join("models.toml"), registry).expect("registry");
    std::fs::write(dir.join("live.toml"), hotkey("one", "0.3")).expect("hotkey");
    let rt = Arc::new(Runtime::new(RuntimeConfig { max_instances: 16, max_memory: 64 << 20 }).expect("runtime"));
    let src = Sources { policies: dir.clone(), components, ort_library: repo().join("target/ort/libonnxruntime.so") };
    (Reloader::new(rt, src, None), Folder(dir))
}

/// The stage the live hotkey's router names for a grey image.
fn stage(snap: &Snapshot) -> String {
    let h = snap.hotkeys.get("live").expect("the live hotkey serves");
    let img = Arc::new(image::RgbImage::from_pixel(32, 32, image::Rgb([128, 128, 128])));
    h.answer_quietly(&snap.models, img).stage
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn an_unchanged_folder_applies_nothing_and_keeps_every_binding() {
    let (mut r, _dir) = reloader("unchanged");
    let first = r.reload();
    assert!(first.refused.is_empty(), "{:?}", first.refused);
    assert_eq!(stage(&first), "one");
    let again = r.reload();
    assert!(again.applied.is_empty(), "nothing changed: {:?}", again.applied);
    assert!(again.refused.is_empty(), "{:?}", again.refused);
    assert!(Arc::ptr_eq(&first.hotkeys["live"], &again.hotkeys["live"]), "the same hotkey keeps serving");
    assert!(Arc::ptr_eq(&first.models, &again.models), "the same models keep serving");
}

#[test]
fn a_broken_change_is_refused_once_and_the_last_good_version_serves_until_fixed() {
    let (mut r, dir) = reloader("broken");
    let file = dir.0.join("live.toml");
    let mut status = ReloadStatus::default();
    let first = r.reload();
    status.record(&first);
    assert_eq!(stage(&first), "one");

    replace(&file, &hotkey("two", "0.5"));
    let refused = r.reload();
    status.record(&refused);
    assert_eq!(refused.refused.len(), 1, "{:?}", refused.refused);
    assert_eq!(refused.refused[0].file, file);
    assert!(refused.refused[0].reason.contains("fallback 0.5"), "{}", refused.refused[0].reason);
    assert!(refused.applied.is_empty(), "{:?}", refused.applied);
    assert!(Arc::ptr_eq(&first.hotkeys["live"], &refused.hotkeys["live"]), "the last good version serves");
    assert_eq!(stage(&refused), "one");
    assert!(status.outstanding.contains_key(&file), "the refusal stands until the file is fixed");

    // the same broken file is not reported again at every later reload
    let still = r.reload();
    assert!(still.refused.is_empty(), "{:?}", still.refused);

    replace(&file, &hotkey("three", "0.3"));
    let fixed = r.reload();
    status.record(&fixed);
    assert!(fixed.refused.is_empty(), "{:?}", fixed.refused);
    assert_eq!(fixed.applied, vec![file.clone()]);
    assert_eq!(stage(&fixed), "three");
    assert!(!status.outstanding.contains_key(&file), "a fixed file clears its refusal");
    assert_eq!((status.reloads, status.applied, status.refused), (3, 2, 1));
}

#[test]
fn a_deleted_hotkey_stops_serving_and_a_new_one_starts() {
    let (mut r, dir) = reloader("delete");
    assert!(r.reload().hotkeys.contains_key("live"));
    std::fs::write(dir.0.join("other.toml"), hotkey("new", "0.3").replace("name = \"live\"", "name = \"other\""))
        .expect("write");
    std::fs::remove_file(dir.0.join("live.toml")).expect("remove");
    let snap = r.reload();
    assert!(snap.refused.is_empty(), "{:?}", snap.refused);
    assert!(!snap.hotkeys.contains_key("live"), "a deleted file stops serving");
    assert!(snap.hotkeys.contains_key("other"), "a new file serves");
    assert!(snap.applied.contains(&dir.0.join("live.toml")) && snap.applied.contains(&dir.0.join("other.toml")));
}

#[test]
fn reasons_are_one_line() {
    let wasm = "failed to compile component\n\nCaused by:\n    0: wasm backtrace:\n           0:  0x1a2 - <unknown>!f\n    1: unreachable";
    let r = super::one_line(wasm);
    assert!(!r.contains('\n'), "{r}");
    assert_eq!(
        r,
        "failed to compile component | Caused by: | 0: wasm backtrace: | 0: 0x1a2 - <unknown>!f | 1: unreachable"
    );
}

/// The outside suite's finding: `models.toml` deleted, then restored to the same bytes, stayed
/// listed as refused.
#[test]
fn a_registry_deleted_and_restored_is_no_longer_refused() {
    let (mut r, dir) = reloader("registry-restored");
    let mut status = ReloadStatus::default();
    let first = r.reload();
    status.record(&first);
    let reg = dir.0.join("models.toml");
    let text = std::fs::read_to_string(&reg).expect("registry");
    std::fs::remove_file(&reg).expect("delete");
    let gone = r.reload();
    status.record(&gone);
    assert!(status.outstanding.contains_key(&reg), "the deletion is refused: {:?}", gone.refused);
    std::fs::write(&reg, text).expect("restore");
    let back = r.reload();
    status.record(&back);
    assert!(status.outstanding.is_empty(), "{:?}", status.outstanding);
}

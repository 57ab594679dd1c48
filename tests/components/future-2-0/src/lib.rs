// A test-only fuser built against a contract this host does not implement (the `wit` folder
// beside this crate: `cascade:policy@2.0.0` here, `@1.3.0` in `future-1-3`, which includes this
// file): the host must refuse it, naming both versions.

wit_bindgen::generate!({
    path: "wit",
    world: "fuser-component",
});

use cascade::policy::types::{ComponentInfo, Error, NamedScore};
use exports::cascade::policy::fuser::Guest as Fuser;
use exports::cascade::policy::meta::Guest as Meta;

struct Component;

impl Meta for Component {
    fn info() -> ComponentInfo {
        ComponentInfo { name: env!("CARGO_PKG_NAME").into(), version: "1.0.0".into(), params_schema: "{}".into() }
    }

    fn configure(_: String) -> Result<(), String> {
        Ok(())
    }
}

impl Fuser for Component {
    fn fuse(scores: Vec<NamedScore>) -> Result<f32, Error> {
        Ok(scores.first().map_or(0.25, |s| s.score))
    }
}

export!(Component);

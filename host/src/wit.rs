//! The one place that runs `bindgen!`: Rust types and traits for `cascade:policy` (the latest
//! released version; `wit/v1.0.0` stays frozen beside it). Every other
//! module imports from here. Host imports are trappable: the outer `wasmtime::Result` is a host
//! bug (it traps the guest), the inner `Result<_, Error>` is the guest's answer.

wasmtime::component::bindgen!({
    path: "../wit/v1.1.0",
    world: "host",
    with: {
        "cascade:policy/types.image": crate::runtime::request::ImageRef,
    },
    imports: { default: trappable },
});

pub use cascade::policy::primitives::{Call, Outcome};
pub use cascade::policy::types::{
    Bbox, Classification, ComponentInfo, Detection, Error, LabelScore, NamedScore, TextLine,
};
pub use exports::cascade::policy::router::{Decision, RequestMeta};

/// The contract version this host implements. Components built for any earlier 1.x work
/// unchanged: released versions only ever add imports, and the linker resolves a 1.0.0
/// import name to the 1.1.0 definition (semver-compatible names).
pub const CONTRACT: &str = "1.1.0";

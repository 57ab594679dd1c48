//! The one place that runs `bindgen!`: Rust types and traits for `cascade:policy` (the latest
//! released version; `wit/v1.0.0` stays frozen beside it). Every other
//! module imports from here. Host imports are trappable: the outer `wasmtime::Result` is a host
//! bug (it traps the guest), the inner `Result<_, Error>` is the guest's answer. Components
//! are called async (runtime/pool.rs): a policy runs on the request's own task.

pub mod image;

wasmtime::component::bindgen!({
    path: "../wit/v1.2.0",
    world: "host",
    with: {
        "cascade:policy/types.image": crate::wit::image::ImageRef,
    },
    // a model call or another role's call waits: those imports are async, so the waiting
    // policy yields its worker thread instead of blocking it; every export is called async
    imports: {
        "cascade:policy/primitives": async | trappable,
        "cascade:policy/roles": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});

pub use cascade::policy::primitives::{Call, Outcome};
pub use cascade::policy::types::{
    Answer, Bbox, Classification, ComponentInfo, Detection, Error, LabelScore, NamedScore, ScoreSource, TextLine,
};
pub use exports::cascade::policy::router::{Decision, RequestMeta};

/// The contract version this host implements. Components built for any earlier 1.x work
/// unchanged: released versions only ever add imports, and the linker resolves a 1.0.0
/// import name to the 1.2.0 definition (semver-compatible names).
pub(crate) const CONTRACT: &str = "1.2.0";

/// How a primitive's error reads in traces, logs and fallback reasons. `bindgen!` already
/// derives `Display` for a WIT error type (as its `Debug` form), so the prose lives here; the
/// guest sees the variant itself.
impl Error {
    pub fn message(&self) -> String {
        match self {
            Error::UnknownModel(m) => format!("unknown model {m}"),
            Error::WrongKind(m) => m.clone(),
            Error::Engine(m) => format!("engine: {m}"),
            Error::DeadlineExceeded => "deadline exceeded".into(),
            Error::InvalidArgument(m) => format!("invalid argument: {m}"),
            Error::UnboundRole(r) => format!("no {r} bound"),
            Error::Component(m) => format!("component: {m}"),
        }
    }
}

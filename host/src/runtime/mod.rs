//! The wasmtime component runtime: one engine (pooling allocator, fuel, epoch interruption),
//! one linker with the host's imports, components compiled once and instantiated from
//! `InstancePre`, warm instances pooled per bound role.

mod block;
pub mod cache;
pub mod calls;
pub mod engine;
mod host;
pub mod plugin;
pub mod pool;
pub mod request;
mod store;
mod wasi;

pub use block::block_on;
pub use engine::{Runtime, RuntimeConfig};
pub use plugin::{Plugin, PluginError, Role};
pub use pool::{Bound, CallError, Limits, RoleSet};
pub use store::StoreState;

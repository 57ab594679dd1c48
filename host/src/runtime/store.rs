//! What each `Store` carries: the resource table, memory limits, and while a call runs, the
//! request it serves and the roles it may reach.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use super::request::RequestCtx;
use super::wasi::Captured;
use crate::wit::image::ImageRef;
use crate::wit::{Error, NamedScore, TextLine};

/// A role's answer, awaited by the router's call (the role is another component's call).
pub type RoleCall<'a, T> = Pin<Box<dyn Future<Output = Option<Result<T, Error>>> + Send + 'a>>;

/// The other roles a router reaches through the host while its call runs. The pool's
/// `RoleSet` implements it; a store only carries one, so that it does not depend on the pool
/// that keeps it. `None`: no such role is bound for the hotkey.
pub trait Roles: Send + Sync {
    fn score_text<'a>(&'a self, ctx: &'a Arc<RequestCtx>, lines: Vec<TextLine>) -> RoleCall<'a, Option<f32>>;
    fn fuse<'a>(&'a self, ctx: &'a Arc<RequestCtx>, scores: &'a [NamedScore]) -> RoleCall<'a, f32>;
}

pub struct StoreState {
    pub table: ResourceTable,
    pub limits: MemoryCap,
    pub ctx: Option<Arc<RequestCtx>>,
    pub roles: Option<Arc<dyn Roles>>,
    /// When the running call's time is up: the epoch callback traps past it (engine.rs).
    pub ends: Instant,
    /// Handles made during the current call; whatever the guest leaks is freed after it.
    pub created: Vec<u32>,
    /// WASI without capabilities, for guests that import it (runtime/wasi.rs).
    wasi: wasmtime_wasi::WasiCtx,
    /// What the guest printed (stdout and stderr), read after a failed call.
    pub output: Captured,
}

impl wasmtime_wasi::WasiView for StoreState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl StoreState {
    pub fn new(table: ResourceTable, max_memory: usize) -> StoreState {
        let limits = MemoryCap {
            inner: StoreLimitsBuilder::new().memory_size(max_memory).trap_on_grow_failure(true).build(),
            denied: false,
            bytes: 0,
        };
        let output = Captured::default();
        let wasi = super::wasi::context(&output);
        StoreState { table, limits, ctx: None, roles: None, ends: Instant::now(), created: Vec::new(), wasi, output }
    }

    /// Whether a memory or table grow was refused since the last call began: a trap that
    /// follows is the memory cap's, told by the limiter itself rather than by an error text.
    pub(crate) fn hit_memory_cap(&self) -> bool {
        self.limits.denied
    }

    /// Frees the handles made during a call and forgets the request.
    pub(crate) fn end_call(&mut self) {
        for rep in self.created.drain(..) {
            let _ = self.table.delete(Resource::<ImageRef>::new_own(rep));
        }
        self.ctx = None;
        self.roles = None;
    }
}

/// wasmtime's own limits, plus a record of whether they refused a grow and of the linear
/// memory the instance holds.
pub struct MemoryCap {
    inner: StoreLimits,
    denied: bool,
    bytes: usize,
}

impl MemoryCap {
    /// Clears the record before a call.
    pub(crate) fn reset(&mut self) {
        self.denied = false;
    }

    /// Linear memory granted to the store's instances so far (their creation included).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let r = self.inner.memory_growing(current, desired, maximum);
        match r {
            Ok(true) => self.bytes += desired.saturating_sub(current),
            _ => self.denied = true,
        }
        r
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let r = self.inner.table_growing(current, desired, maximum);
        self.denied |= !matches!(r, Ok(true));
        r
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

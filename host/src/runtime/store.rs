//! What each `Store` carries: the resource table, memory limits, and while a call runs, the
//! request it serves and the roles it may reach.

use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};

use super::pool::RoleSet;
use super::request::{ImageRef, RequestCtx};

pub struct StoreState {
    pub table: ResourceTable,
    pub limits: StoreLimits,
    pub ctx: Option<Arc<RequestCtx>>,
    pub roles: Option<Arc<RoleSet>>,
    /// Handles made during the current call; whatever the guest leaks is freed after it.
    pub created: Vec<u32>,
}

impl StoreState {
    pub fn new(table: ResourceTable, max_memory: usize) -> StoreState {
        let limits = StoreLimitsBuilder::new().memory_size(max_memory).trap_on_grow_failure(true).build();
        StoreState { table, limits, ctx: None, roles: None, created: Vec::new() }
    }

    /// Frees the handles made during a call and forgets the request.
    pub fn end_call(&mut self) {
        for rep in self.created.drain(..) {
            let _ = self.table.delete(Resource::<ImageRef>::new_own(rep));
        }
        self.ctx = None;
        self.roles = None;
    }
}

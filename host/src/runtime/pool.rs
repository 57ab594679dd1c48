//! A component bound to a role of a hotkey with its parameters: warm, configured instances
//! are pooled and reused; each call gets fresh fuel and a wall-clock end. A trapped instance
//! is never entered again: it is dropped and the pool makes a new one when needed. Calls are
//! async: the server awaits a policy on the request's own task, and a policy yields that thread
//! while it waits for a model and at every epoch tick while it computes (engine.rs), so no
//! policy holds a worker thread; `block.rs` waits for them where the caller is not async.

use std::sync::Arc;
use std::time::Duration;

use cascade_engines::Image;
use parking_lot::Mutex;
use wasmtime::{Store, Trap};

use super::block::block_on;
use super::engine::{start_call, Runtime, SETUP_FUEL, SETUP_TIME};
use super::plugin::{Plugin, RoleIndices};
use super::request::RequestCtx;
use super::store::{RoleCall, Roles, StoreState};
use crate::wit::exports::cascade::policy::{fuser, router, text_scorer};
use crate::wit::{Decision, Error, NamedScore, RequestMeta, TextLine};

/// Instances are replaced after this many calls, which bounds any slow leak inside a guest.
const MAX_USES: u32 = 10_000;
/// Warm instances kept per bound component, at most: small (Rust) instances up to `MAX_WARM`,
/// large ones (a Python interpreter, a JavaScript engine: tens of MB each) as many as fit in
/// `WARM_MEMORY`, but never fewer than `MIN_WARM`. More concurrent calls than that still run,
/// on instances made for them and dropped after, within the engine's instance limit.
const MAX_WARM: usize = 64;
const MIN_WARM: usize = 2;
const WARM_MEMORY: usize = 256 << 20;

/// Per-call limits of a bound component.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Fuel for one call (about one unit per Wasm instruction).
    pub fuel: u64,
    /// Wall-clock time of one call, also capped by the request's deadline.
    pub time: Duration,
}

/// The other roles bound for the same hotkey, reachable from a router.
#[derive(Default)]
pub struct RoleSet {
    pub text_scorer: Option<Arc<Bound>>,
    pub fuser: Option<Arc<Bound>>,
}

impl Roles for RoleSet {
    fn score_text<'a>(&'a self, ctx: &'a Arc<RequestCtx>, lines: Vec<TextLine>) -> RoleCall<'a, Option<f32>> {
        Box::pin(async move {
            match &self.text_scorer {
                Some(b) => Some(b.score_text(ctx, lines).await),
                None => None,
            }
        })
    }

    fn fuse<'a>(&'a self, ctx: &'a Arc<RequestCtx>, scores: &'a [NamedScore]) -> RoleCall<'a, f32> {
        Box::pin(async move {
            match &self.fuser {
                Some(b) => Some(b.fuse(ctx, scores).await),
                None => None,
            }
        })
    }
}

/// Why a call into a component produced no answer. Each is a counted event.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("ran out of fuel")]
    Fuel,
    #[error("exceeded its time limit")]
    Deadline,
    #[error("exceeded its memory limit: {0}")]
    Memory(String),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("cannot be instantiated: {0}")]
    Instantiate(String),
    #[error("refused its parameters: {0}")]
    Configure(String),
}

impl CallError {
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Fuel => "fuel",
            CallError::Deadline => "deadline",
            CallError::Memory(_) => "memory",
            CallError::Trap(_) => "trap",
            CallError::Instantiate(_) => "instantiate",
            CallError::Configure(_) => "configure",
        }
    }

    /// Classifies a failed call in `state`'s store; a trap carries what the guest printed last
    /// (a JavaScript engine prints the uncaught exception before it traps).
    fn failed(e: wasmtime::Error, state: &StoreState) -> CallError {
        let printed = state.output.take_line(300);
        match CallError::from_wasm(e, state.hit_memory_cap()) {
            CallError::Trap(t) if !printed.is_empty() => CallError::Trap(format!("{t} (it printed: {printed})")),
            other => other,
        }
    }

    /// Classifies a failed call; `memory_capped` is the store's limiter's own record that it
    /// refused a grow during the call.
    fn from_wasm(e: wasmtime::Error, memory_capped: bool) -> CallError {
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => CallError::Fuel,
            Some(Trap::Interrupt) => CallError::Deadline,
            _ if memory_capped => CallError::Memory(format!("{e:#}")),
            _ => CallError::Trap(format!("{e:#}")),
        }
    }
}

enum Exports {
    Router(router::Guest),
    TextScorer(text_scorer::Guest),
    Fuser(fuser::Guest),
}

struct Warm {
    store: Store<StoreState>,
    exports: Exports,
    uses: u32,
}

pub struct Bound {
    pub plugin: Arc<Plugin>,
    pub hotkey: String,
    pub params: String,
    pub limits: Limits,
    runtime: Arc<Runtime>,
    warm: Mutex<Vec<Warm>>,
    /// Linear memory of one configured instance (the first one made), and the warm-pool size
    /// it allows.
    instance_bytes: usize,
    max_warm: usize,
}

impl Bound {
    /// Binds `plugin` with `params` (JSON, already checked against its schema): one instance
    /// is made and configured now, so a component that refuses its parameters is refused here.
    /// Blocks this thread for it (block.rs).
    pub fn new(
        runtime: Arc<Runtime>,
        plugin: Arc<Plugin>,
        hotkey: &str,
        params: String,
        limits: Limits,
    ) -> Result<Bound, CallError> {
        let mut b = Bound {
            plugin,
            hotkey: hotkey.to_string(),
            params,
            limits,
            runtime,
            warm: Mutex::new(Vec::new()),
            instance_bytes: 0,
            max_warm: MAX_WARM,
        };
        let w = block_on(b.instantiate())?;
        b.instance_bytes = w.store.data().limits.bytes();
        b.max_warm = warm_limit(b.instance_bytes);
        b.warm.lock().push(w);
        Ok(b)
    }

    async fn instantiate(&self) -> Result<Warm, CallError> {
        let inst = |e: wasmtime::Error| CallError::Instantiate(format!("{e:#}"));
        let mut store = self.runtime.new_store();
        store.set_fuel(SETUP_FUEL).map_err(inst)?;
        start_call(&mut store, SETUP_TIME);
        let instance = match self.plugin.pre.instantiate_async(&mut store).await {
            Ok(i) => i,
            Err(e) => return Err(CallError::failed(e, store.data())),
        };
        let meta = self.plugin.meta.load(&mut store, &instance).map_err(inst)?;
        match meta.call_configure(&mut store, &self.params).await {
            Ok(r) => r.map_err(CallError::Configure)?,
            Err(e) => return Err(CallError::failed(e, store.data())),
        }
        let _ = store.data().output.take();
        let exports = match &self.plugin.indices {
            RoleIndices::Router(i) => Exports::Router(i.load(&mut store, &instance).map_err(inst)?),
            RoleIndices::TextScorer(i) => Exports::TextScorer(i.load(&mut store, &instance).map_err(inst)?),
            RoleIndices::Fuser(i) => Exports::Fuser(i.load(&mut store, &instance).map_err(inst)?),
        };
        Ok(Warm { store, exports, uses: 0 })
    }

    /// A warm instance (or a new one) set up for a call of `ctx`: fresh fuel, the call's end
    /// (its time limit, capped by the request's deadline), the request and the roles it reaches.
    async fn take(&self, ctx: &Arc<RequestCtx>, roles: Option<Arc<RoleSet>>) -> Result<Warm, CallError> {
        let popped = self.warm.lock().pop();
        let mut w = match popped {
            Some(w) => w,
            None => self.instantiate().await?,
        };
        w.store.set_fuel(self.limits.fuel).map_err(|e| CallError::Instantiate(e.to_string()))?;
        start_call(&mut w.store, self.limits.time.min(ctx.remaining()));
        let state = w.store.data_mut();
        state.limits.reset();
        state.ctx = Some(ctx.clone());
        state.roles = roles.map(|r| r as Arc<dyn Roles>);
        Ok(w)
    }

    /// Ends a call made on `w`: the instance goes back to the pool unless the call trapped.
    fn give_back<R>(&self, mut w: Warm, r: wasmtime::Result<R>) -> Result<R, CallError> {
        w.store.data_mut().end_call();
        if r.is_ok() {
            // what the guest printed (a Python or JavaScript policy's print): logged, never kept
            let printed = w.store.data().output.take_line(1000);
            if !printed.is_empty() {
                tracing::debug!(hotkey = %self.hotkey, component = %self.plugin.name, output = %printed, "component printed");
            }
        }
        match r {
            Ok(v) => {
                w.uses += 1;
                let mut pool = self.warm.lock();
                if w.uses < MAX_USES && pool.len() < self.max_warm {
                    pool.push(w);
                }
                Ok(v)
            }
            Err(e) => Err(CallError::failed(e, w.store.data())),
        }
    }

    /// A router's decision on `image`; the outer error is the component's failure.
    pub async fn decide(
        &self,
        ctx: &Arc<RequestCtx>,
        roles: Arc<RoleSet>,
        image: Image,
        budget: Duration,
    ) -> Result<Result<Decision, Error>, CallError> {
        let meta =
            RequestMeta { hotkey: ctx.hotkey.clone(), budget_ms: budget.as_millis().min(u32::MAX as u128) as u32 };
        let mut w = self.take(ctx, Some(roles)).await?;
        let r = match &w.exports {
            Exports::Router(g) => {
                let img = ctx.image(image);
                match w.store.data_mut().table.push(img) {
                    Ok(res) => {
                        w.store.data_mut().created.push(res.rep());
                        g.call_decide(&mut w.store, res, &meta).await
                    }
                    Err(e) => Err(e.into()),
                }
            }
            _ => Err(wasmtime::format_err!("{} is not a router", self.plugin.name)),
        };
        self.give_back(w, r)
    }

    /// `decide`, for a caller that is not async (block.rs).
    pub fn decide_blocking(
        &self,
        ctx: &Arc<RequestCtx>,
        roles: Arc<RoleSet>,
        image: Image,
        budget: Duration,
    ) -> Result<Result<Decision, Error>, CallError> {
        block_on(self.decide(ctx, roles, image, budget))
    }

    /// The text scorer, as a router sees it: a failure becomes the `component` error.
    pub(crate) async fn score_text(&self, ctx: &Arc<RequestCtx>, lines: Vec<TextLine>) -> Result<Option<f32>, Error> {
        let r = async {
            let mut w = self.take(ctx, None).await?;
            let r = match &w.exports {
                Exports::TextScorer(g) => g.call_score_text(&mut w.store, &lines).await,
                _ => Err(wasmtime::format_err!("{} is not a text scorer", self.plugin.name)),
            };
            self.give_back(w, r)
        };
        self.role_result(r.await)
    }

    /// The fuser, as a router sees it: a failure becomes the `component` error.
    pub async fn fuse(&self, ctx: &Arc<RequestCtx>, scores: &[NamedScore]) -> Result<f32, Error> {
        let r = async {
            let mut w = self.take(ctx, None).await?;
            let r = match &w.exports {
                Exports::Fuser(g) => g.call_fuse(&mut w.store, scores).await,
                _ => Err(wasmtime::format_err!("{} is not a fuser", self.plugin.name)),
            };
            self.give_back(w, r)
        };
        self.role_result(r.await)
    }

    fn role_result<T>(&self, r: Result<Result<T, Error>, CallError>) -> Result<T, Error> {
        match r {
            Ok(inner) => inner,
            Err(e) => {
                crate::metrics::global().component_event(&self.hotkey, self.plugin.role.as_str(), e.kind());
                tracing::warn!(hotkey = %self.hotkey, component = %self.plugin.name, error = %e, "component failed");
                Err(Error::Component(format!("{} {e}", self.plugin.name)))
            }
        }
    }

    /// Warm instances right now (for status and tests).
    pub(crate) fn warm_instances(&self) -> usize {
        self.warm.lock().len()
    }

    /// Linear memory of one instance, and how many are kept warm at most (for status).
    pub fn instance_memory(&self) -> (usize, usize) {
        (self.instance_bytes, self.max_warm)
    }
}

/// How many warm instances of `bytes` each a bound component keeps.
fn warm_limit(bytes: usize) -> usize {
    (WARM_MEMORY / bytes.max(1)).clamp(MIN_WARM, MAX_WARM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_instances_keep_fewer_warm() {
        assert_eq!(warm_limit(1 << 20), MAX_WARM, "a 1 MB Rust instance");
        assert_eq!(warm_limit(32 << 20), 8, "a 32 MB interpreter");
        assert_eq!(warm_limit(200 << 20), MIN_WARM);
        assert_eq!(warm_limit(0), MAX_WARM);
    }
}

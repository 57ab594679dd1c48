//! The one wasmtime engine of the process (pooling allocator, fuel, epoch interruption and
//! the ticker that advances it) and the one linker with the host's imports; every component
//! is compiled and instantiated against these.

use std::time::{Duration, Instant};

use wasmtime::component::{Linker, ResourceTable, ResourceType};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};

use super::store::StoreState;
use crate::wit::image::ImageRef;

/// How often the epoch advances: a computing guest yields its thread this often (`new_store`).
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Fuel and wall-clock time for a component's set-up calls (its info, its configuration).
pub(crate) const SETUP_FUEL: u64 = 500_000_000;
pub(crate) const SETUP_TIME: Duration = Duration::from_secs(2);

/// A call's fiber stack. The guest's own frames take at most wasmtime's `max_wasm_stack`
/// (512 KiB); the rest is the host's: a model primitive may run a short CPU model on it
/// (`calls.rs`, run here), which on a worker thread had 2 MiB, so this leaves it more than that.
const CALL_STACK: usize = 4 << 20;

/// Core instances budgeted per component instance (a Python component has 14).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// Engine-wide settings (how the process runs, from flags).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Most component instances alive at once (warm pools included).
    pub max_instances: u32,
    /// Linear memory a single instance may grow to.
    pub max_memory: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { max_instances: 512, max_memory: 64 << 20 }
    }
}

pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<StoreState>,
    pub config: RuntimeConfig,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::default();
        // a component instance is several core instances: 3 for a Rust one, 4 for JavaScript,
        // 14 for Python (libc, libpython, the runtime, adapters); slots are counters, not memory
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances * 2)
            .max_memory_size(config.max_memory)
            // calls run async, each on a fiber stack of its own (runtime/pool.rs)
            .total_stacks(config.max_instances);
        let mut c = Config::new();
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .async_stack_size(CALL_STACK)
            .consume_fuel(true)
            .epoch_interruption(true)
            .wasm_component_model(true)
            .parallel_compilation(true);
        let engine = Engine::new(&c)?;
        let mut linker = Linker::new(&engine);
        crate::wit::Host_::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(&mut linker, |s| s)?;
        // `primitives` re-exports `types.image`: give the alias the same host type, or the
        // trap definitions below would invent a different resource for it.
        linker.instance(&format!("cascade:policy/primitives@{}", crate::wit::CONTRACT))?.resource(
            "image",
            ResourceType::host::<ImageRef>(),
            |_, _| Ok(()),
        )?;
        // WASI without capabilities (runtime/wasi.rs); whatever else a guest imports beyond the
        // contract, and the refused WASI calls, trap if called (plugin.rs, per component).
        super::wasi::add_to_linker(&mut linker)?;
        let ticker = engine.weak();
        std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match ticker.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
        })?;
        Ok(Runtime { engine, linker, config })
    }

    /// A store for one instance: its memory limiter, no fuel yet, and the epoch deadline's
    /// callback. A call in it is given its time by [`start_call`]; each epoch tick until then
    /// the guest yields to the executor, so a policy that computes for long never holds its
    /// thread; past it the call traps (`Trap::Interrupt`).
    pub fn new_store(&self) -> Store<StoreState> {
        let mut store = Store::new(&self.engine, StoreState::new(ResourceTable::new(), self.config.max_memory));
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().ends { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        store
    }
}

/// Gives the next call in `store` `time` of wall clock from now (see `Runtime::new_store`).
pub(crate) fn start_call(store: &mut Store<StoreState>, time: Duration) {
    store.data_mut().ends = Instant::now() + time;
    store.set_epoch_deadline(1);
}

//! The CUDA kernel of `cascade.MatMulBiasGelu` (`crate::ops`): one cuBLASLt matrix product whose
//! epilogue adds the bias and applies GELU (tanh form) while it writes the result, on the
//! stream ONNX Runtime runs the node on, so that it is captured into a CUDA graph like ONNX
//! Runtime's own kernels.
//!
//! Row-major `Y[M,N] = A[M,K]·W[K,N]` is computed as the column-major product
//! `Yᵀ[N,M] = Wᵀ[N,K]·Aᵀ[K,M]`: the same buffers, no transposes, and the bias runs along Yᵀ's
//! rows, which is what cuBLASLt's bias epilogue adds. A session's nodes share one [`Lt`]: one
//! handle, one workspace per stream (nodes on one stream run one after another, so they may
//! share it), and the chosen algorithm per shape and alignment, found once by cuBLASLt's
//! heuristic on the first run of a shape. A run never allocates once its stream has run once,
//! which CUDA graph capture needs (ONNX Runtime captures from a thread's third run on).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::mem::size_of;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublaslt::sys as lt;
use cudarc::driver::CudaContext;
use ort::operator::{ComputeContext, Kernel};

use crate::ops::{device_input, device_output, dims};

/// What a session's `MatMulBiasGelu` nodes share on one device; cuBLASLt is opened on the
/// first node's creation, not before (most models have no such node).
pub(crate) struct Lt {
    ordinal: u32,
    state: OnceLock<Result<Mutex<State>, String>>,
}

struct State {
    ctx: Arc<CudaContext>,
    handle: lt::cublasLtHandle_t,
    workspace_bytes: usize,
    /// Workspace per stream (the stream's address).
    workspaces: HashMap<usize, u64>,
    plans: HashMap<Key, Plan>,
}

// SAFETY: the cuBLASLt handle and descriptors are plain handles that cuBLASLt allows to be used
// from any thread; every use is behind `Lt`'s mutex, one thread at a time.
unsafe impl Send for State {}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    m: usize,
    k: usize,
    n: usize,
    f16: bool,
    /// Guaranteed alignment (bytes, ≤ 256) of A, W, Y and the bias.
    align: [u32; 4],
}

struct Plan {
    desc: lt::cublasLtMatmulDesc_t,
    /// W as [N,K], A as [K,M], Y as [N,M] (column-major).
    layouts: [lt::cublasLtMatrixLayout_t; 3],
    algo: lt::cublasLtMatmulAlgo_t,
}

impl Lt {
    pub(crate) fn new(ordinal: u32) -> Lt {
        Lt { ordinal, state: OnceLock::new() }
    }

    fn state(&self) -> Result<&Mutex<State>, String> {
        self.state.get_or_init(|| State::open(self.ordinal).map(Mutex::new)).as_ref().map_err(Clone::clone)
    }
}

impl State {
    fn open(ordinal: u32) -> Result<State, String> {
        let ctx = super::context(ordinal)?;
        // SAFETY: only probes whether the library can be opened.
        if !unsafe { lt::is_culib_present() } {
            return Err("cuBLASLt (libcublasLt.so) is not installed; add the CUDA libraries to LD_LIBRARY_PATH".into());
        }
        let (major, _) = ctx.compute_capability().map_err(|e| format!("compute capability: {e}"))?;
        ctx.bind_to_thread().map_err(|e| format!("context: {e}"))?;
        let handle = cudarc::cublaslt::result::create_handle().map_err(|e| format!("cuBLASLt: {e}"))?;
        // NVIDIA's advice for cuBLASLt's workspace: 32 MiB on Hopper and later, 4 MiB before
        let workspace_bytes = if major >= 9 { 32 << 20 } else { 4 << 20 };
        Ok(State { ctx, handle, workspace_bytes, workspaces: HashMap::new(), plans: HashMap::new() })
    }

    fn workspace(&mut self, stream: usize) -> Result<u64, String> {
        if let Some(&w) = self.workspaces.get(&stream) {
            return Ok(w);
        }
        self.ctx.bind_to_thread().map_err(|e| e.to_string())?;
        // SAFETY: a plain device allocation in the bound (primary) context, freed in `Drop`.
        let w = unsafe { cudarc::driver::result::malloc_sync(self.workspace_bytes) }
            .map_err(|e| format!("cuBLASLt workspace ({} MiB): {e}", self.workspace_bytes >> 20))?;
        self.workspaces.insert(stream, w);
        Ok(w)
    }

    fn plan(&mut self, key: Key) -> Result<&Plan, String> {
        Ok(match self.plans.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Plan::new(self.handle, key, self.workspace_bytes)?),
        })
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.plans.clear();
        let _ = self.ctx.bind_to_thread();
        for &w in self.workspaces.values() {
            // SAFETY: allocated by `workspace` in this context; the sessions whose streams used it
            // are gone (this state lives as long as their operator domain).
            let _ = unsafe { cudarc::driver::result::free_sync(w) };
        }
        // SAFETY: created in `open`; no plan refers to it any more.
        let _ = unsafe { cudarc::cublaslt::result::destroy_handle(self.handle) };
    }
}

fn check(what: &str, status: lt::cublasStatus_t) -> Result<(), String> {
    match status {
        lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS => Ok(()),
        s => Err(format!("cuBLASLt {what}: {s:?}")),
    }
}

impl Plan {
    /// Describes the product for `key` and asks cuBLASLt's heuristic for its fastest algorithm;
    /// what a failure half way made is freed by `Drop`.
    fn new(handle: lt::cublasLtHandle_t, key: Key, workspace_bytes: usize) -> Result<Plan, String> {
        let ty = if key.f16 { lt::cudaDataType::CUDA_R_16F } else { lt::cudaDataType::CUDA_R_32F };
        let (m, k, n) = (key.m as u64, key.k as u64, key.n as u64);
        let mut plan = Plan {
            desc: std::ptr::null_mut(),
            layouts: [std::ptr::null_mut(); 3],
            // SAFETY: a plain C struct of integers, filled by the heuristic below.
            algo: unsafe { std::mem::zeroed() },
        };
        plan.desc = cudarc::cublaslt::result::create_matmul_desc(
            lt::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            lt::cudaDataType::CUDA_R_32F,
        )
        .map_err(|e| format!("cuBLASLt descriptor: {e}"))?;
        let epilogue = lt::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_BIAS;
        // SAFETY: `desc` is live; the value is the attribute's documented type.
        check("epilogue", unsafe {
            lt::cublasLtMatmulDescSetAttribute(
                plan.desc,
                lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
                (&epilogue as *const lt::cublasLtEpilogue_t).cast(),
                size_of::<lt::cublasLtEpilogue_t>(),
            )
        })?;
        for (i, (rows, cols)) in [(n, k), (k, m), (n, m)].into_iter().enumerate() {
            plan.layouts[i] = cudarc::cublaslt::result::create_matrix_layout(ty, rows, cols, rows as i64)
                .map_err(|e| format!("cuBLASLt layout: {e}"))?;
        }
        let pref =
            Pref(cudarc::cublaslt::result::create_matmul_pref().map_err(|e| format!("cuBLASLt preference: {e}"))?);
        use lt::cublasLtMatmulPreferenceAttributes_t as P;
        let set64 = |attr: P, v: u64| {
            // SAFETY: `pref` is live; the workspace size is a size_t (cuBLASLt's documentation).
            unsafe { lt::cublasLtMatmulPreferenceSetAttribute(pref.0, attr, (&v as *const u64).cast(), 8) }
        };
        let set32 = |attr: P, v: u32| {
            // SAFETY: `pref` is live; the alignments are uint32 (cuBLASLt's documentation).
            unsafe { lt::cublasLtMatmulPreferenceSetAttribute(pref.0, attr, (&v as *const u32).cast(), 4) }
        };
        check("workspace", set64(P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, workspace_bytes as u64))?;
        // cuBLASLt's A is W, its B is A (see the module doc)
        let [a, w, y, _] = key.align;
        check("alignment", set32(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, w))?;
        check("alignment", set32(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, a))?;
        check("alignment", set32(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, y))?;
        check("alignment", set32(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, y))?;
        let [wl, al, yl] = plan.layouts;
        // SAFETY: every descriptor is live and matches the product's operands.
        plan.algo =
            unsafe { cudarc::cublaslt::result::get_matmul_algo_heuristic(handle, plan.desc, wl, al, yl, yl, pref.0) }
                .map(|h| h.algo)
                .map_err(|e| {
                    format!("cuBLASLt found no algorithm for [{m}×{k}]·[{k}×{n}] with a GELU epilogue: {e}")
                })?;
        Ok(plan)
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        for &l in &self.layouts {
            if !l.is_null() {
                // SAFETY: created by `new`, destroyed once, here.
                let _ = unsafe { cudarc::cublaslt::result::destroy_matrix_layout(l) };
            }
        }
        if !self.desc.is_null() {
            // SAFETY: as above.
            let _ = unsafe { cudarc::cublaslt::result::destroy_matmul_desc(self.desc) };
        }
    }
}

/// A heuristic's preferences, freed when the plan's search is done.
struct Pref(lt::cublasLtMatmulPreference_t);

impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created by `Plan::new`, used by nothing else once it is dropped.
        let _ = unsafe { cudarc::cublaslt::result::destroy_matmul_pref(self.0) };
    }
}

/// The largest power of two (≤ 256) that divides `addr`.
fn alignment(addr: u64) -> u32 {
    1u32 << addr.trailing_zeros().min(8)
}

/// One node's kernel.
pub(crate) struct GemmGelu {
    lt: Arc<Lt>,
    f16: bool,
}

impl GemmGelu {
    pub(crate) fn new(lt: Arc<Lt>, f16: bool) -> Result<GemmGelu, String> {
        lt.state()?;
        Ok(GemmGelu { lt, f16 })
    }
}

impl Kernel for GemmGelu {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let (a, sa) = device_input(ctx, 0)?;
        let (w, sw) = device_input(ctx, 1)?;
        let (bias, sb) = device_input(ctx, 2)?;
        let d = dims(&sa, &sw, &sb).map_err(ort::Error::new)?;
        let y = device_output(ctx, d.out)?;
        if d.m == 0 || d.n == 0 {
            return Ok(());
        }
        let stream = ctx
            .stream()?
            .ok_or_else(|| ort::Error::new("MatMulBiasGelu: ONNX Runtime gave the CUDA kernel no stream"))?;
        let run = || -> Result<(), String> {
            let mut st = self.lt.state()?.lock().map_err(|_| "cuBLASLt state poisoned".to_string())?;
            let workspace = st.workspace(stream.as_ptr() as usize)?;
            let (handle, workspace_bytes) = (st.handle, st.workspace_bytes);
            let key = Key {
                m: d.m,
                k: d.k,
                n: d.n,
                f16: self.f16,
                align: [alignment(a), alignment(w), alignment(y), alignment(bias)],
            };
            let plan = st.plan(key)?;
            let (alpha, beta) = (1f32, 0f32);
            // SAFETY: `desc` is live and owned by this plan, used under the lock; the bias is a
            // device vector of N elements of the product's type (checked by `dims`).
            check("bias", unsafe {
                lt::cublasLtMatmulDescSetAttribute(
                    plan.desc,
                    lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    (&bias as *const u64).cast(),
                    size_of::<u64>(),
                )
            })?;
            let [wl, al, yl] = plan.layouts;
            // SAFETY: W, A, bias and Y are device buffers of ONNX Runtime's of the sizes the
            // layouts describe (`dims` checked the shapes; Y was allocated for [.., N]); the
            // workspace belongs to this stream; the stream is ONNX Runtime's for this run.
            check("matmul", unsafe {
                lt::cublasLtMatmul(
                    handle,
                    plan.desc,
                    (&alpha as *const f32).cast(),
                    w as *const _,
                    wl,
                    a as *const _,
                    al,
                    (&beta as *const f32).cast(),
                    y as *const _,
                    yl,
                    y as *mut _,
                    yl,
                    &plan.algo,
                    workspace as *mut _,
                    workspace_bytes,
                    stream.as_ptr().cast(),
                )
            })
        };
        run().map_err(|e| ort::Error::new(format!("MatMulBiasGelu on CUDA: {e}")))
    }
}

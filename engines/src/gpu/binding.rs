//! A CUDA session fed straight by the GPU pre-processing. Per batch size that runs there, and
//! per input slot, is one input tensor in the model's own type (f32 or f16), allocated by ONNX
//! Runtime's CUDA allocator (so ONNX Runtime owns it and binds it without a copy), and one
//! IoBinding of it; the kernel fills the tensor in place, and only the output, a few scores or
//! a vector per image, comes back to the host (ONNX Runtime keeps a bound output's buffer for
//! the next run, so each batch size has its own binding). One slot serves a worker that
//! prepares and runs in turn; a pipelined worker (`crate::pipeline`) prepares the next batch
//! into the second slot while the session runs the first.
//!
//! With CUDA graphs (`cuda = { graph = true }`) each (batch size, slot) is one graph, named by
//! the run option `gpu_graph_id`: ONNX Runtime captures it on an early run and replays it after,
//! so the input and the output must stay where they were at capture. The output is then bound
//! to a device tensor of its own too, and copied back into page-locked memory by a copy queued
//! on the session's stream behind the run (the stream is this crate's: `session_with_graphs`).
//! A pipelined worker's runner leaves the read-back to its finishing thread
//! ([`GpuInput::launch_prepared`]): it asks ONNX Runtime not to wait for the device
//! (`disable_synchronize_execution_providers`), queues the output's copy and an event behind the
//! run, and goes on to the next batch; the finishing thread waits for the event and reads the
//! output. ONNX Runtime 1.31's CUDA provider returns from a graph's replay without waiting for
//! it (measured on an H100: 180 µs for a ViT-B/16 batch of 64 that runs 6.3 ms), so the next
//! batch's graph is queued on the device before this one ends.
//!
//! ONNX Runtime keeps captured graphs per thread: a graph is captured on the thread that will
//! replay it, a pipelined worker's runner ([`crate::onnx::pipeline`]), at load.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaEvent, CudaStream, PinnedHostSlice};
use half::f16;
use image::RgbImage;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, RunOptions, Session};
use ort::value::{DynTensor, TensorElementType};

use super::GpuPrep;
use crate::precision::{output_f32, widen, Precision};
use crate::preprocess::Prepared;
use crate::spec::ModelSpec;

/// One CUDA graph: the device tensor its output is written to, the run options naming it (a
/// run waited for, and one only launched), and where its output lands on the host.
struct Graphed {
    out: DynTensor,
    opts: RunOptions,
    launch: RunOptions,
    landing: Arc<Mutex<Landing>>,
}

/// What the CUDA graphs of a session share: the output's type and shape (batch first), the
/// stream the session computes on; the next graph's id.
struct Graphs {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    elem: TensorElementType,
    dims: Vec<i64>,
    next_id: u32,
}

/// Where a graph's output comes back: page-locked host memory (not write-combined: the CPU
/// reads it), written by a copy queued on the session's stream behind the run, and the event
/// recorded behind that copy.
struct Landing {
    host: PinnedHostSlice<u8>,
    done: CudaEvent,
    elem: TensorElementType,
    shape: Vec<i64>,
}

impl Landing {
    fn new(ctx: &Arc<CudaContext>, elem: TensorElementType, shape: Vec<i64>) -> Result<Landing, String> {
        let n: usize = shape.iter().map(|d| *d as usize).product();
        let bytes = n * if elem == TensorElementType::Float16 { 2 } else { 4 };
        // SAFETY: uninitialised page-locked memory: only read after a copy has filled it.
        let host = unsafe { ctx.alloc_pinned_with_flags::<u8>(bytes.max(1), 0) }
            .map_err(|e| format!("page-locked memory for the output ({bytes} B): {e}"))?;
        let done = ctx.new_event(None).map_err(|e| format!("event: {e}"))?;
        Ok(Landing { host, done, elem, shape })
    }

    /// Queues the copy of `out` (the graph's output, of this landing's shape) behind the work
    /// already on `stream`, and the event behind it.
    fn queue(&mut self, stream: &CudaStream, out: &DynTensor) -> Result<(), String> {
        stream.context().bind_to_thread().map_err(|e| format!("read back: {e}"))?;
        let dst = self.host.as_mut_slice().map_err(|e| format!("read back: {e}"))?;
        let len = dst.len();
        // SAFETY: `out` is a live device tensor of `len` bytes (this landing was sized from its
        // shape and type) owned by the same `GpuInput`, and `dst` is page-locked memory that
        // nothing reads until `done` has been reached (`read`).
        unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, out.data_ptr() as u64, stream.cu_stream()) }
            .map_err(|e| format!("read back ({len} B): {e}"))?;
        self.done.record(stream).map_err(|e| format!("read back: {e}"))
    }

    /// Waits until the copy queued last is done (the run before it too).
    fn wait(&self) -> Result<(), String> {
        self.done.synchronize().map_err(|e| format!("run: {e}"))
    }

    /// The output, once `wait` has returned, widened to f32.
    fn read(&self) -> Result<(Vec<i64>, Vec<f32>), String> {
        let bytes = self.host.as_slice().map_err(|e| format!("read back: {e}"))?;
        let data = if self.elem == TensorElementType::Float16 {
            // SAFETY: every bit pattern is an f16 (a transparent u16), in the device's (and
            // every supported host's) little-endian order; the pinned buffer is page-aligned,
            // and were it not, the match's other arm reads it two bytes at a time instead.
            match unsafe { bytes.align_to::<f16>() } {
                ([], values, []) => widen(values),
                _ => bytes.chunks_exact(2).map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).collect(),
            }
        } else {
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        };
        Ok((self.shape.clone(), data))
    }
}

/// A graph's run launched and not waited for: [`Launched::land`] waits for it (on any thread)
/// and reads its output.
pub(crate) struct Launched {
    landing: Arc<Mutex<Landing>>,
    n: usize,
    rows: usize,
    slot: usize,
    prep_us: u64,
    launch_us: u64,
}

impl Launched {
    /// Waits until the run and its output's copy are done: the output's shape and values. Until
    /// this returns, the run may still read its input slot.
    pub(crate) fn land(self) -> Result<(Vec<i64>, Vec<f32>), String> {
        let t0 = Instant::now();
        let landing = self.landing.lock().unwrap_or_else(|p| p.into_inner());
        landing.wait()?;
        let t1 = Instant::now();
        let out = landing.read()?;
        if trace() {
            tracing::info!(
                n = self.n,
                rows = self.rows,
                slot = self.slot,
                prep_us = self.prep_us,
                launch_us = self.launch_us,
                wait_us = (t1 - t0).as_micros() as u64,
                read_us = t1.elapsed().as_micros() as u64,
                "gpu batch"
            );
        }
        Ok(out)
    }
}

/// What a run of a prepared slot gives: its output, or a graph's run launched (`Launched`).
pub(crate) enum SlotRun {
    Ready(Vec<i64>, Vec<f32>),
    Launched(Launched),
}

pub(crate) struct GpuInput {
    /// Per batch size (rows) and slot: the device input tensor, its binding and, with CUDA
    /// graphs, the graph's output. Declared first: fields drop in order, and the tensors must go
    /// before the allocator that made them.
    shapes: BTreeMap<(usize, usize), (DynTensor, IoBinding, Option<Graphed>)>,
    /// The pre-processing, until a pipelined worker hands it to its staging side.
    prep: Option<GpuPrep>,
    alloc: Allocator,
    precision: Precision,
    host: MemoryInfo<'static>,
    input: String,
    output: String,
    size: (usize, usize),
    graphs: Option<Graphs>,
}

/// Why a GPU run failed: the pre-processing (the batch can still run through the CPU path) or
/// the session itself.
pub(crate) enum GpuRunError {
    Prep(String),
    Run(String),
}

impl GpuRunError {
    /// What went wrong, whichever side it was.
    pub(crate) fn reason(self) -> String {
        match self {
            GpuRunError::Prep(r) | GpuRunError::Run(r) => r,
        }
    }
}

/// What a run hands back: the output's shape and values, and how each image maps back.
/// Whether `CASCADE_GPU_TRACE` asks for per-batch timings.
pub(crate) fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CASCADE_GPU_TRACE").is_some_and(|v| v != "0"))
}

pub(crate) type GpuOutput = (Vec<i64>, Vec<f32>, Vec<Prepared>);

impl GpuInput {
    pub(crate) fn new(
        session: &Session,
        device: u32,
        spec: &ModelSpec,
        precision: Precision,
        input: &str,
        output: &str,
        graph: Option<Arc<CudaStream>>,
    ) -> Result<GpuInput, String> {
        let ctx = super::context(device)?;
        super::relax_capture_mode();
        let graphs = match graph {
            Some(stream) => Some(graphs_for(session, output, ctx.clone(), stream)?),
            None => None,
        };
        let prep = GpuPrep::new(ctx, &spec.input, spec.max_batch, precision)?;
        let e = |e: ort::Error| e.to_string();
        let mem = MemoryInfo::new(AllocationDevice::CUDA, device as i32, AllocatorType::Device, MemoryType::Default)
            .map_err(e)?;
        let alloc = Allocator::new(session, mem).map_err(|x| format!("CUDA allocator: {x}"))?;
        let host = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::Default).map_err(e)?;
        Ok(GpuInput {
            prep: Some(prep),
            alloc,
            shapes: BTreeMap::new(),
            precision,
            host,
            input: input.to_string(),
            output: output.to_string(),
            size: (spec.input.height as usize, spec.input.width as usize),
            graphs,
        })
    }

    /// The device address of the `rows`-row input of `slot`, its tensor and binding made on
    /// first use (padding rows start at zero; this needs the pre-processing still here).
    pub(crate) fn input_ptr(&mut self, session: &mut Session, rows: usize, slot: usize) -> Result<u64, GpuRunError> {
        let run = |e: ort::Error| GpuRunError::Run(e.to_string());
        let (h, w) = self.size;
        let (tensor, _, _) = match self.shapes.entry((rows, slot)) {
            std::collections::btree_map::Entry::Occupied(t) => t.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let prep = self.prep.as_ref().ok_or_else(|| {
                    GpuRunError::Run(format!("no input of {rows} rows in slot {slot} was made at load"))
                })?;
                let mut t = DynTensor::new(&self.alloc, self.precision.element(), [rows, 3, h, w]).map_err(run)?;
                // padding rows are never written by the kernel: start them at zero
                prep.zero(t.data_ptr_mut() as u64, rows * 3 * h * w * self.precision.bytes())
                    .map_err(GpuRunError::Run)?;
                let mut b = session.create_binding().map_err(run)?;
                b.bind_input(self.input.as_str(), &t).map_err(run)?;
                let graphed = match &mut self.graphs {
                    Some(g) => {
                        let mut shape = g.dims.clone();
                        shape[0] = rows as i64;
                        let mut out = DynTensor::new(&self.alloc, g.elem, shape.clone()).map_err(run)?;
                        b.bind_output(self.output.as_str(), &mut out).map_err(run)?;
                        let named = || -> Result<RunOptions, ort::Error> {
                            let mut opts = RunOptions::new()?;
                            opts.set("gpu_graph_id", g.next_id.to_string())?;
                            Ok(opts)
                        };
                        let opts = named().map_err(run)?;
                        let mut launch = named().map_err(run)?;
                        launch.disable_device_sync().map_err(run)?;
                        g.next_id += 1;
                        let landing = Landing::new(&g.ctx, g.elem, shape).map_err(GpuRunError::Run)?;
                        Some(Graphed { out, opts, launch, landing: Arc::new(Mutex::new(landing)) })
                    }
                    None => {
                        b.bind_output_to_device(self.output.as_str(), &self.host).map_err(run)?;
                        None
                    }
                };
                v.insert((t, b, graphed))
            }
        };
        Ok(tensor.data_ptr_mut() as u64)
    }

    /// Prepares `images` into the device input at `ptr` (from `input_ptr`).
    pub(crate) fn prepare(&mut self, images: &[&RgbImage], ptr: u64) -> Result<Vec<Prepared>, GpuRunError> {
        let prep = self.prep.as_mut().ok_or_else(|| GpuRunError::Prep("handed to the pipeline".into()))?;
        prep.run(images, ptr).map_err(GpuRunError::Prep)
    }

    /// Whether runs replay CUDA graphs.
    pub(crate) fn graphed(&self) -> bool {
        self.graphs.is_some()
    }

    /// Runs every shape made (by `input_ptr`) in each of `slots` on the inputs they hold, three
    /// times each and waited for: ONNX Runtime's CUDA provider captures a thread's graphs after
    /// two ordinary runs on that thread (other providers count per graph), so afterwards every
    /// graph this thread replays has been captured, before any other work shares the device.
    pub(crate) fn capture(&mut self, session: &mut Session, slots: usize) -> Result<(), String> {
        let shapes: Vec<(usize, usize)> = self.shapes.keys().copied().filter(|(_, s)| *s < slots).collect();
        for (rows, slot) in shapes {
            for _ in 0..3 {
                self.run_prepared(session, rows, slot, rows, 0).map_err(GpuRunError::reason)?;
            }
        }
        Ok(())
    }

    /// Hands the pre-processing over (to a pipelined worker's staging side), once.
    pub(crate) fn take_prep(&mut self) -> Option<GpuPrep> {
        self.prep.take()
    }

    /// Prepares `images` on the device into a `rows`-row input (rows ≥ images; extra rows are
    /// padding whose outputs the caller drops) and runs the session on it.
    pub(crate) fn run(
        &mut self,
        session: &mut Session,
        images: &[&RgbImage],
        rows: usize,
    ) -> Result<GpuOutput, GpuRunError> {
        let ptr = self.input_ptr(session, rows, 0)?;
        let t0 = std::time::Instant::now();
        let prepared = self.prepare(images, ptr)?;
        let prep_us = t0.elapsed().as_micros() as u64;
        let (shape, data) = self.run_prepared(session, rows, 0, images.len(), prep_us)?;
        Ok((shape, data, prepared))
    }

    /// Runs the session on the input of `rows` rows in `slot`, already prepared (`n` images,
    /// `prep_us` to prepare them, for the trace), and waits for it: the output's shape and values.
    pub(crate) fn run_prepared(
        &mut self,
        session: &mut Session,
        rows: usize,
        slot: usize,
        n: usize,
        prep_us: u64,
    ) -> Result<(Vec<i64>, Vec<f32>), GpuRunError> {
        let run = |e: ort::Error| GpuRunError::Run(e.to_string());
        let (_, binding, graphed) = self
            .shapes
            .get(&(rows, slot))
            .ok_or_else(|| GpuRunError::Run(format!("no input of {rows} rows in slot {slot}")))?;
        let t1 = Instant::now();
        let (shape, data, t2) = match (graphed, &self.graphs) {
            (Some(g), Some(gs)) => {
                session.run_binding_with_options(binding, &g.opts).map_err(run)?;
                let t2 = Instant::now();
                let mut landing = g.landing.lock().unwrap_or_else(|p| p.into_inner());
                landing.queue(&gs.stream, &g.out).map_err(GpuRunError::Run)?;
                landing.wait().map_err(GpuRunError::Run)?;
                let (shape, data) = landing.read().map_err(GpuRunError::Run)?;
                (shape, data, t2)
            }
            _ => {
                let outputs = session.run_binding(binding).map_err(run)?;
                let t2 = Instant::now();
                let (shape, data) = output_f32(&outputs[self.output.as_str()]).map_err(run)?;
                (shape, data, t2)
            }
        };
        if trace() {
            // CASCADE_GPU_TRACE=1: where a batch's time goes, one line per batch
            tracing::info!(
                n,
                rows,
                slot,
                prep_us,
                run_us = (t2 - t1).as_micros() as u64,
                read_us = t2.elapsed().as_micros() as u64,
                "gpu batch"
            );
        }
        Ok((shape, data))
    }

    /// As [`GpuInput::run_prepared`], for an input whose writing was only queued (`written` is
    /// reached once it is there), but a CUDA graph's run is only launched, behind `written` on
    /// the session's stream, its output's copy queued behind it, and what waits for both handed
    /// back ([`SlotRun::Launched`]); without graphs the host waits for `written`, and then for
    /// the run, as there ([`SlotRun::Ready`]).
    pub(crate) fn launch_prepared(
        &mut self,
        session: &mut Session,
        rows: usize,
        slot: usize,
        n: usize,
        prep_us: u64,
        written: &CudaEvent,
    ) -> Result<SlotRun, GpuRunError> {
        let graphed = match (self.shapes.get(&(rows, slot)), &self.graphs) {
            (Some((_, binding, Some(g))), Some(gs)) => Some((binding, g, gs)),
            _ => None,
        };
        let Some((binding, g, gs)) = graphed else {
            written.synchronize().map_err(|e| GpuRunError::Prep(format!("pre-processing: {e}")))?;
            let (shape, data) = self.run_prepared(session, rows, slot, n, prep_us)?;
            return Ok(SlotRun::Ready(shape, data));
        };
        let t0 = Instant::now();
        // the lock first: the finishing thread may still be reading this landing's last output
        let mut landing = g.landing.lock().unwrap_or_else(|p| p.into_inner());
        // the graph replays on the session's stream: there, behind the input's upload and kernel
        // (the host does not wait for them), then the output's copy behind the run
        let launched = gs
            .stream
            .wait(written)
            .map_err(|e| format!("waiting for the pre-processing: {e}"))
            .and_then(|()| session.run_binding_with_options(binding, &g.launch).map(|_| ()).map_err(|e| e.to_string()))
            .and_then(|()| landing.queue(&gs.stream, &g.out));
        if let Err(reason) = launched {
            // the caller gives the slot back at once: nothing may still read it
            let _ = gs.stream.synchronize();
            return Err(GpuRunError::Run(reason));
        }
        drop(landing);
        Ok(SlotRun::Launched(Launched {
            landing: g.landing.clone(),
            n,
            rows,
            slot,
            prep_us,
            launch_us: t0.elapsed().as_micros() as u64,
        }))
    }
}

impl Drop for GpuInput {
    /// Waits for what was launched on the session's stream (a run, its output's copy) before
    /// the tensors it uses go, and the session after them.
    fn drop(&mut self) {
        if let Some(g) = &self.graphs {
            if let Err(e) = g.stream.synchronize() {
                tracing::warn!(error = %e, "the session's stream failed while its inputs were released");
            }
        }
    }
}

/// The output's type and shape for CUDA graphs: f32 or f16, every dimension but the batch fixed.
fn graphs_for(
    session: &Session,
    output: &str,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
) -> Result<Graphs, String> {
    let o = session
        .outputs()
        .iter()
        .find(|o| o.name() == output)
        .ok_or_else(|| format!("CUDA graphs: no output {output}"))?;
    let elem = o.dtype().tensor_type().ok_or_else(|| format!("CUDA graphs: output {output} is not a tensor"))?;
    if !matches!(elem, TensorElementType::Float32 | TensorElementType::Float16) {
        return Err(format!("CUDA graphs: output {output} is {elem:?}, not float32 or float16"));
    }
    let dims = o.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
    if dims.is_empty() || dims[1..].iter().any(|d| *d <= 0) {
        return Err(format!("CUDA graphs need an output of fixed shape but the batch; {output} is {dims:?}"));
    }
    Ok(Graphs { ctx, stream, elem, dims, next_id: 1 })
}

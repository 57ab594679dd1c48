//! What the engines do on an NVIDIA GPU besides ONNX Runtime's own work: pre-processing kernels
//! (`prep`) and device memory figures. Everything here goes through `cudarc` with dynamic
//! loading, and nothing is touched unless a model asks for `cuda:N`: the CPU build and CI never
//! load a CUDA library. `cudarc` panics when the driver library is absent, so [`context`] checks
//! first and turns every failure into an error.

// The kernel launch, pinned host memory and raw device pointers shared with ONNX Runtime are
// unsafe by nature; each use says why it holds.
#![allow(unsafe_code)]

mod binding;
mod gemm_gelu;
mod prep;

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

pub(crate) use binding::{trace, GpuInput, GpuRunError, SlotRun};
pub(crate) use gemm_gelu::{GemmGelu, Lt};
pub(crate) use prep::GpuPrep;

/// The primary context of device `ordinal` (the one ONNX Runtime's CUDA provider also uses),
/// or why there is none.
pub(crate) fn context(ordinal: u32) -> Result<Arc<CudaContext>, String> {
    // SAFETY: only probes whether the driver library can be opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the CUDA driver library (libcuda.so) is not installed".into());
    }
    cudarc::driver::result::init().map_err(|e| format!("cuInit: {e}"))?;
    let count = CudaContext::device_count().map_err(|e| format!("device count: {e}"))?;
    if ordinal as i32 >= count {
        return Err(format!("device cuda:{ordinal} does not exist ({count} device(s))"));
    }
    CudaContext::new(ordinal as usize).map_err(|e| format!("cuda:{ordinal}: {e}"))
}

/// A stream of device `ordinal`'s primary context for a session to compute on
/// ([`computing_on`]); non-blocking, as ONNX Runtime's own.
pub(crate) fn compute_stream(ordinal: u32) -> Result<Arc<CudaStream>, String> {
    context(ordinal)?.new_stream().map_err(|e| format!("stream: {e}"))
}

/// The CUDA provider `ep`, set to compute on `stream` (from [`compute_stream`]). The caller keeps
/// the stream until every session made with the provider is dropped.
pub(crate) fn computing_on(ep: ort::ep::CUDA, stream: &Arc<CudaStream>) -> ort::ep::CUDA {
    // SAFETY: `stream` is a live stream of the device's primary context, the one ONNX Runtime's
    // provider uses; the caller's contract keeps it alive as long as the sessions.
    unsafe { ep.with_compute_stream(stream.cu_stream() as *mut ()) }
}

/// Lets the calling thread make CUDA calls while another thread captures a CUDA graph: ONNX
/// Runtime captures in the global mode, in which a call that may synchronise (an event's wait, a
/// stream's) from any thread of the process in the default mode breaks the capture. Every thread
/// of a CUDA worker (the model's, a pipelined worker's runner and finishing threads) calls this
/// once; the mode is the thread's own. Only once the driver is known to be there (`context`).
pub(crate) fn relax_capture_mode() {
    let mut mode = cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
    // SAFETY: exchanges the calling thread's capture mode with a valid mode value.
    let r = unsafe { cudarc::driver::sys::cuThreadExchangeStreamCaptureMode(&mut mode) };
    if r != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        tracing::warn!(error = ?r, "this thread's CUDA graph capture mode could not be relaxed");
    }
}

/// Device memory in use on the context's device (total − free), in bytes.
pub(crate) fn used_bytes(ctx: &CudaContext) -> Option<u64> {
    let (free, total) = ctx.mem_get_info().ok()?;
    Some(total.saturating_sub(free) as u64)
}

/// Runs the GPU pre-processing kernel on `images` and reads the input back to the host
/// (`images.len() × 3 × H × W` values), with the time the device part took: for checking it
/// against [`crate::prepare`] and timing it on a GPU machine. Not a serving path.
pub fn prepare_on_gpu(
    device: u32,
    spec: &crate::spec::InputSpec,
    images: &[&image::RgbImage],
) -> Result<(Vec<f32>, std::time::Duration), String> {
    let ctx = context(device)?;
    let mut prep = GpuPrep::new(ctx.clone(), spec, images.len().max(1), crate::precision::Precision::F32)?;
    let stream = ctx.default_stream();
    let len = images.len() * 3 * (spec.width * spec.height) as usize;
    let out = stream.alloc_zeros::<f32>(len.max(1)).map_err(|e| format!("device memory: {e}"))?;
    let ptr = {
        use cudarc::driver::DevicePtr;
        let (p, _sync) = out.device_ptr(&stream);
        p
    };
    prep.run(images, ptr)?; // first run compiles nothing further but pages the buffers in
    let started = std::time::Instant::now();
    prep.run(images, ptr)?;
    let took = started.elapsed();
    let host = stream.clone_dtoh(&out).map_err(|e| format!("read back: {e}"))?;
    Ok((host[..len].to_vec(), took))
}

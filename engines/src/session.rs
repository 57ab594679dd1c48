//! ONNX Runtime sessions as the registry describes them: the device and its execution
//! provider, and the load-time checks of a model's inputs and outputs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cudarc::driver::CudaStream;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::spec::{ArenaExtend, AttentionKernel, ConvSearch, Device, ModelSpec};
use crate::LoadError;

pub(crate) fn session(env: &ort::environment::Environment, spec: &ModelSpec) -> Result<Session, LoadError> {
    session_for(env, spec, &spec.file)
}

pub(crate) fn session_for(
    env: &ort::environment::Environment,
    spec: &ModelSpec,
    file: &std::path::Path,
) -> Result<Session, LoadError> {
    session_on(env, spec, file).map(|(s, _)| s)
}

/// A session and the device it actually runs on (the CPU after a `cpu_fallback`).
pub(crate) fn session_on(
    env: &ort::environment::Environment,
    spec: &ModelSpec,
    file: &std::path::Path,
) -> Result<(Session, Device), LoadError> {
    build(env, spec, file, None)
}

/// `session_on` with CUDA graphs on, for an entry that asks for them (`cuda = { graph = true }`):
/// the stream the session computes on comes back too (none on the CPU, nor after a CPU
/// fallback: graphs are on exactly when there is one). It is this crate's, handed to ONNX
/// Runtime, so that a graph's run can be followed on it without waiting for it (`gpu::binding`);
/// it must outlive the session. A session ONNX Runtime refuses graphs for is an error here; the
/// worker then opens the model without them and logs why (`Worker::open`).
pub(crate) fn session_with_graphs(
    env: &ort::environment::Environment,
    spec: &ModelSpec,
    file: &std::path::Path,
) -> Result<(Session, Device, Option<Arc<CudaStream>>), LoadError> {
    let stream = match spec.device {
        Device::Cuda(id) => Some(crate::gpu::compute_stream(id).map_err(|reason| LoadError::Session {
            model: spec.name.clone(),
            file: file.to_path_buf(),
            reason: format!("CUDA graphs: {reason}"),
        })?),
        Device::Cpu => None,
    };
    let (session, on) = build(env, spec, file, stream.as_ref())?;
    let stream = stream.filter(|_| matches!(on, Device::Cuda(_)));
    Ok((session, on, stream))
}

fn build(
    env: &ort::environment::Environment,
    spec: &ModelSpec,
    file: &std::path::Path,
    graph: Option<&Arc<CudaStream>>,
) -> Result<(Session, Device), LoadError> {
    let err = |reason: String| LoadError::Session { model: spec.name.clone(), file: file.to_path_buf(), reason };
    if !file.exists() {
        return Err(LoadError::Missing { model: spec.name.clone(), file: file.to_path_buf() });
    }
    let builder = Session::builder(env)
        .map_err(|e| err(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| err(e.to_string()))?
        .with_intra_threads(spec.threads)
        .map_err(|e| err(e.to_string()))?;
    let mut on = spec.device;
    let builder = match spec.device {
        Device::Cpu => builder,
        Device::Cuda(id) => {
            // fail loudly: without `error_on_failure` ONNX Runtime quietly runs on the CPU
            // Heuristic cuDNN algorithm choice unless `conv_search` says otherwise: the exhaustive
            // search benchmarks every new input shape, and batches of varying size and OCR crops
            // of varying width are all new shapes — under load that search, not the model, was
            // the time.
            let o = &spec.cuda;
            let search = match o.conv_search {
                ConvSearch::Heuristic => ort::ep::cuda::ConvAlgorithmSearch::Heuristic,
                ConvSearch::Exhaustive => ort::ep::cuda::ConvAlgorithmSearch::Exhaustive,
            };
            let mut ep = ort::ep::CUDA::default().with_device_id(id as i32).with_conv_algorithm_search(search);
            if let Some(kernels) = &o.attention {
                ep = ep.with_attention_backend(attention_backend(kernels));
            }
            if let Some(stream) = graph {
                ep = crate::gpu::computing_on(ep.with_cuda_graph(true), stream);
            }
            if let Some(mb) = o.memory_limit_mb {
                ep = ep.with_memory_limit((mb as usize) << 20);
            }
            if o.arena_extend == ArenaExtend::SameAsRequested {
                ep = ep.with_arena_extend_strategy(ort::ep::ArenaExtendStrategy::SameAsRequested);
            }
            if let Some(max) = o.conv_max_workspace {
                ep = ep.with_conv_max_workspace(max);
            }
            if o.prefer_nhwc {
                ep = ep.with_prefer_nhwc(true);
            }
            let cuda = ep.build().error_on_failure();
            match builder.with_execution_providers([cuda]) {
                Ok(b) => b,
                Err(e) if spec.cpu_fallback => {
                    tracing::warn!(model = %spec.name, device = %spec.device, error = %e, "CUDA unavailable; running on the CPU (cpu_fallback)");
                    CPU_FALLBACKS.fetch_add(1, Ordering::Relaxed);
                    on = Device::Cpu;
                    e.recover()
                }
                Err(e) => {
                    return Err(LoadError::Spec {
                        model: spec.name.clone(),
                        reason: format!("asks for device {} but CUDA cannot be used here: {e} (set cpu_fallback = true to run on the CPU instead)", spec.device),
                    })
                }
            }
        }
    };
    // the engine's own operators (`ops`), for a model rewritten to use them
    let domain = crate::ops::domain(on).map_err(|e| err(format!("the cascade operators: {e}")))?;
    let mut builder = builder.with_operators(domain).map_err(|e| err(e.to_string()))?;
    let session = builder.commit_from_file(file).map_err(|e| err(e.to_string()))?;
    Ok((session, on))
}

/// Models that asked for CUDA and run on the CPU instead (`cpu_fallback`).
pub static CPU_FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// The static size of an output's last dimension.
pub(crate) fn output_dim(session: &Session, name: &str) -> Option<usize> {
    let o = session.outputs().iter().find(|o| o.name() == name)?;
    o.dtype().tensor_shape()?.last().filter(|d| **d > 0).map(|d| *d as usize)
}

/// Checks at load what would otherwise fail on the first request: one image input of the
/// configured size, and the output to read.
pub(crate) fn check_io(session: &Session, spec: &ModelSpec) -> Result<(String, String), LoadError> {
    let err = |reason: String| LoadError::Spec { model: spec.name.clone(), reason };
    let [input] = session.inputs() else {
        return Err(err(format!("expected one input, the model has {}", session.inputs().len())));
    };
    if let Some(shape) = input.dtype().tensor_shape() {
        let want = [3, spec.input.height as i64, spec.input.width as i64];
        if shape.len() != 4 || shape[1..].iter().zip(want).any(|(&d, w)| d > 0 && d != w) {
            return Err(err(format!(
                "expected input [N, 3, {}, {}] (the registry's size); found {} with shape {:?}",
                want[1],
                want[2],
                input.name(),
                &shape[..]
            )));
        }
        if shape[0] > 0 && (shape[0] as usize) < spec.max_batch {
            return Err(err(format!(
                "input batch dimension is fixed at {}; max_batch {} is too large",
                shape[0], spec.max_batch
            )));
        }
    }
    let output = match &spec.output {
        Some(name) => session.outputs().iter().find(|o| o.name() == name).ok_or_else(|| {
            let found: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
            err(format!("expected an output named {name}; the model has {found:?}"))
        })?,
        None => session.outputs().first().ok_or_else(|| err("the model has no output".into()))?,
    };
    Ok((input.name().to_string(), output.name().to_string()))
}

/// ONNX Runtime's `sdpa_kernel` flags for the kernels named (none named: none allowed, which
/// ONNX Runtime reads as its default choice).
fn attention_backend(kernels: &[AttentionKernel]) -> ort::ep::cuda::AttentionBackend {
    use ort::ep::cuda::AttentionBackend as B;
    kernels.iter().fold(B::none(), |all, k| {
        all | match k {
            AttentionKernel::Flash => B::FLASH_ATTENTION,
            AttentionKernel::Efficient => B::EFFICIENT_ATTENTION,
            AttentionKernel::TrtFused => B::TRT_FUSED_ATTENTION,
            AttentionKernel::CudnnFlash => B::CUDNN_FLASH_ATTENTION,
            AttentionKernel::Math => B::MATH,
        }
    })
}

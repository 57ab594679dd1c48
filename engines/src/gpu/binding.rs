//! A CUDA session fed straight by the GPU pre-processing. Per batch size that runs there, and
//! per input slot, is one input tensor in the model's own type (f32 or f16), allocated by ONNX
//! Runtime's CUDA allocator (so ONNX Runtime owns it and binds it without a copy), and one
//! IoBinding of it; the kernel fills the tensor in place, and only the output, a few scores or
//! a vector per image, comes back to the host (ONNX Runtime keeps a bound output's buffer for
//! the next run, so each batch size has its own binding). One slot serves a worker that
//! prepares and runs in turn; a pipelined worker (`crate::pipeline`) prepares the next batch
//! into the second slot while the session runs the first.

use std::collections::BTreeMap;

use image::RgbImage;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::IoBinding;
use ort::session::Session;
use ort::value::DynTensor;

use super::GpuPrep;
use crate::precision::{output_f32, Precision};
use crate::preprocess::Prepared;
use crate::spec::ModelSpec;

pub(crate) struct GpuInput {
    /// Per batch size (rows) and slot: the device input tensor and its binding. Declared first:
    /// fields drop in order, and the tensors must go before the allocator that made them.
    shapes: BTreeMap<(usize, usize), (DynTensor, IoBinding)>,
    /// The pre-processing, until a pipelined worker hands it to its staging side.
    prep: Option<GpuPrep>,
    alloc: Allocator,
    precision: Precision,
    host: MemoryInfo<'static>,
    input: String,
    output: String,
    size: (usize, usize),
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
    ) -> Result<GpuInput, String> {
        let ctx = super::context(device)?;
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
        })
    }

    /// The device address of the `rows`-row input of `slot`, its tensor and binding made on
    /// first use (padding rows start at zero; this needs the pre-processing still here).
    pub(crate) fn input_ptr(&mut self, session: &mut Session, rows: usize, slot: usize) -> Result<u64, GpuRunError> {
        let run = |e: ort::Error| GpuRunError::Run(e.to_string());
        let (h, w) = self.size;
        let (tensor, _) = match self.shapes.entry((rows, slot)) {
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
                b.bind_output_to_device(self.output.as_str(), &self.host).map_err(run)?;
                v.insert((t, b))
            }
        };
        Ok(tensor.data_ptr_mut() as u64)
    }

    /// Prepares `images` into the device input at `ptr` (from `input_ptr`).
    pub(crate) fn prepare(&mut self, images: &[&RgbImage], ptr: u64) -> Result<Vec<Prepared>, GpuRunError> {
        let prep = self.prep.as_mut().ok_or_else(|| GpuRunError::Prep("handed to the pipeline".into()))?;
        prep.run(images, ptr).map_err(GpuRunError::Prep)
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
    /// `prep_us` to prepare them, for the trace): the output's shape and values.
    pub(crate) fn run_prepared(
        &mut self,
        session: &mut Session,
        rows: usize,
        slot: usize,
        n: usize,
        prep_us: u64,
    ) -> Result<(Vec<i64>, Vec<f32>), GpuRunError> {
        let run = |e: ort::Error| GpuRunError::Run(e.to_string());
        let (_, binding) = self
            .shapes
            .get(&(rows, slot))
            .ok_or_else(|| GpuRunError::Run(format!("no input of {rows} rows in slot {slot}")))?;
        let t1 = std::time::Instant::now();
        let outputs = session.run_binding(binding).map_err(run)?;
        let t2 = std::time::Instant::now();
        let (shape, data) = output_f32(&outputs[self.output.as_str()]).map_err(run)?;
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
}

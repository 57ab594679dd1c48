//! Batched pre-processing on the GPU: decoded 8-bit RGB images are packed into pinned host
//! memory behind a small table of their geometry, uploaded piece by piece as they are packed,
//! and one kernel launch writes the whole batch (resize, crop or letterbox, colour order,
//! normalisation, NCHW) into the model's input tensor, which lives on the device and is bound
//! to the session. A pipelined worker does not wait for the upload's tail on the host: the
//! session's stream waits for the batch's event (`GpuPrep::queue`).

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtrMut, LaunchConfig, PinnedHostSlice,
    PushKernelArg,
};
use image::RgbImage;

use crate::precision::Precision;
use crate::preprocess::{affine, geometry, pad_values, Prepared};
use crate::spec::InputSpec;

const KERNEL: &str = include_str!("prep.cu");
/// Bytes of geometry per image: 8 × i64.
const ITEM: usize = 64;
/// A batch whose pixels need more staging than this is prepared on the CPU instead.
const MAX_STAGING: usize = 1 << 30;

pub(crate) struct GpuPrep {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    func: CudaFunction,
    /// Table of geometry, then the images' pixels; write-combined pinned memory.
    staging: PinnedHostSlice<u8>,
    device: CudaSlice<u8>,
    /// Byte offset of the pixels in `staging` / `device`.
    header: usize,
    spec: InputSpec,
    /// Reached once the last batch queued (`queue`) has been uploaded and written: staging is
    /// not written again before.
    pending: Option<Arc<CudaEvent>>,
}

impl GpuPrep {
    /// Compiles the kernel for the device (NVRTC), picks its entry for the model's input type, and
    /// allocates staging for `max_batch` images.
    pub(crate) fn new(
        ctx: Arc<CudaContext>,
        spec: &InputSpec,
        max_batch: usize,
        precision: Precision,
    ) -> Result<GpuPrep, String> {
        if spec.resample != crate::spec::Resample::Bilinear {
            return Err(format!("the kernel resizes bilinearly, not with resample = {:?}", spec.resample));
        }
        let (major, minor) = ctx.compute_capability().map_err(|e| format!("compute capability: {e}"))?;
        // SAFETY: only probes whether the NVRTC library can be opened.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err("NVRTC (libnvrtc.so) is not installed; add the CUDA toolkit's lib64 to LD_LIBRARY_PATH".into());
        }
        let opts = cudarc::nvrtc::CompileOptions {
            options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
            name: Some("prep.cu".into()),
            ..Default::default()
        };
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(KERNEL, opts).map_err(|e| format!("NVRTC: {e}"))?;
        let module = ctx.load_module(ptx).map_err(|e| format!("loading the kernel: {e}"))?;
        let entry = match precision {
            Precision::F32 => "prep_nchw_f32",
            Precision::F16 => "prep_nchw_f16",
        };
        let func = module.load_function(entry).map_err(|e| format!("kernel {entry}: {e}"))?;
        let stream = ctx.new_stream().map_err(|e| format!("stream: {e}"))?;
        let header = (max_batch.next_power_of_two() * ITEM).next_multiple_of(256);
        let bytes = header + max_batch * 3 * (spec.width * spec.height) as usize * 2;
        let (staging, device) = alloc(&ctx, &stream, bytes)?;
        Ok(GpuPrep { ctx, stream, func, staging, device, header, spec: spec.clone(), pending: None })
    }

    /// Writes the model input for `images` into the first `images.len()` rows of the device
    /// tensor at `out` ([rows, 3, H, W] in the precision given at `new`, at least `images.len()`
    /// rows), and waits until it is there. Returns how each image maps back, as the CPU path does.
    pub(crate) fn run(&mut self, images: &[&RgbImage], out: u64) -> Result<Vec<Prepared>, String> {
        let (prepared, written) = self.queue(images, out)?;
        written.synchronize().map_err(|e| format!("kernel: {e}"))?;
        Ok(prepared)
    }

    /// As [`GpuPrep::run`], but returns once the pixels are staged and their upload and the
    /// kernel are queued on this side's stream, with the event reached when the input is
    /// written: a run on another stream waits for it there (`CudaStream::wait`) rather than the
    /// host waiting for the upload's tail. Staging is written again only once it is reached.
    /// The caller orders every reader of `out` after the event and keeps `out` alive until it
    /// is reached (a pipelined worker's slot: given back only after its run has landed).
    pub(crate) fn queue(&mut self, images: &[&RgbImage], out: u64) -> Result<(Vec<Prepared>, Arc<CudaEvent>), String> {
        self.wait().map_err(|e| format!("the batch before: {e}"))?;
        let n = images.len();
        if n * ITEM > self.header {
            return Err(format!("batch of {n} exceeds the staging table"));
        }
        let pixels: usize = images.iter().map(|i| i.as_raw().len().next_multiple_of(16)).sum();
        let total = self.header + pixels;
        if total > MAX_STAGING {
            return Err(format!("a batch of {} MiB of pixels exceeds the GPU staging limit", pixels >> 20));
        }
        if total > self.staging.len() {
            (self.staging, self.device) = alloc(&self.ctx, &self.stream, total.next_power_of_two().min(MAX_STAGING))?;
        }
        let started = std::time::Instant::now();
        let host = self.staging.as_mut_slice().map_err(|e| format!("staging: {e}"))?;
        let mut prepared = Vec::with_capacity(n);
        let mut at = self.header;
        let mut offsets = Vec::with_capacity(n);
        for (k, img) in images.iter().enumerate() {
            let g = geometry(img.width(), img.height(), &self.spec);
            let item = [
                (at - self.header) as i64,
                img.width().max(1) as i64,
                img.height().max(1) as i64,
                g.nw as i64,
                g.nh as i64,
                g.x0 as i64,
                g.y0 as i64,
                0,
            ];
            for (f, v) in item.iter().enumerate() {
                host[k * ITEM + f * 8..k * ITEM + f * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
            prepared.push(g.prepared);
            offsets.push(at);
            at += img.as_raw().len().next_multiple_of(16);
        }
        let (base, _sync) = self.device.device_ptr_mut(&self.stream);
        let (ctx, stream) = (&self.ctx, &self.stream);
        // uploads `part` of staging (which starts `from` bytes into it) to the same offset on
        // the device, behind whatever the stream already has; from the staging threads too,
        // which need the context and, as every thread of a CUDA worker, the relaxed capture mode
        let upload = |from: usize, part: &[u8]| -> Result<(), String> {
            ctx.bind_to_thread().map_err(|e| format!("context: {e}"))?;
            super::relax_capture_mode();
            // SAFETY: `part` lies in pinned staging at offset `from`, and `base + from ..
            // + part.len()` in `device` (both are `total` bytes or more); the copy is queued on
            // the kernel's stream, behind which `queue` records the batch's event: staging is
            // written again, reallocated or freed only once that is reached (`wait`).
            unsafe { cudarc::driver::result::memcpy_htod_async(base + from as u64, part, stream.cu_stream()) }
                .map_err(|e| format!("upload: {e}"))
        };
        let (head, pixels) = host[..total].split_at_mut(self.header);
        let staged = upload(0, head)
            .and_then(|()| copy_pixels(pixels, self.header, images, &offsets, &upload, crate::parallel::pool()));
        if let Err(e) = staged {
            // the pieces already queued still read staging: let them finish before it is reused
            let _ = self.stream.synchronize();
            return Err(e);
        }
        let copied = started.elapsed();
        let (items, src) = (base, base + self.header as u64);
        let f = affine(&self.spec);
        let pad = pad_values(&self.spec);
        let (w, h, nb) = (self.spec.width as i32, self.spec.height as i32, n as i32);
        let order = f.order.map(|c| c as i32);
        let cfg = LaunchConfig {
            grid_dim: ((w as u32).div_ceil(16), (h as u32).div_ceil(16), n as u32),
            block_dim: (16, 16, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.stream.launch_builder(&self.func);
        launch.arg(&src).arg(&items).arg(&out).arg(&w).arg(&h).arg(&nb);
        for v in &f.a {
            launch.arg(v);
        }
        for v in &f.b {
            launch.arg(v);
        }
        for v in &order {
            launch.arg(v);
        }
        for v in &pad {
            launch.arg(v);
        }
        // SAFETY: the argument list matches the parameters of both entries (prep_nchw_f32/f16)
        // one for one; `src` and `items` lie inside `device`, whose uploads are queued before
        // this launch on the same stream; `out` is a device tensor of at least n × 3 × H × W
        // elements of the precision chosen at `new` that outlives the batch's event (the
        // caller's contract), and every thread writes only inside its own image's rows because
        // the grid is bounded by W, H and n.
        let launched = unsafe { launch.launch(cfg) }.map_err(|e| format!("kernel launch: {e}"));
        let written = launched.and_then(|_| {
            let e = self.ctx.new_event(None).map_err(|e| format!("event: {e}"))?;
            e.record(&self.stream).map_err(|e| format!("event: {e}"))?;
            Ok(Arc::new(e))
        });
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                // the uploads read staging until they are done
                let _ = self.stream.synchronize();
                return Err(e);
            }
        };
        self.pending = Some(written.clone());
        if super::trace() {
            tracing::info!(
                n,
                bytes = total,
                copy_us = copied.as_micros() as u64,
                prep_us = started.elapsed().as_micros() as u64,
                "gpu prep"
            );
        }
        Ok((prepared, written))
    }
}

impl Drop for GpuPrep {
    /// Waits for the last batch's upload: its pinned staging is freed with this.
    fn drop(&mut self) {
        if self.wait().is_err() {
            // the event failed: the stream's own wait is the last resort before the free
            let _ = self.stream.synchronize();
        }
    }
}

impl GpuPrep {
    /// Waits until the last batch queued has been uploaded and written (its event reached);
    /// until then it is kept, so that a failed wait leaves staging guarded.
    pub(crate) fn wait(&mut self) -> Result<(), String> {
        if let Some(last) = &self.pending {
            last.synchronize().map_err(|e| e.to_string())?;
        }
        self.pending = None;
        Ok(())
    }

    /// Sets `bytes` of device memory at `ptr` to zero, on the kernel's stream, and waits: the
    /// zeros are there before any kernel writes the tensor (a synchronous memset may return
    /// before it finishes, and the kernel's stream does not wait for the legacy stream).
    pub(crate) fn zero(&self, ptr: u64, bytes: usize) -> Result<(), String> {
        self.ctx.bind_to_thread().map_err(|e| e.to_string())?;
        // SAFETY: the caller passes a live device allocation of at least `bytes` bytes.
        unsafe { cudarc::driver::result::memset_d8_async(ptr, 0, bytes, self.stream.cu_stream()) }
            .map_err(|e| format!("memset: {e}"))?;
        self.stream.synchronize().map_err(|e| format!("memset: {e}"))
    }
}

/// Pixels copied into staging above this size are split between the host pool's threads
/// ([`crate::parallel`]): one core writes pinned (write-combined) memory at a few GB/s, which at
/// batch 64 of 224² images (9.6 MB) is a millisecond and more of the batch's staging.
const PARALLEL_COPY: usize = 4 << 20;
/// Each part hands its pixels to the upload in pieces of about this size, so that the copy of
/// one piece to the device overlaps the writing of the next, instead of the whole batch's
/// upload waiting for the last byte to be staged.
const PIECE: usize = 1 << 20;

/// Queues the upload of a piece of staging: its offset in staging, its bytes.
type Upload<'a> = dyn Fn(usize, &[u8]) -> Result<(), String> + Sync + 'a;

/// Copies each image's pixels to its offset in `dst` (`offsets` count from `base`, in order),
/// handing each piece written to `upload` (its staging offset, which counts from `base` as
/// `offsets` do, and its bytes) as soon as it is written: pieces of about [`PIECE`] bytes that
/// together cover `dst` once, padding included. With `pool`, a big batch is split into
/// contiguous runs of images, one per thread of the pool; the calling thread copies the last
/// run itself.
fn copy_pixels(
    dst: &mut [u8],
    base: usize,
    images: &[&RgbImage],
    offsets: &[usize],
    upload: &Upload<'_>,
    pool: Option<&rayon::ThreadPool>,
) -> Result<(), String> {
    let pool = pool.filter(|_| dst.len() >= PARALLEL_COPY && images.len() >= 2);
    let Some(pool) = pool else {
        return copy_run(dst, base, images, offsets, upload);
    };
    let per = images.len().div_ceil(pool.current_num_threads());
    let failed = std::sync::Mutex::new(None::<String>);
    let fail = |e: String| {
        let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(e);
    };
    let copied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.in_place_scope(|s| {
            let mut rest = dst;
            let mut first = 0;
            while first < images.len() {
                let last = (first + per).min(images.len());
                let start = offsets[first];
                let len = offsets.get(last).map_or(rest.len(), |next| next - start);
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut(len);
                rest = tail;
                let (imgs, offs) = (&images[first..last], &offsets[first..last]);
                let fail = &fail;
                let mut job = move || {
                    if let Err(e) = copy_run(mine, start, imgs, offs, upload) {
                        fail(e);
                    }
                };
                if last == images.len() {
                    // the last run on this thread, which waits for the others anyway
                    job();
                } else {
                    s.spawn(move |_| job());
                }
                first = last;
            }
        })
    }));
    if copied.is_err() {
        return Err("a staging thread panicked".into());
    }
    failed.into_inner().unwrap_or_else(|p| p.into_inner()).map_or(Ok(()), Err)
}

/// One run of images into `part` (which starts at staging offset `start`), uploading every
/// [`PIECE`] bytes and at the end.
fn copy_run(
    part: &mut [u8],
    start: usize,
    imgs: &[&RgbImage],
    offs: &[usize],
    upload: &Upload<'_>,
) -> Result<(), String> {
    let mut sent = 0; // bytes of `part` uploaded
    for (i, (img, &o)) in imgs.iter().zip(offs).enumerate() {
        let raw = img.as_raw();
        part[o - start..o - start + raw.len()].copy_from_slice(raw);
        let end = offs.get(i + 1).map_or(part.len(), |next| next - start);
        if end - sent >= PIECE || i + 1 == imgs.len() {
            upload(start + sent, &part[sent..end])?;
            sent = end;
        }
    }
    Ok(())
}

fn alloc(
    ctx: &Arc<CudaContext>,
    stream: &Arc<CudaStream>,
    bytes: usize,
) -> Result<(PinnedHostSlice<u8>, CudaSlice<u8>), String> {
    // SAFETY: uninitialised pinned memory: `run` writes the staging buffer before it is copied
    // to the device, and nothing else reads it.
    let staging =
        unsafe { ctx.alloc_pinned::<u8>(bytes) }.map_err(|e| format!("pinned host memory ({bytes} B): {e}"))?;
    // SAFETY: uninitialised device memory: the upload writes it before the kernel reads it.
    let device = unsafe { stream.alloc::<u8>(bytes) }.map_err(|e| format!("device memory ({bytes} B): {e}"))?;
    Ok((staging, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Images of odd sizes, laid out as `run` lays them (16-byte aligned, after a header):
    /// the threaded copy writes exactly what one thread would, and nothing between images.
    #[test]
    fn pixels_are_staged_in_place_by_one_thread_or_several() {
        let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("pool");
        for ((count, side), pool) in
            [(3, 5), (64, 224), (7, 611)].into_iter().flat_map(|cs| [(cs, None), (cs, Some(&three))])
        {
            let images: Vec<RgbImage> = (0..count)
                .map(|k| RgbImage::from_fn(side + k % 3, side, |x, y| image::Rgb([k as u8, x as u8, y as u8])))
                .collect();
            let refs: Vec<&RgbImage> = images.iter().collect();
            let base = 256;
            let mut offsets = Vec::new();
            let mut at = base;
            for img in &refs {
                offsets.push(at);
                at += img.as_raw().len().next_multiple_of(16);
            }
            let mut staged = vec![0xAAu8; at - base];
            let pieces = std::sync::Mutex::new(Vec::new());
            let upload = |from: usize, part: &[u8]| -> Result<(), String> {
                pieces.lock().expect("lock").push((from, part.to_vec()));
                Ok(())
            };
            copy_pixels(&mut staged, base, &refs, &offsets, &upload, pool).expect("copy");
            let mut expected = vec![0xAAu8; at - base];
            for (img, o) in refs.iter().zip(&offsets) {
                expected[o - base..o - base + img.as_raw().len()].copy_from_slice(img.as_raw());
            }
            assert!(staged == expected, "{count} images of side {side}");
            // the pieces uploaded cover the pixels exactly once, each as it was when uploaded
            let mut pieces = pieces.into_inner().expect("lock");
            pieces.sort_by_key(|p| p.0);
            let mut next = base;
            for (from, bytes) in &pieces {
                assert_eq!(*from, next, "{count} images of side {side}: gap or overlap");
                assert!(bytes[..] == staged[from - base..from - base + bytes.len()], "piece at {from}");
                next += bytes.len();
            }
            assert_eq!(next, at, "{count} images of side {side}: the pieces end at the last image");
            if at - base >= PARALLEL_COPY && pool.is_some() {
                assert!(pieces.len() > 3, "{count} images of side {side}: {} pieces", pieces.len());
            }
            assert_eq!(at - base >= PARALLEL_COPY, side >= 224, "both paths are exercised");
        }
    }

    /// An upload that fails on any thread fails the staging with its reason, on the pool too.
    #[test]
    fn a_failed_upload_fails_the_staging() {
        let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("pool");
        let images: Vec<RgbImage> = (0..64).map(|_| RgbImage::new(224, 224)).collect();
        let refs: Vec<&RgbImage> = images.iter().collect();
        let len = images[0].as_raw().len();
        let offsets: Vec<usize> = (0..64).map(|k| k * len).collect();
        let mut staged = vec![0u8; 64 * len];
        let upload = |from: usize, _: &[u8]| -> Result<(), String> {
            if from >= 30 * len {
                Err(format!("upload at {from} refused"))
            } else {
                Ok(())
            }
        };
        for pool in [None, Some(&three)] {
            let e = copy_pixels(&mut staged, 0, &refs, &offsets, &upload, pool).expect_err("refused");
            assert!(e.starts_with("upload at ") && e.ends_with(" refused"), "{e}");
        }
    }
}

//! JPEG decoding on the GPU (nvJPEG, from the CUDA toolkit, opened at run time like the rest of
//! CUDA) against the server's CPU decoder, with a fixed number of images in flight: each round
//! hands `IN_FLIGHT` distinct JPEGs to the side at once and waits for all of them.
//!
//! - `cpu`: the server's decoder (`decode_image`: zune-jpeg through `image`) on one thread per
//!   core, fed from a queue;
//! - `nvjpeg <backend>`: one `nvjpegDecodeBatched` call for the round into device memory, for
//!   each backend nvJPEG accepts on the machine (`default`, `hybrid`, `gpu-hybrid`,
//!   `hardware`: the A100/H100-class JPEG engines); and the same with the pixels copied back to
//!   the host, which is where the server's policies read them.
//!
//! The library is looked up by name (`CASCADE_NVJPEG` names another file first). Without
//! nvJPEG (no library, or no GPU) the GPU rows say why in one line and the CPU row is
//! still printed. The first image of each GPU side is checked against the CPU decode (mean
//! absolute difference per channel value), since two correct decoders may differ by a level.

// A C library opened at run time: every call through it is unsafe; each says why it holds.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_uint, c_void};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_host::server::ingress::{decode_image, IngressLimits};
use cudarc::driver::{CudaContext, CudaStream, DevicePtr};

const NAMES: [&str; 3] = ["libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so"];
/// nvjpegOutputFormat_t: interleaved RGB, as the server's images are.
const OUTPUT_RGBI: c_int = 5;
/// nvjpegBackend_t values tried, with their names.
const BACKENDS: [(&str, c_int); 4] = [("default", 0), ("hybrid", 1), ("gpu-hybrid", 2), ("hardware", 3)];

#[repr(C)]
struct NvImage {
    channel: [*mut u8; 4],
    pitch: [usize; 4],
}

type Handle = *mut c_void;
type State = *mut c_void;

struct Api {
    create_ex: unsafe extern "C" fn(c_int, *mut c_void, *mut c_void, c_uint, *mut Handle) -> c_int,
    destroy: unsafe extern "C" fn(Handle) -> c_int,
    state_create: unsafe extern "C" fn(Handle, *mut State) -> c_int,
    state_destroy: unsafe extern "C" fn(State) -> c_int,
    info: unsafe extern "C" fn(Handle, *const u8, usize, *mut c_int, *mut c_int, *mut c_int, *mut c_int) -> c_int,
    batched_init: unsafe extern "C" fn(Handle, State, c_int, c_int, c_int) -> c_int,
    batched: unsafe extern "C" fn(Handle, State, *const *const u8, *const usize, *mut NvImage, *mut c_void) -> c_int,
    // keeps the symbols above valid
    _lib: libloading::Library,
}

impl Api {
    fn open() -> Result<Api, String> {
        let mut tried = Vec::new();
        // CASCADE_NVJPEG: a library elsewhere (e.g. the copy a torchvision wheel bundles)
        let chosen = std::env::var("CASCADE_NVJPEG").ok();
        for name in chosen.iter().map(String::as_str).chain(NAMES) {
            // SAFETY: loading nvJPEG runs its initialisers only, which have no preconditions.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => return Api::symbols(lib).map_err(|e| format!("{name}: {e}")),
                Err(e) => tried.push(format!("{name}: {e}")),
            }
        }
        Err(format!("nvJPEG not found ({})", tried.join("; ")))
    }

    fn symbols(lib: libloading::Library) -> Result<Api, libloading::Error> {
        // SAFETY: each symbol is given the signature nvjpeg.h declares for it (CUDA 12/13).
        unsafe {
            Ok(Api {
                create_ex: *lib.get(b"nvjpegCreateEx\0")?,
                destroy: *lib.get(b"nvjpegDestroy\0")?,
                state_create: *lib.get(b"nvjpegJpegStateCreate\0")?,
                state_destroy: *lib.get(b"nvjpegJpegStateDestroy\0")?,
                info: *lib.get(b"nvjpegGetImageInfo\0")?,
                batched_init: *lib.get(b"nvjpegDecodeBatchedInitialize\0")?,
                batched: *lib.get(b"nvjpegDecodeBatched\0")?,
                _lib: lib,
            })
        }
    }
}

fn check(what: &str, status: c_int) -> Result<(), String> {
    if status == 0 {
        Ok(())
    } else {
        Err(format!("{what}: nvJPEG status {status}"))
    }
}

/// One nvJPEG handle and decode state of a backend, set up for batches of `batch`.
struct Decoder<'a> {
    api: &'a Api,
    handle: Handle,
    state: State,
}

impl<'a> Decoder<'a> {
    fn new(api: &'a Api, backend: c_int, batch: usize) -> Result<Decoder<'a>, String> {
        let mut handle: Handle = std::ptr::null_mut();
        // SAFETY: null allocators select nvJPEG's own; `handle` is written on success.
        check("nvjpegCreateEx", unsafe {
            (api.create_ex)(backend, std::ptr::null_mut(), std::ptr::null_mut(), 0, &mut handle)
        })?;
        let mut d = Decoder { api, handle, state: std::ptr::null_mut() };
        // SAFETY: `handle` is live; `state` is written on success.
        check("nvjpegJpegStateCreate", unsafe { (api.state_create)(d.handle, &mut d.state) })?;
        // SAFETY: a live handle and state; one CPU thread hint (ignored by recent nvJPEG).
        check("nvjpegDecodeBatchedInitialize", unsafe {
            (api.batched_init)(d.handle, d.state, batch as c_int, 1, OUTPUT_RGBI)
        })?;
        Ok(d)
    }

    /// Width and height of a JPEG, from its header.
    fn size(&self, jpeg: &[u8]) -> Result<(usize, usize), String> {
        let (mut comps, mut sub) = (0, 0);
        let (mut w, mut h) = ([0 as c_int; 4], [0 as c_int; 4]);
        // SAFETY: `jpeg` is readable for its length; the four outputs have room for 4 components.
        check("nvjpegGetImageInfo", unsafe {
            (self.api.info)(
                self.handle,
                jpeg.as_ptr(),
                jpeg.len(),
                &mut comps,
                &mut sub,
                w.as_mut_ptr(),
                h.as_mut_ptr(),
            )
        })?;
        Ok((w[0] as usize, h[0] as usize))
    }

    /// Decodes `jpegs` into `out` (interleaved RGB, image k at `offsets[k]`) and waits.
    fn decode(
        &self,
        jpegs: &[Vec<u8>],
        sizes: &[(usize, usize)],
        out: u64,
        offsets: &[usize],
        stream: &CudaStream,
    ) -> Result<(), String> {
        let data: Vec<*const u8> = jpegs.iter().map(|j| j.as_ptr()).collect();
        let lens: Vec<usize> = jpegs.iter().map(Vec::len).collect();
        let mut images: Vec<NvImage> = sizes
            .iter()
            .zip(offsets)
            .map(|(&(w, _), &o)| NvImage {
                channel: [
                    (out + o as u64) as *mut u8,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                ],
                pitch: [w * 3, 0, 0, 0],
            })
            .collect();
        // SAFETY: `data`/`lens` describe live JPEG buffers; each destination is a device range
        // of width × 3 × height bytes inside `out` (offsets from the sizes nvJPEG reported);
        // the stream belongs to the context that is current on this thread.
        check("nvjpegDecodeBatched", unsafe {
            (self.api.batched)(
                self.handle,
                self.state,
                data.as_ptr(),
                lens.as_ptr(),
                images.as_mut_ptr(),
                stream.cu_stream() as *mut c_void,
            )
        })?;
        stream.synchronize().map_err(|e| format!("synchronize: {e}"))
    }
}

impl Drop for Decoder<'_> {
    fn drop(&mut self) {
        // SAFETY: destroyed once, state before handle, both created by this decoder.
        unsafe {
            if !self.state.is_null() {
                (self.api.state_destroy)(self.state);
            }
            (self.api.destroy)(self.handle);
        }
    }
}

/// args: JPEG_DIR [IN_FLIGHT=256] [ROUNDS=40]
pub fn main(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(!args.is_empty(), "usage: gpu-bench nvjpeg JPEG_DIR [IN_FLIGHT] [ROUNDS]");
    let in_flight: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(40);
    let mut files: Vec<_> = std::fs::read_dir(&args[0])?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg")))
        .collect();
    files.sort();
    anyhow::ensure!(files.len() >= in_flight, "{} JPEGs in {}, need {in_flight}", files.len(), args[0]);
    let jpegs: Vec<Vec<u8>> = files.iter().take(in_flight).map(std::fs::read).collect::<Result<_, _>>()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{in_flight} JPEGs in flight a round, {rounds} rounds; {cores} CPU threads");
    println!();
    println!("| side | images/s | ms per round p50 | ms per round p99 | pixels vs CPU (mean abs) |");
    println!("|------|----------|------------------|------------------|--------------------------|");
    let reference = cpu(&jpegs, cores, rounds)?;
    match gpu(&jpegs, rounds, &reference) {
        Ok(()) => {}
        Err(e) => println!("| nvjpeg | – | – | – | not measured: {e} |"),
    }
    Ok(())
}

/// One side's row: images/s from the mean round, p50 and p99 of a round in ms.
fn row(side: &str, n: usize, times: Vec<Duration>, diff: &str) {
    let s = cascade_bench::summarise(times);
    println!("| {side} | {:.0} | {:.2} | {:.2} | {diff} |", n as f64 / (s.mean / 1e6), s.p50 / 1e3, s.p99 / 1e3);
}

/// The server's decoder on `threads` threads fed from a queue; returns the decoded images.
fn cpu(jpegs: &[Vec<u8>], threads: usize, rounds: usize) -> anyhow::Result<Vec<image::RgbImage>> {
    let limits = IngressLimits::default();
    let reference: Vec<image::RgbImage> = jpegs
        .iter()
        .map(|j| decode_image(j, &limits).map_err(|r| anyhow::anyhow!("{}", r.message)))
        .collect::<Result<_, _>>()?;
    let shared: Arc<Vec<Vec<u8>>> = Arc::new(jpegs.to_vec());
    let (work, todo) = crossbeam_channel::unbounded::<usize>();
    let (done, finished) = crossbeam_channel::unbounded::<bool>();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (todo, done, shared) = (todo.clone(), done.clone(), shared.clone());
            std::thread::spawn(move || {
                for k in todo {
                    let ok = decode_image(&shared[k], &IngressLimits::default()).is_ok();
                    if done.send(ok).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    let mut times = Vec::new();
    for round in 0..rounds + 3 {
        let t = Instant::now();
        for k in 0..jpegs.len() {
            work.send(k)?;
        }
        for _ in 0..jpegs.len() {
            anyhow::ensure!(finished.recv()?, "a JPEG failed to decode");
        }
        if round >= 3 {
            times.push(t.elapsed());
        }
    }
    drop(work);
    for w in workers {
        let _ = w.join();
    }
    row(&format!("cpu, server decoder, {threads} threads"), jpegs.len(), times, "–");
    Ok(reference)
}

/// Every nvJPEG backend the machine accepts, to device memory and read back to the host.
fn gpu(jpegs: &[Vec<u8>], rounds: usize, reference: &[image::RgbImage]) -> Result<(), String> {
    let api = Api::open()?;
    // SAFETY: only probes whether the driver library can be opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("cuda:0: {e}"))?;
    let stream = ctx.new_stream().map_err(|e| format!("stream: {e}"))?;
    for (name, backend) in BACKENDS {
        let d = match Decoder::new(&api, backend, jpegs.len()) {
            Ok(d) => d,
            Err(e) => {
                println!("| nvjpeg {name} | – | – | – | backend refused: {e} |");
                continue;
            }
        };
        if let Err(e) = one_backend(&d, name, jpegs, rounds, reference, &ctx, &stream) {
            println!("| nvjpeg {name} | – | – | – | failed: {e} |");
        }
    }
    Ok(())
}

fn one_backend(
    d: &Decoder,
    name: &str,
    jpegs: &[Vec<u8>],
    rounds: usize,
    reference: &[image::RgbImage],
    ctx: &Arc<CudaContext>,
    stream: &Arc<CudaStream>,
) -> Result<(), String> {
    ctx.bind_to_thread().map_err(|e| e.to_string())?;
    let sizes: Vec<(usize, usize)> = jpegs.iter().map(|j| d.size(j)).collect::<Result<_, _>>()?;
    let mut offsets = Vec::with_capacity(sizes.len());
    let mut total = 0usize;
    for (w, h) in &sizes {
        offsets.push(total);
        total += (w * h * 3).next_multiple_of(256);
    }
    let out = stream.alloc_zeros::<u8>(total).map_err(|e| format!("device memory: {e}"))?;
    let ptr = {
        let (p, _sync) = out.device_ptr(stream);
        p
    };
    // SAFETY: pinned host memory for the read-back, written by the copy before it is read.
    let mut host = unsafe { ctx.alloc_pinned::<u8>(total) }.map_err(|e| format!("pinned memory: {e}"))?;
    let (mut on_device, mut read_back) = (Vec::new(), Vec::new());
    for round in 0..rounds + 3 {
        let t = Instant::now();
        d.decode(jpegs, &sizes, ptr, &offsets, stream)?;
        let decoded = t.elapsed();
        stream.memcpy_dtoh(&out, &mut host).map_err(|e| format!("read back: {e}"))?;
        stream.synchronize().map_err(|e| format!("read back: {e}"))?;
        if round >= 3 {
            on_device.push(decoded);
            read_back.push(t.elapsed());
        }
    }
    let px = host.as_slice().map_err(|e| e.to_string())?;
    let (w, h) = sizes[0];
    let first = &px[..w * h * 3];
    let diff = if reference[0].dimensions() == (w as u32, h as u32) {
        let sum: u64 = first.iter().zip(reference[0].as_raw()).map(|(a, b)| u64::from(a.abs_diff(*b))).sum();
        format!("{:.3}", sum as f64 / first.len() as f64)
    } else {
        format!("size differs: {w}×{h} vs {:?}", reference[0].dimensions())
    };
    row(&format!("nvjpeg {name}, to device memory"), jpegs.len(), on_device, &diff);
    row(&format!("nvjpeg {name}, read back to the host"), jpegs.len(), read_back, &diff);
    Ok(())
}

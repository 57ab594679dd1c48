//! Fuzz targets: the parsers that untrusted input reaches, each as a function of raw bytes
//! that must return (never panic, hang or allocate without bound) whatever the bytes are.
//! `fuzz/` runs them under libFuzzer (`cargo fuzz run <target>`); the unit test below runs
//! every target over the checked-in corpus and its mutations for a bounded time in
//! `make test`.

use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;

use crate::server::axon::verify::Signed;
use crate::server::ingress::{self, IngressLimits};

/// A fuzz target: any bytes in, nothing out, never a panic.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/*.rs` and the corpus folders name them.
pub const TARGETS: [(&str, Target); 5] = [
    ("request_body", request_body),
    ("image", image),
    ("axon_headers", axon_headers),
    ("config", config),
    ("log_line", log_line),
];

/// One line of a prediction log segment, as `cascade log` and `replay` read logs from
/// anywhere: parsed as a record, and where it points its kept image resolved inside the folder.
pub fn log_line(data: &[u8]) {
    if let Ok(r) = crate::predlog::format::parse_line(data) {
        if let Some(p) = r.image_path(std::path::Path::new("/log")) {
            assert!(p.starts_with("/log"), "{} leaves the log folder", p.display());
        }
        let _ = r.image.chars().take(12).count();
    }
}

/// A `/v1/predict` body: the first byte picks the content type, the rest is the body; what
/// it yields is decoded under the HTTP API's limits.
pub fn request_body(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    let ct = ["application/json", "image/jpeg", "image/png", "application/json; charset=utf-8", "text/plain"]
        [pick as usize % 5];
    if let Ok(bytes) = ingress::image_bytes(Some(ct), body) {
        let _ = ingress::decode_image(&bytes, &IngressLimits::default());
    }
}

/// Image bytes, decoded under the axon's limits and the API's.
pub fn image(data: &[u8]) {
    let l = IngressLimits::default();
    let _ = ingress::decode_image(data, &l.axon());
    let _ = ingress::decode_image(data, &l);
}

/// Synapse headers as `name: value` lines; what parses is verified as a signature.
pub fn axon_headers(data: &[u8]) {
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.trim_ascii()), HeaderValue::from_bytes(value)) {
            h.append(n, v);
        }
    }
    if let Ok(p) = crate::server::axon::parse_headers(&h) {
        let signed = Signed {
            nonce: p.nonce,
            dendrite_hotkey: &p.dendrite,
            axon_hotkey: &p.axon_hotkey,
            uuid: &p.uuid,
            body_hash: &p.body_hash,
            signature: &p.signature,
        };
        let _ = signed.verify_signature();
    }
}

/// Configuration text: a hotkey file, the chain settings, a metagraph snapshot, and component
/// parameters (as JSON) against a schema with every kind of constraint the host checks.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = crate::config::HotkeyFile::parse(text);
    let _ = crate::chain::ChainConfig::parse(text);
    let _ = crate::chain::Metagraph::parse(data, crate::chain::NETUID);
    if let Ok(params) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = crate::schema::validate(&params, &schema());
    }
}

fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["stages"],
        "properties": {
            "stages": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "classify": {"type": "array", "items": {"type": "string"}},
                    "exit_low": {"type": "number", "minimum": 0, "maximum": 1},
                    "on_error": {"enum": ["fail", "skip"]},
                    "zoom": {"type": "object", "properties": {"grid": {"type": "integer", "minimum": 1}}}
                }
            }},
            "weights": {"type": "object", "additionalProperties": {"type": "number"}}
        }
    })
}

/// Deterministic mutations of a seed (bit flips, byte changes, insertions, deletions,
/// truncations, duplicated spans, interesting values), for the in-tree run.
pub struct Mutator {
    state: u64,
}

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator { state: seed ^ 0x9E37_79B9_7F4A_7C15 }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn mutate(&mut self, seed: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(seed);
        for _ in 0..1 + self.below(4) {
            let len = out.len();
            match self.below(8) {
                0 if len > 0 => {
                    let i = self.below(len);
                    out[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    out[i] = self.next() as u8;
                }
                2 => {
                    let i = self.below(len + 1);
                    let b = [0u8, 0xFF, b'"', b'\\', b'{', b'[', b'\n', b'=', b'.', b'-', b'9'][self.below(11)];
                    out.insert(i, b);
                }
                3 if len > 0 => {
                    let i = self.below(len);
                    let n = self.below((len - i).min(16)) + 1;
                    out.drain(i..i + n);
                }
                4 => out.truncate(self.below(len + 1)),
                5 if len > 0 => {
                    let i = self.below(len);
                    let n = (self.below((len - i).min(64)) + 1).min(4096 - len.min(4096));
                    let span: Vec<u8> = out[i..i + n].to_vec();
                    let at = self.below(len + 1);
                    out.splice(at..at, span);
                }
                6 if len >= 4 => {
                    let i = self.below(len - 3);
                    let v: u32 = [0, 1, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x8000_0000, 65535, 8192][self.below(7)];
                    out[i..i + 4].copy_from_slice(&v.to_be_bytes());
                }
                _ => {
                    let i = self.below(len + 1);
                    let digits = self.next().to_string();
                    out.splice(i..i, digits.bytes());
                }
            }
        }
    }
}

/// What one input may cost in the in-tree run.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Wall time of one call.
    pub time: std::time::Duration,
    /// Bytes the calling thread holds at once during the call, above what it held before
    /// (`measure` in [`run_mutations`] says how they are counted).
    pub bytes: usize,
}

/// The figures of a run: executions, and the costliest input's time and bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub executions: u64,
    pub max_time: std::time::Duration,
    pub max_bytes: usize,
}

/// An input that went over its bounds: which one (seed `seed`, mutation `mutation` of the
/// deterministic sequence; `None` = the seed itself), and by how much.
#[derive(Debug)]
pub struct OverBound {
    pub seed: usize,
    pub mutation: Option<usize>,
    pub input: Vec<u8>,
    pub what: String,
}

/// Runs `target` over `seeds` and `per_seed` mutations of each, each call within `bounds`:
/// `measure` runs a call and returns the bytes it held at once.
pub fn run_mutations(
    target: Target,
    seeds: &[Vec<u8>],
    per_seed: usize,
    seed: u64,
    bounds: Bounds,
    measure: &dyn Fn(&mut dyn FnMut()) -> usize,
) -> Result<Stats, OverBound> {
    let mut m = Mutator::new(seed);
    let mut buf = Vec::new();
    let mut stats = Stats::default();
    for (i, s) in seeds.iter().enumerate() {
        for j in 0..=per_seed {
            let input: &[u8] = if j == 0 {
                s
            } else {
                m.mutate(s, &mut buf);
                &buf
            };
            let started = std::time::Instant::now();
            let bytes = measure(&mut || target(input));
            let took = started.elapsed();
            stats.executions += 1;
            stats.max_time = stats.max_time.max(took);
            stats.max_bytes = stats.max_bytes.max(bytes);
            if took > bounds.time || bytes > bounds.bytes {
                return Err(OverBound {
                    seed: i,
                    mutation: j.checked_sub(1),
                    input: input.to_vec(),
                    what: format!("{took:?} and {bytes} bytes (bounds {:?}, {} bytes)", bounds.time, bounds.bytes),
                });
            }
        }
    }
    Ok(stats)
}

/// The checked-in corpus of a target (`fuzz/corpus/<target>/`).
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    files.sort();
    files.into_iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

#[cfg(test)]
#[allow(unsafe_code)] // a global allocator is an unsafe trait: it forwards to the system's
mod counting {
    //! The test binary's allocator: the system's, counting the bytes each thread holds and the
    //! most it held since its last reset, so that one input's memory can be bounded while other
    //! tests run on other threads.
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static HELD: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(n: isize) {
        // `try_with`: a thread being torn down frees without counting
        let _ = HELD.try_with(|h| {
            let v = h.get() + n;
            h.set(v);
            let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
        });
    }

    pub struct Counting;

    // SAFETY: every call is forwarded to the system allocator unchanged; the counters are
    // thread-local cells with const initialisers, which never allocate.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            // SAFETY: as the caller's contract for `GlobalAlloc::alloc`.
            let p = unsafe { System.alloc(l) };
            if !p.is_null() {
                add(l.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: `p` came from `alloc` above with this layout.
            unsafe { System.dealloc(p, l) };
            add(-(l.size() as isize));
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            // SAFETY: as the caller's contract for `GlobalAlloc::realloc`.
            let q = unsafe { System.realloc(p, l, new) };
            if !q.is_null() {
                add(new as isize - l.size() as isize);
            }
            q
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// Runs `f` and returns the most bytes this thread held at once during it, above what it
    /// held when `f` started.
    pub fn peak_of(f: &mut dyn FnMut()) -> usize {
        let base = HELD.with(Cell::get);
        PEAK.with(|p| p.set(base));
        f();
        (PEAK.with(Cell::get) - base).max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one fuzz input may cost in `make test` (release build): well above what the
    /// corpus and its mutations need (the run prints the costliest input of each target: 4 ms
    /// and 255 KiB here), far below a hang or an unbounded allocation.
    const BOUNDS: Bounds = Bounds { time: std::time::Duration::from_secs(1), bytes: 64 << 20 };

    /// The fuzz smoke run of `make test`: every target over its corpus and mutations of it,
    /// each input within `BOUNDS`.
    #[test]
    fn every_target_survives_its_corpus_and_mutations() {
        for (name, target) in TARGETS {
            let seeds = corpus(name);
            assert!(!seeds.is_empty(), "fuzz/corpus/{name} is empty");
            let started = std::time::Instant::now();
            match run_mutations(target, &seeds, 3000, 7, BOUNDS, &counting::peak_of) {
                Ok(s) => eprintln!(
                    "{name}: {} executions in {:?}; costliest input {:?}, {} KiB",
                    s.executions,
                    started.elapsed(),
                    s.max_time,
                    s.max_bytes >> 10
                ),
                Err(o) => panic!(
                    "{name}: seed {} mutation {:?} ({} bytes, starting {:02x?}) took {}",
                    o.seed,
                    o.mutation,
                    o.input.len(),
                    &o.input[..o.input.len().min(32)],
                    o.what
                ),
            }
        }
    }

    /// The bounds catch what they name: an input that allocates too much, or takes too long.
    #[test]
    fn an_input_over_its_bounds_is_reported_with_its_place() {
        fn hog(data: &[u8]) {
            if data == b"!big" {
                let v = vec![1u8; 64 << 20];
                std::hint::black_box(&v);
            }
        }
        fn slow(data: &[u8]) {
            if data == b"!big" {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        }
        let seeds = vec![b"ok".to_vec(), b"!big".to_vec()];
        let tight = Bounds { time: std::time::Duration::from_secs(10), bytes: 1 << 20 };
        let o = run_mutations(hog, &seeds, 0, 1, tight, &counting::peak_of).expect_err("64 MiB over a 1 MiB bound");
        assert_eq!((o.seed, o.mutation, o.input.as_slice()), (1, None, &b"!big"[..]));
        assert!(o.what.contains("67108864 bytes"), "{}", o.what);
        let quick = Bounds { time: std::time::Duration::from_millis(100), bytes: 1 << 30 };
        let o = run_mutations(slow, &seeds, 0, 1, quick, &counting::peak_of).expect_err("300 ms over a 100 ms bound");
        assert_eq!(o.seed, 1);
        // within the bounds: the figures are reported
        let s = run_mutations(hog, &seeds[..1], 10, 1, tight, &counting::peak_of).expect("within bounds");
        assert_eq!(s.executions, 11);
    }
}

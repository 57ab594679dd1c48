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

/// Runs `target` over `seeds` and `per_seed` mutations of each; the number of executions.
pub fn run_mutations(target: Target, seeds: &[Vec<u8>], per_seed: usize, seed: u64) -> u64 {
    let mut m = Mutator::new(seed);
    let mut buf = Vec::new();
    let mut n = 0;
    for s in seeds {
        target(s);
        n += 1;
        for _ in 0..per_seed {
            m.mutate(s, &mut buf);
            target(&buf);
            n += 1;
        }
    }
    n
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
mod tests {
    use super::*;

    /// The fuzz smoke run of `make test`: every target over its corpus and mutations of it.
    #[test]
    fn every_target_survives_its_corpus_and_mutations() {
        for (name, target) in TARGETS {
            let seeds = corpus(name);
            assert!(!seeds.is_empty(), "fuzz/corpus/{name} is empty");
            let started = std::time::Instant::now();
            let n = run_mutations(target, &seeds, 3000, 7);
            eprintln!("{name}: {n} executions in {:?}", started.elapsed());
        }
    }
}

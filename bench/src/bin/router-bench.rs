//! The shipped `cascade-router` component against the same routing logic compiled natively,
//! on identical cached primitive results: what the Wasm boundary adds to one decision that
//! makes three primitive calls. The same decision by the router re-written in Python
//! (componentize-py) and JavaScript (componentize-js), built by set-up into
//! target/policy-components, with each language's costs: component size, compile time (first
//! load and from the compile cache), linear memory and resident memory per instance.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_bench::{header, row, summarise};
use cascade_engines::Models;
use cascade_host::reload::cache::CompileCache;
use cascade_host::runtime::calls;
use cascade_host::runtime::request::{CallKey, RequestCtx};
use cascade_host::runtime::{block_on, Bound, Limits, Plugin, RoleSet, Runtime, RuntimeConfig};
use cascade_host::wit::{Call, Outcome};
use serde_json::json;

const MODELS: [&str; 3] = ["m1", "m2", "m3"];
const SCORES: [f32; 3] = [0.52, 0.47, 0.61];

/// Three stages, one classify each, undecided until the last: three primitive calls.
fn params() -> serde_json::Value {
    json!({"stages": [
        {"name": "s1", "classify": ["m1"], "exit_low": 0.1, "exit_high": 0.9},
        {"name": "s2", "classify": ["m2"], "exit_low": 0.1, "exit_high": 0.9},
        {"name": "s3", "classify": ["m3"]}
    ]})
}

/// A request whose three classify results are already in the memo (image 0).
fn cached_ctx(models: &Arc<Models>) -> Arc<RequestCtx> {
    let ctx = RequestCtx::new(models.clone(), "bench", Instant::now() + Duration::from_secs(5));
    for (m, s) in MODELS.iter().zip(SCORES) {
        let key = CallKey { image: 0, primitive: "classify", model: m.to_string(), args: String::new() };
        ctx.remember(key, Ok(cascade_engines::Output::Classification { score: s, top: vec![] }));
    }
    ctx
}

/// A stage as the native router holds it, prepared once from the parameters (as the component
/// prepares its calls and evidence names at `configure`).
struct NativeStage {
    name: String,
    calls: Vec<Call>,
    lo: Option<f32>,
    hi: Option<f32>,
}

fn native_plan(p: &serde_json::Value) -> Vec<NativeStage> {
    let f = |v: &serde_json::Value| v.as_f64().map(|v| v as f32);
    p["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|st| NativeStage {
            name: st["name"].as_str().unwrap_or("").to_string(),
            calls: st["classify"]
                .as_array()
                .expect("classify")
                .iter()
                .map(|m| Call::Classify(m.as_str().unwrap_or("").into()))
                .collect(),
            lo: f(&st["exit_low"]),
            hi: f(&st["exit_high"]),
        })
        .collect()
}

/// The router's logic, natively: stages in order, each call through the same memo, the mean
/// of the evidence as the fused score (no fuser bound), exits on thresholds.
async fn native_decide(ctx: &Arc<RequestCtx>, image: cascade_engines::Image, stages: &[NativeStage]) -> (f32, String) {
    let img = ctx.image(image);
    let mut evidence: Vec<(&str, f32)> = Vec::new();
    for (i, st) in stages.iter().enumerate() {
        // as the router does: a lone call directly, several through run-all
        let results = match st.calls.as_slice() {
            [one] => vec![calls::run(ctx, &img, one).await.map(calls::to_outcome)],
            all => calls::run_all(ctx, &img, all).await,
        };
        for (c, r) in st.calls.iter().zip(results) {
            if let (Call::Classify(m), Ok(Outcome::Classify(cl))) = (c, r) {
                evidence.push((m.as_str(), cl.score));
            }
        }
        let fused = evidence.iter().map(|e| e.1).sum::<f32>() / evidence.len() as f32;
        let name = st.name.as_str();
        if i == stages.len() - 1 || st.lo.is_some_and(|t| fused <= t) || st.hi.is_some_and(|t| fused >= t) {
            // built as the router builds it (by hand, three decimals by integer arithmetic)
            let mut reason = String::with_capacity(64 + 16 * evidence.len());
            for part in ["final at ", name, ": fused "] {
                reason.push_str(part);
            }
            push_fixed3(&mut reason, fused);
            reason.push_str(" from ");
            for (i, (n, s)) in evidence.iter().enumerate() {
                if i > 0 {
                    reason.push_str(", ");
                }
                reason.push_str(n);
                reason.push('=');
                push_fixed3(&mut reason, *s);
            }
            return (fused, reason);
        }
    }
    unreachable!("the last stage answers")
}

/// A score in [0, 1] with three decimals, as the router writes it.
fn push_fixed3(out: &mut String, v: f32) {
    let m = (v.abs() as f64 * 1000.0).round() as u64;
    out.push(char::from(b'0' + (m / 1000) as u8));
    out.push('.');
    let frac = m % 1000;
    for d in [frac / 100, frac / 10 % 10, frac % 10] {
        out.push(char::from(b'0' + d as u8));
    }
}

/// A component measured beside the native logic.
struct Arm {
    label: &'static str,
    file: std::path::PathBuf,
    bound: Bound,
    costs: Costs,
}

/// What a component costs before its first decision.
struct Costs {
    bytes: u64,
    compile: Duration,
    from_cache: Duration,
    linear: usize,
    resident: usize,
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0) * 4096
}

/// Compiles `file` (timed), round-trips it through the compile cache's format (timed), binds it
/// with the bench parameters, then makes `extra` more configured instances to read the resident
/// memory each adds.
fn arm(rt: &Arc<Runtime>, label: &'static str, file: &Path, p: &serde_json::Value) -> anyhow::Result<Arm> {
    let bytes = std::fs::read(file)?;
    let hash = cascade_host::files::sha256_hex(&bytes);
    // the server's own compile cache, in a folder of this run's: a miss compiles and stores, the
    // next lookup deserialises
    let dir = std::env::temp_dir().join(format!("router-bench-cache-{}", std::process::id()));
    let cache = CompileCache::new(&rt.engine, Some(dir.clone()));
    let t = Instant::now();
    let (_, hit) = cache.component(&rt.engine, &bytes, &hash)?;
    let compile = t.elapsed();
    let t = Instant::now();
    let (component, hit2) = cache.component(&rt.engine, &bytes, &hash)?;
    let from_cache = t.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(!hit && hit2, "{label}: the first lookup compiles, the second reads the cache");
    let plugin = Arc::new(Plugin::from_component(rt, file, component, hash).map_err(|e| anyhow::anyhow!("{e}"))?);
    let limits = Limits { fuel: 50_000_000, time: Duration::from_secs(5) };
    let bind =
        || Bound::new(rt.clone(), plugin.clone(), "bench", p.to_string(), limits).map_err(|e| anyhow::anyhow!("{e}"));
    let bound = bind()?;
    let extra = 8;
    let before = resident_bytes();
    let more: Vec<Bound> = (0..extra).map(|_| bind()).collect::<anyhow::Result<_>>()?;
    let resident = resident_bytes().saturating_sub(before) / extra;
    drop(more);
    let costs = Costs { bytes: bytes.len() as u64, compile, from_cache, linear: bound.instance_memory().0, resident };
    Ok(Arm { label, file: file.to_path_buf(), bound, costs })
}

fn main() -> anyhow::Result<()> {
    // for profiling the Wasm path alone
    let wasm_only = std::env::var_os("WASM_ONLY").is_some();
    let iters: usize = std::env::var("ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let rt = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let find = |dir: &str, name: &str| {
        let p = cascade_host::beside_exe(dir).join(name);
        if p.exists() {
            p
        } else {
            Path::new("target").join(dir).join(name)
        }
    };
    let p = params();
    let plan = native_plan(&p);
    let mut arms = vec![arm(&rt, "Rust: cascade-router.wasm", &find("components", "cascade_router.wasm"), &p)?];
    for (label, file) in [
        ("Python: py-accuracy-router.wasm", "py-accuracy-router.wasm"),
        ("JavaScript: js-accuracy-router.wasm", "js-accuracy-router.wasm"),
    ] {
        let f = find("policy-components", file);
        if f.exists() {
            arms.push(arm(&rt, label, &f, &p)?);
        } else {
            println!("{} is missing (make setup builds it): {label} left out", f.display());
        }
    }
    let roles = Arc::new(RoleSet::default());
    let models = Arc::new(Models::default());
    let image: cascade_engines::Image = Arc::new(image::RgbImage::new(224, 224));

    // the same answer from every one
    let ctx = cached_ctx(&models);
    let native = block_on(native_decide(&ctx, image.clone(), &plan));
    anyhow::ensure!(ctx.trace().len() == 3 && ctx.trace().iter().all(|t| t.cached), "three cached calls");
    for a in &arms {
        let ctx = cached_ctx(&models);
        let d = a
            .bound
            .decide_blocking(&ctx, roles.clone(), image.clone(), Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.label))?
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", a.label))?;
        anyhow::ensure!((d.prediction - native.0).abs() < 1e-6, "{}: {} vs native {}", a.label, d.prediction, native.0);
        anyhow::ensure!(d.reason == native.1, "{}: reasons differ: {:?} vs {:?}", a.label, d.reason, native.1);
    }

    // each component interleaved with the native logic in a loop of its own, so that one
    // language's working set does not evict another's between calls; the first half warms up
    let mut summaries = Vec::new();
    let mut natives = Vec::new();
    let mut base = Vec::with_capacity(iters);
    for a in &arms {
        let (mut w, mut n) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
        for i in 0..iters * 2 {
            let ctx = cached_ctx(&models);
            let t = Instant::now();
            let r = a.bound.decide_blocking(&ctx, roles.clone(), image.clone(), Duration::from_secs(5));
            let dw = t.elapsed();
            anyhow::ensure!(matches!(r, Ok(Ok(_))), "{}: a decision failed in the timing loop", a.label);
            let ctx = cached_ctx(&models);
            let t = Instant::now();
            if !wasm_only {
                std::hint::black_box(block_on(native_decide(&ctx, image.clone(), &plan)));
            }
            let dn = t.elapsed();
            if i >= iters {
                w.push(dw);
                n.push(dn);
            }
        }
        summaries.push(summarise(w));
        natives.push(summarise(n));
    }
    for _ in 0..iters {
        let ctx = cached_ctx(&models);
        let t = Instant::now();
        std::hint::black_box(ctx.image(image.clone()));
        base.push(t.elapsed());
    }
    header(&format!("router decision, 3 cached classify calls ({iters} each, interleaved with the native logic)"));
    for ((a, s), n) in arms.iter().zip(&summaries).zip(&natives) {
        row(&format!("{} (pooled instance)", a.label), s);
        row("  same logic, native in the host", n);
    }
    row("floor: request image handle only", &summarise(base));
    println!(
        "\nWasm boundary adds {:.2} µs at p50 ({:.2} µs at p99) for Rust; target ≤ 2 µs p50",
        summaries[0].p50 - natives[0].p50,
        summaries[0].p99 - natives[0].p99
    );
    println!("\n| component | size MB | compile s | from cache ms | linear MB / instance | resident MB / instance | decision p50 µs | p99 µs | p50 vs Rust |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (a, s) in arms.iter().zip(&summaries) {
        let c = &a.costs;
        println!(
            "| {} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1}x |",
            a.file.file_name().unwrap_or_default().to_string_lossy(),
            c.bytes as f64 / 1e6,
            c.compile.as_secs_f64(),
            c.from_cache.as_secs_f64() * 1e3,
            c.linear as f64 / 1048576.0,
            c.resident as f64 / 1048576.0,
            s.p50,
            s.p99,
            s.p50 / summaries[0].p50
        );
    }
    Ok(())
}

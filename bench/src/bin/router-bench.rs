//! The shipped `cascade-router` component against the same routing logic compiled natively,
//! on identical cached primitive results: what the Wasm boundary adds to one decision that
//! makes three primitive calls.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_bench::{header, row, summarise};
use cascade_engines::Models;
use cascade_host::runtime::calls;
use cascade_host::runtime::request::{CallKey, RequestCtx};
use cascade_host::runtime::{Bound, Limits, Plugin, RoleSet, Runtime, RuntimeConfig};
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
fn native_decide(ctx: &Arc<RequestCtx>, image: cascade_engines::Image, stages: &[NativeStage]) -> (f32, String) {
    let img = ctx.image(image);
    let mut evidence: Vec<(&str, f32)> = Vec::new();
    for (i, st) in stages.iter().enumerate() {
        // as the router does: a lone call directly, several through run-all
        let results = match st.calls.as_slice() {
            [one] => vec![calls::run(ctx, &img, one).map(calls::to_outcome)],
            all => calls::run_all(ctx, &img, all),
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

fn main() -> anyhow::Result<()> {
    // for profiling the Wasm path alone
    let wasm_only = std::env::var_os("WASM_ONLY").is_some();
    let iters: usize = std::env::var("ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let rt = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let comp = cascade_host::beside_exe("components").join("cascade_router.wasm");
    let comp = if comp.exists() { comp } else { Path::new("target/components/cascade_router.wasm").to_path_buf() };
    let plugin = Arc::new(Plugin::load(&rt, &comp)?);
    let p = params();
    let plan = native_plan(&p);
    let limits = Limits { fuel: 50_000_000, time: Duration::from_secs(5) };
    let bound = Bound::new(rt.clone(), plugin, "bench", p.to_string(), limits).map_err(|e| anyhow::anyhow!("{e}"))?;
    let roles = Arc::new(RoleSet::default());
    let models = Arc::new(Models::default());
    let image: cascade_engines::Image = Arc::new(image::RgbImage::new(224, 224));

    // same answer from both
    let ctx = cached_ctx(&models);
    let wasm = bound
        .decide(&ctx, roles.clone(), image.clone(), Duration::from_secs(5))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let ctx = cached_ctx(&models);
    let native = native_decide(&ctx, image.clone(), &plan);
    anyhow::ensure!((wasm.prediction - native.0).abs() < 1e-6, "wasm {} vs native {}", wasm.prediction, native.0);
    anyhow::ensure!(wasm.reason == native.1, "reasons differ: {:?} vs {:?}", wasm.reason, native.1);
    anyhow::ensure!(ctx.trace().len() == 3 && ctx.trace().iter().all(|t| t.cached), "three cached calls");

    let (mut w, mut n, mut base) = (Vec::with_capacity(iters), Vec::with_capacity(iters), Vec::with_capacity(iters));
    for i in 0..iters * 2 {
        // interleave so both see the same machine state; the first half warms up
        let ctx = cached_ctx(&models);
        let t = Instant::now();
        let r = bound.decide(&ctx, roles.clone(), image.clone(), Duration::from_secs(5));
        let dw = t.elapsed();
        std::hint::black_box(r.ok());
        let ctx = cached_ctx(&models);
        let t = Instant::now();
        if !wasm_only {
            std::hint::black_box(native_decide(&ctx, image.clone(), &plan));
        }
        let dn = t.elapsed();
        let ctx = cached_ctx(&models);
        let t = Instant::now();
        std::hint::black_box(ctx.image(image.clone()));
        let db = t.elapsed();
        if i >= iters {
            w.push(dw);
            n.push(dn);
            base.push(db);
        }
    }
    let (sw, sn) = (summarise(w), summarise(n));
    header(&format!("router decision, 3 cached classify calls ({iters} each, interleaved)"));
    row("cascade-router.wasm (pooled instance)", &sw);
    row("same logic, native in the host", &sn);
    row("floor: request image handle only", &summarise(base));
    println!(
        "\nWasm boundary adds {:.2} µs at p50 ({:.2} µs at p99); target ≤ 2 µs p50",
        sw.p50 - sn.p50,
        sw.p99 - sn.p99
    );
    Ok(())
}

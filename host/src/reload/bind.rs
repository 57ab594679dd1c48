//! Binding a hotkey file to components: resolve each role's component by name and semver
//! requirement, validate its parameters against the component's schema, instantiate and
//! configure it, and smoke-test the result with one request. Used by every reload (start-up
//! is the first), so `serve`, `check` and `eval` refuse the same things for the same reasons.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cascade_engines::Models;
use semver::Version;

use crate::config::{self, ComponentRef, HotkeyFile, RoleConfig};
use crate::policy::{Arm, Hotkey};
use crate::rollout::Rollout;
use crate::runtime::{Bound, Limits, Plugin, Role, RoleSet, Runtime};

/// The highest version of `name` that meets the requirement and serves the role.
pub(crate) fn resolve(plugins: &[Arc<Plugin>], r: &ComponentRef, role: Role) -> Result<Arc<Plugin>, String> {
    let named: Vec<&Arc<Plugin>> = plugins.iter().filter(|p| p.name == r.name).collect();
    if named.is_empty() {
        return Err(format!("no component named {}", r.name));
    }
    let best = named.iter().filter(|p| r.req.matches(&p.version)).max_by(|a, b| a.version.cmp(&b.version));
    match best {
        Some(p) if p.role == role => Ok((*p).clone()),
        Some(p) => Err(format!("{}@{} is a {}, not a {}", p.name, p.version, p.role.as_str(), role.as_str())),
        None => {
            let have: Vec<String> = named.iter().map(|p| p.version.to_string()).collect();
            Err(format!("no version of {} matches {} (have {})", r.name, r.req, have.join(", ")))
        }
    }
}

pub fn bind_hotkey(
    rt: &Arc<Runtime>,
    plugins: &[Arc<Plugin>],
    file: &Path,
    models: &Models,
) -> Result<Hotkey, Vec<String>> {
    let cfg = HotkeyFile::load(file).map_err(|e| vec![e])?;
    let base = file.parent().unwrap_or(Path::new("."));
    let calibration = cfg
        .calibration
        .as_ref()
        .map(|c| crate::calibration::Calibration::load(c, base, &cfg.name, models).map(|k| (c.clone(), k)))
        .transpose()
        .map_err(|e| vec![e])?;
    let limits = Limits { fuel: cfg.limits.fuel, time: Duration::from_millis(cfg.limits.call_ms.min(cfg.budget_ms)) };
    let mut errors = Vec::new();
    let mut bindings = Vec::new();
    let mut bind = |key: &str, rc: &RoleConfig, role: Role| -> Option<Arc<Bound>> {
        match bind_role(rt, plugins, &cfg.name, key, rc, role, limits) {
            Ok((r, b)) => {
                bindings.push((r, role, b.plugin.clone()));
                Some(Arc::new(b))
            }
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        }
    };
    let router = bind("router", &cfg.router, Role::Router);
    let text_scorer = cfg.text_scorer.as_ref().and_then(|rc| bind("text_scorer", rc, Role::TextScorer));
    let fuser = cfg.fuser.as_ref().and_then(|rc| bind("fuser", rc, Role::Fuser));
    // the candidate: its own bindings where it names them, the stable ones elsewhere
    let candidate = cfg.candidate.as_ref().map(|c| {
        let r = c.router.as_ref().and_then(|rc| bind("candidate.router", rc, Role::Router)).or_else(|| router.clone());
        let t = c
            .text_scorer
            .as_ref()
            .and_then(|rc| bind("candidate.text_scorer", rc, Role::TextScorer))
            .or_else(|| text_scorer.clone());
        let f = c.fuser.as_ref().and_then(|rc| bind("candidate.fuser", rc, Role::Fuser)).or_else(|| fuser.clone());
        (r, t, f)
    });
    let (Some(router), true) = (router, errors.is_empty()) else { return Err(errors) };
    let candidate =
        candidate.and_then(|(r, t, f)| Some(Arm { router: r?, roles: Arc::new(RoleSet { text_scorer: t, fuser: f }) }));
    let key = crate::files::read_regular(file, crate::files::MAX_CONFIG_BYTES)
        .map(|b| crate::reload::cache::sha256_hex(&b))
        .unwrap_or_default();
    let rollout =
        cfg.rollout.clone().map(|ro| Arc::new(Rollout::new(&cfg.name, ro, file.with_extension("state.json"), key)));
    let log = cfg.log.as_ref().map(|l| crate::predlog::Log::open(l, base)).transpose().map_err(|e| vec![e])?;
    Ok(Hotkey {
        name: cfg.name,
        ss58: cfg.ss58,
        file: file.into(),
        fallback: cfg.fallback,
        budget: Duration::from_millis(cfg.budget_ms),
        stable: Arm { router, roles: Arc::new(RoleSet { text_scorer, fuser }) },
        candidate,
        rollout,
        axon: cfg.axon,
        bindings,
        log,
        calibration,
    })
}

fn bind_role(
    rt: &Arc<Runtime>,
    plugins: &[Arc<Plugin>],
    hotkey: &str,
    key: &str,
    rc: &RoleConfig,
    role: Role,
    limits: Limits,
) -> Result<(ComponentRef, Bound), Vec<String>> {
    let r: ComponentRef = rc.component.parse().map_err(|e| vec![format!("{key}.component: {e}")])?;
    let plugin = resolve(plugins, &r, role).map_err(|e| vec![format!("{key}.component: {e}")])?;
    let params = config::params_json(&rc.params);
    let violations = crate::schema::validate(&params, &plugin.schema);
    if !violations.is_empty() {
        return Err(violations
            .into_iter()
            .map(|v| format!("{key}.params.{} (schema of {}@{})", v, plugin.name, plugin.version))
            .collect());
    }
    Bound::new(rt.clone(), plugin.clone(), hotkey, params.to_string(), limits)
        .map(|b| (r, b))
        .map_err(|e| vec![format!("{key}: {}@{} {e}", plugin.name, plugin.version)])
}

/// One decision on a plain grey image: the policy must answer without failing. Primitive
/// errors it tolerated (a stage's model not configured) come back as warnings.
pub fn smoke(h: &Hotkey, models: &Arc<Models>) -> Result<Vec<String>, String> {
    let img = Arc::new(image::RgbImage::from_pixel(224, 224, image::Rgb([128, 128, 128])));
    let a = h.answer_quietly(models, img.clone());
    if a.fallback {
        return Err(explain(h, models, format!("smoke request failed: {}", a.reason)));
    }
    if let Some(c) = h.candidate_quietly(models, img) {
        if c.fallback {
            return Err(explain(h, models, format!("smoke request of the candidate failed: {}", c.reason)));
        }
    }
    // a dry run reaches the stages the smoke image exited before
    for candidate in [false, true] {
        if let Some(Err(reason)) = h.dry_run(models, candidate) {
            let arm = if candidate { "the candidate's" } else { "the policy's" };
            return Err(explain(h, models, format!("dry run through every stage of {arm} failed: {reason}")));
        }
    }
    Ok(a.trace
        .iter()
        .filter(|t| t.result.starts_with("error"))
        .map(|t| explain(h, models, format!("{}({}): {}", t.primitive, t.model, t.result)))
        .collect())
}

/// A message about an unknown model, completed with the stages that name it and the models
/// the registry has (a typo is then plain to see).
fn explain(h: &Hotkey, models: &Models, message: String) -> String {
    let Some(model) = message.split("unknown model ").nth(1).map(|m| m.split_whitespace().next().unwrap_or("")) else {
        return message;
    };
    let model = model.trim_matches(|c: char| !(c.is_alphanumeric() || "-_.:".contains(c)));
    let mut stages: Vec<String> = Vec::new();
    for arm in std::iter::once(&h.stable).chain(h.candidate.as_ref()) {
        let params: serde_json::Value = serde_json::from_str(&arm.router.params).unwrap_or_default();
        for st in params["stages"].as_array().into_iter().flatten() {
            if names_string(st, model) {
                let name = st["name"].as_str().unwrap_or("?").to_string();
                if !stages.contains(&name) {
                    stages.push(name);
                }
            }
        }
    }
    let mut have: Vec<&str> = models.names().collect();
    have.sort_unstable();
    let stages = if stages.is_empty() { String::new() } else { format!("; named by stage {}", stages.join(", ")) };
    format!(
        "{message}{stages}; the registry ({}) has: {}",
        crate::config::MODELS_FILE,
        if have.is_empty() { "no models".to_string() } else { have.join(", ") }
    )
}

/// Whether `v` holds the string `s` anywhere.
fn names_string(v: &serde_json::Value, s: &str) -> bool {
    match v {
        serde_json::Value::String(x) => x == s,
        serde_json::Value::Array(a) => a.iter().any(|x| names_string(x, s)),
        serde_json::Value::Object(o) => o.values().any(|x| names_string(x, s)),
        _ => false,
    }
}

/// One line per plugin for `check` and the log.
pub fn describe_plugin(p: &Plugin) -> String {
    let v: &Version = &p.version;
    format!("{}@{} {} (contract {}) {}", p.name, v, p.role.as_str(), p.contract, p.file.display())
}

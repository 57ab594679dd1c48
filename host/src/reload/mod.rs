//! Live changes. The reloader rebuilds the serving state from the components and policies
//! folders off the request path — compile (through the on-disk cache), contract check,
//! parameter validation, a smoke request — and keeps the last good version of every file
//! that fails. Start-up is the first reload, with nothing to fall back on. The caller swaps
//! the result in atomically; requests in flight keep the `Arc`s they started with.

pub mod bind;
pub mod cache;
pub mod status;
pub mod watch;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cascade_engines::{Models, Registry};

use crate::chain::{Chain, ChainConfig, Metagraph, CHAIN_FILE};
use crate::config::{self, MODELS_FILE};
use crate::policy::Hotkey;
use crate::runtime::{Plugin, Runtime};
use bind::{bind_hotkey, smoke};
use cache::{sha256_hex, CompileCache};

/// Where things come from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub policies: PathBuf,
    pub components: PathBuf,
    pub ort_library: PathBuf,
}

/// A note about a file: a warning that does not stop serving, or a problem that refuses it.
#[derive(Debug, Clone)]
pub struct Problem {
    pub file: PathBuf,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

/// A change that was refused: the file, why, and when. The previous version keeps serving.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefusedChange {
    pub file: PathBuf,
    pub reason: String,
    pub at_unix_ms: u128,
}

/// What one reload produced.
pub struct Snapshot {
    pub models: Arc<Models>,
    /// Admission settings and the last good metagraph snapshot.
    pub chain: Arc<Chain>,
    pub registry: Registry,
    pub plugins: Vec<Arc<Plugin>>,
    pub hotkeys: BTreeMap<String, Arc<Hotkey>>,
    pub warnings: Vec<Problem>,
    /// Refused in this reload (empty when everything was accepted).
    pub refused: Vec<RefusedChange>,
    /// Files whose new version (or whose deletion) went live in this reload.
    pub applied: Vec<PathBuf>,
    pub took: Duration,
}

struct Loaded<T> {
    hash: String,
    value: T,
}

pub struct Reloader {
    rt: Arc<Runtime>,
    pub src: Sources,
    cache: CompileCache,
    plugins: BTreeMap<PathBuf, Loaded<Arc<Plugin>>>,
    registry: Option<Loaded<(Registry, Arc<Models>)>>,
    hotkeys: BTreeMap<PathBuf, Loaded<Arc<Hotkey>>>,
    chain_config: Option<Loaded<ChainConfig>>,
    /// Keyed by the snapshot's hash together with the settings' (a new netuid re-reads it).
    metagraph: Option<Loaded<Arc<Metagraph>>>,
    /// Why the snapshot file did not load at the last reload (missing, unreadable, refused).
    snapshot_problem: Option<String>,
    /// What each hotkey's latest smoke request tolerated (a stage's model missing), reported
    /// at every reload until the hotkey or the registry changes it.
    smoke_notes: BTreeMap<PathBuf, Vec<String>>,
    /// Whether a reload has run (the first one's refusals are reported by the caller).
    loaded_once: bool,
    /// Whether the registry stood refused after the last reload (a deleted file included).
    registry_refused: bool,
    /// Set by the admin API: the next reload takes the snapshot file whatever its order.
    force_snapshot: Arc<std::sync::atomic::AtomicBool>,
    /// The reason each file was last refused: the same refusal is reported once, not again
    /// at every later reload while the file stays broken.
    refusing: BTreeMap<PathBuf, String>,
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

fn files_with(dir: &Path, ext: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    Ok(v)
}

/// Hash of a file and of the files it names that change its meaning (a registry's heads and
/// label lists are folded in by the caller through `extra`).
fn read_hashed(path: &Path) -> Result<(Vec<u8>, String), String> {
    let cap = if path.extension().is_some_and(|e| e == "wasm") {
        crate::files::MAX_COMPONENT_BYTES
    } else {
        crate::files::MAX_CONFIG_BYTES
    };
    let bytes = crate::files::read_regular(path, cap).map_err(|e| e.to_string())?;
    let h = sha256_hex(&bytes);
    Ok((bytes, h))
}

impl Reloader {
    pub fn new(rt: Arc<Runtime>, src: Sources, cache_dir: Option<PathBuf>) -> Reloader {
        let cache = CompileCache::new(&rt.engine, cache_dir);
        Reloader {
            rt,
            src,
            cache,
            plugins: BTreeMap::new(),
            registry: None,
            hotkeys: BTreeMap::new(),
            chain_config: None,
            metagraph: None,
            snapshot_problem: None,
            smoke_notes: BTreeMap::new(),
            loaded_once: false,
            registry_refused: false,
            force_snapshot: Arc::default(),
            refusing: BTreeMap::new(),
        }
    }

    /// Rebuilds everything that changed; keeps the last good version of what fails.
    /// The switch that makes the next reload take the snapshot file whatever its order.
    pub fn force_snapshot_switch(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.force_snapshot.clone()
    }

    pub fn reload(&mut self) -> Snapshot {
        let started = Instant::now();
        let mut applied: Vec<PathBuf> = Vec::new();
        // the first reload's refusals are the caller's to print (`check`, `serve`'s start):
        // nothing serves yet, so nothing "keeps serving"
        let mut rf =
            Refusals { new: Vec::new(), standing: std::mem::take(&mut self.refusing), first: !self.loaded_once };
        self.loaded_once = true;

        // 1. components
        let files = files_with(&self.src.components, "wasm").unwrap_or_else(|e| {
            rf.refuse(&self.src.components, format!("components folder: {e} (run `make setup`)"));
            Vec::new()
        });
        // a deleted component is a change too
        applied.extend(self.plugins.keys().filter(|p| !files.contains(p)).cloned().collect::<Vec<_>>());
        self.plugins.retain(|p, _| files.contains(p));
        for f in &files {
            let (bytes, hash) = match read_hashed(f) {
                Ok(x) => x,
                Err(e) => {
                    rf.refuse(f, e);
                    continue;
                }
            };
            if self.plugins.get(f).is_some_and(|l| l.hash == hash) {
                // back to the version that serves: whatever was refused meanwhile is over
                if rf.stands(f) {
                    applied.push(f.clone());
                }
                continue;
            }
            let loaded = self
                .cache
                .component(&self.rt.engine, &bytes, &hash)
                .map_err(|e| format!("not a valid component: {e:#}"))
                .and_then(|(c, _)| Plugin::from_component(&self.rt, f, c, hash.clone()).map_err(|e| e.to_string()));
            match loaded {
                Ok(p) => {
                    let dup = self
                        .plugins
                        .iter()
                        .find(|(path, l)| *path != f && l.value.name == p.name && l.value.version == p.version);
                    if let Some((other, _)) = dup {
                        rf.refuse(f, format!("{}@{} is also in {}", p.name, p.version, other.display()));
                        continue;
                    }
                    tracing::info!(file = %f.display(), "component {}@{} loaded", p.name, p.version);
                    self.plugins.insert(f.clone(), Loaded { hash, value: Arc::new(p) });
                    applied.push(f.clone());
                }
                Err(reason) => rf.refuse(f, reason),
            }
        }
        let plugins: Vec<Arc<Plugin>> = self.plugins.values().map(|l| l.value.clone()).collect();

        // 2. the model registry (and the files it names): a new model set must serve every
        //    current hotkey's smoke request before it replaces the old one
        let reg_file = self.src.policies.join(MODELS_FILE);
        let mut warnings = Vec::new();
        let reg_hash = registry_fingerprint(&reg_file);
        if self.registry.as_ref().map(|l| &l.hash) != Some(&reg_hash) {
            let loaded = match crate::files::read_regular(&reg_file, crate::files::MAX_CONFIG_BYTES) {
                Ok(_) => Registry::load(&reg_file).map_err(|e| e.to_string()),
                Err(e) if e.not_found() => Ok(Registry::default()),
                Err(e) => Err(e.to_string()),
            };
            let checked = loaded
                .and_then(|reg| {
                    Models::load(&reg, &self.src.ort_library)
                        .map(|m| (reg, Arc::new(m)))
                        .map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
                })
                .and_then(|(reg, m)| {
                    let mut notes = BTreeMap::new();
                    for (f, l) in &self.hotkeys {
                        // a calibration fitted on the old head's scores would mislead: refuse
                        // the new heads until the calibration is refitted with them
                        calibration_check(&l.value, &m).map_err(|e| format!("hotkey {}: {e}", l.value.name))?;
                        let n = smoke(&l.value, &m)
                            .map_err(|e| format!("hotkey {} fails with the new models: {e}", l.value.name))?;
                        notes.insert(f.clone(), n);
                    }
                    Ok((reg, m, notes))
                });
            match checked {
                Ok((reg, m, notes)) => {
                    self.smoke_notes.extend(notes);
                    let v = (reg, m);
                    if self.registry.is_some() {
                        applied.push(reg_file.clone());
                    }
                    self.registry = Some(Loaded { hash: reg_hash, value: v });
                }
                Err(reason) => rf.refuse(&reg_file, reason),
            }
        } else if rf.stands(&reg_file) || self.registry_refused {
            // back to the version that serves (also after a deletion, whose refusal the
            // standing list forgets with the file): its refusal is over
            applied.push(reg_file.clone());
        }
        self.registry_refused = rf.standing.contains_key(&reg_file) || rf.new.iter().any(|r| r.file == reg_file);
        let Some(models) = self.registry.as_ref().map(|l| l.value.1.clone()) else {
            // no models at all (the first load failed): nothing can be smoke-tested
            self.refusing = rf.standing;
            let refused = rf.new;
            return self.snapshot(
                Arc::new(Models::default()),
                Registry::default(),
                plugins,
                warnings,
                refused,
                applied,
                started,
            );
        };

        // 3. chain settings and the metagraph snapshot (admission); a broken one keeps the last good
        self.reload_chain(&mut rf, &mut applied, &mut warnings);

        // 4. hotkeys: rebind those whose file changed or whose components resolve differently
        let hk_files = config::hotkey_files(&self.src.policies).unwrap_or_else(|e| {
            rf.refuse(&self.src.policies, format!("cannot list: {e}"));
            Vec::new()
        });
        applied.extend(self.hotkeys.keys().filter(|p| !hk_files.contains(p)).cloned().collect::<Vec<_>>());
        let mut next: BTreeMap<PathBuf, Loaded<Arc<Hotkey>>> = BTreeMap::new();
        // the file that serves each hotkey name keeps it: another file claiming the name is
        // refused whichever sorts first
        let owners: BTreeMap<String, PathBuf> = self
            .hotkeys
            .iter()
            .filter(|(p, _)| hk_files.contains(p))
            .map(|(p, l)| (l.value.name.clone(), p.clone()))
            .collect();
        for f in &hk_files {
            let prev = self.hotkeys.remove(f);
            let hash = match read_hashed(f) {
                Ok((_, h)) => h,
                Err(e) => {
                    rf.refuse(f, e);
                    if let Some(p) = prev {
                        next.insert(f.clone(), p);
                    }
                    continue;
                }
            };
            if let Some(p) = prev.as_ref().filter(|l| {
                l.hash == hash && bindings_current(&l.value, &plugins) && calibration_current(&l.value, &models)
            }) {
                if rf.stands(f) {
                    applied.push(f.clone());
                }
                next.insert(f.clone(), Loaded { hash, value: p.value.clone() });
                continue;
            }
            let bound = bind_hotkey(&self.rt, &plugins, f, &models)
                .map_err(|errs| errs.join("; "))
                .and_then(|h| smoke(&h, &models).map(|notes| (h, notes)));
            let bound = bound.map(|(h, notes)| {
                self.smoke_notes.insert(f.clone(), notes);
                h
            });
            let clash = bound.as_ref().ok().and_then(|h| {
                owners
                    .get(&h.name)
                    .filter(|o| *o != f)
                    .cloned()
                    .or_else(|| next.values().find(|l| l.value.name == h.name).map(|l| l.value.file.clone()))
            });
            match (bound, clash) {
                (Ok(h), None) => {
                    applied.push(f.clone());
                    next.insert(f.clone(), Loaded { hash, value: Arc::new(h) });
                }
                (Ok(h), Some(other)) => {
                    rf.refuse(f, format!("hotkey {} is also defined in {}", h.name, other.display()));
                    if let Some(p) = prev {
                        next.insert(f.clone(), p);
                    }
                }
                (Err(reason), _) => {
                    rf.refuse(f, reason);
                    if let Some(p) = prev {
                        next.insert(f.clone(), p);
                    }
                }
            }
        }
        self.hotkeys = next;
        if hk_files.is_empty() {
            rf.refuse(&self.src.policies, "no hotkey files (*.toml)".into());
        }
        for f in &applied {
            rf.standing.remove(f);
        }
        // a refused file that is gone is no longer refused
        rf.standing.retain(|f, _| f.exists());
        self.refusing = rf.standing;
        let refused = rf.new;
        let (registry, models) = match &self.registry {
            Some(l) => (l.value.0.clone(), l.value.1.clone()),
            None => (Registry::default(), Arc::new(Models::default())),
        };
        warnings.extend(registry.absent.iter().map(|(name, file)| Problem {
            file: reg_file.clone(),
            message: format!("optional model {name} left out: {} is absent", file.display()),
        }));
        self.smoke_notes.retain(|f, _| self.hotkeys.contains_key(f));
        for (f, notes) in &self.smoke_notes {
            warnings.extend(notes.iter().map(|message| Problem { file: f.clone(), message: message.clone() }));
        }
        for l in self.hotkeys.values() {
            warnings.extend(
                admission_notes(&l.value).into_iter().map(|message| Problem { file: l.value.file.clone(), message }),
            );
        }
        self.snapshot(models, registry, plugins, warnings, refused, applied, started)
    }

    #[allow(clippy::too_many_arguments)]
    fn snapshot(
        &self,
        models: Arc<Models>,
        registry: Registry,
        plugins: Vec<Arc<Plugin>>,
        warnings: Vec<Problem>,
        refused: Vec<RefusedChange>,
        applied: Vec<PathBuf>,
        started: Instant,
    ) -> Snapshot {
        let hotkeys = self.hotkeys.values().map(|l| (l.value.name.clone(), l.value.clone())).collect();
        let chain = Arc::new(self.chain());
        Snapshot { models, chain, registry, plugins, hotkeys, warnings, refused, applied, took: started.elapsed() }
    }
}

impl Reloader {
    /// The admission state as it stands.
    fn chain(&self) -> Chain {
        Chain {
            config: self.chain_config.as_ref().map(|l| l.value.clone()).unwrap_or_default(),
            metagraph: self.metagraph.as_ref().map(|l| l.value.clone()),
            absent_because: self.snapshot_problem.clone(),
        }
    }

    fn reload_chain(&mut self, rf: &mut Refusals, applied: &mut Vec<PathBuf>, warnings: &mut Vec<Problem>) {
        // an operator's `POST /admin/metagraph/accept` (a chain reorganisation, a sync moved to
        // another endpoint): this reload takes the file on disk whatever its order
        let forced = self.force_snapshot.swap(false, std::sync::atomic::Ordering::SeqCst);
        let file = self.src.policies.join(CHAIN_FILE);
        let (text, hash) = match crate::files::read_regular(&file, crate::files::MAX_CONFIG_BYTES) {
            Ok(b) => (String::from_utf8_lossy(&b).into_owned(), sha256_hex(&b)),
            Err(e) if e.not_found() => (String::new(), "absent".to_string()),
            Err(e) => {
                rf.refuse(&file, e.to_string());
                return;
            }
        };
        if self.chain_config.as_ref().map(|l| &l.hash) != Some(&hash) {
            match ChainConfig::parse(&text) {
                Ok(c) => {
                    if self.chain_config.is_some() {
                        applied.push(file.clone());
                    }
                    self.chain_config = Some(Loaded { hash: hash.clone(), value: c });
                }
                Err(reason) => rf.refuse(&file, reason),
            }
        } else if rf.stands(&file) {
            applied.push(file.clone());
        }
        let cfg = self.chain_config.as_ref().map(|l| l.value.clone()).unwrap_or_default();
        let cfg_hash = self.chain_config.as_ref().map(|l| l.hash.clone()).unwrap_or_default();
        let path = cfg.snapshot_path(&self.src.policies);
        self.snapshot_problem = None;
        let bytes = match crate::files::read_regular(&path, crate::files::MAX_CONFIG_BYTES) {
            Ok(b) => b,
            Err(e) if e.not_found() => {
                self.snapshot_problem = Some(format!("{} does not exist", path.display()));
                if self.metagraph.is_some() {
                    warnings.push(Problem {
                        file: path,
                        message: "the metagraph snapshot is gone; admitting from the last one loaded".into(),
                    });
                }
                return;
            }
            Err(e) => {
                self.snapshot_problem = Some(format!("{} cannot be read: {e}", path.display()));
                rf.refuse(&path, e.to_string());
                return;
            }
        };
        let hash = format!("{}/{cfg_hash}", sha256_hex(&bytes));
        if self.metagraph.as_ref().map(|l| &l.hash) == Some(&hash) {
            if rf.stands(&path) {
                applied.push(path.clone());
            }
        } else {
            let now = crate::chain::now_unix_s();
            let current = self
                .metagraph
                .as_ref()
                .filter(|l| l.value.netuid == cfg.netuid)
                .map(|l| (l.value.block, l.value.taken_at));

            let parsed = Metagraph::parse(&bytes, cfg.netuid).and_then(|m| {
                // a snapshot from the future would never age into "stale": one clock is wrong
                if m.taken_at > now + FUTURE_SLACK_S {
                    return Err(format!(
                        "snapshot taken {:.0} s in the future (taken_at {}): this machine's clock or the sync's is wrong",
                        m.taken_at - now,
                        m.taken_at
                    ));
                }
                if m.age_s(now) > cfg.refuse_after_s {
                    return Err(format!(
                        "snapshot taken {:.1} days ago (refuse_after_s = {}): run scripts/chain/metagraph_sync.py",
                        m.age_s(now) / 86400.0,
                        cfg.refuse_after_s
                    ));
                }
                // ordered by block, then by when it was taken: the chain's order, not a clock's
                match current {
                    Some((block, taken)) if !forced && (m.block, m.taken_at) < (block, taken) => Err(format!(
                        "snapshot of block {} (taken at {}) is older than the one in use (block {block}, taken at \
                         {taken}); kept the newer (POST /admin/metagraph/accept takes it anyway)",
                        m.block, m.taken_at
                    )),
                    _ => Ok(m),
                }
            });
            match parsed {
                Ok(m) => {
                    tracing::info!(
                        block = m.block,
                        neurons = m.neurons,
                        age_s = m.age_s(now) as u64,
                        "metagraph snapshot of netuid {} loaded",
                        m.netuid
                    );
                    warnings.extend(m.notes.iter().map(|n| Problem { file: path.clone(), message: n.clone() }));
                    applied.push(path.clone());
                    self.metagraph = Some(Loaded { hash, value: Arc::new(m) });
                }
                Err(reason) => {
                    self.snapshot_problem = Some(format!("{} was refused: {reason}", path.display()));
                    rf.refuse(&path, reason);
                }
            }
        }
        // a stale snapshot is an alarm of each hotkey it admits for (`chain::health`)
    }
}

/// A reason on one line (a Wasm error's cause chain and backtrace come on many): lines joined
/// with " | ", runs of blanks squeezed, so a refusal reads whole in a log line, a table cell and
/// `check`'s output.
pub fn one_line(reason: &str) -> String {
    let lines: Vec<String> =
        reason.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|l| !l.is_empty()).collect();
    lines.join(" | ")
}

/// How far ahead of this machine's clock a snapshot's `taken_at` may be (clock skew).
const FUTURE_SLACK_S: f64 = 300.0;

/// Keys on both of a hotkey's lists (what keeps validators out is `chain::health`'s alarms).
fn admission_notes(h: &Hotkey) -> Vec<String> {
    h.axon
        .contradictions()
        .into_iter()
        .map(|k| format!("hotkey {}: {k} is on both axon.allow and axon.deny; deny wins", h.name))
        .collect()
}

/// Refusals of one reload, and the reason each file stands refused since an earlier one: the
/// same refusal is reported once, not again at every reload while the file stays broken.
struct Refusals {
    new: Vec<RefusedChange>,
    standing: BTreeMap<PathBuf, String>,
    first: bool,
}

impl Refusals {
    fn refuse(&mut self, file: &Path, reason: String) {
        let reason = one_line(&reason);
        if self.standing.get(file) == Some(&reason) {
            return;
        }
        if self.first {
            tracing::debug!(file = %file.display(), %reason, "refused at the first load");
        } else {
            tracing::warn!(file = %file.display(), %reason, "change refused; the last good version keeps serving");
        }
        self.standing.insert(file.into(), reason.clone());
        self.new.push(RefusedChange { file: file.into(), reason, at_unix_ms: now_ms() });
    }

    fn stands(&self, f: &Path) -> bool {
        self.standing.contains_key(f)
    }
}

/// The hotkey's calibration file as it is now, checked against `models`' heads.
fn calibration_check(h: &Hotkey, models: &Models) -> Result<Option<crate::calibration::Calibration>, String> {
    let Some((file, _)) = &h.calibration else { return Ok(None) };
    let base = h.file.parent().unwrap_or(Path::new("."));
    crate::calibration::Calibration::load(file, base, &h.name, models).map(Some)
}

/// Whether the hotkey's calibration file still holds what the hotkey applies (a refitted file
/// rebinds the hotkey, which reads it again and refuses it if it does not fit).
fn calibration_current(h: &Hotkey, models: &Models) -> bool {
    matches!((calibration_check(h, models), &h.calibration), (Ok(now), held) if now.as_ref() == held.as_ref().map(|(_, c)| c))
}

/// Whether every component the hotkey is bound to is still the one its config resolves to
/// (a deleted, replaced or newly matching higher version means it is not).
fn bindings_current(h: &Hotkey, plugins: &[Arc<Plugin>]) -> bool {
    h.bindings.iter().all(|(r, role, p)| bind::resolve(plugins, r, *role).is_ok_and(|q| Arc::ptr_eq(&q, p)))
}

/// The registry file's hash together with the files it points to (heads, label lists), so
/// that retraining a head is a change.
fn registry_fingerprint(reg_file: &Path) -> String {
    let Ok(text) = crate::files::read_regular(reg_file, crate::files::MAX_CONFIG_BYTES) else {
        return "absent".into();
    };
    let mut all = text.clone();
    if let Ok(reg) = Registry::load(reg_file) {
        for m in &reg.models {
            let exported = m.hf.iter().flat_map(|d| [d.join("config.json"), d.join("preprocessor_config.json")]);
            for p in m.head.iter().chain(m.labels_file.iter()).cloned().chain(exported) {
                all.extend(crate::files::read_regular(&p, crate::files::MAX_CONFIG_BYTES).unwrap_or_default());
            }
            all.extend(format!("{:?}", std::fs::metadata(&m.file).and_then(|md| md.modified()).ok()).bytes());
        }
    }
    sha256_hex(&all)
}

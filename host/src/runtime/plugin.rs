//! A component file, compiled once: its role, contract version, name, version and parameter
//! schema, and an `InstancePre` to instantiate it cheaply.

use std::path::{Path, PathBuf};

use semver::Version;
use wasmtime::component::{Component, InstancePre};

use super::engine::{start_call, Runtime, SETUP_FUEL, SETUP_TIME};
use super::store::StoreState;
use crate::wit::exports::cascade::policy::{fuser, meta, router, text_scorer};
use crate::wit::CONTRACT;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Router,
    TextScorer,
    Fuser,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::TextScorer => "text-scorer",
            Role::Fuser => "fuser",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read: {reason}")]
    Read { file: PathBuf, reason: String },
    #[error("not a valid component: {reason}")]
    Compile { file: PathBuf, reason: String },
    #[error("exports no cascade:policy role (router, text-scorer or fuser)")]
    NoRole { file: PathBuf },
    #[error("exports more than one role ({0})", .roles.join(", "))]
    ManyRoles { file: PathBuf, roles: Vec<String> },
    #[error("built for cascade:policy@{found}; this host implements cascade:policy@{host} (components for 1.x up to {host})")]
    Contract { file: PathBuf, found: String, host: String },
    #[error("cannot be linked: {reason}")]
    Link { file: PathBuf, reason: String },
    #[error("info() failed: {reason}")]
    Info { file: PathBuf, reason: String },
}

pub enum RoleIndices {
    Router(router::GuestIndices),
    TextScorer(text_scorer::GuestIndices),
    Fuser(fuser::GuestIndices),
}

pub struct Plugin {
    /// sha256 of the component's bytes: what makes two loads the same component.
    pub hash: String,
    pub name: String,
    pub version: Version,
    pub role: Role,
    pub contract: Version,
    pub file: PathBuf,
    pub schema: serde_json::Value,
    pub pre: InstancePre<StoreState>,
    pub meta: meta::GuestIndices,
    pub indices: RoleIndices,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{} ({}, {})", self.name, self.version, self.role.as_str(), self.file.display())
    }
}

const PACKAGE: &str = "cascade:policy/";

/// Splits `cascade:policy/router@1.0.0` into (`router`, 1.0.0).
fn contract_name(name: &str) -> Option<(&str, Option<Version>)> {
    let rest = name.strip_prefix(PACKAGE)?;
    Some(match rest.split_once('@') {
        Some((iface, v)) => (iface, Version::parse(v).ok()),
        None => (rest, None),
    })
}

impl Plugin {
    /// Reads and compiles a component file (no cache: `check` and tools).
    pub fn load(rt: &Runtime, file: &Path) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(file).map_err(|e| PluginError::Read { file: file.into(), reason: e.to_string() })?;
        let component = Component::new(&rt.engine, &bytes)
            .map_err(|e| PluginError::Compile { file: file.into(), reason: format!("{e:#}") })?;
        Self::from_component(rt, file, component, crate::files::sha256_hex(&bytes))
    }

    /// Checks a compiled component (contract, role, linking, `info`) and prepares it.
    pub fn from_component(
        rt: &Runtime,
        file: &Path,
        component: Component,
        hash: String,
    ) -> Result<Plugin, PluginError> {
        let host = Version::parse(CONTRACT).expect("the host's contract version is semver");
        let ty = component.component_type();
        let mut roles = Vec::new();
        let mut contract: Option<Version> = None;
        let names = ty.imports(&rt.engine).map(|(n, _)| n.to_string()).chain(ty.exports(&rt.engine).map(|(n, _)| {
            if let Some((iface, _)) = contract_name(n) {
                match iface {
                    "router" => roles.push(Role::Router),
                    "text-scorer" => roles.push(Role::TextScorer),
                    "fuser" => roles.push(Role::Fuser),
                    _ => {}
                }
            }
            n.to_string()
        }));
        for n in names.collect::<Vec<_>>() {
            let Some((_, v)) = contract_name(&n) else { continue };
            let v = v.unwrap_or(Version::new(0, 0, 0));
            if v.major != host.major || v.minor > host.minor || (v.minor == host.minor && v.patch > host.patch) {
                return Err(PluginError::Contract { file: file.into(), found: v.to_string(), host: host.to_string() });
            }
            contract = Some(contract.map_or(v.clone(), |c| c.max(v)));
        }
        let role = match roles.as_slice() {
            [] => return Err(PluginError::NoRole { file: file.into() }),
            [r] => *r,
            many => {
                let roles = many.iter().map(|r| r.as_str().to_string()).collect();
                return Err(PluginError::ManyRoles { file: file.into(), roles });
            }
        };
        let link = |e: wasmtime::Error| PluginError::Link { file: file.into(), reason: format!("{e:#}") };
        let mut linker = rt.linker.clone();
        stub_foreign_imports(&mut linker, &component, &rt.engine).map_err(link)?;
        let pre = linker.instantiate_pre(&component).map_err(link)?;
        let meta = meta::GuestIndices::new(&pre).map_err(link)?;
        let indices = match role {
            Role::Router => RoleIndices::Router(router::GuestIndices::new(&pre).map_err(link)?),
            Role::TextScorer => RoleIndices::TextScorer(text_scorer::GuestIndices::new(&pre).map_err(link)?),
            Role::Fuser => RoleIndices::Fuser(fuser::GuestIndices::new(&pre).map_err(link)?),
        };
        let info_err = |reason: String| PluginError::Info { file: file.into(), reason };
        let mut store = rt.new_store();
        store.set_fuel(SETUP_FUEL).map_err(|e| info_err(e.to_string()))?;
        start_call(&mut store, SETUP_TIME);
        let info = super::block::block_on(async {
            let instance = pre.instantiate_async(&mut store).await?;
            meta.load(&mut store, &instance)?.call_info(&mut store).await
        })
        .map_err(|e| info_err(format!("{e:#}")))?;
        let version = Version::parse(&info.version)
            .map_err(|e| info_err(format!("version {:?} is not semver: {e}", info.version)))?;
        let schema = serde_json::from_str(&info.params_schema)
            .map_err(|e| info_err(format!("parameter schema is not JSON: {e}")))?;
        crate::schema::check_schema(&schema).map_err(|e| info_err(format!("parameter schema: {e}")))?;
        Ok(Plugin {
            hash,
            name: info.name,
            version,
            role,
            contract: contract.unwrap_or(host),
            file: file.into(),
            schema,
            pre,
            meta,
            indices,
        })
    }
}

/// Every import outside `cascade:policy` and the WASI the linker provides (runtime/wasi.rs) is
/// defined as a function that traps when called. `cascade:policy` imports are left to the
/// linker, which resolves an older 1.x name to the host's definition; wasmtime's own
/// `define_unknown_imports_as_traps` would shadow those with fresh stubs.
fn stub_foreign_imports(
    linker: &mut wasmtime::component::Linker<StoreState>,
    component: &Component,
    engine: &wasmtime::Engine,
) -> wasmtime::Result<()> {
    use wasmtime::component::types::ComponentItem;
    use wasmtime::component::ResourceType;
    for (name, item) in component.component_type().imports(engine) {
        // WASI the linker defines is left to it: `linker.instance` on an older 0.2 name would
        // make a second, partial instance that hides the semver match
        if name.starts_with(PACKAGE) || super::wasi::provided(name) {
            continue;
        }
        match item.ty {
            ComponentItem::ComponentInstance(inst) => {
                let mut li = linker.instance(name)?;
                for (export, ty) in inst.exports(engine) {
                    let full = format!("{name}#{export}");
                    match ty.ty {
                        ComponentItem::ComponentFunc(_) => {
                            li.func_new(export, move |_, _, _, _| {
                                wasmtime::bail!("{full} is not available to plugins")
                            })?;
                        }
                        ComponentItem::Resource(_) => li.resource(export, ResourceType::host::<()>(), |_, _| Ok(()))?,
                        _ => {}
                    }
                }
            }
            ComponentItem::ComponentFunc(_) => {
                let full = name.to_string();
                linker
                    .root()
                    .func_new(name, move |_, _, _, _| wasmtime::bail!("{full} is not available to plugins"))?;
            }
            _ => {}
        }
    }
    Ok(())
}

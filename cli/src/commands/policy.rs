//! `cascade policy`: policies written in Python or JavaScript. `new` copies the language's
//! template (a router, a text scorer and a fuser) into a folder; `build` turns one file into a
//! component with the language's tool (componentize-py, componentize-js), then loads it as the server would
//! (contract, role, `info`, schema; with `--params`, a configured instance) before it moves it
//! into place, so a file that would be refused never reaches a watched components folder.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cascade_host::reload::cache::{sha256_hex, CompileCache};
use cascade_host::runtime::{Bound, Limits, Plugin, PluginError, Runtime, RuntimeConfig};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Args)]
pub struct PolicyCommand {
    #[command(subcommand)]
    cmd: PolicyCmd,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Copy the language's template (router, text scorer, fuser) into a new folder.
    New(NewArgs),
    /// Build a policy file into a component, check it loads, and put it in the components folder.
    Build(BuildArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Lang {
    Python,
    Javascript,
}

impl Lang {
    fn of(file: &Path) -> anyhow::Result<Lang> {
        match file.extension().and_then(|e| e.to_str()) {
            Some("py") => Ok(Lang::Python),
            Some("js" | "mjs") => Ok(Lang::Javascript),
            _ => bail!("{}: a policy is a .py or .js file", file.display()),
        }
    }

    fn template(self, tools: &Path) -> PathBuf {
        match self {
            Lang::Python => tools.join("plugins/python/template"),
            Lang::Javascript => tools.join("plugins/js/template"),
        }
    }

    /// The program and arguments that build `src` into `out`.
    fn builder(self, tools: &Path, src: &Path, out: &Path, wit: Option<&Path>) -> Command {
        let mut c = match self {
            Lang::Python => {
                let mut c = Command::new(tools.join(".cache/policy-venv/bin/python"));
                c.arg(tools.join("plugins/python/build.py"));
                c
            }
            Lang::Javascript => {
                let mut c = Command::new("node");
                c.arg(tools.join("plugins/js/build.mjs"));
                c
            }
        };
        c.arg(src).arg("-o").arg(out).arg("--quiet");
        if let Some(w) = wit {
            c.arg("--wit").arg(w);
        }
        c
    }
}

#[derive(Args)]
struct NewArgs {
    /// The language of the template.
    #[arg(long, value_enum, default_value = "python")]
    lang: Lang,
    /// The folder to create (it must not exist, or be empty).
    dir: PathBuf,
    /// Where the project's policy tools are (default: the project the binary was built in).
    #[arg(long, env = "CASCADE_TOOLS")]
    tools: Option<PathBuf>,
}

#[derive(Args)]
struct BuildArgs {
    /// The policy file: `.py` (componentize-py) or `.js` (componentize-js).
    file: PathBuf,
    /// Where the component goes (default: `<components>/<folder>-<file>.wasm`).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Compiled components folder for the default `--out` (default: `target/components` beside
    /// the binary).
    #[arg(long, env = "CASCADE_COMPONENTS")]
    components: Option<PathBuf>,
    /// Build against another contract version's WIT folder (default: the current one).
    #[arg(long)]
    wit: Option<PathBuf>,
    /// Compiled components are cached here, as `serve` caches them (default:
    /// `target/component-cache` beside the binary).
    #[arg(long)]
    compile_cache: Option<PathBuf>,
    /// Parameters (JSON) to configure one instance with, as a hotkey would.
    #[arg(long)]
    params: Option<String>,
    /// Where the project's policy tools are (default: the project the binary was built in).
    #[arg(long, env = "CASCADE_TOOLS")]
    tools: Option<PathBuf>,
}

fn tools_dir(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| cascade_host::beside_exe(".."))
}

impl PolicyCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self.cmd {
            PolicyCmd::New(a) => new(a),
            PolicyCmd::Build(a) => build(a),
        }
    }
}

fn new(a: NewArgs) -> anyhow::Result<ExitCode> {
    let template = a.lang.template(&tools_dir(a.tools));
    let folder = a.dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let valid = folder.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && folder.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("{folder:?}: the folder names the components (`<folder>-router`, ...): lower-case letters, digits and '-', starting with a letter");
    }
    if a.dir.exists() && std::fs::read_dir(&a.dir)?.next().is_some() {
        bail!("{} exists and is not empty", a.dir.display());
    }
    std::fs::create_dir_all(&a.dir)?;
    let mut files: Vec<_> = std::fs::read_dir(&template)
        .with_context(|| format!("the template {}", template.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    // the copies get names of their own (`<folder>-router`, ...): two components may not share one
    for f in files {
        let to = a.dir.join(f.file_name().unwrap_or_default());
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let text =
            text.replace("\"py-template-", &format!("\"{folder}-")).replace("\"js-template-", &format!("\"{folder}-"));
        std::fs::write(&to, text)?;
        println!("{}", to.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let lang = Lang::of(&a.file)?;
    let tools = tools_dir(a.tools);
    let out = a.out.unwrap_or_else(|| {
        let folder = a.file.canonicalize().ok().and_then(|p| p.parent()?.file_name().map(|n| n.to_owned()));
        let stem = a.file.file_stem().unwrap_or_default().to_string_lossy().replace('_', "-");
        let name = match folder {
            Some(f) => format!("{}-{stem}.wasm", f.to_string_lossy()),
            None => format!("{stem}.wasm"),
        };
        a.components.unwrap_or_else(|| cascade_host::beside_exe("components")).join(name)
    });
    // built and checked outside the (possibly watched) folder, then renamed in
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let work = Scratch(dir.join(format!(".cascade-build-{}", std::process::id())));
    std::fs::create_dir_all(&work.0)?;
    let part = work.0.join("policy.wasm");
    let t0 = Instant::now();
    let status = lang
        .builder(&tools, &a.file, &part, a.wit.as_deref())
        .status()
        .with_context(|| format!("running the {} builder (did `make setup` run?)", lang_name(lang)))?;
    if !status.success() {
        eprintln!("error: {} was not built (the builder's message is above)", a.file.display());
        return Ok(ExitCode::from(1));
    }
    let built = t0.elapsed();
    let rt = Arc::new(Runtime::new(RuntimeConfig::default()).context("starting the component runtime")?);
    let t1 = Instant::now();
    // compiled through the server's cache, so that its first load of this component is quick
    let cache = CompileCache::new(
        &rt.engine,
        Some(a.compile_cache.unwrap_or_else(|| cascade_host::beside_exe("component-cache"))),
    );
    let bytes = std::fs::read(&part)?;
    let hash = sha256_hex(&bytes);
    let loaded = cache
        .component(&rt.engine, &bytes, &hash)
        .map_err(|e| PluginError::Compile { file: part.clone(), reason: format!("{e:#}") })
        .and_then(|(c, _)| Plugin::from_component(&rt, &part, c, hash));
    let plugin = match loaded {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("error: {} built, but the host refuses it: {e}", a.file.display());
            return Ok(ExitCode::from(1));
        }
    };
    let compiled = t1.elapsed();
    if let Some(params) = &a.params {
        if let Err(e) = configure(rt, plugin.clone(), params) {
            eprintln!("error: {}: {e}", a.file.display());
            return Ok(ExitCode::from(1));
        }
    }
    std::fs::rename(&part, &out).with_context(|| format!("moving the component to {}", out.display()))?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: {}@{} {} (contract {}), {:.1} MB, built in {:.1} s, compiled in {:.1} s",
        out.display(),
        plugin.name,
        plugin.version,
        plugin.role.as_str(),
        plugin.contract,
        size as f64 / 1e6,
        built.as_secs_f64(),
        compiled.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// A build folder, removed with whatever is left in it.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lang_name(l: Lang) -> &'static str {
    match l {
        Lang::Python => "Python (componentize-py)",
        Lang::Javascript => "JavaScript (componentize-js)",
    }
}

/// Checks `params` against the component's schema and configures one instance with them.
fn configure(rt: Arc<Runtime>, plugin: Arc<Plugin>, params: &str) -> anyhow::Result<()> {
    let value: serde_json::Value = serde_json::from_str(params).context("--params is not JSON")?;
    let problems = cascade_host::schema::validate(&value, &plugin.schema);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        bail!("parameters refused by the schema: {}", list.join("; "));
    }
    let defaults = cascade_host::config::LimitsConfig::default();
    let limits = Limits { fuel: defaults.fuel, time: Duration::from_millis(defaults.call_ms) };
    Bound::new(rt, plugin, "policy-build", params.to_string(), limits).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

//! `cascade check`: one pass of the loading pipeline `serve` runs, printing what would run
//! and every problem (non-zero exit when there is one).

use std::process::ExitCode;
use std::sync::Arc;

use cascade_host::chain::health::Severity;
use cascade_host::load;
use cascade_host::reload::one_line;
use clap::Args;

use super::SourceArgs;

#[derive(Args)]
pub struct CheckCommand {
    #[command(flatten)]
    src: SourceArgs,
}

impl CheckCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let (rt, src) = self.src.setup()?;
        println!("policies:   {}", src.policies.display());
        println!("components: {}", src.components.display());
        // one pass of the same pipeline `serve` runs: every problem is printed once
        let (state, problems) = load::load_all(&rt, &src);
        for p in &state.plugins {
            println!("component   {}", load::describe_plugin(p));
        }
        for m in &state.registry.models {
            match (&m.vlm, &m.remote) {
                (Some(v), _) => println!("model       {} {} {} ({})", m.name, m.kind.as_str(), v.url, v.model),
                (_, Some(r)) => println!("model       {} {} {} (KServe v2)", m.name, m.kind.as_str(), r.url),
                _ => println!("model       {} {} {}", m.name, m.kind.as_str(), m.file.display()),
            }
        }
        for h in state.hotkeys.values() {
            let role = |b: &Option<Arc<cascade_host::runtime::Bound>>| {
                b.as_ref().map_or("-".to_string(), |b| format!("{}@{}", b.plugin.name, b.plugin.version))
            };
            println!(
                "hotkey      {} router={}@{} text_scorer={} fuser={} fallback={} ({})",
                h.name,
                h.stable.router.plugin.name,
                h.stable.router.plugin.version,
                role(&h.stable.roles.text_scorer),
                role(&h.stable.roles.fuser),
                h.fallback.map_or("none".to_string(), |f| f.to_string()),
                h.file.display()
            );
            if let Some((file, c)) = &h.calibration {
                println!("calibration {} {}: p = sigmoid({:.3}·logit(score) {:+.3})", h.name, file.display(), c.a, c.b);
            }
            if let Some(line) = h.describe_axon(&state.chain) {
                println!("axon        {line}");
            }
        }
        for w in &state.warnings {
            println!("warning     {}", one_line(&w.to_string()));
        }
        // what keeps validators from answers fails the check like a broken file: a miner that
        // refuses every validator earns nothing and nothing else looks wrong
        let mut problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        for a in state.hotkeys.values().flat_map(|h| h.alarms(&state.chain)) {
            match a.severity {
                Severity::Refusing => problems.push(a.to_string()),
                Severity::Degraded => println!("warning     {a}"),
            }
        }
        if problems.is_empty() {
            println!("ok");
            return Ok(ExitCode::SUCCESS);
        }
        for p in &problems {
            println!("problem     {}", one_line(p));
        }
        println!("{} problem(s)", problems.len());
        Ok(ExitCode::FAILURE)
    }
}

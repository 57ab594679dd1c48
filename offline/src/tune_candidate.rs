//! The candidate hotkey file `cascade tune` writes: the operator's own file, edited in place
//! (`toml_edit`: its comments, order and layout kept), with the tuned setting as the
//! `[candidate]` arm and a canary `[rollout]` when it has none. Written to a temporary file
//! beside the target and renamed over it, so a failure leaves nothing half-written.

use std::path::Path;

use anyhow::Context;
use serde_json::Value;
use toml_edit::{DocumentMut, Item, Table};

/// Writes `out`: `hotkey_file` with `[candidate]` set to the stable arm's router (and fuser)
/// components with these parameters.
pub fn write(
    hotkey_file: &Path,
    out: &Path,
    router_params: &Value,
    fuser_params: Option<&Value>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(hotkey_file).with_context(|| format!("reading {}", hotkey_file.display()))?;
    let edited = edit(&text, &hotkey_file.display().to_string(), router_params, fuser_params)?;
    write_whole(out, &edited)
}

/// The edited text (separate from the file system, for tests).
pub fn edit(text: &str, from: &str, router_params: &Value, fuser_params: Option<&Value>) -> anyhow::Result<String> {
    let mut doc: DocumentMut = text.parse().with_context(|| format!("{from} is not TOML"))?;
    let component = |doc: &DocumentMut, role: &str, default: &str| {
        doc.get(role).and_then(|r| r.get("component")).and_then(|c| c.as_str()).unwrap_or(default).to_string()
    };
    let mut cand = Table::new();
    cand.set_implicit(true);
    cand.insert("router", role(&component(&doc, "router", "cascade-router@^1"), router_params)?);
    if let Some(fp) = fuser_params {
        cand.insert("fuser", role(&component(&doc, "fuser", "weighted@^1"), fp)?);
    }
    if let Some(Item::Table(router)) = cand.get_mut("router") {
        router.decor_mut().set_prefix(format!(
            "\n# The tuned setting, written by `cascade tune` from {from}: rolled out as a canary\n# against the stable policy above.\n"
        ));
    }
    // after everything the operator wrote, in the order built here
    let mut next = last_position(doc.as_table()) + 1;
    renumber(&mut cand, &mut next);
    doc.insert("candidate", Item::Table(cand));
    if !doc.contains_key("rollout") {
        let mut r = Table::new();
        r.insert("mode", toml_edit::value("canary"));
        let mut steps = toml_edit::Array::new();
        for s in [5.0, 25.0, 50.0] {
            steps.push(s);
        }
        r.insert("steps", toml_edit::value(steps));
        r.insert("min_requests", toml_edit::value(100));
        r.set_position(next);
        doc.insert("rollout", Item::Table(r));
    }
    Ok(doc.to_string())
}

/// `[candidate.<role>]`: the component and its parameters, as tables (never an empty header).
fn role(component: &str, params: &Value) -> anyhow::Result<Item> {
    let mut t = Table::new();
    t.insert("component", toml_edit::value(component));
    let mut params = params.clone();
    prune_empty(&mut params);
    let params_text = toml::to_string(&toml::Value::try_from(&params).context("parameters as TOML")?)?;
    let params_doc: DocumentMut = params_text.parse().context("parameters as TOML")?;
    let mut p = params_doc.as_table().clone();
    implicit_when_empty(&mut p);
    t.insert("params", Item::Table(p));
    Ok(Item::Table(t))
}

/// The largest document position of a table in `t` (0 when none has one).
fn last_position(t: &Table) -> usize {
    let mut m = t.position().unwrap_or(0);
    for (_, v) in t.iter() {
        match v {
            Item::Table(sub) => m = m.max(last_position(sub)),
            Item::ArrayOfTables(a) => m = a.iter().map(last_position).fold(m, usize::max),
            _ => {}
        }
    }
    m
}

/// Gives `t` and every table under it the next document positions, depth first.
fn renumber(t: &mut Table, next: &mut usize) {
    t.set_position(*next);
    *next += 1;
    for (_, v) in t.iter_mut() {
        match v {
            Item::Table(sub) => renumber(sub, next),
            Item::ArrayOfTables(a) => a.iter_mut().for_each(|e| renumber(e, next)),
            _ => {}
        }
    }
}

/// Drops empty objects (a fuser with no boosts): they would be empty tables.
fn prune_empty(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.as_object().is_some_and(|m| m.is_empty()));
        o.values_mut().for_each(prune_empty);
    } else if let Some(a) = v.as_array_mut() {
        a.iter_mut().for_each(prune_empty);
    }
}

/// Marks tables that hold only other tables implicit, so no header stands alone.
fn implicit_when_empty(t: &mut Table) {
    let only_tables = t.iter().all(|(_, v)| v.is_table() || v.is_array_of_tables());
    t.set_implicit(only_tables);
    // a stage's name first, as people write them
    t.sort_values_by(|a, _, b, _| (a.get() != "name").cmp(&(b.get() != "name")));
    for (_, v) in t.iter_mut() {
        match v {
            Item::Table(sub) => implicit_when_empty(sub),
            Item::ArrayOfTables(a) => a.iter_mut().for_each(implicit_when_empty),
            _ => {}
        }
    }
}

/// Writes `text` to `path` whole or not at all: a temporary file beside it, then a rename.
fn write_whole(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write the candidate {} (nothing was written)", path.display()));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    const HOTKEY: &str = r#"# speed: the classifier, then a mirrored look
name = "two"  # the hotkey's name

[router]
component = "cascade-router@^1"
# the first look
[[router.params.stages]]
name = "first"
classify = ["tint"]
exit_low = 0.3
exit_high = 0.7
[[router.params.stages]]
name = "mirror"
classify = ["tint"]

[fuser]
component = "weighted@^1"
params.weights = { tint = 1.0, "tint:flip" = 1.0 }
"#;

    #[test]
    fn the_original_stays_as_written_and_the_candidate_follows() {
        let router = json!({"stages": [
            {"name": "first", "classify": ["tint"], "exit_low": 0.25, "exit_high": 0.8},
            {"name": "mirror", "classify": ["tint"]},
        ]});
        let fuser = json!({"weights": {"tint": 1.0, "tint:flip": 0.5}, "boost": {}});
        let out = super::edit(HOTKEY, "two.toml", &router, Some(&fuser)).unwrap();
        assert!(out.starts_with(HOTKEY), "the operator's file, comments and order kept:\n{out}");
        let added = &out[HOTKEY.len()..];
        assert!(added.contains("# The tuned setting, written by `cascade tune` from two.toml"), "{added}");
        assert!(added.contains("[candidate.router]\ncomponent = \"cascade-router@^1\""), "{added}");
        assert!(added.contains("[[candidate.router.params.stages]]\nname = \"first\""), "{added}");
        assert!(added.contains("exit_low = 0.25"), "{added}");
        assert!(added.contains("[candidate.fuser.params.weights]"), "{added}");
        assert!(added.contains("[rollout]\nmode = \"canary\""), "{added}");
        // no header stands alone: each is followed by a key, or is an array-of-tables entry
        let lines: Vec<&str> = added.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
        for w in lines.windows(2) {
            assert!(
                !(w[0].starts_with('[') && w[1].starts_with('[') && !w[1].starts_with("[[")),
                "empty table {}:\n{added}",
                w[0]
            );
        }
        for empty in ["[candidate]\n", "[candidate.router.params]\n", "[candidate.fuser.params]\n"] {
            assert!(!added.contains(empty), "{empty}: {added}");
        }
        // what it wrote is one hotkey file with both arms
        let back: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(back["candidate"]["router"]["params"]["stages"][0]["exit_high"].as_float(), Some(0.8));
        assert_eq!(back["router"]["params"]["stages"][0]["exit_high"].as_float(), Some(0.7));
        // a rollout the operator already wrote is kept
        let own = format!("{HOTKEY}[rollout]\nmode = \"shadow\"\n");
        let out = super::edit(&own, "two.toml", &router, None).unwrap();
        assert!(out.contains("mode = \"shadow\"") && !out.contains("mode = \"canary\""), "{out}");
    }

    #[test]
    fn an_unwritable_target_says_so_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("tune-cand-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("no-such-folder").join("out.toml");
        let e = super::write_whole(&target, "x = 1\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot write the candidate") && format!("{e:#}").contains("out.toml"),
            "{e:#}"
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

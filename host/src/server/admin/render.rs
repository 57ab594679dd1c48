//! The status page's content, rendered on the server: the page shows everything with
//! JavaScript off, and its script only fetches this fragment again every two seconds. Every
//! value that comes from outside (hotkey and caller names, refusal reasons, file names, stage
//! names a component chose) is escaped here, once.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::server::activity::{HotkeySummary, OTHER, SCORE_BINS};
use crate::server::state::Server;

/// Text made safe for HTML element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `3 s`, `4 min`, `2.5 h`, `3.1 d`.
fn span(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86400.0),
    }
}

fn ago(at_ms: u64, now: u64) -> String {
    format!("{} ago", span(now.saturating_sub(at_ms) as f64 / 1e3))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| if v < 10.0 { format!("≤ {v:.1} ms") } else { format!("≤ {v:.0} ms") })
}

/// One table: a caption-less header row and rows of already-escaped cells; "none" when empty.
fn table(out: &mut String, id: &str, head: &[&str], rows: &[Vec<String>]) {
    let _ = write!(out, "<table id=\"{id}\"><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(out, "<tr><td class=\"muted\" colspan=\"{}\">none</td></tr>", head.len());
    }
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{c}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

/// The page's content (what `#content` holds).
pub(crate) fn content(server: &Server) -> String {
    let s = server.serving.load();
    let now = now_ms();
    let mut out = String::new();

    // 1. the alarms, first and in red: what keeps validators from answers
    let alarms = s.alarms();
    if !alarms.is_empty() {
        out.push_str("<div id=\"alarms\" class=\"banner\" role=\"alert\"><strong>Validators are not being answered as they should be</strong><ul>");
        for a in &alarms {
            let _ = write!(
                out,
                "<li data-kind=\"{}\">{} <span class=\"fix\">Fix: {}</span></li>",
                a.kind.as_str(),
                esc(&a.message),
                esc(&a.fix)
            );
        }
        out.push_str("</ul></div>");
    }

    // 2. the summary line
    let st = server.status.lock();
    let chain = match &s.chain.metagraph {
        Some(m) => {
            let age = (crate::chain::now_unix_s() - m.taken_at).max(0.0);
            let stale = if age > s.chain.config.stale_after_s { " (STALE)" } else { "" };
            format!("metagraph block {}, {} old{stale}", m.block, span(age))
        }
        None => "no metagraph snapshot".into(),
    };
    let (hits, waits, misses) = crate::metrics::global().stage_cache_counts();
    let looked = hits + waits + misses;
    let cache = if looked == 0 {
        "stage cache: no lookups yet".to_string()
    } else {
        format!("stage cache hit rate {:.0} % of {looked} lookups", 100.0 * (hits + waits) as f64 / looked as f64)
    };
    let _ = write!(
        out,
        "<p id=\"summary\" class=\"muted\">cascade {} · up {} · generation {} · reloads {} (applied {}, refused {}) · {} · {}</p>",
        env!("CARGO_PKG_VERSION"),
        span(server.started.elapsed().as_secs_f64()),
        s.generation,
        st.reloads,
        st.applied,
        st.refused,
        esc(&chain),
        cache
    );

    // 3. hotkeys: what serves each
    out.push_str("<h2>Hotkeys</h2>");
    let role = |b: &crate::runtime::Bound| esc(&format!("{}@{}", b.plugin.name, b.plugin.version));
    let opt = |b: Option<&std::sync::Arc<crate::runtime::Bound>>| b.map_or("–".into(), |b| role(b));
    let rows: Vec<Vec<String>> = s
        .hotkeys
        .iter()
        .map(|(name, h)| {
            vec![
                esc(name),
                format!(
                    "{} / {} / {}",
                    role(&h.stable.router),
                    opt(h.stable.roles.text_scorer.as_ref()),
                    opt(h.stable.roles.fuser.as_ref())
                ),
                h.rollout
                    .as_ref()
                    .map_or("<span class=\"muted\">stable only</span>".into(), |r| esc(&r.json().to_string())),
                h.describe_axon(&s.chain).map_or("<span class=\"muted\">HTTP only</span>".into(), |l| esc(&l)),
            ]
        })
        .collect();
    table(&mut out, "hotkeys", &["hotkey", "router / text scorer / fuser", "rollout", "axon"], &rows);

    // 4. each hotkey's last hour
    let names: Vec<&str> = s.hotkeys.keys().map(String::as_str).collect();
    for h in server.activity.summary(names) {
        hotkey_hour(&mut out, &h, &s.chain, now);
    }

    // 5. what the last reloads refused, and notes that do not stop serving
    out.push_str("<h2>Refused changes</h2>");
    let rows: Vec<Vec<String>> = st
        .outstanding
        .values()
        .map(|r| {
            vec![
                esc(&r.file.display().to_string()),
                format!("<span class=\"bad\">{}</span>", esc(&r.reason)),
                ago(r.at_unix_ms as u64, now),
            ]
        })
        .collect();
    table(&mut out, "refusals", &["file", "reason", "when"], &rows);
    out.push_str("<h2>Load notes</h2>");
    let rows: Vec<Vec<String>> =
        st.notes.iter().map(|p| vec![esc(&p.file.display().to_string()), esc(&p.message)]).collect();
    table(
        &mut out,
        "notes",
        &["file", "note (a stage's model missing from the registry, an optional model left out)"],
        &rows,
    );
    drop(st);

    // 6. prediction logs: what reached the disk, and whether a log is failing now
    let logs = crate::predlog::counts();
    if !logs.is_empty() {
        out.push_str("<h2>Prediction logs</h2>");
        let rows: Vec<Vec<String>> = logs
            .iter()
            .map(|(dir, c)| {
                let state = match c.failing.lock().as_deref() {
                    Some(e) => format!("<span class=\"bad\">failing: {} (records dropped; retrying)</span>", esc(e)),
                    None => "<span class=\"ok\">writing</span>".into(),
                };
                vec![
                    esc(&dir.display().to_string()),
                    c.written.load(Relaxed).to_string(),
                    c.dropped.load(Relaxed).to_string(),
                    c.errors.load(Relaxed).to_string(),
                    state,
                ]
            })
            .collect();
        table(&mut out, "logs", &["folder", "on disk", "dropped (queue full)", "lost (write errors)", "state"], &rows);
    }

    // 7. models
    out.push_str("<h2>Models</h2>");
    let rows: Vec<Vec<String>> = s
        .models
        .stats()
        .map(|(name, m)| {
            let (kind, device) = s.models.spec(name).map_or(("–".into(), "–".into()), |sp| {
                (
                    sp.kind.as_str().to_string(),
                    if sp.remote.is_some() || sp.vlm.is_some() { "remote".into() } else { sp.device.to_string() },
                )
            });
            let (runs, items) = (m.runs.load(Relaxed), m.items.load(Relaxed));
            vec![
                esc(name),
                esc(&kind),
                esc(&device),
                m.loaded.load(Relaxed).to_string(),
                runs.to_string(),
                items.to_string(),
                if runs == 0 { "–".into() } else { format!("{:.1}", items as f64 / runs as f64) },
                m.failures.load(Relaxed).to_string(),
                format!("{:.2}", m.busy_ns.load(Relaxed) as f64 / 1e9),
            ]
        })
        .collect();
    table(
        &mut out,
        "models",
        &["model", "kind", "device", "loaded workers", "runs", "images", "mean batch", "failures", "busy s"],
        &rows,
    );

    // 8. the last answers
    out.push_str("<h2>Recent answers</h2>");
    let rows: Vec<Vec<String>> = server
        .recent
        .lock()
        .iter()
        .rev()
        .take(20)
        .map(|a| {
            let cls = if a.outcome == "ok" { "ok" } else { "bad" };
            vec![
                ago(a.at_unix_ms as u64, now),
                esc(&a.hotkey),
                a.arm.to_string(),
                esc(&a.stage),
                format!("<span class=\"{cls}\">{}</span>", a.outcome),
                format!("{:.1}", a.ms),
            ]
        })
        .collect();
    table(&mut out, "recent", &["when", "hotkey", "arm", "stage", "outcome", "ms"], &rows);
    out
}

/// One hotkey's last hour: who called, what it answered, what it refused.
fn hotkey_hour(out: &mut String, h: &HotkeySummary, chain: &crate::chain::Chain, now: u64) {
    let id = if h.hotkey == OTHER { "other".to_string() } else { format!("hk-{}", esc(&h.hotkey)) };
    let _ = write!(out, "<section class=\"hour\" id=\"{id}\"><h2>{} · last hour</h2>", esc(&h.hotkey));
    if h.hotkey != OTHER {
        let _ = write!(
            out,
            "<p class=\"muted\">{} answers · latency p50 {} · p99 {}</p>",
            h.answers,
            ms(h.p50_ms),
            ms(h.p99_ms)
        );
        out.push_str("<h3>Validator queries by caller</h3>");
        let rows: Vec<Vec<String>> = h
            .callers
            .iter()
            .map(|c| {
                let standing =
                    chain.metagraph.as_ref().and_then(|m| m.standing(&c.caller).map(|s| (s.stake, s.validator_permit)));
                let stake = standing.map_or("not registered".into(), |(stake, permit)| {
                    format!("{stake:.1}{}", if permit { " (validator permit)" } else { "" })
                });
                let statuses: Vec<String> = c
                    .statuses
                    .iter()
                    .map(|(st, n)| {
                        format!("<span class=\"pill {}\">{st} × {n}</span>", if *st == 200 { "ok" } else { "bad" })
                    })
                    .collect();
                vec![
                    format!("<code>{}</code>", esc(&c.caller)),
                    esc(&stake),
                    c.count.to_string(),
                    ago(c.last_seen_ms, now),
                    statuses.join(" "),
                ]
            })
            .collect();
        table(out, &format!("{id}-callers"), &["caller", "stake", "queries", "last seen", "statuses"], &rows);
        out.push_str("<h3>Answers by stage and outcome</h3>");
        let rows: Vec<Vec<String>> = h
            .by_stage
            .iter()
            .map(|(stage, outcome, n)| vec![esc(stage), (*outcome).to_string(), n.to_string()])
            .collect();
        table(out, &format!("{id}-stages"), &["stage (exit)", "outcome", "answers"], &rows);
        scores(out, &id, &h.scores);
    }
    out.push_str("<h3>Refusals by status and code</h3>");
    let rows: Vec<Vec<String>> = h
        .refusals
        .iter()
        .map(|r| {
            vec![
                r.status.to_string(),
                esc(r.code),
                r.count.to_string(),
                format!("<span class=\"bad\">{}</span>", esc(&r.last_reason)),
            ]
        })
        .collect();
    table(out, &format!("{id}-refusals"), &["status", "code", "count", "latest reason"], &rows);
    out.push_str("</section>");
}

/// The score histogram as bars, with a warning when most answers sit near 0.5.
fn scores(out: &mut String, id: &str, bins: &[u64; SCORE_BINS]) {
    let total: u64 = bins.iter().sum();
    out.push_str("<h3>Scores</h3>");
    if total == 0 {
        out.push_str("<p class=\"muted\">no answers in the last hour</p>");
        return;
    }
    let middle = bins[SCORE_BINS / 2 - 1] + bins[SCORE_BINS / 2];
    if middle * 2 > total {
        let _ = write!(
            out,
            "<p class=\"bad\">{:.0} % of scores are within 0.4–0.6: the policy is unsure of most images</p>",
            100.0 * middle as f64 / total as f64
        );
    }
    let top = *bins.iter().max().unwrap_or(&1).max(&1);
    let _ = write!(out, "<div class=\"hist\" id=\"{id}-scores\">");
    for (i, n) in bins.iter().enumerate() {
        let lo = i as f64 / SCORE_BINS as f64;
        let _ = write!(
            out,
            "<div class=\"bin\"><span class=\"label\">{lo:.1}–{:.1}</span><span class=\"bar\" style=\"width:{:.0}%\"></span><span class=\"n\">{n}</span></div>",
            lo + 0.1,
            100.0 * *n as f64 / top as f64
        );
    }
    out.push_str("</div>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        let mut out = String::new();
        table(&mut out, "t", &["a"], &[]);
        assert!(out.contains("colspan=\"1\">none"));
        assert_eq!(span(59.0), "59 s");
        assert_eq!(span(3600.0), "60 min");
        assert_eq!(span(9000.0), "2.5 h");
    }
}

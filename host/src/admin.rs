//! The admin API: `GET /admin/status` (what serves each hotkey, counters, refusals). Bound to
//! loopback callers unless `--admin-token` is set, in which case the token is required from
//! anyone else.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::reload::{RefusedChange, Snapshot};
use crate::server::{json_response, Refusal, Server};

/// Reload history: counts, and the latest refusal per file until that file is accepted.
#[derive(Default)]
pub struct ReloadStatus {
    pub reloads: u64,
    pub applied: u64,
    pub refused: u64,
    pub outstanding: BTreeMap<PathBuf, RefusedChange>,
    pub last_reload_ms: f64,
}

impl ReloadStatus {
    pub fn record(&mut self, snap: &Snapshot) {
        self.reloads += 1;
        self.last_reload_ms = snap.took.as_secs_f64() * 1e3;
        if !snap.applied.is_empty() {
            self.applied += 1;
        }
        for f in &snap.applied {
            self.outstanding.remove(f);
        }
        for r in &snap.refused {
            self.refused += 1;
            crate::metrics::global().refusal();
            self.outstanding.insert(r.file.clone(), r.clone());
        }
        crate::metrics::global().reload(if !snap.refused.is_empty() {
            "refused"
        } else if snap.applied.is_empty() {
            "unchanged"
        } else {
            "applied"
        });
    }
}

fn authorised(server: &Server, req: &Request<Incoming>, peer: SocketAddr) -> bool {
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match &server.admin_token {
        Some(t) => peer.ip().is_loopback() || bearer == Some(t.as_str()),
        None => peer.ip().is_loopback(),
    }
}

pub fn handle(
    server: &Server,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, Refusal> {
    if !authorised(server, req, peer) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "admin-forbidden",
            "the admin API answers loopback callers, or callers with the admin token",
        ));
    }
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/admin/status") => Ok(json_response(StatusCode::OK, &status(server))),
        (&Method::POST, p) if p.starts_with("/admin/hotkeys/") => {
            let rest = &p["/admin/hotkeys/".len()..];
            let (hotkey, action) = rest.split_once('/').unwrap_or((rest, ""));
            let s = server.serving.load();
            let h = s.hotkeys.get(hotkey).ok_or_else(|| {
                Refusal::new(StatusCode::NOT_FOUND, "unknown-hotkey", format!("no hotkey named {hotkey:?}"))
            })?;
            let ro = h.rollout.as_ref().ok_or_else(|| {
                Refusal::new(StatusCode::CONFLICT, "no-rollout", format!("hotkey {hotkey} has no rollout"))
            })?;
            match action {
                "promote" => ro.promote("admin API"),
                "rollback" => ro.rollback("admin API"),
                _ => {
                    return Err(Refusal::new(
                        StatusCode::NOT_FOUND,
                        "not-found",
                        format!("no admin action {action:?} (promote, rollback)"),
                    ))
                }
            }
            Ok(json_response(StatusCode::OK, &json!({"hotkey": hotkey, "rollout": ro.json()})))
        }
        _ => Err(Refusal::new(StatusCode::NOT_FOUND, "not-found", format!("no admin route {path}"))),
    }
}

fn status(server: &Server) -> serde_json::Value {
    let s = server.serving.load();
    let st = server.status.lock();
    let hotkeys: serde_json::Map<String, serde_json::Value> = s
        .hotkeys
        .iter()
        .map(|(name, h)| {
            let role = |b: &crate::runtime::Bound| json!({"component": b.plugin.name, "version": b.plugin.version.to_string(), "contract": b.plugin.contract.to_string(), "file": b.plugin.file, "warm_instances": b.warm_instances()});
            let refusal = st.outstanding.get(&h.file);
            (
                name.clone(),
                json!({
                    "file": h.file,
                    "ss58": h.ss58,
                    "fallback": h.fallback,
                    "router": role(&h.stable.router),
                    "text_scorer": h.stable.roles.text_scorer.as_deref().map(role),
                    "fuser": h.stable.roles.fuser.as_deref().map(role),
                    "candidate": h.candidate.as_ref().map(|c| json!({
                        "router": role(&c.router),
                        "text_scorer": c.roles.text_scorer.as_deref().map(role),
                        "fuser": c.roles.fuser.as_deref().map(role),
                    })),
                    "rollout": h.rollout.as_ref().map(|r| r.json()),
                    "axon": crate::chain::describe(h, &s.chain),
                    "last_refusal": refusal,
                }),
            )
        })
        .collect();
    json!({
        "generation": s.generation,
        "hotkeys": hotkeys,
        "models": s.models.names().collect::<Vec<_>>(),
        "chain": chain_status(&s.chain),
        "reloads": {"total": st.reloads, "applied": st.applied, "refused": st.refused, "last_ms": st.last_reload_ms},
        "refusals": st.outstanding.values().collect::<Vec<_>>(),
    })
}

fn chain_status(c: &crate::chain::Chain) -> serde_json::Value {
    let now = crate::chain::now_unix_s();
    json!({
        "netuid": c.config.netuid,
        "default_rule": c.config.admit.as_ref().map(|r| r.describe()),
        "snapshot": c.metagraph.as_ref().map(|m| json!({
            "network": m.network,
            "block": m.block,
            "neurons": m.neurons,
            "taken_at": m.taken_at,
            "age_s": m.age_s(now),
            "stale": m.age_s(now) > c.config.stale_after_s,
        })),
    })
}

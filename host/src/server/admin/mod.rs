//! The admin API: `GET /admin` (the status page, rendered on the server by `render`),
//! `GET /admin/fragment` (its content alone, which the page's script fetches to refresh),
//! `GET /admin/status` (the same as JSON) and the rollout actions. Bound to loopback callers
//! unless `--admin-token` is set, in which case the token is required from anyone else.

mod render;

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use super::http::json_response;
use super::ingress::Refusal;
use super::state::Server;

/// Loopback callers, or any caller with the token. A browser on the operator's machine is a
/// loopback caller too, so a request that names a web origin or a host name other than a
/// loopback one (what a page's script, or DNS rebinding, sends) is not taken as local.
fn authorised(server: &Server, req: &Request<Incoming>, peer: SocketAddr) -> bool {
    let h = req.headers();
    // two Host or Origin headers: which one a proxy or a browser meant is anyone's guess
    if h.get_all(hyper::header::HOST).iter().count() > 1 || h.get_all(hyper::header::ORIGIN).iter().count() > 1 {
        return false;
    }
    let bearer =
        h.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // an empty token (an unset variable passed through) never admits anyone
    if let (Some(t), Some(b)) = (server.admin_token.as_ref().filter(|t| !t.is_empty()), bearer) {
        if same_secret(t.as_bytes(), b.as_bytes()) {
            return true;
        }
    }
    let host = h.get(hyper::header::HOST).and_then(|v| v.to_str().ok());
    let origin_ok = match h.get(hyper::header::ORIGIN) {
        None => true,
        // a state change only from this server's own page (its origin is the Host it was
        // loaded from), not from any other local web app on another port
        Some(o) if req.method() != Method::GET => o
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(_, rest)| Some(rest) == host && loopback_host(rest)),
        Some(o) => o.to_str().ok().and_then(|o| o.split_once("://")).is_some_and(|(_, rest)| loopback_host(rest)),
    };
    let host_ok = h.get(hyper::header::HOST).is_none_or(|v| v.to_str().is_ok_and(loopback_host));
    peer.ip().is_loopback() && origin_ok && host_ok
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub(super) fn loopback_host(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        (&Method::GET, "/admin" | "/admin/") => {
            let page = PAGE.replace("<!--content-->", &render::content(server));
            Ok(html(page))
        }
        (&Method::GET, "/admin/fragment") => Ok(html(render::content(server))),
        (&Method::GET, "/admin/status") => Ok(json_response(StatusCode::OK, &status(server))),
        (&Method::POST, "/admin/metagraph/accept") => {
            let (reload, force) = server.reload_hook.get().ok_or_else(|| {
                Refusal::new(StatusCode::CONFLICT, "no-reloader", "this server does not reload (started without one)")
            })?;
            force.store(true, std::sync::atomic::Ordering::SeqCst);
            let reload = reload.clone();
            // a reload can take seconds: off the request path; its result shows in /admin/status
            std::thread::Builder::new()
                .name("accept-snapshot".into())
                .spawn(move || reload())
                .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()))?;
            tracing::warn!("the next snapshot is taken whatever its order (POST /admin/metagraph/accept)");
            Ok(json_response(
                StatusCode::ACCEPTED,
                &json!({"accepted": "the snapshot file on disk is being loaded whatever its block; GET /admin/status for the result"}),
            ))
        }
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

/// An HTML response that loads nothing from elsewhere and runs only its own inline script.
fn html(body: String) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use hyper::header::{HeaderValue, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_FRAME_OPTIONS};
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ),
    );
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(hyper::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

fn status(server: &Server) -> serde_json::Value {
    let s = server.serving.load();
    let st = server.status.lock();
    let hotkeys: serde_json::Map<String, serde_json::Value> = s
        .hotkeys
        .iter()
        .map(|(name, h)| {
            let role = |b: &crate::runtime::Bound| json!({"component": b.plugin.name, "version": b.plugin.version.to_string(), "contract": b.plugin.contract.to_string(), "file": b.plugin.file, "warm_instances": b.warm_instances(), "max_warm": b.instance_memory().1, "instance_memory_mb": (b.instance_memory().0 as f64 / 1048576.0 * 10.0).round() / 10.0});
            let refusal = st.outstanding.get(&h.file);
            (
                name.clone(),
                json!({
                    "file": h.file,
                    "ss58": h.ss58,
                    "fallback": h.fallback,
                    "calibration": h.calibration.as_ref().map(|(file, c)| json!({
                        "file": file, "a": c.a, "b": c.b, "heads": c.heads,
                    })),
                    "router": role(&h.stable.router),
                    "text_scorer": h.stable.roles.text_scorer.as_deref().map(role),
                    "fuser": h.stable.roles.fuser.as_deref().map(role),
                    "candidate": h.candidate.as_ref().map(|c| json!({
                        "router": role(&c.router),
                        "text_scorer": c.roles.text_scorer.as_deref().map(role),
                        "fuser": c.roles.fuser.as_deref().map(role),
                    })),
                    "rollout": h.rollout.as_ref().map(|r| r.json()),
                    "axon": h.describe_axon(&s.chain),
                    "last_refusal": refusal,
                }),
            )
        })
        .collect();
    let names: Vec<&str> = s.hotkeys.keys().map(String::as_str).collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": server.started.elapsed().as_secs_f64(),
        "alarms": s.alarms(),
        "last_hour": server.activity.summary(names),
        "notes": st.notes.iter().map(|p| json!({"file": p.file, "message": p.message})).collect::<Vec<_>>(),
        "generation": s.generation,
        "hotkeys": hotkeys,
        "models": s.models.names().collect::<Vec<_>>(),
        "chain": chain_status(&s.chain),
        "model_stats": model_stats(&s.models),
        "recent": server.recent.lock().iter().rev().collect::<Vec<_>>(),
        "reloads": {"total": st.reloads, "applied": st.applied, "refused": st.refused, "last_ms": st.last_reload_ms},
        "refusals": st.outstanding.values().collect::<Vec<_>>(),
    })
}

/// The status page (`GET /admin`): no external assets, the same data as `/admin/status`.
const PAGE: &str = include_str!("page.html");

fn model_stats(models: &cascade_engines::Models) -> Vec<serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    models
        .stats()
        .map(|(name, s)| {
            let spec = models.spec(name);
            json!({
                "name": name,
                "kind": spec.map(|m| m.kind.as_str()),
                "device": spec.map(|m| if m.remote.is_some() || m.vlm.is_some() { "remote".to_string() } else { m.device.to_string() }),
                "loaded": s.loaded.load(Relaxed),
                "loads": s.loads.load(Relaxed),
                "runs": s.runs.load(Relaxed),
                "items": s.items.load(Relaxed),
                "busy_s": s.busy_ns.load(Relaxed) as f64 / 1e9,
                "gpu_bytes": s.gpu_bytes.load(Relaxed),
                "queued": s.queued.load(Relaxed),
            })
        })
        .collect()
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

/// Whether a request to `/metrics` or `/healthz` is DNS rebinding: it comes from this machine
/// but names a host that is neither a loopback name nor an IP address (a web page's script in
/// the operator's browser, its name pointed at 127.0.0.1). Other machines' scrapes name this
/// one however they like.
pub(super) fn rebinding(req: &Request<Incoming>, peer: SocketAddr) -> bool {
    if !peer.ip().is_loopback() {
        return false;
    }
    let hosts: Vec<&str> = req.headers().get_all(hyper::header::HOST).iter().filter_map(|v| v.to_str().ok()).collect();
    let literal = |h: &str| {
        let bare = h
            .strip_prefix('[')
            .and_then(|v| v.split_once(']'))
            .map_or_else(|| h.rsplit_once(':').map_or(h, |(a, _)| a), |(a, _)| a);
        bare.parse::<std::net::IpAddr>().is_ok()
    };
    hosts.len() > 1 || hosts.iter().any(|h| !(loopback_host(h) || literal(h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_and_secrets() {
        for ok in ["localhost", "localhost:8091", "127.0.0.1:8091", "127.3.4.5", "[::1]:80", "[::1]"] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example:8091", "10.0.0.1", "localhost.evil.example", "[2001:db8::1]:80"] {
            assert!(!loopback_host(bad), "{bad}");
        }
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd") && !same_secret(b"abc", b"ab"));
    }
}

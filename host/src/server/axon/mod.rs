//! Subnet 72's axon protocol: `/ImageSynapse` and `/ExtendedImageSynapse` as the Python
//! dendrite sends them. Headers are verified (signature, nonce, body hash, caller list) before
//! the body is read or any image decoded; the answer is the synapse with `prediction` set and
//! the axon status, as the Python axon writes it.

pub mod verify;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Request, Response, StatusCode};
use serde_json::{json, Value};

use cascade_common::image::DecodeError;

use super::front::{self, Job};
use super::ingress::{self, Refusal};
use super::state::Server;
use crate::answer::Source;
use crate::policy::Hotkey;
use verify::{now_ns, NonceCheck, Signed};

/// The longest dendrite uuid kept (the SDK sends a 36-character UUID).
pub(crate) const MAX_UUID_LEN: usize = 64;

pub const SYNAPSES: [&str; 2] = ["ImageSynapse", "ExtendedImageSynapse"];

/// sha3-256 of the empty string: these synapses hash no body fields, so the image is not
/// covered by the signature.
pub const EMPTY_BODY_HASH: &str = "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a";

type Resp = Response<Full<Bytes>>;

/// Whether a path is an axon route (a synapse name, known or not).
pub(crate) fn is_synapse_path(path: &str) -> bool {
    let name = path.trim_start_matches('/');
    !name.is_empty() && !name.contains('/') && name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

/// The longest error message sent back (a message may quote what the caller sent).
const MAX_MESSAGE_CHARS: usize = 512;

fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    let mut message: String = message.into();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        message = message.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
    }
    crate::metrics::global().axon(status.as_u16());
    let mut r = Response::new(Full::new(Bytes::from(json!({"message": message}).to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert("bt_header_axon_status_code", HeaderValue::from(status.as_u16()));
    if let Ok(v) = HeaderValue::from_str(&message.replace(['\r', '\n'], " ")) {
        h.insert("bt_header_axon_status_message", v);
    }
    r
}

/// Why an axon request got no answer: the status and the message the Python axon would send
/// (the code is for this side's logs and tests; the dendrite sees status and message).
fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    let code = match status {
        StatusCode::BAD_REQUEST => "bad-synapse",
        StatusCode::UNAUTHORIZED => "not-verified",
        StatusCode::FORBIDDEN => "not-admitted",
        StatusCode::NOT_FOUND => "no-synapse",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "failed",
    };
    Refusal::new(status, code, message)
}

/// An image that does not decode is a bad synapse (400), as the Python axon answers a body it
/// cannot read; one past the size limits stays a 413 (and one waiting for decode memory a 503).
fn refuse_image(e: DecodeError) -> Refusal {
    match e {
        DecodeError::TooLarge { .. } | DecodeError::Memory { .. } => Refusal::from(e),
        e => refuse(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<&'a str, Refusal> {
    h.get(name)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, format!("missing header {name}")))?
        .to_str()
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, format!("header {name} is not text")))
}

/// The answer of an axon port to anything but a synapse route.
pub(crate) fn not_found(path: &str) -> Resp {
    let mut r = error(StatusCode::NOT_FOUND, format!("no route {path} on an axon port"));
    r.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// What a synapse request is verified from, read from its headers alone.
#[derive(Debug, Clone, PartialEq)]
pub struct SynapseHeaders {
    pub axon_hotkey: String,
    pub dendrite: String,
    pub uuid: String,
    /// Empty when absent (refused at verification).
    pub signature: String,
    pub nonce: u64,
    /// The dendrite's timeout in seconds (12 when absent or unreadable, as the SDK's default).
    pub timeout: f64,
    pub body_hash: String,
}

/// Reads and checks the headers (400 for anything malformed or the wrong body hash).
pub(crate) fn parse_headers(h: &HeaderMap) -> Result<SynapseHeaders, Refusal> {
    let axon_hotkey = header(h, "bt_header_axon_hotkey")?.to_string();
    let dendrite = header(h, "bt_header_dendrite_hotkey")?.to_string();
    let uuid = header(h, "bt_header_dendrite_uuid")?.to_string();
    if uuid.len() > MAX_UUID_LEN {
        return Err(refuse(StatusCode::BAD_REQUEST, format!("bt_header_dendrite_uuid is longer than {MAX_UUID_LEN}")));
    }
    let signature = h.get("bt_header_dendrite_signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let nonce: u64 = header(h, "bt_header_dendrite_nonce")?
        .trim()
        .parse()
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "bt_header_dendrite_nonce is not a non-negative integer"))?;
    let timeout: f64 = h
        .get("timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .filter(|t: &f64| t.is_finite() && *t >= 0.0)
        .unwrap_or(12.0);
    let body_hash = header(h, "computed_body_hash")?.to_string();
    if body_hash != EMPTY_BODY_HASH {
        return Err(refuse(StatusCode::BAD_REQUEST, "Hash mismatch between header body hash and computed body hash"));
    }
    Ok(SynapseHeaders { axon_hotkey, dendrite, uuid, signature, nonce, timeout, body_hash })
}

/// Serves one axon request; `pinned` is the hotkey of a listener of its own.
pub async fn handle(server: &Server, req: Request<Incoming>, pinned: Option<&str>) -> Resp {
    let mut seen = Seen::default();
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let result = serve(server, &parts, &mut body, pinned, &mut seen).await;
    if let (Err(_), Some(rest)) = (&result, body) {
        // a refusal before the body was read: read (and drop) a moderately sized one first,
        // so a dendrite still sending gets the status instead of a broken pipe
        crate::server::http::drain(server, &parts.headers, rest).await;
    }
    // the status page's last hour: refusals by code, and who called which hotkey
    let status = result.as_ref().map_or_else(|r| r.status, |r| r.status());
    if let Err(r) = &result {
        server.activity.refused(seen.hotkey.as_deref(), r.status.as_u16(), r.code, &r.message);
    }
    if let (Some(h), Some(c)) = (&seen.hotkey, &seen.caller) {
        server.activity.caller(h, c, status.as_u16());
    }
    match result {
        Ok(r) => r,
        Err(r) => {
            // most refusals come before the body is read: close, so the unread body cannot be
            // taken for the client's next request
            let mut resp = error(r.status, r.message);
            resp.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

/// What a request named, as far as it was read: the served hotkey and the caller.
#[derive(Default)]
struct Seen {
    hotkey: Option<String>,
    caller: Option<String>,
}

async fn serve(
    server: &Server,
    req: &hyper::http::request::Parts,
    body: &mut Option<Incoming>,
    pinned: Option<&str>,
    seen: &mut Seen,
) -> Result<Resp, Refusal> {
    let started = Instant::now();
    let name = req.uri.path().trim_start_matches('/').to_string();
    if !SYNAPSES.contains(&name.as_str()) {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("Synapse name '{name}' not found. Available synapses {SYNAPSES:?}"),
        ));
    }
    let SynapseHeaders { axon_hotkey, dendrite, uuid, signature, nonce, timeout, body_hash } =
        parse_headers(&req.headers)?;

    let serving = server.serving.load_full();
    let hk: Arc<Hotkey> = match pinned {
        Some(p) => serving
            .hotkeys
            .get(p)
            .cloned()
            .ok_or_else(|| refuse(StatusCode::SERVICE_UNAVAILABLE, "this listener's hotkey is not loaded"))?,
        None => serving
            .hotkeys
            .values()
            .find(|h| h.ss58.as_deref() == Some(axon_hotkey.as_str()) && !server.pinned.read().contains_key(&h.name))
            .cloned()
            .ok_or_else(|| refuse(StatusCode::FORBIDDEN, format!("hotkey {axon_hotkey} is not served here")))?,
    };
    let own = hk.ss58.clone().unwrap_or_default();
    seen.hotkey = Some(hk.name.clone());
    seen.caller = Some(dendrite.clone());

    // admission first (as the Python axon checks its blacklist first): a caller that is not
    // admitted costs a lookup and leaves no state behind
    let admitted = serving.chain.admit(&hk.axon, &dendrite);
    crate::metrics::global().admission(match &admitted {
        Ok(a) => a.as_str(),
        Err(d) => d.kind(),
    });
    if let Err(crate::chain::Denied::NoSnapshot(_)) = &admitted {
        server.refused_for_no_snapshot(&hk.name, &dendrite);
    }
    admitted.map_err(|d| refuse(StatusCode::FORBIDDEN, d.to_string()))?;

    // then the signature, then the nonce (per miner hotkey), all before the body is read
    let signed = Signed {
        nonce,
        dendrite_hotkey: &dendrite,
        axon_hotkey: &own,
        uuid: &uuid,
        body_hash: &body_hash,
        signature: &signature,
    };
    let unauthorised =
        |e: verify::VerifyError| refuse(StatusCode::UNAUTHORIZED, format!("Not Verified with error: {e}"));
    signed.verify_signature().map_err(unauthorised)?;
    // checked now, recorded only once the synapse is accepted (below): a request refused for
    // its body leaves no nonce behind
    let nonce_check = NonceCheck {
        axon: &own,
        dendrite: &dendrite,
        uuid: &uuid,
        nonce,
        timeout_s: timeout,
        now: now_ns(),
        max_future_ns: if hk.axon.allow_any_signed { verify::OPEN_MAX_FUTURE_NS } else { verify::MAX_FUTURE_NS },
    };
    let nonce_refused = |e: verify::VerifyError| match e {
        verify::VerifyError::Full(_) => {
            refuse(StatusCode::SERVICE_UNAVAILABLE, format!("Not Verified with error: {e}"))
        }
        e => unauthorised(e),
    };
    server.nonces.check(&nonce_check).map_err(nonce_refused)?;

    // the body: the synapse as JSON
    let limit = server.limits.max_body_bytes;
    let declared = req.headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("body exceeds {limit} bytes"),
        ));
    }
    let body = server.read_body(body.take().expect("the body is read once")).await?;
    let mut synapse: Value =
        serde_json::from_slice(&body).map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))?;
    let image_b64 = match synapse.get("image") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(refuse(StatusCode::BAD_REQUEST, format!("image must be a string, found {other}"))),
        None => return Err(refuse(StatusCode::BAD_REQUEST, "image is missing")),
    };
    for (field, ok) in [
        ("prediction", synapse.get("prediction").is_none_or(|v| v.is_number() || v.is_null())),
        ("timeout", synapse.get("timeout").is_none_or(|v| v.is_number() || v.is_null())),
        ("name", synapse.get("name").is_none_or(|v| v.is_string())),
    ] {
        if !ok {
            return Err(refuse(StatusCode::BAD_REQUEST, format!("{field} has the wrong type")));
        }
    }
    let bytes = ingress::decode_base64(&image_b64).map_err(|r| refuse(StatusCode::BAD_REQUEST, r.message))?;
    if bytes.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "image is empty"));
    }
    // the synapse is well formed: its nonce is spent (checked again: a copy may have won)
    server.nonces.accept(&NonceCheck { now: now_ns(), ..nonce_check }).map_err(nonce_refused)?;
    let job = Job {
        serving,
        hotkey: hk,
        bytes,
        limits: server.limits.axon(),
        sticky: None,
        arrived: started,
        via: "axon",
        caller: Some(dendrite),
        refuse_image,
    };
    let (answer, took) = front::answer(server, job).await?;
    if answer.source == Source::None {
        // nothing scored the image: an error is dropped from the validator's windows, where a
        // constant would sit in its MCC for 100 queries
        return Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, format!("the policy failed: {}", answer.reason)));
    }
    crate::metrics::global().axon(200);

    // the synapse back: prediction set, image dropped, axon status filled in
    let p = crate::answer::never_half(answer.prediction.clamp(0.0, 1.0));
    if let Some(o) = synapse.as_object_mut() {
        o.insert("prediction".into(), json!(p));
        o.remove("image");
        let axon = o.entry("axon").or_insert_with(|| json!({}));
        if let Some(ax) = axon.as_object_mut() {
            ax.insert("status_code".into(), json!(200));
            ax.insert("status_message".into(), json!("Success"));
            ax.insert("process_time".into(), json!(took.total.as_secs_f64()));
        }
    }
    let mut r = Response::new(Full::new(Bytes::from(synapse.to_string())));
    let hs = r.headers_mut();
    hs.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    hs.insert("bt_header_axon_status_code", HeaderValue::from_static("200"));
    hs.insert("bt_header_axon_status_message", HeaderValue::from_static("Success"));
    if let Ok(v) = HeaderValue::from_str(&format!("{}", took.total.as_secs_f64())) {
        hs.insert("bt_header_axon_process_time", v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_messages_are_bounded() {
        let r = super::error(hyper::StatusCode::BAD_REQUEST, "x".repeat(100_000));
        let h = r.headers().get("bt_header_axon_status_message").expect("header").len();
        assert!(h <= super::MAX_MESSAGE_CHARS + 3, "{h}");
    }
}

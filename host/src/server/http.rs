//! The HTTP API's door: `/v1/predict/{hotkey}` (a JSON body with a base64 image, or the image
//! itself), `/healthz` and `/metrics`, with every refusal a JSON error of a stable code.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::front::{self, Job};
use super::ingress::{self, Refusal};
use super::state::{Server, Serving};
use crate::answer::Source;

pub(crate) type Resp = Response<Full<Bytes>>;

/// Oversized bodies up to this size are read and dropped before the 413 is sent.
const DRAIN_CAP: u64 = 32 << 20;

/// Reads (and drops) the body of a request about to be refused, so that a client still sending
/// gets the refusal instead of a broken pipe: only a body that declares at most `DRAIN_CAP`
/// bytes, within the read timeout; a huge or undeclared one just gets the connection closed. A
/// client that waits for `100 Continue` gets the refusal at once (reading would invite it to
/// send).
pub(crate) async fn drain(server: &Server, headers: &hyper::HeaderMap, body: Incoming) {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let expects_continue = headers
        .get(hyper::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if declared.is_some_and(|n| n <= DRAIN_CAP) && !expects_continue {
        let _ = tokio::time::timeout(server.read_timeout, Limited::new(body, DRAIN_CAP as usize).collect()).await;
    }
}

pub(crate) fn json_response(status: StatusCode, v: &serde_json::Value) -> Resp {
    json_bytes(status, v.to_string().into_bytes())
}

/// A JSON body already written.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r.headers_mut().insert(hyper::header::X_CONTENT_TYPE_OPTIONS, hyper::header::HeaderValue::from_static("nosniff"));
    r
}

/// A refusal as the HTTP API answers it (counted by code and status).
pub(crate) fn refusal(r: Refusal) -> Resp {
    crate::metrics::global().rejected(r.code, r.status.as_u16());
    let mut resp = json_response(r.status, &json!({"error": {"code": r.code, "message": r.message}}));
    // a refusal may leave the body unread: close rather than read it as the next request
    resp.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    resp
}

/// Every route of the HTTP API (the listener has sent synapse and admin paths elsewhere).
pub(crate) async fn handle(server: &Server, req: Request<Incoming>, path: &str) -> Resp {
    match (req.method(), path) {
        (&Method::GET, "/healthz") => {
            let s = server.serving.load();
            let hotkeys: Vec<&String> = s.hotkeys.keys().collect();
            // still 200 when degraded: a supervisor that restarts on failure would only loop,
            // since a restart fixes none of these
            let alarms = s.alarms();
            let status = if alarms.is_empty() { "ok" } else { "degraded" };
            json_response(StatusCode::OK, &json!({"status": status, "hotkeys": hotkeys, "alarms": alarms}))
        }
        (&Method::GET, "/metrics") => {
            let s = server.serving.load();
            let mut r = Response::new(Full::new(Bytes::from(render_metrics(&s))));
            r.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
            r
        }
        (m, p) if p.starts_with("/v1/predict/") => {
            if m != Method::POST {
                return refusal(Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "use POST"));
            }
            let hotkey = p["/v1/predict/".len()..].to_string();
            match predict(server, &hotkey, req).await {
                Ok(r) => r,
                Err(r) => {
                    let known = server.serving.load().hotkeys.contains_key(&hotkey);
                    server.activity.refused(known.then_some(hotkey.as_str()), r.status.as_u16(), r.code, &r.message);
                    refusal(r)
                }
            }
        }
        _ => {
            let r = Refusal::new(StatusCode::NOT_FOUND, "not-found", format!("no route {path}"));
            server.activity.refused(None, r.status.as_u16(), r.code, &r.message);
            refusal(r)
        }
    }
}

/// The OpenMetrics text: the recorded families, then the figures read now from the serving
/// state's parts (models, metagraph snapshot, prediction logs).
fn render_metrics(s: &Serving) -> String {
    let scraped = [
        Some(crate::metrics::models::registry(&s.models)),
        Some(crate::chain::metrics::registry(&s.chain, &s.alarms())),
        crate::predlog::metrics::registry(),
    ];
    crate::metrics::global().render(scraped.into_iter().flatten())
}

/// Microseconds written as milliseconds to three places (integer formatting: a float's
/// `{:.3}` costs more than the rest of the header).
struct Ms(u64);

impl std::fmt::Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// A prediction as the HTTP API answers it (fields in name order, as a `json!` map wrote them).
#[derive(serde::Serialize)]
struct Predicted<'a> {
    arm: &'a str,
    fallback: bool,
    generation: u64,
    hotkey: &'a str,
    model_ms: f64,
    ms: f64,
    /// Widened as `json!` widened it (0.95f32 reads 0.949999988079071, as it always did).
    prediction: f64,
    /// The fused score before the hotkey's calibration.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<f64>,
    reason: &'a str,
    source: Source,
    stage: &'a str,
    trace: &'a [crate::runtime::request::TraceEntry],
}

async fn predict(server: &Server, hotkey: &str, req: Request<Incoming>) -> Result<Resp, Refusal> {
    let started = Instant::now();
    let serving = server.serving.load_full();
    let generation = serving.generation;
    let hk =
        serving.hotkeys.get(hotkey).cloned().ok_or_else(|| {
            Refusal::new(StatusCode::NOT_FOUND, "unknown-hotkey", format!("no hotkey named {hotkey:?}"))
        })?;
    let limit = server.limits.max_body_bytes;
    let too_large =
        || Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", format!("body exceeds {limit} bytes"));
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        let (parts, body) = req.into_parts();
        drain(server, &parts.headers, body).await;
        return Err(too_large());
    }
    let ct = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    // an explicit request key keeps a client on one rollout arm; else the image decides
    let sticky = req.headers().get("x-request-key").map(|v| crate::rollout::sticky_key(v.as_bytes()));
    let body = server.read_body(req.into_body()).await?;
    let bytes = ingress::image_bytes(ct.as_deref(), &body)?;
    let job = Job {
        serving,
        hotkey: hk,
        bytes,
        limits: server.limits,
        sticky,
        arrived: started,
        via: "http",
        caller: None,
        refuse_image: Refusal::from,
    };
    let (answer, took) = front::answer(server, job).await?;
    if answer.source == Source::None {
        // no fixed fallback and no model scored the image: an error, never a made-up answer
        return Ok(json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": {"code": "policy-failed", "message": answer.reason}, "hotkey": hotkey, "trace": answer.trace}),
        ));
    }
    let body = Predicted {
        arm: answer.arm,
        fallback: answer.fallback,
        generation,
        hotkey,
        model_ms: crate::answer::tenth_ms(answer.model_ms),
        ms: crate::answer::tenth_ms(took.total.as_secs_f64() * 1e3),
        prediction: f64::from(answer.prediction),
        raw: answer.raw.map(f64::from),
        reason: &answer.reason,
        source: answer.source,
        stage: &answer.stage,
        trace: &answer.trace,
    };
    let written = match serde_json::to_vec(&body) {
        Ok(w) => w,
        // not reachable with these field types (non-finite floats are written as null), but an
        // answer that cannot be written is an error, never an empty 200
        Err(e) => {
            let error = json!({"code": "answer-unwritable", "message": e.to_string()});
            return Ok(json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": error, "hotkey": hotkey})));
        }
    };
    let mut resp = json_bytes(StatusCode::OK, written);
    // the same figures to the microsecond, as the W3C Server-Timing header (browsers' network
    // panels show it; `http-bench` reads it): decoding, the models' compute, the whole request
    let timing = format!(
        "decode;dur={}, model;dur={}, total;dur={}",
        Ms(took.decode.as_micros() as u64),
        Ms((answer.model_ms * 1e3).round() as u64),
        Ms(took.total.as_micros() as u64)
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&timing) {
        resp.headers_mut().insert("server-timing", v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::Ms;

    #[test]
    fn microseconds_read_as_milliseconds() {
        let ms = |us| Ms(us).to_string();
        assert_eq!(
            (ms(0), ms(5), ms(263), ms(1234), ms(12_000_001)),
            ("0.000".into(), "0.005".into(), "0.263".into(), "1.234".into(), "12000.001".into())
        );
    }
}

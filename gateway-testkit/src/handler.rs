//! Request handling: applies the current [`Mode`], then routes to `/health`, the special
//! endpoints (`…/echo`, `…/ws`, `…/bytes/{n}`, `…/status/{code}`, `…/delay/{ms}`, matched on the
//! path's last segments so prefixed paths reach them too) or the default JSON description.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::body::{self, BodyTally, EchoBody, PatternBody, RespBody};
use crate::upstream::{Mode, Shared};

/// Largest `n` accepted by `/bytes/{n}` (256 MiB).
pub const MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Returned to hyper in [`Mode::Reset`]: makes it drop the connection without a response.
#[derive(Debug)]
pub(crate) struct ForcedReset;

impl std::fmt::Display for ForcedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("forced connection reset (Mode::Reset)")
    }
}
impl std::error::Error for ForcedReset {}

pub(crate) async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    stop_rx: watch::Receiver<bool>,
) -> Result<Response<RespBody>, ForcedReset> {
    let seq = shared.record_arrival(&req, peer);
    let in_flight = shared.in_flight_guard();
    match shared.mode() {
        Mode::Ok => {}
        Mode::Hang => {
            let never = std::future::pending::<Infallible>().await;
            match never {}
        }
        Mode::Reset => return Err(ForcedReset),
        Mode::Delay(d) => tokio::time::sleep(d).await,
        Mode::Fail(code) => {
            let status = valid_status(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (_, body) = req.into_parts();
            drain_into_log(&shared, seq, body).await;
            let v = json!({"upstream": shared.name, "error": "forced failure", "status": status.as_u16()});
            return Ok(json_response(&shared, status, &v));
        }
    }

    let path = req.uri().path().to_owned();
    if path == "/health" {
        let (_, body) = req.into_parts();
        drain_into_log(&shared, seq, body).await;
        let (status, word) = if shared.health_ok() {
            (StatusCode::OK, "ok")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "down")
        };
        let v = json!({"upstream": shared.name, "status": word});
        return Ok(json_response(&shared, status, &v));
    }

    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut status = StatusCode::OK;
    match segs.as_slice() {
        [.., "echo"] => {
            let (parts, inner) = req.into_parts();
            let echo = EchoBody {
                inner,
                shared: shared.clone(),
                seq,
                tally: BodyTally::default(),
                done: false,
                _in_flight: in_flight,
            };
            let ct = parts.headers.get(CONTENT_TYPE).cloned();
            let mut resp = response(
                &shared,
                StatusCode::OK,
                http_body_util::BodyExt::boxed_unsync(echo),
            );
            if let Some(ct) = ct {
                resp.headers_mut().insert(CONTENT_TYPE, ct);
            }
            return Ok(resp);
        }
        [.., "ws"] => return Ok(crate::ws::upgrade(req, &shared, seq, stop_rx)),
        [.., "bytes", n] => {
            if let Ok(n) = n.parse::<u64>() {
                let (_, body) = req.into_parts();
                drain_into_log(&shared, seq, body).await;
                if n > MAX_BYTES {
                    return Ok(text(&shared, StatusCode::BAD_REQUEST, "n too large\n"));
                }
                let b = PatternBody {
                    next: 0,
                    end: n,
                    _in_flight: in_flight,
                };
                let mut resp = response(
                    &shared,
                    StatusCode::OK,
                    http_body_util::BodyExt::boxed_unsync(b),
                );
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                return Ok(resp);
            }
        }
        [.., "status", code] => {
            if let Ok(code) = code.parse::<u16>() {
                match valid_status(code) {
                    Some(s) => status = s,
                    None => {
                        return Ok(text(&shared, StatusCode::BAD_REQUEST, "bad status\n"));
                    }
                }
            }
        }
        [.., "delay", ms] => {
            if let Ok(ms) = ms.parse::<u64>() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        _ => {}
    }

    let (parts, body) = req.into_parts();
    let tally = drain_into_log(&shared, seq, body).await;
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(response(&shared, status, body::empty()));
    }
    Ok(json_response(
        &shared,
        status,
        &describe(&shared, &parts, peer, &tally),
    ))
}

/// Statuses a test may ask for: final responses only (1xx would confuse HTTP/1 framing).
fn valid_status(code: u16) -> Option<StatusCode> {
    if (200..=599).contains(&code) {
        StatusCode::from_u16(code).ok()
    } else {
        None
    }
}

/// Reads the body to its end and stores its length/checksum/prefix in log entry `seq`.
async fn drain_into_log(shared: &Shared, seq: u64, body: Incoming) -> BodyTally {
    let (tally, complete) = body::drain(body).await;
    let copy = BodyTally {
        len: tally.len,
        sum: tally.sum,
        kept: tally.kept.clone(),
    };
    shared.finish_body(seq, copy, complete);
    tally
}

/// The default JSON body: what reached the upstream.
fn describe(shared: &Shared, parts: &Parts, peer: SocketAddr, tally: &BodyTally) -> Value {
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value.into_owned()));
            }
        }
    }
    json!({
        "upstream": shared.name,
        "method": parts.method.as_str(),
        "uri": parts.uri.path_and_query().map_or("", |pq| pq.as_str()),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "peer": peer.to_string(),
        "headers": headers,
        "body_len": tally.len,
        "body_fnv1a64": format!("{:016x}", tally.sum.value()),
    })
}

/// A response carrying `x-upstream: <name>`.
fn response(shared: &Shared, status: StatusCode, body: RespBody) -> Response<RespBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&shared.name) {
        resp.headers_mut().insert("x-upstream", v);
    }
    resp
}

fn json_response(shared: &Shared, status: StatusCode, v: &Value) -> Response<RespBody> {
    let mut resp = response(shared, status, body::full(v.to_string()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub(crate) fn text(shared: &Shared, status: StatusCode, msg: &'static str) -> Response<RespBody> {
    let mut resp = response(shared, status, body::full(msg));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Exposed for the WebSocket module's 101 response.
pub(crate) fn bare(shared: &Shared, status: StatusCode) -> Response<RespBody> {
    response(shared, status, body::empty())
}

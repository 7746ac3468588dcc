//! The one error type of the request path. It knows which side failed — the client, the upstream or the
//! gateway itself — and maps to an HTTP status and the project's JSON error body in one place:
//! `{"error": "<code>", "message": "…", "request_id": "…"}`, plus the headers the status needs
//! (`WWW-Authenticate` on 401/403, `Allow` on 405, `Retry-After` on 429/503). Every local error answer
//! of the gateway is a `GwError` written by `proxy::respond`; nothing else writes an error body.
use crate::policy::auth::AuthError;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use std::borrow::Cow;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The request is at fault (4xx).
    Client,
    /// An upstream failed or is unavailable (502/503/504).
    Upstream,
    /// The gateway failed (500).
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GwError {
    pub side: Side,
    pub status: u16,
    /// Stable machine-readable code, e.g. `no_route`, `upstream_timeout`.
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// Headers the answer needs besides the body (`Allow`, `Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl GwError {
    pub fn new(
        side: Side,
        status: u16,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        GwError {
            side,
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }
    /// Adds a header to the answer.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
    /// `Retry-After: secs` (at least 1).
    pub fn with_retry_after(self, secs: u64) -> Self {
        self.with_header(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)))
    }
    /// The error for a status Pingora (or a phase) reported without a typed error.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 => Self::bad_request("malformed request"),
            404 => Self::no_route(),
            408 => Self::request_timeout(),
            413 => Self::new(
                Side::Client,
                413,
                "payload_too_large",
                "the request body is too large",
            ),
            431 => Self::new(
                Side::Client,
                431,
                "header_too_large",
                "the request headers are too large",
            ),
            502 => Self::new(Side::Upstream, 502, "bad_gateway", "the upstream failed"),
            503 => Self::new(
                Side::Upstream,
                503,
                "unavailable",
                "the service is unavailable",
            ),
            504 => Self::new(
                Side::Upstream,
                504,
                "upstream_timeout",
                "the upstream did not answer in time",
            ),
            s if s >= 500 => Self::internal("internal error"),
            s => Self::new(Side::Client, s, "bad_request", "the request was refused"),
        }
    }
    /// 401/403 from an auth policy, with its `WWW-Authenticate` challenge.
    pub fn auth(e: &AuthError) -> Self {
        Self::new(Side::Client, e.status().as_u16(), e.code(), e.description())
            .with_header(http::header::WWW_AUTHENTICATE, e.www_authenticate_value())
    }
    /// 429: a rate limit rejected the request (the rate-limit headers travel separately, on every
    /// answer of a limited route).
    pub fn rate_limited(limit: &str) -> Self {
        Self::new(
            Side::Client,
            429,
            "rate_limited",
            format!("rate limit {limit} exceeded"),
        )
    }
    /// 431: the request head is over `max` bytes.
    pub fn header_too_large(max: usize) -> Self {
        Self::new(
            Side::Client,
            431,
            "header_too_large",
            format!("the request headers are larger than {max} bytes"),
        )
    }
    /// 408: the client was too slow sending the request.
    pub fn request_timeout() -> Self {
        Self::new(
            Side::Client,
            408,
            "request_timeout",
            "the client was too slow sending the request",
        )
    }
    /// No answer: the client went away.
    pub fn client_closed() -> Self {
        Self::new(Side::Client, 0, "client_closed", "client went away")
    }
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Side::Client, 400, "bad_request", message)
    }
    pub fn no_route() -> Self {
        Self::new(
            Side::Client,
            404,
            "no_route",
            "no route matches this request",
        )
    }
    /// 405 with `Allow: <allowed>`.
    pub fn method_not_allowed(allow: &str) -> Self {
        let e = Self::new(
            Side::Client,
            405,
            "method_not_allowed",
            "this route does not accept this method",
        );
        match HeaderValue::from_str(allow) {
            Ok(v) => e.with_header(http::header::ALLOW, v),
            Err(_) => e,
        }
    }
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            Side::Client,
            413,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }
    pub fn no_healthy_endpoint(upstream: &str) -> Self {
        Self::new(
            Side::Upstream,
            503,
            "no_healthy_upstream",
            format!("upstream {upstream} has no healthy endpoint"),
        )
    }
    pub fn upstream_unavailable(upstream: &str) -> Self {
        Self::new(
            Side::Upstream,
            502,
            "upstream_unavailable",
            format!("could not connect to upstream {upstream}"),
        )
    }
    pub fn upstream_timeout(upstream: &str) -> Self {
        Self::new(
            Side::Upstream,
            504,
            "upstream_timeout",
            format!("upstream {upstream} did not answer in time"),
        )
    }
    pub fn bad_gateway(upstream: &str) -> Self {
        Self::new(
            Side::Upstream,
            502,
            "bad_gateway",
            format!("upstream {upstream} failed"),
        )
    }
    /// 503 with `Retry-After` (whole seconds, rounded up, at least 1).
    pub fn circuit_open(upstream: &str, retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        Self::new(
            Side::Upstream,
            503,
            "circuit_open",
            format!("upstream {upstream} is failing; its circuit breaker is open"),
        )
        .with_retry_after(secs)
    }
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Side::Internal, 500, "internal", message)
    }

    /// The JSON body every gateway-generated error uses.
    pub fn json_body(&self, request_id: &str) -> Bytes {
        error_body(self.code, &self.message, request_id)
    }
}

/// `{"error": code, "message": message, "request_id": id}`, serialized safely.
pub fn error_body(code: &str, message: &str, request_id: &str) -> Bytes {
    let v = serde_json::json!({ "error": code, "message": message, "request_id": request_id });
    Bytes::from(v.to_string())
}

impl fmt::Display for GwError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for GwError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_their_headers() {
        let e = GwError::method_not_allowed("GET, POST");
        assert_eq!(e.status, 405);
        assert_eq!(e.headers[0].0, http::header::ALLOW);
        assert_eq!(e.headers[0].1, "GET, POST");
        let e = GwError::circuit_open("u", std::time::Duration::from_millis(1500));
        assert_eq!((e.status, e.code), (503, "circuit_open"));
        assert_eq!(e.headers[0].1, "2");
        let e = GwError::circuit_open("u", std::time::Duration::ZERO);
        assert_eq!(e.headers[0].1, "1");
        let a = AuthError::new(
            crate::policy::auth::AuthReason::InsufficientScope,
            std::sync::Arc::from("gw"),
        );
        let e = GwError::auth(&a);
        assert_eq!((e.status, e.code), (403, "insufficient_scope"));
        assert_eq!(e.headers[0].0, http::header::WWW_AUTHENTICATE);
        // a status without a typed error still gets a proper code, never the generic "error"
        for s in [400, 404, 408, 413, 431, 502, 503, 504, 500] {
            let e = GwError::from_status(s);
            assert_eq!(e.status, s);
            assert_ne!(e.code, "error");
        }
        assert_eq!(GwError::from_status(400).code, "bad_request");
    }

    #[test]
    fn body_shape() {
        let b = GwError::no_route().json_body("abc");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"], "no_route");
        assert_eq!(v["request_id"], "abc");
        assert!(v["message"].as_str().unwrap().contains("no route"));
        let b = error_body("x", "quote \" and \n newline", "id");
        assert!(serde_json::from_slice::<serde_json::Value>(&b).is_ok());
    }
}

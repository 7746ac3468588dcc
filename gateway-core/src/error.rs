//! The one error type of the request path. It knows which side failed — the client, the upstream or the
//! gateway itself — and maps to an HTTP status and the project's JSON error body in one place:
//! `{"error": "<code>", "message": "…", "request_id": "…"}`.
use bytes::Bytes;
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
        }
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
    pub fn method_not_allowed() -> Self {
        Self::new(
            Side::Client,
            405,
            "method_not_allowed",
            "this route does not accept this method",
        )
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
    pub fn circuit_open(upstream: &str) -> Self {
        Self::new(
            Side::Upstream,
            503,
            "circuit_open",
            format!("upstream {upstream} is failing; its circuit breaker is open"),
        )
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

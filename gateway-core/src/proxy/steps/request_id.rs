//! Step 1: the request id (a sane client `X-Request-Id`, else a new one) and the client IP (the peer,
//! or `X-Forwarded-For` only from trusted proxies).
use crate::proxy::headers;
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use std::net::IpAddr;

/// The id of this request: the client's when it is sane, else a fresh one.
pub fn request_id(h: &HeaderMap) -> HeaderValue {
    match h.get("x-request-id") {
        Some(v) if headers::sane_request_id(v.as_bytes()) => v.clone(),
        _ => HeaderValue::try_from(headers::new_request_id())
            .unwrap_or(HeaderValue::from_static("-")),
    }
}

/// The client's address as far as it can be trusted.
pub fn client_ip(peer: Option<IpAddr>, h: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    headers::client_ip(
        peer,
        h.get("x-forwarded-for").map(|v| v.as_bytes()),
        trusted,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sane_id_and_replaces_a_bad_one() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(
            "x-request-id",
            HeaderValue::from_static("bad id with spaces"),
        );
        assert_ne!(request_id(&h), "bad id with spaces");
        assert!(!request_id(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn xff_only_from_trusted_peers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(client_ip(Some(peer), &h, &[]), Some(peer));
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_ip(Some(peer), &h, &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
    }
}

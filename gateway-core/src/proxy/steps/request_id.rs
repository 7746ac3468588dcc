//! Step 1: the request id (a sane client `X-Request-Id`, else a new one) and the client IP (the peer,
//! or `X-Forwarded-For` / `Forwarded`, all field lines, only from trusted proxies).
use crate::proxy::headers;
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use std::net::IpAddr;

/// The id of this request: the client's when it is sane, else a fresh one.
pub fn request_id(h: &HeaderMap) -> HeaderValue {
    match h.get("x-request-id") {
        Some(v) if headers::sane_request_id(v.as_bytes()) => v.clone(),
        _ => headers::new_request_id_value(),
    }
}

/// The client's address as far as it can be trusted (see [`headers::client_ip_from_headers`]).
pub fn client_ip(
    peer: Option<IpAddr>,
    h: &HeaderMap,
    trusted: &[IpNet],
    header: headers::ClientIpHeader,
) -> Option<IpAddr> {
    headers::client_ip_from_headers(peer, h, trusted, header)
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
        let xff = headers::ClientIpHeader::XForwardedFor;
        assert_eq!(client_ip(Some(peer), &h, &[], xff), Some(peer));
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_ip(Some(peer), &h, &trusted, xff),
            Some("203.0.113.9".parse().unwrap())
        );
        // issue 11 item 1: a second line (appended by the trusted proxy) is part of the list
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        assert_eq!(
            client_ip(Some(peer), &h, &trusted, xff),
            Some("198.51.100.1".parse().unwrap())
        );
    }
}

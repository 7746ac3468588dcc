//! Request facts and header rules: client IP (trusting `X-Forwarded-For` only from configured proxies),
//! the request id, and the `X-Forwarded-*` headers sent upstream.
use ipnet::IpNet;
use std::net::IpAddr;

/// The client's IP: the peer, unless the peer is a trusted proxy, in which case `X-Forwarded-For` is
/// walked from the right, skipping trusted hops; the first untrusted address is the client.
pub fn client_ip(peer: Option<IpAddr>, xff: Option<&[u8]>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(xff) = xff.and_then(|v| std::str::from_utf8(v).ok()) else {
        return Some(peer);
    };
    let mut last = peer;
    for hop in xff.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => last = ip,
            Ok(ip) => return Some(ip),
            Err(_) => return Some(last),
        }
    }
    Some(last)
}

/// Largest request head (target and headers) proxied; larger ones get 431. Pingora alone would accept
/// up to 1 MiB and forward it all; this matches common proxy defaults (Envoy: 60 KiB).
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// Size of a request head as sent on the wire (target, header names and values, separators), roughly.
pub fn request_head_bytes(req: &pingora::http::RequestHeader) -> usize {
    req.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
}

/// A client-sent request id is kept when it is 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn sane_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A new request id: 16 hex digits of per-process randomness and a 16-hex-digit counter.
pub fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{seed:016x}{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_trusts_only_configured_proxies() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = b"203.0.113.9, 198.51.100.1, 10.0.0.2";
        assert_eq!(
            client_ip(Some(peer), Some(xff), &trusted),
            Some("198.51.100.1".parse().unwrap())
        );
        // an untrusted peer's XFF is ignored
        let outsider: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            client_ip(Some(outsider), Some(xff), &trusted),
            Some(outsider)
        );
        assert_eq!(client_ip(Some(peer), Some(b"junk"), &trusted), Some(peer));
        assert_eq!(client_ip(Some(peer), None, &[]), Some(peer));
    }

    #[test]
    fn request_ids() {
        assert!(sane_request_id(b"abc-123_x.y:z"));
        assert!(!sane_request_id(b""));
        assert!(!sane_request_id(b"a b"));
        assert!(!sane_request_id(&[b'a'; 129]));
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert!(sane_request_id(a.as_bytes()));
    }
}

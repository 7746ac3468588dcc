//! Step 7: the endpoint pick — the consistent-hash key of the request, then the balancer's staged pick
//! ([`crate::upstream::Balancer::pick_attempt`]: untried, not ejected, no recent connect failure, each
//! filter dropped in turn when nothing is left; unhealthy endpoints never). `None`: 503.
use crate::plan::HashKey;
use crate::proxy::runtime::UpstreamRt;
use crate::upstream::Pick;
use http::HeaderMap;
use std::net::IpAddr;
use std::time::Instant;

/// The bytes a consistent hash is computed over (empty without consistent hashing).
pub fn hash_key(
    key: Option<&HashKey>,
    client_ip: Option<IpAddr>,
    upstream_path: &str,
    headers: &HeaderMap,
) -> Vec<u8> {
    match key {
        None => Vec::new(),
        Some(HashKey::ClientIp) => client_ip
            .map(|i| i.to_string().into_bytes())
            .unwrap_or_default(),
        Some(HashKey::Path) => upstream_path
            .split('?')
            .next()
            .unwrap_or("")
            .as_bytes()
            .to_vec(),
        Some(HashKey::Header(name)) => headers
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
    }
}

/// Picks an endpoint of `up` for an attempt, given the endpoints this request already tried.
pub fn pick(up: &UpstreamRt, key: &[u8], tried: &[usize], now: Instant) -> Option<Pick> {
    up.balancer.pick_attempt(
        key,
        tried,
        |i| up.outlier.as_ref().is_some_and(|o| o.is_ejected(i, now)),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hash_keys() {
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("alice"));
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(hash_key(None, Some(ip), "/p", &h).is_empty());
        assert_eq!(
            hash_key(Some(&HashKey::ClientIp), Some(ip), "/p", &h),
            b"10.1.2.3"
        );
        assert_eq!(hash_key(Some(&HashKey::Path), None, "/p?q=1", &h), b"/p");
        let k = HashKey::Header(http::HeaderName::from_static("x-user"));
        assert_eq!(hash_key(Some(&k), None, "/", &h), b"alice");
    }
}

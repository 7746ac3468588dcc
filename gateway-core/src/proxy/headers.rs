//! Request facts and header rules: client IP (trusting `X-Forwarded-For` or RFC 7239 `Forwarded` only
//! from configured proxies), the request id, and the `X-Forwarded-*` headers sent upstream.
//!
//! Client IP: every field line of the chosen header is one comma-separated list (RFC 9110 §5.3: a
//! proxy such as HAProxy's `option forwardfor` may append a second line). The list is walked from the
//! right, starting at the peer: while the hop is a trusted proxy, the address it reports is believed;
//! the first untrusted address is the client. An entry that is not an address (`unknown`, an
//! obfuscated `_node`, junk) stops the walk at the last trusted hop, so junk can never be used to
//! reach further left. Only one header is ever read ([`ClientIpHeader`], default `X-Forwarded-For`):
//! reading both would let a client forge whichever one the trusted proxy does not rewrite.
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

/// Which header carries the client address from trusted proxies (`server.client_ip_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema, serde::Serialize)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (default; what nginx, HAProxy and cloud LBs send).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:4711"`. `X-Forwarded-For` is
    /// then ignored for the client IP.
    Forwarded,
}

impl ClientIpHeader {
    /// The header's name.
    pub fn name(self) -> &'static str {
        match self {
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::Forwarded => "forwarded",
        }
    }
}

/// One hop of a forwarding list: an address, or anything else (`unknown`, obfuscated, junk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Ip(IpAddr),
    Opaque,
}

/// The client's IP from `X-Forwarded-For` (all field lines, see the module docs).
pub fn client_ip<'a>(
    peer: Option<IpAddr>,
    xff_lines: impl IntoIterator<Item = &'a [u8]>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    client_ip_from_lines(peer, xff_lines, trusted, ClientIpHeader::XForwardedFor)
}

/// The client's IP from the request headers: the peer, unless the peer is a trusted proxy, in which
/// case every field line of `header` is read as one list and walked from the right past trusted hops.
pub fn client_ip_from_headers(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ClientIpHeader,
) -> Option<IpAddr> {
    let lines = headers
        .get_all(header.name())
        .into_iter()
        .map(|v| v.as_bytes());
    client_ip_from_lines(peer, lines, trusted, header)
}

/// As [`client_ip_from_headers`], from the raw field lines of `header`.
pub fn client_ip_from_lines<'a>(
    peer: Option<IpAddr>,
    lines: impl IntoIterator<Item = &'a [u8]>,
    trusted: &[IpNet],
    header: ClientIpHeader,
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return Some(peer);
    }
    let hops = match header {
        ClientIpHeader::XForwardedFor => xff_hops(lines),
        ClientIpHeader::Forwarded => forwarded_hops(lines),
    };
    let mut last = peer;
    for hop in hops.iter().rev() {
        match *hop {
            Hop::Ip(ip) if is_trusted(&ip) => last = ip,
            Hop::Ip(ip) => return Some(ip),
            Hop::Opaque => return Some(last),
        }
    }
    Some(last)
}

/// The `X-Forwarded-For` value to send upstream: the hops of every client line, in order, joined into
/// one list, then the peer. `None` without a peer address (nothing to add; the caller leaves the
/// header as it is).
pub fn forwarded_for_value<'a>(
    peer: Option<IpAddr>,
    xff_lines: impl IntoIterator<Item = &'a [u8]>,
) -> Option<HeaderValue> {
    use std::io::Write as _;
    let peer = peer?;
    // one buffer, handed to the header value without a copy (the peer is written into it directly)
    let mut out: Vec<u8> = Vec::with_capacity(64);
    for line in xff_lines {
        for item in line.split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() {
                continue;
            }
            out.extend_from_slice(item);
            out.extend_from_slice(b", ");
        }
    }
    let _ = write!(out, "{peer}");
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(out)) {
        Ok(v) => Some(v),
        // a hop the client sent is not a valid field value: only the peer
        Err(_) => HeaderValue::try_from(peer.to_string()).ok(),
    }
}

/// `X-Forwarded-For` field lines as one list of hops (empty elements skipped, RFC 9110 §5.6.1).
fn xff_hops<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Vec<Hop> {
    let mut hops = Vec::new();
    for line in lines {
        for item in line.split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() {
                continue;
            }
            hops.push(
                std::str::from_utf8(item)
                    .ok()
                    .and_then(parse_node)
                    .map_or(Hop::Opaque, Hop::Ip),
            );
        }
    }
    hops
}

/// RFC 7239 field lines as one list of hops: each element's `for=` node; an element without one, or
/// with `unknown`/an obfuscated identifier, is opaque.
fn forwarded_hops<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Vec<Hop> {
    let mut hops = Vec::new();
    for line in lines {
        for element in split_unquoted(line, b',') {
            if element.trim_ascii().is_empty() {
                continue;
            }
            let mut node = None;
            for pair in split_unquoted(element, b';') {
                let pair = pair.trim_ascii();
                let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                    continue;
                };
                if pair[..eq].trim_ascii().eq_ignore_ascii_case(b"for") {
                    node = unquote(pair[eq + 1..].trim_ascii());
                    break;
                }
            }
            hops.push(
                node.as_deref()
                    .and_then(|n| std::str::from_utf8(n).ok())
                    .and_then(parse_node)
                    .map_or(Hop::Opaque, Hop::Ip),
            );
        }
    }
    hops
}

/// Splits at `sep` outside double-quoted strings (a `\` inside quotes escapes the next byte).
fn split_unquoted(s: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in s.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A token as is, or a quoted-string without its quotes and escapes; `None` if a quote is unclosed.
fn unquote(v: &[u8]) -> Option<Vec<u8>> {
    let Some(inner) = v.strip_prefix(b"\"") else {
        return (!v.contains(&b'"')).then(|| v.to_vec());
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut it = inner.iter();
    while let Some(&b) = it.next() {
        match b {
            b'\\' => out.push(*it.next()?),
            b'"' => return it.as_slice().is_empty().then_some(out),
            b => out.push(b),
        }
    }
    None
}

/// An address with an optional port: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`. `unknown`, `_obfuscated` and anything else are `None`.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']')?;
        if !(tail.is_empty() || tail.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        return addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let (addr, port) = s.rsplit_once(':')?;
    if !port_ok(port) {
        return None;
    }
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
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
    let v = new_request_id_value();
    // 32 hex digits: always UTF-8
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

/// [`new_request_id`] as a header value, written into one buffer (no intermediate string).
pub fn new_request_id_value() -> HeaderValue {
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, word) in [seed, n].into_iter().enumerate() {
        for j in 0..16 {
            buf[i * 16 + j] = HEX[((word >> (60 - 4 * j)) & 0xf) as usize];
        }
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_trusts_only_configured_proxies() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff: &[u8] = b"203.0.113.9, 198.51.100.1, 10.0.0.2";
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
        assert_eq!(
            client_ip(Some(peer), Some(&b"junk"[..]), &trusted),
            Some(peer)
        );
        assert_eq!(client_ip(Some(peer), None::<&[u8]>, &[]), Some(peer));
    }

    fn nets() -> Vec<IpNet> {
        vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ]
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Issue 11 item 1: HAProxy appends a second `X-Forwarded-For` line; the client forged the first.
    #[test]
    fn all_xff_lines_form_one_list() {
        let peer = Some(ip("10.0.0.5"));
        let lines: [&[u8]; 2] = [b"6.6.6.6", b"198.51.100.1"];
        assert_eq!(
            client_ip(peer, lines, &nets()),
            Some(ip("198.51.100.1")),
            "the forged first line must not win"
        );
        let lines: [&[u8]; 3] = [b"6.6.6.6, 7.7.7.7", b"198.51.100.1, 10.0.0.9", b" "];
        assert_eq!(client_ip(peer, lines, &nets()), Some(ip("198.51.100.1")));
        // all trusted: the leftmost trusted hop
        let lines: [&[u8]; 2] = [b"10.1.1.1", b"10.2.2.2"];
        assert_eq!(client_ip(peer, lines, &nets()), Some(ip("10.1.1.1")));
        // junk stops the walk at the last trusted hop, whatever is left of it
        let lines: [&[u8]; 2] = [b"6.6.6.6, junk", b"10.2.2.2"];
        assert_eq!(client_ip(peer, lines, &nets()), Some(ip("10.2.2.2")));
        // empty elements are ignored; ports and brackets are accepted
        let lines: [&[u8]; 1] = [b"198.51.100.1:5555,, [2001:db8::7]:80 ,"];
        assert_eq!(client_ip(peer, lines, &nets()), Some(ip("198.51.100.1")));
        // an untrusted peer's lines are ignored
        assert_eq!(
            client_ip(Some(ip("192.0.2.1")), [&b"1.2.3.4"[..]], &nets()),
            Some(ip("192.0.2.1"))
        );
    }

    #[test]
    fn rfc7239_forwarded() {
        let peer = Some(ip("10.0.0.5"));
        let f = |lines: &[&[u8]]| {
            client_ip_from_lines(
                peer,
                lines.iter().copied(),
                &nets(),
                ClientIpHeader::Forwarded,
            )
        };
        assert_eq!(
            f(&[b"for=192.0.2.60;proto=http;by=203.0.113.43"]),
            Some(ip("192.0.2.60"))
        );
        assert_eq!(
            f(&[b"For=\"[2001:db9::17]:4711\"", b"for=10.0.0.3"]),
            Some(ip("2001:db9::17"))
        );
        assert_eq!(
            f(&[b"for=192.0.2.43, for=198.51.100.17"]),
            Some(ip("198.51.100.17"))
        );
        assert_eq!(f(&[b"for=\"192.0.2.43:47011\""]), Some(ip("192.0.2.43")));
        // quoted commas and semicolons do not split
        assert_eq!(
            f(&[b"for=6.6.6.6, for=198.51.100.9;x=\"a,b;c\\\"\""]),
            Some(ip("198.51.100.9"))
        );
        // unknown, obfuscated, missing `for`, unclosed quote: stop at the last trusted hop
        assert_eq!(
            f(&[b"for=6.6.6.6, for=unknown, for=10.0.0.8"]),
            Some(ip("10.0.0.8"))
        );
        assert_eq!(f(&[b"for=6.6.6.6, for=_hidden"]), Some(ip("10.0.0.5")));
        assert_eq!(f(&[b"for=6.6.6.6, proto=https"]), Some(ip("10.0.0.5")));
        assert_eq!(f(&[b"for=\"6.6.6.6"]), Some(ip("10.0.0.5")));
        // X-Forwarded-For is not read when Forwarded is configured, and vice versa
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("forwarded", HeaderValue::from_static("for=198.51.100.2"));
        assert_eq!(
            client_ip_from_headers(peer, &h, &nets(), ClientIpHeader::Forwarded),
            Some(ip("198.51.100.2"))
        );
        assert_eq!(
            client_ip_from_headers(peer, &h, &nets(), ClientIpHeader::XForwardedFor),
            Some(ip("6.6.6.6"))
        );
    }

    #[test]
    fn forwarded_value_joins_every_line() {
        let lines: [&[u8]; 2] = [b"6.6.6.6", b"198.51.100.1, 10.0.0.2"];
        let v = forwarded_for_value(Some(ip("10.0.0.5")), lines).unwrap();
        assert_eq!(v, "6.6.6.6, 198.51.100.1, 10.0.0.2, 10.0.0.5");
        let v = forwarded_for_value(Some(ip("::1")), std::iter::empty()).unwrap();
        assert_eq!(v, "::1");
        let lines: [&[u8]; 2] = [b" , ", b""];
        assert_eq!(
            forwarded_for_value(Some(ip("10.0.0.5")), lines).unwrap(),
            "10.0.0.5"
        );
        assert!(forwarded_for_value(None, lines).is_none());
    }

    #[test]
    fn node_forms() {
        assert_eq!(parse_node("192.0.2.1"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("192.0.2.1:80"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        for bad in [
            "unknown",
            "_obf",
            "[2001:db8::1]x",
            "1.2.3.4:",
            "1.2.3.4:123456",
            "[1.2.3.4]",
            "999.1.1.1",
            "",
        ] {
            assert_eq!(parse_node(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        /// Splitting a list across lines never changes the client IP.
        #[test]
        fn line_split_is_irrelevant(hops in proptest::collection::vec((0u8..3, 0u8..=255), 0..6), cut in 0usize..6) {
            let addrs: Vec<String> = hops.iter().map(|&(k, b)| match k {
                0 => format!("10.0.0.{b}"),
                1 => format!("198.51.100.{b}"),
                _ => "unknown".to_string(),
            }).collect();
            let joined = addrs.join(", ");
            let cut = cut.min(addrs.len());
            let (a, b) = (addrs[..cut].join(","), addrs[cut..].join(","));
            let peer = Some(ip("10.9.9.9"));
            let one = client_ip(peer, [joined.as_bytes()], &nets());
            let two = client_ip(peer, [a.as_bytes(), b.as_bytes()], &nets());
            proptest::prop_assert_eq!(one, two);
        }
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

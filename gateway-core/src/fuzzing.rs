//! Bodies of the fuzz targets in `fuzz/` (cargo-fuzz, nightly), shared with the stable `proptest`
//! tests in `gateway-core/tests/fuzz_props.rs` so that CI checks the same properties on every push.
//!
//! Each `*_target` takes arbitrary bytes, never panics on its own, and panics (`assert!`) only when a
//! property of the code under test is broken. Not a stable API.
use std::borrow::Cow;
use std::net::IpAddr;

/// The trace-context step (`proxy::steps::trace`), for its criterion bench (`benches/trace.rs`).
pub mod trace {
    pub use crate::proxy::steps::trace::{context, parse, Parent, TraceContext, TRACEPARENT_LEN};
    /// Sets `traceparent` on the upstream head (the step's `apply`); `false` if it could not.
    pub fn apply(up: &mut pingora::http::RequestHeader, t: &TraceContext) -> bool {
        crate::proxy::steps::trace::apply(up, t).is_ok()
    }
}
use crate::routing::{normalize_with, EscapedSlashes, PathPolicy, Semicolons};

/// Request paths aimed at `/admin` through `/public`, with their outcome under the default path
/// policy: the normalised path, or `400 <PathError variant>`.
pub const PATH_VARIANTS: &[(&str, &str)] = &[
    // plain and RFC 3986 dot segments: resolved, then routed (and authenticated) as /admin
    ("/public/x", "/public/x"),
    ("/public/a.b/c..d", "/public/a.b/c..d"),
    ("/public/caf%C3%A9", "/public/caf%C3%A9"),
    ("/public/../admin", "/admin"),
    ("/public/%2e%2e/admin", "/admin"),
    ("/public/%2E%2E/admin", "/admin"),
    ("/public/.%2e/admin", "/admin"),
    ("/public/%2e./admin", "/admin"),
    ("/public/./../admin/", "/admin/"),
    ("/PUBLIC/../admin", "/admin"),
    ("//public//..//admin", "/admin"),
    ("/public/x/../../admin", "/admin"),
    ("/%70ublic/%2e%2e/%61dmin", "/admin"),
    // `..` at the end
    ("/public/..", "/"),
    ("/public/%2e%2e", "/"),
    ("/public/admin/..", "/public/"),
    ("/public/.", "/public/"),
    // encoded slash and backslash, any case, next to dots or not
    ("/public/..%2fadmin", "400 EncodedSlash"),
    ("/public/..%2Fadmin", "400 EncodedSlash"),
    ("/public%2f..%2fadmin", "400 EncodedSlash"),
    ("/public/%2e%2e%2fadmin", "400 EncodedSlash"),
    ("/public/x%2F..%2F..%2Fadmin", "400 EncodedSlash"),
    ("/public/..%5cadmin", "400 EncodedSlash"),
    ("/public/..%5Cadmin", "400 EncodedSlash"),
    ("/public/x%2fy", "400 EncodedSlash"),
    // raw backslash
    ("/public/..\\admin", "400 Backslash"),
    ("/public\\..\\admin", "400 Backslash"),
    // `;` path parameters (Tomcat/Spring), raw and encoded, on dot segments and elsewhere
    ("/public/..;/admin", "400 Semicolon"),
    ("/public/.;/admin", "400 Semicolon"),
    ("/public/..;jsessionid=x/admin", "400 Semicolon"),
    ("/public/%2e%2e;/admin", "400 Semicolon"),
    ("/public/..%3b/admin", "400 Semicolon"),
    ("/public/..%3B/admin", "400 Semicolon"),
    ("/admin;x=1", "400 Semicolon"),
    ("/public;/../admin", "400 Semicolon"),
    // double (and triple, and mixed) encoding
    ("/public/%252e%252e/admin", "400 DoubleEncoding"),
    ("/public/%252E%252E/admin", "400 DoubleEncoding"),
    ("/public/..%252fadmin", "400 DoubleEncoding"),
    ("/public/..%252Fadmin", "400 DoubleEncoding"),
    ("/public/..%255cadmin", "400 DoubleEncoding"),
    ("/public/%25%32%65%25%32%65/admin", "400 DoubleEncoding"),
    ("/public/%25252e%25252e/admin", "400 DoubleEncoding"),
    ("/public/..%253badmin", "400 DoubleEncoding"),
    ("/public/%25c0%25af", "400 DoubleEncoding"),
    ("/public/%25u002e%25u002e/admin", "400 DoubleEncoding"),
    // overlong and surrogate UTF-8
    ("/public/..%c0%afadmin", "400 BadUtf8"),
    ("/public/...%e0@/./admin", "400 BadUtf8"),
    ("/public/%ff", "400 BadUtf8"),
    ("/public/%c0%ae%c0%ae/admin", "400 BadUtf8"),
    ("/public/..%e0%80%afadmin", "400 BadUtf8"),
    ("/public/..%c1%9cadmin", "400 BadUtf8"),
    ("/public/..%f0%80%80%afadmin", "400 BadUtf8"),
    ("/public/%ed%a0%80", "400 BadUtf8"),
    // IIS %u escapes are malformed percent-escapes
    ("/public/%u002e%u002e/admin", "400 BadEscape"),
    ("/public/..%u2215admin", "400 BadEscape"),
    ("/public/%U002E%U002E/admin", "400 BadEscape"),
    // fullwidth and other look-alikes, raw and encoded
    ("/public/\u{ff0e}\u{ff0e}/admin", "400 LookAlike"),
    ("/public/..\u{ff0f}admin", "400 LookAlike"),
    ("/public/%EF%BC%8E%EF%BC%8E/admin", "400 LookAlike"),
    ("/public/..%ef%bc%8fadmin", "400 LookAlike"),
    ("/public/..%ef%bc%bcadmin", "400 LookAlike"),
    ("/public/%E2%80%A5/admin", "400 LookAlike"),
    ("/public/..%E2%88%95admin", "400 LookAlike"),
    ("/public/\u{fe52}\u{fe52}/admin", "400 LookAlike"),
    // dot runs, trailing dots and trailing whitespace
    ("/public/.../admin", "400 AmbiguousDotSegment"),
    ("/public/..../admin", "400 AmbiguousDotSegment"),
    ("/public/..%2e/admin", "400 AmbiguousDotSegment"),
    ("/public/..%20/admin", "400 AmbiguousDotSegment"),
    ("/public/.%20/admin", "400 AmbiguousDotSegment"),
    ("/public/..%09/admin", "400 AmbiguousDotSegment"),
    // NUL and other bad escapes
    ("/public/..%00/admin", "400 ForbiddenByte"),
    ("/public/%zz", "400 BadEscape"),
    ("/public/%2", "400 BadEscape"),
];

/// Whether `path` is `prefix` or below it (segment-wise, ASCII case-insensitive: some upstreams
/// ignore case).
pub fn under(path: &str, prefix: &str) -> bool {
    let (p, q) = (path.as_bytes(), prefix.as_bytes());
    p.len() >= q.len()
        && p[..q.len()].eq_ignore_ascii_case(q)
        && (p.len() == q.len() || p[q.len()] == b'/')
}

/// How the most lenient upstream stack could read a forwarded path: percent-decoded repeatedly
/// (`%XX` and IIS `%uXXXX`), overlong UTF-8 and compatibility look-alikes folded to ASCII, `\` as
/// `/`, `;` parameters dropped, trailing spaces/tabs dropped, a run of three or more dots read as
/// `..`, then dot segments resolved. A model of attack surface, not of any one server.
pub fn lenient_view(path: &str) -> String {
    let mut cur = path.as_bytes().to_vec();
    for _ in 0..4 {
        cur = fold(&decode_lenient(&cur));
    }
    let text = String::from_utf8_lossy(&cur).replace('\\', "/");
    let mut segs: Vec<&str> = Vec::new();
    for s in text.split('/') {
        let s = s.split(';').next().unwrap_or("");
        let s = s.trim_end_matches([' ', '\t']);
        let s = if s.len() >= 3 && s.bytes().all(|b| b == b'.') {
            ".."
        } else {
            s
        };
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = String::new();
    for s in segs {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn decode_lenient(s: &[u8]) -> Vec<u8> {
    let hexv = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if matches!(s.get(i + 1), Some(b'u' | b'U')) && i + 6 <= s.len() {
                let cp = s[i + 2..i + 6]
                    .iter()
                    .try_fold(0u32, |a, &b| hexv(b).map(|d| a * 16 + d));
                if let Some(c) = cp.and_then(char::from_u32) {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    i += 6;
                    continue;
                }
            }
            if let (Some(h), Some(l)) = (
                s.get(i + 1).and_then(|&b| hexv(b)),
                s.get(i + 2).and_then(|&b| hexv(b)),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Folds overlong 2- and 3-byte forms of ASCII and the look-alike characters to ASCII.
fn fold(s: &[u8]) -> Vec<u8> {
    const MAP: &[(&str, &str)] = &[
        ("\u{2024}", "."),
        ("\u{2025}", ".."),
        ("\u{2026}", "..."),
        ("\u{2044}", "/"),
        ("\u{2215}", "/"),
        ("\u{fe52}", "."),
        ("\u{fe54}", ";"),
        ("\u{fe68}", "\\"),
        ("\u{fe6a}", "%"),
        ("\u{ff05}", "%"),
        ("\u{ff0e}", "."),
        ("\u{ff0f}", "/"),
        ("\u{ff1b}", ";"),
        ("\u{ff3c}", "\\"),
    ];
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    'outer: while i < s.len() {
        let b = s[i];
        if (b == 0xC0 || b == 0xC1) && i + 1 < s.len() {
            out.push(((b & 0x1F) << 6) | (s[i + 1] & 0x3F));
            i += 2;
            continue;
        }
        if b == 0xE0 && i + 2 < s.len() && s[i + 1] < 0xA0 {
            let v = ((s[i + 1] as u32 & 0x3F) << 6) | (s[i + 2] as u32 & 0x3F);
            if v < 0x80 {
                out.push(v as u8);
                i += 3;
                continue;
            }
        }
        if b == 0xF0 && i + 3 < s.len() && s[i + 1] < 0x90 {
            let v = ((s[i + 1] as u32 & 0x3F) << 12)
                | ((s[i + 2] as u32 & 0x3F) << 6)
                | (s[i + 3] as u32 & 0x3F);
            if v < 0x80 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        for (from, to) in MAP {
            if s[i..].starts_with(from.as_bytes()) {
                out.extend_from_slice(to.as_bytes());
                i += from.len();
                continue 'outer;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn policy_from(b: u8) -> PathPolicy {
    PathPolicy {
        escaped_slashes: match b % 3 {
            0 => EscapedSlashes::Reject,
            1 => EscapedSlashes::Keep,
            _ => EscapedSlashes::Decode,
        },
        semicolons: if b & 4 == 0 {
            Semicolons::Reject
        } else {
            Semicolons::Allow
        },
    }
}

/// Path normalisation and routing: the first byte picks a policy, the rest is the path. Properties:
/// the result is absolute, has no `//` and no dot segments, is a fixed point, and a path the gateway
/// routes under `/public` is never read under `/admin` by a lenient upstream ([`lenient_view`]).
pub fn path_target(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let policy = policy_from(sel);
    check_path(&policy, path);
    // the same bytes behind the public prefix
    check_path(&policy, &format!("/public/{path}"));
}

fn check_path(policy: &PathPolicy, path: &str) {
    let Ok(out) = normalize_with(policy, path) else {
        return;
    };
    assert!(out.starts_with('/'), "{path:?} -> {out:?}");
    assert!(!out.contains("//"), "{path:?} -> {out:?}");
    assert!(
        out.split('/').all(|s| s != "." && s != ".."),
        "{path:?} -> {out:?}"
    );
    let again = normalize_with(policy, &out);
    assert_eq!(again.as_deref(), Ok(&*out), "not idempotent: {path:?}");
    if under(&out, "/public") {
        let seen = lenient_view(&out);
        assert!(
            !under(&seen, "/admin"),
            "{path:?} routed as {out:?} but read upstream as {seen:?} ({policy:?})"
        );
    }
    if matches!(out, Cow::Borrowed(_)) {
        assert_eq!(&*out, path);
    }
}

/// `X-Forwarded-For` / `Forwarded` parsing: the bytes are split into header lines at `\n`; the first
/// byte picks the header kind. Properties: a client IP is always found, it is the peer when the
/// peer is untrusted, otherwise the peer or an address written in the input; the value forwarded
/// upstream is one header value that ends with the peer.
pub fn forwarded_target(data: &[u8]) {
    use crate::proxy::headers::{client_ip_from_lines, forwarded_for_value, ClientIpHeader};
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let kind = if sel & 1 == 0 {
        ClientIpHeader::XForwardedFor
    } else {
        ClientIpHeader::Forwarded
    };
    let lines: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let trusted: Vec<ipnet::IpNet> = vec![
        "10.0.0.0/8".parse().expect("cidr"),
        "2001:db8::/32".parse().expect("cidr"),
    ];
    let peers: [IpAddr; 3] = [
        [10, 0, 0, 1].into(),
        [192, 0, 2, 7].into(),
        "2001:db8::1".parse().expect("ip"),
    ];
    let peer = peers[(sel as usize >> 1) % 3];
    let ip = client_ip_from_lines(Some(peer), lines.iter().copied(), &trusted, kind)
        .expect("a peer always gives a client ip");
    if !trusted.iter().any(|n| n.contains(&peer)) {
        assert_eq!(ip, peer);
    } else if ip != peer && !trusted.iter().any(|n| n.contains(&ip)) {
        // an untrusted address must come from the input text
        let text = String::from_utf8_lossy(rest).to_ascii_lowercase();
        let canon = ip.to_string();
        assert!(
            text.contains(&canon) || matches!(ip, IpAddr::V6(_)),
            "{ip} not in {text:?}"
        );
    }
    let v = forwarded_for_value(Some(peer), lines.iter().copied());
    if let Some(v) = v {
        let s = v.as_bytes();
        assert!(s.ends_with(peer.to_string().as_bytes()));
        assert!(!s.contains(&b'\n') && !s.contains(&b'\r'));
    }
}

/// Configuration text → compile: never panics (time and memory are bounded by the fuzzer's limits).
pub fn config_target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = crate::compile::compile("fuzz.yaml", text, &|_| None);
    for d in &c.diagnostics {
        let _ = d.render(text);
    }
}

/// JWT parsing: the bytes are a token (header, signature and claims checks must reject junk without
/// panicking), and also a claims document signed with the gateway's test key, so that the claim
/// checks see arbitrary JSON.
pub fn jwt_target(data: &[u8]) {
    use crate::policy::auth::{Authenticator, Now};
    use std::sync::OnceLock;
    const SECRET: &str = "fuzz-secret-0123456789abcdef0123";
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    let auth = AUTH.get_or_init(|| {
        let settings: crate::policy::auth::AuthSettings =
            serde_json::from_value(serde_json::json!({
                "keys": { "hmac_secret": { "secret": SECRET } },
                "algorithms": ["HS256"],
                "issuers": ["iss"],
                "audiences": ["aud"],
                "required_claims": ["exp", "sub"],
            }))
            .expect("settings");
        Authenticator::new(&settings).expect("authenticator")
    });
    let now = Now {
        unix_secs: 1_700_000_000,
        instant: std::time::Instant::now(),
    };
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = auth.verify_local(token, now);
        let mut h = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
            h.insert(http::header::AUTHORIZATION, v);
            let _ = auth.extract(&h, Some(token));
        }
    }
    if let Ok(claims) = serde_json::from_slice::<serde_json::Value>(data) {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        if let Ok(token) = jsonwebtoken::encode(&header, &claims, &key) {
            if let Ok(id) = auth.verify_local(&token, now) {
                // accepted: the claims the checks require really are there
                let c = &id.claims;
                assert!(c.get("sub").is_some() && c.get("exp").is_some(), "{claims}");
            }
        }
    }
}

/// Rate-limit key building: deterministic, and a header-valued key of one request never equals the
/// key of a different header value (no collisions between clients by construction).
pub fn rate_key_target(data: &[u8]) {
    use crate::policy::rate_limit::from_plan::{write_key, KeyFacts};
    use crate::policy::rate_limit::{KeyFallback, KeySpec, Scope};
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mid = rest.len() / 2;
    let (a, b) = rest.split_at(mid);
    let (Ok(va), Ok(vb)) = (
        http::HeaderValue::from_bytes(a),
        http::HeaderValue::from_bytes(b),
    ) else {
        return;
    };
    let scope = match sel % 3 {
        0 => Scope::Global,
        1 => Scope::Upstream,
        _ => Scope::Route,
    };
    let key = KeySpec::Header {
        name: http::HeaderName::from_static("x-key"),
        fallback: (sel & 4 != 0).then_some(KeyFallback::ClientIp),
    };
    let composite = KeySpec::Composite(vec![KeySpec::ClientIp, key.clone()]);
    let ip: IpAddr = [192, 0, 2, sel].into();
    let build = |v: &http::HeaderValue, k: &KeySpec| {
        let mut h = http::HeaderMap::new();
        h.insert("x-key", v.clone());
        let facts = KeyFacts {
            client_ip: Some(ip),
            identity: None,
            headers: &h,
            route: "r",
            upstream: "u",
        };
        let mut out = Vec::new();
        write_key(k, scope, &facts, &mut out);
        out
    };
    for k in [&key, &composite] {
        let (ka, kb) = (build(&va, k), build(&vb, k));
        assert_eq!(ka, build(&va, k), "deterministic");
        assert_eq!(ka == kb, a == b, "{a:?} vs {b:?} under {k:?}");
    }
}

/// W3C `traceparent` parsing (`proxy::steps::trace`). Properties: an accepted header has the
/// version-00 layout in lowercase hex with non-zero ids and a version other than `ff`, and its fields
/// are what the parser returns; whatever the client sent, the `traceparent` gw forwards is a valid
/// version-00 header that keeps the client's trace id only when it was accepted.
pub fn traceparent_target(data: &[u8]) {
    use crate::proxy::steps::trace::{context, parse, TRACEPARENT_LEN};
    let parsed = parse(data);
    if let Some(p) = parsed {
        assert!(data.len() >= TRACEPARENT_LEN);
        assert_ne!(&data[..2], b"ff");
        assert!(data.len() == TRACEPARENT_LEN || (&data[..2] != b"00" && data[55] == b'-'));
        let lower_hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        assert!(lower_hex(&data[..2]) && lower_hex(&data[3..35]) && lower_hex(&data[36..52]));
        assert!(lower_hex(&data[53..55]));
        assert_ne!(p.trace_id, [0; 16]);
        assert_ne!(p.span_id, [0; 8]);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&p.trace_id).as_bytes(), &data[3..35]);
        assert_eq!(hex(&p.span_id).as_bytes(), &data[36..52]);
    }
    let mut h = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        h.insert("traceparent", v);
    }
    let t = context(&h);
    let out = parse(t.traceparent().as_bytes()).expect("gw forwards a valid traceparent");
    assert!(t.traceparent().starts_with("00-") && t.traceparent().len() == TRACEPARENT_LEN);
    assert_eq!(out.span_id, t.span_id());
    match parsed.filter(|_| h.contains_key("traceparent")) {
        Some(p) => {
            assert_eq!(out.trace_id, p.trace_id);
            assert_eq!(out.sampled, p.sampled);
            assert_eq!(t.parent_span_id(), Some(p.span_id));
        }
        None => assert!(!t.joined() && out.sampled),
    }
}

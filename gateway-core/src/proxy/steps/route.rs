//! Step 2: head size (431), path normalisation (400), route match (404 / 405) and the rewrite of the
//! path sent upstream. Also the one `Host` → host-name function, shared with `gw dry-run`.
use crate::error::GwError;
use crate::plan::Plan;
use crate::proxy::headers;
use crate::routing::{normalize_with, MatchOutcome, RequestView};
use pingora::http::RequestHeader;

/// The host name of a `Host` header value: without the port, IPv6 brackets removed
/// (`[::1]:8080` → `::1`, `example.com:80` → `example.com`).
pub fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.split(']').next().map_or(h, |s| s.trim_start_matches('['));
    }
    h.rsplit_once(':').map_or(h, |(a, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            a
        } else {
            h
        }
    })
}

/// Matches `req` against the plan; on success returns the route id and writes the upstream path
/// (rewritten path plus the query) into `upstream_path`.
pub fn route(plan: &Plan, req: &RequestHeader, upstream_path: &mut String) -> Result<u32, GwError> {
    if headers::request_head_bytes(req) > headers::MAX_REQUEST_HEAD_BYTES {
        return Err(GwError::header_too_large(headers::MAX_REQUEST_HEAD_BYTES));
    }
    let path = normalize_with(&plan.server.path_policy, req.uri.path())
        .map_err(|e| GwError::bad_request(e.message()))?;
    let host = req.uri.host().or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(strip_port)
    });
    let view = RequestView {
        method: &req.method,
        path: &path,
        host,
        headers: &req.headers,
    };
    match plan.router.find(&view) {
        MatchOutcome::Found { route, captures } => {
            upstream_path.clear();
            plan.routes[route as usize]
                .rewrite
                .apply(&path, &captures, upstream_path);
            if let Some(q) = req.uri.query() {
                upstream_path.push('?');
                upstream_path.push_str(q);
            }
            Ok(route)
        }
        MatchOutcome::NotFound => Err(GwError::no_route()),
        MatchOutcome::MethodNotAllowed { allowed } => {
            let allow = allowed
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            Err(GwError::method_not_allowed(&allow))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn strip_port_handles_ipv6_and_names() {
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
        assert_eq!(strip_port("example.com:80"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("127.0.0.1:3000"), "127.0.0.1");
    }

    pub(crate) fn plan(yaml: &str) -> Plan {
        let c = crate::compile("t.yaml", yaml, &|_| None);
        c.plan.unwrap_or_else(|| panic!("{:?}", c.diagnostics))
    }

    pub(crate) const YAML: &str = r#"
listeners: [{ name: l, address: "127.0.0.1:0" }]
upstreams: [{ name: u, endpoints: [{ address: "127.0.0.1:9" }] }]
routes:
  - { name: named, match: { prefix: /a, hosts: [a.example.com] }, upstream: u }
  - { name: any, match: { prefix: /a }, upstream: u }
  - { name: get, match: { path: /g, methods: [GET] }, upstream: u }
"#;

    #[test]
    fn routes_rewrites_and_rejects() {
        let p = plan(YAML);
        let mut out = String::new();
        let mut req = RequestHeader::build("GET", b"/a/x?q=1", None).unwrap();
        req.insert_header("host", "a.example.com:8080").unwrap();
        assert_eq!(route(&p, &req, &mut out), Ok(0));
        assert_eq!(out, "/a/x?q=1");
        let mut req = RequestHeader::build("GET", b"/a/x", None).unwrap();
        req.insert_header("host", "[::1]:8080").unwrap();
        assert_eq!(route(&p, &req, &mut out), Ok(1));
        let req = RequestHeader::build("POST", b"/g", None).unwrap();
        let e = route(&p, &req, &mut out).unwrap_err();
        assert_eq!(e.status, 405);
        assert_eq!(e.headers[0].1, "GET");
        let req = RequestHeader::build("GET", b"/nope", None).unwrap();
        assert_eq!(route(&p, &req, &mut out).unwrap_err().status, 404);
    }
}

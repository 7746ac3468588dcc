//! Step 8: the request sent upstream — the rewritten URI, injected-header stripping (headers an auth
//! policy sets must never come from the client), forwarded claims, `Host`, `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Request-Id`.
use crate::error::GwError;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use std::net::IpAddr;

/// Everything the step needs about the request besides the header being built.
pub struct Forwarding<'a> {
    /// The path (and query) sent upstream, after the route's rewrite.
    pub upstream_path: &'a str,
    /// Headers some auth policy injects (stripped first).
    pub injected: &'a [HeaderName],
    /// Claim headers of the verified identity.
    pub claims: &'a [(HeaderName, HeaderValue)],
    /// The route's `Host` override.
    pub route_host: Option<&'a HeaderValue>,
    /// The client's `Host` (becomes `X-Forwarded-Host`).
    pub original_host: Option<&'a HeaderValue>,
    /// The TCP peer (appended to `X-Forwarded-For`).
    pub peer: Option<IpAddr>,
    /// Whether the client connection is TLS (`X-Forwarded-Proto`).
    pub tls: bool,
    /// The request id (`X-Request-Id`).
    pub request_id: &'a HeaderValue,
}

/// One `X-Forwarded-For` value: the hops of every line the client sent, then `peer` (blank lines and
/// empty elements dropped; see [`crate::proxy::headers::forwarded_for_value`]).
pub fn x_forwarded_for<'a>(
    prev: impl IntoIterator<Item = &'a HeaderValue>,
    peer: IpAddr,
) -> Option<HeaderValue> {
    crate::proxy::headers::forwarded_for_value(
        Some(peer),
        prev.into_iter().map(HeaderValue::as_bytes),
    )
}

/// The identity part of the upstream head: removes every header some auth policy injects (a client
/// must never set them), then sets the verified identity's claim headers. Also used by
/// [`crate::policies`].
pub fn apply_identity(
    up: &mut RequestHeader,
    injected: &[HeaderName],
    claims: &[(HeaderName, HeaderValue)],
) -> Result<(), GwError> {
    for h in injected {
        up.remove_header(h);
    }
    for (k, v) in claims {
        up.insert_header(k.clone(), v.clone())
            .map_err(|_| GwError::internal("could not set a forwarded header"))?;
    }
    Ok(())
}

/// Rewrites `up` into the request sent upstream.
pub fn apply(up: &mut RequestHeader, f: &Forwarding<'_>) -> Result<(), GwError> {
    let uri = f
        .upstream_path
        .parse::<http::Uri>()
        .map_err(|_| GwError::bad_request("the rewritten path is not a valid URI"))?;
    up.set_uri(uri);
    let internal = |_| GwError::internal("could not set a forwarded header");
    apply_identity(up, f.injected, f.claims)?;
    if let Some(h) = f.route_host {
        up.insert_header(http::header::HOST, h.clone())
            .map_err(internal)?;
    } else if up.headers.get(http::header::HOST).is_none() {
        if let Some(h) = f.original_host {
            up.insert_header(http::header::HOST, h.clone())
                .map_err(internal)?;
        }
    }
    if let Some(ip) = f.peer {
        let xff = x_forwarded_for(up.headers.get_all("x-forwarded-for"), ip)
            .ok_or_else(|| GwError::internal("x-forwarded-for"))?;
        up.insert_header("x-forwarded-for", xff).map_err(internal)?;
    }
    let proto = HeaderValue::from_static(if f.tls { "https" } else { "http" });
    up.insert_header("x-forwarded-proto", proto)
        .map_err(internal)?;
    if let Some(h) = f.original_host {
        up.insert_header("x-forwarded-host", h.clone())
            .map_err(internal)?;
    }
    up.insert_header("x-request-id", f.request_id.clone())
        .map_err(internal)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_upstream_head() {
        let mut up = RequestHeader::build("GET", b"/orig", None).unwrap();
        up.insert_header("x-user", "forged").unwrap();
        up.insert_header("x-forwarded-for", "6.6.6.6").unwrap();
        up.append_header("x-forwarded-for", "198.51.100.1").unwrap();
        let rid = HeaderValue::from_static("rid");
        let host = HeaderValue::from_static("api.example");
        let injected = [HeaderName::from_static("x-user")];
        let f = Forwarding {
            upstream_path: "/new?a=1",
            injected: &injected,
            claims: &[],
            route_host: None,
            original_host: Some(&host),
            peer: Some("10.0.0.7".parse().unwrap()),
            tls: false,
            request_id: &rid,
        };
        apply(&mut up, &f).unwrap();
        assert_eq!(up.uri, "/new?a=1");
        assert!(up.headers.get("x-user").is_none());
        // issue 11 item 1: every line is kept, as one joined value
        assert_eq!(up.headers.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            up.headers["x-forwarded-for"],
            "6.6.6.6, 198.51.100.1, 10.0.0.7"
        );
        assert_eq!(up.headers["x-forwarded-proto"], "http");
        assert_eq!(up.headers["x-forwarded-host"], "api.example");
        assert_eq!(up.headers["host"], "api.example");
        assert_eq!(up.headers["x-request-id"], "rid");
        let bad = Forwarding {
            upstream_path: "/a b",
            ..f
        };
        assert_eq!(apply(&mut up, &bad).unwrap_err().code, "bad_request");
        assert_eq!(
            x_forwarded_for(
                Some(&HeaderValue::from_static("  ")),
                "::1".parse().unwrap()
            )
            .unwrap(),
            "::1"
        );
    }
}

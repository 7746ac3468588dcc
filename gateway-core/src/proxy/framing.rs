//! Request framing by RFC 9112 (§3.2 Host, §6.1 Transfer-Encoding, §6.3 message body length) and RFC 9110
//! §8.6 (Content-Length), checked on every request head before anything else looks at it.
//!
//! Decisions (answers are 400, or 501 for an unknown transfer coding; every rejection closes the connection):
//! - `Transfer-Encoding` together with `Content-Length`: rejected (RFC 9112 §6.1 allows reject-or-close;
//!   rejecting leaves no request-smuggling ambiguity between gw and the upstream).
//! - `Transfer-Encoding` whose final coding is not `chunked`, `chunked` applied twice, or any
//!   `Transfer-Encoding` in an HTTP/1.0 request: 400. Another coding before `chunked` (`gzip, chunked`): 501.
//! - `Content-Length`: every element of every line must be digits only (no sign, no inner space) and fit in
//!   64 bits; several lines or list elements with one same value are forwarded as ONE header; different
//!   values: 400.
//! - `Host`: missing in an HTTP/1.1 request, more than one line, or an invalid value: 400.
//! - obs-fold (continuation lines) and whitespace before the colon are refused by the head parser
//!   (httparse, in Pingora) with 400 before this check runs.
use crate::error::GwError;
use http::{header, HeaderMap, Version};
use pingora::http::RequestHeader;
use std::time::Duration;

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramingError {
    /// 400, or 501 for a transfer coding gw does not implement.
    pub status: u16,
    pub message: &'static str,
}

impl FramingError {
    fn bad(message: &'static str) -> Self {
        FramingError {
            status: 400,
            message,
        }
    }
}

impl From<FramingError> for GwError {
    fn from(e: FramingError) -> GwError {
        if e.status == 501 {
            GwError::new(
                crate::error::Side::Client,
                501,
                "not_implemented",
                e.message,
            )
        } else {
            GwError::bad_request(e.message)
        }
    }
}

/// What to change in an acceptable head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Nothing to change.
    Ok,
    /// Repeated identical `Content-Length` values: forward a single `Content-Length: n`.
    CollapseContentLength(u64),
}

/// Checks a parsed request head. `raw_has_content_length` says whether the head as received had a
/// `Content-Length` line (Pingora's parser drops it when `Transfer-Encoding` is present too).
pub fn check(
    version: Version,
    headers: &HeaderMap,
    raw_has_content_length: bool,
) -> Result<Framing, FramingError> {
    check_host(version, headers)?;
    let te_lines = headers.get_all(header::TRANSFER_ENCODING);
    if te_lines.iter().next().is_some() {
        if version == Version::HTTP_10 || version == Version::HTTP_09 {
            return Err(FramingError::bad(
                "Transfer-Encoding is not allowed in an HTTP/1.0 request",
            ));
        }
        if raw_has_content_length || headers.contains_key(header::CONTENT_LENGTH) {
            return Err(FramingError::bad(
                "a request must not have both Transfer-Encoding and Content-Length",
            ));
        }
        check_transfer_encoding(te_lines.iter().map(|v| v.as_bytes()))?;
        return Ok(Framing::Ok);
    }
    content_length(
        headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

fn check_host(version: Version, headers: &HeaderMap) -> Result<(), FramingError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => Err(FramingError::bad(
            "an HTTP/1.1 request must have a Host header",
        )),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(FramingError::bad("more than one Host header")),
        (Some(h), None) if valid_host(h.as_bytes()) => Ok(()),
        (Some(_), None) => Err(FramingError::bad("invalid Host header")),
    }
}

/// `uri-host [ ":" port ]` (RFC 3986): a reg-name (unreserved, pct-encoded, sub-delims) or an IP literal
/// in brackets, then optional digits after a colon. An empty value is allowed (RFC 9110 §7.2).
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let lit = &rest[..end];
        if lit.is_empty()
            || !lit
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &rest[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&[][..], port),
            _ => return false,
        }
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, &[][..]),
        }
    };
    let reg_name_ok = host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b));
    reg_name_ok && port.iter().all(u8::is_ascii_digit) && port.len() <= 5
}

/// The list of codings over every line (RFC 9110 §5.3): the last must be `chunked`, `chunked` only once.
fn check_transfer_encoding<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<(), FramingError> {
    let mut codings: Vec<&[u8]> = Vec::new();
    for line in lines {
        codings.extend(
            line.split(|&b| b == b',')
                .map(trim)
                .filter(|c| !c.is_empty()),
        );
    }
    let Some((last, before)) = codings.split_last() else {
        return Err(FramingError::bad("empty Transfer-Encoding"));
    };
    if !last.eq_ignore_ascii_case(b"chunked") {
        return Err(FramingError::bad(
            "the final Transfer-Encoding of a request must be chunked",
        ));
    }
    if before.iter().any(|c| c.eq_ignore_ascii_case(b"chunked")) {
        return Err(FramingError::bad("chunked is applied more than once"));
    }
    if !before.is_empty() {
        return Err(FramingError {
            status: 501,
            message: "transfer codings other than chunked are not supported",
        });
    }
    Ok(())
}

fn content_length<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<Framing, FramingError> {
    let mut value: Option<u64> = None;
    let mut elements = 0usize;
    for line in lines {
        for el in line.split(|&b| b == b',').map(trim) {
            if el.is_empty() || el.len() > 20 || !el.iter().all(u8::is_ascii_digit) {
                return Err(FramingError::bad("invalid Content-Length"));
            }
            let n = std::str::from_utf8(el)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(FramingError::bad("invalid Content-Length"))?;
            match value {
                Some(v) if v != n => {
                    return Err(FramingError::bad("conflicting Content-Length values"))
                }
                _ => value = Some(n),
            }
            elements += 1;
        }
    }
    Ok(match value {
        Some(n) if elements > 1 => Framing::CollapseContentLength(n),
        _ => Framing::Ok,
    })
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// Whether a raw request head has a `Content-Length` field line.
fn raw_has_content_length(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').skip(1).any(|line| {
        line.iter()
            .position(|&b| b == b':')
            .is_some_and(|i| line[..i].eq_ignore_ascii_case(b"content-length"))
    })
}

/// Hook for `early_request_filter`: checks the head; collapses repeated `Content-Length`; on a violation
/// stores the error in `error` (answered by `fail_to_proxy`, which closes the connection) and fails.
pub fn enforce(
    session: &mut pingora::proxy::Session,
    error: &mut Option<GwError>,
) -> pingora::Result<()> {
    let raw_cl = session
        .as_downstream()
        .as_http1()
        .is_some_and(|h1| raw_has_content_length(&h1.get_headers_raw_bytes()));
    let req: &RequestHeader = session.req_header();
    match check(req.version, &req.headers, raw_cl) {
        Ok(Framing::Ok) => Ok(()),
        Ok(Framing::CollapseContentLength(n)) => {
            session
                .req_header_mut()
                .insert_header(header::CONTENT_LENGTH, n)?;
            Ok(())
        }
        Err(e) => {
            let status = e.status;
            *error = Some(e.into());
            pingora::Error::e_explain(pingora::ErrorType::HTTPStatus(status), "request framing")
        }
    }
}

/// Largest request body (declared by `Content-Length`) gw reads and drops after answering without
/// reading it (a 401, 404, 429 ...), to keep the connection, like nginx discarding a body.
pub const DRAIN_LIMIT: u64 = 64 * 1024;

/// Whether an answer given before the request body was read may keep the connection, the body then
/// read and dropped before the next request: no body, or one of a declared length of at most
/// [`DRAIN_LIMIT`] from a client that is not waiting for `100 Continue` (it may never send it). A
/// chunked or larger body: the connection closes after the answer (Pingora's default), rather than
/// reading a body only to throw it away.
pub fn may_drain_unread_body(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) || headers.contains_key(header::EXPECT) {
        return false;
    }
    match headers.get(header::CONTENT_LENGTH) {
        None => true,
        Some(v) => std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .is_some_and(|n| n <= DRAIN_LIMIT),
    }
}

/// Lets Pingora keep the connection after a local answer to a request whose small body is unread
/// ([`may_drain_unread_body`]): it reads and drops the body, within `limit`, before the next request.
/// Without this, every 401, 404 or 429 to a `POST` closed the connection, and a client being
/// refused paid a new TCP (and TLS) handshake per request.
pub fn keep_alive_past_unread_body(session: &mut pingora::proxy::Session, limit: Duration) {
    let headers = &session.req_header().headers;
    // no `Content-Length`: no body (nothing to drain) or a chunked one (closes, Pingora's default)
    if headers.contains_key(header::CONTENT_LENGTH) && may_drain_unread_body(headers) {
        let ds = session.as_downstream_mut();
        ds.set_close_on_response_before_downstream_finish(false);
        ds.set_total_drain_timeout(Some(limit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_small_declared_bodies_are_drained() {
        assert!(may_drain_unread_body(&h(&[])));
        assert!(may_drain_unread_body(&h(&[("content-length", "0")])));
        assert!(may_drain_unread_body(&h(&[("content-length", "65536")])));
        assert!(!may_drain_unread_body(&h(&[("content-length", "65537")])));
        assert!(!may_drain_unread_body(&h(&[(
            "content-length",
            "99999999999999999999"
        )])));
        assert!(!may_drain_unread_body(&h(&[(
            "transfer-encoding",
            "chunked"
        )])));
        assert!(!may_drain_unread_body(&h(&[
            ("content-length", "5"),
            ("expect", "100-continue")
        ])));
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        m
    }

    fn chk(pairs: &[(&str, &str)]) -> Result<Framing, FramingError> {
        check(
            Version::HTTP_11,
            &h(pairs),
            pairs
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length")),
        )
    }

    #[test]
    fn plain_requests_pass() {
        assert_eq!(chk(&[("host", "a")]), Ok(Framing::Ok));
        assert_eq!(
            chk(&[("host", "a:8080"), ("content-length", "12")]),
            Ok(Framing::Ok)
        );
        assert_eq!(
            chk(&[("host", "a"), ("transfer-encoding", "chunked")]),
            Ok(Framing::Ok)
        );
        assert_eq!(
            chk(&[("host", "a"), ("transfer-encoding", "Chunked")]),
            Ok(Framing::Ok)
        );
        assert_eq!(chk(&[("host", "[::1]:80")]), Ok(Framing::Ok));
        assert_eq!(chk(&[("host", "")]), Ok(Framing::Ok));
        assert_eq!(check(Version::HTTP_10, &h(&[]), false), Ok(Framing::Ok));
        assert_eq!(check(Version::HTTP_2, &h(&[]), false), Ok(Framing::Ok));
    }

    #[test]
    fn host_rules() {
        for bad in [
            vec![],
            vec![("host", "a"), ("host", "a")],
            vec![("host", "a b")],
            vec![("host", "a/b")],
            vec![("host", "user@a")],
            vec![("host", "a:80x")],
            vec![("host", "a:123456")],
            vec![("host", "[::1")],
            vec![("host", "[zz]")],
            vec![("host", "[::1]x")],
        ] {
            assert_eq!(chk(&bad).map_err(|e| e.status), Err(400), "{bad:?}");
        }
        assert_eq!(
            check(Version::HTTP_10, &h(&[("host", "a"), ("host", "b")]), false)
                .map_err(|e| e.status),
            Err(400)
        );
    }

    #[test]
    fn te_and_cl_together_are_rejected_even_when_the_parser_dropped_cl() {
        let m = h(&[("host", "a"), ("transfer-encoding", "chunked")]);
        assert_eq!(
            check(Version::HTTP_11, &m, true).map_err(|e| e.status),
            Err(400)
        );
        let m = h(&[
            ("host", "a"),
            ("transfer-encoding", "chunked"),
            ("content-length", "3"),
        ]);
        assert_eq!(
            check(Version::HTTP_11, &m, false).map_err(|e| e.status),
            Err(400)
        );
    }

    #[test]
    fn transfer_encoding_rules() {
        let te = |v: &[&str]| {
            let mut p = vec![("host", "a")];
            p.extend(v.iter().map(|v| ("transfer-encoding", *v)));
            chk(&p).map_err(|e| e.status)
        };
        assert_eq!(te(&["gzip"]), Err(400));
        assert_eq!(te(&["chunked, gzip"]), Err(400));
        assert_eq!(te(&["chunked", "chunked"]), Err(400));
        assert_eq!(te(&["chunked, chunked"]), Err(400));
        assert_eq!(te(&["gzip, chunked"]), Err(501));
        assert_eq!(te(&["gzip", "chunked"]), Err(501));
        assert_eq!(te(&["identity"]), Err(400));
        assert_eq!(te(&[""]), Err(400));
        assert_eq!(te(&["chunked;x=1"]), Err(400));
        assert_eq!(te(&[" chunked ,"]), Ok(Framing::Ok));
        let m = h(&[("host", "a"), ("transfer-encoding", "chunked")]);
        assert_eq!(
            check(Version::HTTP_10, &m, false).map_err(|e| e.status),
            Err(400)
        );
    }

    #[test]
    fn content_length_rules() {
        let cl = |v: &[&str]| {
            let mut p = vec![("host", "a")];
            p.extend(v.iter().map(|v| ("content-length", *v)));
            chk(&p).map_err(|e| e.status)
        };
        assert_eq!(cl(&["5", "5"]), Ok(Framing::CollapseContentLength(5)));
        assert_eq!(cl(&["5, 5"]), Ok(Framing::CollapseContentLength(5)));
        assert_eq!(cl(&["007"]), Ok(Framing::Ok));
        for bad in [
            &["5", "6"][..],
            &["5, 6"],
            &["+5"],
            &["-5"],
            &["5 5"],
            &["0x5"],
            &[""],
            &["5,"],
            &["99999999999999999999"],
            &["18446744073709551616"],
        ] {
            assert_eq!(cl(bad), Err(400), "{bad:?}");
        }
        assert_eq!(cl(&["18446744073709551615"]), Ok(Framing::Ok));
    }

    #[test]
    fn raw_head_scan_finds_content_length_lines_only() {
        assert!(raw_has_content_length(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"
        ));
        assert!(raw_has_content_length(
            b"POST / HTTP/1.1\r\ncontent-length:3\r\n\r\n"
        ));
        assert!(!raw_has_content_length(
            b"POST /content-length: HTTP/1.1\r\nHost: a\r\nX: content-length: 1\r\n\r\n"
        ));
    }
}

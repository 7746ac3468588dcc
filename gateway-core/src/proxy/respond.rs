//! The one response writer for local answers: a [`GwError`] (status + JSON body + its headers) or a
//! configured static breaker fallback (not an error, same writer). Every local answer carries
//! `X-Request-Id` and the rate-limit headers of the request; a 503 without its own `Retry-After`
//! gets `Retry-After: 1`.
use crate::error::GwError;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

/// A local answer, before it is written.
pub struct Answer<'a> {
    pub status: u16,
    pub content_type: HeaderValue,
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub body: Bytes,
}

impl<'a> Answer<'a> {
    /// The answer for an error.
    pub fn error(e: &'a GwError, request_id: &str) -> Self {
        Answer {
            status: e.status,
            content_type: HeaderValue::from_static("application/json"),
            headers: &e.headers,
            body: e.json_body(request_id),
        }
    }
    /// A configured response (breaker fallback): its own headers and `Content-Type` (default
    /// `text/plain`), marked `X-Gw-Fallback: circuit-open`.
    pub fn fallback(status: u16, headers: &'a [(HeaderName, HeaderValue)], body: Bytes) -> Self {
        let content_type = headers
            .iter()
            .find(|(k, _)| k == http::header::CONTENT_TYPE)
            .map(|(_, v)| v.clone())
            .unwrap_or(HeaderValue::from_static("text/plain"));
        Answer {
            status,
            content_type,
            headers,
            body,
        }
    }
}

/// Builds the response head of an answer.
pub fn head(
    a: &Answer<'_>,
    request_id: &HeaderValue,
    limit_headers: &[(&'static str, HeaderValue)],
    fallback: bool,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(a.status, Some(5 + a.headers.len()))?;
    resp.insert_header(http::header::CONTENT_TYPE, a.content_type.clone())?;
    resp.insert_header(http::header::CONTENT_LENGTH, a.body.len())?;
    resp.insert_header("x-request-id", request_id.clone())?;
    for (k, v) in a.headers {
        if k != http::header::CONTENT_TYPE {
            resp.append_header(k.clone(), v.clone())?;
        }
    }
    if fallback {
        resp.append_header("x-gw-fallback", "circuit-open")?;
    }
    for (k, v) in limit_headers {
        resp.insert_header(*k, v.clone())?;
    }
    if a.status == 503 && resp.headers.get(http::header::RETRY_AFTER).is_none() {
        resp.insert_header(http::header::RETRY_AFTER, "1")?;
    }
    Ok(resp)
}

/// Writes an answer (head and body) to the client.
pub async fn write(
    session: &mut Session,
    a: Answer<'_>,
    request_id: &HeaderValue,
    limit_headers: &[(&'static str, HeaderValue)],
    fallback: bool,
) -> Result<()> {
    let resp = head(&a, request_id, limit_headers, fallback)?;
    super::conn::on_response(session);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(a.body), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shape_for_every_error() {
        let rid = HeaderValue::from_static("r1");
        let e = GwError::method_not_allowed("GET");
        let h = head(&Answer::error(&e, "r1"), &rid, &[], false).unwrap();
        assert_eq!(h.status, 405);
        assert_eq!(h.headers["allow"], "GET");
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.headers["x-request-id"], "r1");
        let e = GwError::no_healthy_endpoint("u");
        let h = head(&Answer::error(&e, "r1"), &rid, &[], false).unwrap();
        assert_eq!(h.headers["retry-after"], "1");
        let e = GwError::rate_limited("l");
        let lim = [("retry-after", HeaderValue::from(7u64))];
        let h = head(&Answer::error(&e, "r1"), &rid, &lim, false).unwrap();
        assert_eq!(
            (h.status.as_u16(), &h.headers["retry-after"]),
            (429, &HeaderValue::from(7u64))
        );
        let fh = [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        let a = Answer::fallback(200, &fh, Bytes::from_static(b"{}"));
        let h = head(&a, &rid, &[], true).unwrap();
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.headers.get_all("content-type").iter().count(), 1);
        assert_eq!(h.headers["x-gw-fallback"], "circuit-open");
    }
}

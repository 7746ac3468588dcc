//! Token extraction from `Authorization: Bearer`, a cookie, or a query parameter (in that order).
//!
//! Returns a slice borrowed from the headers / query string (no allocation). A present but
//! unusable token (empty, too long, characters outside the base64url + `.` alphabet, or two
//! different `Authorization: Bearer` headers) is `Malformed`; authorization schemes other than
//! Bearer are ignored (treated as no token).

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;

use super::error::AuthReason;
use super::settings::TokenSources;

/// Compiled token sources.
#[derive(Debug, Clone)]
pub(crate) struct TokenExtractor {
    bearer: bool,
    cookie: Option<String>,
    query: Option<String>,
    max_len: usize,
}

impl TokenExtractor {
    pub(crate) fn new(s: &TokenSources) -> Self {
        TokenExtractor {
            bearer: s.bearer_header,
            cookie: s.cookie.clone().filter(|c| !c.is_empty()),
            query: s.query_param.clone().filter(|q| !q.is_empty()),
            max_len: s.max_token_len,
        }
    }

    /// Finds the token, if any.
    pub(crate) fn extract<'a>(
        &self,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
    ) -> Result<Option<&'a str>, AuthReason> {
        if self.bearer {
            if let Some(t) = bearer(headers)? {
                return self.check(t).map(Some);
            }
        }
        if let Some(name) = &self.cookie {
            if let Some(t) = cookie(headers, name) {
                return self.check(t).map(Some);
            }
        }
        if let (Some(name), Some(q)) = (&self.query, query) {
            if let Some(t) = query_param(q, name) {
                return self.check(t).map(Some);
            }
        }
        Ok(None)
    }

    fn check<'a>(&self, t: &'a str) -> Result<&'a str, AuthReason> {
        let ok = !t.is_empty()
            && t.len() <= self.max_len
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(t)
        } else {
            Err(AuthReason::Malformed)
        }
    }
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthReason> {
    let mut found: Option<&str> = None;
    for v in headers.get_all(AUTHORIZATION) {
        let Ok(s) = v.to_str() else {
            continue;
        };
        let s = s.trim();
        let (scheme, rest) = s.split_once(' ').unwrap_or((s, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            continue;
        }
        let token = rest.trim_start_matches(' ');
        match found {
            Some(prev) if prev != token => return Err(AuthReason::Malformed),
            _ => found = Some(token),
        }
    }
    Ok(found)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(v)
        })
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ex(cookie: Option<&str>, query: Option<&str>) -> TokenExtractor {
        TokenExtractor::new(&TokenSources {
            bearer_header: true,
            cookie: cookie.map(str::to_string),
            query_param: query.map(str::to_string),
            max_token_len: 64,
        })
    }

    fn hdrs(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bearer_header_variants() {
        let e = ex(None, None);
        assert_eq!(
            e.extract(&hdrs(&[("authorization", "Bearer a.b.c")]), None),
            Ok(Some("a.b.c"))
        );
        assert_eq!(
            e.extract(&hdrs(&[("authorization", "bEaReR   a.b.c ")]), None),
            Ok(Some("a.b.c"))
        );
        assert_eq!(
            e.extract(&hdrs(&[("authorization", "Basic dXNlcjpw")]), None),
            Ok(None)
        );
        assert_eq!(
            e.extract(&hdrs(&[("authorization", "Bearer")]), None),
            Err(AuthReason::Malformed)
        );
        assert_eq!(
            e.extract(&hdrs(&[("authorization", "Bearer a b")]), None),
            Err(AuthReason::Malformed)
        );
        assert_eq!(
            e.extract(
                &hdrs(&[
                    ("authorization", "Bearer a.b.c"),
                    ("authorization", "Bearer x.y.z")
                ]),
                None
            ),
            Err(AuthReason::Malformed)
        );
        let long = HeaderMap::from_iter([(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", "a".repeat(65))).expect("hv"),
        )]);
        assert_eq!(e.extract(&long, None), Err(AuthReason::Malformed));
        assert_eq!(
            e.extract(&HeaderMap::new(), Some("access_token=a.b.c")),
            Ok(None)
        );
    }

    #[test]
    fn cookie_and_query() {
        let e = ex(Some("jwt"), Some("access_token"));
        assert_eq!(
            e.extract(&hdrs(&[("cookie", "a=1; jwt=x.y.z; b=2")]), None),
            Ok(Some("x.y.z"))
        );
        assert_eq!(
            e.extract(&hdrs(&[("cookie", "jwt=\"x.y.z\"")]), None),
            Ok(Some("x.y.z"))
        );
        assert_eq!(
            e.extract(&HeaderMap::new(), Some("a=1&access_token=q.r.s")),
            Ok(Some("q.r.s"))
        );
        assert_eq!(
            e.extract(&HeaderMap::new(), Some("access_token=q%2Er")),
            Err(AuthReason::Malformed)
        );
        assert_eq!(e.extract(&HeaderMap::new(), Some("other=1")), Ok(None));
        // Header wins over cookie and query.
        let h = hdrs(&[("authorization", "Bearer h.h.h"), ("cookie", "jwt=c.c.c")]);
        assert_eq!(e.extract(&h, Some("access_token=q.q.q")), Ok(Some("h.h.h")));
    }
}

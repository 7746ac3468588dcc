//! Path normalisation: the path a route is matched against — and the path sent upstream — is the
//! normalised one, so `/api/public/../admin`, `/api/public/%2e%2e/admin` and `//api/admin` all mean
//! `/api/admin` and can never slip past a route's auth.
//!
//! Steps, in order (RFC 3986 §6.2.2 plus the gateway's own rules):
//! 1. percent-decode the unreserved characters (`A-Z a-z 0-9 - . _ ~`); other escapes are kept, with their
//!    hex digits upper-cased (`%2f` → `%2F`: an encoded slash is *not* a separator);
//! 2. collapse repeated slashes (`//` → `/`);
//! 3. resolve `.` and `..` segments (`..` above the root stays at the root).
//!
//! A trailing slash is kept. Rejected (400): a path not starting with `/`, a malformed escape (`%zz`,
//! `%4`), an encoded NUL (`%00`), or a raw control character.
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadEscape,
    ForbiddenByte,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path must start with '/'",
            PathError::BadEscape => "the request path has a malformed percent-escape",
            PathError::ForbiddenByte => "the request path contains a forbidden character",
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises a request path (no query string). Borrowed when nothing changes, which is the common case.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if bytes.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(PathError::ForbiddenByte);
    }
    if !needs_work(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    // 1. decode unreserved escapes
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (h, l) = match (
                bytes.get(i + 1).and_then(|&c| hex(c)),
                bytes.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => (h, l),
                _ => return Err(PathError::BadEscape),
            };
            let v = h * 16 + l;
            if v == 0 {
                return Err(PathError::ForbiddenByte);
            }
            if is_unreserved(v) {
                decoded.push(v as char);
            } else {
                decoded.push('%');
                decoded.push(b"0123456789ABCDEF"[h as usize] as char);
                decoded.push(b"0123456789ABCDEF"[l as usize] as char);
            }
            i += 3;
        } else {
            // bytes ≥ 0x80 are part of UTF-8 sequences of the original &str: copy the whole char
            let ch_len = utf8_len(b);
            decoded.push_str(&path[i..i + ch_len]);
            i += ch_len;
        }
    }
    // 2 + 3. split on '/', drop empty and '.' segments, pop on '..'
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segs: Vec<&str> = Vec::new();
    for s in decoded.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// True when the path may change under normalisation (escapes, `//`, or dot segments).
fn needs_work(b: &[u8]) -> bool {
    for i in 0..b.len() {
        match b[i] {
            b'%' => return true,
            b'/' => match b.get(i + 1) {
                Some(b'/') => return true,
                Some(b'.') => {
                    let n = b.get(i + 2);
                    if n.is_none() || n == Some(&b'/') {
                        return true;
                    }
                    if n == Some(&b'.') {
                        let m = b.get(i + 3);
                        if m.is_none() || m == Some(&b'/') {
                            return true;
                        }
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(p: &str) -> String {
        normalize_path(p).unwrap().into_owned()
    }

    #[test]
    fn resolves_hostile_paths() {
        assert_eq!(n("/api/public/../admin"), "/api/admin");
        assert_eq!(n("/api/public/%2e%2e/admin"), "/api/admin");
        assert_eq!(n("/api/public/%2E%2E/admin"), "/api/admin");
        assert_eq!(n("/api/public/.%2e/admin"), "/api/admin");
        assert_eq!(n("//api//admin"), "/api/admin");
        assert_eq!(n("/api/./admin/"), "/api/admin/");
        assert_eq!(n("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/%61pi"), "/api");
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/"), "/");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/caf\u{e9}/x"), "/caf\u{e9}/x");
    }

    #[test]
    fn rejects_bad_paths() {
        assert_eq!(normalize_path("api"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%4"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%00b"), Err(PathError::ForbiddenByte));
        assert_eq!(normalize_path("/a\u{1}b"), Err(PathError::ForbiddenByte));
    }

    #[test]
    fn borrowed_when_clean() {
        assert!(matches!(
            normalize_path("/api/user/42").unwrap(),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            normalize_path("/a.b/c..d/.e").unwrap(),
            Cow::Borrowed(_)
        ));
    }

    proptest! {
        #[test]
        fn normalised_paths_are_clean_and_stable(p in "/[a-z./%2eE0-9]{0,40}") {
            if let Ok(once) = normalize_path(&p) {
                let once = once.into_owned();
                prop_assert!(once.starts_with('/'));
                prop_assert!(!once.contains("//"));
                for seg in once.split('/') {
                    prop_assert!(seg != "." && seg != "..", "dot segment in {once}");
                }
                let twice = normalize_path(&once).unwrap().into_owned();
                prop_assert_eq!(twice, once);
            }
        }
    }
}

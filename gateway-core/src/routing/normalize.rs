//! Path normalisation: the path a route is matched against — and the path sent upstream — is the
//! normalised one, so `/api/public/../admin`, `/api/public/%2e%2e/admin` and `//api/admin` all mean
//! `/api/admin` and can never slip past a route's auth.
//!
//! Steps, in order (RFC 3986 §6.2.2 plus the gateway's own rules):
//! 1. percent-decode the unreserved characters (`A-Z a-z 0-9 - . _ ~`); other escapes are kept, with their
//!    hex digits upper-cased; `%2F`/`%5C` (encoded `/`, `\`) are refused, kept or decoded to `/` as the
//!    [`PathPolicy`] says;
//! 2. collapse repeated slashes (`//` → `/`);
//! 3. resolve `.` and `..` segments (`..` above the root stays at the root);
//! 4. refuse what an upstream could decode into another path ([`super::path_policy`]).
//!
//! A trailing slash is kept. Rejected (400): a path not starting with `/`, a malformed escape (`%zz`,
//! `%4`, `%u002e`), an encoded NUL (`%00`), a raw control character or backslash, and the path-policy
//! cases.
use std::borrow::Cow;

pub use super::path_policy::PathError;
use super::path_policy::{check_unambiguous, hex, EscapedSlashes, PathPolicy, Semicolons};

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalises a request path (no query string) under the secure default [`PathPolicy`].
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    normalize_with(&PathPolicy::default(), path)
}

/// Normalises a request path (no query string) under `policy`: the normalised path, or why the request
/// must be refused with 400. Borrowed when nothing changes, which is the common case. The result is a
/// fixed point: normalising it again returns it unchanged.
pub fn normalize_with<'a>(policy: &PathPolicy, path: &'a str) -> Result<Cow<'a, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    for &b in bytes {
        if b < 0x20 || b == 0x7f {
            return Err(PathError::ForbiddenByte);
        }
        if b == b'\\' {
            return Err(PathError::Backslash);
        }
        if b == b';' && policy.semicolons == Semicolons::Reject {
            return Err(PathError::Semicolon);
        }
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
            match v {
                0 => return Err(PathError::ForbiddenByte),
                b'/' | b'\\' => match policy.escaped_slashes {
                    EscapedSlashes::Reject => return Err(PathError::EncodedSlash),
                    EscapedSlashes::Decode => decoded.push('/'),
                    EscapedSlashes::Keep => push_escape(&mut decoded, h, l),
                },
                b';' if policy.semicolons == Semicolons::Reject => {
                    return Err(PathError::Semicolon)
                }
                v if is_unreserved(v) => decoded.push(v as char),
                _ => push_escape(&mut decoded, h, l),
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
    // 4. nothing an upstream could decode differently
    check_unambiguous(&out)?;
    Ok(Cow::Owned(out))
}

fn push_escape(out: &mut String, h: u8, l: u8) {
    out.push('%');
    out.push(b"0123456789ABCDEF"[h as usize] as char);
    out.push(b"0123456789ABCDEF"[l as usize] as char);
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// True when the path may change under normalisation or needs the path-policy checks: escapes,
/// `;`, a space, non-ASCII, `//`, or a segment made only of dots.
fn needs_work(b: &[u8]) -> bool {
    if b.iter()
        .any(|&c| matches!(c, b'%' | b';' | b' ') || c >= 0x80)
    {
        return true;
    }
    b.windows(2).any(|w| w == b"//")
        || b.split(|&c| c == b'/')
            .any(|seg| !seg.is_empty() && seg.iter().all(|&c| c == b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::path_policy::{EscapedSlashes, PathPolicy, Semicolons};
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
        assert_eq!(n("/a%5b"), "/a%5B");
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
        assert_eq!(normalize_path("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(normalize_path("/a\\b"), Err(PathError::Backslash));
        assert_eq!(normalize_path("/a;b"), Err(PathError::Semicolon));
        assert_eq!(normalize_path("/a%3bb"), Err(PathError::Semicolon));
        assert_eq!(normalize_path("/a/%u002e"), Err(PathError::BadEscape));
    }

    fn with(e: EscapedSlashes, s: Semicolons, p: &str) -> Result<String, PathError> {
        let pol = PathPolicy {
            escaped_slashes: e,
            semicolons: s,
        };
        normalize_with(&pol, p).map(Cow::into_owned)
    }

    /// Found by the `path_normalize` fuzz target: a raw space after a dot segment took the fast path
    /// and skipped the checks (`.. ` is `..` to servers that trim trailing whitespace).
    #[test]
    fn raw_space_after_dots_is_checked() {
        assert_eq!(
            normalize_path("/public/.. /admin"),
            Err(PathError::AmbiguousDotSegment)
        );
        assert_eq!(
            normalize_path("/public/. "),
            Err(PathError::AmbiguousDotSegment)
        );
        assert_eq!(normalize_path("/public/a b").as_deref(), Ok("/public/a b"));
    }

    #[test]
    fn escaped_slash_options() {
        use EscapedSlashes::*;
        let r = Semicolons::Reject;
        assert_eq!(with(Keep, r, "/repos/a%2fb/x"), Ok("/repos/a%2Fb/x".into()));
        assert_eq!(with(Keep, r, "/p/a%5cb"), Ok("/p/a%5Cb".into()));
        // kept, but never next to a dot segment an upstream would resolve
        assert_eq!(
            with(Keep, r, "/public/..%2fadmin"),
            Err(PathError::AmbiguousDotSegment)
        );
        assert_eq!(
            with(Keep, r, "/public/x%2F%2E%2E%2F%2E%2E%2Fadmin"),
            Err(PathError::AmbiguousDotSegment)
        );
        assert_eq!(with(Decode, r, "/public/..%2fadmin"), Ok("/admin".into()));
        assert_eq!(with(Decode, r, "/public/..%5Cadmin"), Ok("/admin".into()));
        assert_eq!(with(Decode, r, "/a%2F%2Fb"), Ok("/a/b".into()));
        assert_eq!(with(Reject, r, "/a%2F"), Err(PathError::EncodedSlash));
    }

    #[test]
    fn semicolon_options() {
        let (r, a) = (EscapedSlashes::Reject, Semicolons::Allow);
        assert_eq!(
            with(r, a, "/a;jsessionid=1/b"),
            Ok("/a;jsessionid=1/b".into())
        );
        assert_eq!(with(r, a, "/a%3bb"), Ok("/a%3Bb".into()));
        for p in [
            "/public/..;/admin",
            "/public/.;/admin",
            "/public/..%3B/admin",
            "/x/..;a=b",
        ] {
            assert_eq!(with(r, a, p), Err(PathError::AmbiguousDotSegment), "{p}");
        }
    }

    /// Every hostile variant sent to `/public`: refused, or normalised to a path that no lenient
    /// upstream reads as being under `/admin` unless the gateway itself routes it there.
    #[test]
    fn hostile_variants_never_reach_admin_through_public() {
        use crate::fuzzing::{lenient_view, under, PATH_VARIANTS};
        let policies = [
            PathPolicy::default(),
            PathPolicy {
                escaped_slashes: EscapedSlashes::Keep,
                semicolons: Semicolons::Allow,
            },
            PathPolicy {
                escaped_slashes: EscapedSlashes::Decode,
                semicolons: Semicolons::Allow,
            },
        ];
        for pol in policies {
            for &(p, _) in PATH_VARIANTS {
                let Ok(out) = normalize_with(&pol, p) else {
                    continue;
                };
                if under(&out, "/public") {
                    assert!(
                        !under(&lenient_view(&out), "/admin"),
                        "{p} -> {out} -> {} under {pol:?}",
                        lenient_view(&out)
                    );
                }
            }
        }
        // the default policy's outcome for each variant is the documented one
        for &(p, want) in PATH_VARIANTS {
            let got = match normalize_path(p) {
                Ok(out) => out.into_owned(),
                Err(e) => format!("400 {e:?}"),
            };
            assert_eq!(got, want, "{p}");
        }
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
        fn normalised_paths_are_clean_and_stable(p in "/[a-z./%2eEfF5cC;0-9\\\\]{0,40}") {
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

//! The path policy: which request paths are refused (400) because the gateway and an upstream could
//! read them differently, and what happens to encoded slashes.
//!
//! The gateway routes on the normalised path ([`super::normalize`]) and sends that same path upstream.
//! An attack works when the upstream decodes the forwarded path *further* than the gateway did and so
//! lands somewhere the route did not allow: `/public/..%2Fadmin` (an upstream that decodes `%2F` sees
//! `/public/../admin`), `/public/..;/admin` (Tomcat drops `;` parameters), `/public/%252e%252e/admin`
//! (decoded twice), `/public/..%c0%afadmin` (overlong UTF-8 `/`), `/public/．．／admin` (NFKC folding).
//!
//! Secure default ([`PathPolicy::default`]): every such path is rejected. The checks, applied to the
//! normalised path:
//! - a raw `\` (always), an encoded `/` or `\` (`%2F`, `%5C`, any case) unless `escaped_slashes` says
//!   `keep` or `decode`;
//! - a `;` (raw or `%3B`) unless `semicolons: allow`; even then, never in a dot segment (`..;x`, `.;`);
//! - a segment that is not a plain name once *fully* decoded and split at `/` and `\`: only dots
//!   (`...`), dots followed by spaces or tabs (`..%20`), or dots with parameters (`..;x`);
//! - a percent-escape left after one full decoding that would decode to `.`, `/`, `\`, `;`, `%` or a
//!   non-ASCII byte (`%252e`, `%252f`, `%255c`, `%2525`, `%25c0`), or an IIS `%u` escape (`%25u002e`);
//!   a raw `%u002e` is already a malformed escape;
//! - overlong or surrogate UTF-8 after decoding (`%c0%af`, `%e0%80%af`, `%c0%ae`, `%ed%a0%80`);
//! - characters that Unicode compatibility folding turns into `.`, `/`, `\`, `;` or `%` (fullwidth
//!   `．` U+FF0E, `／` U+FF0F, `＼` U+FF3C, `；` U+FF1B, `％` U+FF05, small forms U+FE52/U+FE68/U+FE54/
//!   U+FE6A, dot leaders U+2024–U+2026) and the slash look-alikes U+2215 and U+2044, raw or encoded.
use serde::Deserialize;

/// What to do with `%2F` and `%5C` (an encoded `/` or `\`) in a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema, serde::Serialize)]
pub enum EscapedSlashes {
    /// Refuse the request with 400 (default).
    #[default]
    Reject,
    /// Keep them encoded (upper-cased): they are data inside one segment, not separators. A segment
    /// that an upstream would split into a dot segment (`..%2Fadmin`) is still refused.
    Keep,
    /// Decode both to `/` before routing, so they are separators for the gateway and the upstream.
    Decode,
}

/// What to do with `;` (raw or `%3B`) in a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema, serde::Serialize)]
pub enum Semicolons {
    /// Refuse the request with 400 (default): servers that strip `;` path parameters (Tomcat,
    /// Jetty, Spring) see `/admin;x` as `/admin` while the gateway routes it as another segment.
    #[default]
    Reject,
    /// Forward them as they are, except in dot segments (`..;/`, `.;x`), which are always refused.
    Allow,
}

/// The request-path policy (`server.path_policy` in the configuration). Applies to every listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema, serde::Serialize)]
pub struct PathPolicy {
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
    #[serde(default)]
    pub semicolons: Semicolons,
}

/// Why a request path was refused. Every variant is answered with 400 and [`PathError::message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadEscape,
    ForbiddenByte,
    Backslash,
    EncodedSlash,
    Semicolon,
    AmbiguousDotSegment,
    DoubleEncoding,
    BadUtf8,
    LookAlike,
}

impl PathError {
    /// The client-facing explanation.
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path must start with '/'",
            PathError::BadEscape => "the request path has a malformed percent-escape",
            PathError::ForbiddenByte => "the request path contains a forbidden character",
            PathError::Backslash => "the request path contains a backslash",
            PathError::EncodedSlash => {
                "the request path contains an encoded slash or backslash (%2F, %5C), which this \
                 gateway refuses (server.path_policy.escaped_slashes)"
            }
            PathError::Semicolon => {
                "the request path contains ';', which this gateway refuses \
                 (server.path_policy.semicolons)"
            }
            PathError::AmbiguousDotSegment => {
                "the request path has a segment that servers may read as '.' or '..' (dots with \
                 ';', spaces, encoded slashes, or more than two dots)"
            }
            PathError::DoubleEncoding => {
                "the request path is percent-encoded twice (e.g. %252e, %252f)"
            }
            PathError::BadUtf8 => {
                "the request path has an overlong or surrogate UTF-8 sequence (e.g. %c0%af)"
            }
            PathError::LookAlike => {
                "the request path has a character that servers may fold into '.', '/', '\\', ';' \
                 or '%' (e.g. fullwidth '．' or '／')"
            }
        }
    }
}

pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes every well-formed escape once (malformed ones are copied as they are).
pub(crate) fn decode_all(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// UTF-8 encodings of characters that compatibility folding (NFKC) turns into `.`, `/`, `\`, `;` or
/// `%`, and slash look-alikes.
const LOOK_ALIKES: &[[u8; 3]] = &[
    [0xE2, 0x80, 0xA4], // U+2024 ONE DOT LEADER
    [0xE2, 0x80, 0xA5], // U+2025 TWO DOT LEADER
    [0xE2, 0x80, 0xA6], // U+2026 HORIZONTAL ELLIPSIS
    [0xE2, 0x81, 0x84], // U+2044 FRACTION SLASH
    [0xE2, 0x88, 0x95], // U+2215 DIVISION SLASH
    [0xEF, 0xB9, 0x92], // U+FE52 SMALL FULL STOP
    [0xEF, 0xB9, 0x94], // U+FE54 SMALL SEMICOLON
    [0xEF, 0xB9, 0xA8], // U+FE68 SMALL REVERSE SOLIDUS
    [0xEF, 0xB9, 0xAA], // U+FE6A SMALL PERCENT SIGN
    [0xEF, 0xBC, 0x85], // U+FF05 FULLWIDTH PERCENT SIGN
    [0xEF, 0xBC, 0x8E], // U+FF0E FULLWIDTH FULL STOP
    [0xEF, 0xBC, 0x8F], // U+FF0F FULLWIDTH SOLIDUS
    [0xEF, 0xBC, 0x9B], // U+FF1B FULLWIDTH SEMICOLON
    [0xEF, 0xBC, 0xBC], // U+FF3C FULLWIDTH REVERSE SOLIDUS
];

/// Overlong forms (`C0`/`C1` leads, `E0 80..9F`, `F0 80..8F`) and UTF-16 surrogates (`ED A0..BF`).
fn has_overlong_or_surrogate(b: &[u8]) -> bool {
    b.iter().enumerate().any(|(i, &x)| {
        let next = b.get(i + 1).copied().unwrap_or(0);
        matches!(x, 0xC0 | 0xC1)
            || (x == 0xE0 && (0x80..=0x9F).contains(&next))
            || (x == 0xF0 && (0x80..=0x8F).contains(&next))
            || (x == 0xED && (0xA0..=0xBF).contains(&next))
    })
}

/// A `%XX` (or `%uXXXX`) left after one full decoding that a second decoding would turn into
/// something with meaning in a path.
fn has_second_escape(b: &[u8]) -> bool {
    b.iter().enumerate().any(|(i, &x)| {
        if x != b'%' {
            return false;
        }
        match (b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (Some(b'u' | b'U'), _) => true,
            (Some(h), Some(l)) => match (hex(h), hex(l)) {
                (Some(h), Some(l)) => {
                    let v = h * 16 + l;
                    matches!(v, b'.' | b'/' | b'\\' | b';' | b'%') || v >= 0x80
                }
                _ => false,
            },
            _ => false,
        }
    })
}

/// A fully decoded piece (between `/` or `\`) that is not a resolved dot segment but may be read as
/// one: only dots once `;` parameters and trailing spaces/tabs are dropped.
fn is_hidden_dot_piece(piece: &[u8]) -> bool {
    let base = match piece.iter().position(|&b| b == b';') {
        Some(i) => &piece[..i],
        None => piece,
    };
    let mut end = base.len();
    while end > 0 && matches!(base[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    end > 0 && base[..end].iter().all(|&b| b == b'.')
}

/// Checks a normalised path (no `.`/`..` segments left, escapes of unreserved characters decoded)
/// for everything an upstream could decode into another path. See the module docs.
pub(crate) fn check_unambiguous(normalised: &str) -> Result<(), PathError> {
    let full = decode_all(normalised.as_bytes());
    // escaped bytes must decode to UTF-8: a lone lead byte (`%E0@`) or an overlong form is read by
    // lenient decoders as whatever they like, `/` included
    if has_overlong_or_surrogate(&full) || std::str::from_utf8(&full).is_err() {
        return Err(PathError::BadUtf8);
    }
    if full.windows(3).any(|w| LOOK_ALIKES.iter().any(|l| l == w)) {
        return Err(PathError::LookAlike);
    }
    if has_second_escape(&full) {
        return Err(PathError::DoubleEncoding);
    }
    if full
        .split(|&b| b == b'/' || b == b'\\')
        .any(is_hidden_dot_piece)
    {
        return Err(PathError::AmbiguousDotSegment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_deserializes_with_secure_defaults() {
        let p: PathPolicy = serde_yaml::from_str("{}").unwrap();
        assert_eq!(p, PathPolicy::default());
        assert_eq!(p.escaped_slashes, EscapedSlashes::Reject);
        assert_eq!(p.semicolons, Semicolons::Reject);
        let p: PathPolicy =
            serde_yaml::from_str("{ escaped_slashes: decode, semicolons: allow }").unwrap();
        assert_eq!(
            (p.escaped_slashes, p.semicolons),
            (EscapedSlashes::Decode, Semicolons::Allow)
        );
        assert!(serde_yaml::from_str::<PathPolicy>("{ escaped_slash: keep }").is_err());
        assert!(serde_yaml::from_str::<PathPolicy>("{ escaped_slashes: maybe }").is_err());
    }

    #[test]
    fn checks() {
        assert_eq!(check_unambiguous("/a/b.c/d"), Ok(()));
        assert_eq!(check_unambiguous("/a/%C3%A9"), Ok(()));
        assert_eq!(
            check_unambiguous("/a/..."),
            Err(PathError::AmbiguousDotSegment)
        );
        assert_eq!(
            check_unambiguous("/a/..%20"),
            Err(PathError::AmbiguousDotSegment)
        );
        assert_eq!(
            check_unambiguous("/a/x%2F.."),
            Err(PathError::AmbiguousDotSegment)
        );
        assert_eq!(
            check_unambiguous("/a/..;x"),
            Err(PathError::AmbiguousDotSegment)
        );
        assert_eq!(
            check_unambiguous("/a/%252e"),
            Err(PathError::DoubleEncoding)
        );
        assert_eq!(
            check_unambiguous("/a/%25u002e"),
            Err(PathError::DoubleEncoding)
        );
        assert_eq!(check_unambiguous("/a/%C0%AF"), Err(PathError::BadUtf8));
        // found by the path_normalize fuzz target: a lone lead byte before a raw character
        assert_eq!(
            check_unambiguous("/public/...%E0@/admiN/"),
            Err(PathError::BadUtf8)
        );
        assert_eq!(check_unambiguous("/caf%C3%A9"), Ok(()));
        assert_eq!(check_unambiguous("/a/\u{ff0e}"), Err(PathError::LookAlike));
        assert_eq!(check_unambiguous("/a/%EF%BC%8F"), Err(PathError::LookAlike));
        // a literal percent sign followed by letters is fine
        assert_eq!(check_unambiguous("/a/100%25off"), Ok(()));
    }
}

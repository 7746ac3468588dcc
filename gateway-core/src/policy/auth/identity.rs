//! The verified identity handed to later phases, and dotted claim paths.
//!
//! A [`ClaimPath`] is compiled once from config (`realm_access.roles` → `["realm_access",
//! "roles"]`). Lookup first tries the whole path as a literal top-level key (so namespaced claims
//! such as `https://example.com/roles` work), then walks the segments.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// A pre-split claim path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimPath {
    raw: String,
    segments: Vec<String>,
}

impl ClaimPath {
    /// Compiles `path`; `None` if it is empty or has an empty segment.
    pub fn parse(path: &str) -> Option<Self> {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return None;
        }
        Some(ClaimPath {
            raw: path.to_string(),
            segments: path.split('.').map(str::to_string).collect(),
        })
    }

    /// A path that only ever matches the top-level claim named `name` (what an invalid dotted path
    /// can still mean; the compiler refuses such paths, so a plan never holds one).
    pub fn literal(name: &str) -> Self {
        ClaimPath {
            raw: name.to_string(),
            segments: vec![name.to_string()],
        }
    }

    /// The configured text.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Resolves the path in `claims`.
    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(v) = claims.get(&self.raw) {
            return Some(v);
        }
        if self.segments.len() < 2 {
            return None;
        }
        let (first, rest) = self.segments.split_first()?;
        let mut cur = claims.get(first)?;
        for seg in rest {
            cur = cur.as_object()?.get(seg)?;
        }
        Some(cur)
    }
}

/// A verified token's identity. Shared as `Arc<Identity>` (the cache hands out clones).
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// `sub` claim, if a string.
    pub subject: Option<String>,
    /// All claims of the token payload.
    pub claims: Map<String, Value>,
    /// `exp` (unix seconds), if present.
    pub expires_at: Option<u64>,
    /// `kid` of the key that verified the token.
    pub kid: Option<String>,
    /// Algorithm of the token.
    pub algorithm: jsonwebtoken::Algorithm,
}

impl Identity {
    /// Renders the claim at `path` as text: strings borrowed, numbers/bools formatted, arrays of
    /// scalars joined with `,`. Objects, null and nested arrays give `None`.
    pub fn claim_str(&self, path: &str) -> Option<Cow<'_, str>> {
        let p = ClaimPath::parse(path)?;
        self.claim_str_at(&p)
    }

    /// Same as [`Identity::claim_str`] with a pre-compiled path (no allocation for strings).
    pub fn claim_str_at(&self, path: &ClaimPath) -> Option<Cow<'_, str>> {
        render(path.lookup(&self.claims)?)
    }

    /// The claim value at `path`.
    pub fn claim(&self, path: &ClaimPath) -> Option<&Value> {
        path.lookup(&self.claims)
    }
}

fn render(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Array(items) => {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item {
                    Value::String(s) => out.push_str(s),
                    Value::Number(n) => out.push_str(&n.to_string()),
                    Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                    _ => return None,
                }
            }
            Some(Cow::Owned(out))
        }
        Value::Null | Value::Object(_) => None,
    }
}

/// Does the claim value (array of strings, or space-separated string) contain `wanted`?
pub(crate) fn claim_contains(v: &Value, wanted: &str) -> bool {
    match v {
        Value::String(s) => s.split_ascii_whitespace().any(|x| x == wanted),
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(wanted)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(v: Value) -> Identity {
        Identity {
            subject: None,
            claims: v.as_object().cloned().unwrap_or_default(),
            expires_at: None,
            kid: None,
            algorithm: jsonwebtoken::Algorithm::HS256,
        }
    }

    #[test]
    fn paths_and_rendering() {
        let i = id(json!({
            "sub": "u1", "n": 5, "roles": ["a", "b"], "realm_access": {"roles": ["x"]},
            "https://ex.com/roles": ["ns"], "obj": {"k": 1}, "mixed": ["a", {"b": 1}]
        }));
        assert_eq!(i.claim_str("sub").as_deref(), Some("u1"));
        assert!(matches!(i.claim_str("sub"), Some(Cow::Borrowed(_))));
        assert_eq!(i.claim_str("n").as_deref(), Some("5"));
        assert_eq!(i.claim_str("roles").as_deref(), Some("a,b"));
        assert_eq!(i.claim_str("realm_access.roles").as_deref(), Some("x"));
        assert_eq!(i.claim_str("https://ex.com/roles").as_deref(), Some("ns"));
        assert_eq!(i.claim_str("obj"), None);
        assert_eq!(i.claim_str("mixed"), None);
        assert_eq!(i.claim_str("nope.deeper"), None);
        assert_eq!(i.claim_str(""), None);
        assert_eq!(i.claim_str("a..b"), None);
    }

    #[test]
    fn contains_handles_strings_and_arrays() {
        assert!(claim_contains(&json!("read  write"), "write"));
        assert!(!claim_contains(&json!("read write"), "rea"));
        assert!(claim_contains(&json!(["a", "b"]), "b"));
        assert!(!claim_contains(&json!({"a": 1}), "a"));
    }
}

//! Route path patterns: literal segments, named parameters `{id}` and a final catch-all `{rest*}`.
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    Literal(String),
    /// One whole segment, captured under a name.
    Param(String),
    /// One or more trailing segments (the rest of the path), captured under a name.
    CatchAll(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    pub segments: Vec<Segment>,
}

impl Pattern {
    /// Parses `/users/{id}/orders/{rest*}`. Errors say what is wrong in words.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        if !s.starts_with('/') {
            return Err("a pattern must start with '/'".into());
        }
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let parts: Vec<&str> = s[1..].split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            if let Some(inner) = part.strip_prefix('{') {
                let Some(inner) = inner.strip_suffix('}') else {
                    return Err(format!(
                        "segment \"{part}\" opens '{{' but does not end with '}}'"
                    ));
                };
                let (name, catch_all) = match inner.strip_suffix('*') {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "parameter name \"{name}\" must be letters, digits or _"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("parameter \"{name}\" appears twice"));
                }
                names.push(name);
                if catch_all {
                    if i + 1 != parts.len() {
                        return Err(format!(
                            "catch-all \"{{{name}*}}\" must be the last segment"
                        ));
                    }
                    segments.push(Segment::CatchAll(name.to_string()));
                } else {
                    segments.push(Segment::Param(name.to_string()));
                }
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "segment \"{part}\" mixes text and a parameter; a parameter must be a whole segment"
                ));
            } else if *part == "." || *part == ".." {
                return Err("a pattern cannot contain '.' or '..' segments".into());
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        segments.shrink_to_fit();
        Ok(Pattern { segments })
    }

    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(n) | Segment::CatchAll(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
    }

    pub fn literal_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    pub fn has_catch_all(&self) -> bool {
        matches!(self.segments.last(), Some(Segment::CatchAll(_)))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            match s {
                Segment::Literal(l) => write!(f, "/{l}")?,
                Segment::Param(n) => write!(f, "/{{{n}}}")?,
                Segment::CatchAll(n) => write!(f, "/{{{n}*}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let p = Pattern::parse("/users/{id}/files/{rest*}").unwrap();
        assert_eq!(p.segments.len(), 4);
        assert_eq!(p.param_names().collect::<Vec<_>>(), ["id", "rest"]);
        assert_eq!(p.to_string(), "/users/{id}/files/{rest*}");
        assert!(Pattern::parse("users/{id}").is_err());
        assert!(Pattern::parse("/users/{id")
            .unwrap_err()
            .contains("does not end"));
        assert!(Pattern::parse("/u/{a}/{a}").unwrap_err().contains("twice"));
        assert!(Pattern::parse("/u/{r*}/x").unwrap_err().contains("last"));
        assert!(Pattern::parse("/u/x{id}")
            .unwrap_err()
            .contains("whole segment"));
    }
}

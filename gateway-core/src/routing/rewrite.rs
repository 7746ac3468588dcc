//! Path rewrites, compiled once: strip the matched prefix, or fill a template with captured parameters.
use super::pattern::Pattern;
use super::router::Captures;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRewrite {
    /// Send the normalised path as is.
    Keep,
    /// Remove this many leading bytes (the matched prefix, without trailing slash); `/` if nothing is left.
    StripPrefix(usize),
    Template(Vec<Part>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    /// Index into the route's captures.
    Capture(usize),
}

impl PathRewrite {
    /// Compiles `/v2/users/{id}` against the pattern's parameter names.
    pub fn template(tpl: &str, pattern: Option<&Pattern>) -> Result<PathRewrite, String> {
        if !tpl.starts_with('/') {
            return Err("a rewrite path must start with '/'".into());
        }
        let names: Vec<&str> = pattern
            .map(|p| p.param_names().collect())
            .unwrap_or_default();
        let mut parts = Vec::new();
        let mut rest = tpl;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err("'{' without a closing '}' in rewrite path".into());
            };
            let name = rest[open + 1..open + close].trim_end_matches('*');
            match names.iter().position(|n| *n == name) {
                Some(i) => parts.push(Part::Capture(i)),
                None if names.is_empty() => {
                    return Err(format!(
                        "rewrite path uses {{{name}}} but the route has no pattern to capture it"
                    ))
                }
                None => {
                    return Err(format!(
                        "rewrite path uses {{{name}}}, which the pattern does not capture (it captures: {})",
                        names.join(", ")
                    ))
                }
            }
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        parts.shrink_to_fit();
        Ok(PathRewrite::Template(parts))
    }

    /// Writes the upstream path for the normalised request `path` into `out`.
    pub fn apply(&self, path: &str, captures: &Captures, out: &mut String) {
        match self {
            PathRewrite::Keep => out.push_str(path),
            PathRewrite::StripPrefix(n) => {
                let rest = path.get(*n..).unwrap_or("");
                if rest.starts_with('/') {
                    out.push_str(rest);
                } else {
                    out.push('/');
                    out.push_str(rest);
                }
            }
            PathRewrite::Template(parts) => {
                for p in parts {
                    match p {
                        Part::Literal(l) => out.push_str(l),
                        Part::Capture(i) => {
                            if let Some(&(s, e)) = captures.get(*i) {
                                out.push_str(path.get(s as usize..e as usize).unwrap_or(""));
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::smallvec;

    #[test]
    fn strip_and_template() {
        let mut out = String::new();
        PathRewrite::StripPrefix(9).apply("/api/user/42", &Captures::new(), &mut out);
        assert_eq!(out, "/42");
        out.clear();
        PathRewrite::StripPrefix(9).apply("/api/user", &Captures::new(), &mut out);
        assert_eq!(out, "/");
        let pat = Pattern::parse("/users/{id}/{rest*}").unwrap();
        let t = PathRewrite::template("/v2/u/{id}/f/{rest}", Some(&pat)).unwrap();
        out.clear();
        let path = "/users/42/a/b";
        t.apply(path, &smallvec![(7, 9), (10, 13)], &mut out);
        assert_eq!(out, "/v2/u/42/f/a/b");
        assert!(PathRewrite::template("/x/{nope}", Some(&pat))
            .unwrap_err()
            .contains("does not capture"));
        assert!(PathRewrite::template("/x/{id}", None).is_err());
    }
}

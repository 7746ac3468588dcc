//! The endpoints file: a YAML or JSON list of `{address, weight}`, or one `address [weight]` per line.
//!
//! The format is detected from the first line that is neither blank nor a `#` comment: `[` (or `{`) →
//! JSON, `-` → YAML, anything else → lines. Addresses are `IP:port` (`[v6]:port` for IPv6); weights are
//! 1–1000 (default 1). A file with no entry line at all is invalid (a reader racing an in-place rewrite
//! may see it empty); an explicit `[]` means "no endpoints". Every error names the file and its line.
use super::{DiscoveredEndpoint, DiscoveryError, MAX_WEIGHT};
use crate::config::spans::SpanIndex;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    address: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

/// Parses the text of the endpoints file at `path` (the path is only used in errors).
pub fn parse(path: &Path, text: &str) -> Result<Vec<DiscoveredEndpoint>, DiscoveryError> {
    let err = |line: usize, message: String| DiscoveryError::File {
        path: path.to_path_buf(),
        line,
        message,
    };
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    match first.and_then(|l| l.chars().next()) {
        None => Err(err(
            1,
            "the file has no entry; write [] for an empty endpoint list".into(),
        )),
        Some('[') | Some('{') => {
            let entries: Vec<Entry> =
                serde_json::from_str(text).map_err(|e| err(e.line(), e.to_string()))?;
            structured(text, entries, &err)
        }
        Some('-') => {
            let entries: Vec<Entry> = serde_yaml::from_str(text).map_err(|e| {
                let line = e.location().map_or(1, |l| l.line());
                err(line, e.to_string())
            })?;
            structured(text, entries, &err)
        }
        Some(_) => lines(text, &err),
    }
}

fn structured(
    text: &str,
    entries: Vec<Entry>,
    err: &dyn Fn(usize, String) -> DiscoveryError,
) -> Result<Vec<DiscoveredEndpoint>, DiscoveryError> {
    // JSON is YAML too: one span index gives the line of every entry in both formats
    let spans = SpanIndex::build(text);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let line = |field: &str| spans.value(&format!("[{i}].{field}")).line;
        let addr = address(&e.address).map_err(|m| err(line("address"), m))?;
        weight(e.weight).map_err(|m| err(line("weight"), m))?;
        if !seen.insert(addr) {
            return Err(err(line("address"), duplicate(addr)));
        }
        out.push(DiscoveredEndpoint::new(addr, e.weight));
    }
    Ok(out)
}

fn lines(
    text: &str,
    err: &dyn Fn(usize, String) -> DiscoveryError,
) -> Result<Vec<DiscoveredEndpoint>, DiscoveryError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let mut words = l.split_whitespace();
        let addr = address(words.next().unwrap_or("")).map_err(|m| err(line, m))?;
        let w = match words.next() {
            None => 1,
            Some(w) => w.parse::<u32>().map_err(|_| {
                err(
                    line,
                    format!("invalid weight \"{w}\"; write a whole number 1-{MAX_WEIGHT}"),
                )
            })?,
        };
        weight(w).map_err(|m| err(line, m))?;
        if let Some(extra) = words.next() {
            return Err(err(
                line,
                format!("unexpected \"{extra}\"; write one \"IP:port [weight]\" per line"),
            ));
        }
        if !seen.insert(addr) {
            return Err(err(line, duplicate(addr)));
        }
        out.push(DiscoveredEndpoint::new(addr, w));
    }
    Ok(out)
}

fn address(a: &str) -> Result<SocketAddr, String> {
    match a.parse::<SocketAddr>() {
        Ok(s) if s.port() != 0 => Ok(s),
        Ok(_) => Err(format!("port 0 in \"{a}\"")),
        Err(_) => Err(format!(
            "invalid address \"{a}\"; write IP:port, e.g. \"10.0.0.7:3001\" or \"[::1]:3001\""
        )),
    }
}

fn weight(w: u32) -> Result<(), String> {
    if (1..=MAX_WEIGHT).contains(&w) {
        Ok(())
    } else {
        Err(format!(
            "weight must be between 1 and {MAX_WEIGHT}, not {w}"
        ))
    }
}

fn duplicate(a: SocketAddr) -> String {
    format!("endpoint {a} is listed twice; raise its weight instead")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<DiscoveredEndpoint>, DiscoveryError> {
        parse(Path::new("/etc/gw/eps"), text)
    }
    fn ep(a: &str, w: u32) -> DiscoveredEndpoint {
        DiscoveredEndpoint::new(a.parse().unwrap(), w)
    }
    fn line_of(r: Result<Vec<DiscoveredEndpoint>, DiscoveryError>) -> (usize, String) {
        match r {
            Err(DiscoveryError::File { line, message, .. }) => (line, message),
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn three_formats_give_the_same_set() {
        let want = vec![ep("10.0.0.1:80", 1), ep("[::1]:8080", 3)];
        assert_eq!(
            p("# eps\n10.0.0.1:80\n\n[::1]:8080 3  # v6\n").unwrap(),
            want
        );
        assert_eq!(
            p("- address: 10.0.0.1:80\n- { address: \"[::1]:8080\", weight: 3 }\n").unwrap(),
            want
        );
        assert_eq!(
            p(r#"[{"address": "10.0.0.1:80"}, {"address": "[::1]:8080", "weight": 3}]"#).unwrap(),
            want
        );
        assert_eq!(p("[]").unwrap(), vec![]);
    }

    #[test]
    fn errors_name_the_line() {
        let (l, m) = line_of(p("10.0.0.1:80\n\nnot-an-address 2\n"));
        assert_eq!(l, 3);
        assert!(m.contains("invalid address"), "{m}");
        assert_eq!(line_of(p("10.0.0.1:80 0\n")).0, 1);
        assert_eq!(line_of(p("10.0.0.1:80 1 x\n")).0, 1);
        assert_eq!(line_of(p("10.0.0.1:80\n10.0.0.1:80 2\n")).0, 2);
        // YAML: semantic error on the entry's own line, syntax error where the parser stopped
        let (l, m) = line_of(p(
            "- address: 10.0.0.1:80\n- address: 10.0.0.2:80\n  weight: 5000\n",
        ));
        assert_eq!((l, m.contains("weight")), (3, true), "{m}");
        let (l, _) = line_of(p("- address: 10.0.0.1:80\n- address: [\n"));
        assert!(l >= 2, "{l}");
        assert_eq!(line_of(p("- address: 10.0.0.1:80\n- adress: x\n")).0, 2);
        // JSON
        let (l, _) = line_of(p(
            "[\n {\"address\": \"10.0.0.1:80\"},\n {\"address\": \"1.2.3:4\"}\n]",
        ));
        assert_eq!(l, 3);
        let (l, _) = line_of(p("[\n {\"address\": \"10.0.0.1:80\"},\n {\"address\": \n"));
        assert!(l >= 3, "{l}");
        // nothing at all is not "no endpoints"
        assert_eq!(line_of(p("\n# only a comment\n")).0, 1);
        assert_eq!(line_of(p("")).0, 1);
    }

    #[test]
    fn error_text_is_file_colon_line() {
        let e = p("a\n").unwrap_err();
        assert!(e.to_string().starts_with("/etc/gw/eps:1: "), "{e}");
    }
}

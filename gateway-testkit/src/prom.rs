//! A strict parser for the Prometheus text exposition format (0.0.4), for asserting exact series
//! in tests: `# TYPE` lines, sample lines with optional labels (escapes `\\`, `\"`, `\n`),
//! `+Inf`/`-Inf` values. `# HELP`, other comments and an optional timestamp are skipped.
//!
//! It panics on malformed input (an unquoted or unterminated label value, a bad escape, a value
//! that is not a number) and on a series that appears twice: a scrape a test can read must be
//! well-formed.
//!
//! ```
//! use gateway_testkit::prom::Scrape;
//! let s = Scrape::parse("# TYPE hits_total counter\nhits_total{route=\"a\",code=\"200\"} 3\n");
//! assert_eq!(s.get("hits_total", &[("code", "200"), ("route", "a")]), Some(3.0)); // any order
//! assert_eq!(s.first("hits_total", &[("route", "a")]), Some(3.0)); // a subset of the labels
//! assert_eq!(s.types["hits_total"], "counter");
//! ```

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::str::Chars;

/// A series' labels, sorted by name (then value).
pub type Labels = Vec<(String, String)>;

/// Every series of one metric name: labels -> value.
pub type Family = BTreeMap<Labels, f64>;

/// One parsed scrape.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    /// Metric name (as written on the sample line, e.g. `x_bucket`) -> its series.
    pub families: BTreeMap<String, Family>,
    /// `# TYPE` lines: family name -> type (`counter`, `gauge`, `histogram`, ...).
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses exposition text; panics on malformed lines and on duplicate series.
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
                s.types.insert(name.to_string(), ty.trim().to_string());
                continue;
            }
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, value) = parse_sample(line);
            let prev = s
                .families
                .entry(name.to_string())
                .or_default()
                .insert(labels, value);
            assert!(prev.is_none(), "duplicate series: {line}");
        }
        s
    }

    /// Every series of `name` (empty if none).
    pub fn family(&self, name: &str) -> Family {
        self.families.get(name).cloned().unwrap_or_default()
    }

    /// The value of the series of `name` whose label set is exactly `labels` (in any order).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.families.get(name)?.get(&labels_of(labels)).copied()
    }

    /// The value of the first series of `name` (in label order) whose labels include all of
    /// `labels`; `None` when no series matches. Use it when the other labels do not matter.
    pub fn first(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels).next()
    }

    /// The sum of every series of `name` whose labels include all of `labels` (0 when none).
    pub fn sum_matching(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).sum()
    }

    /// The sum of every series of `name` (0 when none).
    pub fn sum(&self, name: &str) -> f64 {
        self.sum_matching(name, &[])
    }

    fn matching<'a>(
        &'a self,
        name: &str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.families
            .get(name)
            .into_iter()
            .flat_map(|f| f.iter())
            .filter(move |(have, _)| {
                labels
                    .iter()
                    .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            })
            .map(|(_, v)| *v)
    }
}

/// Sorted [`Labels`] from `(name, value)` pairs.
pub fn labels_of(pairs: &[(&str, &str)]) -> Labels {
    let mut v: Labels = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

/// A [`Family`] from rows of `(labels, value)`, to compare with [`Scrape::family`].
pub fn family_of(rows: &[(&[(&str, &str)], f64)]) -> Family {
    rows.iter().map(|(l, v)| (labels_of(l), *v)).collect()
}

/// `name{labels} value [timestamp]` -> (name, sorted labels, value).
fn parse_sample(line: &str) -> (&str, Labels, f64) {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("bad sample line {line:?}"));
    let name = &line[..name_end];
    let mut labels = Labels::new();
    let mut rest = &line[name_end..];
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.chars().peekable();
        loop {
            match chars.peek() {
                Some('}') => {
                    chars.next();
                    break;
                }
                None => panic!("unterminated label set in {line:?}"),
                _ => {}
            }
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            let value = parse_label_value(&mut chars, line);
            labels.push((key.trim().to_string(), value));
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        let left: usize = chars.map(char::len_utf8).sum();
        rest = &line[line.len() - left..];
    }
    let value_txt = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = match value_txt {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    labels.sort();
    (name, labels, value)
}

/// A quoted label value with its escapes resolved; leaves `chars` after the closing quote.
fn parse_label_value(chars: &mut Peekable<Chars<'_>>, line: &str) -> String {
    assert_eq!(
        chars.next(),
        Some('"'),
        "label value must be quoted in {line:?}"
    );
    let mut v = String::new();
    loop {
        match chars.next() {
            Some('\\') => match chars.next() {
                Some('n') => v.push('\n'),
                Some('\\') => v.push('\\'),
                Some('"') => v.push('"'),
                other => panic!("bad escape {other:?} in {line:?}"),
            },
            Some('"') => return v,
            Some(c) => v.push(c),
            None => panic!("unterminated label value in {line:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x_total h\n# TYPE x_total counter\n\
         x_total{b=\"2\",a=\"q\\\"u\\\\o\\nte,}\"} 3\nplain 1.5\ninf_bucket{le=\"+Inf\"} 7\n\
         req{route=\"a\",code=\"200\"} 4\nreq{route=\"a\",code=\"500\"} 1\nreq{route=\"b\",code=\"200\"} 2\n\
         stamped{x=\"1\"} 9 1700000000000\nempty{} 5\n";

    #[test]
    fn handles_escapes_and_sorts_labels() {
        let s = Scrape::parse(TEXT);
        assert_eq!(
            s.get("x_total", &[("a", "q\"u\\o\nte,}"), ("b", "2")]),
            Some(3.0)
        );
        assert_eq!(s.get("plain", &[]), Some(1.5));
        assert_eq!(s.get("inf_bucket", &[("le", "+Inf")]), Some(7.0));
        assert_eq!(
            s.get("stamped", &[("x", "1")]),
            Some(9.0),
            "timestamp skipped"
        );
        assert_eq!(s.get("empty", &[]), Some(5.0));
        assert_eq!(s.types["x_total"], "counter");
    }

    #[test]
    fn exact_subset_and_sums() {
        let s = Scrape::parse(TEXT);
        assert_eq!(
            s.get("req", &[("route", "a")]),
            None,
            "get needs every label"
        );
        assert_eq!(s.get("req", &[("code", "500"), ("route", "a")]), Some(1.0));
        assert_eq!(s.first("req", &[("route", "b")]), Some(2.0));
        assert_eq!(
            s.first("req", &[("route", "a"), ("code", "500")]),
            Some(1.0)
        );
        assert_eq!(s.first("req", &[("route", "c")]), None);
        assert_eq!(s.first("nope", &[]), None);
        assert_eq!(s.sum_matching("req", &[("code", "200")]), 6.0);
        assert_eq!(s.sum_matching("req", &[("code", "404")]), 0.0);
        assert_eq!(s.sum("req"), 7.0);
        assert_eq!(
            s.family("req"),
            family_of(&[
                (&[("route", "a"), ("code", "200")], 4.0),
                (&[("code", "500"), ("route", "a")], 1.0),
                (&[("route", "b"), ("code", "200")], 2.0),
            ])
        );
        assert!(s.family("nope").is_empty());
    }

    #[test]
    #[should_panic(expected = "duplicate series")]
    fn duplicate_series_panics() {
        Scrape::parse("a{x=\"1\"} 1\na{x=\"1\"} 2\n");
    }

    #[test]
    #[should_panic(expected = "must be quoted")]
    fn unquoted_label_panics() {
        Scrape::parse("a{x=1} 1\n");
    }

    #[test]
    #[should_panic(expected = "bad value")]
    fn bad_value_panics() {
        Scrape::parse("a 1x\n");
    }
}

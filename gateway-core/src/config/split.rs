//! A configuration cut into text slices: one per top-level section, and one per element of the
//! `upstreams`, `routes` and `policies` lists, found with `yaml-rust2`'s streaming event parser.
//!
//! [`super::load`] deserializes each slice on its own, so the whole document never exists as one
//! `serde_yaml` tree (for 100,000 routes, serde_yaml's event buffer plus its `Value` tree take over
//! 1 GB; one element at a time takes kilobytes). Anything this splitter is not sure about — anchors,
//! aliases, tags, several documents, duplicate or non-string section names, a root that is not a block
//! mapping — makes it give up (`None`), and the loader parses the whole document as before.
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Sections whose list elements are cut one by one.
const LISTS: &[&str] = &["upstreams", "routes", "policies"];

/// The section names the element-by-element path handles: every top-level section.
const SECTIONS: &[&str] = super::load::TOP_LEVEL;

/// A piece of the text: bytes `start..end`, starting at 0-based column `column`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slice {
    start: usize,
    end: usize,
    column: usize,
}

impl Slice {
    /// The slice as a YAML document of its own: indented as in the file (the first line is padded to
    /// its column), so block structure and scalars read exactly as they do in place.
    pub(crate) fn document(&self, text: &str) -> String {
        let body = &text[self.start..self.end];
        let mut s = String::with_capacity(self.column + body.len());
        s.extend(std::iter::repeat_n(' ', self.column));
        s.push_str(body);
        s
    }
}

/// A top-level section's value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Body {
    /// The whole value.
    Whole(Slice),
    /// A list of mappings, one slice per element.
    Items(Vec<Slice>),
}

mod lines;

/// The sections of `text` in document order, or `None` when the loader must parse it whole. The
/// plain layout is cut from its lines ([`lines`]), anything else with the event parser.
pub(crate) fn sections(text: &str) -> Option<Vec<(String, Body)>> {
    lines::sections(text).or_else(|| by_events(text))
}

/// [`sections`] with `yaml-rust2`'s event parser.
fn by_events(text: &str) -> Option<Vec<(String, Body)>> {
    let mut b = Splitter {
        text,
        cursor: Cursor::default(),
        depth: 0,
        docs: 0,
        bail: false,
        sections: Vec::new(),
        value: None,
        item: None,
        awaiting_key: true,
        first_key: None,
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut b, true).ok()?;
    if b.bail || b.docs != 1 {
        return None;
    }
    Some(b.sections)
}

/// Char index (what `yaml-rust2` markers count) → byte index, walking from the last one.
#[derive(Default)]
struct Cursor {
    /// Whether the text is ASCII (then both indices agree), once known.
    ascii: Option<bool>,
    chars: usize,
    bytes: usize,
}

impl Cursor {
    fn byte(&mut self, text: &str, char_index: usize) -> usize {
        if *self.ascii.get_or_insert_with(|| text.is_ascii()) {
            return char_index.min(text.len());
        }
        // markers move forward, except to a block mapping's first key just behind its `:`
        while self.chars > char_index {
            let Some(c) = text[..self.bytes].chars().next_back() else {
                break;
            };
            self.bytes -= c.len_utf8();
            self.chars -= 1;
        }
        let mut it = text[self.bytes..].char_indices();
        while self.chars < char_index {
            match it.next() {
                Some((_, c)) => {
                    self.bytes += c.len_utf8();
                    self.chars += 1;
                }
                None => break,
            }
        }
        self.bytes
    }
}

/// The value of the current top-level section.
struct Open {
    key: String,
    start: usize,
    column: usize,
    /// Elements so far, when the value is a list of mappings being cut.
    items: Option<Vec<Slice>>,
}

struct Splitter<'t> {
    text: &'t str,
    cursor: Cursor,
    /// Open collections (the root mapping is depth 1).
    depth: usize,
    docs: usize,
    bail: bool,
    sections: Vec<(String, Body)>,
    value: Option<Open>,
    /// Start and column of the list element being read.
    item: Option<(usize, usize)>,
    awaiting_key: bool,
    /// A block mapping just started as a section value (1) or list element (2): the parser marks it
    /// at its first `:`, so its start moves to its first key, the next scalar.
    first_key: Option<usize>,
}

impl Splitter<'_> {
    /// Where a node whose end the parser reports at `m` ends: just after `}`/`]` for a flow
    /// collection; for block content, at the start of the line of the next token.
    fn end_at(&mut self, m: Marker, flow_close: Option<char>) -> usize {
        let at = self.cursor.byte(self.text, m.index());
        if let Some(c) = flow_close {
            if self.text[at..].starts_with(c) {
                return at + c.len_utf8();
            }
            self.bail = true;
            return at;
        }
        let line_start = self.text[..at].rfind('\n').map_or(0, |i| i + 1);
        if self.text[line_start..at].trim().is_empty() {
            line_start
        } else {
            at
        }
    }

    fn close_section(&mut self, m: Marker) {
        let Some(open) = self.value.take() else {
            return;
        };
        let body = match open.items {
            Some(items) => Body::Items(items),
            // an empty value (`key:` then only blanks or comments) is marked after the blank line
            // that `end_at` backs up to: an empty slice, never one that ends before it starts
            None => Body::Whole(Slice {
                start: open.start,
                end: self.end_at(m, None).max(open.start),
                column: open.column,
            }),
        };
        if self.sections.iter().any(|(k, _)| *k == open.key) {
            self.bail = true;
        }
        self.sections.push((open.key, body));
    }

    /// A node starts at depth 1 (a section's value) or 2 (an element of a list being cut).
    fn node_start(&mut self, m: Marker, is_seq: bool, is_map: bool) {
        let start = self.cursor.byte(self.text, m.index());
        let cut = self.depth == 1
            || self.depth == 2 && self.value.as_ref().is_some_and(|o| o.items.is_some());
        if cut && is_map && !self.text[start..].starts_with('{') {
            self.first_key = Some(self.depth);
        }
        match self.depth {
            1 => {
                // the value of the section whose key was just read; the parser marks a block
                // sequence at its first entry, after the `- `: the slice starts at the dash
                let (mut start, mut column) = (start, m.col());
                if is_seq && !self.text[start..].starts_with(['[', '-']) {
                    let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
                    if let Some(dash) = self.text[line_start..start].rfind('-') {
                        let back = start - (line_start + dash);
                        start -= back;
                        column = column.saturating_sub(back);
                    }
                }
                if let Some(open) = self.value.as_mut() {
                    open.start = start;
                    open.column = column;
                    if is_seq && LISTS.contains(&open.key.as_str()) {
                        open.items = Some(Vec::new());
                    }
                }
                self.awaiting_key = true;
            }
            2 => {
                if let Some(open) = self.value.as_mut() {
                    if open.items.is_some() {
                        if is_map {
                            self.item = Some((start, m.col()));
                        } else {
                            // not a list of mappings: keep the section whole
                            open.items = None;
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

impl MarkedEventReceiver for Splitter<'_> {
    fn on_event(&mut self, ev: Event, m: Marker) {
        if self.bail {
            return;
        }
        match ev {
            Event::DocumentStart => self.docs += 1,
            Event::Alias(_) => self.bail = true,
            Event::Scalar(v, _, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    self.bail = true;
                    return;
                }
                if let Some(level) = self.first_key.take() {
                    let start = self.cursor.byte(self.text, m.index());
                    let column = m.col();
                    match level {
                        1 => {
                            if let Some(open) = self.value.as_mut() {
                                open.start = start;
                                open.column = column;
                            }
                        }
                        _ => {
                            if let Some(item) = self.item.as_mut() {
                                *item = (start, column);
                            }
                        }
                    }
                    return;
                }
                match self.depth {
                    0 => self.bail = true, // a scalar document
                    1 if self.awaiting_key => {
                        self.close_section(m);
                        // anything but a known section name (`1`, `null`, a typo) is reported by
                        // the whole-document path
                        if !SECTIONS.contains(&v.as_str()) {
                            self.bail = true;
                            return;
                        }
                        let start = self.cursor.byte(self.text, m.index());
                        self.value = Some(Open {
                            key: v,
                            start,
                            column: m.col(),
                            items: None,
                        });
                        self.awaiting_key = false;
                    }
                    _ => self.node_start(m, false, false),
                }
            }
            Event::MappingStart(anchor, ref tag) | Event::SequenceStart(anchor, ref tag) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                if anchor != 0 || tag.is_some() || self.first_key.is_some() {
                    // (a collection as the first key of a block mapping)
                    self.bail = true;
                    return;
                }
                if self.depth == 0 {
                    // the root must be a block mapping
                    let at = self.cursor.byte(self.text, m.index());
                    if !is_map || self.text[at..].starts_with('{') {
                        self.bail = true;
                    }
                } else if self.depth == 1 && self.awaiting_key {
                    self.bail = true; // a collection as a section name
                } else {
                    self.node_start(m, !is_map, is_map);
                }
                self.depth += 1;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let is_map = matches!(ev, Event::MappingEnd);
                self.depth = self.depth.saturating_sub(1);
                match self.depth {
                    0 => self.close_section(m),
                    2 if is_map => {
                        if let Some((start, column)) = self.item.take() {
                            let at = self.cursor.byte(self.text, m.index());
                            let flow = self.text[start..at].starts_with('{');
                            let end = self.end_at(m, flow.then_some('}')).max(start);
                            if let Some(items) = self.value.as_mut().and_then(|o| o.items.as_mut())
                            {
                                items.push(Slice { start, end, column });
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Vec<(String, Vec<String>)> {
        sections(text)
            .expect("splits")
            .into_iter()
            .map(|(k, b)| {
                let parts = match b {
                    Body::Whole(s) => vec![s.document(text)],
                    Body::Items(items) => items.iter().map(|s| s.document(text)).collect(),
                };
                (k, parts)
            })
            .collect()
    }

    #[test]
    fn block_and_flow_elements_are_cut_in_place() {
        let text = "server: { threads: 1 }\nroutes:\n  - name: a\n    match:\n      prefix: /a\n  # between\n  - { name: b, upstream: u }\n  - name: c\n    upstream: |\n      x\nlisteners:\n  - name: l\n";
        let d = docs(text);
        assert_eq!(
            d[0],
            ("server".into(), vec!["        { threads: 1 }\n".into()])
        );
        assert_eq!(d[1].0, "routes");
        assert_eq!(
            d[1].1,
            [
                "    name: a\n    match:\n      prefix: /a\n  # between\n",
                "    { name: b, upstream: u }",
                "    name: c\n    upstream: |\n      x\n",
            ]
        );
        assert_eq!(d[2], ("listeners".into(), vec!["  - name: l\n".into()]));
        for (_, parts) in &d {
            for p in parts {
                serde_yaml::from_str::<serde_yaml::Value>(p).expect("each part parses alone");
            }
        }
    }

    #[test]
    fn unsure_documents_are_left_whole() {
        for text in [
            "server: &x 1\nadmin: *x\n",
            "server: !!str 1\n",
            "bogus: 1\n",
            "1: 2\n",
            "server: 1\n---\nadmin: 2\n",
            "server: 1\nserver: 2\n",
            "[1, 2]\n",
            "{server: 1}\n",
            "just text\n",
            "routes: [ {a: 1}\n",
        ] {
            assert_eq!(sections(text), None, "{text}");
        }
    }

    /// Wherever the line splitter cuts, it cuts exactly where the event parser does: on every example
    /// and fixture, and on layouts chosen to probe its edges.
    #[test]
    fn line_cuts_are_the_event_parser_cuts() {
        let mut texts = crate::config::load::tests::example_and_fixture_texts();
        let crafted = [
            "routes:\n- name: a\n  upstream: b\n- name: c\nlisteners: []\n",
            "routes:\n  - name: a\n    upstream: b",
            "routes:   # the routes\n\n  # first\n  - name: a\n# at column 0\n    upstream: b\n\n  - { name: c, upstream: d }\n  - name: e\n    x: |\n      text\n\n      more\n  # trailing\n\n# before the next\nserver:\n  threads: 1\n\n",
            "server: { threads: 1 }\nadmin:\n  address: 127.0.0.1:9000\nroutes:\n  -   name: a\n      match: { prefix: / }\n",
            "upstreams:\n  - name: é\n    endpoints: [{ address: \"h:1\" }]\nroutes:\n  - name: ü\n    upstream: é\n",
            "policies:\n  - name: p\n    type: rate_limit\n    key: { type: client_ip }\nglobal_policies: [p]\n",
            "observability:\n  metrics: true\nroutes:\n  - name: a # a comment\n    upstream: b\n",
        ];
        for (i, t) in crafted.iter().enumerate() {
            texts.push((format!("crafted {i}"), t.to_string()));
        }
        let mut cut = 0;
        for (name, text) in &texts {
            // (where the event parser gives up on a text the line splitter cuts, e.g. a syntax error
            // inside an element, that element does not parse alone and the loader reads the whole
            // document: `load::tests::split_and_whole_loads_agree` covers those files)
            if let (Some(by_lines), Some(by_events)) = (lines::sections(text), by_events(text)) {
                assert_eq!(by_lines, by_events, "{name}");
                cut += 1;
            }
        }
        // the line splitter takes the plain layouts, among them every crafted one
        assert!(cut >= crafted.len() + 5, "{cut}");
        for t in crafted {
            assert!(lines::sections(t).is_some(), "{t}");
        }
    }

    /// What the line splitter must not cut (the event parser decides, or the whole document is read).
    #[test]
    fn line_splitter_declines_unusual_layouts() {
        for text in [
            "routes:\n\t- name: a\n",
            "routes:\r\n  - name: a\r\n",
            "\u{feff}routes:\n  - name: a\n",
            "---\nroutes:\n  - name: a\n",
            "routes:\n  - name: a\n  bad: 1\n",
            "routes:\n  - name: a\n - name: b\n",
            "routes:\n  -\n    name: a\n",
            "routes:\n  - just a string\n",
            "routes:\n  - \"quoted: key\"\n",
            "routes:\n  - { name: a,\n      upstream: b }\n",
            "routes:\n  - { name: a }\n    upstream: b\n",
            "routes: [ { name: a } ]\n",
            "routes:\nserver: 1\n",
            "server:1\n",
            "server: &a 1\n",
            "routes:\n  - name: a\nroutes:\n  - name: b\n",
            "unknown:\n  x: 1\n",
            "# only a comment\n",
        ] {
            assert_eq!(lines::sections(text), None, "{text:?}");
        }
    }

    #[test]
    fn non_ascii_text_keeps_byte_offsets() {
        let text = "# é\nroutes:\n  - name: é\n    x: ü\n  - name: b\n";
        let d = docs(text);
        assert_eq!(d[0].1, ["    name: é\n    x: ü\n", "    name: b\n"]);
    }
}

//! Where each YAML node sits in the source: a map from a node's path (`routes[3].match.path`) to the line
//! and column of its key and of its value.
//!
//! serde gives positions only for syntax and type errors; semantic diagnostics (dangling references,
//! duplicates, conflicts) need them too, so the source is read a second time with `yaml-rust2`'s marked
//! event parser, which only records positions.
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    key: Option<Pos>,
    value: Pos,
}

/// Path → positions. Paths use `.field` for mapping keys and `[i]` for sequence items; the root is `""`.
#[derive(Debug, Default)]
pub struct SpanIndex {
    map: HashMap<String, Entry>,
}

impl SpanIndex {
    /// Builds the index. A document that does not parse yields an empty index (the syntax error itself is
    /// reported from serde_yaml's error, which carries its own position).
    pub fn build(text: &str) -> SpanIndex {
        let mut b = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut b, false).is_err() {
            return SpanIndex::default();
        }
        SpanIndex { map: b.map }
    }

    /// Position of the value at `path`, or of the closest ancestor that exists.
    pub fn value(&self, path: &str) -> Pos {
        self.lookup(path, false)
    }

    /// Position of the key at `path` (falls back to the value, then to ancestors).
    pub fn key(&self, path: &str) -> Pos {
        self.lookup(path, true)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.map.contains_key(path)
    }

    fn lookup(&self, path: &str, want_key: bool) -> Pos {
        let mut p = path;
        loop {
            if let Some(e) = self.map.get(p) {
                return if want_key {
                    e.key.unwrap_or(e.value)
                } else {
                    e.value
                };
            }
            match parent(p) {
                Some(q) => p = q,
                None => return Pos { line: 1, column: 1 },
            }
        }
    }
}

/// `a.b[2].c` → `a.b[2]` → `a.b` → `a` → `""` → None.
pub fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

fn pos(m: Marker) -> Pos {
    Pos {
        line: m.line(),
        column: m.col() + 1,
    }
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<(String, Pos)>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    map: HashMap<String, Entry>,
    root_done: bool,
}

impl Builder {
    /// The path of a node about to start at the current position, plus its key position (for mapping values).
    /// Returns None when the node is a mapping key (keys are recorded when their value starts).
    fn next_path(&mut self) -> Option<(String, Option<Pos>)> {
        match self.stack.last_mut() {
            None => Some((String::new(), None)),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some((p, None))
            }
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                Some((k, kpos)) => {
                    let p = if path.is_empty() {
                        k
                    } else {
                        format!("{path}.{k}")
                    };
                    Some((p, Some(kpos)))
                }
                None => None,
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.root_done {
            return;
        }
        match ev {
            Event::Scalar(v, ..) => match self.next_path() {
                Some((p, key)) => {
                    self.map.insert(
                        p,
                        Entry {
                            key,
                            value: pos(mark),
                        },
                    );
                }
                None => {
                    if let Some(Frame::Map { pending_key, .. }) = self.stack.last_mut() {
                        *pending_key = Some((v, pos(mark)));
                    }
                }
            },
            Event::Alias(_) => {
                if let Some((p, key)) = self.next_path() {
                    self.map.insert(
                        p,
                        Entry {
                            key,
                            value: pos(mark),
                        },
                    );
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection used as a mapping key has no path of its own: give it a placeholder.
                let (p, key) = self
                    .next_path()
                    .unwrap_or_else(|| ("<complex key>".into(), None));
                self.map.insert(
                    p.clone(),
                    Entry {
                        key,
                        value: pos(mark),
                    },
                );
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        path: p,
                        pending_key: None,
                    }
                } else {
                    Frame::Seq { path: p, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                if self.stack.is_empty() {
                    self.root_done = true;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_positions() {
        let text = "routes:\n  - name: a\n    match:\n      path: /x\n  - name: b\nlist: [1, 2]\n";
        let idx = SpanIndex::build(text);
        assert_eq!(
            idx.value("routes[0].name"),
            Pos {
                line: 2,
                column: 11
            }
        );
        assert_eq!(idx.key("routes[0].name"), Pos { line: 2, column: 5 });
        assert_eq!(
            idx.value("routes[0].match.path"),
            Pos {
                line: 4,
                column: 13
            }
        );
        assert_eq!(idx.key("routes[1].name"), Pos { line: 5, column: 5 });
        assert_eq!(
            idx.value("list[1]"),
            Pos {
                line: 6,
                column: 11
            }
        );
        // unknown paths fall back to the nearest ancestor
        assert_eq!(idx.value("routes[1].nope"), idx.value("routes[1]"));
        assert_eq!(parent("a.b[2].c"), Some("a.b[2]"));
        assert_eq!(parent("a"), Some(""));
    }
}

//! Where each YAML node sits in the source: a map from a node's path (`routes[3].match.path`) to the line
//! and column of its key and of its value.
//!
//! serde gives positions only for syntax and type errors; semantic diagnostics (dangling references,
//! duplicates, conflicts) need them too, so the source is read a second time with `yaml-rust2`'s marked
//! event parser, which only records positions.
//!
//! Memory: the index is built on the first lookup only, i.e. only when some diagnostic needs a
//! position (a valid configuration never builds it), and it is keyed by a 64-bit hash of each path
//! (no path strings are kept): about 40 bytes per YAML node instead of ~130.
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// A position packed into 8 bytes (lines and columns beyond `u32::MAX` saturate).
#[derive(Clone, Copy, Debug, Default)]
struct Packed {
    line: u32,
    column: u32,
}

impl Packed {
    fn new(p: Pos) -> Packed {
        let c = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Packed {
            line: c(p.line),
            column: c(p.column),
        }
    }
    fn pos(self) -> Pos {
        Pos {
            line: self.line as usize,
            column: self.column as usize,
        }
    }
}

/// Key position (line 0 = none: a sequence item or the root) and value position.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    key: Packed,
    value: Packed,
}

/// The key of a path in the map: its hash (SipHash with fixed keys). Two paths of one document
/// sharing a 64-bit hash would only swap their positions in a message.
fn path_key(path: &str) -> u64 {
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

/// The keys are already hashes: the map uses them as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // only `u64` keys are hashed (through `write_u64`); anything else still spreads
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Map = HashMap<u64, Entry, BuildHasherDefault<Identity>>;

/// Path → positions, built lazily from the source text. Paths use `.field` for mapping keys and `[i]`
/// for sequence items; the root is `""`.
#[derive(Debug, Default)]
pub struct SpanIndex<'t> {
    text: Cow<'t, str>,
    map: OnceCell<Map>,
}

impl<'t> SpanIndex<'t> {
    /// An index of `text`; nothing is parsed until the first lookup. A document that does not parse
    /// yields an empty index (the syntax error itself is reported from serde_yaml's error, which
    /// carries its own position).
    pub fn build(text: impl Into<Cow<'t, str>>) -> SpanIndex<'t> {
        SpanIndex {
            text: text.into(),
            map: OnceCell::new(),
        }
    }

    /// The source text the positions refer to.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn map(&self) -> &Map {
        self.map.get_or_init(|| {
            let mut b = Builder::default();
            let mut parser = Parser::new_from_str(&self.text);
            if parser.load(&mut b, false).is_err() {
                return Map::default();
            }
            b.map.shrink_to_fit();
            b.map
        })
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
        self.map().contains_key(&path_key(path))
    }

    fn lookup(&self, path: &str, want_key: bool) -> Pos {
        let map = self.map();
        let mut p = path;
        loop {
            if let Some(e) = map.get(&path_key(p)) {
                return if want_key && e.key.line != 0 {
                    e.key.pos()
                } else {
                    e.value.pos()
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
    map: Map,
    root_done: bool,
}

impl Builder {
    fn record(&mut self, path: &str, key: Option<Pos>, value: Pos) {
        self.map.insert(
            path_key(path),
            Entry {
                key: key.map(Packed::new).unwrap_or_default(),
                value: Packed::new(value),
            },
        );
    }
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
                Some((p, key)) => self.record(&p, key, pos(mark)),
                None => {
                    if let Some(Frame::Map { pending_key, .. }) = self.stack.last_mut() {
                        *pending_key = Some((v, pos(mark)));
                    }
                }
            },
            Event::Alias(_) => {
                if let Some((p, key)) = self.next_path() {
                    self.record(&p, key, pos(mark));
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection used as a mapping key has no path of its own: give it a placeholder.
                let (p, key) = self
                    .next_path()
                    .unwrap_or_else(|| ("<complex key>".into(), None));
                self.record(&p, key, pos(mark));
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

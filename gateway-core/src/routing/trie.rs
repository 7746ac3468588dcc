//! The segment trie of prefix and pattern routes (see [`super::router`]), laid out flat: nodes, edges
//! and route lists are three arrays indexed by `u32`, a node's literal children are a slice of edges
//! sorted by segment, and every edge label lives in one shared string. A node with few children is
//! searched in its slice; one with more than [`FANOUT`] (e.g. one child per tenant) also gets a hash
//! map, so lookups stay O(1) at any size. At 100,000 routes (~230,000 nodes) this takes ~15 MB, where
//! a `HashMap` of boxed nodes per node took ~55 MB.
//!
//! Built by [`TrieBuilder`] with one temporary map keyed by (node, segment); route ids are added in
//! precedence order and each node's lists keep that order.
use super::router::RouteId;
use std::collections::HashMap;

const NONE: u32 = u32::MAX;

/// Nodes with more literal children than this are looked up by hash.
pub(super) const FANOUT: u32 = 8;

/// Which of a node's route lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum List {
    /// Prefix routes ending at this node (match it and everything below).
    Prefix = 0,
    /// Patterns ending at this node (match exactly its depth).
    Pattern = 1,
    /// Patterns whose catch-all starts below this node.
    CatchAll = 2,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    /// Literal children: `edges[lit..lit + lit_len]`, sorted by label.
    lit: u32,
    lit_len: u32,
    /// The parameter child, or `NONE`.
    param: u32,
    /// Route lists: `ids[ids..]`, `n[List]` ids per list, in list order.
    ids: u32,
    n: [u32; 3],
    /// Index in `Trie::wide` when the node has more than [`FANOUT`] children, else `NONE`.
    wide: u32,
}

#[derive(Clone, Copy, Debug)]
struct Edge {
    /// The label: `labels[off..off + len]`.
    off: u32,
    len: u32,
    child: u32,
}

/// An immutable trie; node 0 is the root.
#[derive(Debug)]
pub(super) struct Trie {
    nodes: Box<[Node]>,
    edges: Box<[Edge]>,
    labels: Box<str>,
    ids: Box<[RouteId]>,
    /// Children by label of the nodes with many (label → child).
    wide: Box<[HashMap<Box<str>, u32>]>,
}

impl Default for Trie {
    fn default() -> Self {
        TrieBuilder::new().build()
    }
}

impl Trie {
    /// The root node.
    pub(super) const ROOT: u32 = 0;

    /// The ids of `list` at `node`, in precedence order.
    #[inline]
    pub(super) fn list(&self, node: u32, list: List) -> &[RouteId] {
        let n = &self.nodes[node as usize];
        let before: u32 = n.n[..list as usize].iter().sum();
        let start = (n.ids + before) as usize;
        &self.ids[start..start + n.n[list as usize] as usize]
    }

    /// The literal child of `node` for `segment`.
    #[inline]
    pub(super) fn literal(&self, node: u32, segment: &str) -> Option<u32> {
        let n = &self.nodes[node as usize];
        if n.lit_len == 0 {
            return None;
        }
        if n.wide != NONE {
            return self.wide[n.wide as usize].get(segment).copied();
        }
        let edges = &self.edges[n.lit as usize..(n.lit + n.lit_len) as usize];
        edges
            .iter()
            .find(|e| self.label(e) == segment)
            .map(|e| e.child)
    }

    /// The parameter child of `node`.
    #[inline]
    pub(super) fn param(&self, node: u32) -> Option<u32> {
        let p = self.nodes[node as usize].param;
        (p != NONE).then_some(p)
    }

    #[inline]
    fn label(&self, e: &Edge) -> &str {
        &self.labels[e.off as usize..(e.off + e.len) as usize]
    }
}

/// Builds a [`Trie`]; segments borrow from the route rules until [`TrieBuilder::build`].
pub(super) struct TrieBuilder<'a> {
    /// Parameter child per node (its length is the node count).
    params: Vec<u32>,
    literals: HashMap<(u32, &'a str), u32>,
    /// (node, list, id) in the order added.
    lists: Vec<(u32, List, RouteId)>,
}

impl<'a> TrieBuilder<'a> {
    /// A builder holding only the root.
    pub(super) fn new() -> Self {
        TrieBuilder {
            params: vec![NONE],
            literals: HashMap::new(),
            lists: Vec::new(),
        }
    }

    fn node(&mut self) -> u32 {
        self.params.push(NONE);
        (self.params.len() - 1) as u32
    }

    /// The literal child of `node` for `segment`, created if new.
    pub(super) fn literal(&mut self, node: u32, segment: &'a str) -> u32 {
        if let Some(&c) = self.literals.get(&(node, segment)) {
            return c;
        }
        let c = self.node();
        self.literals.insert((node, segment), c);
        c
    }

    /// The parameter child of `node`, created if new.
    pub(super) fn param(&mut self, node: u32) -> u32 {
        match self.params[node as usize] {
            NONE => {
                let c = self.node();
                self.params[node as usize] = c;
                c
            }
            c => c,
        }
    }

    /// Appends `id` to `list` of `node` (call in precedence order).
    pub(super) fn add(&mut self, node: u32, list: List, id: RouteId) {
        self.lists.push((node, list, id));
    }

    pub(super) fn build(mut self) -> Trie {
        let mut nodes: Vec<Node> = self
            .params
            .iter()
            .map(|&param| Node {
                lit: 0,
                lit_len: 0,
                param,
                ids: 0,
                n: [0; 3],
                wide: NONE,
            })
            .collect();
        let mut edges: Vec<(u32, &str, u32)> = self
            .literals
            .into_iter()
            .map(|((p, s), c)| (p, s, c))
            .collect();
        edges.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let mut labels = String::with_capacity(edges.iter().map(|e| e.1.len()).sum());
        let mut flat = Vec::with_capacity(edges.len());
        for (k, &(parent, label, child)) in edges.iter().enumerate() {
            let n = &mut nodes[parent as usize];
            if n.lit_len == 0 {
                n.lit = k as u32;
            }
            n.lit_len += 1;
            flat.push(Edge {
                off: labels.len() as u32,
                len: label.len() as u32,
                child,
            });
            labels.push_str(label);
        }
        let mut wide = Vec::new();
        for n in nodes.iter_mut().filter(|n| n.lit_len > FANOUT) {
            n.wide = wide.len() as u32;
            let kids = &edges[n.lit as usize..(n.lit + n.lit_len) as usize];
            wide.push(kids.iter().map(|&(_, l, c)| (Box::from(l), c)).collect());
        }
        // stable: each list keeps the order the ids were added in
        self.lists.sort_by_key(|&(node, list, _)| (node, list));
        let mut ids = Vec::with_capacity(self.lists.len());
        for (k, &(node, list, id)) in self.lists.iter().enumerate() {
            let n = &mut nodes[node as usize];
            if n.n == [0; 3] {
                n.ids = k as u32;
            }
            n.n[list as usize] += 1;
            ids.push(id);
        }
        Trie {
            nodes: nodes.into_boxed_slice(),
            edges: flat.into_boxed_slice(),
            labels: labels.into_boxed_str(),
            ids: ids.into_boxed_slice(),
            wide: wide.into_boxed_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keep_insertion_order_and_children_are_found() {
        let mut b = TrieBuilder::new();
        let api = b.literal(Trie::ROOT, "api");
        let users = b.literal(api, "users");
        let p = b.param(users);
        assert_eq!(b.literal(Trie::ROOT, "api"), api);
        assert_eq!(b.param(users), p);
        let zeta = b.literal(api, "zeta");
        let alpha = b.literal(api, "alpha");
        b.add(users, List::Prefix, 7);
        b.add(p, List::Pattern, 3);
        b.add(users, List::CatchAll, 5);
        b.add(users, List::Prefix, 1);
        b.add(api, List::Pattern, 9);
        let t = b.build();
        assert_eq!(t.literal(Trie::ROOT, "api"), Some(api));
        assert_eq!(t.literal(api, "users"), Some(users));
        assert_eq!(t.literal(api, "zeta"), Some(zeta));
        assert_eq!(t.literal(api, "alpha"), Some(alpha));
        assert_eq!(t.literal(api, "beta"), None);
        assert_eq!(t.literal(users, "api"), None);
        assert_eq!(t.param(users), Some(p));
        assert_eq!(t.param(api), None);
        assert_eq!(t.list(users, List::Prefix), [7, 1]);
        assert_eq!(t.list(users, List::Pattern), [] as [u32; 0]);
        assert_eq!(t.list(users, List::CatchAll), [5]);
        assert_eq!(t.list(p, List::Pattern), [3]);
        assert_eq!(t.list(api, List::Pattern), [9]);
        assert_eq!(t.list(Trie::ROOT, List::Prefix), [] as [u32; 0]);
        // a node with many children is looked up by hash, with the same answers
        let mut b = TrieBuilder::new();
        let names: Vec<String> = (0..3 * FANOUT).map(|i| format!("t{i:03}")).collect();
        let kids: Vec<u32> = names.iter().map(|n| b.literal(Trie::ROOT, n)).collect();
        let t = b.build();
        for (n, k) in names.iter().zip(&kids) {
            assert_eq!(t.literal(Trie::ROOT, n), Some(*k));
        }
        assert_eq!(t.literal(Trie::ROOT, "t999"), None);
        assert_eq!(t.wide.len(), 1);
        let empty = Trie::default();
        assert_eq!(empty.literal(Trie::ROOT, "x"), None);
        assert_eq!(empty.list(Trie::ROOT, List::Prefix), [] as [u32; 0]);
    }
}

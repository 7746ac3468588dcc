//! The route matcher: picks, deterministically, the most specific route for a request.
//!
//! Precedence (first difference decides; see `docs/routing.md`):
//! 1. path kind: exact > pattern > prefix;
//! 2. path specificity: exact — longer first; pattern — more segments, then more literal segments, then
//!    without a catch-all; prefix — more segments, then longer;
//! 3. host: exact host > wildcard (`*.example.com`, longer suffix first) > any host;
//! 4. more header conditions first;
//! 5. routes restricted to methods before routes for any method;
//! 6. finally the order in the file (only reached by routes that overlap without one covering the other,
//!    which the compiler warns about).
//!
//! Structure: exact paths live in a hash map; prefixes and patterns live in one segment trie (literal
//! children sorted for binary search, one parameter child per node, all in flat arrays: `super::trie`),
//! so matching costs O(segments), not O(routes). Each candidate list is kept sorted by precedence, so
//! the first candidate that passes its host/header/method checks is the best of its list.
use super::pattern::{Pattern, Segment};
use super::trie::{List, Trie, TrieBuilder};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use smallvec::SmallVec;
use std::collections::HashMap;

pub type RouteId = u32;

/// How a route matches a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathRule {
    /// Exactly this (normalised) path.
    Exact(String),
    /// This path and everything below it on segment boundaries; stored without trailing slash (`/` = all).
    Prefix(String),
    Pattern(Pattern),
}

impl PathRule {
    fn kind(&self) -> u8 {
        match self {
            PathRule::Exact(_) => 0,
            PathRule::Pattern(_) => 1,
            PathRule::Prefix(_) => 2,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PathRule::Exact(p) => format!("path {p}"),
            PathRule::Prefix(p) => format!("prefix {p}"),
            PathRule::Pattern(p) => format!("pattern {p}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostRule {
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches one or more labels before it.
    Suffix(String),
}

impl HostRule {
    pub fn parse(s: &str) -> Result<HostRule, String> {
        let s = s.trim().to_ascii_lowercase();
        let check = |h: &str| {
            !h.is_empty()
                && h.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        if let Some(rest) = s.strip_prefix("*.") {
            if check(rest) {
                return Ok(HostRule::Suffix(format!(".{rest}")));
            }
        } else if check(&s) {
            return Ok(HostRule::Exact(s));
        }
        Err(format!(
            "invalid host \"{s}\"; write a name like \"api.example.com\" or \"*.example.com\""
        ))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostRule::Exact(h) => host.eq_ignore_ascii_case(h),
            HostRule::Suffix(suf) => {
                host.len() > suf.len()
                    && host.is_char_boundary(host.len() - suf.len())
                    && host[host.len() - suf.len()..].eq_ignore_ascii_case(suf)
            }
        }
    }

    fn specificity(&self) -> (u8, usize) {
        match self {
            HostRule::Exact(_) => (0, 0),
            HostRule::Suffix(s) => (1, usize::MAX - s.len()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            HostRule::Exact(h) => h.clone(),
            HostRule::Suffix(s) => format!("*{s}"),
        }
    }
}

/// Everything a route requires of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRule {
    pub path: PathRule,
    /// Empty: any host.
    pub hosts: Vec<HostRule>,
    /// Empty: any method.
    pub methods: Vec<Method>,
    /// Value `None`: the header must be present with any value.
    pub headers: Vec<(HeaderName, Option<HeaderValue>)>,
}

impl RouteRule {
    fn rank_key(&self, index: usize) -> impl Ord {
        let path = match &self.path {
            PathRule::Exact(p) => (usize::MAX - p.len(), 0, 0, 0),
            PathRule::Pattern(p) => (
                usize::MAX - p.segments.len(),
                usize::MAX - p.literal_count(),
                p.has_catch_all() as usize,
                0,
            ),
            PathRule::Prefix(p) => (
                usize::MAX - segments_of(p).count(),
                usize::MAX - p.len(),
                0,
                0,
            ),
        };
        let host = self
            .hosts
            .iter()
            .map(HostRule::specificity)
            .max()
            .unwrap_or((2, 0));
        (
            self.path.kind(),
            path,
            host,
            usize::MAX - self.headers.len(),
            self.methods.is_empty(),
            index,
        )
    }

    /// True when every request this rule matches is also matched by `other` ... i.e. `self` ⊇ `other`.
    /// Exact for equal paths; used by the compiler to find routes that can never win.
    pub fn covers(&self, other: &RouteRule) -> bool {
        self.path == other.path
            && (self.hosts.is_empty()
                || other.hosts.iter().all(|h| self.hosts.contains(h)) && !other.hosts.is_empty())
            && (self.methods.is_empty()
                || !other.methods.is_empty()
                    && other.methods.iter().all(|m| self.methods.contains(m)))
            && self.headers.iter().all(|h| other.headers.contains(h))
    }

    /// True when both rules match exactly the same requests.
    pub fn same_as(&self, other: &RouteRule) -> bool {
        self.covers(other) && other.covers(self)
    }

    fn host_ok(&self, host: Option<&str>) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        match host {
            Some(h) => self.hosts.iter().any(|r| r.matches(h)),
            None => false,
        }
    }

    fn headers_ok(&self, headers: &HeaderMap) -> bool {
        self.headers
            .iter()
            .all(|(name, want)| match (headers.get(name), want) {
                (Some(_), None) => true,
                (Some(v), Some(w)) => v == w,
                (None, _) => false,
            })
    }

    fn method_ok(&self, m: &Method) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|x| x == m)
    }
}

fn segments_of(p: &str) -> impl Iterator<Item = &str> {
    p.split('/').filter(|s| !s.is_empty())
}

/// The request facts the router looks at. `path` must already be normalised.
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    /// Lower- or mixed-case host without port.
    pub host: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// Byte ranges of captured parameters in the request path, in the pattern's parameter order.
pub type Captures = SmallVec<[(u32, u32); 4]>;

#[derive(Debug, PartialEq, Eq)]
pub enum MatchOutcome {
    Found {
        route: RouteId,
        captures: Captures,
    },
    /// Some route matched everything but the method; these methods would have been accepted.
    MethodNotAllowed {
        allowed: Vec<Method>,
    },
    NotFound,
}

/// An immutable, compiled route table.
#[derive(Debug, Default)]
pub struct Router {
    rules: Vec<RouteRule>,
    /// Lower rank wins.
    rank: Vec<u32>,
    exact: HashMap<Box<str>, Vec<RouteId>>,
    trie: Trie,
}

impl Router {
    /// Builds the table; route ids are indices into `rules`.
    pub fn new(rules: Vec<RouteRule>) -> Router {
        let mut order: Vec<usize> = (0..rules.len()).collect();
        order.sort_by_cached_key(|&i| rules[i].rank_key(i));
        let mut rank = vec![0u32; rules.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r as u32;
        }
        let mut exact: HashMap<Box<str>, Vec<RouteId>> = HashMap::new();
        let mut trie = TrieBuilder::new();
        for &i in &order {
            let id = i as RouteId;
            match &rules[i].path {
                PathRule::Exact(p) => exact.entry(p.as_str().into()).or_default().push(id),
                PathRule::Prefix(p) => {
                    let mut node = Trie::ROOT;
                    for s in segments_of(p) {
                        node = trie.literal(node, s);
                    }
                    trie.add(node, List::Prefix, id);
                }
                PathRule::Pattern(pat) => {
                    let mut node = Trie::ROOT;
                    let mut catch_all = false;
                    for seg in &pat.segments {
                        match seg {
                            Segment::Literal(l) => node = trie.literal(node, l),
                            Segment::Param(_) => node = trie.param(node),
                            Segment::CatchAll(_) => catch_all = true,
                        }
                    }
                    let list = if catch_all {
                        List::CatchAll
                    } else {
                        List::Pattern
                    };
                    trie.add(node, list, id);
                }
            }
        }
        let trie = trie.build();
        Router {
            rules,
            rank,
            exact,
            trie,
        }
    }

    pub fn rules(&self) -> &[RouteRule] {
        &self.rules
    }

    pub fn rank(&self, id: RouteId) -> u32 {
        self.rank[id as usize]
    }

    /// Finds the best route for `req`.
    pub fn find(&self, req: &RequestView<'_>) -> MatchOutcome {
        let (best, method_miss) = self.search(req);
        match best {
            Some((_, route, captures)) => MatchOutcome::Found { route, captures },
            None if method_miss => MatchOutcome::MethodNotAllowed {
                allowed: self.allowed_methods(req),
            },
            None => MatchOutcome::NotFound,
        }
    }

    fn search(&self, req: &RequestView<'_>) -> (Option<(u32, RouteId, Captures)>, bool) {
        let mut st = Search {
            router: self,
            req,
            best: None,
            method_miss: false,
        };
        if let Some(ids) = self.exact.get(req.path) {
            st.consider_list(ids, &Captures::new());
        }
        // exact routes outrank every pattern and prefix: only search further when none matched
        if st.best.is_none() {
            let path = req.path.as_bytes();
            let mut segs: SmallVec<[(u32, u32); 16]> = SmallVec::new();
            let mut start = None;
            for (i, &b) in path.iter().enumerate() {
                if b == b'/' {
                    if let Some(s) = start.take() {
                        segs.push((s as u32, i as u32));
                    }
                } else if start.is_none() {
                    start = Some(i);
                }
            }
            if let Some(s) = start {
                segs.push((s as u32, path.len() as u32));
            }
            let mut caps = Captures::new();
            st.walk(Trie::ROOT, &segs, 0, &mut caps);
        }
        (st.best, st.method_miss)
    }

    /// The methods that would be accepted for this path/host/headers (slow path: only for 405 answers).
    fn allowed_methods(&self, req: &RequestView<'_>) -> Vec<Method> {
        [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ]
        .into_iter()
        .filter(|m| {
            let probe = RequestView {
                method: m,
                path: req.path,
                host: req.host,
                headers: req.headers,
            };
            self.search(&probe).0.is_some()
        })
        .collect()
    }
}

struct Search<'r, 'q> {
    router: &'r Router,
    req: &'q RequestView<'q>,
    best: Option<(u32, RouteId, Captures)>,
    method_miss: bool,
}

impl Search<'_, '_> {
    /// Returns true when `id` became the best (callers on a rank-sorted list can stop there).
    fn consider(&mut self, id: RouteId, caps: &Captures) -> bool {
        let rank = self.router.rank[id as usize];
        if matches!(self.best, Some((r, _, _)) if r <= rank) {
            return false;
        }
        let rule = &self.router.rules[id as usize];
        if !rule.host_ok(self.req.host) || !rule.headers_ok(self.req.headers) {
            return false;
        }
        if !rule.method_ok(self.req.method) {
            self.method_miss = true;
            return false;
        }
        self.best = Some((rank, id, caps.clone()));
        true
    }

    fn consider_list(&mut self, ids: &[RouteId], caps: &Captures) {
        for &id in ids {
            if self.consider(id, caps) {
                break;
            }
        }
    }

    fn walk(&mut self, node: u32, segs: &[(u32, u32)], i: usize, caps: &mut Captures) {
        let router = self.router;
        let trie = &router.trie;
        let prefix = trie.list(node, List::Prefix);
        if !prefix.is_empty() {
            self.consider_list(prefix, caps);
        }
        if i == segs.len() {
            let pattern = trie.list(node, List::Pattern);
            if !pattern.is_empty() {
                self.consider_list(pattern, caps);
            }
            return;
        }
        let catch_all = trie.list(node, List::CatchAll);
        if !catch_all.is_empty() {
            let end = self.req.path.len() as u32;
            let end = if self.req.path.ends_with('/') && end > segs[i].0 {
                end - 1
            } else {
                end
            };
            caps.push((segs[i].0, end.max(segs[i].1)));
            self.consider_list(catch_all, caps);
            caps.pop();
        }
        let (s, e) = segs[i];
        let seg = &self.req.path[s as usize..e as usize];
        if let Some(child) = trie.literal(node, seg) {
            self.walk(child, segs, i + 1, caps);
        }
        if let Some(child) = trie.param(node) {
            caps.push((s, e));
            self.walk(child, segs, i + 1, caps);
            caps.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: PathRule) -> RouteRule {
        RouteRule {
            path,
            hosts: vec![],
            methods: vec![],
            headers: vec![],
        }
    }
    fn prefix(p: &str) -> RouteRule {
        rule(PathRule::Prefix(p.into()))
    }
    fn pattern(p: &str) -> RouteRule {
        rule(PathRule::Pattern(Pattern::parse(p).unwrap()))
    }
    fn exact(p: &str) -> RouteRule {
        rule(PathRule::Exact(p.into()))
    }

    fn find(r: &Router, method: Method, path: &str, host: Option<&str>) -> MatchOutcome {
        let h = HeaderMap::new();
        r.find(&RequestView {
            method: &method,
            path,
            host,
            headers: &h,
        })
    }

    fn route_of(o: MatchOutcome) -> Option<RouteId> {
        match o {
            MatchOutcome::Found { route, .. } => Some(route),
            _ => None,
        }
    }

    #[test]
    fn precedence_is_specificity_not_file_order() {
        let r = Router::new(vec![
            prefix("/api"),
            prefix("/api/user"),
            pattern("/api/user/{id}"),
            exact("/api/user/me"),
            prefix("/"),
        ]);
        let g = |p| route_of(find(&r, Method::GET, p, None));
        assert_eq!(g("/api/user/me"), Some(3));
        assert_eq!(g("/api/user/42"), Some(2));
        assert_eq!(g("/api/user/42/x"), Some(1));
        assert_eq!(g("/api/user"), Some(1));
        assert_eq!(g("/api/username"), Some(0));
        assert_eq!(g("/other"), Some(4));
        assert_eq!(g("/"), Some(4));
    }

    #[test]
    fn captures_and_catch_all() {
        let r = Router::new(vec![
            pattern("/users/{id}/files/{rest*}"),
            pattern("/users/{id}"),
        ]);
        let path = "/users/42/files/a/b.txt";
        match find(&r, Method::GET, path, None) {
            MatchOutcome::Found { route: 0, captures } => {
                let c: Vec<&str> = captures
                    .iter()
                    .map(|&(s, e)| &path[s as usize..e as usize])
                    .collect();
                assert_eq!(c, ["42", "a/b.txt"]);
            }
            o => panic!("unexpected {o:?}"),
        }
        assert_eq!(route_of(find(&r, Method::GET, "/users/7", None)), Some(1));
        assert_eq!(route_of(find(&r, Method::GET, "/users/7/", None)), Some(1));
        assert_eq!(route_of(find(&r, Method::GET, "/users/", None)), None);
        assert_eq!(
            route_of(find(&r, Method::GET, "/users/7/files", None)),
            None
        );
    }

    #[test]
    fn hosts_and_methods() {
        let mut a = prefix("/api");
        a.hosts = vec![HostRule::parse("*.example.com").unwrap()];
        let mut b = prefix("/api");
        b.hosts = vec![HostRule::parse("admin.example.com").unwrap()];
        let mut c = prefix("/api");
        c.methods = vec![Method::POST];
        let r = Router::new(vec![a, b, c]);
        assert_eq!(
            route_of(find(&r, Method::GET, "/api/x", Some("admin.example.com"))),
            Some(1)
        );
        assert_eq!(
            route_of(find(&r, Method::GET, "/api/x", Some("Www.Example.com"))),
            Some(0)
        );
        assert_eq!(
            route_of(find(&r, Method::GET, "/api/x", Some("example.com"))),
            None
        );
        assert_eq!(
            route_of(find(&r, Method::POST, "/api/x", Some("other.org"))),
            Some(2)
        );
        assert_eq!(
            find(&r, Method::GET, "/api/x", Some("other.org")),
            MatchOutcome::MethodNotAllowed {
                allowed: vec![Method::POST]
            }
        );
    }

    #[test]
    fn headers_condition() {
        let mut a = prefix("/api");
        a.headers = vec![(
            HeaderName::from_static("x-version"),
            Some(HeaderValue::from_static("2")),
        )];
        let b = prefix("/api");
        let r = Router::new(vec![b, a]);
        let mut h = HeaderMap::new();
        h.insert("x-version", HeaderValue::from_static("2"));
        let m = Method::GET;
        assert_eq!(
            route_of(r.find(&RequestView {
                method: &m,
                path: "/api",
                host: None,
                headers: &h
            })),
            Some(1)
        );
        h.insert("x-version", HeaderValue::from_static("1"));
        assert_eq!(
            route_of(r.find(&RequestView {
                method: &m,
                path: "/api",
                host: None,
                headers: &h
            })),
            Some(0)
        );
    }

    #[test]
    fn covers_and_same() {
        let a = prefix("/api");
        let mut b = prefix("/api");
        b.methods = vec![Method::GET];
        assert!(a.covers(&b));
        assert!(!b.covers(&a));
        assert!(a.same_as(&prefix("/api")));
    }
}

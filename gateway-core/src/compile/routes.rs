//! Routes: match rules, rewrites, the resolved policy chain, and conflicts between routes.
use super::policies::{resolve_refs, Policies, PolicyHandle};
use super::upstreams::{fallback, timeouts, UpPlan};
use super::{Broken, Cx};
use crate::config::{Config, RateScope};
use crate::diag::did_you_mean;
use crate::plan::{FallbackPlan, LimitRef, RoutePlan};
use crate::routing::rewrite::PathRewrite;
use crate::routing::{normalize_path, HostRule, PathRule, Pattern, RouteRule, Router};
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

/// A diagnostic path `{0}{1}` (e.g. `routes[7]` + `.match`), formatted only when a diagnostic needs it.
pub(crate) struct Lazy<'a>(pub &'a str, pub &'a str);

impl std::fmt::Display for Lazy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)?;
        f.write_str(self.1)
    }
}

/// What compiling routes needs from the earlier sections.
pub(crate) struct RouteInputs<'a> {
    pub up_index: &'a HashMap<&'a str, u32>,
    pub policy_index: &'a HashMap<&'a str, u32>,
    pub pols: &'a Policies,
    pub ups: &'a [Option<UpPlan>],
    pub global: &'a [PolicyHandle],
    pub broken: Broken,
}

/// The compiled `match:` of a route.
struct Matcher {
    path: Option<PathRule>,
    pattern: Option<Pattern>,
    hosts: Vec<HostRule>,
    methods: Vec<http::Method>,
    headers: Vec<(http::HeaderName, Option<http::HeaderValue>)>,
}

pub(crate) fn routes(cfg: &Config, inp: &RouteInputs<'_>, cx: &mut Cx) -> (Vec<RoutePlan>, Router) {
    super::index_names(
        cx,
        "routes",
        cfg.routes
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.as_ref().map(|r| r.name.as_str()))),
    );
    // sized once (at 100,000 routes a doubling vector of plans held twice their size while growing)
    let n = cfg.routes.len();
    let mut rules: Vec<RouteRule> = Vec::with_capacity(n);
    let mut plans: Vec<RoutePlan> = Vec::with_capacity(n);
    // config index of each compiled route, for positions in conflict messages
    let mut origin: Vec<u32> = Vec::with_capacity(n);
    for (i, r) in cfg.routes.iter().enumerate() {
        let Some(r) = r else { continue };
        let base = format!("routes[{i}]");
        let route_id = plans.len() as u32;
        let m = matcher(cx, &base, &r.matcher);
        let (rewrite, host) = rewrite(cx, &base, r, &m);
        let upstream = upstream_of(cx, &base, &r.upstream, inp);
        let up = upstream
            .and_then(|u| inp.ups.get(u as usize))
            .and_then(Option::as_ref);
        let inherit = up.map_or(crate::plan::Timeouts::DEFAULT, |u| u.plan.timeouts);
        let t = timeouts(cx, &format!("{base}.timeouts"), &r.timeouts, inherit);
        if r.max_body_size.is_some_and(|m| m.0 == 0) {
            cx.error(
                &format!("{base}.max_body_size"),
                "must be greater than zero",
                None,
            );
        }
        let (auth, limits) = chain(cx, &base, r, upstream, up, route_id, inp);
        let fb = route_fallback(cx, &base, r, upstream, up, inp);
        let (Some(path_rule), Some(upstream)) = (m.path, upstream) else {
            continue;
        };
        rules.push(RouteRule {
            path: path_rule,
            hosts: m.hosts,
            methods: m.methods,
            headers: m.headers,
        });
        origin.push(i as u32);
        plans.push(RoutePlan {
            id: route_id,
            name: Arc::from(r.name.as_str()),
            upstream,
            rewrite,
            host,
            timeouts: t,
            max_body_size: r.max_body_size.map(|m| m.0),
            auth,
            limits,
            fallback: fb,
        });
    }
    // one router, used for the precedence checks and then kept by the plan
    let router = Router::new(rules);
    conflicts(cx, &router, &plans, &origin);
    (plans, router)
}

/// `match:` of the route at `base`: exactly one of path, prefix or pattern, plus hosts, methods and
/// headers. Diagnostic paths are only formatted for a diagnostic (this runs for every route).
fn matcher(cx: &mut Cx, base: &str, m: &crate::config::MatchConfig) -> Matcher {
    let mp = &Lazy(base, ".match");
    let given = [m.path.is_some(), m.prefix.is_some(), m.pattern.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given != 1 {
        cx.error(
            &mp.to_string(),
            if given == 0 {
                "a route needs one of path, prefix or pattern"
            } else {
                "use only one of path, prefix or pattern"
            },
            Some("prefix: /api/user takes /api/user and everything below it".into()),
        );
    }
    let mut pattern: Option<Pattern> = None;
    let path = if let Some(p) = &m.path {
        check_clean(cx, || format!("{mp}.path"), p).map(PathRule::Exact)
    } else if let Some(p) = &m.prefix {
        check_clean(cx, || format!("{mp}.prefix"), p).map(|p| {
            let t = p.trim_end_matches('/');
            PathRule::Prefix(if t.is_empty() {
                "/".into()
            } else {
                t.to_string()
            })
        })
    } else if let Some(p) = &m.pattern {
        match Pattern::parse(p) {
            Ok(pat) => {
                pattern = Some(pat.clone());
                Some(PathRule::Pattern(pat))
            }
            Err(e) => {
                cx.error(
                    &format!("{mp}.pattern"),
                    format!("invalid pattern \"{p}\": {e}"),
                    Some("e.g. /users/{id} or /files/{path*}".into()),
                );
                None
            }
        }
    } else {
        None
    };
    let mut hosts = Vec::new();
    for (k, h) in m.hosts.iter().enumerate() {
        match HostRule::parse(h) {
            Ok(h) => hosts.push(h),
            Err(e) => cx.error(&format!("{mp}.hosts[{k}]"), e, None),
        }
    }
    // kept for the plan's lifetime: no spare capacity (a pushed-to vector of 2 hosts keeps room for 4)
    hosts.shrink_to_fit();
    let mut methods = methods(cx, mp, &m.methods);
    methods.shrink_to_fit();
    let mut headers = header_conditions(cx, mp, &m.headers);
    headers.shrink_to_fit();
    Matcher {
        path,
        pattern,
        hosts,
        methods,
        headers,
    }
}

fn methods(cx: &mut Cx, mp: &Lazy<'_>, given: &[String]) -> Vec<http::Method> {
    let mut methods = Vec::new();
    for (k, meth) in given.iter().enumerate() {
        if METHODS.contains(&meth.as_str()) {
            methods.push(http::Method::from_bytes(meth.as_bytes()).unwrap_or(http::Method::GET));
        } else {
            let upper = meth.to_ascii_uppercase();
            let hint = if METHODS.contains(&upper.as_str()) {
                Some(format!("write \"{upper}\""))
            } else {
                did_you_mean(&upper, METHODS.iter().copied())
            };
            cx.error(
                &format!("{mp}.methods[{k}]"),
                format!("unknown method \"{meth}\""),
                hint,
            );
        }
    }
    methods
}

fn header_conditions<'a>(
    cx: &mut Cx,
    mp: &Lazy<'_>,
    given: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(http::HeaderName, Option<http::HeaderValue>)> {
    let mut headers = Vec::new();
    for (name, value) in given {
        let hp = || format!("{mp}.headers.{name}");
        let n = http::HeaderName::from_bytes(name.as_bytes());
        let v = if value == "*" {
            Ok(None)
        } else {
            http::HeaderValue::from_str(value).map(Some)
        };
        match (n, v) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            (Err(_), _) => cx.error_at_key(&hp(), format!("invalid header name \"{name}\""), None),
            (_, Err(_)) => cx.error(&hp(), format!("invalid header value for \"{name}\""), None),
        }
    }
    headers
}

/// `rewrite:`: the upstream path and the Host sent upstream.
fn rewrite(
    cx: &mut Cx,
    base: &str,
    r: &crate::config::RouteConfig,
    m: &Matcher,
) -> (PathRewrite, Option<http::HeaderValue>) {
    let mut rewrite = PathRewrite::Keep;
    let mut host = None;
    let Some(rw) = &r.rewrite else {
        return (rewrite, host);
    };
    let rp = Lazy(base, ".rewrite");
    if rw.strip_prefix && rw.path.is_some() {
        cx.error(&rp.to_string(), "use strip_prefix or path, not both", None);
    }
    if rw.strip_prefix {
        match &m.path {
            Some(PathRule::Prefix(p)) => {
                rewrite = PathRewrite::StripPrefix(if p == "/" { 0 } else { p.len() })
            }
            Some(_) => cx.error(
                &format!("{rp}.strip_prefix"),
                "strip_prefix needs a prefix match",
                Some("for patterns, use rewrite.path with parameters".into()),
            ),
            None => {}
        }
    }
    if let Some(t) = &rw.path {
        match PathRewrite::template(t, m.pattern.as_ref()) {
            Ok(pr) => rewrite = pr,
            Err(e) => cx.error(&format!("{rp}.path"), e, None),
        }
    }
    if let Some(h) = &rw.host {
        match http::HeaderValue::from_str(h) {
            Ok(v) if !h.is_empty() => host = Some(v),
            _ => cx.error(&format!("{rp}.host"), format!("invalid host \"{h}\""), None),
        }
    }
    (rewrite, host)
}

/// `upstream:` by name.
fn upstream_of(cx: &mut Cx, base: &str, name: &str, inp: &RouteInputs<'_>) -> Option<u32> {
    if let Some(&u) = inp.up_index.get(name) {
        return Some(u);
    }
    if !inp.broken.upstreams {
        cx.error(
            &format!("{base}.upstream"),
            format!("unknown upstream \"{name}\""),
            did_you_mean(name, inp.up_index.keys().copied())
                .or_else(|| Some("define it under upstreams:".into())),
        );
    }
    None
}

/// The policy chain: global, then upstream, then route policies; the most specific jwt policy wins,
/// rate limits are all applied (once each per scope).
fn chain(
    cx: &mut Cx,
    base: &str,
    r: &crate::config::RouteConfig,
    upstream: Option<u32>,
    up: Option<&UpPlan>,
    route_id: u32,
    inp: &RouteInputs<'_>,
) -> (Option<crate::plan::AuthId>, Vec<LimitRef>) {
    let pols = inp.pols;
    let own = resolve_refs(
        cx,
        &Lazy(base, ".policies"),
        &r.policies,
        inp.policy_index,
        pols,
        inp.broken,
    );
    let up_pols: &[PolicyHandle] = up.map_or(&[], |u| &u.policies);
    let mut auth = None;
    let mut auth_from_route = 0;
    let mut limits = Vec::new();
    for (src, list) in [
        ("global", inp.global),
        ("upstream", up_pols),
        ("route", &own[..]),
    ] {
        for h in list {
            match *h {
                PolicyHandle::Auth(a) => {
                    if src == "route" {
                        auth_from_route += 1;
                    }
                    auth = Some(a); // the most specific level wins
                }
                PolicyHandle::Limit(l) => {
                    let scope_id = match pols
                        .limits
                        .get(l as usize)
                        .and_then(Option::as_ref)
                        .map(|p| p.scope)
                    {
                        Some(RateScope::Upstream) => upstream.unwrap_or(0),
                        Some(RateScope::Route) => route_id,
                        _ => 0,
                    };
                    let lr = LimitRef { limit: l, scope_id };
                    if !limits.contains(&lr) {
                        limits.push(lr);
                    }
                }
            }
        }
    }
    if auth_from_route > 1 {
        cx.error(
            &format!("{base}.policies"),
            "a route can use only one jwt policy",
            None,
        );
    }
    if auth.is_none() {
        for l in &limits {
            if pols
                .limit_uses_jwt
                .get(l.limit as usize)
                .copied()
                .unwrap_or(false)
            {
                let name = pols.limits[l.limit as usize]
                    .as_ref()
                    .map(|p| p.name.to_string())
                    .unwrap_or_default();
                cx.warning(&format!("{base}.policies"), format!("rate limit \"{name}\" is keyed by a JWT claim without fallback, but this route has no jwt policy"), Some("all its requests share one \"anonymous\" counter; add fallback: client_ip".into()));
            }
        }
    }
    limits.shrink_to_fit();
    (auth, limits)
}

/// The route's breaker fallback (its own, else its upstream's). A route's fallback upstream must not
/// be the route's own upstream (it would be the open circuit itself).
fn route_fallback(
    cx: &mut Cx,
    base: &str,
    r: &crate::config::RouteConfig,
    upstream: Option<u32>,
    up: Option<&UpPlan>,
    inp: &RouteInputs<'_>,
) -> Option<FallbackPlan> {
    let fp = || format!("{base}.fallback");
    let own = r
        .fallback
        .as_ref()
        .and_then(|f| fallback(cx, &fp(), f, inp.up_index, inp.broken));
    if let (Some(FallbackPlan::Upstream(f)), Some(u)) = (&own, upstream) {
        if *f == u {
            cx.error(
                &format!("{}.upstream", fp()),
                format!(
                    "the fallback upstream \"{}\" is this route's own upstream",
                    r.upstream
                ),
                Some("when its breaker is open the fallback must go elsewhere: name another upstream or a static response".into()),
            );
        }
    }
    if r.fallback.is_some() && up.is_some_and(|u| u.plan.breaker.is_none()) {
        cx.warning(
            &fp(),
            format!(
                "upstream \"{}\" has no circuit_breaker, so this fallback is never used",
                r.upstream
            ),
            None,
        );
    }
    own.or_else(|| {
        up.and_then(|u| u.plan.breaker.as_ref())
            .and_then(|b| b.fallback.clone())
    })
}

/// A configured path must already be in normal form, or it could never match a normalised request.
fn check_clean(cx: &mut Cx, path: impl FnOnce() -> String, p: &str) -> Option<String> {
    match normalize_path(p) {
        Ok(n) if n == p => Some(p.to_string()),
        Ok(n) => {
            cx.error(
                &path(),
                format!("path \"{p}\" is not in normal form"),
                Some(format!("write \"{n}\"")),
            );
            None
        }
        Err(e) => {
            cx.error(
                &path(),
                format!("invalid path \"{p}\": {}", e.message()),
                None,
            );
            None
        }
    }
}

/// Identical routes are errors; routes that another route always beats are warnings.
fn conflicts(cx: &mut Cx, router: &Router, plans: &[RoutePlan], origin: &[u32]) {
    let rules = router.rules();
    let mut buckets: HashMap<&PathRule, Vec<usize>> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        buckets.entry(&r.path).or_default().push(i);
    }
    for ids in buckets.values() {
        for (x, &a) in ids.iter().enumerate() {
            for &b in &ids[x + 1..] {
                let (ra, rb) = (&rules[a], &rules[b]);
                let (pa, pb) = (
                    format!("routes[{}].match", origin[a]),
                    format!("routes[{}].match", origin[b]),
                );
                if ra.same_as(rb) {
                    let line = cx.spans.value(&pa).line;
                    cx.error(&pb, format!("route \"{}\" matches exactly the same requests as route \"{}\" (line {line})", plans[b].name, plans[a].name), Some("give one of them a host, method or header condition, or remove it".into()));
                    continue;
                }
                // the one with the better rank wins wherever both match
                let (win, lose) = if router.rank(a as u32) < router.rank(b as u32) {
                    (a, b)
                } else {
                    (b, a)
                };
                if rules[win].covers(&rules[lose]) {
                    let line = cx
                        .spans
                        .value(&format!("routes[{}].match", origin[win]))
                        .line;
                    cx.warning(
                        &format!("routes[{}].match", origin[lose]),
                        format!(
                            "route \"{}\" can never match: route \"{}\" (line {line}) always wins",
                            plans[lose].name, plans[win].name
                        ),
                        None,
                    );
                }
            }
        }
    }
}

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

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

#[allow(clippy::too_many_arguments)]
pub(crate) fn routes(
    cfg: &Config,
    up_index: &HashMap<&str, u32>,
    policy_index: &HashMap<&str, u32>,
    pols: &Policies,
    ups: &[Option<UpPlan>],
    global: &[PolicyHandle],
    broken: Broken,
    cx: &mut Cx,
) -> (Vec<RoutePlan>, Router) {
    super::index_names(
        cx,
        "routes",
        cfg.routes
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.as_ref().map(|r| r.name.as_str()))),
    );
    let mut rules: Vec<RouteRule> = Vec::new();
    let mut plans: Vec<RoutePlan> = Vec::new();
    // config index of each compiled route, for positions in conflict messages
    let mut origin: Vec<usize> = Vec::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let Some(r) = r else { continue };
        let base = format!("routes[{i}]");
        let m = &r.matcher;
        let mp = format!("{base}.match");
        let given = [m.path.is_some(), m.prefix.is_some(), m.pattern.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given != 1 {
            cx.error(
                &mp,
                if given == 0 {
                    "a route needs one of path, prefix or pattern"
                } else {
                    "use only one of path, prefix or pattern"
                },
                Some("prefix: /api/user takes /api/user and everything below it".into()),
            );
        }
        let mut pattern: Option<Pattern> = None;
        let path_rule = if let Some(p) = &m.path {
            check_clean(cx, &format!("{mp}.path"), p).map(PathRule::Exact)
        } else if let Some(p) = &m.prefix {
            check_clean(cx, &format!("{mp}.prefix"), p).map(|p| {
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
        let mut methods = Vec::new();
        for (k, meth) in m.methods.iter().enumerate() {
            if METHODS.contains(&meth.as_str()) {
                methods
                    .push(http::Method::from_bytes(meth.as_bytes()).unwrap_or(http::Method::GET));
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
        let mut headers = Vec::new();
        for (name, value) in &m.headers {
            let hp = format!("{mp}.headers.{name}");
            let n = http::HeaderName::from_bytes(name.as_bytes());
            let v = if value == "*" {
                Ok(None)
            } else {
                http::HeaderValue::from_str(value).map(Some)
            };
            match (n, v) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                (Err(_), _) => {
                    cx.error_at_key(&hp, format!("invalid header name \"{name}\""), None)
                }
                (_, Err(_)) => cx.error(&hp, format!("invalid header value for \"{name}\""), None),
            }
        }
        // rewrite
        let mut rewrite = PathRewrite::Keep;
        let mut host = None;
        if let Some(rw) = &r.rewrite {
            let rp = format!("{base}.rewrite");
            if rw.strip_prefix && rw.path.is_some() {
                cx.error(&rp, "use strip_prefix or path, not both", None);
            }
            if rw.strip_prefix {
                match &path_rule {
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
                match PathRewrite::template(t, pattern.as_ref()) {
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
        }
        // upstream
        let upstream = match up_index.get(r.upstream.as_str()) {
            Some(&u) => Some(u),
            None => {
                if !broken.upstreams {
                    cx.error(
                        &format!("{base}.upstream"),
                        format!("unknown upstream \"{}\"", r.upstream),
                        did_you_mean(&r.upstream, up_index.keys().copied())
                            .or_else(|| Some("define it under upstreams:".into())),
                    );
                }
                None
            }
        };
        let up = upstream
            .and_then(|u| ups.get(u as usize))
            .and_then(Option::as_ref);
        let inherit = up.map_or(crate::plan::Timeouts::DEFAULT, |u| u.plan.timeouts);
        let t = timeouts(cx, &format!("{base}.timeouts"), &r.timeouts, inherit);
        if let Some(m) = r.max_body_size {
            if m.0 == 0 {
                cx.error(
                    &format!("{base}.max_body_size"),
                    "must be greater than zero",
                    None,
                );
            }
        }
        // policy chain: global, then upstream, then route
        let own = resolve_refs(
            cx,
            &format!("{base}.policies"),
            &r.policies,
            policy_index,
            pols,
            broken,
        );
        let up_pols: &[PolicyHandle] = up.map_or(&[], |u| &u.policies);
        let mut auth = None;
        let mut auth_from_route = 0;
        let mut limits = Vec::new();
        let route_id = plans.len() as u32;
        for (src, list) in [
            ("global", global),
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
        let fb = r
            .fallback
            .as_ref()
            .and_then(|f| fallback(cx, &format!("{base}.fallback"), f, up_index, broken));
        let fb: Option<FallbackPlan> = fb.or_else(|| {
            up.and_then(|u| u.plan.breaker.as_ref())
                .and_then(|b| b.fallback.clone())
        });
        if r.fallback.is_some() && up.is_some_and(|u| u.plan.breaker.is_none()) {
            cx.warning(
                &format!("{base}.fallback"),
                format!(
                    "upstream \"{}\" has no circuit_breaker, so this fallback is never used",
                    r.upstream
                ),
                None,
            );
        }
        let (Some(path_rule), Some(upstream)) = (path_rule, upstream) else {
            continue;
        };
        rules.push(RouteRule {
            path: path_rule,
            hosts,
            methods,
            headers,
        });
        origin.push(i);
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
    conflicts(cx, &rules, &plans, &origin);
    (plans, Router::new(rules))
}

/// A configured path must already be in normal form, or it could never match a normalised request.
fn check_clean(cx: &mut Cx, path: &str, p: &str) -> Option<String> {
    match normalize_path(p) {
        Ok(n) if n == p => Some(p.to_string()),
        Ok(n) => {
            cx.error(
                path,
                format!("path \"{p}\" is not in normal form"),
                Some(format!("write \"{n}\"")),
            );
            None
        }
        Err(e) => {
            cx.error(path, format!("invalid path \"{p}\": {}", e.message()), None);
            None
        }
    }
}

/// Identical routes are errors; routes that another route always beats are warnings.
fn conflicts(cx: &mut Cx, rules: &[RouteRule], plans: &[RoutePlan], origin: &[usize]) {
    let router = Router::new(rules.to_vec());
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

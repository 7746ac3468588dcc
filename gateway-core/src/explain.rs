//! Offline explanation of what the gateway would do with one request (`gw dry-run`): the matched route and
//! why, or the nearest candidates and why each failed; the rewritten upstream path and Host; the upstream
//! and its endpoints; every policy in chain order with what it would evaluate; and the outcome.
use crate::plan::{
    AccessLogSpec, BreakerPlan, FallbackPlan, Plan, RateBackend, RateKey, RateMode, RateScope,
    RoutePlan, UpstreamPlan,
};
use crate::policy::auth::{AuthMode, MatchMode};
use crate::routing::{normalize_with, MatchOutcome, PathRule, RequestView, RouteRule};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Serialize;

/// The request to explain.
pub struct DryRunRequest {
    /// The request method, e.g. `GET`.
    pub method: String,
    /// Path with optional query string.
    pub target: String,
    /// Request headers (name, value).
    pub headers: Vec<(String, String)>,
    /// The client's address (as the peer the gateway sees).
    pub client_ip: std::net::IpAddr,
}

#[derive(Serialize, Debug)]
/// What `gw dry-run` reports for one request.
pub struct Explanation {
    /// The request as the gateway reads it.
    pub request: RequestSummary,
    /// The matched route's name, or null.
    pub route: Option<String>,
    /// Why each route did or did not match, in order.
    pub why: Vec<String>,
    /// When no route matched: the closest routes and why each did not match.
    pub candidates: Vec<Candidate>,
    /// The upstream the request would go to.
    pub upstream: Option<UpstreamSummary>,
    /// The path (and query) sent upstream after the rewrite.
    pub upstream_path: Option<String>,
    /// The `Host` sent upstream.
    pub upstream_host: Option<String>,
    /// In chain order.
    pub policies: Vec<PolicyStep>,
    /// The answer: proxied, or the status of a local answer.
    pub outcome: Outcome,
}

#[derive(Serialize, Debug)]
/// The request as the gateway reads it.
pub struct RequestSummary {
    /// The method.
    pub method: String,
    /// The path as sent.
    pub path: String,
    /// The path after normalisation (`None`: refused as malformed).
    pub normalized_path: Option<String>,
    /// The query string, without `?`.
    pub query: Option<String>,
    /// The host name from `Host` or the URI.
    pub host: Option<String>,
    /// The client IP the policies use.
    pub client_ip: String,
}

#[derive(Serialize, Debug)]
/// A route considered for the request.
pub struct Candidate {
    /// The route's name.
    pub route: String,
    /// Why it matched or not.
    pub reasons: Vec<String>,
}

#[derive(Serialize, Debug)]
/// The upstream a route sends to.
pub struct UpstreamSummary {
    /// Its name.
    pub name: String,
    /// Its load-balancing algorithm.
    pub load_balancing: String,
    /// Its endpoints (`address (weight)`).
    pub endpoints: Vec<String>,
    /// Its active health check, described.
    pub health_check: Option<String>,
    /// Its timeouts, described.
    pub timeouts: String,
    /// Its circuit breaker, described.
    pub circuit_breaker: Option<String>,
}

#[derive(Serialize, Debug)]
/// One policy the request goes through.
pub struct PolicyStep {
    /// When it runs (`auth`, `rate_limit`, ...).
    pub phase: String,
    /// The policy's name.
    pub name: String,
    /// Its type.
    pub kind: String,
    /// What it does for this request.
    pub detail: String,
}

#[derive(Serialize, Debug)]
/// How the request would be answered.
pub struct Outcome {
    /// `proxy` or `respond`.
    pub action: String,
    /// The local response's status when `action` is `respond`.
    pub status: Option<u16>,
    /// Why.
    pub reason: String,
}

fn respond(status: u16, reason: impl Into<String>) -> Outcome {
    Outcome {
        action: "respond".into(),
        status: Some(status),
        reason: reason.into(),
    }
}

/// Explains how `plan` would handle `req`, without network I/O.
pub fn explain(plan: &Plan, req: &DryRunRequest) -> Explanation {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (req.target.clone(), None),
    };
    let headers = request_headers(req);
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        // the same host extraction as serving (`[::1]:8080` → `::1`)
        .map(|h| crate::proxy::steps::route::strip_port(h).to_ascii_lowercase());
    // the server's path policy, as serving applies it
    let normalized = normalize_with(&plan.server.path_policy, &path).map(|p| p.into_owned());
    let mut ex = Explanation {
        request: RequestSummary {
            method: req.method.clone(),
            path: path.clone(),
            normalized_path: normalized.as_ref().ok().cloned(),
            query: query.clone(),
            host: host.clone(),
            client_ip: req.client_ip.to_string(),
        },
        route: None,
        why: vec![],
        candidates: vec![],
        upstream: None,
        upstream_path: None,
        upstream_host: None,
        policies: vec![
            PolicyStep { phase: "request_id".into(), name: "request-id".into(), kind: "builtin".into(), detail: "keep a sane X-Request-Id from the client, else generate one; sent upstream and echoed".into() },
            PolicyStep { phase: "access_log".into(), name: "access-log".into(), kind: "builtin".into(), detail: describe_access_log(&plan.access_log) },
        ],
        outcome: respond(404, "no route matched"),
    };
    let npath = match normalized {
        Ok(p) => p,
        Err(e) => {
            ex.outcome = respond(400, e.message());
            return ex;
        }
    };
    let Ok(method) = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes()) else {
        ex.outcome = respond(400, "invalid method");
        return ex;
    };
    let view = RequestView {
        method: &method,
        path: &npath,
        host: host.as_deref(),
        headers: &headers,
    };
    let Some((route_id, captures)) = find_route(plan, &view, &mut ex) else {
        return ex;
    };
    let route = &plan.routes[route_id as usize];
    let rule = &plan.router.rules()[route_id as usize];
    ex.route = Some(route.name.to_string());
    ex.why = why(rule, &npath, &captures);
    let mut up_path = String::new();
    route.rewrite.apply(&npath, &captures, &mut up_path);
    if let Some(q) = &query {
        up_path.push('?');
        up_path.push_str(q);
    }
    ex.upstream_path = Some(up_path);
    ex.upstream_host = route
        .host
        .as_ref()
        .and_then(|h| h.to_str().ok().map(str::to_string))
        .or_else(|| {
            host.clone()
                .map(|h| format!("{h} (the client's Host, kept)"))
        });
    let up = plan.upstream(route.upstream);
    ex.upstream = Some(upstream_summary(up, route));
    ex.policies.push(PolicyStep {
        phase: "route_match".into(),
        name: route.name.to_string(),
        kind: "route".into(),
        detail: format!("{} → upstream {}", rule.path.describe(), up.name),
    });
    let identity_known = auth_step(plan, route, &headers, &mut ex);
    limit_steps(plan, route, req, &headers, identity_known, &mut ex);
    if let Some(b) = &up.breaker {
        ex.policies.push(breaker_step(plan, route, up, b));
    }
    ex.policies.push(proxy_step(up));
    if ex.outcome.status != Some(401) {
        ex.outcome = Outcome {
            action: "proxy".into(),
            status: None,
            reason: format!(
                "forward to {} as {}",
                up.name,
                ex.upstream_path.clone().unwrap_or_default()
            ),
        };
    }
    ex
}

/// The request's headers as given (unparseable ones are left out).
fn request_headers(req: &DryRunRequest) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in &req.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.trim().as_bytes()),
            HeaderValue::from_str(v.trim()),
        ) {
            headers.append(k, v);
        }
    }
    headers
}

/// The matched route, or `None` with the outcome (404/405) and the nearest candidates set.
fn find_route(
    plan: &Plan,
    view: &RequestView<'_>,
    ex: &mut Explanation,
) -> Option<(u32, crate::routing::Captures)> {
    match plan.router.find(view) {
        MatchOutcome::Found { route, captures } => Some((route, captures)),
        MatchOutcome::MethodNotAllowed { allowed } => {
            let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            ex.candidates = candidates(plan, view);
            ex.outcome = respond(
                405,
                format!(
                    "a route matches the path but not {}; allowed: {}",
                    view.method,
                    list.join(", ")
                ),
            );
            None
        }
        MatchOutcome::NotFound => {
            ex.candidates = candidates(plan, view);
            None
        }
    }
}

/// The upstream as the route sees it (timeouts are the route's).
fn upstream_summary(up: &UpstreamPlan, route: &RoutePlan) -> UpstreamSummary {
    UpstreamSummary {
        name: up.name.to_string(),
        load_balancing: up.load_balancing.dsl_name().into(),
        endpoints: up
            .endpoints
            .iter()
            .map(|e| format!("{} (weight {})", e.address, e.weight))
            .collect(),
        health_check: up.health_check.as_ref().map(|h| {
            format!(
                "GET {} every {:?}, timeout {:?}, expect {:?}",
                h.path, h.interval, h.timeout, h.expected_status
            )
        }),
        timeouts: format!(
            "connect {:?}, read {:?}, write {:?}, whole request {}",
            route.timeouts.connect,
            route.timeouts.read,
            route.timeouts.write,
            route
                .timeouts
                .request
                .map_or("unbounded".to_string(), |d| format!("{d:?}"))
        ),
        circuit_breaker: up.breaker.as_ref().map(|b| {
            format!(
                "open after {} consecutive failures for {:?}; close after {} successes",
                b.failure_threshold, b.open_duration, b.success_threshold
            )
        }),
    }
}

/// The route's jwt policy, if any; whether a token was given (so an identity may be known).
fn auth_step(plan: &Plan, route: &RoutePlan, headers: &HeaderMap, ex: &mut Explanation) -> bool {
    let Some(a) = route.auth else {
        return false;
    };
    let auth = &plan.auths[a as usize];
    let algs = auth
        .settings
        .algorithms
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let required = auth.route.mode == AuthMode::Required;
    let mode = if required { "required" } else { "optional" };
    let mut detail = format!("{mode} bearer token, algorithms {algs}");
    for r in &auth.route.require {
        let how = match r.match_mode {
            MatchMode::AnyOf => "any",
            MatchMode::AllOf => "all",
        };
        detail.push_str(&format!(
            "; claim {} must contain {how} of [{}]",
            r.claim,
            r.values.join(", ")
        ));
    }
    let has_token = headers.get(http::header::AUTHORIZATION).is_some();
    detail.push_str(if has_token {
        "; a token was given: it would be verified"
    } else {
        "; no Authorization header given"
    });
    ex.policies.push(PolicyStep {
        phase: "auth".into(),
        name: auth.name.to_string(),
        kind: "jwt".into(),
        detail,
    });
    if !has_token && required {
        ex.outcome = respond(
            401,
            format!(
                "policy {} requires a bearer token (WWW-Authenticate: Bearer realm=\"{}\")",
                auth.name, auth.settings.realm
            ),
        );
    }
    has_token
}

/// The route's rate limits, in chain order.
fn limit_steps(
    plan: &Plan,
    route: &RoutePlan,
    req: &DryRunRequest,
    headers: &HeaderMap,
    identity_known: bool,
    ex: &mut Explanation,
) {
    for l in &route.limits {
        let p = &plan.rate_limits[l.limit as usize];
        let scope = match p.scope {
            RateScope::Global => "global".to_string(),
            RateScope::Upstream => format!("upstream {}", plan.upstreams[l.scope_id as usize].name),
            RateScope::Route => format!("route {}", plan.routes[l.scope_id as usize].name),
        };
        let store = match (p.backend, &plan.rate_limit_redis) {
            (RateBackend::Redis, Some(r)) => format!(
                "redis {} (on error: {})",
                redact(&r.url),
                p.on_store_error.as_str()
            ),
            _ => "local".to_string(),
        };
        let key = describe_key(&p.key, req, headers, identity_known, &route.name);
        ex.policies.push(PolicyStep {
            phase: "rate_limit".into(),
            name: p.name.to_string(),
            kind: "rate_limit".into(),
            detail: format!(
                "{} requests per {:?} sliding window, key {key}, scope {scope}, store {store}, mode {}",
                p.max,
                p.window,
                if p.mode == RateMode::Shadow { "shadow" } else { "enforce" }
            ),
        });
    }
}

/// The upstream's circuit breaker and what happens when it is open.
fn breaker_step(plan: &Plan, route: &RoutePlan, up: &UpstreamPlan, b: &BreakerPlan) -> PolicyStep {
    let fb = match &route.fallback {
        Some(FallbackPlan::Static { status, .. }) => format!("static {status} response"),
        Some(FallbackPlan::Upstream(u)) => {
            format!("upstream {}", plan.upstreams[*u as usize].name)
        }
        None => "503 with Retry-After".into(),
    };
    PolicyStep {
        phase: "circuit_breaker".into(),
        name: up.name.to_string(),
        kind: "circuit_breaker".into(),
        detail: format!(
            "opens after {} consecutive failures (statuses {:?}); when open: {fb}",
            b.failure_threshold, b.failure_statuses
        ),
    }
}

/// The endpoint pick and retries.
fn proxy_step(up: &UpstreamPlan) -> PolicyStep {
    PolicyStep {
        phase: "proxy".into(),
        name: up.name.to_string(),
        kind: "proxy".into(),
        detail: format!(
            "{} over {} endpoint(s){}, {} retry(ies) on connect failure",
            up.load_balancing.dsl_name(),
            up.endpoints.len(),
            up.discovery
                .as_ref()
                .map_or(String::new(), |d| format!(" + those from {}", d.describe())),
            up.retries
        ),
    }
}

fn redact(url: &str) -> String {
    // never print a password embedded in a URL
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

fn describe_access_log(a: &AccessLogSpec) -> String {
    match a {
        AccessLogSpec::Off => "off".into(),
        AccessLogSpec::Stdout => "stdout".into(),
        AccessLogSpec::File(p) => format!("file {}", p.display()),
    }
}

fn describe_key(
    k: &RateKey,
    req: &DryRunRequest,
    headers: &HeaderMap,
    identity: bool,
    route: &str,
) -> String {
    match k {
        RateKey::ClientIp => format!("client IP {}", req.client_ip),
        RateKey::JwtClaim { claim, fallback } => {
            let claim = claim.as_str();
            let fb = if fallback.is_some() {
                format!("client IP {}", req.client_ip)
            } else {
                "the shared key \"anonymous\"".into()
            };
            if identity {
                format!("JWT claim {claim} of the verified token (without it: {fb})")
            } else {
                format!("{fb} (JWT claim {claim} when a token is present)")
            }
        }
        RateKey::Header { name, .. } => match headers.get(name).and_then(|v| v.to_str().ok()) {
            Some(v) => format!("header {name} = {v:?}"),
            None => format!("header {name} (absent)"),
        },
        RateKey::Route => format!("route {route}"),
        RateKey::Composite(parts) => parts
            .iter()
            .map(|p| describe_key(p, req, headers, identity, route))
            .collect::<Vec<_>>()
            .join(" + "),
    }
}

fn why(rule: &RouteRule, path: &str, captures: &crate::routing::Captures) -> Vec<String> {
    let mut w = vec![match &rule.path {
        PathRule::Exact(p) => format!("path is exactly {p}"),
        PathRule::Prefix(p) => format!("path {path} is under prefix {p}"),
        PathRule::Pattern(p) => {
            let names: Vec<&str> = p.param_names().collect();
            let caps: Vec<String> = names
                .iter()
                .zip(captures.iter())
                .map(|(n, &(s, e))| format!("{n}={}", &path[s as usize..e as usize]))
                .collect();
            format!("path matches pattern {p} ({})", caps.join(", "))
        }
    }];
    if !rule.hosts.is_empty() {
        w.push(format!(
            "host is one of {}",
            rule.hosts
                .iter()
                .map(|h| h.describe())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !rule.methods.is_empty() {
        w.push(format!(
            "method is one of {}",
            rule.methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (n, v) in &rule.headers {
        w.push(match v {
            Some(v) => format!("header {n} = {}", v.to_str().unwrap_or("?")),
            None => format!("header {n} is present"),
        });
    }
    w
}

/// The routes closest to matching, with every reason each one fails (slow path: offline only).
fn candidates(plan: &Plan, req: &RequestView<'_>) -> Vec<Candidate> {
    let mut scored: Vec<(usize, Candidate)> = Vec::new();
    for (i, rule) in plan.router.rules().iter().enumerate() {
        let mut reasons = Vec::new();
        let path_ok = match &rule.path {
            PathRule::Exact(p) => p == req.path,
            PathRule::Prefix(p) => {
                p == "/"
                    || req.path == p
                    || req
                        .path
                        .strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            }
            PathRule::Pattern(_) => {
                let single = crate::routing::Router::new(vec![RouteRule {
                    path: rule.path.clone(),
                    hosts: vec![],
                    methods: vec![],
                    headers: vec![],
                }]);
                matches!(
                    single.find(&RequestView {
                        method: req.method,
                        path: req.path,
                        host: None,
                        headers: req.headers
                    }),
                    MatchOutcome::Found { .. }
                )
            }
        };
        if !path_ok {
            reasons.push(format!(
                "{} does not match {}",
                rule.path.describe(),
                req.path
            ));
        }
        if !rule.hosts.is_empty()
            && !req.host.is_some_and(|h| {
                let single = crate::routing::Router::new(vec![RouteRule {
                    path: PathRule::Prefix("/".into()),
                    hosts: rule.hosts.clone(),
                    methods: vec![],
                    headers: vec![],
                }]);
                matches!(
                    single.find(&RequestView {
                        method: req.method,
                        path: "/",
                        host: Some(h),
                        headers: req.headers
                    }),
                    MatchOutcome::Found { .. }
                )
            })
        {
            reasons.push(format!(
                "host {} is not one of {}",
                req.host.unwrap_or("(none)"),
                rule.hosts
                    .iter()
                    .map(|h| h.describe())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !rule.methods.is_empty() && !rule.methods.contains(req.method) {
            reasons.push(format!(
                "method {} is not one of {}",
                req.method,
                rule.methods
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for (n, v) in &rule.headers {
            match (req.headers.get(n), v) {
                (None, _) => reasons.push(format!("header {n} is missing")),
                (Some(got), Some(want)) if got != want => reasons.push(format!(
                    "header {n} is not {}",
                    want.to_str().unwrap_or("?")
                )),
                _ => {}
            }
        }
        // closeness: fewer failed conditions first, then longer shared path start
        let shared = common_prefix(&rule.path, req.path);
        scored.push((
            reasons.len() * 10_000 + (1000 - shared.min(999)),
            Candidate {
                route: plan.routes[i].name.to_string(),
                reasons,
            },
        ));
    }
    scored.sort_by_key(|(s, _)| *s);
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

fn common_prefix(rule: &PathRule, path: &str) -> usize {
    let p = match rule {
        PathRule::Exact(p) | PathRule::Prefix(p) => p.clone(),
        PathRule::Pattern(p) => p.to_string(),
    };
    p.bytes()
        .zip(path.bytes())
        .take_while(|(a, b)| a == b)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::steps::route::tests::{plan, YAML};

    fn dry(p: &Plan, method: &str, target: &str, host: &str) -> Explanation {
        explain(
            p,
            &DryRunRequest {
                method: method.into(),
                target: target.into(),
                headers: vec![("host".into(), host.into())],
                client_ip: "127.0.0.1".parse().unwrap(),
            },
        )
    }

    #[test]
    fn dry_run_and_serve_agree_on_ipv6_hosts() {
        let p = plan(YAML);
        for (host, want, summary) in [
            ("a.example.com:8080", "named", "a.example.com"),
            ("[::1]:8080", "any", "::1"),
            ("[::1]", "any", "::1"),
        ] {
            let ex = dry(&p, "GET", "/a/x", host);
            let mut req = pingora::http::RequestHeader::build("GET", b"/a/x", None).unwrap();
            req.insert_header("host", host).unwrap();
            let mut out = String::new();
            let served = crate::proxy::steps::route::route(&p, &req, &mut out)
                .ok()
                .map(|r| p.routes[r as usize].name.to_string());
            assert_eq!(ex.route.as_deref(), Some(want), "dry-run for {host}");
            assert_eq!(served.as_deref(), Some(want), "serve for {host}");
            assert_eq!(ex.request.host.as_deref(), Some(summary), "host of {host}");
        }
    }

    #[test]
    fn prints_dsl_names() {
        let p = plan(YAML);
        let ex = dry(&p, "GET", "/a/x", "[::1]");
        assert_eq!(ex.route.as_deref(), Some("any"));
        assert_eq!(ex.upstream.unwrap().load_balancing, "round_robin");
        assert!(ex
            .policies
            .iter()
            .any(|s| s.phase == "proxy" && s.detail.starts_with("round_robin over")));
    }
}

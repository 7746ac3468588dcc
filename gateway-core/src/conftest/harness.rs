//! The offline engine of `gw test`: one request through the same steps `gw serve` runs
//! ([`crate::proxy::steps`]: client IP, route + rewrite, body size, auth, rate limits, forwarded
//! headers), with the real authenticators and the real local rate limiter, on a simulated clock. No
//! network, no upstream: the request "goes upstream" when every step lets it through, and the upstream
//! request head is built exactly as the proxy builds it.
//!
//! Differences from serving, on purpose: Redis-backed limits count locally (the limiter's local
//! semantics, `on_store_error: local` everywhere); circuit breakers are closed; JWKS documents at
//! an http(s) URL are never fetched (a test key must `verify` such a policy).
use super::load::TestFile;
use super::model::{Defaults, RequestSpec};
use super::token::SigningKey;
use crate::error::GwError;
use crate::plan::Plan;
use crate::policy::auth::{AuthSettings, Authenticator, KeySource, Now, PemKeyFile, RoutePolicy};
use crate::policy::rate_limit::from_plan::{specs, write_key, KeyFacts};
use crate::policy::rate_limit::{
    render_headers, Backend, LimitRef, LocalConfig, OnStoreError, RateLimiter, RateLimiterConfig,
};
use crate::proxy::steps;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use serde::Serialize;
use std::net::IpAddr;

/// What happened to one request, as far as a test can see it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observed {
    pub route: Option<String>,
    pub upstream: Option<String>,
    pub upstream_path: Option<String>,
    pub upstream_host: Option<String>,
    /// Status of the gateway's own answer; `None` when the request went upstream.
    pub status: Option<u16>,
    /// Error code of the gateway's own answer.
    pub error: Option<String>,
    /// Configuration policies that ran, in order.
    pub policies: Vec<String>,
    pub limits: Vec<LimitSeen>,
    /// Headers of the request sent upstream (lower-case names).
    pub upstream_headers: Vec<(String, String)>,
    /// Headers the gateway put on its answer (lower-case names).
    pub headers: Vec<(String, String)>,
    /// `accept`, `anonymous`, `none`, or the rejection reason.
    pub auth: String,
    /// When no route matched: the nearest routes and why each fails (from `gw dry-run`'s explanation).
    pub nearest: Vec<String>,
}

/// One rate limit as checked for a request.
#[derive(Debug, Clone, Serialize)]
pub struct LimitSeen {
    pub policy: String,
    pub key: String,
    pub max: u64,
    pub window_ms: u64,
    pub remaining: Option<u64>,
    /// `allowed`, `rejected`, `shadow_rejected` or `skipped`.
    pub outcome: &'static str,
}

/// The plan with its runtime pieces built for offline use.
pub struct Harness<'p> {
    plan: &'p Plan,
    auths: Vec<Authenticator>,
    route_policies: Vec<RoutePolicy>,
    injected: Vec<HeaderName>,
    keys: Vec<SigningKey>,
    rt: tokio::runtime::Runtime,
}

/// A fresh limiter (every case starts with empty counters).
pub struct Limiter {
    limiter: Option<RateLimiter>,
    refs: Vec<LimitRef>,
}

impl<'p> Harness<'p> {
    /// Builds authenticators (with the test keys substituted where a key `verifies` a policy) and
    /// loads the signing keys. `Err`: a message about the test file's keys or the configuration's.
    pub fn new(plan: &'p Plan, t: &TestFile) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let mut auths = Vec::new();
        let mut route_policies = Vec::new();
        let mut injected: Vec<HeaderName> = Vec::new();
        for a in &plan.auths {
            let settings = substituted(&a.settings, &a.name, t)?;
            if let KeySource::Jwks(j) = &settings.keys {
                let l = j.location.to_ascii_lowercase();
                if l.starts_with("http://") || l.starts_with("https://") {
                    return Err(format!(
                        "jwt policy {} fetches its keys from {}; gw test never opens a network connection: declare a test key with `verifies: [{}]`",
                        a.name, j.location, a.name
                    ));
                }
            }
            let auth =
                Authenticator::new(&settings).map_err(|e| format!("jwt policy {}: {e}", a.name))?;
            if let KeySource::Jwks(_) = &settings.keys {
                rt.block_on(auth.refresh_keys())
                    .map_err(|e| format!("jwt policy {}: {e}", a.name))?;
            }
            for h in auth.injected_header_names() {
                if !injected.contains(h) {
                    injected.push(h.clone());
                }
            }
            route_policies.push(
                RoutePolicy::new(&a.route).map_err(|e| format!("jwt policy {}: {e}", a.name))?,
            );
            auths.push(auth);
        }
        let keys = t
            .keys
            .iter()
            .map(|k| SigningKey::load(k, |p| t.resolve(p)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Harness {
            plan,
            auths,
            route_policies,
            injected,
            keys,
            rt,
        })
    }

    /// Empty counters for every rate limit of the plan, all counted locally.
    pub fn limiter(&self) -> Result<Limiter, String> {
        if self.plan.rate_limits.is_empty() {
            return Ok(Limiter {
                limiter: None,
                refs: Vec::new(),
            });
        }
        let local = specs(self.plan)
            .into_iter()
            .map(|mut s| {
                s.backend = Backend::Local;
                s.on_store_error = OnStoreError::Local;
                s
            })
            .collect();
        let limiter = RateLimiter::new(
            local,
            RateLimiterConfig {
                local: LocalConfig::default(),
                redis: None,
            },
        )
        .map_err(|e| e.to_string())?;
        let refs = self
            .plan
            .rate_limits
            .iter()
            .map(|p| limiter.limit_ref(&p.name).ok_or("limit not registered"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Limiter {
            limiter: Some(limiter),
            refs,
        })
    }

    /// Builds the request head of a case (the token signed at `now_ms`), and the connecting address.
    pub fn request(
        &self,
        r: &RequestSpec,
        d: &Defaults,
        now_ms: u64,
    ) -> Result<(RequestHeader, IpAddr), String> {
        let method = r.method.as_deref().or(d.method.as_deref()).unwrap_or("GET");
        let mut req = RequestHeader::build(
            method.to_ascii_uppercase().as_str(),
            r.path.as_bytes(),
            None,
        )
        .map_err(|e| format!("invalid request: {e}"))?;
        let mut headers = d.headers.clone();
        headers.extend(r.headers.clone());
        for (k, v) in headers {
            req.append_header(k.to_ascii_lowercase(), v.as_str())
                .map_err(|e| format!("invalid header {k}: {e}"))?;
        }
        let token = match (&r.jwt, &r.token) {
            (Some(j), _) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.name == j.key)
                    .ok_or_else(|| format!("unknown test key {}", j.key))?;
                Some(key.sign(j, &self.pinned_algorithms(&req), now_ms / 1000)?)
            }
            (None, Some(t)) => Some(t.clone()),
            (None, None) => None,
        };
        if let Some(t) = token {
            req.insert_header(http::header::AUTHORIZATION, format!("Bearer {t}"))
                .map_err(|e| format!("invalid token: {e}"))?;
        }
        let ip = r
            .client_ip
            .or(d.client_ip)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok((req, ip))
    }

    /// The algorithms of the jwt policy of the route this request matches (before the token is
    /// added), else of every jwt policy.
    fn pinned_algorithms(&self, req: &RequestHeader) -> Vec<jsonwebtoken::Algorithm> {
        let mut scratch = String::new();
        let policy = steps::route::route(self.plan, req, &mut scratch)
            .ok()
            .and_then(|r| self.plan.routes[r as usize].auth);
        match policy {
            Some(a) => self.plan.auths[a as usize].settings.algorithms.clone(),
            None => self
                .plan
                .auths
                .iter()
                .flat_map(|a| a.settings.algorithms.iter().copied())
                .collect(),
        }
    }

    /// Sends one request through the chain at simulated time `now_ms`.
    pub fn send(&self, req: &RequestHeader, peer: IpAddr, lim: &Limiter, now_ms: u64) -> Observed {
        let plan = self.plan;
        let mut o = Observed {
            auth: "none".into(),
            ..Observed::default()
        };
        let client_ip = steps::request_id::client_ip(
            Some(peer),
            &req.headers,
            &plan.server.trusted_proxies,
            plan.server.client_ip_header,
        );
        let request_id = steps::request_id::request_id(&req.headers);
        let mut upstream_path = String::new();
        let route_id = match steps::route::route(plan, req, &mut upstream_path) {
            Ok(r) => r,
            Err(e) => {
                o.nearest = explain(plan, req, peer)
                    .candidates
                    .into_iter()
                    .map(|c| format!("{} ({})", c.route, c.reasons.join("; ")))
                    .collect();
                return answer(o, e, Vec::new());
            }
        };
        let route = &plan.routes[route_id as usize];
        let up_name = &plan.upstreams[route.upstream as usize].name;
        o.route = Some(route.name.to_string());
        o.upstream = Some(up_name.to_string());
        o.upstream_path = Some(upstream_path.clone());
        let max_body = route.max_body_size.or(plan.server.max_body_size);
        if let Err(e) = steps::body_limit::check_declared(max_body, &req.headers) {
            return answer(o, e, Vec::new());
        }
        let mut identity = None;
        let mut forward: Vec<(HeaderName, HeaderValue)> = Vec::new();
        if let Some(a) = route.auth {
            let auth = &self.auths[a as usize];
            o.policies.push(plan.auths[a as usize].name.to_string());
            let now = Now {
                unix_secs: now_ms / 1000,
                instant: std::time::Instant::now(),
            };
            let res = self.rt.block_on(auth.authenticate(
                &req.headers,
                req.uri.query(),
                &self.route_policies[a as usize],
                now,
            ));
            match res {
                Ok(Some(id)) => {
                    forward = auth.forward_headers(&id).collect();
                    identity = Some(id);
                    o.auth = "accept".into();
                }
                Ok(None) => o.auth = "anonymous".into(),
                Err(e) => {
                    o.auth = e.reason().as_str().into();
                    return answer(o, GwError::auth(&e), Vec::new());
                }
            }
        }
        let facts = KeyFacts {
            client_ip,
            identity: identity.as_deref(),
            headers: &req.headers,
            route: &route.name,
            upstream: up_name,
        };
        let limit_headers = match self.limits(route, &facts, lim, now_ms, &mut o) {
            Ok(h) => h,
            Err((e, h)) => return answer(o, e, h),
        };
        let mut up = req.clone();
        let original_host = req.headers.get(http::header::HOST);
        let f = steps::forward_headers::Forwarding {
            upstream_path: &upstream_path,
            injected: &self.injected,
            claims: &forward,
            route_host: route.host.as_ref(),
            original_host,
            peer: Some(peer),
            tls: false,
            request_id: &request_id,
        };
        if let Err(e) = steps::forward_headers::apply(&mut up, &f) {
            return answer(o, e, limit_headers);
        }
        o.upstream_host = up
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        o.upstream_headers = header_list(&up.headers);
        o.headers = limit_headers;
        o
    }

    /// The route's rate limits with the plan's keys, checked by the real limiter at `now_ms`. `Ok`: the
    /// answer's rate-limit headers; `Err`: 429 and its headers.
    #[allow(clippy::type_complexity)]
    fn limits(
        &self,
        route: &crate::plan::RoutePlan,
        facts: &KeyFacts<'_>,
        lim: &Limiter,
        now_ms: u64,
        o: &mut Observed,
    ) -> Result<Vec<(String, String)>, (GwError, Vec<(String, String)>)> {
        let Some(limiter) = lim.limiter.as_ref().filter(|_| !route.limits.is_empty()) else {
            return Ok(Vec::new());
        };
        let plan = self.plan;
        let keys: Vec<Vec<u8>> = route
            .limits
            .iter()
            .map(|l| {
                let p = &plan.rate_limits[l.limit as usize];
                let mut k = Vec::new();
                write_key(&p.key, p.scope, facts, &mut k);
                k
            })
            .collect();
        let items: Vec<(LimitRef, &[u8])> = route
            .limits
            .iter()
            .zip(&keys)
            .map(|(l, k)| (lim.refs[l.limit as usize], k.as_slice()))
            .collect();
        // every limit is local here, so the synchronous check always answers
        let Some(d) = limiter.check_all_local(&items, 1, now_ms) else {
            return Ok(Vec::new());
        };
        for ((l, k), rep) in route.limits.iter().zip(&keys).zip(&d.outcomes) {
            let p = &plan.rate_limits[l.limit as usize];
            o.policies.push(p.name.to_string());
            o.limits.push(LimitSeen {
                policy: p.name.to_string(),
                key: String::from_utf8_lossy(k).into_owned(),
                max: p.max,
                window_ms: p.window.as_millis() as u64,
                remaining: rep.stats.map(|s| s.remaining),
                outcome: match rep.outcome {
                    crate::policy::rate_limit::Outcome::Allowed => "allowed",
                    crate::policy::rate_limit::Outcome::Rejected => "rejected",
                    crate::policy::rate_limit::Outcome::ShadowRejected => "shadow_rejected",
                    crate::policy::rate_limit::Outcome::Skipped => "skipped",
                },
            });
        }
        let mut headers: Vec<(String, String)> = render_headers(&d)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        if d.admitted {
            return Ok(headers);
        }
        // as the proxy's limits step: a 429 always carries Retry-After
        if !headers.iter().any(|(k, _)| k == "retry-after") {
            headers.push((
                "retry-after".into(),
                d.retry_after_secs.unwrap_or(1).max(1).to_string(),
            ));
        }
        let name = d
            .rejected_by
            .and_then(|i| route.limits.get(i))
            .map(|l| plan.rate_limits[l.limit as usize].name.to_string())
            .unwrap_or_default();
        Err((GwError::rate_limited(&name), headers))
    }
}

/// `gw dry-run`'s explanation of the same request.
pub fn explain(plan: &Plan, req: &RequestHeader, peer: IpAddr) -> crate::explain::Explanation {
    let target = req
        .uri
        .path_and_query()
        .map_or_else(|| req.uri.path().to_string(), |p| p.as_str().to_string());
    crate::explain::explain(
        plan,
        &crate::explain::DryRunRequest {
            method: req.method.as_str().to_string(),
            target,
            headers: header_list(&req.headers),
            client_ip: peer,
        },
    )
}

/// The configured key source, or the test keys that `verify` this policy.
fn substituted(s: &AuthSettings, policy: &str, t: &TestFile) -> Result<AuthSettings, String> {
    let subs: Vec<_> = t
        .keys
        .iter()
        .filter(|k| k.verifies.iter().any(|v| v == policy))
        .collect();
    let mut out = s.clone();
    match subs.as_slice() {
        [] => {}
        [k] if k.hmac.is_some() => {
            out.keys = KeySource::HmacSecret {
                secret: k.hmac.clone().unwrap_or_default(),
                kid: k.kid.clone(),
            }
        }
        ks if ks.iter().all(|k| k.public_key.is_some()) => {
            out.keys = KeySource::PublicKeyPem {
                files: ks
                    .iter()
                    .map(|k| PemKeyFile {
                        path: t.resolve(k.public_key.as_deref().unwrap_or(std::path::Path::new(""))),
                        kid: k.kid.clone(),
                    })
                    .collect(),
            }
        }
        _ => {
            return Err(format!(
                "jwt policy {policy}: the test keys that verify it must be one HMAC secret or PEM key pairs"
            ))
        }
    }
    Ok(out)
}

/// The gateway's own answer: `e`'s status, code and headers, plus the rate-limit headers.
fn answer(mut o: Observed, e: GwError, limit_headers: Vec<(String, String)>) -> Observed {
    o.status = Some(e.status);
    o.error = Some(e.code.to_string());
    o.headers = limit_headers;
    for (k, v) in &e.headers {
        let k = k.as_str().to_string();
        if !o.headers.iter().any(|(n, _)| *n == k) {
            o.headers
                .push((k, String::from_utf8_lossy(v.as_bytes()).into_owned()));
        }
    }
    o
}

fn header_list(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

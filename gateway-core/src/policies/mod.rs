//! gw's policies inside **your own** Pingora `ProxyHttp`: JWT auth, rate limits and circuit breakers
//! from a gw configuration, called from your `request_filter` / `upstream_peer` / `logging`, with your
//! own routing.
//!
//! A configuration fragment is the gw language ([`crate::compile::compile_policies`]: the same checks
//! and positioned diagnostics as `gw validate`, `listeners` optional). Each **route** of the fragment
//! is a named *guard*: the route's `jwt` policy, its rate limits (plus `global_policies`), its
//! upstream's circuit breaker (and the route's breaker `fallback`), and its `max_body_size`. Your
//! service picks the guard by name; the route's `match` and `rewrite` are not used here.
//!
//! ```yaml
//! upstreams:                      # a breaker per upstream; endpoints name the service you call
//!   - name: orders
//!     endpoints: [{ address: 127.0.0.1:3001 }]
//!     circuit_breaker: { failure_threshold: 3, success_threshold: 1, open_duration: 10s }
//! routes:                         # guards
//!   - { name: orders, match: { prefix: / }, upstream: orders, policies: [user-jwt, per-user] }
//! policies:
//!   - { name: user-jwt, type: jwt, keys: { type: hmac, secret: "${JWT_SECRET}" } }
//!   - { name: per-user, type: rate_limit, window: 1m, max: 100, key: { type: jwt_claim, claim: sub } }
//! ```
//!
//! Per request: [`Policies::check`] (auth → limits → breaker, the same steps as [`crate::proxy::Gateway`])
//! gives a [`Decision`]: [`Decision::Allow`] with a [`Pass`] to keep in your `CTX`, or
//! [`Decision::Respond`] with a ready [`Response`] (status, headers, the gateway's JSON error body).
//! The pass adds the forwarded claim headers upstream ([`Pass::apply_upstream`]) and the rate-limit
//! headers downstream ([`Pass::apply_downstream`]), and [`Pass::report`] records the upstream's
//! [`Outcome`] for the breaker and the metrics.
//!
//! State (rate-limit counters, breakers, JWT key caches, the Redis connection) lives in the same
//! state registry as in the gateway: [`Policies::swap`] applies a new plan and keeps every piece of
//! state whose identity did not change (`docs/state.md`). `examples/embed_policies.rs` is a complete
//! service.
//!
//! Stability: the items of this module are the supported surface for this use; their names and
//! signatures change only with a minor version bump (pre-1.0) and a changelog entry. The types they
//! hand out ([`Plan`], [`Diagnostic`], [`Metrics`]) are the crate's public types.
mod decision;

pub use decision::{Decision, Outcome, Pass, Response};

use crate::compile::compile_policies;
use crate::config::load::EnvLookup;
use crate::diag::Diagnostic;
use crate::error::GwError;
use crate::observability::{HttpMethod, Metrics};
use crate::plan::{FallbackPlan, Plan};
use crate::policy::rate_limit::from_plan::KeyFacts;
use crate::proxy::respond::Answer;
use crate::proxy::runtime::{Runtime, StartError};
use crate::proxy::steps;
use crate::state::Registry;
use arc_swap::ArcSwap;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Why [`Policies::from_yaml`] built nothing.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The fragment does not compile: every diagnostic (errors and warnings, positioned; render each
    /// with [`Diagnostic::render`]).
    #[error("the policies configuration has {} error(s)", .0.iter().filter(|d| d.is_error()).count())]
    Invalid(Vec<Diagnostic>),
    /// The plan compiled but its state could not be built (an endpoint that does not resolve, a
    /// rate-limit store that cannot be created, ...).
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Named guards built from a plan, with their long-lived state and metrics. Cheap to clone (one
/// `Arc`); share one value between your `ProxyHttp` and whatever reloads it.
#[derive(Clone)]
pub struct Policies {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<Runtime>,
    registry: Registry,
    metrics: Metrics,
}

/// A guard of the current plan, by name ([`Policies::guard`]). Holding one across a
/// [`Policies::swap`] is fine: it is looked up by name in the plan each request runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    name: Arc<str>,
}

impl Guard {
    /// The guard's (route's) name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Policies {
    /// Compiles `text` (named `source` in diagnostics; relative files resolve against its folder;
    /// `env` resolves `${VAR}`) with [`compile_policies`] and builds its state. Warnings do not fail
    /// the build; read them with [`Policies::from_plan`] after compiling yourself if you want them.
    pub fn from_yaml(source: &str, text: &str, env: EnvLookup) -> Result<Policies, BuildError> {
        let c = compile_policies(source, text, env);
        match c.plan {
            Some(plan) => Ok(Policies::from_plan(plan)?),
            None => Err(BuildError::Invalid(c.diagnostics)),
        }
    }

    /// Builds the state of a compiled plan (a fragment from [`compile_policies`], or a whole gateway
    /// configuration: its routes are the guards). Binds nothing and opens no connection; call
    /// [`Policies::warm_up`] before serving.
    pub fn from_plan(plan: Plan) -> Result<Policies, StartError> {
        let metrics = Metrics::new().map_err(|e| StartError::Metrics(e.to_string()))?;
        let registry = Registry::new();
        let rt = Runtime::build(Arc::new(plan), &metrics, &registry)?;
        Ok(Policies {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(rt),
                registry,
                metrics,
            }),
        })
    }

    /// Starts background work and waits for it, each part bounded: JWKS fetches (JWT policies with
    /// `jwks` keys), the Redis connection of Redis-backed limits, first health checks of upstreams
    /// that have one. Call it once, inside the Tokio runtime that keeps running while you serve
    /// (e.g. from a Pingora `BackgroundService`). Static keys and local limits work without it.
    pub async fn warm_up(&self) {
        self.runtime().warm_up().await;
    }

    /// Applies a new plan: state whose identity is unchanged (counters, breakers, key caches) carries
    /// over, the new runtime is warmed up and swapped in atomically; requests in flight finish on the
    /// old one. On `Err` nothing changed.
    pub async fn swap(&self, plan: Plan) -> Result<(), StartError> {
        let plan = Arc::new(plan);
        let rt = Runtime::build(plan.clone(), &self.inner.metrics, &self.inner.registry)?;
        rt.warm_up().await;
        self.inner.current.store(Arc::new(rt));
        self.inner.registry.retain_only(&plan);
        self.runtime().prune_series(&self.inner.metrics);
        Ok(())
    }

    /// The guard named `name` (a route of the plan), if the current plan has it.
    pub fn guard(&self, name: &str) -> Option<Guard> {
        let rt = self.runtime();
        let r = rt.plan.routes.iter().find(|r| &*r.name == name)?;
        Some(Guard {
            name: r.name.clone(),
        })
    }

    /// The names of every guard of the current plan, in configuration order.
    pub fn guard_names(&self) -> Vec<String> {
        let rt = self.runtime();
        rt.plan.routes.iter().map(|r| r.name.to_string()).collect()
    }

    /// The metrics registry (`gw_requests_total{route=<guard>}`, `gw_auth_failures_total`,
    /// `gw_ratelimit_decisions_total`, `gw_circuit_breaker_state`, ...).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The metrics in the Prometheus text format (serve it on your own `/metrics`).
    pub fn render_metrics(&self) -> String {
        self.inner.metrics.render()
    }

    fn runtime(&self) -> Arc<Runtime> {
        self.inner.current.load_full()
    }

    /// Runs `guard` for the request of a Pingora `session` (from `request_filter`): the client IP
    /// is the peer, or `X-Forwarded-For` / `Forwarded` from `server.trusted_proxies` only.
    pub async fn check(&self, guard: &Guard, session: &Session) -> Decision {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        self.check_request(guard, session.req_header(), peer).await
    }

    /// Runs `guard` for a request head and the address of the TCP peer it came from (the client
    /// IP is derived like [`Policies::check`] does). In order: the declared body size (413), the
    /// guard's JWT policy (401 / 403), its rate limits (429), its upstream's circuit breaker (the
    /// route's fallback, or 503).
    pub async fn check_request(
        &self,
        guard: &Guard,
        req: &RequestHeader,
        peer: Option<IpAddr>,
    ) -> Decision {
        let start = Instant::now();
        let rt = self.runtime();
        let plan = &rt.plan;
        let request_id = steps::request_id::request_id(&req.headers);
        let method = HttpMethod::from_bytes(req.method.as_str().as_bytes());
        let Some(route_id) = plan.routes.iter().position(|r| r.name == guard.name) else {
            // a swap removed the guard: the embedder's configuration and code disagree
            let e = GwError::internal(format!("no guard named {}", guard.name));
            let resp = Response::error(&e, &request_id, &[], None);
            rt.unrouted.record(method, resp.status(), start.elapsed());
            return Decision::Respond(resp);
        };
        let route = &plan.routes[route_id];
        let rrt = &rt.routes[route_id];
        let reject = |e: GwError, limit_headers: &[_]| {
            let resp = Response::error(&e, &request_id, limit_headers, Some(e.code));
            rrt.metrics.record(method, resp.status(), start.elapsed());
            Decision::Respond(resp)
        };
        let max_body = route.max_body_size.or(plan.server.max_body_size);
        if let Err(e) = steps::body_limit::check_declared(max_body, &req.headers) {
            return reject(e, &[]);
        }
        let mut pass = Pass {
            rt: rt.clone(),
            route: route_id as u32,
            upstream: route.upstream,
            permit: None,
            identity: None,
            forward: Vec::new(),
            limit_headers: Vec::new(),
            request_id: request_id.clone(),
            method,
            start,
        };
        if let (Some(a), Some(policy)) = (route.auth, &rrt.auth_policy) {
            let auth = &rt.auths[a as usize];
            match steps::auth::authenticate(auth, policy, &rrt.auth_metrics, req).await {
                Ok(done) => {
                    pass.identity = done.identity;
                    pass.forward = done.forward;
                }
                Err(e) => return reject(e, &[]),
            }
        }
        let client_ip = steps::request_id::client_ip(
            peer,
            &req.headers,
            &plan.server.trusted_proxies,
            plan.server.client_ip_header,
        );
        let up_name = &plan.upstreams[route.upstream as usize].name;
        let facts = KeyFacts {
            client_ip,
            identity: pass.identity.as_deref(),
            headers: &req.headers,
            route: &route.name,
            upstream: up_name,
        };
        let limited = steps::limits::check(&rt, route, &facts).await;
        if let Err(e) = limited.result {
            return reject(e, &limited.headers);
        }
        pass.limit_headers = limited.headers;
        let breaker = rt.upstreams[route.upstream as usize].breaker.as_ref();
        match steps::breaker::decide(breaker, route.fallback.as_ref(), up_name, Instant::now()) {
            Ok(steps::breaker::Breaker::Proceed(p)) => pass.permit = p,
            Ok(steps::breaker::Breaker::Reroute(u)) => pass.upstream = u,
            Ok(steps::breaker::Breaker::Static(FallbackPlan::Static {
                status,
                headers,
                body,
            })) => {
                let a = Answer::fallback(*status, headers, body.clone());
                let resp = Response::from_answer(a, &request_id, &pass.limit_headers, true, None);
                rrt.metrics.record(method, resp.status(), start.elapsed());
                return Decision::Respond(resp);
            }
            Ok(steps::breaker::Breaker::Static(_)) => {}
            Err(e) => return reject(e, &pass.limit_headers),
        }
        Decision::Allow(pass)
    }
}

#[cfg(test)]
mod tests;

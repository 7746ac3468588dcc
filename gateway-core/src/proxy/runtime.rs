//! Runtime state built from a [`Plan`]: balancers, health, breakers, outlier detectors, authenticators
//! and metric handles, all indexed by the plan's handles. One [`Runtime`] is swapped atomically on reload;
//! a request keeps the one it started with.
use crate::discovery::backends::{combine, Endpoint, Origin};
use crate::discovery::SourceKind;
use crate::observability::{
    AuthMetrics, BreakerMetrics, BreakerState, EndpointMetrics, LiveSeries, Metrics,
    RateLimitMetrics, RouteMetrics,
};
use crate::plan::{BreakerPlan, HashKey, Plan};
use crate::policy::auth::{Authenticator, RoutePolicy};
use crate::policy::breaker::{
    BreakerObserver, BreakerSettings, CircuitBreaker, FailurePolicy, OutlierDetector,
    OutlierSettings, RateTrip, RateWindow, State,
};
use crate::registration::with_registered;
use crate::state::{BreakerId, EndpointSetId, OutlierId, Registry};
use crate::upstream::Balancer;
use http::HeaderName;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the gateway could not start from a plan.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An endpoint's host name does not resolve.
    #[error("upstream {upstream}: cannot resolve endpoint {address}: {reason}")]
    Resolve {
        /// The upstream's name.
        upstream: String,
        /// The endpoint's `host:port`.
        address: String,
        /// The resolver's error.
        reason: String,
    },
    /// A jwt policy cannot be built (bad keys, ...).
    #[error("policy {policy}: {reason}")]
    Auth {
        /// The policy's name.
        policy: String,
        /// What is wrong.
        reason: String,
    },
    /// A listener address cannot be bound.
    #[error("cannot bind {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        reason: String,
    },
    /// The rate limiter cannot be built.
    #[error("rate limits: {0}")]
    RateLimit(String),
    /// The metrics registry cannot be built.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The access log cannot be opened.
    #[error("access log: {0}")]
    AccessLog(String),
    /// `observability.tracing`: the OTLP exporter cannot start.
    #[error("observability.tracing: {0}")]
    Tracing(String),
    /// The admin state file cannot be read.
    #[error("admin.state_file: {0}")]
    StateFile(String),
    /// A listener's TLS settings cannot be loaded.
    #[error("TLS for listener {listener}: {reason}")]
    Tls {
        /// The listener's name.
        listener: String,
        /// What is wrong.
        reason: String,
    },
}

/// An upstream's runtime: state shared through the [`Registry`] (balancer, breaker, outlier detector)
/// and per-runtime settings.
pub struct UpstreamRt {
    /// Every endpoint with its weight and where it comes from, sorted by address.
    pub sources: Vec<Endpoint>,
    /// Whether this runtime built the balancer (a new endpoint set, not yet health-checked).
    pub fresh: bool,
    /// The endpoints, their health and load-balancing state.
    pub balancer: Arc<Balancer>,
    /// Per-endpoint metric handles, by endpoint index.
    pub endpoint_metrics: Vec<EndpointMetrics>,
    /// The upstream's circuit breaker, if configured.
    pub breaker: Option<CircuitBreaker>,
    /// Which outcomes count as failures for the breaker.
    pub failure: FailurePolicy,
    /// Outlier detection, if configured.
    pub outlier: Option<Arc<OutlierDetector>>,
    /// The consistent-hash key, when the algorithm hashes.
    pub hash_key: Option<HashKey>,
}

/// A route's runtime: metric handles and the parsed auth policy.
pub struct RouteRt {
    /// `gw_requests_total` / duration handles of the route.
    pub metrics: RouteMetrics,
    /// The route's auth requirements, if it has a jwt policy.
    pub auth_policy: Option<RoutePolicy>,
    /// `gw_auth_failures_total` handles of the route.
    pub auth_metrics: AuthMetrics,
}

/// Everything a request needs at run time, built from one plan (see the module docs).
pub struct Runtime {
    /// The plan this runtime serves.
    pub plan: Arc<Plan>,
    /// Upstream runtimes, by upstream handle.
    pub upstreams: Vec<UpstreamRt>,
    /// Route runtimes, by route handle.
    pub routes: Vec<RouteRt>,
    /// Authenticators (key sets, token caches), by auth handle.
    pub auths: Vec<Arc<Authenticator>>,
    /// Every header some auth policy injects: stripped from every client request on every route.
    pub injected: Vec<HeaderName>,
    /// Metric handles for requests no route matched.
    pub unrouted: RouteMetrics,
    /// The rate limiter, when the plan has limits.
    pub limits: Option<Arc<crate::policy::rate_limit::from_plan::Limits>>,
    /// Rate-limit metric handles, by limit handle.
    pub limit_metrics: Vec<RateLimitMetrics>,
    /// Per rate limit (plan order): its header texts rendered once (`proxy/steps/limit_headers.rs`).
    pub(crate) limit_texts: Vec<Option<super::steps::limit_headers::LimitTexts>>,
}

struct BreakerMetricsObserver {
    m: BreakerMetrics,
}

fn bstate(s: State) -> BreakerState {
    match s {
        State::Closed => BreakerState::Closed,
        State::HalfOpen => BreakerState::HalfOpen,
        State::Open => BreakerState::Open,
    }
}

impl BreakerObserver for BreakerMetricsObserver {
    fn on_transition(&self, from: State, to: State) {
        self.m.transition(bstate(from), bstate(to));
        self.m.set_state(bstate(to));
    }
    fn on_rejected(&self) {
        self.m.rejected();
    }
}

fn breaker_settings(b: &BreakerPlan) -> BreakerSettings {
    BreakerSettings {
        failure_threshold: b.failure_threshold,
        success_threshold: b.success_threshold,
        open_duration: b.open_duration,
        half_open_max_calls: b.half_open_max_calls,
        rate: b.rate.as_ref().map(|r| RateTrip {
            window: match (r.calls, r.period) {
                (Some(n), _) => RateWindow::Calls(n),
                (None, Some(p)) => RateWindow::Time(p),
                (None, None) => RateWindow::Calls(r.min_calls.max(1)),
            },
            min_calls: r.min_calls,
            failure_rate_percent: r.failure_rate_percent,
            slow_call_rate_percent: r.slow_call_rate_percent,
            slow_call_threshold: r.slow_call_threshold,
        }),
    }
}

fn failure_policy(b: Option<&BreakerPlan>) -> FailurePolicy {
    match b {
        None => FailurePolicy::default(),
        Some(b) => {
            let mut p = FailurePolicy::none()
                .with_connect_errors(b.failure_connect)
                .with_timeouts(b.failure_timeout);
            for s in &b.failure_statuses {
                p = p.with_status(*s);
            }
            p
        }
    }
}

/// Resolves `host:port` (blocking DNS: start-up only).
fn resolve(upstream: &str, address: &str) -> Result<SocketAddr, StartError> {
    address
        .to_socket_addrs()
        .map_err(|e| StartError::Resolve {
            upstream: upstream.into(),
            address: address.into(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| StartError::Resolve {
            upstream: upstream.into(),
            address: address.into(),
            reason: "no address".into(),
        })
}

/// Builds an upstream's balancer for resolved endpoints `eps`, on the upstream's endpoint health
/// registry and per-endpoint counters from the state registry: endpoints that an earlier set of the
/// upstream had keep their health and counters; new ones start healthy (until their first check)
/// with fresh counters.
fn new_balancer(
    u: &crate::plan::UpstreamPlan,
    eps: &[(SocketAddr, u32)],
    metrics: &Metrics,
    registry: &Registry,
) -> Balancer {
    let (health, fresh) = registry.endpoint_health(&u.name, &u.health_check);
    if let (true, Some(hc)) = (fresh, &u.health_check) {
        let (name, m) = (u.name.clone(), metrics.clone());
        let hook: crate::upstream::health::HealthHook = Arc::new(move |addr, healthy| {
            m.endpoint_health_changed(&name, &addr.to_string(), healthy);
            tracing::warn!(upstream = %name, endpoint = %addr, healthy, "endpoint health changed");
        });
        health.set_health_check(crate::upstream::health::http_check(hc, hook));
    }
    let stats: Vec<_> = eps
        .iter()
        .map(|(a, _)| registry.endpoint_stats(&u.name, *a))
        .collect();
    let balancer = Balancer::with_state(&u.load_balancing, eps, &health, &|a| {
        stats
            .iter()
            .find(|s| s.addr == a)
            .cloned()
            .unwrap_or_else(|| Arc::new(crate::upstream::lb::EndpointStats::new(a)))
    });
    for (i, e) in balancer.endpoints.iter().enumerate() {
        metrics
            .endpoint(&u.name, &e.label)
            .set_healthy(balancer.healthy(i));
    }
    balancer
}

fn upstream_rt(
    plan: &Arc<Plan>,
    u: &crate::plan::UpstreamPlan,
    metrics: &Metrics,
    registry: &Registry,
    now: Instant,
) -> Result<UpstreamRt, StartError> {
    let mut eps = Vec::new();
    for e in &u.endpoints {
        let addr =
            registry.static_addr(plan, &u.name, &e.address, || resolve(&u.name, &e.address))?;
        eps.push((addr, e.weight));
    }
    metrics
        .upstream_endpoints(&u.name, "static")
        .set(i64::try_from(eps.len()).unwrap_or(i64::MAX));
    // static endpoints plus the source's last good set plus the registrations (docs/discovery.md)
    let registered = registry.registrations.get(&u.name);
    if !registered.is_empty() || registry.registrations.knows(&u.name) {
        metrics
            .upstream_endpoints(&u.name, "admin")
            .set(i64::try_from(registered.len()).unwrap_or(i64::MAX));
    }
    let sources = match &u.discovery {
        // only static endpoints: in configuration order, as ever
        None if registered.is_empty() => eps
            .iter()
            .map(|&(addr, weight)| Endpoint {
                addr,
                weight,
                origin: Origin::Static,
            })
            .collect(),
        None => with_registered(combine(&eps, None, SourceKind::File), &registered),
        Some(spec) => {
            let found = registry.discovery.current(&u.name);
            with_registered(combine(&eps, found.as_deref(), spec.kind()), &registered)
        }
    };
    eps = sources.iter().map(|e| (e.addr, e.weight)).collect();
    let set = EndpointSetId {
        upstream: u.name.clone(),
        endpoints: eps.clone(),
        load_balancing: u.load_balancing.clone(),
        health_check: u.health_check.clone(),
    };
    // built outside `registry.balancer`, which holds the registry's lock while it builds
    let (balancer, fresh) = match registry.balancer_if_same(&set) {
        Some(b) => (b, false),
        None => {
            let b = new_balancer(u, &eps, metrics, registry);
            registry.balancer(set.clone(), || Ok::<_, StartError>(b))?
        }
    };
    let endpoint_metrics: Vec<EndpointMetrics> = balancer
        .endpoints
        .iter()
        .map(|e| metrics.endpoint(&u.name, &e.label))
        .collect();
    let breaker = u.breaker.as_ref().map(|b| {
        let (breaker, _) = registry.breaker(BreakerId::new(&u.name, b), || {
            let bm = metrics.breaker(&u.name);
            bm.set_state(BreakerState::Closed);
            CircuitBreaker::with_observer(
                u.name.to_string(),
                breaker_settings(b),
                Arc::new(BreakerMetricsObserver { m: bm }),
                now,
            )
        });
        breaker
    });
    let outlier = u.outlier.as_ref().map(|o| {
        let id = OutlierId {
            endpoints: set.clone(),
            settings: *o,
        };
        registry.outlier(id, |previous| match previous {
            // the upstream's endpoint set changed: endpoints it keeps keep their state
            Some((before, detector)) => {
                let was: std::collections::HashMap<SocketAddr, usize> = before
                    .endpoints
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, (a, _))| (*a, i))
                    .collect();
                let from: Vec<Option<usize>> =
                    eps.iter().map(|(a, _)| was.get(a).copied()).collect();
                detector.successor(&from)
            }
            None => OutlierDetector::new(
                eps.len(),
                OutlierSettings {
                    consecutive_failures: o.consecutive_failures,
                    base_ejection: o.base_ejection,
                    max_ejection: o.max_ejection,
                    max_ejected_percent: o.max_ejected_percent,
                },
                now,
            ),
        })
    });
    Ok(UpstreamRt {
        sources,
        fresh,
        balancer,
        endpoint_metrics,
        breaker,
        failure: failure_policy(u.breaker.as_ref()),
        outlier,
        hash_key: u.load_balancing.hash_key().cloned(),
    })
}

impl Runtime {
    /// Deletes the metric series of the routes, policies, breakers, upstream sources and endpoints
    /// this runtime does not have ([`Metrics::retain_series`]), after a new plan was installed.
    /// Call it with the runtime just installed, while holding whatever keeps other runtimes from
    /// being built meanwhile (the reload lock).
    pub fn prune_series(&self, metrics: &Metrics) {
        let plan = &self.plan;
        let live = LiveSeries {
            routes: plan
                .routes
                .iter()
                .map(|r| (&*r.name, &*plan.upstreams[r.upstream as usize].name))
                .collect(),
            policies: plan.rate_limits.iter().map(|l| &*l.name).collect(),
            breakers: plan
                .upstreams
                .iter()
                .filter(|u| u.breaker.is_some())
                .map(|u| &*u.name)
                .collect(),
            upstreams: plan
                .upstreams
                .iter()
                .map(|u| (&*u.name, u.discovery.as_ref().map(|d| d.kind().as_str())))
                .collect(),
            endpoints: self.live_endpoints().collect(),
        };
        metrics.retain_series(&live);
    }

    /// Like [`Runtime::prune_series`] for a runtime rebuilt from the same plan with new endpoint
    /// sets (discovery, registration): only endpoint series can have gone, and the cost does not
    /// grow with the number of routes.
    pub fn prune_endpoint_series(&self, metrics: &Metrics) {
        metrics.retain_endpoints(self.live_endpoints());
    }

    /// `(upstream, endpoint)` of every endpoint of this runtime.
    fn live_endpoints(&self) -> impl Iterator<Item = (&str, &str)> {
        self.plan
            .upstreams
            .iter()
            .zip(&self.upstreams)
            .flat_map(|(p, u)| {
                u.balancer
                    .endpoints
                    .iter()
                    .map(move |e| (&*p.name, &*e.label))
            })
    }

    /// Builds the runtime of `plan`, taking long-lived state (balancers and endpoint health, breakers,
    /// outlier detectors, authenticators, the rate limiter and its Redis client) from `registry` when
    /// its identity is unchanged, and registering what is new (see [`crate::state`]).
    pub fn build(
        plan: Arc<Plan>,
        metrics: &Metrics,
        registry: &Registry,
    ) -> Result<Runtime, StartError> {
        let now = Instant::now();
        let upstreams = plan
            .upstreams
            .iter()
            .map(|u| upstream_rt(&plan, u, metrics, registry, now))
            .collect::<Result<Vec<_>, _>>()?;
        let mut auths = Vec::new();
        let mut injected: Vec<HeaderName> = Vec::new();
        for a in &plan.auths {
            let auth = registry
                .authenticator(&a.settings, || Authenticator::new(&a.settings))
                .map_err(|e| StartError::Auth {
                    policy: a.name.to_string(),
                    reason: e.to_string(),
                })?;
            for h in auth.injected_header_names() {
                if !injected.contains(h) {
                    injected.push(h.clone());
                }
            }
            auths.push(auth);
        }
        let mut routes = Vec::with_capacity(plan.routes.len());
        for r in &plan.routes {
            let up = &plan.upstreams[r.upstream as usize];
            let auth_policy = match r.auth {
                Some(a) => {
                    let a = &plan.auths[a as usize];
                    Some(RoutePolicy::new(&a.route).map_err(|e| StartError::Auth {
                        policy: a.name.to_string(),
                        reason: e.to_string(),
                    })?)
                }
                None => None,
            };
            routes.push(RouteRt {
                metrics: metrics.route(&r.name, &up.name),
                auth_policy,
                auth_metrics: metrics.auth(&r.name),
            });
        }
        let limits = registry.limiter(&plan).map_err(StartError::RateLimit)?;
        let limit_metrics = plan
            .rate_limits
            .iter()
            .map(|l| {
                let m = metrics.ratelimit_policy(&l.name);
                if l.backend == crate::plan::RateBackend::Redis {
                    m.expect_store_errors(l.on_store_error.as_str());
                }
                m
            })
            .collect();
        let limit_texts = plan
            .rate_limits
            .iter()
            .map(super::steps::limit_headers::LimitTexts::new)
            .collect();
        Ok(Runtime {
            plan,
            upstreams,
            routes,
            auths,
            injected,
            unrouted: metrics.unrouted(),
            limits,
            limit_metrics,
            limit_texts,
        })
    }

    /// First health checks of the upstreams whose endpoints come from discovery or whose endpoint
    /// set is new (after their set changed, e.g. by a registration, before the runtime is swapped
    /// in: a new endpoint is checked before it gets traffic).
    pub async fn check_discovered(&self) {
        for (u, plan) in self.upstreams.iter().zip(&self.plan.upstreams) {
            if plan.discovery.is_some() || u.fresh {
                u.balancer.run_health_check().await;
            }
        }
    }

    /// Starts background work (JWKS refresh) and waits for first health checks and key fetches, each
    /// bounded. Returns when the runtime is ready to serve.
    pub async fn warm_up(&self) {
        if let Some(l) = &self.limits {
            // Redis-backed limits would run on `on_store_error` until connected (with `deny`,
            // the first requests after a start would be 429s): wait for it, bounded.
            if !l.limiter.wait_connected(Duration::from_secs(2)).await {
                tracing::warn!("rate limiter: Redis is not reachable yet; Redis-backed limits apply on_store_error until it is");
            }
        }
        for u in &self.upstreams {
            u.balancer.run_health_check().await;
        }
        for (a, plan) in self.auths.iter().zip(&self.plan.auths) {
            a.start();
            if !a.ready(plan.ready_timeout).await {
                tracing::warn!(policy = %plan.name, "JWT keys are not available yet; tokens are rejected until they are");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Redis-backed policy's `gw_ratelimit_store_errors_total{action}` exists at 0 from the start,
    /// so an alert on its `rate()` fires on the first errors of an outage (a series that appears
    /// with its first error has no earlier sample to rise from); a local policy has none.
    #[tokio::test]
    async fn redis_policies_start_with_their_store_error_series_at_zero() {
        let text = r#"
listeners: [{ name: l, address: "127.0.0.1:0" }]
upstreams: [{ name: u, endpoints: [{ address: "127.0.0.1:9" }] }]
policies:
  - { name: shared, type: rate_limit, window: 60s, max: 10, key: { type: client_ip }, store: { type: redis, url: "redis://127.0.0.1:9" }, on_store_error: deny }
  - { name: mine, type: rate_limit, window: 60s, max: 10, key: { type: client_ip } }
routes: [{ name: r, match: { prefix: / }, upstream: u, policies: [shared, mine] }]
"#;
        let c = crate::compile("t.yaml", text, &|_| None);
        let plan = c.plan.unwrap_or_else(|| panic!("{:?}", c.diagnostics));
        let m = Metrics::new().unwrap();
        let _rt = Runtime::build(Arc::new(plan), &m, &crate::state::Registry::new()).unwrap();
        let out = m.render();
        assert!(
            out.contains(r#"gw_ratelimit_store_errors_total{action="deny",policy="shared"} 0"#),
            "{out}"
        );
        assert!(!out.contains(r#"gw_ratelimit_store_errors_total{action="local""#));
        assert!(
            !out.contains(r#"policy="mine",action"#)
                && !out.contains(r#"errors_total{action="allow""#)
        );
    }
}

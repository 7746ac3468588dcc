//! Prometheus metrics for the gateway, with handles pre-resolved at plan-compile time.
//!
//! [`Metrics`] owns a private `prometheus::Registry` and every metric family listed in the
//! module docs (`super`). The plan compiler asks it once per route / endpoint / policy /
//! upstream for a *handle* ([`RouteMetrics`], [`EndpointMetrics`], [`RateLimitMetrics`],
//! [`BreakerMetrics`], [`AuthMetrics`], [`ReloadMetrics`]). A handle holds the already
//! label-resolved `prometheus` children, so recording on the hot path is a handful of
//! atomic operations: no label hashing, no string formatting, no allocation, no locks.
//!
//! `gw_requests_total` carries the *exact* status code, which is not known at compile time.
//! [`RouteMetrics`] therefore keeps, per method index ([`HttpMethod`], 8 values) and status
//! class (`1xx`..`9xx`), a lazily allocated page of 100 `OnceLock<IntCounter>` slots indexed by
//! `status % 100`. The first request with a given (method, status) resolves the child through
//! `with_label_values` once (cold path); every later one is three `Acquire` loads (the route's
//! live part, page, slot) plus the counter's `fetch_add`. The live part (the ~1.2 KiB table of
//! pages and the route's `gw_request_duration_seconds` child) is created on the route's first
//! request, so a route that never sees traffic costs ~100 bytes and has no series; one that only
//! ever sees `GET 200` costs one 1.6 KiB page on top of it. Status codes outside `100..=999`
//! (not producible by the `http` crate) fall back to `with_label_values` on every call, still
//! with the exact code.
//!
//! Labels whose values come from a small static set chosen by the caller (auth failure
//! reasons, rate-limit store actions) go through a 16-slot lock-free cache keyed by the
//! `&'static str`; a 17th distinct value still counts exactly, via `with_label_values`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod retain;
pub use retain::LiveSeries;

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// `Content-Type` of [`Metrics::render`] output (text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Label value used for `route` and `upstream` when a request matched no route
/// (see [`Metrics::unrouted`]). The empty string cannot collide with a configured name.
pub const UNROUTED: &str = "";

/// Default buckets (seconds) of `gw_request_duration_seconds` and
/// `gw_upstream_duration_seconds`: 1 ms .. 60 s.
pub const DEFAULT_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Request method folded to one of 8 label values, so the method label has bounded
/// cardinality and maps to a small array index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HttpMethod {
    Get = 0,
    Head = 1,
    Post = 2,
    Put = 3,
    Delete = 4,
    Patch = 5,
    Options = 6,
    /// Any other method (CONNECT, TRACE, extension methods); label `OTHER`.
    Other = 7,
}

impl HttpMethod {
    /// Number of distinct values (array dimension).
    pub const COUNT: usize = 8;

    /// Maps a method token (case-sensitive, as RFC 9110 requires) to its index.
    #[inline]
    pub fn from_bytes(method: &[u8]) -> Self {
        match method {
            b"GET" => Self::Get,
            b"HEAD" => Self::Head,
            b"POST" => Self::Post,
            b"PUT" => Self::Put,
            b"DELETE" => Self::Delete,
            b"PATCH" => Self::Patch,
            b"OPTIONS" => Self::Options,
            _ => Self::Other,
        }
    }

    /// Same as [`HttpMethod::from_bytes`] for a `&str` (e.g. `http::Method::as_str()`).
    #[inline]
    pub fn parse(method: &str) -> Self {
        Self::from_bytes(method.as_bytes())
    }

    /// The `method` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Patch => "PATCH",
            Self::Options => "OPTIONS",
            Self::Other => "OTHER",
        }
    }
}

/// `kind` label of `gw_upstream_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum UpstreamErrorKind {
    /// TCP/TLS connect failure (`connect`).
    Connect = 0,
    /// Connect, read or write timeout (`timeout`).
    Timeout = 1,
    /// Upstream answered with a 5xx status (`5xx`).
    Status5xx = 2,
}

impl UpstreamErrorKind {
    const ALL: [Self; 3] = [Self::Connect, Self::Timeout, Self::Status5xx];

    /// The `kind` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Status5xx => "5xx",
        }
    }
}

/// Circuit-breaker state; the discriminant is the value of `gw_breaker_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BreakerState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl BreakerState {
    const ALL: [Self; 3] = [Self::Closed, Self::HalfOpen, Self::Open];

    /// The `from` / `to` label value of `gw_breaker_transitions_total`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

/// All metric families, cheap to clone (every field is an `Arc` inside).
#[derive(Clone)]
struct Families {
    requests_total: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    endpoint_healthy: IntGaugeVec,
    active_connections: IntGauge,
    requests_in_flight: IntGauge,
    ratelimit_decisions: IntCounterVec,
    ratelimit_store_errors: IntCounterVec,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    breaker_rejected: IntCounterVec,
    auth_failures: IntCounterVec,
    config_reloads: IntCounterVec,
    config_last_reload_success: Gauge,
    config_last_reload_failure: Gauge,
    config_hash: IntGaugeVec,
    access_log_dropped: IntCounter,
    discovery: DiscoveryFamilies,
}

/// Owner of the gateway's metric registry; create once at startup, clone freely (cheap).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    f: Families,
    /// Endpoints with series, by upstream: [`Metrics::retain_endpoints`] deletes the series of
    /// those a new runtime no longer has.
    endpoints: Arc<parking_lot::Mutex<EndpointSeries>>,
}

/// Upstream name → endpoint labels with series.
type EndpointSeries = std::collections::HashMap<String, std::collections::HashSet<String>>;

fn reg<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Creates the registry and all families with [`DEFAULT_DURATION_BUCKETS`].
    pub fn new() -> prometheus::Result<Self> {
        Self::with_buckets(DEFAULT_DURATION_BUCKETS, DEFAULT_DURATION_BUCKETS)
    }

    /// Like [`Metrics::new`] with explicit histogram buckets (seconds, strictly increasing)
    /// for `gw_request_duration_seconds` and `gw_upstream_duration_seconds`.
    /// Empty slices mean the `prometheus` crate defaults; non-increasing or NaN bounds are an
    /// error (checked here because `HistogramVec` only checks when a child is created).
    pub fn with_buckets(request: &[f64], upstream: &[f64]) -> prometheus::Result<Self> {
        for b in [request, upstream] {
            if b.iter().any(|v| v.is_nan()) || b.windows(2).any(|w| w[0] >= w[1]) {
                return Err(prometheus::Error::Msg(format!(
                    "histogram buckets must be strictly increasing numbers: {b:?}"
                )));
            }
        }
        let r = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(&r, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(&r, IntGaugeVec::new(Opts::new(name, help), labels)?)
        };
        let hist_vec = |name: &str, help: &str, labels: &[&str], b: &[f64]| {
            reg(
                &r,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(b.to_vec()), labels)?,
            )
        };
        let f = Families {
            requests_total: counter_vec(
                "gw_requests_total",
                "Requests completed, by route, upstream, method and exact response status.",
                &["route", "upstream", "method", "status"],
            )?,
            request_duration: hist_vec(
                "gw_request_duration_seconds",
                "Whole-request latency as seen by the client, from request start to response end.",
                &["route", "upstream"],
                request,
            )?,
            upstream_duration: hist_vec(
                "gw_upstream_duration_seconds",
                "Latency of one upstream attempt, from connect start to response end.",
                &["upstream", "endpoint"],
                upstream,
            )?,
            upstream_errors: counter_vec(
                "gw_upstream_errors_total",
                "Failed upstream attempts, by kind (connect, timeout, 5xx).",
                &["upstream", "endpoint", "kind"],
            )?,
            endpoint_healthy: gauge_vec(
                "gw_endpoint_healthy",
                "1 if the endpoint is considered healthy by health checking, else 0.",
                &["upstream", "endpoint"],
            )?,
            active_connections: reg(
                &r,
                IntGauge::new(
                    "gw_active_connections",
                    "Open downstream (client) connections.",
                )?,
            )?,
            requests_in_flight: reg(
                &r,
                IntGauge::new(
                    "gw_requests_in_flight",
                    "Requests currently being processed.",
                )?,
            )?,
            ratelimit_decisions: counter_vec(
                "gw_ratelimit_decisions_total",
                "Rate-limit decisions, by policy and decision (allowed, rejected, shadow_rejected).",
                &["policy", "decision"],
            )?,
            ratelimit_store_errors: counter_vec(
                "gw_ratelimit_store_errors_total",
                "Rate-limit store (e.g. Redis) failures, by policy and the action taken.",
                &["policy", "action"],
            )?,
            breaker_state: gauge_vec(
                "gw_breaker_state",
                "Circuit-breaker state: 0 closed, 1 half-open, 2 open.",
                &["upstream"],
            )?,
            breaker_transitions: counter_vec(
                "gw_breaker_transitions_total",
                "Circuit-breaker state transitions.",
                &["upstream", "from", "to"],
            )?,
            breaker_rejected: counter_vec(
                "gw_breaker_rejected_total",
                "Requests rejected because the upstream's breaker was open (or half-open and full).",
                &["upstream"],
            )?,
            auth_failures: counter_vec(
                "gw_auth_failures_total",
                "Authentication/authorization failures, by route and reason.",
                &["route", "reason"],
            )?,
            config_reloads: counter_vec(
                "gw_config_reloads_total",
                "Configuration reload attempts, by result (applied, rejected).",
                &["result"],
            )?,
            config_hash: gauge_vec(
                "gw_config_hash",
                "The configuration in force: always 1, labelled with a short hash of its text.",
                &["hash"],
            )?,
            config_last_reload_success: reg(
                &r,
                Gauge::new(
                    "gw_config_last_reload_success_timestamp_seconds",
                    "Unix time of the last successful configuration load (0 if none yet).",
                )?,
            )?,
            config_last_reload_failure: reg(
                &r,
                Gauge::new(
                    "gw_config_last_reload_failure_timestamp_seconds",
                    "Unix time of the last rejected configuration reload (0 if none yet).",
                )?,
            )?,
            access_log_dropped: reg(
                &r,
                IntCounter::new(
                    "gw_access_log_dropped_total",
                    "Access-log lines dropped because the writer queue was full.",
                )?,
            )?,
            discovery: DiscoveryFamilies::register(&r)?,
        };
        Ok(Self {
            registry: r,
            f,
            endpoints: Arc::default(),
        })
    }

    /// The underlying registry (to add e.g. a process collector).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Handle for requests matched to `route`, proxied to `upstream`. Creates no series: the
    /// route's `gw_requests_total` and `gw_request_duration_seconds` series appear with its first
    /// request, so a configuration of many routes costs no memory per idle route (~100 bytes).
    pub fn route(&self, route: &str, upstream: &str) -> RouteMetrics {
        RouteMetrics(Arc::new(RouteInner {
            requests: self.f.requests_total.clone(),
            durations: self.f.request_duration.clone(),
            route: route.into(),
            upstream: upstream.into(),
            live: OnceLock::new(),
        }))
    }

    /// Handle for requests that matched no route: `route=""`, `upstream=""` ([`UNROUTED`]).
    pub fn unrouted(&self) -> RouteMetrics {
        self.route(UNROUTED, UNROUTED)
    }

    /// Handle for one endpoint (`host:port`) of `upstream`. Creates the error series at 0.
    /// `gw_endpoint_healthy` starts at 0 for a new series: call
    /// [`EndpointMetrics::set_healthy`] with the initial state.
    pub fn endpoint(&self, upstream: &str, endpoint: &str) -> EndpointMetrics {
        let f = &self.f;
        let mut known = self.endpoints.lock();
        let of_upstream = match known.get_mut(upstream) {
            Some(e) => e,
            None => known.entry(upstream.to_owned()).or_default(),
        };
        if !of_upstream.contains(endpoint) {
            of_upstream.insert(endpoint.to_owned());
        }
        drop(known);
        EndpointMetrics {
            duration: f.upstream_duration.with_label_values(&[upstream, endpoint]),
            errors: UpstreamErrorKind::ALL.map(|k| {
                f.upstream_errors
                    .with_label_values(&[upstream, endpoint, k.as_str()])
            }),
            healthy: f.endpoint_healthy.with_label_values(&[upstream, endpoint]),
        }
    }

    /// Sets `gw_endpoint_healthy` of an endpoint that still has series: a health check that ends
    /// after [`Metrics::retain_endpoints`] removed its endpoint does not bring the series back.
    pub fn endpoint_health_changed(&self, upstream: &str, endpoint: &str, healthy: bool) {
        let known = self
            .endpoints
            .lock()
            .get(upstream)
            .is_some_and(|e| e.contains(endpoint));
        if known {
            self.endpoint(upstream, endpoint).set_healthy(healthy);
        }
    }

    /// Handle for rate-limit policy `policy`. Creates the three decision series at 0.
    pub fn ratelimit_policy(&self, policy: &str) -> RateLimitMetrics {
        let d = &self.f.ratelimit_decisions;
        RateLimitMetrics(Arc::new(RateLimitInner {
            allowed: d.with_label_values(&[policy, "allowed"]),
            rejected: d.with_label_values(&[policy, "rejected"]),
            shadow_rejected: d.with_label_values(&[policy, "shadow_rejected"]),
            store_errors: StaticLabelCache::new(self.f.ratelimit_store_errors.clone(), policy),
        }))
    }

    /// Handle for the circuit breaker of `upstream`. Creates the state gauge (0 = closed),
    /// the rejected counter and the six `from != to` transition series at 0.
    pub fn breaker(&self, upstream: &str) -> BreakerMetrics {
        let t = &self.f.breaker_transitions;
        BreakerMetrics {
            state: self.f.breaker_state.with_label_values(&[upstream]),
            transitions: BreakerState::ALL.map(|from| {
                BreakerState::ALL.map(|to| {
                    (from != to)
                        .then(|| t.with_label_values(&[upstream, from.as_str(), to.as_str()]))
                })
            }),
            rejected: self.f.breaker_rejected.with_label_values(&[upstream]),
        }
    }

    /// Handle for auth failures on `route`. Series are created on first use of a reason.
    pub fn auth(&self, route: &str) -> AuthMetrics {
        AuthMetrics(Arc::new(StaticLabelCache::new(
            self.f.auth_failures.clone(),
            route,
        )))
    }

    /// Like [`Metrics::auth`], also creating the series for `reasons` at 0 (nicer dashboards).
    pub fn auth_with_reasons(&self, route: &str, reasons: &[&'static str]) -> AuthMetrics {
        let a = self.auth(route);
        for r in reasons {
            // Resolving inserts the series (value 0) and warms the cache.
            let _ = a.0.resolve(r);
        }
        a
    }

    /// Handle for configuration reload outcomes. Creates both `result` series at 0.
    pub fn reload(&self) -> ReloadMetrics {
        ReloadMetrics {
            success: self.f.config_reloads.with_label_values(&["applied"]),
            failure: self.f.config_reloads.with_label_values(&["rejected"]),
            last_success: self.f.config_last_reload_success.clone(),
            last_failure: self.f.config_last_reload_failure.clone(),
            hash: self.f.config_hash.clone(),
        }
    }

    /// `gw_active_connections`.
    pub fn active_connections(&self) -> &IntGauge {
        &self.f.active_connections
    }

    /// `gw_requests_in_flight`.
    pub fn requests_in_flight(&self) -> &IntGauge {
        &self.f.requests_in_flight
    }

    /// Increments `gw_requests_in_flight` until the returned guard is dropped.
    pub fn track_in_flight(&self) -> GaugeGuard {
        GaugeGuard::new(self.f.requests_in_flight.clone())
    }

    /// Increments `gw_active_connections` until the returned guard is dropped.
    pub fn track_connection(&self) -> GaugeGuard {
        GaugeGuard::new(self.f.active_connections.clone())
    }

    /// `gw_access_log_dropped_total`; pass it to `AccessLogConfig::drop_counter`.
    pub fn access_log_dropped(&self) -> IntCounter {
        self.f.access_log_dropped.clone()
    }

    /// Text exposition (format 0.0.4) of every registered family, for `GET /metrics`.
    /// Families without any series yet are omitted (Prometheus client behaviour).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_into(&mut out);
        out
    }

    /// [`Metrics::render`] appending into a caller-owned buffer.
    pub fn render_into(&self, out: &mut String) {
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode_utf8(&families, out) {
            tracing::warn!(error = %e, "failed to encode metrics");
        }
    }
}

/// Pages of 100 exact-status counters: `pages[method][status / 100 - 1][status % 100]`.
type StatusPage = [OnceLock<IntCounter>; 100];
const STATUS_CLASSES: usize = 9;
/// What a route holds once it has seen a request (~1.2 KiB): its `gw_request_duration_seconds`
/// child and the table of status pages.
struct Live {
    duration: Histogram,
    pages: [[OnceLock<Box<StatusPage>>; STATUS_CLASSES]; HttpMethod::COUNT],
}

struct RouteInner {
    requests: IntCounterVec,
    durations: HistogramVec,
    route: Box<str>,
    upstream: Box<str>,
    /// Created with the route's first request (one `Acquire` load per use after that).
    live: OnceLock<Box<Live>>,
}

/// Handle for one (route, upstream); clone is an `Arc` bump. Series are created on the first
/// request (one `Acquire` load each after that, see the module docs).
#[derive(Clone)]
pub struct RouteMetrics(Arc<RouteInner>);

impl RouteMetrics {
    /// Records one completed request: `gw_requests_total{method,status}` += 1 and
    /// `gw_request_duration_seconds` observes `elapsed` (client-visible total time).
    #[inline]
    pub fn record(&self, method: HttpMethod, status: u16, elapsed: Duration) {
        let live = self.live();
        match self.counter_in(live, method, status) {
            Some(c) => c.inc(),
            None => self.count_out_of_range(method, status),
        }
        live.duration.observe(elapsed.as_secs_f64());
    }

    /// Only the counter part of [`RouteMetrics::record`].
    #[inline]
    pub fn count(&self, method: HttpMethod, status: u16) {
        match self.counter(method, status) {
            Some(c) => c.inc(),
            None => self.count_out_of_range(method, status),
        }
    }

    /// Only the histogram part of [`RouteMetrics::record`].
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        self.live().duration.observe(elapsed.as_secs_f64());
    }

    /// The route's series, created on first use.
    #[inline]
    fn live(&self) -> &Live {
        self.0.live.get_or_init(|| self.make_live())
    }

    /// The resolved counter for (method, status), creating it on first use; `None` for a
    /// status outside `100..=999`.
    #[inline]
    pub fn counter(&self, method: HttpMethod, status: u16) -> Option<&IntCounter> {
        if !(100..=999).contains(&status) {
            return None;
        }
        self.counter_in(self.live(), method, status)
    }

    #[inline]
    fn counter_in<'a>(
        &'a self,
        live: &'a Live,
        method: HttpMethod,
        status: u16,
    ) -> Option<&'a IntCounter> {
        if !(100..=999).contains(&status) {
            return None;
        }
        let class = usize::from(status / 100 - 1);
        let page = live.pages[method as usize][class].get_or_init(new_page);
        Some(page[usize::from(status % 100)].get_or_init(|| self.resolve(method, status)))
    }

    #[cold]
    #[inline(never)]
    fn make_live(&self) -> Box<Live> {
        let i = &self.0;
        Box::new(Live {
            duration: i.durations.with_label_values(&[&*i.route, &*i.upstream]),
            pages: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
        })
    }

    #[cold]
    #[inline(never)]
    fn resolve(&self, method: HttpMethod, status: u16) -> IntCounter {
        let status = status.to_string();
        let i = &self.0;
        i.requests
            .with_label_values(&[&*i.route, &*i.upstream, method.as_str(), &status])
    }

    #[cold]
    #[inline(never)]
    fn count_out_of_range(&self, method: HttpMethod, status: u16) {
        self.resolve(method, status).inc();
    }
}

#[cold]
fn new_page() -> Box<StatusPage> {
    Box::new(std::array::from_fn(|_| OnceLock::new()))
}

/// Pre-resolved handle for one upstream endpoint; clone is cheap.
#[derive(Clone)]
pub struct EndpointMetrics {
    duration: Histogram,
    errors: [IntCounter; 3],
    healthy: IntGauge,
}

impl EndpointMetrics {
    /// Observes one upstream attempt's duration in `gw_upstream_duration_seconds`.
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// `gw_upstream_errors_total{kind}` += 1.
    #[inline]
    pub fn error(&self, kind: UpstreamErrorKind) {
        self.errors[kind as usize].inc();
    }

    /// Sets `gw_endpoint_healthy` to 1 or 0.
    #[inline]
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.set(i64::from(healthy));
    }
}

struct RateLimitInner {
    allowed: IntCounter,
    rejected: IntCounter,
    shadow_rejected: IntCounter,
    store_errors: StaticLabelCache,
}

/// Pre-resolved handle for one rate-limit policy; clone is an `Arc` bump.
#[derive(Clone)]
pub struct RateLimitMetrics(Arc<RateLimitInner>);

impl RateLimitMetrics {
    /// `decision="allowed"` += 1.
    #[inline]
    pub fn allowed(&self) {
        self.0.allowed.inc();
    }

    /// `decision="rejected"` += 1 (request answered 429).
    #[inline]
    pub fn rejected(&self) {
        self.0.rejected.inc();
    }

    /// `decision="shadow_rejected"` += 1 (would have been rejected; policy in shadow mode).
    #[inline]
    pub fn shadow_rejected(&self) {
        self.0.shadow_rejected.inc();
    }

    /// `gw_ratelimit_store_errors_total{action}` += 1, where `action` is the policy's
    /// `on_store_error` (`"allow"`, `"deny"`, `"local"`).
    #[inline]
    pub fn store_error(&self, action: &'static str) {
        self.0.store_errors.inc(action);
    }

    /// Creates the `gw_ratelimit_store_errors_total{action}` series at 0 (a policy whose store can
    /// fail), so the first error of an outage is an increase a `rate()` sees, not a new series.
    pub fn expect_store_errors(&self, action: &'static str) {
        let _ = self.0.store_errors.resolve(action);
    }
}

/// Pre-resolved handle for one upstream's circuit breaker; clone is cheap.
#[derive(Clone)]
pub struct BreakerMetrics {
    state: IntGauge,
    transitions: [[Option<IntCounter>; 3]; 3],
    rejected: IntCounter,
}

impl BreakerMetrics {
    /// Sets `gw_breaker_state` without counting a transition.
    #[inline]
    pub fn set_state(&self, state: BreakerState) {
        self.state.set(state as i64);
    }

    /// Counts `from -> to` in `gw_breaker_transitions_total` and sets the state gauge to
    /// `to`. A self-transition (`from == to`) only sets the gauge.
    #[inline]
    pub fn transition(&self, from: BreakerState, to: BreakerState) {
        if let Some(c) = &self.transitions[from as usize][to as usize] {
            c.inc();
        }
        self.set_state(to);
    }

    /// `gw_breaker_rejected_total` += 1.
    #[inline]
    pub fn rejected(&self) {
        self.rejected.inc();
    }
}

/// Pre-resolved handle for auth failures on one route; clone is an `Arc` bump.
#[derive(Clone)]
pub struct AuthMetrics(Arc<StaticLabelCache>);

impl AuthMetrics {
    /// `gw_auth_failures_total{reason}` += 1. `reason` should come from a small fixed set
    /// (e.g. `"missing_credentials"`, `"invalid_token"`, `"expired"`, `"forbidden"`); the
    /// first 16 distinct reasons per route are cached, further ones are still counted exactly
    /// but hash their label set on every call.
    #[inline]
    pub fn failure(&self, reason: &'static str) {
        self.0.inc(reason);
    }
}

/// Handle for configuration reload outcomes; clone is cheap.
#[derive(Clone)]
pub struct ReloadMetrics {
    success: IntCounter,
    failure: IntCounter,
    last_success: Gauge,
    last_failure: Gauge,
    hash: IntGaugeVec,
}

impl ReloadMetrics {
    /// Sets the configuration in force: `gw_config_hash{hash}` is 1 for `hash` and the series of the
    /// previous hash is removed. Also sets the last-success timestamp to `now` (the start-up load
    /// counts as a successful load).
    pub fn in_force(&self, hash: &str, now: SystemTime) {
        self.hash.reset();
        self.hash.with_label_values(&[hash]).set(1);
        self.last_success.set(unix_secs(now));
    }

    /// `result="applied"` += 1 and sets the last-success timestamp to `now`.
    pub fn success(&self, now: SystemTime) {
        self.success.inc();
        self.last_success.set(unix_secs(now));
    }

    /// `result="rejected"` += 1 and sets the last-failure timestamp to now: while it is later than
    /// the last-success timestamp, the file on disk is not the configuration in force.
    pub fn failure(&self) {
        self.failure_at(SystemTime::now());
    }

    /// [`ReloadMetrics::failure`] with an explicit time.
    pub fn failure_at(&self, now: SystemTime) {
        self.failure.inc();
        self.last_failure.set(unix_secs(now));
    }
}

/// Seconds since the Unix epoch (0 for a time before it).
fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Increments a gauge on creation and decrements it on drop (in-flight / connections).
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    /// Increments `gauge` now; decrements it when the guard is dropped.
    pub fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

const CACHE_SLOTS: usize = 16;

/// Two-label counter family whose first label is fixed and whose second label takes values
/// from a small static set. Lookup scans at most 16 `OnceLock` slots (pointer compare first);
/// an empty slot is claimed with `get_or_init`, and a racing thread that loses the slot to a
/// different value simply moves on to the next one. No locks on the read path.
struct StaticLabelCache {
    vec: IntCounterVec,
    fixed: Box<str>,
    /// Allocated with the first value (~0.5 KiB), so an unused handle costs a few words.
    slots: OnceLock<Box<CacheSlots>>,
}

type CacheSlots = [OnceLock<(&'static str, IntCounter)>; CACHE_SLOTS];

impl StaticLabelCache {
    fn new(vec: IntCounterVec, fixed: &str) -> Self {
        Self {
            vec,
            fixed: fixed.into(),
            slots: OnceLock::new(),
        }
    }

    #[inline]
    fn inc(&self, value: &'static str) {
        self.resolve(value).inc();
    }

    /// Returns the counter for `value`: a reference into the cache, or (cache full) a freshly
    /// resolved child handle.
    #[inline]
    fn resolve(&self, value: &'static str) -> CounterRef<'_> {
        let slots = self
            .slots
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        for slot in slots.iter() {
            let (k, c) = slot.get_or_init(|| (value, self.make(value)));
            if std::ptr::eq(*k, value) || *k == value {
                return CounterRef::Cached(c);
            }
        }
        CounterRef::Owned(self.make(value))
    }

    #[cold]
    #[inline(never)]
    fn make(&self, value: &str) -> IntCounter {
        self.vec.with_label_values(&[&*self.fixed, value])
    }
}

enum CounterRef<'a> {
    Cached(&'a IntCounter),
    Owned(IntCounter),
}

impl CounterRef<'_> {
    #[inline]
    fn inc(&self) {
        match self {
            Self::Cached(c) => c.inc(),
            Self::Owned(c) => c.inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    type Labels = BTreeMap<String, String>;

    /// Parses the text exposition into `(name, labels) -> value`; checks every sample line.
    fn parse(text: &str) -> HashMap<(String, Labels), f64> {
        let mut out = HashMap::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().expect("value"),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), Labels::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    (name.to_string(), parse_labels(body))
                }
            };
            assert!(out.insert((name, labels), value).is_none(), "dup: {line}");
        }
        out
    }

    fn parse_labels(body: &str) -> Labels {
        let mut labels = Labels::new();
        let mut chars = body.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert_eq!(chars.next(), Some('"'));
            let mut val = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => val.push('\n'),
                        Some(o) => val.push(o),
                        None => panic!("bad escape"),
                    },
                    '"' => break,
                    c => val.push(c),
                }
            }
            if chars.peek() == Some(&',') {
                chars.next();
            }
            labels.insert(key, val);
        }
        labels
    }

    fn key(name: &str, labels: &[(&str, &str)]) -> (String, Labels) {
        (
            name.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// All series of `name` in the parsed output.
    fn series<'a>(
        m: &'a HashMap<(String, Labels), f64>,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a Labels, f64)> + 'a {
        m.iter()
            .filter(move |((n, _), _)| n == name)
            .map(|((_, l), v)| (l, *v))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn method_mapping() {
        assert_eq!(HttpMethod::parse("GET"), HttpMethod::Get);
        assert_eq!(HttpMethod::from_bytes(b"OPTIONS"), HttpMethod::Options);
        assert_eq!(HttpMethod::parse("get"), HttpMethod::Other);
        assert_eq!(HttpMethod::parse("PROPFIND"), HttpMethod::Other);
        assert_eq!(HttpMethod::parse(""), HttpMethod::Other);
        for (i, m) in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
        ]
        .iter()
        .enumerate()
        {
            let parsed = HttpMethod::parse(m);
            assert_eq!(parsed as usize, i);
            assert_eq!(parsed.as_str(), *m);
        }
    }

    #[test]
    fn request_counters_exact_labels_and_values() {
        let m = Metrics::new().unwrap();
        let users = m.route("users", "users-svc");
        let orders = m.route("orders", "orders-svc");
        let none = m.unrouted();
        for _ in 0..3 {
            users.record(HttpMethod::Get, 200, ms(5));
        }
        users.record(HttpMethod::Get, 201, ms(5));
        users.record(HttpMethod::Post, 201, ms(5));
        users.record(HttpMethod::Get, 404, ms(5));
        users.record(HttpMethod::parse("PROPFIND"), 207, ms(5));
        users.record(HttpMethod::Get, 999, ms(5));
        users.record(HttpMethod::Get, 42, ms(5)); // out of range: fallback, still exact
        users.record(HttpMethod::Get, 42, ms(5));
        orders.record(HttpMethod::Delete, 503, ms(5));
        orders.record(HttpMethod::Delete, 503, ms(5));
        none.record(HttpMethod::Get, 404, ms(1));
        // A second handle for the same labels shares the series.
        m.route("users", "users-svc")
            .record(HttpMethod::Get, 200, ms(5));

        let p = parse(&m.render());
        let expected: &[(&str, &str, &str, &str, f64)] = &[
            ("users", "users-svc", "GET", "200", 4.0),
            ("users", "users-svc", "GET", "201", 1.0),
            ("users", "users-svc", "POST", "201", 1.0),
            ("users", "users-svc", "GET", "404", 1.0),
            ("users", "users-svc", "OTHER", "207", 1.0),
            ("users", "users-svc", "GET", "999", 1.0),
            ("users", "users-svc", "GET", "42", 2.0),
            ("orders", "orders-svc", "DELETE", "503", 2.0),
            ("", "", "GET", "404", 1.0),
        ];
        let got: Vec<_> = series(&p, "gw_requests_total").collect();
        assert_eq!(got.len(), expected.len(), "{got:?}");
        for (r, u, meth, st, v) in expected {
            let k = key(
                "gw_requests_total",
                &[
                    ("route", r),
                    ("upstream", u),
                    ("method", meth),
                    ("status", st),
                ],
            );
            assert_eq!(p.get(&k), Some(v), "{k:?}");
        }
    }

    #[test]
    fn request_histogram_counts_and_buckets() {
        let m = Metrics::new().unwrap();
        let r = m.route("a", "up");
        r.record(HttpMethod::Get, 200, ms(3)); // le 0.005
        r.record(HttpMethod::Get, 200, ms(20)); // le 0.025
        r.record(HttpMethod::Get, 500, ms(20));
        r.record(HttpMethod::Get, 200, Duration::from_secs(120)); // only +Inf
        let p = parse(&m.render());
        let l = [("route", "a"), ("upstream", "up")];
        assert_eq!(p[&key("gw_request_duration_seconds_count", &l)], 4.0);
        let sum = p[&key("gw_request_duration_seconds_sum", &l)];
        assert!((sum - 120.043).abs() < 1e-9, "{sum}");
        let bucket = |le: &str| {
            p[&key(
                "gw_request_duration_seconds_bucket",
                &[("route", "a"), ("upstream", "up"), ("le", le)],
            )]
        };
        assert_eq!(bucket("0.001"), 0.0);
        assert_eq!(bucket("0.005"), 1.0);
        assert_eq!(bucket("0.01"), 1.0);
        assert_eq!(bucket("0.025"), 3.0);
        assert_eq!(bucket("60"), 3.0);
        assert_eq!(bucket("+Inf"), 4.0);
        assert_eq!(
            series(&p, "gw_request_duration_seconds_bucket").count(),
            DEFAULT_DURATION_BUCKETS.len() + 1
        );
    }

    #[test]
    fn route_and_auth_series_appear_with_the_first_request() {
        let m = Metrics::new().unwrap();
        let idle = m.route("idle", "up");
        let busy = m.route("busy", "up");
        let auth = m.auth("busy");
        let p = parse(&m.render());
        assert_eq!(series(&p, "gw_request_duration_seconds_count").count(), 0);
        assert_eq!(series(&p, "gw_requests_total").count(), 0);
        assert_eq!(series(&p, "gw_auth_failures_total").count(), 0);

        busy.observe(ms(2));
        busy.count(HttpMethod::Get, 200);
        auth.failure("expired");
        let p = parse(&m.render());
        let busy_l = [("route", "busy"), ("upstream", "up")];
        assert_eq!(p[&key("gw_request_duration_seconds_count", &busy_l)], 1.0);
        assert_eq!(series(&p, "gw_request_duration_seconds_count").count(), 1);
        assert_eq!(series(&p, "gw_requests_total").count(), 1);
        assert_eq!(
            p[&key(
                "gw_auth_failures_total",
                &[("route", "busy"), ("reason", "expired")]
            )],
            1.0
        );
        // The idle route still has no series; its first request creates them.
        idle.record(HttpMethod::Post, 201, ms(2));
        let p = parse(&m.render());
        let idle_l = [("route", "idle"), ("upstream", "up")];
        assert_eq!(p[&key("gw_request_duration_seconds_count", &idle_l)], 1.0);
        assert_eq!(series(&p, "gw_request_duration_seconds_count").count(), 2);
    }

    #[test]
    fn custom_buckets_and_invalid_buckets() {
        let m = Metrics::with_buckets(&[0.1, 1.0], &[0.5]).unwrap();
        m.route("r", "u").observe(ms(50));
        m.endpoint("u", "e:1").observe(ms(50));
        let p = parse(&m.render());
        assert_eq!(series(&p, "gw_request_duration_seconds_bucket").count(), 3);
        assert_eq!(series(&p, "gw_upstream_duration_seconds_bucket").count(), 2);
        assert!(Metrics::with_buckets(&[1.0, 0.5], &[0.5]).is_err());
        assert!(Metrics::with_buckets(&[0.5], &[0.1, 0.1]).is_err());
        assert!(Metrics::with_buckets(&[f64::NAN], &[0.5]).is_err());
        assert!(Metrics::with_buckets(&[], &[0.5, f64::INFINITY]).is_ok());
    }

    #[test]
    fn endpoint_metrics() {
        let m = Metrics::new().unwrap();
        let e = m.endpoint("users-svc", "10.0.0.1:8080");
        let e2 = m.endpoint("users-svc", "10.0.0.2:8080");
        e.observe(ms(2));
        e.observe(ms(200));
        e.error(UpstreamErrorKind::Connect);
        e.error(UpstreamErrorKind::Timeout);
        e.error(UpstreamErrorKind::Timeout);
        e.error(UpstreamErrorKind::Status5xx);
        e.set_healthy(true);
        e2.set_healthy(true);
        e2.set_healthy(false);
        let p = parse(&m.render());
        let l = [("upstream", "users-svc"), ("endpoint", "10.0.0.1:8080")];
        assert_eq!(p[&key("gw_upstream_duration_seconds_count", &l)], 2.0);
        for (kind, v) in [("connect", 1.0), ("timeout", 2.0), ("5xx", 1.0)] {
            let k = key("gw_upstream_errors_total", &[l[0], l[1], ("kind", kind)]);
            assert_eq!(p[&k], v);
        }
        // e2's error series exist at 0.
        let l2 = [("upstream", "users-svc"), ("endpoint", "10.0.0.2:8080")];
        let k = key("gw_upstream_errors_total", &[l2[0], l2[1], ("kind", "5xx")]);
        assert_eq!(p[&k], 0.0);
        assert_eq!(p[&key("gw_endpoint_healthy", &l)], 1.0);
        assert_eq!(p[&key("gw_endpoint_healthy", &l2)], 0.0);
        assert_eq!(series(&p, "gw_upstream_errors_total").count(), 6);
    }

    #[test]
    fn removed_endpoints_lose_their_series() {
        let m = Metrics::new().unwrap();
        let a = m.endpoint("svc", "10.0.0.1:80");
        m.endpoint("svc", "10.0.0.2:80").set_healthy(true);
        m.endpoint("other", "10.0.0.1:80").set_healthy(true);
        a.observe(ms(5));
        a.set_healthy(true);
        // how many series carry upstream=u, endpoint=e
        let of = |m: &Metrics, u: &str, e: &str| {
            parse(&m.render())
                .keys()
                .filter(|(_, l)| {
                    l.get("upstream").map(String::as_str) == Some(u)
                        && l.get("endpoint").map(String::as_str) == Some(e)
                })
                .count()
        };
        // healthy + 3 error kinds + histogram (buckets, sum, count)
        assert!(of(&m, "svc", "10.0.0.1:80") > 5);
        // discovery removed 10.0.0.1 from svc (not from other)
        m.retain_endpoints([("svc", "10.0.0.2:80"), ("other", "10.0.0.1:80")]);
        assert_eq!(of(&m, "svc", "10.0.0.1:80"), 0);
        assert!(of(&m, "svc", "10.0.0.2:80") >= 4);
        assert!(of(&m, "other", "10.0.0.1:80") >= 4);
        // a health check ending late does not bring the series back
        m.endpoint_health_changed("svc", "10.0.0.1:80", false);
        assert_eq!(of(&m, "svc", "10.0.0.1:80"), 0);
        m.endpoint_health_changed("svc", "10.0.0.2:80", false);
        let p = parse(&m.render());
        let l2 = [("upstream", "svc"), ("endpoint", "10.0.0.2:80")];
        assert_eq!(p[&key("gw_endpoint_healthy", &l2)], 0.0);
        // back again: fresh series
        m.endpoint("svc", "10.0.0.1:80");
        assert!(of(&m, "svc", "10.0.0.1:80") >= 4);
        // a reload without the upstream `other`
        m.retain_endpoints([("svc", "10.0.0.1:80"), ("svc", "10.0.0.2:80")]);
        assert_eq!(of(&m, "other", "10.0.0.1:80"), 0);
    }

    #[test]
    fn ratelimit_metrics() {
        let m = Metrics::new().unwrap();
        let pol = m.ratelimit_policy("per-ip");
        let other = m.ratelimit_policy("per-user");
        for _ in 0..5 {
            pol.allowed();
        }
        pol.rejected();
        pol.rejected();
        pol.shadow_rejected();
        pol.store_error("fail_open");
        pol.store_error("fail_open");
        pol.store_error("fail_closed");
        other.allowed();
        let p = parse(&m.render());
        let d = |pol: &str, dec: &str| {
            p[&key(
                "gw_ratelimit_decisions_total",
                &[("policy", pol), ("decision", dec)],
            )]
        };
        assert_eq!(d("per-ip", "allowed"), 5.0);
        assert_eq!(d("per-ip", "rejected"), 2.0);
        assert_eq!(d("per-ip", "shadow_rejected"), 1.0);
        assert_eq!(d("per-user", "allowed"), 1.0);
        assert_eq!(d("per-user", "rejected"), 0.0);
        let s = |a: &str| {
            p[&key(
                "gw_ratelimit_store_errors_total",
                &[("policy", "per-ip"), ("action", a)],
            )]
        };
        assert_eq!(s("fail_open"), 2.0);
        assert_eq!(s("fail_closed"), 1.0);
        assert_eq!(series(&p, "gw_ratelimit_store_errors_total").count(), 2);
    }

    #[test]
    fn breaker_metrics() {
        use BreakerState::*;
        let m = Metrics::new().unwrap();
        let b = m.breaker("users-svc");
        let p = parse(&m.render());
        assert_eq!(
            p[&key("gw_breaker_state", &[("upstream", "users-svc")])],
            0.0
        );
        assert_eq!(series(&p, "gw_breaker_transitions_total").count(), 6);

        b.transition(Closed, Open);
        b.rejected();
        b.rejected();
        b.transition(Open, HalfOpen);
        b.transition(HalfOpen, Open);
        b.transition(Open, HalfOpen);
        b.transition(HalfOpen, HalfOpen); // not a transition
        let p = parse(&m.render());
        assert_eq!(
            p[&key("gw_breaker_state", &[("upstream", "users-svc")])],
            1.0
        );
        let t = |from: &str, to: &str| {
            p[&key(
                "gw_breaker_transitions_total",
                &[("upstream", "users-svc"), ("from", from), ("to", to)],
            )]
        };
        assert_eq!(t("closed", "open"), 1.0);
        assert_eq!(t("open", "half_open"), 2.0);
        assert_eq!(t("half_open", "open"), 1.0);
        assert_eq!(t("half_open", "closed"), 0.0);
        assert_eq!(series(&p, "gw_breaker_transitions_total").count(), 6);
        assert_eq!(
            p[&key("gw_breaker_rejected_total", &[("upstream", "users-svc")])],
            2.0
        );
        b.set_state(Open);
        let p = parse(&m.render());
        assert_eq!(
            p[&key("gw_breaker_state", &[("upstream", "users-svc")])],
            2.0
        );
    }

    #[test]
    fn auth_metrics_cache_and_overflow_are_exact() {
        const REASONS: [&str; 20] = [
            "r00", "r01", "r02", "r03", "r04", "r05", "r06", "r07", "r08", "r09", "r10", "r11",
            "r12", "r13", "r14", "r15", "r16", "r17", "r18", "r19",
        ];
        let m = Metrics::new().unwrap();
        let a = m.auth("admin");
        for (i, r) in REASONS.iter().enumerate() {
            for _ in 0..=i {
                a.failure(r);
            }
        }
        // Same text, different pointer: must hit the same series.
        let dynamic: &'static str = Box::leak(String::from("r03").into_boxed_str());
        a.failure(dynamic);
        let warm = m.auth_with_reasons("login", &["expired", "missing_credentials"]);
        warm.failure("expired");
        let p = parse(&m.render());
        for (i, r) in REASONS.iter().enumerate() {
            let want = (i + 1 + usize::from(*r == "r03")) as f64;
            let k = key(
                "gw_auth_failures_total",
                &[("route", "admin"), ("reason", r)],
            );
            assert_eq!(p[&k], want, "{r}");
        }
        let l = |r| {
            key(
                "gw_auth_failures_total",
                &[("route", "login"), ("reason", r)],
            )
        };
        assert_eq!(p[&l("expired")], 1.0);
        assert_eq!(p[&l("missing_credentials")], 0.0);
        assert_eq!(series(&p, "gw_auth_failures_total").count(), 22);
    }

    #[test]
    fn reload_and_gauges() {
        let m = Metrics::new().unwrap();
        let r = m.reload();
        let fail_ts = "gw_config_last_reload_failure_timestamp_seconds";
        // Both timestamps exist from start-up at 0 (alerts compare them).
        assert_eq!(parse(&m.render())[&key(fail_ts, &[])], 0.0);
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        r.failure();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let t = parse(&m.render())[&key(fail_ts, &[])];
        assert!(
            before.as_secs_f64() <= t && t <= after.as_secs_f64(),
            "{before:?} <= {t} <= {after:?}"
        );
        r.success(UNIX_EPOCH + Duration::from_millis(1_700_000_000_500));
        r.success(UNIX_EPOCH + Duration::from_secs(1_700_000_100));
        r.failure_at(UNIX_EPOCH + Duration::from_secs(1_700_000_200));
        r.failure_at(UNIX_EPOCH + Duration::from_secs(1_700_000_250));
        {
            let _c = m.track_connection();
            let _a = m.track_in_flight();
            let _b = m.track_in_flight();
            let p = parse(&m.render());
            assert_eq!(p[&key("gw_requests_in_flight", &[])], 2.0);
            assert_eq!(p[&key("gw_active_connections", &[])], 1.0);
        }
        let p = parse(&m.render());
        assert_eq!(p[&key("gw_requests_in_flight", &[])], 0.0);
        assert_eq!(p[&key("gw_active_connections", &[])], 0.0);
        assert_eq!(
            p[&key("gw_config_reloads_total", &[("result", "applied")])],
            2.0
        );
        assert_eq!(
            p[&key("gw_config_reloads_total", &[("result", "rejected")])],
            3.0
        );
        assert_eq!(
            p[&key("gw_config_last_reload_success_timestamp_seconds", &[])],
            1_700_000_100.0
        );
        assert_eq!(p[&key(fail_ts, &[])], 1_700_000_250.0);
        assert_eq!(p[&key("gw_access_log_dropped_total", &[])], 0.0);
    }

    #[test]
    fn render_has_every_family_with_help_and_type() {
        let m = Metrics::new().unwrap();
        m.route("r", "u").record(HttpMethod::Get, 200, ms(1));
        m.endpoint("u", "e").observe(ms(1));
        m.ratelimit_policy("p");
        m.breaker("u").rejected();
        m.auth("r").failure("expired");
        m.ratelimit_policy("p").store_error("fail_open");
        m.reload().in_force("0123456789ab", UNIX_EPOCH);
        let text = m.render();
        let families = [
            ("gw_requests_total", "counter"),
            ("gw_request_duration_seconds", "histogram"),
            ("gw_upstream_duration_seconds", "histogram"),
            ("gw_upstream_errors_total", "counter"),
            ("gw_endpoint_healthy", "gauge"),
            ("gw_active_connections", "gauge"),
            ("gw_requests_in_flight", "gauge"),
            ("gw_ratelimit_decisions_total", "counter"),
            ("gw_ratelimit_store_errors_total", "counter"),
            ("gw_breaker_state", "gauge"),
            ("gw_breaker_transitions_total", "counter"),
            ("gw_breaker_rejected_total", "counter"),
            ("gw_auth_failures_total", "counter"),
            ("gw_config_reloads_total", "counter"),
            ("gw_config_last_reload_success_timestamp_seconds", "gauge"),
            ("gw_config_last_reload_failure_timestamp_seconds", "gauge"),
            ("gw_config_hash", "gauge"),
            ("gw_access_log_dropped_total", "counter"),
        ];
        for (name, ty) in families {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} {ty}\n")), "{name}");
        }
        assert_eq!(text.matches("# TYPE ").count(), families.len());
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4");
        // Label values from config are escaped.
        let m = Metrics::new().unwrap();
        m.route("we\"ird\\", "u\nx").count(HttpMethod::Get, 200);
        let p = parse(&m.render());
        let k = key(
            "gw_requests_total",
            &[
                ("route", "we\"ird\\"),
                ("upstream", "u\nx"),
                ("method", "GET"),
                ("status", "200"),
            ],
        );
        assert_eq!(p[&k], 1.0);
    }

    #[test]
    fn concurrent_recording_is_exact() {
        let m = Metrics::new().unwrap();
        let r = m.route("r", "u");
        let a = m.auth("r");
        let statuses = [200u16, 201, 404, 503];
        std::thread::scope(|s| {
            for t in 0..4 {
                let r = r.clone();
                let a = a.clone();
                s.spawn(move || {
                    for i in 0..10_000usize {
                        r.count(HttpMethod::Get, statuses[(i + t) % 4]);
                        a.failure(["a", "b", "c"][(i + t) % 3]);
                    }
                });
            }
        });
        let p = parse(&m.render());
        for st in statuses {
            let k = key(
                "gw_requests_total",
                &[
                    ("route", "r"),
                    ("upstream", "u"),
                    ("method", "GET"),
                    ("status", &st.to_string()),
                ],
            );
            assert_eq!(p[&k], 10_000.0);
        }
        let total: f64 = series(&p, "gw_auth_failures_total").map(|(_, v)| v).sum();
        assert_eq!(total, 40_000.0);
        assert_eq!(series(&p, "gw_auth_failures_total").count(), 3);
    }

    #[test]
    fn handles_are_send_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Metrics>();
        check::<RouteMetrics>();
        check::<EndpointMetrics>();
        check::<RateLimitMetrics>();
        check::<BreakerMetrics>();
        check::<AuthMetrics>();
        check::<ReloadMetrics>();
    }
}

// ---- Service discovery (self-contained block) ----------------------------------------------------------

/// The three discovery families (registered with the others in [`Metrics::with_buckets`]).
#[derive(Clone)]
struct DiscoveryFamilies {
    updates: IntCounterVec,
    endpoints: IntGaugeVec,
    last_success: prometheus::GaugeVec,
}

impl DiscoveryFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(DiscoveryFamilies {
            updates: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "gw_discovery_updates_total",
                        "Discovery fetches, by upstream, source (consul, dns, file) and result (success, failure).",
                    ),
                    &["upstream", "source", "result"],
                )?,
            )?,
            endpoints: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "gw_upstream_endpoints",
                        "Endpoints of the upstream from this source (static, consul, dns, file): the last good set.",
                    ),
                    &["upstream", "source"],
                )?,
            )?,
            last_success: reg(
                r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "gw_discovery_last_success_timestamp_seconds",
                        "Unix time of the upstream's last successful discovery fetch (0 if none yet).",
                    ),
                    &["upstream"],
                )?,
            )?,
        })
    }
}

impl Metrics {
    /// Handle for one upstream's discovery `source` (`consul`, `dns`, `file`); creates its series at 0.
    pub fn discovery(&self, upstream: &str, source: &str) -> DiscoveryMetrics {
        let d = &self.f.discovery;
        DiscoveryMetrics {
            success: d.updates.with_label_values(&[upstream, source, "success"]),
            failure: d.updates.with_label_values(&[upstream, source, "failure"]),
            endpoints: d.endpoints.with_label_values(&[upstream, source]),
            last_success: d.last_success.with_label_values(&[upstream]),
        }
    }

    /// `gw_upstream_endpoints{upstream, source}` for a source without a discovery loop (`static`).
    pub fn upstream_endpoints(&self, upstream: &str, source: &str) -> IntGauge {
        self.f
            .discovery
            .endpoints
            .with_label_values(&[upstream, source])
    }
}

/// Handle for one upstream's discovery outcomes; clone is cheap.
#[derive(Clone)]
pub struct DiscoveryMetrics {
    success: IntCounter,
    failure: IntCounter,
    endpoints: IntGauge,
    last_success: Gauge,
}

impl DiscoveryMetrics {
    /// A successful fetch that found `endpoints` endpoints, at `now`.
    pub fn success(&self, now: SystemTime, endpoints: usize) {
        self.success.inc();
        self.endpoints
            .set(i64::try_from(endpoints).unwrap_or(i64::MAX));
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success.set(secs);
    }

    /// A failed fetch (the endpoint gauge keeps the last good count).
    pub fn failure(&self) {
        self.failure.inc();
    }
}

#[cfg(test)]
mod discovery_tests {
    use super::*;

    #[test]
    fn discovery_series_render() {
        let m = Metrics::new().unwrap();
        let d = m.discovery("users", "consul");
        let text = m.render();
        assert!(
            text.contains(
                r#"gw_discovery_updates_total{result="failure",source="consul",upstream="users"} 0"#
            ),
            "{text}"
        );
        d.success(UNIX_EPOCH + Duration::from_secs(1_700_000_000), 3);
        d.failure();
        d.failure();
        m.upstream_endpoints("users", "static").set(2);
        let text = m.render();
        assert!(
            text.contains(
                r#"gw_discovery_updates_total{result="success",source="consul",upstream="users"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gw_discovery_updates_total{result="failure",source="consul",upstream="users"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"gw_upstream_endpoints{source="consul",upstream="users"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gw_upstream_endpoints{source="static",upstream="users"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gw_discovery_last_success_timestamp_seconds{upstream="users"} 1700000000"#
            ),
            "{text}"
        );
    }
}

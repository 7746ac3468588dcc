//! The runtime plan: what the compiler makes of a configuration. Immutable, fully validated, with every
//! name reference resolved to an index ("handle"), so serving a request never looks anything up by name.
//!
//! A plan is made of runtime specs only: it never holds a configuration (serde) type, every default is
//! applied, every path resolved and every check done, so start-up builds runtime objects from it without
//! re-validating anything. Runtime state (load balancers, health, counters, breakers, key sets) is
//! built from a plan by [`crate::proxy`] and indexed by the same handles.
use crate::policy::auth::{AuthSettings, RouteAuthSettings};
pub use crate::policy::rate_limit::{
    Backend as RateBackend, KeyFallback, KeySpec as RateKey, Mode as RateMode, OnStoreError,
    RedisConfig, Scope as RateScope,
};
use crate::routing::{rewrite::PathRewrite, RouteId, Router};
use http::HeaderValue;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Handle of an upstream: its index in [`Plan::upstreams`].
pub type UpstreamId = u32;
/// Handle of a rate limit: its index in [`Plan::rate_limits`].
pub type LimitId = u32;
/// Handle of a jwt policy: its index in [`Plan::auths`].
pub type AuthId = u32;

#[derive(Debug)]
/// A compiled configuration (see the module docs). Build one with [`crate::compile()`].
pub struct Plan {
    /// The file the plan was compiled from (for messages).
    pub source: String,
    /// Process-wide settings (`server`).
    pub server: ServerPlan,
    /// The listeners (`listeners`).
    pub listeners: Vec<ListenerPlan>,
    /// The admin listener (`admin`).
    pub admin: Option<AdminPlan>,
    /// Where access-log lines go.
    pub access_log: AccessLogSpec,
    /// Whether metrics are recorded (`observability.metrics`).
    pub metrics: bool,
    /// OTLP span export (`observability.tracing.otlp`), `None` when off.
    pub otlp: Option<OtlpPlan>,
    /// Upstreams, by [`UpstreamId`].
    pub upstreams: Vec<UpstreamPlan>,
    /// Routes, by route id.
    pub routes: Vec<RoutePlan>,
    /// The route matcher.
    pub router: Router,
    /// Rate-limit policies, by [`LimitId`].
    pub rate_limits: Vec<RateLimitPlan>,
    /// The one Redis server every Redis-backed limit uses (`None` when no limit uses Redis).
    pub rate_limit_redis: Option<RedisConfig>,
    /// JWT policies, by [`AuthId`].
    pub auths: Vec<AuthPlan>,
    /// First 12 hex digits of the SHA-256 of the configuration text (`gw_config_hash`).
    pub config_hash: String,
    /// Content fingerprints of the named elements, for the diff a reload reports.
    pub fingerprints: crate::config::load::Fingerprints,
}

/// Where access-log lines go; a file path is already resolved against the configuration's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogSpec {
    /// No access log.
    Off,
    /// JSON lines on stdout.
    Stdout,
    /// JSON lines appended to this file.
    File(PathBuf),
}

/// OTLP/HTTP span export, every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpPlan {
    /// The full traces URL (`http://` or `https://`).
    pub endpoint: String,
    /// Extra headers sent with every export.
    pub headers: Vec<(String, String)>,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Spans waiting for export at most (more are dropped and counted).
    pub queue_size: usize,
    /// Spans per export request at most.
    pub batch_size: usize,
    /// Longest wait of a partial batch.
    pub interval: Duration,
    /// Timeout of one export request.
    pub timeout: Duration,
}

/// How an upstream's endpoints are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadBalancing {
    /// Each endpoint in turn (weighted).
    RoundRobin,
    /// A random endpoint (weighted).
    Random,
    /// The endpoint with the fewest requests in flight.
    LeastConnections,
    /// Lowest moving average of response time.
    Fastest,
    /// A consistent hash of the given key.
    ConsistentHash(HashKey),
}

impl LoadBalancing {
    /// The DSL name (`round_robin`, ...), as written in a configuration.
    pub fn dsl_name(&self) -> &'static str {
        match self {
            LoadBalancing::RoundRobin => "round_robin",
            LoadBalancing::Random => "random",
            LoadBalancing::LeastConnections => "least_connections",
            LoadBalancing::Fastest => "fastest",
            LoadBalancing::ConsistentHash(_) => "consistent_hash",
        }
    }
    /// The hash key of consistent hashing.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match self {
            LoadBalancing::ConsistentHash(k) => Some(k),
            _ => None,
        }
    }
}

/// What a consistent hash is computed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The value of a request header.
    Header(http::HeaderName),
    /// The client IP.
    ClientIp,
    /// The upstream path (after rewrite, without the query).
    Path,
}

/// An upstream's discovery source, every default applied (see `crate::discovery::spec`).
pub use crate::discovery::SourceSpec as DiscoverySpec;

/// Outlier detection with every default applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSpec {
    /// Failures in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// The first ejection's length.
    pub base_ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// At most this share of the endpoints is ejected at once.
    pub max_ejected_percent: u32,
}

#[derive(Debug, Clone)]
/// Process-wide settings with every default applied (`server`).
pub struct ServerPlan {
    /// Worker threads: the configured count, or one per CPU the process may run on.
    pub threads: usize,
    /// How long a drain may take.
    pub grace_period: Duration,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Time a client has to send the request head.
    pub header_timeout: Duration,
    /// How long an idle client connection is kept.
    pub idle_timeout: Duration,
    /// Largest request body (unless a route says otherwise).
    pub max_body_size: Option<u64>,
    /// `server.reload`.
    pub reload: ReloadPlan,
    /// Which header trusted proxies report the client in (`server.client_ip_header`).
    pub client_ip_header: crate::proxy::headers::ClientIpHeader,
    /// The request-path policy (`server.path_policy`).
    pub path_policy: crate::routing::PathPolicy,
    /// Caps on concurrent client connections.
    pub connections: ConnectionLimits,
}

/// `server.reload`: watch the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Watch the configuration file and reload on change.
    pub watch: bool,
    /// Quiet time after the last change before the file is read.
    pub debounce: Duration,
}

/// Caps on concurrent client connections, applied to each listener separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once on one listener.
    pub max: usize,
    /// Most connections open at once from one client IP on one listener.
    pub per_ip: Option<usize>,
}

#[derive(Debug, Clone)]
/// A listener.
pub struct ListenerPlan {
    /// Its name.
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Its TLS settings (`None`: plain TCP).
    pub tls: Option<TlsPlan>,
}

#[derive(Debug, Clone)]
/// TLS settings of a listener.
pub struct TlsPlan {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// Offer HTTP/2 through ALPN.
    pub http2: bool,
}

#[derive(Debug, Clone)]
/// The admin listener.
pub struct AdminPlan {
    /// Its address.
    pub addr: SocketAddr,
    /// `None`: the admin API is off; only `/metrics`, `/healthz` and `/readyz` are served.
    pub token: Option<String>,
    /// `admin.state_file`, resolved against the configuration's directory: where registrations
    /// of the admin API persist (`None`: they last until restart).
    pub state_file: Option<PathBuf>,
}

/// Timeouts toward an upstream, with every default applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect timeout.
    pub connect: Duration,
    /// Time between reads of the upstream's response.
    pub read: Duration,
    /// Time between writes of the request.
    pub write: Duration,
    /// The whole upstream exchange; `None` = bounded only by `read`/`write` between bytes.
    pub request: Option<Duration>,
    /// How long an idle upstream connection is kept for reuse.
    pub idle: Duration,
}

impl Timeouts {
    /// The timeouts used when nothing is configured.
    pub const DEFAULT: Timeouts = Timeouts {
        connect: Duration::from_secs(3),
        read: Duration::from_secs(30),
        write: Duration::from_secs(30),
        request: None,
        idle: Duration::from_secs(60),
    };
}

#[derive(Debug, Clone, PartialEq)]
/// A configured endpoint.
pub struct EndpointPlan {
    /// `host:port` as written; resolved when the gateway starts.
    pub address: String,
    /// Its load-balancing weight.
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
/// An active health check.
pub struct HealthCheckPlan {
    /// The path probed.
    pub path: String,
    /// The `Host` header of a probe (the first endpoint's host), checked by the compiler.
    pub host: HeaderValue,
    /// Time between probes.
    pub interval: Duration,
    /// Timeout of one probe.
    pub timeout: Duration,
    /// Successes in a row that mark an endpoint healthy.
    pub healthy_threshold: u32,
    /// Failures in a row that mark an endpoint unhealthy.
    pub unhealthy_threshold: u32,
    /// Statuses that count as healthy.
    pub expected_status: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq)]
/// A circuit breaker with every default applied.
pub struct BreakerPlan {
    /// Failures in a row that open it.
    pub failure_threshold: u32,
    /// Successful probes in a row that close it.
    pub success_threshold: u32,
    /// How long it stays open before probing.
    pub open_duration: Duration,
    /// Probes allowed at once while half-open.
    pub half_open_max_calls: u32,
    /// The rate-based trip, if configured.
    pub rate: Option<BreakerRatePlan>,
    /// Whether connect errors count as failures.
    pub failure_connect: bool,
    /// Whether timeouts count as failures.
    pub failure_timeout: bool,
    /// Upstream statuses that count as failures.
    pub failure_statuses: Vec<u16>,
    /// What to do while open (`None`: 503).
    pub fallback: Option<FallbackPlan>,
}

#[derive(Debug, Clone, PartialEq)]
/// The rate-based trip of a breaker.
pub struct BreakerRatePlan {
    /// Window of the last N calls.
    pub calls: Option<u32>,
    /// Or a time window.
    pub period: Option<Duration>,
    /// Calls needed in the window before the rates count.
    pub min_calls: u32,
    /// Failure rate that opens the breaker.
    pub failure_rate_percent: Option<f64>,
    /// Slow-call rate that opens the breaker.
    pub slow_call_rate_percent: Option<f64>,
    /// A call slower than this is slow.
    pub slow_call_threshold: Duration,
}

#[derive(Debug, Clone, PartialEq)]
/// What a route answers while its upstream's breaker is open.
pub enum FallbackPlan {
    /// A configured response.
    Static {
        /// Its status.
        status: u16,
        /// Its headers.
        headers: Vec<(http::HeaderName, HeaderValue)>,
        /// Its body.
        body: bytes::Bytes,
    },
    /// Send the request to this upstream instead.
    Upstream(UpstreamId),
}

#[derive(Debug, Clone)]
/// An upstream with every default applied.
pub struct UpstreamPlan {
    /// Its name.
    pub name: Arc<str>,
    /// Its configured endpoints.
    pub endpoints: Vec<EndpointPlan>,
    /// Its discovery source, if any.
    pub discovery: Option<DiscoverySpec>,
    /// How endpoints are chosen.
    pub load_balancing: LoadBalancing,
    /// Its active health check, if any.
    pub health_check: Option<HealthCheckPlan>,
    /// Its timeouts.
    pub timeouts: Timeouts,
    /// Extra attempts after a failed connect (on another endpoint when there is one).
    pub retries: u32,
    /// Also retry idempotent requests after errors that may have reached the upstream.
    pub retry_idempotent: bool,
    /// Its circuit breaker, if any.
    pub breaker: Option<BreakerPlan>,
    /// Its outlier detection, if any.
    pub outlier: Option<OutlierSpec>,
}

/// A policy as applied to one route, in chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitRef {
    /// The limit's handle.
    pub limit: LimitId,
    /// The counter namespace: 0 for global scope, the upstream id or the route id otherwise.
    pub scope_id: u32,
}

#[derive(Debug, Clone)]
/// A route with every reference resolved.
pub struct RoutePlan {
    /// Its id (index in [`Plan::routes`]).
    pub id: RouteId,
    /// Its name.
    pub name: Arc<str>,
    /// The upstream it sends to.
    pub upstream: UpstreamId,
    /// How the path is rewritten for the upstream.
    pub rewrite: PathRewrite,
    /// Host sent upstream; `None` keeps the client's.
    pub host: Option<HeaderValue>,
    /// Its timeouts (the upstream's unless overridden).
    pub timeouts: Timeouts,
    /// Largest request body.
    pub max_body_size: Option<u64>,
    /// The auth policy, run first.
    pub auth: Option<AuthId>,
    /// Rate limits (global, then upstream, then route), checked together after auth.
    pub limits: Vec<LimitRef>,
    /// Fallback when the breaker is open (route's, else the upstream's).
    pub fallback: Option<FallbackPlan>,
}

#[derive(Debug, Clone, PartialEq)]
/// A rate-limit policy.
pub struct RateLimitPlan {
    /// Its name.
    pub name: Arc<str>,
    /// The window.
    pub window: Duration,
    /// Requests allowed per window and key.
    pub max: u64,
    /// What a request is counted under.
    pub key: RateKey,
    /// Whether counters are global, per upstream or per route.
    pub scope: RateScope,
    /// Local or Redis; the Redis server is [`Plan::rate_limit_redis`].
    pub backend: RateBackend,
    /// Enforce or only report (shadow).
    pub mode: RateMode,
    /// What to do when the Redis store fails.
    pub on_store_error: OnStoreError,
    /// Whether the `RateLimit` headers are sent.
    pub headers: bool,
}

#[derive(Debug, Clone)]
/// A jwt policy.
pub struct AuthPlan {
    /// Its name.
    pub name: Arc<str>,
    /// The authenticator's settings (key paths resolved, algorithms parsed).
    pub settings: AuthSettings,
    /// What a route using this policy requires (mode, claim requirements).
    pub route: RouteAuthSettings,
    /// How long start-up waits for the first key fetch.
    pub ready_timeout: Duration,
}

impl Plan {
    /// The route named `name`.
    pub fn route_by_name(&self, name: &str) -> Option<&RoutePlan> {
        self.routes.iter().find(|r| &*r.name == name)
    }
    /// The upstream of a handle.
    pub fn upstream(&self, id: UpstreamId) -> &UpstreamPlan {
        &self.upstreams[id as usize]
    }
}

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

pub type UpstreamId = u32;
pub type LimitId = u32;
pub type AuthId = u32;

#[derive(Debug)]
pub struct Plan {
    /// The file the plan was compiled from (for messages).
    pub source: String,
    pub server: ServerPlan,
    pub listeners: Vec<ListenerPlan>,
    pub admin: Option<AdminPlan>,
    pub access_log: AccessLogSpec,
    pub metrics: bool,
    /// OTLP span export (`observability.tracing.otlp`), `None` when off.
    pub otlp: Option<OtlpPlan>,
    pub upstreams: Vec<UpstreamPlan>,
    pub routes: Vec<RoutePlan>,
    pub router: Router,
    pub rate_limits: Vec<RateLimitPlan>,
    /// The one Redis server every Redis-backed limit uses (`None` when no limit uses Redis).
    pub rate_limit_redis: Option<RedisConfig>,
    pub auths: Vec<AuthPlan>,
    /// First 12 hex digits of the SHA-256 of the configuration text (`gw_config_hash`).
    pub config_hash: String,
    /// Content fingerprints of the named elements, for the diff a reload reports.
    pub fingerprints: crate::config::load::Fingerprints,
}

/// Where access-log lines go; a file path is already resolved against the configuration's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogSpec {
    Off,
    Stdout,
    File(PathBuf),
}

/// OTLP/HTTP span export, every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpPlan {
    /// The full traces URL (`http://` or `https://`).
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    pub queue_size: usize,
    pub batch_size: usize,
    pub interval: Duration,
    pub timeout: Duration,
}

/// How an upstream's endpoints are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadBalancing {
    RoundRobin,
    Random,
    LeastConnections,
    /// Lowest moving average of response time.
    Fastest,
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
    Header(http::HeaderName),
    ClientIp,
    /// The upstream path (after rewrite, without the query).
    Path,
}

/// An upstream's discovery source, every default applied (see `crate::discovery::spec`).
pub use crate::discovery::SourceSpec as DiscoverySpec;

/// Outlier detection with every default applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSpec {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u32,
}

#[derive(Debug, Clone)]
pub struct ServerPlan {
    pub threads: usize,
    pub grace_period: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_body_size: Option<u64>,
    /// `server.reload`.
    pub reload: ReloadPlan,
    /// Which header trusted proxies report the client in (`server.client_ip_header`).
    pub client_ip_header: crate::proxy::headers::ClientIpHeader,
    /// The request-path policy (`server.path_policy`).
    pub path_policy: crate::routing::PathPolicy,
    pub connections: ConnectionLimits,
}

/// `server.reload`: watch the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadPlan {
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
pub struct ListenerPlan {
    pub name: String,
    pub addr: SocketAddr,
    pub tls: Option<TlsPlan>,
}

#[derive(Debug, Clone)]
pub struct TlsPlan {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub http2: bool,
}

#[derive(Debug, Clone)]
pub struct AdminPlan {
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
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    /// The whole upstream exchange; `None` = bounded only by `read`/`write` between bytes.
    pub request: Option<Duration>,
    pub idle: Duration,
}

impl Timeouts {
    pub const DEFAULT: Timeouts = Timeouts {
        connect: Duration::from_secs(3),
        read: Duration::from_secs(30),
        write: Duration::from_secs(30),
        request: None,
        idle: Duration::from_secs(60),
    };
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointPlan {
    /// `host:port` as written; resolved when the gateway starts.
    pub address: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckPlan {
    pub path: String,
    /// The `Host` header of a probe (the first endpoint's host), checked by the compiler.
    pub host: HeaderValue,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub expected_status: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPlan {
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub open_duration: Duration,
    pub half_open_max_calls: u32,
    pub rate: Option<BreakerRatePlan>,
    pub failure_connect: bool,
    pub failure_timeout: bool,
    pub failure_statuses: Vec<u16>,
    pub fallback: Option<FallbackPlan>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerRatePlan {
    pub calls: Option<u32>,
    pub period: Option<Duration>,
    pub min_calls: u32,
    pub failure_rate_percent: Option<f64>,
    pub slow_call_rate_percent: Option<f64>,
    pub slow_call_threshold: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FallbackPlan {
    Static {
        status: u16,
        headers: Vec<(http::HeaderName, HeaderValue)>,
        body: bytes::Bytes,
    },
    Upstream(UpstreamId),
}

#[derive(Debug, Clone)]
pub struct UpstreamPlan {
    pub name: Arc<str>,
    pub endpoints: Vec<EndpointPlan>,
    pub discovery: Option<DiscoverySpec>,
    pub load_balancing: LoadBalancing,
    pub health_check: Option<HealthCheckPlan>,
    pub timeouts: Timeouts,
    /// Extra attempts after a failed connect (on another endpoint when there is one).
    pub retries: u32,
    /// Also retry idempotent requests after errors that may have reached the upstream.
    pub retry_idempotent: bool,
    pub breaker: Option<BreakerPlan>,
    pub outlier: Option<OutlierSpec>,
}

/// A policy as applied to one route, in chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitRef {
    pub limit: LimitId,
    /// The counter namespace: 0 for global scope, the upstream id or the route id otherwise.
    pub scope_id: u32,
}

#[derive(Debug, Clone)]
pub struct RoutePlan {
    pub id: RouteId,
    pub name: Arc<str>,
    pub upstream: UpstreamId,
    pub rewrite: PathRewrite,
    /// Host sent upstream; `None` keeps the client's.
    pub host: Option<HeaderValue>,
    pub timeouts: Timeouts,
    pub max_body_size: Option<u64>,
    /// The auth policy, run first.
    pub auth: Option<AuthId>,
    /// Rate limits (global, then upstream, then route), checked together after auth.
    pub limits: Vec<LimitRef>,
    /// Fallback when the breaker is open (route's, else the upstream's).
    pub fallback: Option<FallbackPlan>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitPlan {
    pub name: Arc<str>,
    pub window: Duration,
    pub max: u64,
    pub key: RateKey,
    pub scope: RateScope,
    /// Local or Redis; the Redis server is [`Plan::rate_limit_redis`].
    pub backend: RateBackend,
    pub mode: RateMode,
    pub on_store_error: OnStoreError,
    pub headers: bool,
}

#[derive(Debug, Clone)]
pub struct AuthPlan {
    pub name: Arc<str>,
    /// The authenticator's settings (key paths resolved, algorithms parsed).
    pub settings: AuthSettings,
    /// What a route using this policy requires (mode, claim requirements).
    pub route: RouteAuthSettings,
    /// How long start-up waits for the first key fetch.
    pub ready_timeout: Duration,
}

impl Plan {
    pub fn route_by_name(&self, name: &str) -> Option<&RoutePlan> {
        self.routes.iter().find(|r| &*r.name == name)
    }
    pub fn upstream(&self, id: UpstreamId) -> &UpstreamPlan {
        &self.upstreams[id as usize]
    }
}

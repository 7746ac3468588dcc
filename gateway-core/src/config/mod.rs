//! The configuration language: plain data that mirrors the YAML file, field by field.
//!
//! Every struct denies unknown fields; every enum with variants that carry settings is tagged by `type`;
//! durations and sizes carry their unit ([`units`]). Nothing here has behaviour: [`crate::compile()`] turns a
//! [`Config`] into a [`crate::plan::Plan`] and reports every problem at once. The field-by-field reference
//! lives in `docs/config.md`.
pub mod addr;
pub mod load;
pub mod schema;
pub mod spans;
pub(crate) mod split;
pub mod units;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
pub use units::{Dur, Size};

/// The top level of a gw configuration file. Sections stay raw here: [`load`] deserializes each element on
/// its own so that one bad route does not hide the errors in the next one.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: Option<serde_yaml::Value>,
    #[serde(default)]
    pub listeners: Option<serde_yaml::Value>,
    #[serde(default)]
    pub admin: Option<serde_yaml::Value>,
    #[serde(default)]
    pub observability: Option<serde_yaml::Value>,
    #[serde(default)]
    pub upstreams: Option<serde_yaml::Value>,
    #[serde(default)]
    pub routes: Option<serde_yaml::Value>,
    #[serde(default)]
    pub policies: Option<serde_yaml::Value>,
    #[serde(default)]
    pub global_policies: Option<serde_yaml::Value>,
}

/// A fully deserialized configuration. Element `i` of each list keeps its index for diagnostics.
#[derive(Debug, Default)]
pub struct Config {
    pub server: ServerConfig,
    pub listeners: Vec<ListenerConfig>,
    pub admin: Option<AdminConfig>,
    pub observability: ObservabilityConfig,
    pub upstreams: Vec<Option<UpstreamConfig>>,
    pub routes: Vec<Option<RouteConfig>>,
    pub policies: Vec<Option<PolicyConfig>>,
    pub global_policies: Vec<String>,
    /// Content fingerprints of the named elements (for the diff of a reload).
    pub fingerprints: load::Fingerprints,
}

/// Process-wide settings.
#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads per listener service (Pingora's `threads`), 1–1024. Absent: one per CPU the
    /// process may run on (CPU affinity and cgroup quota included).
    #[serde(default)]
    pub threads: Option<usize>,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(default = "default_grace")]
    pub grace_period: Dur,
    /// Peers whose `X-Forwarded-For` is believed when deriving the client IP (CIDR or single address).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Downstream limits: how long a client may take to send request headers, and keep-alive idle time.
    #[serde(default)]
    pub downstream: DownstreamConfig,
    /// Largest request body accepted (unless a route says otherwise); larger bodies get 413.
    #[serde(default)]
    pub max_body_size: Option<Size>,
    /// Hot reload of this file (see `docs/reload.md`).
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Which header trusted proxies report the client address in: `x_forwarded_for` (default) or
    /// `forwarded` (RFC 7239). Only that one header is ever read.
    #[serde(default)]
    pub client_ip_header: crate::proxy::headers::ClientIpHeader,
    /// Which request paths are refused as ambiguous, and what encoded slashes mean (secure default).
    #[serde(default)]
    pub path_policy: crate::routing::PathPolicy,
}

/// `server.reload`: reload the configuration file when it changes on disk.
#[derive(Debug, Deserialize, Clone, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the configuration file and reload when it changes (default false). A change is applied
    /// only once the file has been quiet for `debounce` and compiles without errors.
    #[serde(default)]
    pub watch: bool,
    /// How long the file must stay unchanged before it is read (default 300ms).
    #[serde(default = "default_debounce")]
    pub debounce: Dur,
}

fn default_debounce() -> Dur {
    Dur::from_millis(300)
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: false,
            debounce: default_debounce(),
        }
    }
}

fn default_grace() -> Dur {
    Dur::from_secs(5)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads: None,
            grace_period: default_grace(),
            trusted_proxies: vec![],
            downstream: DownstreamConfig::default(),
            max_body_size: None,
            reload: ReloadConfig::default(),
            client_ip_header: Default::default(),
            path_policy: Default::default(),
        }
    }
}

#[derive(Debug, Deserialize, Clone, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamConfig {
    /// Time a client has to send a complete request header.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    /// How long an idle keep-alive connection from a client is kept.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// Most client connections open at once on each listener; further connections are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// Most client connections open at once from one client address on each listener (unlimited when
    /// unset).
    #[serde(default)]
    pub max_connections_per_ip: Option<u64>,
}

fn default_max_connections() -> u64 {
    10_000
}

fn default_header_timeout() -> Dur {
    Dur::from_secs(10)
}
fn default_idle_timeout() -> Dur {
    Dur::from_secs(60)
}

impl Default for DownstreamConfig {
    fn default() -> Self {
        DownstreamConfig {
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_ip: None,
        }
    }
}

/// A public listener.
#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    /// `host:port`, e.g. `0.0.0.0:8080` or `127.0.0.1:8443`.
    #[schemars(schema_with = "addr::socket_address_schema")]
    pub address: String,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// Offer HTTP/2 through ALPN (default true).
    #[serde(default = "yes")]
    pub http2: bool,
}

fn yes() -> bool {
    true
}

/// The admin listener serves `/metrics`, `/healthz`, `/readyz` and the admin API.
#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Defaults to loopback: `127.0.0.1:9901`.
    #[serde(default = "default_admin_addr")]
    #[schemars(schema_with = "addr::socket_address_schema")]
    pub address: String,
    /// Bearer token required by the admin API (not by `/metrics`, `/healthz`, `/readyz`). Use `${ENV}`.
    /// Without a token the admin API is off and only the read-only endpoints are served.
    #[serde(default)]
    pub token: Option<String>,
    /// File where endpoints registered through the admin API are kept (written atomically on each
    /// change, re-applied at start). Without it, registrations last until the process exits.
    #[serde(default)]
    pub state_file: Option<String>,
}

fn default_admin_addr() -> String {
    "127.0.0.1:9901".into()
}

#[derive(Debug, Deserialize, Clone, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObservabilityConfig {
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// Enable Prometheus metrics (served on the admin listener).
    #[serde(default = "yes")]
    pub metrics: bool,
    /// W3C trace context is always propagated; this adds the optional span export.
    #[serde(default)]
    pub tracing: TracingConfig,
}

/// `observability.tracing` (`docs/observability.md`, "Tracing").
#[derive(Debug, Deserialize, Clone, Default, PartialEq, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Export one span per request over OTLP/HTTP (protobuf); off when absent.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

/// `observability.tracing.otlp`: where and how spans are exported. Defaults are applied by the
/// compiler (`compile/tracing.rs`).
#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The full OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// Extra request headers (e.g. an API key for a hosted collector).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `service.name` of the exported resource (default `gw`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Spans waiting for export at most; more are dropped and counted (default 2048).
    #[serde(default)]
    pub queue_size: Option<usize>,
    /// Spans per export request at most (default 512).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Longest wait before a partial batch is sent (default `1s`).
    #[serde(default)]
    pub interval: Option<Dur>,
    /// Timeout of one export request (default `10s`).
    #[serde(default)]
    pub timeout: Option<Dur>,
}

/// Same as an empty `observability:` section (metrics on), for configs without one.
impl Default for ObservabilityConfig {
    fn default() -> Self {
        ObservabilityConfig {
            access_log: AccessLogConfig::default(),
            metrics: true,
            tracing: TracingConfig::default(),
        }
    }
}

// Variants without settings are written `Name {}`: serde ignores unknown fields on unit variants of
// tagged enums, and a typo must never be accepted silently.
#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AccessLogConfig {
    Off {},
    Stdout {},
    File { path: String },
}

// One set of enums for the DSL and the runtime: the rate limiter's own (they deserialize from the DSL).
pub use crate::policy::rate_limit::{
    KeyFallback, Mode as RateMode, OnStoreError, Scope as RateScope,
};

/// An upstream service: where its instances are and how traffic is spread over them.
#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// Static endpoints. Either this or `discovery` (or both: discovery then adds to them).
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    #[serde(default)]
    pub discovery: Option<DiscoveryConfig>,
    #[serde(default)]
    pub load_balancing: LoadBalancingConfig,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub retries: Option<RetryConfig>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierConfig>,
    /// Policies (by name) that apply to every route whose upstream this is.
    #[serde(default)]
    pub policies: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// `host:port`.
    #[schemars(schema_with = "addr::endpoint_address_schema")]
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Where an upstream's dynamic endpoints come from (`docs/discovery.md`). Every duration has a unit;
/// defaults are applied by the compiler (`compile/discovery.rs`), which also checks every field.
#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DiscoveryConfig {
    /// Only the `endpoints` listed.
    Static {},
    /// Resolve `host` and re-resolve at the record TTL, bounded by `min_interval`/`max_interval`.
    Dns {
        host: String,
        /// Port of every address (`record: a`); not allowed with `record: srv` (the record has it).
        #[serde(default)]
        port: Option<u16>,
        /// `a` (A and AAAA records; the default) or `srv`.
        #[serde(default)]
        record: DnsRecordConfig,
        /// `IP:port` of the DNS server to ask; the system resolver (`/etc/resolv.conf`) when absent.
        #[serde(default)]
        #[schemars(schema_with = "addr::socket_address_or_null_schema")]
        resolver: Option<String>,
        /// Shortest time between two resolutions (default `1s`).
        #[serde(default)]
        min_interval: Option<Dur>,
        /// Longest time between two resolutions (default `60s`).
        #[serde(default)]
        max_interval: Option<Dur>,
    },
    /// Ask a Consul agent for the passing instances of `service`, with blocking queries.
    Consul {
        /// `http://host:port` or `https://host:port` of the Consul agent.
        url: String,
        service: String,
        /// Shortest time between two queries (default `1s`).
        #[serde(default)]
        interval: Option<Dur>,
        /// How long Consul may hold a blocking query (default `5m`, at most `10m`).
        #[serde(default)]
        wait: Option<Dur>,
        /// Only instances carrying this tag.
        #[serde(default)]
        tag: Option<String>,
        /// Datacenter to query (the agent's own when absent).
        #[serde(default)]
        datacenter: Option<String>,
        /// ACL token, sent as `X-Consul-Token` (never logged).
        #[serde(default)]
        token: Option<String>,
        /// PEM CA bundle to trust for an `https://` URL (besides the built-in roots).
        #[serde(default)]
        ca_file: Option<String>,
    },
    /// Read endpoints from a file (YAML/JSON list of `{address, weight}`, or `host:port [weight]` lines),
    /// re-read when it changes and every `interval` (default `5s`).
    File {
        path: String,
        #[serde(default)]
        interval: Option<Dur>,
    },
}

/// DNS record type of `discovery: {type: dns}`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsRecordConfig {
    /// A and AAAA: every address on the configured `port`.
    #[default]
    A,
    /// SRV: target, port and weight from each record.
    Srv,
}

#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadBalancingConfig {
    RoundRobin {},
    Random {},
    LeastConnections {},
    /// Lowest exponentially weighted moving average of response time.
    Fastest {},
    ConsistentHash {
        key: HashKeyConfig,
    },
}

#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HashKeyConfig {
    Header { name: String },
    ClientIp {},
    Path {},
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// HTTP path probed with GET.
    pub path: String,
    pub interval: Dur,
    #[serde(default = "default_hc_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_one")]
    pub healthy_threshold: u32,
    #[serde(default = "default_one")]
    pub unhealthy_threshold: u32,
    /// Statuses that count as healthy (default: 200).
    #[serde(default = "default_expected")]
    pub expected_status: Vec<u16>,
}

fn default_hc_timeout() -> Dur {
    Dur::from_secs(2)
}
fn default_one() -> u32 {
    1
}
fn default_expected() -> Vec<u16> {
    vec![200]
}

/// Timeouts toward the upstream. Unset fields inherit (route → upstream → built-in default).
#[derive(Debug, Deserialize, Clone, Default, PartialEq, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP (and TLS) connect.
    #[serde(default)]
    pub connect: Option<Dur>,
    /// Between reads of the upstream's response (time to first byte and between chunks).
    #[serde(default)]
    pub read: Option<Dur>,
    /// Between writes of the request body to the upstream.
    #[serde(default)]
    pub write: Option<Dur>,
    /// The whole exchange with the upstream, response body included.
    #[serde(default)]
    pub request: Option<Dur>,
    /// How long an idle pooled upstream connection is kept.
    #[serde(default)]
    pub idle: Option<Dur>,
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Extra attempts after the first one (0 disables).
    pub attempts: u32,
    /// Also retry after the request may have reached the upstream (only ever for idempotent methods).
    #[serde(default)]
    pub idempotent_on_error: bool,
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub open_duration: Dur,
    #[serde(default = "default_one")]
    pub half_open_max_calls: u32,
    #[serde(default)]
    pub rate: Option<BreakerRateConfig>,
    #[serde(default)]
    pub failure_on: Option<FailureOnConfig>,
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerRateConfig {
    /// Either `calls: N` (the last N calls) or `period: 30s` (the last T).
    #[serde(default)]
    pub calls: Option<u32>,
    #[serde(default)]
    pub period: Option<Dur>,
    pub min_calls: u32,
    #[serde(default)]
    pub failure_rate_percent: Option<f64>,
    #[serde(default)]
    pub slow_call_rate_percent: Option<f64>,
    #[serde(default)]
    pub slow_call_threshold: Option<Dur>,
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureOnConfig {
    #[serde(default = "yes")]
    pub connect_error: bool,
    #[serde(default = "yes")]
    pub timeout: bool,
    /// Upstream statuses that count as failures (default 500, 502, 503, 504).
    #[serde(default)]
    pub statuses: Option<Vec<u16>>,
}

#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FallbackConfig {
    /// A static degraded answer.
    Static {
        status: u16,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: String,
    },
    /// Send the request to another upstream instead.
    Upstream { upstream: String },
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub base_ejection: Dur,
    #[serde(default)]
    pub max_ejection: Option<Dur>,
    #[serde(default = "default_max_ejected")]
    pub max_ejected_percent: u32,
}

fn default_max_ejected() -> u32 {
    50
}

/// A route: which requests it takes, how it rewrites them, where they go and which policies apply.
#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    #[serde(default)]
    pub rewrite: Option<RewriteConfig>,
    pub upstream: String,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub policies: Vec<String>,
    /// Largest request body for this route (overrides `server.max_body_size`).
    #[serde(default)]
    pub max_body_size: Option<Size>,
    /// Per-route circuit-breaker fallback (overrides the upstream's).
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
}

#[derive(Debug, Deserialize, Clone, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Exactly this path.
    #[serde(default)]
    pub path: Option<String>,
    /// This path and everything below it, on segment boundaries (`/api/user` takes `/api/user` and
    /// `/api/user/42`, not `/api/username`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Segments with named parameters: `/users/{id}`, `/files/{rest*}` (the last may take the rest).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Hosts, exact (`api.example.com`) or one leading wildcard label (`*.example.com`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Methods (upper case). Empty means any.
    #[serde(default)]
    #[schemars(schema_with = "schema::methods_schema")]
    pub methods: Vec<String>,
    /// Required headers: name → exact value (`"*"` means present with any value).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Clone, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// Remove the matched prefix (prefix routes only); `/api/user/42` → `/42`.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Replace the path with this template, which may use the pattern's parameters: `/v2/users/{id}`.
    #[serde(default)]
    pub path: Option<String>,
    /// Set the Host header sent upstream (default: the client's Host is kept).
    #[serde(default)]
    pub host: Option<String>,
}

/// A named policy; `type` says which kind.
#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PolicyConfig {
    RateLimit(RateLimitConfig),
    Jwt(Box<JwtConfig>),
}

impl PolicyConfig {
    pub fn name(&self) -> &str {
        match self {
            PolicyConfig::RateLimit(r) => &r.name,
            PolicyConfig::Jwt(j) => &j.name,
        }
    }
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub name: String,
    pub window: Dur,
    pub max: u64,
    pub key: RateKeyConfig,
    #[serde(default)]
    pub scope: RateScope,
    #[serde(default)]
    pub store: RateStoreConfig,
    #[serde(default)]
    pub mode: RateMode,
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// Emit `RateLimit`/`RateLimit-Policy`/`X-RateLimit-*` headers (default true).
    #[serde(default = "yes")]
    pub headers: bool,
}

#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RateKeyConfig {
    /// The client IP (from `X-Forwarded-For` only when the peer is a trusted proxy).
    ClientIp {},
    /// A claim of the verified JWT, e.g. `sub`; `fallback: client_ip` when absent (else the request is
    /// counted under one shared "anonymous" key).
    JwtClaim {
        claim: String,
        #[serde(default)]
        fallback: Option<KeyFallback>,
    },
    Header {
        name: String,
        #[serde(default)]
        fallback: Option<KeyFallback>,
    },
    /// One counter per route (all clients share it).
    Route {},
    /// Several parts joined.
    Composite { parts: Vec<RateKeyConfig> },
}

#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RateStoreConfig {
    Local {},
    /// Shared counters in Redis: one server (`url`), a Redis Cluster (`cluster: true` and/or
    /// several `nodes` as seeds) or a Sentinel-managed primary (`master` with the sentinels in
    /// `nodes`/`url`, or `url: redis+sentinel://host:port[,host:port]/master`).
    Redis {
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        nodes: Vec<String>,
        #[serde(default)]
        cluster: bool,
        #[serde(default)]
        master: Option<String>,
        #[serde(default)]
        timeout: Option<Dur>,
        /// Share of each quota one instance enforces while Redis fails (`on_store_error:
        /// local`): `auto` (default: 1 / live instances, from a heartbeat) or a number in (0, 1].
        #[serde(default)]
        outage_share: Option<OutageShareConfig>,
    },
}

/// `outage_share:` — the word `auto` or a number in (0, 1].
#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema, Serialize)]
#[serde(untagged)]
pub enum OutageShareConfig {
    /// This instance's fixed share of each quota while the store is unreachable.
    Fixed(#[schemars(range(min = 0.0, max = 1.0))] f64),
    /// `auto`: learned from the live instances' heartbeat.
    Word(#[schemars(regex(pattern = r"^auto$"))] String),
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub name: String,
    /// `realm` in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
    pub keys: JwtKeysConfig,
    #[serde(default)]
    pub issuer: Vec<String>,
    #[serde(default)]
    pub audience: Vec<String>,
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// `required` (default): no valid token → 401. `optional`: verified when present.
    #[serde(default)]
    pub mode: JwtMode,
    #[serde(default)]
    pub token_from: TokenSourceConfig,
    #[serde(default)]
    pub require: Option<RequireConfig>,
    /// Claims forwarded upstream as headers.
    #[serde(default)]
    pub forward: Vec<ForwardClaimConfig>,
}

fn default_realm() -> String {
    "gw".into()
}
fn default_leeway() -> Dur {
    Dur::from_secs(30)
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JwtMode {
    #[default]
    Required,
    Optional,
}

#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum JwtKeysConfig {
    /// A shared secret for HS256/384/512.
    Hmac {
        secret: String,
        #[serde(default = "default_hs")]
        algorithms: Vec<String>,
    },
    /// PEM public key files (RSA, EC or Ed25519), each optionally with a `kid`.
    Pem {
        files: Vec<PemKeyConfig>,
        algorithms: Vec<String>,
    },
    /// A JWKS document from a URL or a file.
    Jwks {
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        path: Option<String>,
        #[serde(default = "default_jwks_refresh")]
        refresh: Dur,
        #[serde(default = "default_jwks_ready")]
        ready_timeout: Dur,
        algorithms: Vec<String>,
    },
}

fn default_hs() -> Vec<String> {
    vec!["HS256".into()]
}
fn default_jwks_refresh() -> Dur {
    Dur::from_secs(300)
}
fn default_jwks_ready() -> Dur {
    Dur::from_secs(5)
}

#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PemKeyConfig {
    pub path: String,
    #[serde(default)]
    pub kid: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Default, PartialEq, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSourceConfig {
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
}

#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireConfig {
    /// Dotted claim path: `roles`, `realm_access.roles`, `scope` (space-separated string or array).
    pub claim: String,
    #[serde(default)]
    pub any_of: Vec<String>,
    #[serde(default)]
    pub all_of: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardClaimConfig {
    pub claim: String,
    pub header: String,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig::Off {}
    }
}

impl Default for LoadBalancingConfig {
    fn default() -> Self {
        LoadBalancingConfig::RoundRobin {}
    }
}

impl Default for RateStoreConfig {
    fn default() -> Self {
        RateStoreConfig::Local {}
    }
}

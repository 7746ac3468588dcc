//! Configuration types: one [`LimitSpec`] per named limit, store settings, and the handle
//! ([`LimitRef`]) a request uses to name a limit on the hot path.

use std::sync::Arc;
use std::time::Duration;

/// Whether a limit may reject requests (also the DSL's `mode:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema, serde::Serialize)]
pub enum Mode {
    /// Requests over the limit are rejected.
    #[default]
    Enforce,
    /// Evaluated and reported (`Outcome::ShadowRejected`) but never rejects (and never sets
    /// `Retry-After`). With `emit_headers` it supplies the rate-limit headers of requests that
    /// no enforcing limit supplies headers for, so clients can see a limit before it is
    /// enforced; set `emit_headers: false` to keep it invisible. Quota is still consumed for
    /// requests that fit, as in enforce mode.
    Shadow,
}

/// What a Redis-backed limit does when Redis fails, times out or is in back-off (also the DSL's
/// `on_store_error:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema, serde::Serialize)]
pub enum OnStoreError {
    /// Admit (fail open).
    Allow,
    /// Reject (fail closed; a shadow limit only reports `ShadowRejected`).
    Deny,
    /// Enforce the same quota with a per-process local limiter (the default).
    #[default]
    Local,
}

/// Where a limit keeps its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// In-process sharded table; the quota is per gateway process.
    #[default]
    Local,
    /// Shared Redis counters; the quota is global across gateway processes.
    Redis,
}

impl OnStoreError {
    /// The DSL name (`allow`, `deny`, `local`).
    pub fn as_str(self) -> &'static str {
        match self {
            OnStoreError::Allow => "allow",
            OnStoreError::Deny => "deny",
            OnStoreError::Local => "local",
        }
    }
}

/// Which requests share a counter (also the DSL's `scope:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema, serde::Serialize)]
pub enum Scope {
    /// One counter per key, whatever route or upstream the request goes to.
    #[default]
    Global,
    /// One counter per key per upstream.
    Upstream,
    /// One counter per key per route.
    Route,
}

/// What a request is counted under (the compiled form of the DSL's `key:`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// The client IP.
    ClientIp,
    /// A claim of the verified JWT; `fallback` when absent (else one shared "anonymous" key).
    JwtClaim {
        /// Parsed once, when the plan is compiled.
        claim: crate::policy::auth::ClaimPath,
        fallback: Option<KeyFallback>,
    },
    /// A request header; `fallback` when absent.
    Header {
        name: http::HeaderName,
        fallback: Option<KeyFallback>,
    },
    /// One counter per route.
    Route,
    /// Several parts joined with `+`.
    Composite(Vec<KeySpec>),
}

/// What a key part falls back to when its source is missing (also the DSL's `fallback:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema, serde::Serialize)]
pub enum KeyFallback {
    ClientIp,
}

/// One named limit: at most `max` cost units per sliding `window`.
#[derive(Debug, Clone)]
pub struct LimitSpec {
    /// Policy name; shown in `RateLimit-Policy` and used in Redis key names. Must be unique.
    pub name: Arc<str>,
    /// Window length; any duration >= 1 ms (sub-millisecond parts are truncated).
    pub window: Duration,
    /// Quota per window.
    pub max: u64,
    pub mode: Mode,
    /// Whether this limit may supply the response's rate-limit headers.
    pub emit_headers: bool,
    /// Only used by Redis-backed limits.
    pub on_store_error: OnStoreError,
    pub backend: Backend,
}

impl LimitSpec {
    /// An enforcing, header-emitting, local limit with `OnStoreError::Local`.
    pub fn new(name: &str, window: Duration, max: u64) -> Self {
        LimitSpec {
            name: Arc::from(name),
            window,
            max,
            mode: Mode::Enforce,
            emit_headers: true,
            on_store_error: OnStoreError::Local,
            backend: Backend::Local,
        }
    }
}

/// Cheap handle to a limit of a [`super::RateLimiter`]: its index in the spec list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitRef(pub(crate) u32);

impl LimitRef {
    /// Index of the limit in the spec list given to `RateLimiter::new`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Settings of the in-process store (also used for the Redis fallback table).
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Number of lock shards (rounded up to a power of two, at least 1).
    pub shards: usize,
    /// Upper bound on keys held by each local limit (and by the Redis fallback store, all limits
    /// together); see the module doc for eviction.
    pub max_keys: usize,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            shards: 64,
            max_keys: 1_000_000,
        }
    }
}

/// How the Redis store reaches Redis.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RedisTopology {
    /// One server at [`RedisConfig::url`] (reconnects to the same address).
    #[default]
    Standalone,
    /// A Redis Cluster discovered from these seed node URLs (`redis://host:port`); slots,
    /// `MOVED`/`ASK` redirections and failovers are handled by the `redis` crate's cluster client.
    Cluster(Vec<String>),
    /// A primary managed by Sentinel: the sentinels' URLs and the monitored master's name. The
    /// primary is looked up through the sentinels on (re)connect, so a promoted replica is
    /// followed without a restart.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// Settings of the Redis store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// e.g. `redis://127.0.0.1:6379/` (for a cluster or Sentinel: the form shown in diagnostics).
    pub url: String,
    /// Standalone, cluster or Sentinel.
    pub topology: RedisTopology,
    /// Share of each limit's quota this instance enforces on its own while Redis fails
    /// (`on_store_error: local`), in parts per million; `None` = learned: 1 / the number of
    /// live gateway instances seen in the Redis heartbeat before the failure.
    pub outage_share_ppm: Option<u32>,
    /// Upper bound for one `check_all` round trip (default 50 ms).
    pub timeout: Duration,
    /// After a failure Redis is not tried again for this long (default 1 s).
    pub backoff: Duration,
    /// At most one `tracing::warn!` per this interval (default 5 s).
    pub warn_interval: Duration,
    /// Upper bound for one connection attempt (default 500 ms).
    pub connect_timeout: Duration,
}

impl RedisConfig {
    pub fn new(url: &str) -> Self {
        RedisConfig {
            url: url.to_owned(),
            topology: RedisTopology::Standalone,
            outage_share_ppm: None,
            timeout: Duration::from_millis(50),
            backoff: Duration::from_secs(1),
            warn_interval: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(500),
        }
    }
}

/// Everything `RateLimiter::new` needs besides the specs.
#[derive(Debug, Clone, Default)]
pub struct RateLimiterConfig {
    pub local: LocalConfig,
    /// Required iff some spec has `Backend::Redis`.
    pub redis: Option<RedisConfig>,
}

/// Invalid configuration, reported by `RateLimiter::new`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("rate limit {0:?}: window must be at least 1 ms")]
    ZeroWindow(String),
    #[error("rate limit {0:?}: duplicate name")]
    DuplicateName(String),
    #[error("rate limit {0:?}: Redis backend but no Redis configured")]
    NoRedis(String),
    #[error("invalid Redis URL: {0}")]
    RedisUrl(String),
    #[error("rate limit {0:?}: max * window_ms must stay below 2^53 for the Redis script")]
    TooLargeForRedis(String),
    #[error("too many limits")]
    TooMany,
}

//! Gateway observability: Prometheus metrics and a structured JSON access log.
//!
//! * [`metrics`]: a [`Metrics`] registry (private `prometheus::Registry`, not the global one)
//!   plus pre-resolved per-route / per-endpoint / per-policy handles, so the per-request hot
//!   path does no label hashing and no string formatting. [`Metrics::render`] produces the
//!   text exposition format 0.0.4 for `GET /metrics` (use [`metrics::CONTENT_TYPE`]).
//! * [`access_log`]: one JSON line per request ([`AccessLogRecord`]), serialized into a
//!   pooled buffer and handed to a background writer thread through a bounded channel;
//!   lines are dropped (and counted) rather than blocking the request path.
//!
//! # Metrics
//!
//! | name | type | labels | meaning |
//! |------|------|--------|---------|
//! | `gw_requests_total` | counter | `route`, `upstream`, `method`, `status` | Requests completed. `method` is one of `GET HEAD POST PUT DELETE PATCH OPTIONS OTHER`; `status` is the exact response code sent to the client. Unrouted requests use `route=""`, `upstream=""`. |
//! | `gw_request_duration_seconds` | histogram | `route`, `upstream` | Whole-request latency as seen by the client (request start to response end). Buckets: [`metrics::DEFAULT_DURATION_BUCKETS`] (1 ms .. 60 s) unless overridden. |
//! | `gw_upstream_duration_seconds` | histogram | `upstream`, `endpoint` | Latency of one upstream attempt (connect start to response end); retries observe once per attempt. |
//! | `gw_upstream_errors_total` | counter | `upstream`, `endpoint`, `kind` | Failed upstream attempts; `kind` is `connect`, `timeout` or `5xx`. |
//! | `gw_endpoint_healthy` | gauge | `upstream`, `endpoint` | 1 if health checking considers the endpoint healthy, else 0. |
//! | `gw_active_connections` | gauge | — | Open downstream (client) connections of the proxy listeners (not the admin listener); counted per connection around the proxy app (`proxy::server`), after the TLS handshake. |
//! | `gw_requests_in_flight` | gauge | — | Requests currently being processed. |
//! | `gw_ratelimit_decisions_total` | counter | `policy`, `decision` | Rate-limit decisions; `decision` is `allowed`, `rejected` (answered 429) or `shadow_rejected` (would have been rejected, policy in shadow mode, request let through). |
//! | `gw_ratelimit_store_errors_total` | counter | `policy`, `action` | Failures of the rate-limit store (e.g. Redis); `action` is what the limiter did instead: the policy's `on_store_error` (`allow`, `deny`, `local`). |
//! | `gw_breaker_state` | gauge | `upstream` | Circuit-breaker state: 0 closed, 1 half-open, 2 open. |
//! | `gw_breaker_transitions_total` | counter | `upstream`, `from`, `to` | Breaker state changes; `from`/`to` are `closed`, `half_open`, `open` (the six `from != to` series are created at 0). |
//! | `gw_breaker_rejected_total` | counter | `upstream` | Requests refused by an open (or saturated half-open) breaker. |
//! | `gw_auth_failures_total` | counter | `route`, `reason` | Authentication/authorization failures; `reason` is `AuthReason::as_str` (`missing`, `malformed`, `expired`, `not_yet_valid`, `bad_signature`, `bad_issuer`, `bad_audience`, `unknown_kid`, `missing_kid`, `disallowed_alg`, `missing_claim`, `keys_unavailable`, `insufficient_scope`). |
//! | `gw_config_reloads_total` | counter | `result` | Configuration reload attempts (admin API, SIGHUP, file watch, `Engine::reload`); `result` is `applied` or `rejected`. |
//! | `gw_config_last_reload_success_timestamp_seconds` | gauge | — | Unix time of the last successful configuration load (start-up or reload). |
//! | `gw_config_last_reload_failure_timestamp_seconds` | gauge | — | Unix time of the last rejected reload (0 if none); later than the success timestamp = the file on disk is not in force. |
//! | `gw_config_hash` | gauge | `hash` | 1 for the configuration in force, labelled with the first 12 hex digits of the SHA-256 of its text. |
//! | `gw_discovery_updates_total` | counter | `upstream`, `source`, `result` | Discovery fetches; `source` is `consul`, `dns` or `file`, `result` is `success` or `failure` (a failure keeps the last good endpoints). |
//! | `gw_upstream_endpoints` | gauge | `upstream`, `source` | Endpoints of the upstream from that source (`static`, `consul`, `dns`, `file`): the last good set. |
//! | `gw_discovery_last_success_timestamp_seconds` | gauge | `upstream` | Unix time of the last successful discovery fetch (0 until the first). |
//! | `gw_access_log_dropped_total` | counter | — | Access-log lines dropped because the writer queue was full (only if the counter from [`Metrics::access_log_dropped`] is passed to [`AccessLogConfig::drop_counter`]). |
//!
//! Series of a labelled family appear in the output once created: endpoint, policy, breaker
//! and reload handles create their fixed series (at 0) when built; a route's
//! `gw_request_duration_seconds` series appears with its first request and its
//! `gw_requests_total` series on the first request with that (method, status) (so idle routes
//! of a big configuration cost neither memory nor series); `reason`/`action` series on first
//! use (or up front via [`Metrics::auth_with_reasons`] and
//! [`RateLimitMetrics::expect_store_errors`], which the runtime calls for Redis-backed policies).
//! Series of what a reload removes are deleted ([`Metrics::retain_series`]).
//!
//! # Wiring (sketch)
//!
//! ```ignore
//! // startup
//! let metrics = Metrics::new()?;
//! let log = AccessLog::new(AccessLogConfig {
//!     sink: AccessLogSink::File("/var/log/gw/access.log".into()),
//!     drop_counter: Some(metrics.access_log_dropped()),
//!     ..Default::default()
//! })?;
//! // plan compile: store handles in the compiled route / upstream
//! let rm = metrics.route(&route.name, &route.upstream);
//! // request path
//! let _in_flight = metrics.track_in_flight();          // held in the per-request ctx
//! rm.record(HttpMethod::parse(method), status, started.elapsed());
//! log.log(&AccessLogRecord { ts: SystemTime::now(), /* borrowed fields */ .. });
//! ```

pub mod access_log;
pub mod metrics;
pub mod otlp;

pub use access_log::{
    duration_ms, AccessLog, AccessLogConfig, AccessLogRecord, AccessLogSink, LogOutcome,
    UtcTimestamp,
};
pub use metrics::{
    AuthMetrics, BreakerMetrics, BreakerState, DiscoveryMetrics, EndpointMetrics, GaugeGuard,
    HttpMethod, LiveSeries, Metrics, RateLimitMetrics, ReloadMetrics, RouteMetrics,
    UpstreamErrorKind,
};

//! Sliding-window rate limiting for the gateway, with an in-process store and a Redis store.
//!
//! # Algorithm: sliding-window counter
//! Each (limit, key) keeps two counters: requests in the current fixed window (`curr`) and in
//! the previous one (`prev`), windows being aligned to the unix epoch (`index = now_ms /
//! window_ms`). With `elapsed` ms into the current window the load estimate is
//!
//! ```text
//! estimate = prev * (1 - elapsed / window) + curr
//! ```
//!
//! and a request of cost `c` is admitted iff `estimate + c <= max`; it then adds `c` to `curr`.
//! The comparison is done exactly in integers (`prev*(window-elapsed) + (curr+c)*window <=
//! max*window`), so local and Redis decisions agree and there is no float rounding.
//! Windows may be any length >= 1 ms (1 s, a minute, hours): a per-minute limit is a 60 s window.
//!
//! # Accuracy
//! The estimate assumes the previous window's requests were spread evenly over it. Properties:
//! - never more than `max` admitted within one fixed window (the estimate is >= `curr`);
//! - in any sliding interval of one window length at most `2 * max` in the worst case (all of
//!   the previous window's requests at its very end, then a burst as it decays); for traffic
//!   that is roughly uniform the error is small (Cloudflare reported ~0.003% of 400M requests
//!   wrongly allowed or limited with this scheme);
//! - under sustained saturation admitted load converges to `max` per window; measured in the
//!   concurrency test (64 tasks, 1 s windows, max 1000): see the numbers below.
//!
//! # Headers
//! `remaining = floor(max - estimate)` (after this request if admitted). `reset` (`t`, also
//! `X-RateLimit-Reset`) is the time, rounded up to whole seconds, until the current fixed window
//! ends: from then on this window's requests start to decay out of the estimate (and the
//! previous window's are gone). So `1 <= t <= w` whenever something is counted, and `t = 0`
//! when the full quota is available. `t` is not a promise that a unit is free by then.
//! `retry_after` for a rejected request is the exact time until `estimate + cost <= max` holds
//! (rounded up, >= 1 s); it solves the linear decay of the previous window (and, if needed,
//! the decay of the current window after the boundary), so it can exceed both `t` and `w`
//! (at most `w + w/max` for cost 1: a burst of `max` at the start of a window decays only
//! after that window ends); see
//! `window.rs`. The response headers come from the most restrictive enforcing limit with
//! `emit_headers` (a rejecting one wins, else the smallest remaining); a shadow limit with
//! `emit_headers` supplies them only when no enforcing limit does (it never causes a
//! `Retry-After`). See [`render_headers`].
//!
//! # Several limits per request
//! `check_all` admits only if every enforcing limit admits; a rejected request consumes no
//! quota in any limit (increment in order, roll back on rejection, see `limiter.rs`). Shadow
//! limits are evaluated and reported as `ShadowRejected` but never reject.
//!
//! # Local store and memory per key
//! 64 shards (configurable) of `parking_lot::Mutex<HashMap<Box<[u8]>, Entry>>` (one map per
//! limit inside each shard); one lock per check, O(1), no lock is held across an `.await`.
//! An entry is 32 bytes (window index, prev, curr, last access) plus the boxed key (16 bytes
//! pointer/len + the key's own heap allocation) plus hash-table control bytes and spare
//! capacity (power-of-two growth, max load 7/8). Measured for 1,000,000 distinct 16-byte keys
//! (one limit, 64 shards): 118.8 MB of live heap (~119 bytes/key, counting global allocator,
//! `cargo run --release --example memory_1m`; the tables had just doubled, at 100k keys it is
//! 80 bytes/key) and +143 MB RSS including malloc overhead (ignored test `memory_for_1m_keys`).
//! Idle entries (two windows without access) are swept lazily; a `max_keys` cap (applied to each
//! local limit's table and, separately, to the Redis fallback table) evicts least-recently-used entries
//! per shard (see `local.rs`).
//!
//! # Redis store
//! Each distinct key (hash tag) is one group: its Redis-backed limits are checked together and
//! incremented only if all admit. On one server (or a Sentinel-managed primary) all groups of a
//! request go in ONE script call (one round trip, one script run); on a Redis Cluster, where a
//! script must stay in one slot, each group is its own call, all sent at once (see
//! `redis_store.rs`, `redis_conn.rs`). A second round trip happens only to roll back admitted
//! groups when another group rejected, or to load the script after NOSCRIPT. See
//! `redis_store.rs` for key naming, TTLs, the clock, timeouts (default 50 ms), back-off, lazy
//! connection and the heartbeat. When Redis fails the per-limit `on_store_error` applies
//! (`Allow`, `Deny`, or `Local` = this instance's share of the quota, starting from the last
//! shared counts it saw), the event is reported in the `Decision` and logged at most once per
//! few seconds.
//!
//! # Measured (2-core machine shared with other builds, release build)
//! - local check (criterion, `benches/local_check.rs`): 1 key ~99 ns (~103 ns through the
//!   async `check_all`), 1M distinct keys in random order ~111 ns; under heavy load from other
//!   builds on the machine up to ~200 ns (two SipHash passes, one shard lock, one `Vec` for the
//!   per-limit outcomes);
//! - concurrency accuracy, 64 tokio tasks on one key, max 1000 per 1 s window, admitted per
//!   fixed window: 998..=999 in every full window over several runs (within 0.2%, never above
//!   max);
//! - two limiter instances sharing one Redis, 64 tasks, same quota: 999, 999, 999, 999.

mod decision;
pub mod from_plan;
mod limiter;
mod local;
mod redis_conn;
mod redis_local;
mod redis_store;
mod spec;
mod window;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cluster;
#[cfg(test)]
mod tests_outage;
#[cfg(test)]
mod tests_redis;

pub use decision::{
    header_values, render_headers, Decision, HeaderInfo, LimitReport, LimitStats, Outcome,
    StoreErrorKind, StoreErrorReport,
};
pub use limiter::{LocalCounters, RateLimiter, RedisClient};
pub use redis_store::redis_key_name;
pub use spec::{
    Backend, ConfigError, KeyFallback, KeySpec, LimitRef, LimitSpec, LocalConfig, Mode,
    OnStoreError, RateLimiterConfig, RedisConfig, RedisTopology, Scope,
};

/// Current unix time in milliseconds (the `now_ms` argument of `check_all` in production).
pub fn unix_millis_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

//! `RateLimiter`: evaluates all limits of a request against the local store and Redis groups,
//! with all-or-nothing consumption, shadow mode, store-error policy and the final `Decision`.
//!
//! Order of evaluation: local limits first, in the given order, each checked and incremented
//! under its shard lock; then, unless a local limit rejected, Redis-backed limits grouped by
//! key (one atomic script per distinct key, in order of first appearance), all groups sent in
//! ONE pipeline, so a request costs one Redis round trip however many keys its limits use.
//! Each group's script increments its limits only if they all admit; groups do not see each
//! other, so every group reports its real outcome. As soon as an enforcing limit rejects:
//! - the remaining local limits are only checked (no increment, for accurate outcomes and
//!   Retry-After); if a local limit rejected, Redis is not asked at all (`Skipped`);
//! - every increment already made for this request is undone (local decrements; Redis groups
//!   that admitted via one pipelined rollback script call, a second round trip on this rare
//!   path), so a rejected request consumes no quota anywhere.
//!
//! If the Redis call fails, `on_store_error` applies to the groups in order; after an
//! enforcing rejection (e.g. `Deny`) the remaining groups are `Skipped`.
//!
//! Between an increment and its rollback a concurrent request may see the temporarily higher
//! count and be rejected: multi-limit requests can under-admit by that race, never over-admit.

use std::sync::Arc;

use super::decision::{finish, verdict, Counts, Decision, Outcome, Pending, StoreErrorReport};
use super::local::LocalStore;
use super::redis_store::{GroupItem, RedisStore, RollbackGroup};
use super::spec::{
    Backend, ConfigError, LimitRef, LimitSpec, Mode, OnStoreError, RateLimiterConfig, RedisConfig,
};

/// The gateway's rate limiter, built once from all specs; clones share state.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    specs: Box<[LimitSpec]>,
    window_ms: Box<[u64]>,
    /// Counters of `Backend::Local` limits: one store per limit (by limit id), so that a limit's
    /// counters can outlive the limiter (see [`LocalCounters`]).
    local: Box<[LocalCounters]>,
    /// Counters used by Redis-backed limits with `OnStoreError::Local` while Redis fails.
    fallback: LocalStore,
    redis: Option<Arc<RedisStore>>,
    /// How long after Redis answers again the fallback counters are sent as hints: two of the
    /// longest Redis-backed window (their counts matter that long).
    hint_span_ms: u64,
}

/// A Redis client (connection, script cache, back-off state) that several limiters can share, so
/// a rebuilt limiter (a new plan) keeps the connection. Cheap to clone.
#[derive(Clone)]
pub struct RedisClient(Arc<RedisStore>);

impl RedisClient {
    /// A client for `config`; connects lazily, in the background.
    pub fn new(config: RedisConfig) -> Result<Self, ConfigError> {
        Ok(RedisClient(Arc::new(RedisStore::new(config)?)))
    }
}

/// The local counters of one limit (every key's counts), cheap to clone. A limiter built with
/// [`RateLimiter::with_stores`] uses the counters it is given, so a rebuilt limiter (a reload) keeps
/// counting for the limits whose counters are passed on; the state registry does that for every
/// limit whose counting parameters are unchanged.
#[derive(Clone)]
pub struct LocalCounters(Arc<LocalStore>);

impl LocalCounters {
    /// Empty counters for `spec` (its window and max), with `config`'s shards and key cap (the cap
    /// applies to this limit alone).
    pub fn new(spec: &LimitSpec, config: &super::LocalConfig) -> Self {
        let w = u64::try_from(spec.window.as_millis()).unwrap_or(u64::MAX);
        LocalCounters(Arc::new(LocalStore::new(
            &[(w, spec.max)],
            config.shards,
            config.max_keys,
        )))
    }
}

/// Requests with at most this many limits keep their per-limit state on the stack.
const INLINE_SLOTS: usize = 8;
const SLOT_INIT: (Pending, Consumed) = (Pending::SKIPPED, Consumed::No);

fn slots_for<'a>(
    n: usize,
    inline: &'a mut [(Pending, Consumed); INLINE_SLOTS],
    heap: &'a mut Vec<(Pending, Consumed)>,
) -> &'a mut [(Pending, Consumed)] {
    if n <= INLINE_SLOTS {
        &mut inline[..n]
    } else {
        heap.resize(n, SLOT_INIT);
        heap.as_mut_slice()
    }
}

/// Where an increment of this request was made (for rollback).
#[derive(Clone, Copy)]
enum Consumed {
    No,
    Local(u64),
    /// Window index and the cost counted (the fallback counts `1 / share` per unit).
    Fallback(u64, u64),
    Redis(u64),
}

impl RateLimiter {
    /// Validates the specs and builds the stores. Never connects synchronously: with Redis
    /// configured, the connection is made in the background on first use (or after
    /// [`RateLimiter::start`]); until then Redis-backed limits follow `on_store_error`.
    pub fn new(specs: Vec<LimitSpec>, config: RateLimiterConfig) -> Result<Self, ConfigError> {
        Self::with_redis(specs, config, None)
    }

    /// Like [`RateLimiter::new`], using `redis` (when given) instead of a new client for
    /// `config.redis`.
    pub fn with_redis(
        specs: Vec<LimitSpec>,
        config: RateLimiterConfig,
        redis: Option<RedisClient>,
    ) -> Result<Self, ConfigError> {
        Self::with_stores(specs, config, redis, None)
    }

    /// Like [`RateLimiter::with_redis`], with the local counters of each limit (same order as
    /// `specs`) given instead of fresh ones. Counters must have been made for a spec with the same
    /// window and max; `None` (or a length mismatch) gives fresh counters.
    pub fn with_stores(
        specs: Vec<LimitSpec>,
        config: RateLimiterConfig,
        redis: Option<RedisClient>,
        local: Option<Vec<LocalCounters>>,
    ) -> Result<Self, ConfigError> {
        if specs.len() > u32::MAX as usize {
            return Err(ConfigError::TooMany);
        }
        let mut window_ms = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            let w = u64::try_from(s.window.as_millis()).unwrap_or(u64::MAX);
            if w == 0 {
                return Err(ConfigError::ZeroWindow(s.name.to_string()));
            }
            if specs[..i].iter().any(|o| o.name == s.name) {
                return Err(ConfigError::DuplicateName(s.name.to_string()));
            }
            if s.backend == Backend::Redis && config.redis.is_none() {
                return Err(ConfigError::NoRedis(s.name.to_string()));
            }
            // The Lua script compares in doubles; keep every product exact.
            if s.backend == Backend::Redis && (s.max as u128) * (w as u128) >= 1u128 << 53 {
                return Err(ConfigError::TooLargeForRedis(s.name.to_string()));
            }
            window_ms.push(w);
        }
        let limits: Vec<(u64, u64)> = specs
            .iter()
            .zip(&window_ms)
            .map(|(s, &w)| (w, s.max))
            .collect();
        let uses_redis = specs.iter().any(|s| s.backend == Backend::Redis);
        let redis = match (&config.redis, uses_redis, redis) {
            (Some(_), true, Some(shared)) => Some(shared.0),
            (Some(rc), true, None) => Some(Arc::new(RedisStore::new(rc.clone())?)),
            _ => None,
        };
        let fallback_shards = if uses_redis { config.local.shards } else { 1 };
        if let Some(r) = &redis {
            if specs
                .iter()
                .any(|s| s.backend == Backend::Redis && s.on_store_error == OnStoreError::Local)
            {
                r.want_heartbeat();
            }
        }
        let hint_span_ms = specs
            .iter()
            .zip(&window_ms)
            .filter(|(s, _)| s.backend == Backend::Redis)
            .map(|(_, &w)| w.saturating_mul(2))
            .max()
            .unwrap_or(0);
        let local = match local {
            Some(l) if l.len() == specs.len() => l,
            _ => specs
                .iter()
                .map(|s| LocalCounters::new(s, &config.local))
                .collect(),
        };
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                local: local.into_boxed_slice(),
                fallback: LocalStore::new(&limits, fallback_shards, config.local.max_keys),
                specs: specs.into_boxed_slice(),
                window_ms: window_ms.into_boxed_slice(),
                redis,
                hint_span_ms,
            }),
        })
    }

    /// Starts connecting to Redis in the background (call from inside a tokio runtime).
    /// Optional: the first `check_all` does it too.
    pub fn start(&self) {
        if let Some(r) = &self.inner.redis {
            r.ensure_connecting();
        }
    }

    /// Starts connecting to Redis (if configured) and waits until the connection is up, the
    /// first attempt failed, or `timeout` passed, so a gateway does not declare itself ready
    /// while its Redis-backed limits would still run on `on_store_error`. Returns whether
    /// Redis is connected (`true` without Redis).
    pub async fn wait_connected(&self, timeout: std::time::Duration) -> bool {
        match &self.inner.redis {
            Some(r) => r.wait_connected(timeout).await,
            None => true,
        }
    }

    /// Handle of the limit named `name`.
    pub fn limit_ref(&self, name: &str) -> Option<LimitRef> {
        self.inner
            .specs
            .iter()
            .position(|s| &*s.name == name)
            .map(|i| LimitRef(i as u32))
    }

    pub fn spec(&self, limit: LimitRef) -> Option<&LimitSpec> {
        self.inner.specs.get(limit.index())
    }

    /// Drops idle local entries now (optional; the stores also do it lazily).
    pub fn sweep_expired(&self, now_ms: u64) {
        for l in self.inner.local.iter() {
            l.0.sweep_all(now_ms);
        }
        self.inner.fallback.sweep_all(now_ms);
    }

    /// Admitted cost per fixed window of a local limit's key, as stored: `(window index of
    /// curr, prev, curr)` where `prev` belongs to the window before (for diagnostics and
    /// tests; the entry is rolled forward only by the next check). `None` if the key holds
    /// nothing or the limit is not local.
    pub fn local_counts(&self, limit: LimitRef, key: &[u8]) -> Option<(u64, u64, u64)> {
        if self.is_redis(limit) {
            return None;
        }
        self.inner.local.get(limit.index())?.0.peek(0, key)
    }

    /// Keys held in the local stores (all limits) and in the Redis fallback store.
    pub fn local_keys(&self) -> (usize, usize) {
        let local = self.inner.local.iter().map(|l| l.0.len()).sum();
        (local, self.inner.fallback.len())
    }

    /// `check_all_cost` with cost 1.
    pub async fn check_all(&self, items: &[(LimitRef, &[u8])], now_ms: u64) -> Decision {
        self.check_all_cost(items, 1, now_ms).await
    }

    /// Synchronous check for requests whose limits are all local; `None` if any item is
    /// Redis-backed (use `check_all_cost`). Same semantics as `check_all_cost`.
    pub fn check_all_local(
        &self,
        items: &[(LimitRef, &[u8])],
        cost: u64,
        now_ms: u64,
    ) -> Option<Decision> {
        if items.iter().any(|(l, _)| self.is_redis(*l)) {
            return None;
        }
        let mut inline = [SLOT_INIT; INLINE_SLOTS];
        let mut heap = Vec::new();
        let slots = slots_for(items.len(), &mut inline, &mut heap);
        if self.run_local(items, cost, now_ms, slots) {
            self.rollback_local(items, cost, slots);
        }
        Some(self.finish(items, slots, cost))
    }

    /// Checks one request against all `items` (limit, key) at `now_ms` (unix milliseconds from
    /// the gateway clock) with `cost` units. Never fails: store problems are applied per
    /// `on_store_error` and reported in the decision. Awaits only if a Redis-backed limit is
    /// involved.
    pub async fn check_all_cost(
        &self,
        items: &[(LimitRef, &[u8])],
        cost: u64,
        now_ms: u64,
    ) -> Decision {
        let mut inline = [SLOT_INIT; INLINE_SLOTS];
        let mut heap = Vec::new();
        let slots = slots_for(items.len(), &mut inline, &mut heap);
        let mut rejected = self.run_local(items, cost, now_ms, slots);
        let has_redis = items.iter().any(|(l, _)| self.is_redis(*l));
        if has_redis && !rejected {
            rejected = self.run_redis(items, cost, now_ms, slots).await;
            if rejected {
                self.rollback_redis(items, cost, now_ms, slots).await;
            }
        }
        if rejected {
            self.rollback_local(items, cost, slots);
        }
        self.finish(items, slots, cost)
    }

    fn is_redis(&self, l: LimitRef) -> bool {
        self.spec(l).is_some_and(|s| s.backend == Backend::Redis)
    }

    /// Phase 1: local limits. Returns whether an enforcing limit rejected.
    fn run_local(
        &self,
        items: &[(LimitRef, &[u8])],
        cost: u64,
        now_ms: u64,
        slots: &mut [(Pending, Consumed)],
    ) -> bool {
        let mut rejected = false;
        for (&(limit, key), slot) in items.iter().zip(slots.iter_mut()) {
            let Some(spec) = self.spec(limit) else {
                continue;
            };
            if spec.backend != Backend::Local {
                continue;
            }
            let Some(store) = self.inner.local.get(limit.index()) else {
                continue;
            };
            let c = store.0.check(0, key, cost, now_ms, !rejected);
            let outcome = verdict(spec.mode, c.fits);
            slot.0 = Pending {
                outcome,
                store_error: None,
                counts: Counts::Known {
                    win: c.win,
                    prev: c.prev,
                    curr: c.curr,
                },
            };
            if c.fits && !rejected {
                slot.1 = Consumed::Local(c.win.idx);
            }
            rejected |= outcome == Outcome::Rejected;
        }
        rejected
    }

    /// Phase 2: Redis groups (by key), all checked in one pipeline (one round trip). Returns
    /// whether an enforcing limit rejected.
    async fn run_redis(
        &self,
        items: &[(LimitRef, &[u8])],
        cost: u64,
        now_ms: u64,
        slots: &mut [(Pending, Consumed)],
    ) -> bool {
        let Some(redis) = &self.inner.redis else {
            return false;
        };
        // Item indices ordered by group (groups in order of first appearance), and each
        // group's end in `members`.
        let mut done = vec![false; items.len()];
        let mut members: Vec<usize> = Vec::with_capacity(items.len());
        let mut ends: Vec<usize> = Vec::new();
        for first in 0..items.len() {
            if done[first] || !self.is_redis(items[first].0) {
                continue;
            }
            let key = items[first].1;
            for (j, &(l, k)) in items.iter().enumerate().skip(first) {
                if !done[j] && k == key && self.is_redis(l) {
                    done[j] = true;
                    members.push(j);
                }
            }
            ends.push(members.len());
        }
        let hinting = redis.needs_hints(now_ms, self.inner.hint_span_ms);
        let flat: Vec<GroupItem<'_>> = members
            .iter()
            .map(|&j| {
                let (l, key) = items[j];
                let s = &self.inner.specs[l.index()]; // is_redis checked the spec exists
                let window_ms = self.inner.window_ms[l.index()];
                let hint = if hinting && s.on_store_error == OnStoreError::Local {
                    self.fallback_hint(l, key, window_ms, now_ms)
                } else {
                    (0, 0)
                };
                GroupItem {
                    name: &s.name,
                    window_ms,
                    max: s.max,
                    shadow: s.mode == Mode::Shadow,
                    hint,
                }
            })
            .collect();
        let mut groups: Vec<(&[u8], &[GroupItem<'_>])> = Vec::with_capacity(ends.len());
        let mut start = 0;
        for &end in &ends {
            groups.push((items[members[start]].1, &flat[start..end]));
            start = end;
        }
        match redis.check_groups(&groups, cost, now_ms).await {
            Ok((all_ok, counts)) => {
                // Every group ran; report all of them (like local limits after a rejection).
                // Admitted groups are rolled back by the caller if any group rejected.
                let mut rejected = false;
                let mut start = 0;
                for (&end, &ok) in ends.iter().zip(&all_ok) {
                    for (&j, c) in members[start..end].iter().zip(&counts[start..end]) {
                        let mode = self.spec(items[j].0).map_or(Mode::Enforce, |s| s.mode);
                        slots[j].0 = Pending {
                            outcome: verdict(mode, c.fits),
                            store_error: None,
                            counts: Counts::Known {
                                win: c.win,
                                prev: c.prev,
                                curr: c.curr,
                            },
                        };
                        let consumed = ok && c.fits && cost > 0;
                        if consumed {
                            slots[j].1 = Consumed::Redis(c.win.idx);
                        }
                        if self.spec(items[j].0).map(|s| s.on_store_error)
                            == Some(OnStoreError::Local)
                        {
                            // Remember the shared counts: if Redis fails, the fallback starts
                            // from them instead of from zero.
                            let curr = c.curr + if consumed { cost } else { 0 };
                            self.inner.fallback.observe(
                                items[j].0 .0,
                                items[j].1,
                                c.win.idx,
                                c.prev,
                                curr,
                                now_ms,
                            );
                        }
                    }
                    rejected |= !ok;
                    start = end;
                }
                rejected
            }
            Err(kind) => {
                // The whole pipeline failed: apply `on_store_error` group by group; after a
                // rejection the remaining groups stay `Skipped`, as before.
                let mut start = 0;
                for &end in &ends {
                    let group = &members[start..end];
                    if self.apply_store_error(items, group, kind, cost, now_ms, slots) {
                        return true;
                    }
                    start = end;
                }
                false
            }
        }
    }

    /// The fallback counters of (limit, key) as `(prev, curr)` of the window at `now_ms`: what
    /// this instance knows the shared counters held (seen, plus its own admissions while Redis
    /// failed), sent as lower bounds so counts Redis lost are restored instead of granting fresh
    /// quota.
    fn fallback_hint(&self, l: LimitRef, key: &[u8], window_ms: u64, now_ms: u64) -> (u64, u64) {
        let idx = now_ms / window_ms.max(1);
        match self.inner.fallback.peek(l.0, key) {
            Some((i, prev, curr)) if i == idx => (prev, curr),
            Some((i, _, curr)) if i.saturating_add(1) == idx => (curr, 0),
            _ => (0, 0),
        }
    }

    /// Applies `on_store_error` to a failed group. Returns whether an enforcing limit rejected.
    fn apply_store_error(
        &self,
        items: &[(LimitRef, &[u8])],
        members: &[usize],
        kind: super::decision::StoreErrorKind,
        cost: u64,
        now_ms: u64,
        slots: &mut [(Pending, Consumed)],
    ) -> bool {
        let mut rejected = false;
        for &j in members {
            let (limit, key) = items[j];
            let Some(spec) = self.spec(limit) else {
                continue;
            };
            let action = spec.on_store_error;
            let store_error = Some(StoreErrorReport { kind, action });
            slots[j].0 = match action {
                OnStoreError::Allow => Pending {
                    outcome: Outcome::Allowed,
                    store_error,
                    counts: Counts::None,
                },
                OnStoreError::Deny => Pending {
                    outcome: verdict(spec.mode, false),
                    store_error,
                    counts: Counts::Denied,
                },
                OnStoreError::Local => {
                    // Counted in shared units: this instance may use only its share of what
                    // is left of the quota (the counters start from the last shared counts).
                    let fcost = self
                        .inner
                        .redis
                        .as_ref()
                        .map_or(cost, |r| r.fallback_cost(cost));
                    let c = self
                        .inner
                        .fallback
                        .check(limit.0, key, fcost, now_ms, !rejected);
                    if c.fits && !rejected {
                        slots[j].1 = Consumed::Fallback(c.win.idx, fcost);
                    }
                    Pending {
                        outcome: verdict(spec.mode, c.fits),
                        store_error,
                        counts: Counts::Known {
                            win: c.win,
                            prev: c.prev,
                            curr: c.curr,
                        },
                    }
                }
            };
            rejected |= slots[j].0.outcome == Outcome::Rejected;
        }
        rejected
    }

    fn rollback_local(
        &self,
        items: &[(LimitRef, &[u8])],
        cost: u64,
        slots: &[(Pending, Consumed)],
    ) {
        for (&(limit, key), slot) in items.iter().zip(slots) {
            match slot.1 {
                Consumed::Local(idx) => {
                    if let Some(store) = self.inner.local.get(limit.index()) {
                        store.0.rollback(0, key, cost, idx)
                    }
                }
                Consumed::Fallback(idx, c) => self.inner.fallback.rollback(limit.0, key, c, idx),
                Consumed::No | Consumed::Redis(_) => {}
            }
        }
    }

    async fn rollback_redis(
        &self,
        items: &[(LimitRef, &[u8])],
        cost: u64,
        now_ms: u64,
        slots: &[(Pending, Consumed)],
    ) {
        let Some(redis) = &self.inner.redis else {
            return;
        };
        let mut done = vec![false; items.len()];
        let mut groups: Vec<RollbackGroup<'_>> = Vec::new();
        for first in 0..items.len() {
            if done[first] || !matches!(slots[first].1, Consumed::Redis(_)) {
                continue;
            }
            let key = items[first].1;
            let mut group: Vec<(&str, u64)> = Vec::new();
            for j in first..items.len() {
                if let (false, Consumed::Redis(idx), true) =
                    (done[j], slots[j].1, items[j].1 == key)
                {
                    done[j] = true;
                    if let Some(s) = self.spec(items[j].0) {
                        group.push((&s.name, idx));
                    }
                }
            }
            groups.push((key, group));
        }
        if !groups.is_empty() {
            redis.rollback_groups(&groups, cost, now_ms).await;
        }
    }

    fn finish(
        &self,
        items: &[(LimitRef, &[u8])],
        slots: &[(Pending, Consumed)],
        cost: u64,
    ) -> Decision {
        let entries = items.iter().zip(slots).map(|(&(l, _), (p, _))| (l, p));
        finish(entries, cost, |l| {
            self.spec(l).map(|s| (s, self.inner.window_ms[l.index()]))
        })
    }

    /// Gateway instances writing to the Redis store, as last seen by the heartbeat (`None`
    /// without Redis; 1 until the first heartbeat). While Redis fails, each instance enforces
    /// `1 /` this share of a limit with `on_store_error: local` (unless a share is configured).
    pub fn redis_instances(&self) -> Option<u64> {
        self.inner.redis.as_ref().map(|r| r.live_instances())
    }

    /// Whether the Redis connection exists (it may still be failing; see the module doc).
    pub fn redis_connected(&self) -> bool {
        self.inner.redis.as_ref().is_some_and(|r| r.is_connected())
    }
}

//! Redis-backed counters: one atomic Lua script run checks the key groups of a request (all of
//! them on one server; one group per run on a cluster), lazy background connect, per-call
//! timeout, failure back-off, rate-limited warnings, and the heartbeat of live instances.
//!
//! Keys are `gw:rl:{<tag>}:<limit name>:<window index>`; `<tag>` is [`key_tag`] of the request key:
//! 32 hex digits of SHA-256 (truncated to 128 bits) over a fixed domain prefix and the key, so a key
//! name has the same length whatever the request key's size (issue 11 item 4: a 64 KiB header value
//! no longer makes a 64 KiB Redis key) and every gateway sharing the Redis computes the same name with
//! no shared secret. The hash is public, but it is collision resistant: making one's own request key
//! land on another client's counter takes a second preimage of 128-bit SHA-256 (~2^128 work), and a
//! birthday collision (~2^64) only merges two keys the attacker chose. The hash tag is one request
//! key: every limit of one request key lands in one Redis Cluster slot. The window index is
//! `now_ms / window_ms` with `now_ms` taken from the gateway clock (unix ms) and passed as an
//! argument, so all gateways must run NTP-synced clocks; skew shifts window boundaries by the
//! skew, never more. A counter gets its TTL once, when it is created ([`counter_ttl_ms`]): it
//! expires [`SKEW_MARGIN_MS`] (or one window, if shorter) after the end of the next window, the
//! last in which it counts (as "previous"); the margin covers gateways whose clocks lag a little.
//! Increments do not touch the TTL (a `PEXPIRE` per increment was ~0.5 µs of Redis CPU each).
//!
//! The script takes G groups (`ARGV`: cost, G, the size of each group, then 7 arguments per
//! limit; `KEYS`: current and previous counter per limit). Per group it reads current and
//! previous counters (first raising each to the caller's hint, see below), decides each limit
//! with the same integer inequality as the local store (`p*(w-e) + (q+c)*w <= max*w`, exact
//! while `max * window_ms < 2^53`), and increments the group's fitting limits only if no
//! enforcing limit of the group rejects. It returns, per group, `[all_ok, p1, q1, fits1, ...]`
//! (counts before the increment) so the caller computes remaining/reset/retry-after with the
//! same code as for local limits. The script hands `redis.call` the argument strings as they
//! came (formatting a Lua number is a `printf`) and parses a hint only when it is not `0`. On a cluster each group is one call (one slot), the calls
//! sent concurrently. The command is built as one `EVALSHA` `Cmd` (one buffer); replies
//! answered NOSCRIPT (e.g. after a Redis restart or `SCRIPT FLUSH`) did not run and are retried
//! once in a second pipeline led by SCRIPT LOAD. The whole call (including that retry) runs
//! under the per-call timeout, and any error in it fails the call as a whole.
//!
//! Hints: while Redis fails (and for two of the longest windows after it answers again) the
//! limiter passes each `on_store_error: local` limit's fallback counts as lower bounds; the
//! script raises a lower counter to them, so a Redis that restarted empty (or missed the
//! outage's admissions) does not hand out a fresh quota.
//!
//! Failure handling: the connection is made in a background task (so a down Redis neither
//! blocks startup nor fails construction); until it exists every call reports `Unavailable`.
//! Any error or timeout sets a back-off window (`RedisConfig::backoff`) during which calls
//! fail fast with `Unavailable`; after it one caller probes Redis (others keep failing fast)
//! and success closes the back-off. Standalone and cluster connections reconnect by
//! themselves; a Sentinel connection is dropped on error and the primary looked up again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use redis::{Cmd, ErrorKind, Script, Value};

use super::redis_conn::{Conn, Target};

use super::decision::StoreErrorKind;
use super::spec::{ConfigError, RedisConfig};
use super::window::Window;

const CHECK_LUA: &str = r#"
local cost = tonumber(ARGV[1])
local g = tonumber(ARGV[2])
local a = 2 + g
local out = {}
local li = 0
for gi = 1, g do
  local n = tonumber(ARGV[2 + gi])
  local head = #out + 1
  out[head] = 0
  local all = 1
  for j = 1, n do
    local i = li + j
    local b = a + 7 * (i - 1)
    local w = tonumber(ARGV[b + 1])
    local e = tonumber(ARGV[b + 2])
    local m = tonumber(ARGV[b + 3])
    local shadow = ARGV[b + 5] == '1'
    local q = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
    if ARGV[b + 7] ~= '0' then
      local hq = tonumber(ARGV[b + 7])
      if hq > q then
        redis.call('SET', KEYS[2 * i - 1], ARGV[b + 7], 'PX', ARGV[b + 4])
        q = hq
      end
    end
    local p = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
    if ARGV[b + 6] ~= '0' then
      local hp = tonumber(ARGV[b + 6])
      if hp > p then
        redis.call('SET', KEYS[2 * i], ARGV[b + 6], 'PX', ARGV[b + 1])
        p = hp
      end
    end
    local fits = 0
    if p * (w - e) + (q + cost) * w <= m * w then
      fits = 1
    elseif not shadow then
      all = 0
    end
    out[#out + 1] = p
    out[#out + 1] = q
    out[#out + 1] = fits
  end
  out[head] = all
  if all == 1 and cost > 0 then
    for j = 1, n do
      local i = li + j
      if out[head + 3 * j] == 1 then
        if redis.call('INCRBY', KEYS[2 * i - 1], ARGV[1]) == cost then
          redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[a + 7 * (i - 1) + 4])
        end
      end
    end
  end
  li = li + n
end
return out
"#;

/// Heartbeat of live instances: `KEYS[1]` a sorted set of instance ids scored by their last
/// beat (unix ms, `ARGV[1]`); entries older than `ARGV[3]` ms are dropped; returns how many remain.
const HEARTBEAT_LUA: &str = r#"
local now = tonumber(ARGV[1])
local live = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - live)
redis.call('PEXPIRE', KEYS[1], live)
return redis.call('ZCARD', KEYS[1])
"#;

/// The heartbeat key (its own slot in a cluster).
const HEARTBEAT_KEY: &str = "gw:rl:{hb}:instances";
/// How often each instance beats, and after how long without a beat it no longer counts.
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_millis(1000);
const HEARTBEAT_LIVE_MS: u64 = 3500;

const ROLLBACK_LUA: &str = r#"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('DECRBY', KEYS[i], ARGV[1])
  end
end
return 0
"#;

/// Increments of one request key to undo: the key and `(limit name, window index)` pairs.
pub(crate) type RollbackGroup<'a> = (&'a [u8], Vec<(&'a str, u64)>);

/// One limit of a script call.
pub(crate) struct GroupItem<'a> {
    pub name: &'a str,
    pub window_ms: u64,
    pub max: u64,
    pub shadow: bool,
    /// Lower bounds `(prev, curr)` for this window's counters, from what this instance counted
    /// while Redis was failing (raises a counter Redis lost; `(0, 0)` normally).
    pub hint: (u64, u64),
}

/// Per-limit script result: counts before this request and whether the limit fits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteCount {
    pub win: Window,
    pub prev: u64,
    pub curr: u64,
    pub fits: bool,
}

pub(crate) struct RedisStore {
    target: Target,
    cfg: RedisConfig,
    conn: RwLock<Option<Conn>>,
    connecting: AtomicBool,
    /// Set when the first connection attempt has finished (either way).
    first_attempt_done: AtomicBool,
    /// 0 = healthy; otherwise unix ms before which Redis is not tried.
    skip_until_ms: AtomicU64,
    last_warn_ms: AtomicU64,
    suppressed: AtomicU64,
    check: Script,
    rollback: Script,
    heartbeat: Script,
    /// Random id of this instance in the heartbeat set.
    instance: String,
    /// Live instances seen by the last successful heartbeat (>= 1); kept while Redis fails.
    live: AtomicU64,
    /// Whether some limit relies on the learned outage share (then the heartbeat runs).
    heartbeat_wanted: AtomicBool,
    /// 0 = Redis never failed; `u64::MAX` = failing now; else unix ms when it answered again.
    recovered_at_ms: AtomicU64,
    /// Bumped when the server is looked up again (Sentinel): per-thread connections
    /// ([`super::redis_local`]) made before are dropped.
    generation: AtomicU64,
}

/// How long a counter outlives the end of the window in which it last counts (clock-skew margin).
pub(crate) const SKEW_MARGIN_MS: u64 = 10_000;

/// The TTL a counter of window `win` gets when created: until [`SKEW_MARGIN_MS`] (at most one
/// window) after the end of the next window, measured from `win`'s `now`.
pub(crate) fn counter_ttl_ms(win: &Window) -> u64 {
    win.w
        .saturating_mul(2)
        .saturating_sub(win.e)
        .saturating_add(win.w.min(SKEW_MARGIN_MS))
}

/// The hash tag of a request key in Redis key names: 32 lowercase hex digits (see the module docs).
pub(crate) fn key_tag(key: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let d = Sha256::new()
        .chain_update(b"gw rate-limit key v1\0")
        .chain_update(key)
        .finalize();
    let mut out = [0u8; 32];
    for (i, b) in d[..16].iter().enumerate() {
        out[2 * i] = b"0123456789abcdef"[(b >> 4) as usize];
        out[2 * i + 1] = b"0123456789abcdef"[(b & 15) as usize];
    }
    out
}

/// The Redis key name of (counter key, limit name, window index), e.g. to inspect a counter with
/// `redis-cli GET`: `gw:rl:{<key_tag>}:<limit>:<window index>`.
pub fn redis_key_name(key: &[u8], limit: &str, window_idx: u64) -> String {
    let mut out = Vec::with_capacity(48 + limit.len());
    counter_key(&mut out, key, limit, window_idx);
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends the Redis key of (request key, limit, window index) to `out`.
pub(crate) fn counter_key(out: &mut Vec<u8>, key: &[u8], name: &str, idx: u64) {
    counter_key_tagged(out, &key_tag(key), name, idx)
}

/// [`counter_key`] with the request key's [`key_tag`] computed once by the caller.
fn counter_key_tagged(out: &mut Vec<u8>, tag: &[u8; 32], name: &str, idx: u64) {
    out.extend_from_slice(b"gw:rl:{");
    out.extend_from_slice(tag);
    out.push(b'}');
    out.push(b':');
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = idx;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Sends all `invs` of `script` as one pipeline (EVALSHA each, one round trip) and returns
/// one reply per invocation (a failed script as `Value::ServerError`). Invocations answered
/// with NOSCRIPT (script cache empty, e.g. after a Redis restart or `SCRIPT FLUSH`) are
/// retried once in a second pipeline led by `SCRIPT LOAD`; a NOSCRIPT reply means that
/// script did not run, so no group is ever applied twice.
async fn eval_pipelined(
    conn: &mut Conn,
    script: &Script,
    invs: &[Cmd],
) -> redis::RedisResult<Vec<Value>> {
    let bad_reply =
        || redis::RedisError::from((ErrorKind::ResponseError, "unexpected pipeline reply"));
    let mut pipe = redis::pipe();
    for inv in invs {
        pipe.add_command(inv.clone());
    }
    let (mut replies, missing) = match conn.pipeline(&pipe, 0, invs.len()).await {
        // The cluster client reports a failed command of a pipeline as the pipeline's error;
        // with one invocation per pipeline (as `eval_all` sends them) it did not run.
        Err(e) if e.kind() == ErrorKind::NoScriptError && invs.len() == 1 => {
            (vec![Value::Nil], vec![0])
        }
        r => {
            let replies = r?;
            if replies.len() != invs.len() {
                return Err(bad_reply());
            }
            let missing: Vec<usize> = replies
                .iter()
                .enumerate()
                .filter(|(_, v)| matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT"))
                .map(|(i, _)| i)
                .collect();
            (replies, missing)
        }
    };
    if !missing.is_empty() {
        let mut retry = redis::pipe();
        retry.load_script(script);
        for &i in &missing {
            retry.add_command(invs[i].clone());
        }
        // Skip the SCRIPT LOAD reply (an error there shows up as NOSCRIPT below).
        let again = conn.pipeline(&retry, 1, missing.len()).await?;
        if again.len() != missing.len() {
            return Err(bad_reply());
        }
        for (i, v) in missing.into_iter().zip(again) {
            replies[i] = v;
        }
    }
    Ok(replies)
}

/// Runs `invs` of `script` as one pipeline, or on a cluster as one pipeline per invocation
/// (each invocation is one hash tag, i.e. one slot; a cluster pipeline must not cross slots),
/// all sent at once so the round trips overlap. Replies in `invs` order.
async fn eval_all(conn: &Conn, script: &Script, invs: &[Cmd]) -> redis::RedisResult<Vec<Value>> {
    if !conn.one_slot_per_pipeline() || invs.len() < 2 {
        return eval_pipelined(&mut conn.clone(), script, invs).await;
    }
    let calls = invs.iter().map(|inv| async move {
        eval_pipelined(&mut conn.clone(), script, std::slice::from_ref(inv)).await
    });
    let mut out = Vec::with_capacity(invs.len());
    for r in futures_util::future::join_all(calls).await {
        out.extend(r?);
    }
    Ok(out)
}

/// `EVALSHA <sha> <n_keys>`; keys, then arguments, are appended by the caller. One `Cmd` keeps
/// all arguments in one buffer (a `ScriptInvocation` allocates one `Vec` per key and argument).
fn evalsha(script: &Script, n_keys: usize) -> Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(script.get_hash()).arg(n_keys);
    c
}

/// A random id for this instance in the heartbeat set (no two processes share one).
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(super::unix_millis_now());
    let a = h.finish();
    h.write_u64(a);
    format!("{a:016x}{:016x}", h.finish())
}

/// Beats the heartbeat every [`HEARTBEAT_EVERY`] while the store exists and is connected, and
/// keeps the number of live instances it sees (unchanged while Redis fails).
async fn heartbeat_loop(weak: Weak<RedisStore>) {
    loop {
        let Some(this) = weak.upgrade() else { return };
        let Some(conn) = this.current() else { return };
        if !this.heartbeat_wanted.load(Ordering::Relaxed) {
            drop(this);
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            continue;
        }
        let now = super::unix_millis_now();
        let mut inv = evalsha(&this.heartbeat, 1);
        inv.arg(HEARTBEAT_KEY)
            .arg(now)
            .arg(this.instance.as_str())
            .arg(HEARTBEAT_LIVE_MS);
        let res = tokio::time::timeout(
            this.cfg.timeout.max(std::time::Duration::from_millis(200)),
            eval_all(&conn, &this.heartbeat, std::slice::from_ref(&inv)),
        )
        .await;
        if let Ok(Ok(v)) = res {
            if let Some(n) = v
                .into_iter()
                .next()
                .and_then(|v| redis::from_owned_redis_value::<u64>(v).ok())
            {
                this.live.store(n.max(1), Ordering::Relaxed);
            }
        }
        drop(this);
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}

impl RedisStore {
    pub fn new(cfg: RedisConfig) -> Result<Self, ConfigError> {
        if cfg.outage_share_ppm == Some(0) {
            return Err(ConfigError::RedisUrl("outage share must be above 0".into()));
        }
        Ok(RedisStore {
            target: Target::new(&cfg)?,
            cfg,
            conn: RwLock::new(None),
            connecting: AtomicBool::new(false),
            first_attempt_done: AtomicBool::new(false),
            skip_until_ms: AtomicU64::new(0),
            last_warn_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            check: Script::new(CHECK_LUA),
            rollback: Script::new(ROLLBACK_LUA),
            heartbeat: Script::new(HEARTBEAT_LUA),
            instance: instance_id(),
            live: AtomicU64::new(1),
            heartbeat_wanted: AtomicBool::new(false),
            recovered_at_ms: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        })
    }

    fn current(&self) -> Option<Conn> {
        self.conn.read().clone()
    }

    /// The connection a call uses: this thread's own once it is ready ([`super::redis_local`]),
    /// else the shared one. `None` while the store has no connection at all (not connected yet,
    /// or looking the server up again).
    fn conn_for_call(self: &Arc<Self>, now_ms: u64) -> Option<Conn> {
        let shared = self.current()?;
        let generation = self.generation.load(Ordering::Acquire);
        Some(super::redis_local::get(self, generation, now_ms).unwrap_or(shared))
    }

    /// One connection attempt, bounded like the background connect's.
    pub(super) async fn connect_once(&self) -> Option<Conn> {
        tokio::time::timeout(self.cfg.connect_timeout * 3, self.target.connect(&self.cfg))
            .await
            .ok()?
            .ok()
    }

    /// Starts the background connect task once (no-op without a tokio runtime; the next call
    /// from inside one retries). Once connected the task keeps beating the heartbeat.
    pub fn ensure_connecting(self: &Arc<Self>) {
        if self.conn.read().is_some() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                let Some(this) = weak.upgrade() else { return };
                let attempt = tokio::time::timeout(
                    this.cfg.connect_timeout * 3,
                    this.target.connect(&this.cfg),
                )
                .await;
                this.first_attempt_done.store(true, Ordering::Release);
                match attempt {
                    Ok(Ok(conn)) => {
                        *this.conn.write() = Some(conn);
                        this.connecting.store(false, Ordering::Release);
                        drop(this);
                        heartbeat_loop(weak).await;
                        return;
                    }
                    Ok(Err(e)) => {
                        this.warn(super::unix_millis_now(), &format!("connect failed: {e}"))
                    }
                    Err(_) => this.warn(super::unix_millis_now(), "connect timed out"),
                }
                let backoff = this.cfg.backoff;
                drop(this);
                tokio::time::sleep(backoff).await;
            }
        });
    }

    /// After an error on a call: drops this thread's own connection (the next call makes a new
    /// one: its runtime may be gone), and if the connection must be looked up again (Sentinel)
    /// drops the shared one too and starts reconnecting through the sentinels.
    fn reresolve(self: &Arc<Self>, used: &Conn) {
        super::redis_local::forget(self);
        if !used.reresolve_on_error() {
            return;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        if self.conn.write().take().is_some() {
            self.ensure_connecting();
        }
    }

    /// Cost units a fallback (`on_store_error: local`) admission of `cost` counts: the local
    /// counters hold an estimate of the shared count, and this instance owns only its share of
    /// the quota, so each of its admissions counts `1 / share` times (rounded up).
    pub fn fallback_cost(&self, cost: u64) -> u64 {
        match self.cfg.outage_share_ppm {
            Some(ppm) => {
                let ppm = u128::from(ppm.clamp(1, 1_000_000));
                let c = (u128::from(cost) * 1_000_000).div_ceil(ppm);
                u64::try_from(c).unwrap_or(u64::MAX)
            }
            None => cost.saturating_mul(self.live_instances()),
        }
    }

    /// Turns the heartbeat on (a limit with `on_store_error: local` and a learned share uses it).
    pub fn want_heartbeat(&self) {
        if self.cfg.outage_share_ppm.is_none() {
            self.heartbeat_wanted.store(true, Ordering::Relaxed);
        }
    }

    /// Live instances seen in the heartbeat before Redis failed (>= 1).
    pub fn live_instances(&self) -> u64 {
        self.live.load(Ordering::Relaxed).max(1)
    }

    /// Whether counters may have missed admissions made while Redis failed (it is failing, or
    /// answered again less than `span_ms` ago): then callers send hints from the local counters.
    pub fn needs_hints(&self, now_ms: u64, span_ms: u64) -> bool {
        match self.recovered_at_ms.load(Ordering::Relaxed) {
            0 => false,
            t => now_ms < t.saturating_add(span_ms),
        }
    }

    /// Whether this call may use Redis (healthy, or the single probe after a back-off).
    fn may_try(&self, now_ms: u64) -> bool {
        let until = self.skip_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if now_ms < until {
            return false;
        }
        let next = now_ms.saturating_add(self.backoff_ms()).max(1);
        self.skip_until_ms
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(super) fn backoff_ms(&self) -> u64 {
        u64::try_from(self.cfg.backoff.as_millis()).unwrap_or(u64::MAX)
    }

    fn failed(&self, now_ms: u64, kind: StoreErrorKind, detail: &dyn std::fmt::Display) {
        let until = now_ms.saturating_add(self.backoff_ms()).max(1);
        self.skip_until_ms.store(until, Ordering::Release);
        self.recovered_at_ms.store(u64::MAX, Ordering::Relaxed);
        self.warn(now_ms, &format!("{kind:?}: {detail}"));
    }

    fn succeeded(&self, now_ms: u64) {
        if self.recovered_at_ms.load(Ordering::Relaxed) == u64::MAX {
            self.recovered_at_ms.store(now_ms.max(1), Ordering::Relaxed);
        }
        if self.skip_until_ms.load(Ordering::Relaxed) != 0 {
            self.skip_until_ms.store(0, Ordering::Release);
            tracing::info!("rate limiter: Redis reachable again, enforcing through Redis");
        }
    }

    /// `tracing::warn!` at most once per `warn_interval`; counts suppressed events.
    fn warn(&self, now_ms: u64, what: &str) {
        let interval = u64::try_from(self.cfg.warn_interval.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if (last != 0 && now_ms.abs_diff(last) < interval)
            || self
                .last_warn_ms
                .compare_exchange(last, now_ms.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            suppressed,
            "rate limiter: Redis unavailable ({what}); applying on_store_error for Redis-backed limits"
        );
    }

    /// Runs the check script of every group (limits sharing one request key) in one pipeline,
    /// i.e. one network round trip for all groups of a request (plus one more only if the
    /// script has to be loaded). Each group's script is atomic on its own. Returns per group
    /// whether all its enforcing limits admitted (and it incremented), and the per-limit counts
    /// of all groups concatenated in `groups`/`items` order. Any failure fails the whole call.
    pub async fn check_groups(
        self: &Arc<Self>,
        groups: &[(&[u8], &[GroupItem<'_>])],
        cost: u64,
        now_ms: u64,
    ) -> Result<(Vec<bool>, Vec<RemoteCount>), StoreErrorKind> {
        let Some(conn) = self.conn_for_call(now_ms) else {
            self.ensure_connecting();
            self.recovered_at_ms.store(u64::MAX, Ordering::Relaxed);
            self.warn(now_ms, "not connected yet");
            return Err(StoreErrorKind::Unavailable);
        };
        if !self.may_try(now_ms) {
            return Err(StoreErrorKind::Unavailable);
        }
        let n_items: usize = groups.iter().map(|(_, g)| g.len()).sum();
        let wins: Vec<Window> = groups
            .iter()
            .flat_map(|(_, items)| items.iter().map(|it| Window::at(now_ms, it.window_ms)))
            .collect();
        // One script call for all groups, or on a cluster one per group (one slot each).
        let per_call = if conn.one_slot_per_pipeline() {
            1
        } else {
            groups.len().max(1)
        };
        let mut invs = Vec::with_capacity(groups.len().div_ceil(per_call));
        let mut buf = Vec::with_capacity(64);
        let mut first = 0;
        for call in groups.chunks(per_call) {
            let n: usize = call.iter().map(|(_, g)| g.len()).sum();
            let wins = &wins[first..first + n];
            first += n;
            let mut inv = evalsha(&self.check, 2 * n);
            let mut w = wins.iter();
            for &(key, items) in call {
                let tag = key_tag(key);
                for (it, win) in items.iter().zip(w.by_ref()) {
                    buf.clear();
                    counter_key_tagged(&mut buf, &tag, it.name, win.idx);
                    inv.arg(buf.as_slice());
                    buf.clear();
                    counter_key_tagged(&mut buf, &tag, it.name, win.idx.wrapping_sub(1));
                    inv.arg(buf.as_slice());
                }
            }
            inv.arg(cost).arg(call.len());
            for (_, items) in call {
                inv.arg(items.len());
            }
            let items = call.iter().flat_map(|(_, items)| items.iter());
            for (it, win) in items.zip(wins) {
                inv.arg(win.w)
                    .arg(win.e)
                    .arg(it.max)
                    .arg(counter_ttl_ms(win))
                    .arg(if it.shadow { 1u8 } else { 0u8 })
                    .arg(it.hint.0)
                    .arg(it.hint.1);
            }
            invs.push(inv);
        }
        let res = tokio::time::timeout(self.cfg.timeout, eval_all(&conn, &self.check, &invs)).await;
        if !matches!(res, Ok(Ok(_))) {
            self.reresolve(&conn);
        }
        let replies = match res {
            Err(_) => {
                self.failed(now_ms, StoreErrorKind::Timeout, &"script call timed out");
                return Err(StoreErrorKind::Timeout);
            }
            Ok(Err(e)) => {
                self.failed(now_ms, StoreErrorKind::Redis, &e);
                return Err(StoreErrorKind::Redis);
            }
            Ok(Ok(v)) => v,
        };
        // The replies concatenated are, per group in order: all_ok, then (p, q, fits) per limit.
        let mut vals: Vec<i64> = Vec::with_capacity(groups.len() + 3 * n_items);
        for reply in replies {
            match reply {
                Value::ServerError(e) => {
                    let e = redis::RedisError::from(e);
                    self.reresolve(&conn);
                    self.failed(now_ms, StoreErrorKind::Redis, &e);
                    return Err(StoreErrorKind::Redis);
                }
                v => vals.extend(redis::from_owned_redis_value::<Vec<i64>>(v).unwrap_or_default()),
            }
        }
        if vals.len() != groups.len() + 3 * n_items {
            self.failed(now_ms, StoreErrorKind::Redis, &"unexpected script reply");
            return Err(StoreErrorKind::Redis);
        }
        let mut all_ok = Vec::with_capacity(groups.len());
        let mut counts = Vec::with_capacity(n_items);
        let (mut at, mut wins) = (0, wins.into_iter());
        for (_, items) in groups {
            all_ok.push(vals[at] == 1);
            let chunk = &vals[at + 1..at + 1 + 3 * items.len()];
            at += 1 + 3 * items.len();
            // `chunks` first: `zip` must not pull a window once the chunks run out.
            for (c, win) in chunk.chunks_exact(3).zip(wins.by_ref()) {
                counts.push(RemoteCount {
                    win,
                    prev: u64::try_from(c[0]).unwrap_or(0),
                    curr: u64::try_from(c[1]).unwrap_or(0),
                    fits: c[2] == 1,
                });
            }
        }
        self.succeeded(now_ms);
        Ok((all_ok, counts))
    }

    /// Undoes increments of groups `(request key, [(limit name, window index)])` (a request
    /// was rejected after they admitted), all in one pipeline. Best effort.
    pub async fn rollback_groups(
        self: &Arc<Self>,
        groups: &[RollbackGroup<'_>],
        cost: u64,
        now_ms: u64,
    ) {
        let Some(conn) = self.conn_for_call(now_ms) else {
            return;
        };
        let mut buf = Vec::with_capacity(64);
        let invs: Vec<_> = groups
            .iter()
            .map(|(key, items)| {
                let tag = key_tag(key);
                let mut inv = evalsha(&self.rollback, items.len());
                for &(name, idx) in items {
                    buf.clear();
                    counter_key_tagged(&mut buf, &tag, name, idx);
                    inv.arg(buf.as_slice());
                }
                inv.arg(cost);
                inv
            })
            .collect();
        let res =
            tokio::time::timeout(self.cfg.timeout, eval_all(&conn, &self.rollback, &invs)).await;
        match res {
            Ok(Ok(replies)) => {
                if let Some(Value::ServerError(e)) =
                    replies.iter().find(|v| matches!(v, Value::ServerError(_)))
                {
                    let e = redis::RedisError::from(e.clone());
                    self.warn(now_ms, &format!("rollback failed: {e}"));
                }
            }
            Ok(Err(e)) => self.warn(now_ms, &format!("rollback failed: {e}")),
            Err(_) => self.warn(now_ms, "rollback timed out"),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.conn.read().is_some()
    }

    /// Starts connecting and waits until connected, the first attempt failed, or `timeout`.
    /// Returns whether connected.
    pub async fn wait_connected(self: &Arc<Self>, timeout: std::time::Duration) -> bool {
        self.ensure_connecting();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_connected() {
                return true;
            }
            if self.first_attempt_done.load(Ordering::Acquire)
                || tokio::time::Instant::now() >= deadline
            {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &[u8], name: &str, idx: u64) -> Vec<u8> {
        let mut v = Vec::new();
        counter_key(&mut v, k, name, idx);
        v
    }

    #[test]
    fn key_names_have_a_fixed_size_tag() {
        let k = key(b"1.2.3.4", "per-min", 123);
        let tag = std::str::from_utf8(&key_tag(b"1.2.3.4"))
            .unwrap()
            .to_string();
        assert_eq!(k, format!("gw:rl:{{{tag}}}:per-min:123").into_bytes());
        assert!(tag
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // stable across processes and instances (no per-process key): pinned value
        assert_eq!(tag, "4e4806038978b6c66bc659a8b82a2c68");
        // issue 11 item 4: the name does not grow with the request key
        let big = vec![b'x'; 64 * 1024];
        assert_eq!(key(&big, "per-min", 123).len(), k.len());
        assert_eq!(key(b"", "a", 0).len(), key(b"}{%", "a", 0).len());
        assert_ne!(key(b"%", "a", 0), key(b"", "a", 0));
        assert_ne!(key(b"a", "a", 0), key(b"a", "a", 1));
    }
}

//! In-process counter store: sharded `parking_lot::Mutex<HashMap>` keyed by (limit, key digest).
//!
//! Keys are never stored: each entry is keyed by a 128-bit SipHash-1-3 digest of the request key
//! under a random per-process key ([`KeyDigester`]), so an entry costs the same few dozen bytes
//! whatever the key's size (issue 11 item 4: 20k keys of 16 KiB used to take +316 MiB). Without the
//! process's random key nobody can compute digests, so collisions (two keys sharing one counter)
//! cannot be steered; by chance they have probability ~n²/2^129.
//!
//! Each check locks exactly one shard, finds the key (no allocation unless the key is new),
//! rolls the entry forward to the current window, decides and increments under that lock, so a
//! key can never be over-admitted by concurrent callers. Bounded memory:
//! - idle expiry: an entry whose last window is two or more windows old no longer influences any
//!   estimate; each shard drops such entries in a sweep that runs at most once per
//!   `sweep interval` (the shortest window, clamped to 1 s ..= 60 s), triggered by the first
//!   access to that shard after the interval (amortised O(1)); `sweep_all` does it eagerly;
//! - key cap: a shard holds at most `ceil(max_keys / shards)` entries. Inserting into a full
//!   shard first sweeps expired entries; if that frees less than 1/8 of the shard's capacity,
//!   the least recently used entries of that shard are evicted until 1/8 is free. Each eviction
//!   round is O(shard size) and frees capacity/8 slots, so the cost per insert stays amortised
//!   O(1). An evicted key restarts from zero (fails open for that key), which is why the cap
//!   should be sized well above the expected number of live keys.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use parking_lot::Mutex;
use siphasher::sip128::{Hasher128, SipHasher13};

use super::window::Window;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Index of the window `curr` belongs to (the last window the key was accessed in).
    idx: u64,
    prev: u64,
    curr: u64,
    /// Unix ms of the last access, for LRU eviction.
    last_ms: u64,
}

/// A 128-bit keyed digest of a request key (SipHash-1-3-128 under a random per-process key).
#[derive(Clone, Copy)]
pub(crate) struct KeyDigester {
    k0: u64,
    k1: u64,
}

impl KeyDigester {
    /// A digester with a fresh random key (from the OS-seeded `RandomState`).
    pub fn random() -> Self {
        let r = RandomState::new();
        KeyDigester {
            k0: r.hash_one(0u64),
            k1: r.hash_one(1u64),
        }
    }

    /// The digest of `key`.
    #[inline]
    pub fn digest(&self, key: &[u8]) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(key);
        h.finish128().as_u128()
    }
}

/// Hashes an already uniformly random `u128` digest by folding it (no second hash pass).
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

type DigestMap = HashMap<u128, Entry, BuildHasherDefault<DigestHasher>>;

struct Shard {
    /// One map per limit id, keyed by key digest.
    maps: Vec<DigestMap>,
    len: usize,
    next_sweep_ms: u64,
}

/// Result of one local check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalCheck {
    /// Window position used (never earlier than the key's last window).
    pub win: Window,
    /// Counts before this request.
    pub prev: u64,
    pub curr: u64,
    pub fits: bool,
}

/// Sharded in-process store for a fixed set of limits (ids `0..windows.len()`).
pub(crate) struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    mask: usize,
    /// Window length in ms, per limit id.
    windows: Box<[u64]>,
    /// Quota per limit id.
    maxes: Box<[u64]>,
    shard_cap: usize,
    sweep_every_ms: u64,
    digester: KeyDigester,
}

impl LocalStore {
    /// `limits` holds (window ms, max) per limit id.
    pub fn new(limits: &[(u64, u64)], shards: usize, max_keys: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        let min_window = limits.iter().map(|l| l.0).min().unwrap_or(1000);
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    maps: limits.iter().map(|_| DigestMap::default()).collect(),
                    len: 0,
                    next_sweep_ms: 0,
                })
            })
            .collect();
        LocalStore {
            shards,
            mask: n - 1,
            windows: limits.iter().map(|l| l.0.max(1)).collect(),
            maxes: limits.iter().map(|l| l.1).collect(),
            shard_cap: max_keys.max(1).div_ceil(n).max(1),
            sweep_every_ms: min_window.clamp(1000, 60_000),
            digester: KeyDigester::random(),
        }
    }

    /// The shard of (limit, key digest): high bits of the digest mixed with the limit id.
    #[inline]
    fn shard(&self, limit: u32, d: u128) -> &Mutex<Shard> {
        let h = ((d >> 64) as u64) ^ u64::from(limit).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.shards[(h as usize) & self.mask]
    }

    /// Checks `cost` against limit `limit` for `key` at `now_ms`; if it fits and `consume`,
    /// counts it. Unknown limit ids are treated as "fits, nothing counted".
    pub fn check(
        &self,
        limit: u32,
        key: &[u8],
        cost: u64,
        now_ms: u64,
        consume: bool,
    ) -> LocalCheck {
        let id = limit as usize;
        let (Some(&w), Some(&max)) = (self.windows.get(id), self.maxes.get(id)) else {
            return LocalCheck {
                win: Window::at(now_ms, 1000),
                prev: 0,
                curr: 0,
                fits: true,
            };
        };
        let d = self.digester.digest(key);
        let mut guard = self.shard(limit, d).lock();
        let shard = &mut *guard;
        if now_ms >= shard.next_sweep_ms {
            shard.sweep(now_ms, &self.windows);
            shard.next_sweep_ms = now_ms.saturating_add(self.sweep_every_ms);
        }
        if let Some(e) = shard.maps[id].get_mut(&d) {
            // Never evaluate before the key's last window (clock skew between callers).
            let win = Window::at(now_ms.max(e.idx.saturating_mul(w)), w);
            if win.idx > e.idx {
                e.prev = if win.idx == e.idx + 1 { e.curr } else { 0 };
                e.curr = 0;
                e.idx = win.idx;
            }
            e.last_ms = e.last_ms.max(now_ms);
            let fits = win.admits(e.prev, e.curr, cost, max);
            let out = LocalCheck {
                win,
                prev: e.prev,
                curr: e.curr,
                fits,
            };
            if fits && consume {
                e.curr = e.curr.saturating_add(cost);
            }
            return out;
        }
        let win = Window::at(now_ms, w);
        let fits = win.admits(0, 0, cost, max);
        if fits && consume && cost > 0 {
            if shard.len >= self.shard_cap {
                shard.evict(now_ms, &self.windows, self.shard_cap);
            }
            shard.maps[id].insert(
                d,
                Entry {
                    idx: win.idx,
                    prev: 0,
                    curr: cost,
                    last_ms: now_ms,
                },
            );
            shard.len += 1;
        }
        LocalCheck {
            win,
            prev: 0,
            curr: 0,
            fits,
        }
    }

    /// Undoes a `check(.., consume = true)` that returned `fits` in window `idx`.
    pub fn rollback(&self, limit: u32, key: &[u8], cost: u64, idx: u64) {
        let id = limit as usize;
        if id >= self.windows.len() {
            return;
        }
        let d = self.digester.digest(key);
        let mut guard = self.shard(limit, d).lock();
        if let Some(e) = guard.maps[id].get_mut(&d) {
            if e.idx == idx {
                e.curr = e.curr.saturating_sub(cost);
            } else if e.idx == idx.saturating_add(1) {
                e.prev = e.prev.saturating_sub(cost);
            }
        }
    }

    /// Raises (limit, key)'s counters to at least `(prev, curr)` of window `idx` (counts seen
    /// elsewhere, e.g. the shared Redis counters), creating the entry if needed. Counters of a
    /// later window than `idx` are left alone.
    pub fn observe(&self, limit: u32, key: &[u8], idx: u64, prev: u64, curr: u64, now_ms: u64) {
        let id = limit as usize;
        if id >= self.windows.len() || (prev == 0 && curr == 0) {
            return;
        }
        let d = self.digester.digest(key);
        let mut guard = self.shard(limit, d).lock();
        let shard = &mut *guard;
        if let Some(e) = shard.maps[id].get_mut(&d) {
            if idx > e.idx {
                *e = Entry {
                    idx,
                    prev: prev.max(if idx == e.idx + 1 { e.curr } else { 0 }),
                    curr,
                    last_ms: e.last_ms.max(now_ms),
                };
            } else if idx == e.idx {
                e.prev = e.prev.max(prev);
                e.curr = e.curr.max(curr);
                e.last_ms = e.last_ms.max(now_ms);
            }
            return;
        }
        if shard.len >= self.shard_cap {
            shard.evict(now_ms, &self.windows, self.shard_cap);
        }
        shard.maps[id].insert(
            d,
            Entry {
                idx,
                prev,
                curr,
                last_ms: now_ms,
            },
        );
        shard.len += 1;
    }

    /// Drops expired entries in every shard now.
    pub fn sweep_all(&self, now_ms: u64) {
        for s in self.shards.iter() {
            s.lock().sweep(now_ms, &self.windows);
        }
    }

    /// Number of keys held (all limits).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len).sum()
    }

    /// The stored `(window index, prev, curr)` of (limit, key), without rolling it forward.
    pub fn peek(&self, limit: u32, key: &[u8]) -> Option<(u64, u64, u64)> {
        let d = self.digester.digest(key);
        let shard = self.shard(limit, d).lock();
        let e = shard.maps.get(limit as usize)?.get(&d)?;
        Some((e.idx, e.prev, e.curr))
    }

    /// Whether an entry exists for (limit, key); for tests.
    #[cfg(test)]
    pub fn contains(&self, limit: u32, key: &[u8]) -> bool {
        let d = self.digester.digest(key);
        self.shard(limit, d)
            .lock()
            .maps
            .get(limit as usize)
            .is_some_and(|m| m.contains_key(&d))
    }
}

impl Shard {
    fn sweep(&mut self, now_ms: u64, windows: &[u64]) {
        let mut len = 0;
        for (map, &w) in self.maps.iter_mut().zip(windows) {
            let cur = now_ms / w;
            map.retain(|_, e| e.idx.saturating_add(2) > cur);
            if map.capacity() > 64 && map.len() < map.capacity() / 4 {
                map.shrink_to_fit();
            }
            len += map.len();
        }
        self.len = len;
    }

    fn evict(&mut self, now_ms: u64, windows: &[u64], cap: usize) {
        self.sweep(now_ms, windows);
        let want_free = (cap / 8).max(1);
        let free = cap.saturating_sub(self.len);
        if free >= want_free {
            return;
        }
        let need = want_free - free;
        let mut ages: Vec<u64> = self
            .maps
            .iter()
            .flat_map(|m| m.values().map(|e| e.last_ms))
            .collect();
        if ages.is_empty() {
            return;
        }
        let nth = need.min(ages.len()) - 1;
        let (_, &mut cutoff, _) = ages.select_nth_unstable(nth);
        drop(ages);
        // Remove everything older than the cutoff, and entries at the cutoff until `need`.
        let older: usize = self
            .maps
            .iter()
            .map(|m| m.values().filter(|e| e.last_ms < cutoff).count())
            .sum();
        let mut at_cutoff_budget = need.saturating_sub(older);
        let mut len = 0;
        for map in self.maps.iter_mut() {
            map.retain(|_, e| {
                if e.last_ms < cutoff {
                    false
                } else if e.last_ms == cutoff && at_cutoff_budget > 0 {
                    at_cutoff_budget -= 1;
                    false
                } else {
                    true
                }
            });
            len += map.len();
        }
        self.len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 1000;

    fn store(max: u64, shards: usize, max_keys: usize) -> LocalStore {
        LocalStore::new(&[(W, max)], shards, max_keys)
    }

    #[test]
    fn fixed_then_weighted_previous_window() {
        let s = store(10, 4, 100);
        let t0 = 50 * W; // window start
        for i in 0..10 {
            assert!(s.check(0, b"k", 1, t0 + i, true).fits, "request {i}");
        }
        assert!(
            !s.check(0, b"k", 1, t0 + 999, true).fits,
            "11th in same window"
        );
        // Next window at 30% elapsed: prev weight 0.7 -> estimate 7, so 3 fit.
        let t1 = t0 + W + 300;
        for i in 0..3 {
            assert!(
                s.check(0, b"k", 1, t1, true).fits,
                "request {i} in next window"
            );
        }
        let c = s.check(0, b"k", 1, t1, true);
        assert!(!c.fits);
        assert_eq!((c.prev, c.curr, c.win.e), (10, 3, 300));
        // At the start of the following window only window t1 counts, at full weight.
        let c = s.check(0, b"k", 10, t0 + 2 * W, true);
        assert_eq!((c.prev, c.curr), (3, 0));
        assert!(!c.fits, "prev 3 at full weight at the boundary");
        // One window later window t1 has fully decayed.
        assert!(s.check(0, b"k", 10, t0 + 3 * W, true).fits);
    }

    #[test]
    fn rejected_does_not_insert_or_count() {
        let s = store(5, 1, 100);
        assert!(!s.check(0, b"big", 6, 0, true).fits);
        assert!(!s.contains(0, b"big"));
        assert!(s.check(0, b"k", 5, 0, true).fits);
        assert!(!s.check(0, b"k", 1, 1, true).fits);
        let c = s.check(0, b"k", 1, 2, false);
        assert_eq!(c.curr, 5);
    }

    #[test]
    fn rollback_same_and_next_window() {
        let s = store(5, 1, 100);
        let c = s.check(0, b"k", 2, 100, true);
        s.rollback(0, b"k", 2, c.win.idx);
        assert_eq!(s.check(0, b"k", 0, 101, false).curr, 0);
        let c = s.check(0, b"k", 3, 200, true);
        // Window rolled before the rollback: the count moved to prev.
        assert_eq!(s.check(0, b"k", 0, W + 10, false).prev, 3);
        s.rollback(0, b"k", 3, c.win.idx);
        assert_eq!(s.check(0, b"k", 0, W + 11, false).prev, 0);
    }

    #[test]
    fn clock_behind_key_window_is_conservative() {
        let s = store(10, 1, 100);
        for _ in 0..10 {
            assert!(s.check(0, b"k", 1, 5 * W + 10, true).fits);
        }
        // Caller with an older timestamp (previous window) is evaluated in the key's window.
        let c = s.check(0, b"k", 1, 4 * W + 999, true);
        assert_eq!(c.win.idx, 5);
        assert!(!c.fits);
    }

    #[test]
    fn idle_entries_expire_after_two_windows() {
        let s = store(10, 1, 100);
        s.check(0, b"a", 1, 0, true);
        s.check(0, b"b", 1, 10, true);
        assert_eq!(s.len(), 2);
        // One window later the entries still matter (they are the previous window).
        s.sweep_all(W + 999);
        assert_eq!(s.len(), 2);
        // Lazy sweep on the next access once the interval passed and two windows elapsed.
        s.check(0, b"c", 1, 2 * W, true);
        assert!(!s.contains(0, b"a") && !s.contains(0, b"b"));
        assert!(s.contains(0, b"c"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn key_cap_evicts_least_recently_used() {
        // One shard, cap 16 -> evicts at least 2 (1/8) when full.
        let s = store(100, 1, 16);
        for i in 0..16u64 {
            assert!(s.check(0, &i.to_be_bytes(), 1, i, true).fits);
        }
        // Touch key 0 so it is the most recently used.
        s.check(0, &0u64.to_be_bytes(), 1, 100, true);
        s.check(0, b"new", 1, 101, true);
        assert!(s.len() <= 16);
        assert!(s.contains(0, b"new"));
        assert!(s.contains(0, &0u64.to_be_bytes()), "recently used key kept");
        assert!(!s.contains(0, &1u64.to_be_bytes()), "oldest key evicted");
        assert!(!s.contains(0, &2u64.to_be_bytes()), "second oldest evicted");
        assert!(s.contains(0, &3u64.to_be_bytes()));
        // Many more inserts never exceed the cap.
        for i in 1000..2000u64 {
            s.check(0, &i.to_be_bytes(), 1, 200 + i, true);
            assert!(s.len() <= 16);
        }
    }
}

//! Limiter tests with a controllable clock (plain `now_ms` values), plus the real-clock
//! concurrency accuracy test for the local store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;

const MIN: Duration = Duration::from_secs(60);
/// A window-aligned start time (multiple of 60 s and of 1 s).
const T0: u64 = 1_700_000_040_000;

pub(super) fn spec(name: &str, window: Duration, max: u64) -> LimitSpec {
    LimitSpec::new(name, window, max)
}

fn limiter(specs: Vec<LimitSpec>) -> RateLimiter {
    RateLimiter::new(specs, RateLimiterConfig::default()).expect("valid config")
}

fn check(l: &RateLimiter, items: &[(LimitRef, &[u8])], now: u64) -> Decision {
    l.check_all_local(items, 1, now).expect("local-only")
}

fn header(d: &Decision, name: &str) -> Option<String> {
    render_headers(d)
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

#[test]
fn t0_is_window_aligned() {
    assert_eq!(T0 % 60_000, 0);
}

#[test]
fn window_boundary_retry_after_and_reset() {
    let l = limiter(vec![spec("per-min", MIN, 100)]);
    let a = l.limit_ref("per-min").expect("exists");
    let k: &[u8] = b"client-1";
    let now = T0 + 10_000;
    let d = check(&l, &[(a, k)], now);
    assert!(d.admitted);
    let h = d.headers.clone().expect("headers");
    assert_eq!((h.limit, h.window_secs, h.remaining), (100, 60, 99));
    // `t` is the time until the current fixed window ends (50 s), never more than the window,
    // even though the unit consumed now only fully decays by the end of the next window.
    assert_eq!(h.reset_secs, 50);
    for _ in 1..100 {
        assert!(check(&l, &[(a, k)], now).admitted);
    }
    let d = check(&l, &[(a, k)], now);
    assert!(!d.admitted);
    assert_eq!(d.rejected_by, Some(0));
    assert_eq!(d.outcomes[0].outcome, Outcome::Rejected);
    // prev=0, curr=100: a unit frees after the boundary (50 s) once 1% of the window passed
    // (the previous window then weighs 99/100 -> estimate 99): 600 ms -> 51 s rounded up.
    // `t` stays the time to the end of the current window (50 s); Retry-After is exact.
    let h = d.headers.clone().expect("headers");
    assert_eq!(
        (h.remaining, h.reset_secs, h.retry_after_secs),
        (0, 50, Some(51))
    );
    assert_eq!(d.retry_after_secs, Some(51));
    assert_eq!(header(&d, "Retry-After").as_deref(), Some("51"));
    // Exactness of the underlying millisecond wait.
    assert!(!check(&l, &[(a, k)], now + 50_599).admitted);
    assert!(check(&l, &[(a, k)], now + 50_600).admitted);
}

#[test]
fn reset_is_time_to_window_end_and_never_exceeds_window() {
    let l = limiter(vec![
        spec("per-min", MIN, 5),
        spec("per-sec", Duration::from_secs(1), 3),
        spec("odd", Duration::from_millis(2500), 2),
    ]);
    let pm = l.limit_ref("per-min").expect("exists");
    let ps = l.limit_ref("per-sec").expect("exists");
    let odd = l.limit_ref("odd").expect("exists");
    let reset = |d: &Decision| d.headers.as_ref().map(|h| (h.reset_secs, h.window_secs));
    // Fresh keys at several positions in the window: t = ceil(ms left in window), 1..=w.
    for (i, (into, want)) in [
        (0u64, 60u64),
        (1, 60),
        (59_000, 1),
        (59_999, 1),
        (30_500, 30),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("fresh-{i}");
        let d = check(&l, &[(pm, key.as_bytes())], T0 + into);
        assert_eq!(reset(&d), Some((want, 60)), "{into} ms into the window");
    }
    // A key used in the previous window and now: still at most w.
    let k: &[u8] = b"carry";
    for _ in 0..5 {
        assert!(check(&l, &[(pm, k)], T0 + 59_900).admitted);
    }
    let d = check(&l, &[(pm, k)], T0 + 60_000 + 12_000);
    assert!(d.admitted, "20% decayed frees one unit");
    assert_eq!(reset(&d), Some((48, 60)));
    // Rejected: t is the window end, Retry-After the exact wait (can exceed t and w).
    let k: &[u8] = b"burst";
    for _ in 0..5 {
        assert!(check(&l, &[(pm, k)], T0 + 1_000).admitted);
    }
    let d = check(&l, &[(pm, k)], T0 + 1_000);
    assert!(!d.admitted);
    assert_eq!(reset(&d), Some((59, 60)));
    // 59 s to the boundary, then 1/5 of the next window (12 s) until 4/5 of the burst remain.
    assert_eq!(d.retry_after_secs, Some(71));
    assert_eq!(
        header(&d, "RateLimit").as_deref(),
        Some("\"per-min\";r=0;t=59")
    );
    assert_eq!(header(&d, "X-RateLimit-Reset").as_deref(), Some("59"));
    // Sub-second and non-integer windows.
    let d = check(&l, &[(ps, b"s")], T0 + 400);
    assert_eq!(reset(&d), Some((1, 1)));
    let d = check(&l, &[(odd, b"o")], T0 + 100);
    assert_eq!(reset(&d), Some((3, 3)), "2.4 s left of a 2.5 s window");
    // Nothing counted: full quota, t = 0.
    let k: &[u8] = b"idle";
    assert!(check(&l, &[(pm, k)], T0).admitted);
    let d = l
        .check_all_local(&[(pm, k)], 0, T0 + 180_000)
        .expect("local-only");
    assert_eq!(
        d.headers.as_ref().map(|h| (h.remaining, h.reset_secs)),
        Some((5, 0))
    );
}

#[test]
fn previous_window_is_weighted_by_elapsed_time() {
    let l = limiter(vec![spec("per-min", MIN, 100)]);
    let a = l.limit_ref("per-min").expect("exists");
    let k: &[u8] = b"k";
    for _ in 0..100 {
        assert!(check(&l, &[(a, k)], T0 + 59_000).admitted);
    }
    // 25% into the next window: previous weighs 75 -> 25 more fit.
    let now = T0 + 60_000 + 15_000;
    for i in 0..25 {
        let d = check(&l, &[(a, k)], now);
        assert!(d.admitted, "request {i}");
        assert_eq!(d.headers.as_ref().map(|h| h.remaining), Some(24 - i));
    }
    let d = check(&l, &[(a, k)], now);
    assert!(!d.admitted);
    // est = 100*(45/60) + 25 = 100; one unit frees when 100*s/60000 <= 74 -> s <= 44400 ms,
    // i.e. 600 ms from now -> 1 s.
    assert_eq!(d.retry_after_secs, Some(1));
    assert!(!check(&l, &[(a, k)], now + 599).admitted);
    assert!(check(&l, &[(a, k)], now + 600).admitted);
    // Right at the boundary the previous window weighs fully: nothing fits.
    let l2 = limiter(vec![spec("w", MIN, 10)]);
    let b = l2.limit_ref("w").expect("exists");
    for _ in 0..10 {
        assert!(check(&l2, &[(b, k)], T0 + 59_999).admitted);
    }
    assert!(!check(&l2, &[(b, k)], T0 + 60_000).admitted);
    assert!(
        check(&l2, &[(b, k)], T0 + 60_000 + 6_000).admitted,
        "10% decayed = 1 unit"
    );
}

#[test]
fn shorter_and_longer_windows() {
    let l = limiter(vec![
        spec("1s", Duration::from_secs(1), 2),
        spec("1h", Duration::from_secs(3600), 3),
    ]);
    let s = l.limit_ref("1s").expect("exists");
    let h = l.limit_ref("1h").expect("exists");
    let t = 3600 * 1000 * 472_000; // aligned to the hour
    assert!(check(&l, &[(s, b"k")], t).admitted);
    assert!(check(&l, &[(s, b"k")], t).admitted);
    assert!(!check(&l, &[(s, b"k")], t).admitted);
    assert!(check(&l, &[(s, b"k")], t + 1500).admitted);
    for _ in 0..3 {
        assert!(check(&l, &[(h, b"k")], t + 1000).admitted);
    }
    let d = check(&l, &[(h, b"k")], t + 1000);
    assert!(!d.admitted);
    assert_eq!(d.headers.as_ref().map(|x| x.window_secs), Some(3600));
    // Next unit frees 1/3 of the way into the next hour: 3599 s + 1200 s.
    assert_eq!(d.retry_after_secs, Some(3599 + 1200));
}

#[test]
fn headers_come_from_most_restrictive_limit() {
    let mut hidden = spec("hidden", MIN, 4);
    hidden.emit_headers = false;
    let l = limiter(vec![
        spec("per-sec", Duration::from_secs(1), 5),
        spec("per-min", MIN, 3),
        hidden,
    ]);
    let ps = l.limit_ref("per-sec").expect("exists");
    let pm = l.limit_ref("per-min").expect("exists");
    let hd = l.limit_ref("hidden").expect("exists");
    let k: &[u8] = b"k";
    let req = [(ps, k), (pm, k)];
    let d = check(&l, &req, T0);
    let h = d.headers.clone().expect("headers");
    assert_eq!((&*h.policy, h.remaining), ("per-min", 2));
    assert_eq!(
        render_headers(&d),
        vec![
            ("RateLimit-Policy", "\"per-min\";q=3;w=60".to_owned()),
            ("RateLimit", "\"per-min\";r=2;t=60".to_owned()),
            ("X-RateLimit-Limit", "3".to_owned()),
            ("X-RateLimit-Remaining", "2".to_owned()),
            ("X-RateLimit-Reset", "60".to_owned()),
        ]
    );
    // per-sec becomes the most restrictive when it has fewer left: new key, 4 requests in
    // one second on per-sec only, then both.
    let k2: &[u8] = b"k2";
    for _ in 0..3 {
        check(&l, &[(ps, k2)], T0);
    }
    let d = check(&l, &[(ps, k2), (pm, k2)], T0);
    assert_eq!(
        d.headers.as_ref().map(|h| (&*h.policy, h.remaining)),
        Some(("per-sec", 1))
    );
    // A rejecting limit wins even if another has 0 remaining too.
    check(&l, &[(ps, k), (pm, k)], T0 + 1);
    check(&l, &[(ps, k), (pm, k)], T0 + 2);
    let d = check(&l, &[(ps, k), (pm, k)], T0 + 3);
    assert!(!d.admitted);
    assert_eq!(d.rejected_by, Some(1));
    let h = d.headers.clone().expect("headers");
    assert_eq!((&*h.policy, h.remaining), ("per-min", 0));
    assert!(h.retry_after_secs.is_some());
    assert_eq!(
        header(&d, "Retry-After"),
        h.retry_after_secs.map(|r| r.to_string())
    );
    // A limit without emit_headers never supplies headers, but its rejection still sets
    // Retry-After.
    let k3: &[u8] = b"k3";
    for _ in 0..4 {
        assert!(check(&l, &[(hd, k3), (ps, k3)], T0 + 10_000).admitted);
    }
    let d = check(&l, &[(hd, k3), (ps, k3)], T0 + 10_000);
    assert!(!d.admitted);
    assert_eq!(d.rejected_by, Some(0));
    assert_eq!(d.headers.as_ref().map(|h| &*h.policy), Some("per-sec"));
    // Not consumed by the rejected request: 4 of 5 used.
    assert_eq!(d.headers.as_ref().map(|h| h.remaining), Some(1));
    assert!(header(&d, "Retry-After").is_some());
}

#[test]
fn rejection_by_one_limit_consumes_nothing_elsewhere() {
    let specs = || vec![spec("big", MIN, 10), spec("small", MIN, 2)];
    let refs = limiter(specs());
    let big = refs.limit_ref("big").expect("exists");
    let small = refs.limit_ref("small").expect("exists");
    let k: &[u8] = b"k";
    for order in [[(big, k), (small, k)], [(small, k), (big, k)]] {
        let l = limiter(specs());
        assert!(check(&l, &order, T0).admitted);
        assert!(check(&l, &order, T0).admitted);
        for _ in 0..20 {
            let d = check(&l, &order, T0);
            assert!(!d.admitted);
            let bi = order.iter().position(|(r, _)| *r == big).expect("present");
            assert_eq!(d.outcomes[bi].outcome, Outcome::Allowed);
            assert_eq!(d.outcomes[bi].stats.map(|s| s.remaining), Some(8));
        }
        // "big" alone: 2 used, 8 left.
        let d = check(&l, &[(big, k)], T0);
        assert_eq!(d.headers.map(|h| h.remaining), Some(7));
    }
}

#[test]
fn shadow_limits_report_but_never_reject() {
    let mut sh = spec("shadow", MIN, 2);
    sh.mode = Mode::Shadow;
    let l = limiter(vec![sh, spec("enforced", MIN, 100)]);
    let s = l.limit_ref("shadow").expect("exists");
    let e = l.limit_ref("enforced").expect("exists");
    let k: &[u8] = b"k";
    for i in 0..5 {
        let d = check(&l, &[(s, k), (e, k)], T0);
        assert!(d.admitted, "request {i}");
        assert_eq!(d.rejected_by, None);
        let expect = if i < 2 {
            Outcome::Allowed
        } else {
            Outcome::ShadowRejected
        };
        assert_eq!(d.outcomes[0].outcome, expect);
        // Headers only from the enforcing limit.
        assert_eq!(d.headers.as_ref().map(|h| &*h.policy), Some("enforced"));
        assert!(header(&d, "Retry-After").is_none());
    }
    // The shadow limit counted only the 2 requests that fit.
    let d = check(&l, &[(s, k)], T0 + 60_000);
    assert_eq!(d.outcomes[0].outcome, Outcome::ShadowRejected);
    assert!(d.admitted);
    assert_eq!(
        d.outcomes[0].stats.map(|st| st.retry_after_secs.is_some()),
        Some(true)
    );
    // Alone, a shadow limit supplies the headers (over its quota: r=0) but no Retry-After.
    assert_eq!(
        header(&d, "RateLimit-Policy").as_deref(),
        Some("\"shadow\";q=2;w=60")
    );
    assert_eq!(
        header(&d, "RateLimit").as_deref(),
        Some("\"shadow\";r=0;t=60")
    );
    assert!(header(&d, "Retry-After").is_none());
    // ... unless its headers are turned off.
    let mut quiet = spec("quiet", MIN, 1);
    quiet.mode = Mode::Shadow;
    quiet.emit_headers = false;
    let lq = limiter(vec![quiet]);
    let q = lq.limit_ref("quiet").expect("exists");
    for _ in 0..3 {
        let d = check(&lq, &[(q, k)], T0);
        assert!(d.admitted);
        assert!(render_headers(&d).is_empty());
    }
    // Shadow admissions are rolled back when an enforcing limit rejects.
    let mut sh = spec("shadow", MIN, 5);
    sh.mode = Mode::Shadow;
    let l = limiter(vec![sh, spec("tiny", MIN, 1)]);
    let s = l.limit_ref("shadow").expect("exists");
    let t = l.limit_ref("tiny").expect("exists");
    assert!(check(&l, &[(s, k), (t, k)], T0).admitted);
    assert!(!check(&l, &[(s, k), (t, k)], T0).admitted);
    let d = check(&l, &[(s, k)], T0);
    assert_eq!(d.outcomes[0].stats.map(|st| st.remaining), Some(3));
}

#[test]
fn key_cap_evicts_and_idle_keys_expire() {
    let cfg = RateLimiterConfig {
        local: LocalConfig {
            shards: 4,
            max_keys: 64,
        },
        redis: None,
    };
    let l = RateLimiter::new(vec![spec("s", Duration::from_secs(1), 5)], cfg).expect("valid");
    let a = l.limit_ref("s").expect("exists");
    for i in 0..10_000u32 {
        let key = i.to_le_bytes();
        assert!(check(&l, &[(a, &key)], T0 + u64::from(i % 500)).admitted);
        assert!(l.local_keys().0 <= 64, "cap exceeded at {i}");
    }
    assert!(l.local_keys().0 > 32, "eviction keeps most of the capacity");
    // A recently used key survives a flood of new keys only if it stays active; idle keys are
    // dropped two windows after their last window.
    l.sweep_expired(T0 + 1_999);
    assert!(l.local_keys().0 > 0);
    l.sweep_expired(T0 + 2_000);
    assert_eq!(l.local_keys().0, 0);
    // Lazy expiry without explicit sweep.
    let l = limiter(vec![spec("s", Duration::from_secs(1), 5)]);
    let a = l.limit_ref("s").expect("exists");
    for i in 0..100u32 {
        check(&l, &[(a, &i.to_le_bytes())], T0);
    }
    assert_eq!(l.local_keys().0, 100);
    for i in 0..10_000u32 {
        // touch every shard after expiry
        check(&l, &[(a, &(1_000_000 + i).to_le_bytes())], T0 + 5_000);
    }
    assert_eq!(
        l.local_keys().0,
        10_000,
        "the 100 idle keys were swept lazily"
    );
}

#[test]
fn config_errors_and_unknown_refs() {
    let err = |specs, cfg| RateLimiter::new(specs, cfg).err();
    assert_eq!(
        err(
            vec![spec("a", Duration::ZERO, 1)],
            RateLimiterConfig::default()
        ),
        Some(ConfigError::ZeroWindow("a".into()))
    );
    assert_eq!(
        err(
            vec![spec("a", MIN, 1), spec("a", MIN, 2)],
            RateLimiterConfig::default()
        ),
        Some(ConfigError::DuplicateName("a".into()))
    );
    let mut r = spec("r", MIN, 1);
    r.backend = Backend::Redis;
    assert_eq!(
        err(vec![r.clone()], RateLimiterConfig::default()),
        Some(ConfigError::NoRedis("r".into()))
    );
    let cfg = RateLimiterConfig {
        redis: Some(RedisConfig::new("not a url")),
        ..Default::default()
    };
    assert!(matches!(
        err(vec![r.clone()], cfg),
        Some(ConfigError::RedisUrl(_))
    ));
    let mut huge = r;
    huge.max = 1 << 40;
    huge.window = Duration::from_secs(3600);
    let cfg = RateLimiterConfig {
        redis: Some(RedisConfig::new("redis://127.0.0.1:1/")),
        ..Default::default()
    };
    assert_eq!(
        err(vec![huge], cfg),
        Some(ConfigError::TooLargeForRedis("r".into()))
    );

    let l = limiter(vec![spec("a", MIN, 1)]);
    let bogus = LimitRef(7);
    let d = check(&l, &[(bogus, b"k")], T0);
    assert!(d.admitted);
    assert_eq!(d.outcomes[0].outcome, Outcome::Skipped);
    assert!(d.headers.is_none());
    // Cost above the quota: rejected, retry-after falls back to the window length.
    let a = l.limit_ref("a").expect("exists");
    let d = l.check_all_local(&[(a, b"k")], 2, T0).expect("local");
    assert!(!d.admitted);
    assert_eq!(d.retry_after_secs, Some(60));
    // Zero max rejects everything, no panic.
    let z = limiter(vec![spec("z", MIN, 0)]);
    let zr = z.limit_ref("z").expect("exists");
    assert!(!check(&z, &[(zr, b"")], T0).admitted);
}

/// The gateway (Pingora) needs `Send` futures and a shareable limiter.
#[test]
fn limiter_and_its_future_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let l = limiter(vec![spec("a", MIN, 1)]);
    send_sync(&l);
    let a = l.limit_ref("a").expect("exists");
    let items: [(LimitRef, &[u8]); 1] = [(a, b"k")];
    let fut = l.check_all(&items, T0);
    send(&fut);
}

#[tokio::test]
async fn async_path_matches_sync_path_for_local_limits() {
    let l = limiter(vec![spec("a", MIN, 3)]);
    let a = l.limit_ref("a").expect("exists");
    let l2 = limiter(vec![spec("a", MIN, 3)]);
    for i in 0..6 {
        let x = l.check_all(&[(a, b"k")], T0 + i).await;
        let y = check(&l2, &[(a, b"k")], T0 + i);
        assert_eq!(x, y);
    }
}

/// Serialises the CPU-heavy real-clock tests so they do not disturb each other.
pub(super) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `tasks` concurrent tasks calling `check_all` on key `hot` until `windows` windows of
/// `w_ms` have passed on a virtual clock that advances `step_ms` per call (call `i` is made at
/// `base + i * step_ms`), and returns the admitted count of each fixed window. The clock is
/// driven by the calls, not by the wall clock, so every window gets the same number of attempts
/// however slow the machine is (the old wall-clock version under-filled windows under load),
/// while the tasks still race on the store as hard as the machine allows.
pub(super) async fn hammer(
    limiters: Vec<RateLimiter>,
    item: LimitRef,
    tasks: usize,
    w_ms: u64,
    step_ms: u64,
    windows: u64,
) -> Vec<u64> {
    let base = (unix_millis_now() / w_ms) * w_ms;
    let total = windows * w_ms / step_ms;
    let seq = Arc::new(AtomicU64::new(0));
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..windows).map(|_| AtomicU64::new(0)).collect());
    let mut handles = Vec::new();
    for t in 0..tasks {
        let l = limiters[t % limiters.len()].clone();
        let (counts, seq) = (counts.clone(), seq.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let i = seq.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let now = base + i * step_ms;
                let d = l.check_all(&[(item, b"hot")], now).await;
                assert!(!d.has_store_error(), "store error during accuracy run");
                if d.admitted {
                    counts[((now - base) / w_ms) as usize].fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_local_accuracy_within_one_percent() {
    let _g = HEAVY.lock().await;
    let max = 1000;
    let w = 60_000;
    let l = limiter(vec![spec("hot", Duration::from_millis(w), max)]);
    let a = l.limit_ref("hot").expect("exists");
    // 3000 attempts per window (one per 20 virtual ms)
    let per_window = hammer(vec![l], a, 64, w, 20, 4).await;
    println!("local accuracy: admitted per {w} ms window (max {max}): {per_window:?}");
    assert!(per_window.len() >= 3);
    for (i, &n) in per_window.iter().enumerate() {
        assert!(n <= max, "window {i}: {n} > {max} (overshoot)");
        assert!(n * 100 >= max * 99, "window {i}: {n} < 99% of {max}");
    }
}

/// Resident set size of this process in bytes (Linux), for the memory measurement.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// `cargo test --release -- --ignored --nocapture memory_for_1m_keys`
#[test]
#[ignore = "measurement, prints RSS growth for 1M keys"]
fn memory_for_1m_keys() {
    let cfg = RateLimiterConfig {
        local: LocalConfig {
            shards: 64,
            max_keys: 2_000_000,
        },
        redis: None,
    };
    let before = rss_bytes().unwrap_or(0);
    let l = RateLimiter::new(vec![spec("m", MIN, 100)], cfg).expect("valid");
    let r = l.limit_ref("m").expect("exists");
    for i in 0..1_000_000u64 {
        let k = format!("client-{i:09}");
        check(&l, &[(r, k.as_bytes())], T0);
    }
    let after = rss_bytes().unwrap_or(0);
    assert_eq!(l.local_keys().0, 1_000_000);
    println!(
        "1M distinct 16-byte keys: RSS +{:.1} MB ({:.0} bytes/key incl. allocator overhead)",
        after.saturating_sub(before) as f64 / 1e6,
        after.saturating_sub(before) as f64 / 1_000_000.0 // bytes per key for 1M keys
    );
}

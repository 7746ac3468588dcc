//! Issue 16: a Redis outage must not multiply the quota by the number of gateways. Several
//! limiter instances (each with its own Redis client, as separate gateway processes) share one
//! quota on a real `redis-server`; Redis is killed in the middle of a window and restarted empty.
//! Requests go round-robin over the instances with a fixed clock, so the counts are exact.

use std::time::{Duration, Instant};

use gateway_testkit::redis::RedisServer;

use super::tests::spec;
use super::*;

const QUOTA: u64 = 150;
const MIN: Duration = Duration::from_secs(60);

fn instance(url: &str, share_ppm: Option<u32>) -> RateLimiter {
    let mut s = spec("shared", MIN, QUOTA);
    s.backend = Backend::Redis;
    s.on_store_error = OnStoreError::Local;
    let mut rc = RedisConfig::new(url);
    rc.timeout = Duration::from_millis(300);
    rc.backoff = Duration::from_millis(200);
    rc.outage_share_ppm = share_ppm;
    let cfg = RateLimiterConfig {
        redis: Some(rc),
        ..Default::default()
    };
    RateLimiter::new(vec![s], cfg).expect("valid config")
}

/// The gateway clock of a run: starts 1 s into a minute and advances in real time (the store's
/// back-off runs on it), so a run of well under a minute stays in one window.
struct Clock(u64, Instant);

impl Clock {
    fn now(&self) -> u64 {
        self.0 + self.1.elapsed().as_millis() as u64
    }
}

/// Sends `n` requests round-robin over `ls`; returns (admitted, store errors seen).
async fn round_robin(ls: &[RateLimiter], n: usize, clock: &Clock) -> (u64, u64) {
    let item = ls[0].limit_ref("shared").expect("exists");
    let (mut admitted, mut errors) = (0, 0);
    for i in 0..n {
        let d = ls[i % ls.len()]
            .check_all(&[(item, b"k")], clock.now())
            .await;
        admitted += u64::from(d.admitted);
        errors += u64::from(d.has_store_error());
    }
    (admitted, errors)
}

/// Kills Redis mid-window after `before` admissions through it, sends plenty of requests while
/// it is down, restarts it (empty), sends plenty more: returns admitted (before, during, after).
async fn outage_run(n: usize, share_ppm: Option<u32>) -> (u64, u64, u64) {
    let mut server = RedisServer::start();
    let ls: Vec<RateLimiter> = (0..n).map(|_| instance(&server.url(), share_ppm)).collect();
    for l in &ls {
        assert!(l.wait_connected(Duration::from_secs(10)).await);
    }
    if share_ppm.is_none() {
        // every instance has beaten and seen the others
        let deadline = Instant::now() + Duration::from_secs(10);
        while ls.iter().any(|l| l.redis_instances() != Some(n as u64)) {
            assert!(
                Instant::now() < deadline,
                "heartbeat never saw {n} instances"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // All of this happens in one window.
    let clock = Clock(unix_millis_now() / 60_000 * 60_000 + 1_000, Instant::now());
    let (before, errors) = round_robin(&ls, 40, &clock).await;
    assert_eq!((before, errors), (40, 0));

    server.kill();
    let (during, _) = round_robin(&ls, 4 * QUOTA as usize, &clock).await;

    server.spawn(); // same port, no data: Redis lost the window's counts
    let deadline = Instant::now() + Duration::from_secs(15);
    for l in &ls {
        let item = l.limit_ref("shared").expect("exists");
        loop {
            // a zero-cost probe counts nothing
            let d = l.check_all_cost(&[(item, b"probe")], 0, clock.now()).await;
            if !d.has_store_error() {
                break;
            }
            assert!(Instant::now() < deadline, "Redis use did not resume: {d:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (after, errors) = round_robin(&ls, 4 * QUOTA as usize, &clock).await;
    assert_eq!(errors, 0, "shared counting resumed");
    assert!(
        clock.1.elapsed() < Duration::from_secs(58),
        "the run stayed in one window"
    );
    (before, during, after)
}

fn check_aggregate(n: u64, (before, during, after): (u64, u64, u64)) {
    println!("{n} instances, quota {QUOTA}: admitted before {before}, while Redis was down {during}, after {after}");
    let total = before + during + after;
    // Round-robin: an instance's last view of the shared count misses at most one request of
    // each other instance (its in-flight burst), hence the `n - 1`.
    assert!(
        total < QUOTA + n,
        "aggregate {total} > quota {QUOTA} + {}",
        n - 1
    );
    assert!(
        before + during + 2 * n >= QUOTA,
        "under-admitted during the outage: {before} + {during}"
    );
    assert!(
        after <= n,
        "burst of fresh quota after Redis came back: {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_two_instances_keep_the_aggregate_near_the_quota() {
    check_aggregate(2, outage_run(2, None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_three_instances_keep_the_aggregate_near_the_quota() {
    check_aggregate(3, outage_run(3, None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_with_a_configured_share() {
    // 2 instances, share 0.5 configured (no heartbeat needed)
    check_aggregate(2, outage_run(2, Some(500_000)).await);
}

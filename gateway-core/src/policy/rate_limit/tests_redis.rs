//! Redis-store tests against a real `redis-server` that each test starts on a free loopback
//! port (and kills on drop): enforcement, rollback across groups, one round trip for several
//! key groups (counted by a TCP proxy), NOSCRIPT retry, shared quota accuracy across two
//! limiter instances, Redis dying/restarting, and Redis being down at startup.

use std::time::{Duration, Instant};

use gateway_testkit::redis::RedisServer;

use super::tests::{hammer, spec, HEAVY};
use super::*;

/// The hash tag of a request key in Redis key names (fixed size: issue 11 item 4).
fn tag(key: &[u8]) -> String {
    String::from_utf8(super::redis_store::key_tag(key).to_vec()).expect("hex")
}

const MIN: Duration = Duration::from_secs(60);

/// Reads a counter straight from Redis (the server itself is the testkit's real `redis-server`).
async fn redis_get(server: &RedisServer, key: &str) -> Option<i64> {
    let client = redis::Client::open(server.url()).expect("url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("test connection");
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut con)
        .await
        .expect("GET")
}

fn redis_spec(name: &str, window: Duration, max: u64, on_err: OnStoreError) -> LimitSpec {
    let mut s = spec(name, window, max);
    s.backend = Backend::Redis;
    s.on_store_error = on_err;
    s
}

fn redis_limiter(url: &str, specs: Vec<LimitSpec>, timeout: Duration) -> RateLimiter {
    let mut rc = RedisConfig::new(url);
    rc.timeout = timeout;
    let cfg = RateLimiterConfig {
        redis: Some(rc),
        ..Default::default()
    };
    RateLimiter::new(specs, cfg).expect("valid config")
}

async fn wait_connected(l: &RateLimiter) {
    l.start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !l.redis_connected() {
        assert!(
            Instant::now() < deadline,
            "limiter did not connect to Redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A gateway clock that starts 1 s into a minute and advances in real time.
struct TestClock {
    base: u64,
    start: Instant,
}

impl TestClock {
    fn new() -> Self {
        TestClock {
            base: unix_millis_now() / 60_000 * 60_000 + 1_000,
            start: Instant::now(),
        }
    }
    fn now(&self) -> u64 {
        self.base + self.start.elapsed().as_millis() as u64
    }
    fn minute_idx(&self) -> u64 {
        self.base / 60_000
    }
}

#[tokio::test]
async fn redis_enforces_one_round_trip_with_rollback_and_shadow() {
    let server = RedisServer::start();
    let mut sh = redis_spec("r-shadow", MIN, 1, OnStoreError::Local);
    sh.mode = Mode::Shadow;
    let l = redis_limiter(
        &server.url(),
        vec![
            redis_spec("r-big", MIN, 10, OnStoreError::Deny),
            redis_spec("r-small", MIN, 2, OnStoreError::Deny),
            sh,
            spec("local", MIN, 100),
        ],
        Duration::from_millis(500),
    );
    wait_connected(&l).await;
    let big = l.limit_ref("r-big").expect("exists");
    let small = l.limit_ref("r-small").expect("exists");
    let shadow = l.limit_ref("r-shadow").expect("exists");
    let local = l.limit_ref("local").expect("exists");
    let now = TestClock::new().base; // fixed: 1 s into a minute
    let idx = now / 60_000;
    let k: &[u8] = b"k";
    let req = [(big, k), (small, k), (shadow, k), (local, k)];
    for i in 0..2 {
        let d = l.check_all(&req, now).await;
        assert!(d.admitted, "request {i}");
        assert!(!d.has_store_error());
        let expect_shadow = if i == 0 {
            Outcome::Allowed
        } else {
            Outcome::ShadowRejected
        };
        assert_eq!(d.outcomes[2].outcome, expect_shadow);
    }
    let d = l.check_all(&req, now).await;
    assert!(!d.admitted);
    assert_eq!(d.rejected_by, Some(1));
    assert!(!d.has_store_error());
    // Same header math as locally: prev 0, curr 2 of 2 at 1 s into the window: one unit
    // frees halfway into the next window: 59 s + 30 s.
    assert_eq!(d.retry_after_secs, Some(89));
    assert_eq!(
        d.headers.as_ref().map(|h| (&*h.policy, h.remaining)),
        Some(("r-small", 0))
    );
    assert_eq!(
        redis_get(&server, &format!("gw:rl:{{{}}}:r-big:{idx}", tag(b"k"))).await,
        Some(2)
    );
    assert_eq!(
        redis_get(&server, &format!("gw:rl:{{{}}}:r-small:{idx}", tag(b"k"))).await,
        Some(2)
    );
    assert_eq!(
        redis_get(&server, &format!("gw:rl:{{{}}}:r-shadow:{idx}", tag(b"k"))).await,
        Some(1)
    );
    // The local limit was rolled back too: 2 of 100 used.
    let d = l.check_all(&[(local, k)], now).await;
    assert_eq!(d.headers.map(|h| h.remaining), Some(97));

    // Two groups (different keys): the second group's rejection undoes the first group.
    let (x, y): (&[u8], &[u8]) = (b"x", b"y");
    for _ in 0..2 {
        assert!(l.check_all(&[(big, x), (small, y)], now).await.admitted);
    }
    let d = l.check_all(&[(big, x), (small, y)], now).await;
    assert!(!d.admitted);
    assert_eq!(d.rejected_by, Some(1));
    assert_eq!(
        redis_get(&server, &format!("gw:rl:{{{}}}:r-big:{idx}", tag(b"x"))).await,
        Some(2)
    );
    // The TTL is set when the counter is made: until 10 s after the end of the next window
    // (1 s into this one: 119 s + 10 s). An increment does not refresh it.
    let client = redis::Client::open(server.url()).expect("url");
    let con = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let big_x = format!("gw:rl:{{{}}}:r-big:{idx}", tag(b"x"));
    let pttl = |mut con: redis::aio::MultiplexedConnection, key: String| async move {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("PTTL");
        ttl
    };
    let ttl = pttl(con.clone(), big_x.clone()).await;
    assert!(ttl > 120_000 && ttl <= 129_000, "ttl {ttl}");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(l.check_all(&[(big, x)], now).await.admitted);
    assert_eq!(redis_get(&server, &big_x).await, Some(3));
    let later = pttl(con.clone(), big_x.clone()).await;
    assert!(
        later <= ttl - 20,
        "an increment refreshed the TTL: {ttl} then {later}"
    );
    assert!(later > 0);
    // The next window sees this one as "previous" through Redis.
    let d = l.check_all(&[(small, y)], (idx + 1) * 60_000).await;
    assert!(!d.admitted, "previous window weighs fully at the boundary");
    let d = l
        .check_all(&[(small, y)], (idx + 1) * 60_000 + 30_000)
        .await;
    assert!(d.admitted, "half decayed");
}

/// A TCP proxy in front of Redis that counts round trips ("turns") of script traffic: how often a
/// client connection starts sending scripts again after having received something (or for the
/// first time). Connection handshakes (each runtime thread makes its own connection) are not
/// turns.
struct TurnProxy {
    port: u16,
    turns: std::sync::Arc<std::sync::Mutex<u64>>,
}

impl TurnProxy {
    async fn start(redis_port: u16) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let turns = std::sync::Arc::new(std::sync::Mutex::new(0u64));
        let counter = turns.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await
                else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                // Per connection: whether the last chunk was from the client.
                let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (up, up_sending) = (counter.clone(), sending.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        let chunk = &buf[..n];
                        // A turn of script traffic; a new connection's handshake is not one.
                        let scripts = chunk
                            .windows(7)
                            .any(|w| w == b"EVALSHA" || w == b"SCRIPT\r");
                        if scripts && !up_sending.swap(true, std::sync::atomic::Ordering::SeqCst) {
                            *up.lock().expect("lock") += 1;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = sr.read(&mut buf).await {
                        sending.store(false, std::sync::atomic::Ordering::SeqCst);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        TurnProxy { port, turns }
    }

    fn turns(&self) -> u64 {
        *self.turns.lock().expect("lock")
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

#[tokio::test]
async fn two_key_groups_cost_one_round_trip() {
    let server = RedisServer::start();
    let proxy = TurnProxy::start(server.port).await;
    let l = redis_limiter(
        &proxy.url(),
        vec![
            redis_spec("per-ip", MIN, 2, OnStoreError::Deny),
            redis_spec("per-route", MIN, 10, OnStoreError::Deny),
            spec("local", MIN, 100),
        ],
        Duration::from_secs(2),
    );
    wait_connected(&l).await;
    let ip = l.limit_ref("per-ip").expect("exists");
    let route = l.limit_ref("per-route").expect("exists");
    let local = l.limit_ref("local").expect("exists");
    let now = TestClock::new().base;
    let idx = now / 60_000;
    let req = [
        (ip, b"1.2.3.4".as_slice()),
        (route, b"/api".as_slice()),
        (local, b"1.2.3.4".as_slice()),
    ];
    let counters = || async {
        (
            redis_get(
                &server,
                &format!("gw:rl:{{{}}}:per-ip:{idx}", tag(b"1.2.3.4")),
            )
            .await,
            redis_get(
                &server,
                &format!("gw:rl:{{{}}}:per-route:{idx}", tag(b"/api")),
            )
            .await,
        )
    };

    // Fresh server: the scripts are not cached, so the first pipeline gets NOSCRIPT for both
    // groups and is retried once after SCRIPT LOAD; each group is applied exactly once.
    let t0 = proxy.turns();
    let d = l.check_all(&req, now).await;
    assert!(d.admitted && !d.has_store_error(), "{d:?}");
    assert_eq!(proxy.turns() - t0, 2, "NOSCRIPT: pipeline + load-and-retry");
    assert_eq!(counters().await, (Some(1), Some(1)));

    // Script cached: both groups in one round trip.
    let t0 = proxy.turns();
    let d = l.check_all(&req, now).await;
    assert!(d.admitted && !d.has_store_error(), "{d:?}");
    assert_eq!(proxy.turns() - t0, 1, "two key groups, one round trip");
    assert_eq!(counters().await, (Some(2), Some(2)));

    // per-ip rejects: per-route (other key) admitted in the same pipeline and is rolled back
    // in a second round trip (the first rollback also loads its script: one more); the
    // local limit is rolled back too.
    for expect_turns in [3, 2] {
        let t0 = proxy.turns();
        let d = l.check_all(&req, now).await;
        assert!(!d.admitted && !d.has_store_error(), "{d:?}");
        assert_eq!(d.rejected_by, Some(0));
        assert_eq!(d.outcomes[1].outcome, Outcome::Allowed);
        assert_eq!(proxy.turns() - t0, expect_turns, "check + rollback");
        assert_eq!(counters().await, (Some(2), Some(2)));
    }
    let d = l
        .check_all_local(&[(local, b"1.2.3.4")], 1, now)
        .expect("local");
    assert_eq!(d.headers.map(|h| h.remaining), Some(97));

    // Order does not matter: the rejecting group may come after the admitting one.
    let d = l
        .check_all(&[(route, b"/api".as_slice()), (ip, b"1.2.3.4")], now)
        .await;
    assert!(!d.admitted);
    assert_eq!(d.rejected_by, Some(1));
    assert_eq!(counters().await, (Some(2), Some(2)));

    // After SCRIPT FLUSH (script cache lost) the retry path works again, applied once.
    let client = redis::Client::open(server.url()).expect("url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .expect("SCRIPT FLUSH");
    let d = l
        .check_all(&[(route, b"/api".as_slice()), (route, b"/other")], now)
        .await;
    assert!(d.admitted && !d.has_store_error(), "{d:?}");
    assert_eq!(counters().await, (Some(2), Some(3)));
    assert_eq!(
        redis_get(
            &server,
            &format!("gw:rl:{{{}}}:per-route:{idx}", tag(b"/other"))
        )
        .await,
        Some(1)
    );
}

/// The Redis clients connected to `server` (one `CLIENT LIST` line each), without the asking one.
async fn redis_clients(server: &RedisServer) -> Vec<String> {
    let client = redis::Client::open(server.url()).expect("url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("test connection");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut con)
        .await
        .expect("CLIENT LIST");
    list.lines()
        .filter(|l| !l.contains(" cmd=client|list "))
        .map(str::to_owned)
        .collect()
}

/// Each runtime thread calling the store makes its own connection and, once it is ready, sends
/// its scripts on it (no hop through the thread that made the shared connection); counting stays
/// exact across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_runtime_thread_sends_on_its_own_connection() {
    let server = RedisServer::start();
    let l = std::sync::Arc::new(redis_limiter(
        &server.url(),
        vec![redis_spec("per-thread", MIN, 1_000, OnStoreError::Deny)],
        Duration::from_secs(2),
    ));
    wait_connected(&l).await;
    assert_eq!(
        redis_clients(&server).await.len(),
        1,
        "the shared connection"
    );
    let now = TestClock::new().base;
    // Calls done / connections listed: the threads (and their connections) live until then.
    let (done, listed) = (
        std::sync::Arc::new(std::sync::Barrier::new(3)),
        std::sync::Arc::new(std::sync::Barrier::new(3)),
    );
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (l, done, listed) = (l.clone(), done.clone(), listed.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                // The barriers are reached even if an assertion fails (the test then fails, not hangs).
                let calls = std::panic::AssertUnwindSafe(|| {
                    rt.block_on(async {
                        let item = l.limit_ref("per-thread").expect("exists");
                        for _ in 0..40 {
                            let d = l.check_all(&[(item, b"k".as_slice())], now).await;
                            assert!(d.admitted && !d.has_store_error());
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    })
                });
                let calls = std::panic::catch_unwind(calls);
                done.wait();
                listed.wait();
                if let Err(p) = calls {
                    std::panic::resume_unwind(p);
                }
            })
        })
        .collect();
    let wait = |b: std::sync::Arc<std::sync::Barrier>| async move {
        tokio::task::spawn_blocking(move || {
            b.wait();
        })
        .await
        .expect("barrier");
    };
    wait(done).await;
    let clients = redis_clients(&server).await;
    wait(listed).await;
    for t in threads {
        tokio::task::spawn_blocking(move || t.join())
            .await
            .expect("join")
            .expect("caller thread");
    }
    assert_eq!(clients.len(), 3, "shared + one per thread: {clients:#?}");
    // The two connections made last are the threads' own: their last command is the script.
    let mut by_age: Vec<(u64, &String)> = clients
        .iter()
        .map(|c| {
            let age = c
                .split(' ')
                .find_map(|f| f.strip_prefix("age="))
                .and_then(|a| a.parse().ok())
                .expect("age field");
            (age, c)
        })
        .collect();
    by_age.sort();
    for (_, c) in &by_age[..2] {
        assert!(c.contains(" cmd=evalsha "), "not used by its thread: {c}");
    }
    let idx = now / 60_000;
    let key = format!("gw:rl:{{{}}}:per-thread:{idx}", tag(b"k"));
    assert_eq!(redis_get(&server, &key).await, Some(80));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_quota_within_one_percent() {
    let _g = HEAVY.lock().await;
    let server = RedisServer::start();
    let max = 1000;
    let w = 60_000;
    let mk = || {
        redis_limiter(
            &server.url(),
            vec![redis_spec(
                "shared",
                Duration::from_millis(w),
                max,
                OnStoreError::Deny,
            )],
            Duration::from_secs(2),
        )
    };
    let (a, b) = (mk(), mk());
    wait_connected(&a).await;
    wait_connected(&b).await;
    let item = a.limit_ref("shared").expect("exists");
    let per_window = hammer(vec![a, b], item, 64, w, 20, 4).await;
    println!(
        "redis accuracy (2 instances): admitted per {w} ms window (max {max}): {per_window:?}"
    );
    assert!(per_window.len() >= 3);
    for (i, &n) in per_window.iter().enumerate() {
        assert!(n <= max, "window {i}: {n} > {max} (overshoot)");
        assert!(n * 100 >= max * 99, "window {i}: {n} < 99% of {max}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_then_restarted() {
    let mut server = RedisServer::start();
    let clock = TestClock::new();
    let idx = clock.minute_idx();
    let specs = || {
        vec![
            redis_spec("allow", MIN, 3, OnStoreError::Allow),
            redis_spec("deny", MIN, 3, OnStoreError::Deny),
            redis_spec("local", MIN, 3, OnStoreError::Local),
        ]
    };
    let l = redis_limiter(&server.url(), specs(), Duration::from_millis(50));
    wait_connected(&l).await;
    let allow = l.limit_ref("allow").expect("exists");
    let deny = l.limit_ref("deny").expect("exists");
    let local = l.limit_ref("local").expect("exists");
    for r in [allow, deny, local] {
        let d = l.check_all(&[(r, b"before")], clock.now()).await;
        assert!(d.admitted && !d.has_store_error());
    }

    server.kill();
    let timed = |d: &Decision, t: Instant| {
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "call took {:?}",
            t.elapsed()
        );
        d.outcomes[0].store_error
    };
    // Allow: fail open.
    for _ in 0..5 {
        let t = Instant::now();
        let d = l.check_all(&[(allow, b"a")], clock.now()).await;
        let e = timed(&d, t).expect("store error reported");
        assert_eq!(e.action, OnStoreError::Allow);
        assert!(d.admitted);
    }
    // Back-off: calls fail fast instead of waiting for the timeout.
    let t = Instant::now();
    for _ in 0..10 {
        let d = l.check_all(&[(allow, b"a")], clock.now()).await;
        assert_eq!(
            d.outcomes[0].store_error.map(|e| e.kind),
            Some(StoreErrorKind::Unavailable)
        );
    }
    assert!(
        t.elapsed() < Duration::from_millis(40),
        "10 calls in back-off took {:?}",
        t.elapsed()
    );
    // Deny: fail closed.
    let t = Instant::now();
    let d = l.check_all(&[(deny, b"d")], clock.now()).await;
    assert_eq!(timed(&d, t).map(|e| e.action), Some(OnStoreError::Deny));
    assert!(!d.admitted);
    assert_eq!(d.rejected_by, Some(0));
    assert_eq!(d.retry_after_secs, Some(1));
    assert!(render_headers(&d).contains(&("Retry-After", "1".to_owned())));
    // Local: same quota enforced in-process.
    for i in 0..4 {
        let t = Instant::now();
        let d = l.check_all(&[(local, b"l")], clock.now()).await;
        assert_eq!(timed(&d, t).map(|e| e.action), Some(OnStoreError::Local));
        assert_eq!(d.admitted, i < 3, "request {i}");
    }

    server.spawn(); // same port
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = l.check_all(&[(allow, b"probe")], clock.now()).await;
        if !d.has_store_error() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "enforcement through Redis did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // At least the successful probe went through Redis (a probe that timed out after Redis
    // executed it may have counted too).
    let probe = redis_get(&server, &format!("gw:rl:{{{}}}:allow:{idx}", tag(b"probe"))).await;
    assert!(probe.is_some_and(|n| n >= 1), "probe counter {probe:?}");
    // Enforced through Redis again, and shared with a second instance.
    let l2 = redis_limiter(&server.url(), specs(), Duration::from_millis(500));
    wait_connected(&l2).await;
    for (i, lim) in [&l, &l2, &l, &l2].into_iter().enumerate() {
        let d = lim.check_all(&[(deny, b"shared")], clock.now()).await;
        assert!(!d.has_store_error(), "request {i}");
        assert_eq!(d.admitted, i < 3, "request {i}");
    }
    assert_eq!(
        redis_get(&server, &format!("gw:rl:{{{}}}:deny:{idx}", tag(b"shared"))).await,
        Some(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_startup_then_comes_up() {
    let mut server = RedisServer::not_started();
    let clock = TestClock::new();
    let l = redis_limiter(
        &server.url(),
        vec![redis_spec("r", MIN, 2, OnStoreError::Local)],
        Duration::from_millis(50),
    );
    let r = l.limit_ref("r").expect("exists");
    for i in 0..3 {
        let t = Instant::now();
        let d = l.check_all(&[(r, b"k")], clock.now()).await;
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "startup call blocked"
        );
        assert_eq!(
            d.outcomes[0].store_error,
            Some(StoreErrorReport {
                kind: StoreErrorKind::Unavailable,
                action: OnStoreError::Local
            })
        );
        assert_eq!(d.admitted, i < 2, "local fallback enforces the quota");
    }
    server.spawn();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = l.check_all(&[(r, b"k2")], clock.now()).await;
        if !d.has_store_error() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never connected after Redis came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key = format!("gw:rl:{{{}}}:r:{}", tag(b"k2"), clock.minute_idx());
    let n = redis_get(&server, &key).await;
    assert!(n.is_some_and(|n| n >= 1), "counter {n:?}");
}

//! Rate limiting end to end: the in-process gateway in front of real upstreams, with a real
//! `redis-server` started per test.
//!
//! - the seed deployment's login limit (5 per 60 s per client IP), local and Redis-backed, and
//!   `examples/seed.yaml` itself: exact admissions, the 429 body and every header;
//! - several limits on one request: a rejection consumes no quota anywhere (local, Redis, mixed);
//! - shadow mode and `headers: false`;
//! - accuracy under 64 concurrent clients (local, Redis, two gateways sharing one Redis);
//! - Redis faults: killed mid-test (`on_store_error` local / deny / allow) and restarted.
//!
//! Windows are aligned to unix time (`index = now_ms / window_ms`) like the limiter, and the
//! test process shares the gateway's clock, so a response can be attributed to the limiter's
//! window from the times it was sent and received; the exact per-window count is also read from
//! the store (Redis `GET`, or the local table) and must agree. The accuracy tests saturate both
//! cores, so the other tests do not run at the same time as them (see `SERIAL`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway_core::policy::rate_limit::redis_key_name;
use gateway_core::proxy::server::Embedded;
use gateway_core::proxy::Engine;
use gateway_testkit::prom::Scrape;
use gateway_testkit::redis::RedisServer;
use gateway_testkit::redis_cluster::RedisCluster;
use gateway_testkit::{http_client, request, HttpClient, HttpResponse, Method, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Exact-count tests take it exclusively (their Redis round trips must not be slowed past
/// their timeouts); the accuracy tests share it (they only need saturation, which holds).
static SERIAL: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// If less than `need_ms` is left in the current window of `window_ms`, waits for the next one,
/// so a short sequence of requests falls into one fixed window.
async fn avoid_boundary(window_ms: u64, need_ms: u64) {
    let left = window_ms - unix_ms() % window_ms;
    if left < need_ms {
        tokio::time::sleep(Duration::from_millis(left + 5)).await;
    }
}

async fn send(c: &HttpClient, method: Method, url: &str) -> HttpResponse {
    gateway_testkit::send(c, method, url, &[], "").await
}

/// Checks `RateLimit-Policy`, `RateLimit` and `X-RateLimit-*` for `policy` (quota `q` per `w`
/// seconds) and returns `(r, t)`; `t` must be within `1..=w`.
fn limit_headers(resp: &HttpResponse, policy: &str, q: u64, w: u64) -> (u64, u64) {
    assert_eq!(
        resp.header("ratelimit-policy"),
        Some(format!("\"{policy}\";q={q};w={w}").as_str()),
        "RateLimit-Policy"
    );
    let v = resp.header("ratelimit").expect("RateLimit header");
    let rest = v
        .strip_prefix(&format!("\"{policy}\";r="))
        .unwrap_or_else(|| panic!("RateLimit {v:?} does not name {policy}"));
    let (r, t) = rest
        .split_once(";t=")
        .unwrap_or_else(|| panic!("RateLimit {v:?}"));
    let (r, t): (u64, u64) = (
        r.parse().expect("r is an integer"),
        t.parse().expect("t is an integer"),
    );
    assert_eq!(
        resp.header("x-ratelimit-limit"),
        Some(q.to_string().as_str())
    );
    assert_eq!(
        resp.header("x-ratelimit-remaining"),
        Some(r.to_string().as_str())
    );
    assert_eq!(
        resp.header("x-ratelimit-reset"),
        Some(t.to_string().as_str())
    );
    assert!((1..=w).contains(&t), "t={t} must be within 1..={w} ({v})");
    (r, t)
}

fn no_limit_headers(resp: &HttpResponse) {
    for h in [
        "ratelimit",
        "ratelimit-policy",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "retry-after",
    ] {
        assert!(
            resp.header(h).is_none(),
            "unexpected {h}: {:?}",
            resp.header(h)
        );
    }
}

/// The project's JSON error for a 429 by `policy`.
fn assert_rate_limited(resp: &HttpResponse, policy: &str) {
    assert_eq!(resp.status, 429, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp.json().expect("JSON error body");
    assert_eq!(v["error"], "rate_limited");
    assert_eq!(
        v["message"].as_str(),
        Some(format!("rate limit {policy} exceeded").as_str())
    );
    assert_eq!(v["request_id"].as_str(), resp.header("x-request-id"));
}

fn retry_after(resp: &HttpResponse) -> u64 {
    resp.header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After is whole seconds")
}

/// `GET key` on a Redis server as an integer (`None` when absent or unreachable).
async fn redis_get(port: u16, key: &str) -> Option<u64> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(format!("GET {key}\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if text.starts_with("$-1\r\n") {
                return None;
            }
            let mut lines = text.split("\r\n");
            if let (Some(_), Some(v), Some(_)) = (lines.next(), lines.next(), lines.next()) {
                return v.parse().ok();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}

/// The value of one sample of the gateway's `/metrics` whose labels include all of `labels`.
async fn metric(gw: &Embedded, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let admin = gw.admin_addr.expect("admin listener");
    let text = send(
        &http_client(),
        Method::GET,
        &format!("http://{admin}/metrics"),
    )
    .await
    .text();
    Scrape::parse(&text).first(name, labels)
}

// ---------------------------------------------------------------------------------------------
// The seed deployment's login limit.

const LOGIN_YAML: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
upstreams:
  - name: user-service
    endpoints: [{ address: "{{U1}}" }, { address: "{{U2}}" }]
    load_balancing: { type: round_robin }
routes:
  - name: auth-login
    match: { path: /api/auth/login, methods: [POST] }
    rewrite: { path: /auth/login }
    upstream: user-service
    policies: [login-limit]
policies:
  - name: login-limit
    type: rate_limit
    window: 60s
    max: 5
    key: { type: client_ip }
    scope: route
    store: {{STORE}}
"#;

/// Six logins from one client within one minute: five reach the upstream with `r` = 4..0 and the
/// sixth is a 429 naming `login-limit` with the exact `Retry-After`.
async fn six_logins(url: &str, ups: &[&Upstream]) {
    let hits = || -> u64 { ups.iter().map(|u| u.hits_for("POST", "/auth/login")).sum() };
    let before = hits();
    avoid_boundary(60_000, 3_000).await;
    let c = http_client();
    let login = format!("{url}/api/auth/login");
    let first_ms = unix_ms();
    for i in 0..5u64 {
        let sent = unix_ms();
        let r = send(&c, Method::POST, &login).await;
        let done = unix_ms();
        assert_eq!(r.status, 200, "login {} {}", i + 1, r.text());
        let (rem, t) = limit_headers(&r, "login-limit", 5, 60);
        assert_eq!(rem, 4 - i, "remaining after login {}", i + 1);
        // t = seconds until the current minute ends.
        let t_range =
            (60_000 - done % 60_000).div_ceil(1000)..=(60_000 - sent % 60_000).div_ceil(1000);
        assert!(t_range.contains(&t), "t={t}, expected {t_range:?}");
        assert!(r.header("retry-after").is_none());
    }
    let sent = unix_ms();
    let r = send(&c, Method::POST, &login).await;
    let done = unix_ms();
    assert_eq!(first_ms / 60_000, done / 60_000, "all in one window");
    assert_rate_limited(&r, "login-limit");
    let (rem, t) = limit_headers(&r, "login-limit", 5, 60);
    assert_eq!(rem, 0);
    // Exact wait: the minute's 5 logins weigh fully at its end and 4/5 of them after another
    // 12 s of the next minute; so Retry-After = (ms left in this minute + 12 s), rounded up.
    // That is up to 72 s, more than the window: a client retrying after 60 s would be refused.
    let ra = retry_after(&r);
    let ra_range =
        (72_000 - done % 60_000).div_ceil(1000)..=(72_000 - sent % 60_000).div_ceil(1000);
    assert!(
        ra_range.contains(&ra),
        "Retry-After={ra}, expected {ra_range:?}"
    );
    assert!((13..=72).contains(&ra));
    assert!(
        t < ra && t <= 60,
        "t={t} is the end of the window, not the retry time"
    );
    assert_eq!(
        hits() - before,
        5,
        "the rejected login never reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limit_local_store() {
    let _serial = SERIAL.write().await;
    let (u1, u2) = (Upstream::start("u1").await, Upstream::start("u2").await);
    let gw = gw_suite::gateway(
        LOGIN_YAML,
        &[
            ("U1", u1.addr().to_string()),
            ("U2", u2.addr().to_string()),
            ("STORE", "{ type: local }".into()),
        ],
    )
    .await;
    six_logins(&gw.url(), &[&u1, &u2]).await;
    // A GET is not the login route: 405, not counted, not limited.
    let r = send(
        &http_client(),
        Method::GET,
        &format!("{}/api/auth/login", gw.url()),
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(
        metric(
            &gw,
            "gw_ratelimit_decisions_total",
            &[("policy", "login-limit"), ("decision", "rejected")]
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limit_redis_store() {
    let _serial = SERIAL.write().await;
    let redis = RedisServer::start();
    let (u1, u2) = (Upstream::start("u1").await, Upstream::start("u2").await);
    let gw = gw_suite::gateway(
        LOGIN_YAML,
        &[
            ("U1", u1.addr().to_string()),
            ("U2", u2.addr().to_string()),
            (
                "STORE",
                format!("{{ type: redis, url: \"{}\", timeout: 1s }}", redis.url()),
            ),
        ],
    )
    .await;
    six_logins(&gw.url(), &[&u1, &u2]).await;
    let idx = unix_ms() / 60_000;
    assert_eq!(
        redis_get(
            redis.port,
            &redis_key_name(b"r:auth-login|ip:127.0.0.1", "login-limit", idx)
        )
        .await,
        Some(5),
        "the counter lives in Redis: {}",
        redis.command("KEYS gw:*")
    );
    assert_eq!(
        metric(
            &gw,
            "gw_ratelimit_store_errors_total",
            &[("policy", "login-limit")]
        )
        .await,
        Some(0.0),
        "no store errors"
    );
}

/// `examples/seed.yaml` itself, with its listener, admin and upstream addresses swapped for test
/// ones: the login route carries the global, user-service and login limits, all Redis-backed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_yaml_login_limit() {
    let _serial = SERIAL.write().await;
    let redis = RedisServer::start();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed.yaml");
    let text = std::fs::read_to_string(path).expect("examples/seed.yaml");
    let redis_url = redis.url();
    let env = move |k: &str| match k {
        "JWT_SECRET" => Some("a-test-secret-of-at-least-32-bytes-length".to_string()),
        "REDIS_URL" => Some(redis_url.clone()),
        _ => None,
    };
    let compiled = gateway_core::compile(path, &text, &env);
    let mut plan = compiled.plan.unwrap_or_else(|| {
        panic!(
            "seed.yaml does not compile:\n{}",
            compiled
                .diagnostics
                .iter()
                .map(|d| d.render(&text))
                .collect::<String>()
        )
    });
    plan.listeners[0].addr = "127.0.0.1:0".parse().expect("addr");
    if let Some(a) = plan.admin.as_mut() {
        a.addr = "127.0.0.1:0".parse().expect("addr");
    }
    plan.access_log = gateway_core::plan::AccessLogSpec::Off;
    let mut ups = Vec::new();
    for u in &mut plan.upstreams {
        for e in &mut u.endpoints {
            let up = Upstream::start(&format!("{}-{}", u.name, ups.len())).await;
            e.address = up.addr().to_string();
            ups.push(up);
        }
    }
    let gw = Embedded::start(plan).await.expect("seed gateway starts");
    let refs: Vec<&Upstream> = ups.iter().collect();
    six_logins(&gw.url(), &refs).await;
    // The rejected login consumed nothing in the global and user-service limits either.
    let idx = unix_ms() / 60_000;
    for (key, policy) in [
        ("g|ip:127.0.0.1", "global-limit"),
        ("u:user-service|ip:127.0.0.1", "user-service-limit"),
        ("r:auth-login|ip:127.0.0.1", "login-limit"),
    ] {
        assert_eq!(
            redis_get(redis.port, &redis_key_name(key.as_bytes(), policy, idx)).await,
            Some(5),
            "{policy}: {}",
            redis.command("KEYS gw:*")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Several limits on one request.

const MULTI_YAML: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
upstreams:
  - name: svc
    endpoints: [{ address: "{{U}}" }]
routes:
  - { name: ll-tight, match: { path: /ll/tight }, upstream: svc, policies: [wide-ll, tight-ll] }
  - { name: ll-wide, match: { path: /ll/wide }, upstream: svc, policies: [wide-ll] }
  - { name: rr-tight, match: { path: /rr/tight }, upstream: svc, policies: [wide-rr, tight-rr] }
  - { name: rr-wide, match: { path: /rr/wide }, upstream: svc, policies: [wide-rr] }
  - { name: lr-tight, match: { path: /lr/tight }, upstream: svc, policies: [wide-lr, tight-lr] }
  - { name: lr-wide, match: { path: /lr/wide }, upstream: svc, policies: [wide-lr] }
  - { name: rl-tight, match: { path: /rl/tight }, upstream: svc, policies: [wide-rl, tight-rl] }
  - { name: rl-wide, match: { path: /rl/wide }, upstream: svc, policies: [wide-rl] }
policies:
  # wide: 10 per hour per client across routes; tight: 3 per hour per client on its route.
  - { name: wide-ll, type: rate_limit, window: 1h, max: 10, key: { type: client_ip }, scope: global }
  - { name: tight-ll, type: rate_limit, window: 1h, max: 3, key: { type: client_ip }, scope: route }
  - { name: wide-rr, type: rate_limit, window: 1h, max: 10, key: { type: client_ip }, scope: global, store: { type: redis, url: "{{REDIS}}", timeout: 1s } }
  - { name: tight-rr, type: rate_limit, window: 1h, max: 3, key: { type: client_ip }, scope: route, store: { type: redis, url: "{{REDIS}}", timeout: 1s } }
  - { name: wide-lr, type: rate_limit, window: 1h, max: 10, key: { type: client_ip }, scope: global }
  - { name: tight-lr, type: rate_limit, window: 1h, max: 3, key: { type: client_ip }, scope: route, store: { type: redis, url: "{{REDIS}}", timeout: 1s } }
  - { name: wide-rl, type: rate_limit, window: 1h, max: 10, key: { type: client_ip }, scope: global, store: { type: redis, url: "{{REDIS}}", timeout: 1s } }
  - { name: tight-rl, type: rate_limit, window: 1h, max: 3, key: { type: client_ip }, scope: route }
"#;

/// Wide and tight limits: the wide one is counted first (it is listed first, and local limits
/// are checked before Redis ones), so a tight rejection must roll it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_by_one_limit_consumes_no_quota_in_others() {
    let _serial = SERIAL.write().await;
    let redis = RedisServer::start();
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(
        MULTI_YAML,
        &[("U", up.addr().to_string()), ("REDIS", redis.url())],
    )
    .await;
    avoid_boundary(3_600_000, 5_000).await;
    let c = http_client();
    for combo in ["ll", "rr", "lr", "rl"] {
        let (tight, wide) = (format!("tight-{combo}"), format!("wide-{combo}"));
        let tight_url = format!("{}/{combo}/tight", gw.url());
        let wide_url = format!("{}/{combo}/wide", gw.url());
        for i in 0..3u64 {
            let r = send(&c, Method::GET, &tight_url).await;
            assert_eq!(r.status, 200, "{combo}: request {i}");
            // The tighter limit (fewer left) supplies the headers.
            assert_eq!(limit_headers(&r, &tight, 3, 3600).0, 2 - i, "{combo}");
        }
        for _ in 0..4 {
            let r = send(&c, Method::GET, &tight_url).await;
            assert_rate_limited(&r, &tight);
            assert_eq!(limit_headers(&r, &tight, 3, 3600).0, 0);
            assert!(retry_after(&r) >= 1);
        }
        // 3 of 10 used by the wide limit, not 7: the 4 rejected requests left no trace.
        for left in (0..=6u64).rev() {
            let r = send(&c, Method::GET, &wide_url).await;
            assert_eq!(r.status, 200, "{combo}: wide, {left} left");
            assert_eq!(limit_headers(&r, &wide, 10, 3600).0, left, "{combo}");
        }
        let r = send(&c, Method::GET, &wide_url).await;
        assert_rate_limited(&r, &wide);
        // Both exhausted now: the tight route stays refused.
        let r = send(&c, Method::GET, &tight_url).await;
        assert_eq!(r.status, 429);
    }
    let idx = unix_ms() / 3_600_000;
    for policy in ["wide-rr", "wide-rl"] {
        assert_eq!(
            redis_get(redis.port, &redis_key_name(b"g|ip:127.0.0.1", policy, idx)).await,
            Some(10),
            "{policy} in Redis: {}",
            redis.command("KEYS gw:*")
        );
    }
    assert_eq!(
        up.hits(),
        4 * 10,
        "exactly the admitted requests reached the upstream"
    );
}

// ---------------------------------------------------------------------------------------------
// Shadow mode and `headers: false`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_never_rejects_and_headers_can_be_turned_off() {
    let _serial = SERIAL.write().await;
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
upstreams: [{ name: svc, endpoints: [{ address: "{{U}}" }] }]
routes:
  - { name: shadow, match: { path: /shadow }, upstream: svc, policies: [trial] }
  - { name: quiet, match: { path: /quiet }, upstream: svc, policies: [trial-quiet] }
  - { name: hidden, match: { path: /hidden }, upstream: svc, policies: [enforced-quiet] }
  - { name: both, match: { path: /both }, upstream: svc, policies: [trial-both, enforced] }
policies:
  - { name: trial, type: rate_limit, window: 1h, max: 2, key: { type: client_ip }, scope: route, mode: shadow }
  - { name: trial-quiet, type: rate_limit, window: 1h, max: 2, key: { type: client_ip }, scope: route, mode: shadow, headers: false }
  - { name: enforced-quiet, type: rate_limit, window: 1h, max: 2, key: { type: client_ip }, scope: route, headers: false }
  - { name: trial-both, type: rate_limit, window: 1h, max: 1, key: { type: client_ip }, scope: route, mode: shadow }
  - { name: enforced, type: rate_limit, window: 1h, max: 100, key: { type: client_ip }, scope: route }
"#,
        &[("U", up.addr().to_string())],
    )
    .await;
    avoid_boundary(3_600_000, 5_000).await;
    let c = http_client();
    for i in 0..5u64 {
        let r = send(&c, Method::GET, &format!("{}/shadow", gw.url())).await;
        assert_eq!(r.status, 200, "shadow request {i}");
        assert_eq!(
            limit_headers(&r, "trial", 2, 3600).0,
            1u64.saturating_sub(i)
        );
        assert!(r.header("retry-after").is_none());
        let r = send(&c, Method::GET, &format!("{}/quiet", gw.url())).await;
        assert_eq!(r.status, 200, "quiet request {i}");
        no_limit_headers(&r);
        // The enforcing limit's headers win over the shadow one's, even when it has more left.
        let r = send(&c, Method::GET, &format!("{}/both", gw.url())).await;
        assert_eq!(r.status, 200, "both request {i}");
        assert_eq!(limit_headers(&r, "enforced", 100, 3600).0, 99 - i);
    }
    // headers: false on an enforcing limit: no RateLimit / X-RateLimit-* headers, not even on
    // the 429; Retry-After stays and the JSON body still names the policy.
    for i in 0..3 {
        let r = send(&c, Method::GET, &format!("{}/hidden", gw.url())).await;
        if i < 2 {
            assert_eq!(r.status, 200);
            no_limit_headers(&r);
        } else {
            assert_rate_limited(&r, "enforced-quiet");
            assert!(
                retry_after(&r) >= 1,
                "Retry-After stays: it is plain HTTP for a 429"
            );
            for h in [
                "ratelimit",
                "ratelimit-policy",
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
            ] {
                assert!(r.header(h).is_none(), "{h}");
            }
        }
    }
    assert_eq!(up.hits(), 5 * 3 + 2);
    for (policy, allowed, shadow) in [
        ("trial", 2.0, 3.0),
        ("trial-quiet", 2.0, 3.0),
        ("trial-both", 1.0, 4.0),
    ] {
        for (decision, want) in [
            ("allowed", allowed),
            ("shadow_rejected", shadow),
            ("rejected", 0.0),
        ] {
            let labels = [("policy", policy), ("decision", decision)];
            let got = metric(&gw, "gw_ratelimit_decisions_total", &labels).await;
            assert_eq!(got, Some(want), "{policy} {decision}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Accuracy under concurrency.

const ACC_WINDOW_MS: u64 = 1000;
const ACC_MAX: u64 = 200;
const ACC_WINDOWS: u64 = 3;
const ACC_CLIENTS: usize = 64;

const ACC_YAML: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
upstreams: [{ name: svc, endpoints: [{ address: "{{U}}" }] }]
routes:
  - { name: acc, match: { path: /acc }, upstream: svc, policies: [acc-limit] }
policies:
  - name: acc-limit
    type: rate_limit
    window: 1s
    max: 200
    key: { type: client_ip }
    scope: route
    store: {{STORE}}
    on_store_error: deny
"#;

struct Sample {
    sent_ms: u64,
    done_ms: u64,
    status: u16,
}

/// Per fixed window: admissions certainly in it (sent and answered within it), admissions that
/// may belong to it (straddling one of its edges), the midpoint attribution, and the latest
/// send time of a request that was certainly refused in it.
#[derive(Debug, Default, Clone, Copy)]
struct WindowCount {
    sure: u64,
    maybe: u64,
    mid: u64,
    last_refused_sent: Option<u64>,
}

/// `clients` keep-alive clients spread over `urls` send GETs back to back until `until_ms`.
async fn hammer(urls: &[String], clients: usize, until_ms: u64) -> Vec<Sample> {
    let mut tasks = Vec::new();
    for i in 0..clients {
        let url = urls[i % urls.len()].clone();
        tasks.push(tokio::spawn(async move {
            let c = http_client();
            let mut out = Vec::with_capacity(2048);
            while unix_ms() < until_ms {
                let sent_ms = unix_ms();
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    request(&c, Method::GET, &url, &[], ""),
                )
                .await;
                let done_ms = unix_ms();
                let status = match r {
                    Ok(Ok(r)) => r.status.as_u16(),
                    _ => 0,
                };
                out.push(Sample {
                    sent_ms,
                    done_ms,
                    status,
                });
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

fn per_window(samples: &[Sample], w: u64) -> BTreeMap<u64, WindowCount> {
    let mut out: BTreeMap<u64, WindowCount> = BTreeMap::new();
    for s in samples {
        let (a, b) = (s.sent_ms / w, s.done_ms / w);
        if s.status != 200 {
            if s.status == 429 && a == b {
                let c = out.entry(a).or_default();
                c.last_refused_sent = c.last_refused_sent.max(Some(s.sent_ms));
            }
            continue;
        }
        if a == b {
            out.entry(a).or_default().sure += 1;
        } else {
            for i in a..=b {
                out.entry(i).or_default().maybe += 1;
            }
        }
        out.entry((s.sent_ms + s.done_ms) / 2 / w).or_default().mid += 1;
    }
    out
}

/// Where the exact per-window count of the accuracy key is kept.
#[derive(Clone)]
enum Store {
    Local(Arc<Engine>),
    Redis(u16),
    Cluster(Arc<RedisCluster>),
}

/// The admitted count of fixed window `idx`, read from the store shortly after it ended.
async fn stored_count(store: &Store, idx: u64) -> Option<u64> {
    const KEY: &str = "r:acc|ip:127.0.0.1";
    match store {
        Store::Redis(port) => {
            redis_get(*port, &redis_key_name(KEY.as_bytes(), "acc-limit", idx)).await
        }
        Store::Cluster(c) => {
            let c = c.clone();
            let name = redis_key_name(KEY.as_bytes(), "acc-limit", idx);
            tokio::task::spawn_blocking(move || c.get(&name))
                .await
                .ok()
                .flatten()
                .and_then(|n| u64::try_from(n).ok())
        }
        Store::Local(engine) => {
            let rt = engine.runtime();
            let limits = rt.limits.as_ref()?;
            let (i, prev, curr) = limits
                .limiter
                .local_counts(limits.refs[0], KEY.as_bytes())?;
            match i.checked_sub(idx)? {
                0 => Some(curr),
                1 => Some(prev),
                _ => None,
            }
        }
    }
}

/// Runs the hammer over `ACC_WINDOWS` full windows and checks each: every answer is 200 or 429,
/// and the exact count read from the store right after each window agrees with the responses
/// attributed to that window, is at most `ACC_MAX`, and at least what the load allows:
///
/// a request refused at `t` in a window ending at `end` saw `prev·(end−t)/w + curr + 1 > max`,
/// so the window's count is at least `floor(max·(1 − gap/w))` with `gap = end − t` (prev ≤ max).
/// With refusals up to 10 ms before the window's end (the normal case: the gap is about one
/// request latency) that is ≥ 99% of the quota, i.e. within ±1%; on an overloaded machine the
/// clients may stall near a window's end and the bound widens with the reported gap.
async fn accuracy(label: &str, urls: &[String], store: Store) {
    let first = unix_ms() / ACC_WINDOW_MS + 1;
    let last = first + ACC_WINDOWS - 1;
    let until_ms = (last + 1) * ACC_WINDOW_MS + 20;
    // Read each full window's count 150 ms after it ended (a Redis counter lives two windows;
    // a local entry rolls `curr` into `prev` at its first check in the next window).
    let reader = tokio::spawn(async move {
        let mut exact = BTreeMap::new();
        for idx in first..=last {
            let at = (idx + 1) * ACC_WINDOW_MS + 150;
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(unix_ms()))).await;
            exact.insert(idx, stored_count(&store, idx).await);
        }
        exact
    });
    let samples = hammer(urls, ACC_CLIENTS, until_ms).await;
    let exact = reader.await.expect("reader");
    let bad: Vec<u16> = samples
        .iter()
        .map(|s| s.status)
        .filter(|s| *s != 200 && *s != 429)
        .collect();
    assert!(
        bad.is_empty(),
        "only 200 and 429 expected, got {} others: {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    let counts = per_window(&samples, ACC_WINDOW_MS);
    let rejected = samples.iter().filter(|s| s.status == 429).count();
    for idx in first..=last {
        let c = counts.get(&idx).copied().unwrap_or_default();
        let ex = exact.get(&idx).copied().flatten();
        let end = (idx + 1) * ACC_WINDOW_MS;
        let gap = c.last_refused_sent.map(|t| end - t);
        eprintln!(
            "{label}: window {idx}: admitted {ex:?} of {ACC_MAX} (store); responses: {} surely in it, +{} straddling an edge, midpoint {}; last refusal {gap:?} ms before the end; {} requests, {} refused in total",
            c.sure, c.maybe, c.mid, samples.len(), rejected
        );
        let ex = ex.unwrap_or_else(|| panic!("{label}: window {idx}: no stored count"));
        assert!(
            (c.sure..=c.sure + c.maybe).contains(&ex),
            "{label}: window {idx}: stored {ex} vs responses {c:?}"
        );
        assert!(ex <= ACC_MAX, "{label}: window {idx}: {ex} admitted");
        let gap = gap.unwrap_or_else(|| panic!("{label}: window {idx}: nothing refused: {c:?}"));
        assert!(
            gap <= 250,
            "{label}: window {idx}: the clients did not load the limiter ({gap} ms idle)"
        );
        let floor = ACC_MAX * (ACC_WINDOW_MS - gap) / ACC_WINDOW_MS;
        assert!(
            ex >= floor,
            "{label}: window {idx}: {ex} admitted < {floor} allowed by the load (gap {gap} ms)"
        );
    }
    assert!(rejected > 0, "the load must exceed the quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_local_64_clients() {
    let _serial = SERIAL.write().await;
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(
        ACC_YAML,
        &[
            ("U", up.addr().to_string()),
            ("STORE", "{ type: local }".into()),
        ],
    )
    .await;
    accuracy(
        "local",
        &[format!("{}/acc", gw.url())],
        Store::Local(gw.engine.clone()),
    )
    .await;
    let admitted = metric(
        &gw,
        "gw_ratelimit_decisions_total",
        &[("policy", "acc-limit"), ("decision", "allowed")],
    )
    .await
    .expect("metric");
    assert_eq!(
        admitted as u64,
        up.hits(),
        "every admitted request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_redis_64_clients() {
    let _serial = SERIAL.write().await;
    let redis = RedisServer::start();
    let up = Upstream::start("svc").await;
    let store = format!("{{ type: redis, url: \"{}\", timeout: 1s }}", redis.url());
    let gw = gw_suite::gateway(ACC_YAML, &[("U", up.addr().to_string()), ("STORE", store)]).await;
    accuracy(
        "redis",
        &[format!("{}/acc", gw.url())],
        Store::Redis(redis.port),
    )
    .await;
    assert_eq!(
        metric(
            &gw,
            "gw_ratelimit_store_errors_total",
            &[("policy", "acc-limit")]
        )
        .await,
        Some(0.0),
        "no store errors"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_two_gateways_share_one_redis_quota() {
    let _serial = SERIAL.write().await;
    let redis = RedisServer::start();
    let store = format!("{{ type: redis, url: \"{}\", timeout: 1s }}", redis.url());
    two_gateways_share_one_quota("two gateways, one redis", store, Store::Redis(redis.port)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_two_gateways_share_one_redis_cluster_quota() {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("cluster"),
    );
    let _serial = SERIAL.write().await;
    let nodes: Vec<String> = cluster.seeds()[..3]
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect();
    let store = format!(
        "{{ type: redis, cluster: true, nodes: [{}], timeout: 1s }}",
        nodes.join(", ")
    );
    two_gateways_share_one_quota(
        "two gateways, one redis cluster",
        store,
        Store::Cluster(cluster.clone()),
    )
    .await;
}

/// Two gateways on one store (`store_yaml`) enforce one quota: the accuracy run over both, each
/// instance admitted a share (the quota is one, not one per instance), no store errors.
async fn two_gateways_share_one_quota(label: &str, store_yaml: String, store: Store) {
    let up = Upstream::start("svc").await;
    let vars = [("U", up.addr().to_string()), ("STORE", store_yaml)];
    let a = gw_suite::gateway(ACC_YAML, &vars).await;
    let b = gw_suite::gateway(ACC_YAML, &vars).await;
    accuracy(
        label,
        &[format!("{}/acc", a.url()), format!("{}/acc", b.url())],
        store,
    )
    .await;
    for gw in [&a, &b] {
        let n = metric(
            gw,
            "gw_ratelimit_decisions_total",
            &[("policy", "acc-limit"), ("decision", "allowed")],
        )
        .await
        .expect("metric");
        assert!(n > 0.0);
        assert_eq!(
            metric(
                gw,
                "gw_ratelimit_store_errors_total",
                &[("policy", "acc-limit")]
            )
            .await,
            Some(0.0)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Redis faults.

const FAULT_YAML: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
upstreams: [{ name: svc, endpoints: [{ address: "{{U}}" }] }]
routes:
  - { name: r-local, match: { path: /local }, upstream: svc, policies: [fb-local] }
  - { name: r-deny, match: { path: /deny }, upstream: svc, policies: [fb-deny] }
  - { name: r-allow, match: { path: /allow }, upstream: svc, policies: [fb-allow] }
policies:
  - { name: fb-local, type: rate_limit, window: 1h, max: 5, key: { type: client_ip }, scope: route, store: { type: redis, url: "{{REDIS}}", timeout: 200ms }, on_store_error: local }
  - { name: fb-deny, type: rate_limit, window: 1h, max: 5, key: { type: client_ip }, scope: route, store: { type: redis, url: "{{REDIS}}", timeout: 200ms }, on_store_error: deny }
  - { name: fb-allow, type: rate_limit, window: 1h, max: 5, key: { type: client_ip }, scope: route, store: { type: redis, url: "{{REDIS}}", timeout: 200ms }, on_store_error: allow }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted() {
    let _serial = SERIAL.write().await;
    let mut redis = RedisServer::start();
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(
        FAULT_YAML,
        &[("U", up.addr().to_string()), ("REDIS", redis.url())],
    )
    .await;
    avoid_boundary(3_600_000, 15_000).await;
    let c = http_client();
    let url = |p: &str| format!("{}/{p}", gw.url());
    let status_ok = |r: &HttpResponse| {
        assert!(
            r.status == 200 || r.status == 429,
            "no 5xx: {} {}",
            r.status,
            r.text()
        );
    };
    // Redis up: 2 of 5 used on each route, counted in Redis.
    for p in ["local", "deny", "allow"] {
        for i in 0..2u64 {
            let r = send(&c, Method::GET, &url(p)).await;
            assert_eq!(r.status, 200, "{p}");
            assert_eq!(limit_headers(&r, &format!("fb-{p}"), 5, 3600).0, 4 - i);
        }
    }
    let keys = redis.command("KEYS gw:*");
    for p in ["local", "deny", "allow"] {
        assert!(keys.contains(&format!("fb-{p}:")), "{p}: {keys}");
    }

    redis.kill();
    // on_store_error: local — this instance's share (all of it: the only live instance) of what
    // is left of the quota: the fallback starts from the 2 counted in Redis, so 3 more pass
    // (issue 16: an outage must not hand out a fresh quota).
    for i in 0..7u64 {
        let r = send(&c, Method::GET, &url("local")).await;
        status_ok(&r);
        if i < 3 {
            assert_eq!(r.status, 200, "local fallback, request {i}");
            assert_eq!(limit_headers(&r, "fb-local", 5, 3600).0, 2 - i);
        } else {
            assert_rate_limited(&r, "fb-local");
        }
    }
    // deny: every request is a 429 (Retry-After 1 s) while Redis is down.
    for _ in 0..3 {
        let r = send(&c, Method::GET, &url("deny")).await;
        assert_rate_limited(&r, "fb-deny");
        assert_eq!(retry_after(&r), 1);
    }
    // allow: everything passes, beyond the quota, without counts to report.
    for _ in 0..8 {
        let r = send(&c, Method::GET, &url("allow")).await;
        assert_eq!(r.status, 200);
        no_limit_headers(&r);
    }
    for (policy, action) in [
        ("fb-local", "local"),
        ("fb-deny", "deny"),
        ("fb-allow", "allow"),
    ] {
        let n = metric(
            &gw,
            "gw_ratelimit_store_errors_total",
            &[("policy", policy), ("action", action)],
        )
        .await;
        assert!(n.is_some_and(|n| n >= 1.0), "{policy}: {n:?}");
    }

    // Restarted (empty) on the same port: enforcement through Redis resumes (polled on /deny,
    // which admits again, from a fresh counter, once Redis answers). /local gets no fresh quota:
    // the gateway sends its fallback count (5 of 5 in this window) as a lower bound, which
    // restores the counter in Redis.
    redis.spawn();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut polls = 0;
    loop {
        let r = send(&c, Method::GET, &url("deny")).await;
        status_ok(&r);
        polls += 1;
        if r.status == 200 {
            assert_eq!(limit_headers(&r, "fb-deny", 5, 3600).0, 4);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis enforcement did not resume within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed_after = polls;
    for _ in 0..3 {
        assert_rate_limited(&send(&c, Method::GET, &url("local")).await, "fb-local");
    }
    let keys = redis.command("KEYS gw:*");
    assert!(keys.contains("fb-local:"), "counter back in Redis: {keys}");
    let r = send(&c, Method::GET, &url("allow")).await;
    assert_eq!(r.status, 200);
    assert_eq!(limit_headers(&r, "fb-allow", 5, 3600).0, 4);
    let idx = unix_ms() / 3_600_000;
    assert_eq!(
        redis_get(
            redis.port,
            &redis_key_name(b"r:r-local|ip:127.0.0.1", "fb-local", idx)
        )
        .await,
        Some(5),
        "the outage's count restored in Redis"
    );
    eprintln!("Redis enforcement resumed after {resumed_after} polls of 100 ms");
}

//! Observability end to end, against the in-process gateway and real upstreams: exact Prometheus
//! series after a known request sequence (scraped from the admin listener and parsed), readiness
//! during warm-up, the connection gauge (embedded runner and the Pingora server of `gw serve`), the
//! JSON access log, admin-listener isolation and the admin API token.

use gateway_core::proxy::server::{serve_blocking, Embedded};
use gateway_testkit::jwt::hs256_for;
use gateway_testkit::prom::{family_of, labels_of, Family, Scrape};
use gateway_testkit::redis::free_port;
use gateway_testkit::wait::Wait;
use gateway_testkit::{http_client, raw_request, HttpResponse, Method, Mode, Upstream};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "an-example-secret-of-at-least-32-bytes!";
const DEADLINE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Helpers (the Prometheus parser is `gateway_testkit::prom`).

async fn admin_get(
    admin: SocketAddr,
    path: &str,
    auth: Option<&str>,
) -> gateway_testkit::RawResponse {
    let auth = auth.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    raw_request(
        admin,
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n"),
    )
    .await
    .unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
}

async fn admin_post(admin: SocketAddr, path: &str, auth: &str) -> gateway_testkit::RawResponse {
    raw_request(
        admin,
        format!(
            "POST {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("admin POST {path}: {e}"))
}

async fn scrape(admin: SocketAddr) -> Scrape {
    let r = admin_get(admin, "/metrics", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4"),
        "exposition format content type"
    );
    Scrape::parse(&r.text())
}

/// Scrapes until `ok` holds (the last request of a client is logged just after its response is
/// sent), panicking with the last scrape after [`DEADLINE`].
async fn scrape_until(admin: SocketAddr, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    Wait::new(what, DEADLINE)
        .every(Duration::from_millis(20))
        .poll(|| async {
            let s = scrape(admin).await;
            if ok(&s) {
                Ok(s)
            } else {
                Err(s.families)
            }
        })
        .await
}

async fn send(
    client: &gateway_testkit::HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    gateway_testkit::send(client, method, url, headers, "").await
}

/// One keep-alive HTTP/1.1 exchange on an open connection (Content-Length framed responses only).
async fn keepalive_get(stream: &mut TcpStream, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let fut = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().expect("content-length"))
                    .expect("content-length framed response");
                if buf.len() >= end + 4 + len {
                    let status = head
                        .split(' ')
                        .nth(1)
                        .expect("status")
                        .parse()
                        .expect("code");
                    return status;
                }
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before a full response");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("keep-alive response in time")
}

// ---------------------------------------------------------------------------------------------
// Metrics.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_outcome_exactly() {
    let good = Upstream::start("good").await;
    let mut dead = Upstream::start("dead").await;
    dead.stop().await; // connection refused from now on
    let slow = Upstream::start("slow").await;
    slow.set_mode(Mode::Hang);
    let failing = Upstream::start("failing").await;
    failing.set_mode(Mode::Fail(500));
    let checked = Upstream::start("checked").await;
    let (a, d, s, f, h) = (
        good.addr().to_string(),
        dead.addr().to_string(),
        slow.addr().to_string(),
        failing.addr().to_string(),
        checked.addr().to_string(),
    );
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
upstreams:
  - { name: good, endpoints: [{ address: "{{A}}" }] }
  - { name: dead, endpoints: [{ address: "{{D}}" }], timeouts: { connect: 1s } }
  - { name: slow, endpoints: [{ address: "{{S}}" }], timeouts: { read: 300ms } }
  - { name: failing, endpoints: [{ address: "{{F}}" }] }
  - name: checked
    endpoints: [{ address: "{{H}}" }]
    health_check: { path: /health, interval: 100ms, timeout: 500ms }
routes:
  - { name: a, match: { prefix: /a, methods: [GET] }, upstream: good }
  - { name: dead, match: { prefix: /dead }, upstream: dead }
  - { name: slow, match: { prefix: /slow }, upstream: slow }
  - { name: fail, match: { prefix: /fail }, upstream: failing }
  - { name: checked, match: { prefix: /checked }, upstream: checked }
  - { name: limited, match: { prefix: /limited }, upstream: good, policies: [lim] }
  - { name: secure, match: { prefix: /secure }, upstream: good, policies: [jwt] }
policies:
  - { name: lim, type: rate_limit, window: 60s, max: 3, key: { type: client_ip } }
  - name: jwt
    type: jwt
    keys: { type: hmac, secret: "{{SECRET}}", algorithms: [HS256] }
"#,
        &[
            ("A", a.clone()),
            ("D", d.clone()),
            ("S", s.clone()),
            ("F", f.clone()),
            ("H", h.clone()),
            ("SECRET", SECRET.to_string()),
        ],
    )
    .await;
    let admin = gw.admin_addr.expect("admin listener");
    let base = gw.url();

    // Before any request: handles exist, nothing counted, no route series yet (they appear with
    // a route's first request).
    let s0 = scrape(admin).await;
    assert_eq!(s0.family("gw_requests_total"), Family::new());
    assert_eq!(s0.get("gw_requests_in_flight", &[]), Some(0.0));
    assert_eq!(
        s0.family("gw_request_duration_seconds_count"),
        Family::new()
    );
    assert!(!s0.types.contains_key("gw_request_duration_seconds"));
    assert_eq!(s0.types["gw_endpoint_healthy"], "gauge");
    assert_eq!(s0.types["gw_requests_in_flight"], "gauge");

    let client = http_client();
    let mut statuses: Vec<(String, u16)> = Vec::new();
    let mut hit = |m: Method, path: &str, r: &HttpResponse| {
        statuses.push((format!("{m} {path}"), r.status.as_u16()));
    };
    for i in 0..3 {
        let p = format!("/a/{i}");
        let r = send(&client, Method::GET, &format!("{base}{p}"), &[]).await;
        hit(Method::GET, &p, &r);
    }
    for p in ["/nope", "/zzz"] {
        let r = send(&client, Method::GET, &format!("{base}{p}"), &[]).await;
        hit(Method::GET, p, &r);
    }
    let r = send(&client, Method::POST, &format!("{base}/a/x"), &[]).await;
    hit(Method::POST, "/a/x", &r);
    for p in ["/dead", "/slow", "/fail"] {
        let r = send(&client, Method::GET, &format!("{base}{p}"), &[]).await;
        if p != "/fail" {
            // the gateway closes the connection after its own 502/504: it must say so, or the
            // pooled client sends the next request into a closing socket
            assert_eq!(r.header("connection"), Some("close"), "{p}");
        }
        hit(Method::GET, p, &r);
    }
    for _ in 0..5 {
        let r = send(&client, Method::GET, &format!("{base}/limited"), &[]).await;
        hit(Method::GET, "/limited", &r);
    }
    let expired = format!("Bearer {}", hs256_for(SECRET.as_bytes(), "alice", -3600));
    let forged = format!(
        "Bearer {}",
        hs256_for(b"another-secret-of-at-least-32-bytes!!", "alice", 600)
    );
    let valid = format!("Bearer {}", hs256_for(SECRET.as_bytes(), "alice", 600));
    for auth in [
        None,
        Some("Bearer abc"),
        Some(&*expired),
        Some(&*forged),
        Some(&*valid),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let r = send(&client, Method::GET, &format!("{base}/secure"), &headers).await;
        hit(Method::GET, "/secure", &r);
    }
    let got: Vec<u16> = statuses.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        got,
        [
            200, 200, 200, 404, 404, 405, 502, 504, 500, 200, 200, 200, 429, 429, 401, 401, 401,
            401, 200
        ],
        "{statuses:?}"
    );
    drop(client); // closes the keep-alive connection

    let total = statuses.len() as f64;
    let m = scrape_until(
        admin,
        "every request counted, none in flight, no open connection",
        |m| {
            m.sum("gw_requests_total") == total
                && m.get("gw_requests_in_flight", &[]) == Some(0.0)
                && m.get("gw_active_connections", &[]) == Some(0.0)
        },
    )
    .await;

    let req = |route, up, method, status| -> [(&'static str, &'static str); 4] {
        [
            ("route", route),
            ("upstream", up),
            ("method", method),
            ("status", status),
        ]
    };
    assert_eq!(
        m.family("gw_requests_total"),
        family_of(&[
            (&req("a", "good", "GET", "200"), 3.0),
            (&req("", "", "GET", "404"), 2.0),
            (&req("", "", "POST", "405"), 1.0),
            (&req("dead", "dead", "GET", "502"), 1.0),
            (&req("slow", "slow", "GET", "504"), 1.0),
            (&req("fail", "failing", "GET", "500"), 1.0),
            (&req("limited", "good", "GET", "200"), 3.0),
            (&req("limited", "good", "GET", "429"), 2.0),
            (&req("secure", "good", "GET", "401"), 4.0),
            (&req("secure", "good", "GET", "200"), 1.0),
        ])
    );
    let ru = |route, up| [("route", route), ("upstream", up)];
    assert_eq!(
        m.family("gw_request_duration_seconds_count"),
        family_of(&[
            (&ru("a", "good"), 3.0),
            (&ru("", ""), 3.0),
            (&ru("dead", "dead"), 1.0),
            (&ru("slow", "slow"), 1.0),
            (&ru("fail", "failing"), 1.0),
            // no series for `checked`: it saw no request
            (&ru("limited", "good"), 5.0),
            (&ru("secure", "good"), 5.0),
        ])
    );
    assert_eq!(m.types["gw_request_duration_seconds"], "histogram");
    // The 504 waited for the 300 ms read timeout: its bucket says so.
    let slow_le_0_25 = m
        .get(
            "gw_request_duration_seconds_bucket",
            &[("route", "slow"), ("upstream", "slow"), ("le", "0.25")],
        )
        .expect("bucket");
    assert_eq!(slow_le_0_25, 0.0);

    let ue = |up, ep| [("upstream", up), ("endpoint", ep)];
    let (a, d, s, f, h) = (&*a, &*d, &*s, &*f, &*h);
    // One observation per upstream attempt; requests answered by the gateway itself never reach one.
    assert_eq!(
        m.family("gw_upstream_duration_seconds_count"),
        family_of(&[
            (&ue("good", a), 7.0),
            (&ue("dead", d), 2.0), // first attempt + the default single retry of a connect failure
            (&ue("slow", s), 1.0),
            (&ue("failing", f), 1.0),
            (&ue("checked", h), 0.0),
        ])
    );
    let mut want_errors = Family::new();
    for (up, ep) in [
        ("good", a),
        ("dead", d),
        ("slow", s),
        ("failing", f),
        ("checked", h),
    ] {
        for kind in ["connect", "timeout", "5xx"] {
            let v = match (up, kind) {
                ("dead", "connect") => 2.0,
                ("slow", "timeout") | ("failing", "5xx") => 1.0,
                _ => 0.0,
            };
            want_errors.insert(
                labels_of(&[("upstream", up), ("endpoint", ep), ("kind", kind)]),
                v,
            );
        }
    }
    assert_eq!(m.family("gw_upstream_errors_total"), want_errors);
    assert_eq!(
        m.family("gw_ratelimit_decisions_total"),
        family_of(&[
            (&[("policy", "lim"), ("decision", "allowed")], 3.0),
            (&[("policy", "lim"), ("decision", "rejected")], 2.0),
            (&[("policy", "lim"), ("decision", "shadow_rejected")], 0.0),
        ])
    );
    assert_eq!(
        m.family("gw_auth_failures_total"),
        family_of(&[
            (&[("route", "secure"), ("reason", "missing")], 1.0),
            (&[("route", "secure"), ("reason", "malformed")], 1.0),
            (&[("route", "secure"), ("reason", "expired")], 1.0),
            (&[("route", "secure"), ("reason", "bad_signature")], 1.0),
        ])
    );
    assert_eq!(m.family("gw_ratelimit_store_errors_total"), Family::new());
    assert_eq!(m.get("gw_access_log_dropped_total", &[]), Some(0.0));
    let all_healthy = family_of(&[
        (&ue("good", a), 1.0),
        (&ue("dead", d), 1.0),
        (&ue("slow", s), 1.0),
        (&ue("failing", f), 1.0),
        (&ue("checked", h), 1.0),
    ]);
    assert_eq!(m.family("gw_endpoint_healthy"), all_healthy);

    // Health flips show in gw_endpoint_healthy (checks every 100 ms).
    checked.set_health(false);
    let m = scrape_until(admin, "checked endpoint unhealthy", |m| {
        m.get(
            "gw_endpoint_healthy",
            &[("upstream", "checked"), ("endpoint", h)],
        ) == Some(0.0)
    })
    .await;
    let mut one_down = all_healthy.clone();
    one_down.insert(labels_of(&ue("checked", h)), 0.0);
    assert_eq!(m.family("gw_endpoint_healthy"), one_down);
    let r = send(&http_client(), Method::GET, &format!("{base}/checked"), &[]).await;
    assert_eq!(r.status, 503, "no healthy endpoint: {}", r.text());
    checked.set_health(true);
    let m = scrape_until(admin, "checked endpoint healthy again", |m| {
        m.get(
            "gw_endpoint_healthy",
            &[("upstream", "checked"), ("endpoint", h)],
        ) == Some(1.0)
    })
    .await;
    assert_eq!(m.family("gw_endpoint_healthy"), all_healthy);
}

/// A route's `gw_request_duration_seconds` and `gw_requests_total` series do not exist before its
/// first request (a configuration of 100,000 routes would otherwise hold ~1.8 million idle
/// series) and appear, exactly counted, with it; a route that sees no request stays absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_series_appear_with_the_routes_first_request() {
    let up = Upstream::start("a").await;
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
upstreams: [{ name: svc, endpoints: [{ address: "{{A}}" }] }]
routes:
  - { name: first, match: { prefix: /first }, upstream: svc }
  - { name: idle, match: { prefix: /idle }, upstream: svc }
"#,
        &[("A", up.addr().to_string())],
    )
    .await;
    let admin = gw.admin_addr.expect("admin");
    let before = scrape(admin).await;
    assert_eq!(
        before.family("gw_request_duration_seconds_count"),
        Family::new()
    );
    assert_eq!(
        before.family("gw_request_duration_seconds_bucket"),
        Family::new()
    );
    assert_eq!(before.family("gw_requests_total"), Family::new());

    let client = http_client();
    let r = send(&client, Method::GET, &format!("{}/first/x", gw.url()), &[]).await;
    assert_eq!(r.status.as_u16(), 200);
    drop(client);
    let after = scrape_until(admin, "the first request counted", |m| {
        m.sum("gw_requests_total") == 1.0
    })
    .await;
    let ru = [("route", "first"), ("upstream", "svc")];
    assert_eq!(
        after.family("gw_request_duration_seconds_count"),
        family_of(&[(&ru, 1.0)])
    );
    assert_eq!(
        after.get(
            "gw_request_duration_seconds_bucket",
            &[("route", "first"), ("upstream", "svc"), ("le", "+Inf")]
        ),
        Some(1.0)
    );
    assert_eq!(
        after.family("gw_requests_total"),
        family_of(&[(
            &[
                ("route", "first"),
                ("upstream", "svc"),
                ("method", "GET"),
                ("status", "200")
            ],
            1.0
        )])
    );
    assert_eq!(
        after.first("gw_request_duration_seconds_count", &[("route", "idle")]),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_connections_gauge_counts_open_keepalive_connections() {
    let up = Upstream::start("a").await;
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
upstreams: [{ name: svc, endpoints: [{ address: "{{A}}" }] }]
routes: [{ name: r, match: { prefix: / }, upstream: svc }]
"#,
        &[("A", up.addr().to_string())],
    )
    .await;
    let admin = gw.admin_addr.expect("admin");
    let conns = |n: f64| move |m: &Scrape| m.get("gw_active_connections", &[]) == Some(n);
    scrape_until(admin, "no connection", conns(0.0)).await;

    let mut c1 = TcpStream::connect(gw.addrs[0]).await.expect("connect");
    let mut c2 = TcpStream::connect(gw.addrs[0]).await.expect("connect");
    assert_eq!(keepalive_get(&mut c1, "/one").await, 200);
    assert_eq!(keepalive_get(&mut c2, "/two").await, 200);
    // Admin scrapes are not downstream connections of the proxy.
    let m = scrape(admin).await;
    assert_eq!(m.get("gw_active_connections", &[]), Some(2.0));
    // More requests on the same connections: still two.
    assert_eq!(keepalive_get(&mut c1, "/three").await, 200);
    assert_eq!(keepalive_get(&mut c2, "/four").await, 200);
    let m = scrape(admin).await;
    assert_eq!(m.get("gw_active_connections", &[]), Some(2.0));
    assert_eq!(up.hits(), 4);

    drop(c1);
    scrape_until(admin, "one connection left", conns(1.0)).await;
    drop(c2);
    let m = scrape_until(admin, "no connection left", conns(0.0)).await;
    assert_eq!(m.get("gw_requests_in_flight", &[]), Some(0.0));
}

/// `gw serve` runs the proxy on Pingora's own listeners: the same gauge must work there. This is
/// the one test with chosen ports (Pingora binds the configured addresses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingora_server_counts_connections_and_serves_admin() {
    let up = Upstream::start("a").await;
    let (port, admin_port) = (free_port(), free_port());
    let plan = gw_suite::plan(
        r#"
server: { threads: 1 }
listeners: [{ name: public, address: "127.0.0.1:{{P}}" }]
admin: { address: "127.0.0.1:{{AP}}" }
upstreams: [{ name: svc, endpoints: [{ address: "{{A}}" }] }]
routes: [{ name: r, match: { prefix: / }, upstream: svc }]
"#,
        &[
            ("A", up.addr().to_string()),
            ("P", port.to_string()),
            ("AP", admin_port.to_string()),
        ],
    );
    // Runs until the test process exits (there is no in-process stop for the Pingora server).
    std::thread::spawn(move || serve_blocking(plan));
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let public: SocketAddr = ([127, 0, 0, 1], port).into();
    Wait::new("gw serve ready", Duration::from_secs(10))
        .every(Duration::from_millis(50))
        .until_async(|| async {
            raw_request(
                admin,
                "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await
            .is_ok_and(|r| r.status == 200)
        })
        .await;
    let mut c1 = TcpStream::connect(public).await.expect("connect");
    let mut c2 = TcpStream::connect(public).await.expect("connect");
    assert_eq!(keepalive_get(&mut c1, "/x").await, 200);
    assert_eq!(keepalive_get(&mut c2, "/y").await, 200);
    assert_eq!(keepalive_get(&mut c1, "/z").await, 200);
    let m = scrape(admin).await;
    assert_eq!(m.get("gw_active_connections", &[]), Some(2.0));
    drop(c1);
    drop(c2);
    let m = scrape_until(admin, "connections closed", |m| {
        m.get("gw_active_connections", &[]) == Some(0.0)
            && m.get("gw_requests_in_flight", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(
        m.get(
            "gw_requests_total",
            &[
                ("route", "r"),
                ("upstream", "svc"),
                ("method", "GET"),
                ("status", "200")
            ]
        ),
        Some(3.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Health and readiness.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_during_warm_up_and_200_after_first_health_checks() {
    let hung = Upstream::start("hung").await;
    hung.set_mode(Mode::Hang); // /health never answers: the first check needs its full 1 s timeout
    let h = hung.addr().to_string();
    let plan = gw_suite::plan(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
upstreams:
  - name: hung
    endpoints: [{ address: "{{H}}" }]
    health_check: { path: /health, interval: 60s, timeout: 1s }
routes: [{ name: r, match: { prefix: / }, upstream: hung }]
"#,
        &[("H", h.clone())],
    );
    let started = Instant::now();
    let mut gw = Embedded::bind(plan).await.expect("bind");
    let admin = gw.admin_addr.expect("admin");
    assert!(!gw.engine.is_ready());
    let engine = gw.engine.clone();
    let warm = tokio::spawn(async move {
        gw.warm_up().await;
        gw
    });

    // The admin listener answers during warm-up: alive, but not ready.
    let r = admin_get(admin, "/healthz", None).await;
    assert_eq!(r.status, 200);
    let mut not_ready = 0;
    let end = Instant::now() + DEADLINE;
    let ready_after = loop {
        let r = admin_get(admin, "/readyz", None).await;
        match r.status {
            200 => break started.elapsed(),
            503 => {
                not_ready += 1;
                assert!(!engine.is_ready());
            }
            other => panic!("readyz answered {other}"),
        }
        assert!(Instant::now() < end, "never became ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(not_ready >= 1, "readyz must answer 503 while warming up");
    assert!(
        ready_after >= Duration::from_millis(900),
        "ready after {ready_after:?}, before the first health check (1 s timeout) finished"
    );
    // Ready means the first health check result is in.
    let m = scrape(admin).await;
    assert_eq!(
        m.get(
            "gw_endpoint_healthy",
            &[("upstream", "hung"), ("endpoint", &h)]
        ),
        Some(0.0)
    );
    let gw = tokio::time::timeout(DEADLINE, warm)
        .await
        .expect("warm-up finished")
        .expect("warm-up task");
    assert!(gw.engine.is_ready());
    let r = admin_get(admin, "/readyz", None).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));
    let r = admin_get(admin, "/healthz", None).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
}

// ---------------------------------------------------------------------------------------------
// Access log.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_are_json_with_every_field_and_the_request_id() {
    let up = Upstream::start("a").await;
    let path = std::env::temp_dir().join(format!(
        "gw-observability-e2e-{}-{}.log",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    ));
    let _ = std::fs::remove_file(&path);
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
observability: { access_log: { type: file, path: "{{LOG}}" } }
upstreams: [{ name: svc, endpoints: [{ address: "{{A}}" }] }]
routes:
  - { name: open, match: { prefix: /open }, upstream: svc, policies: [lim] }
  - { name: secure, match: { prefix: /secure }, upstream: svc, policies: [jwt] }
policies:
  - { name: lim, type: rate_limit, window: 60s, max: 100, key: { type: client_ip } }
  - name: jwt
    type: jwt
    keys: { type: hmac, secret: "{{SECRET}}", algorithms: [HS256] }
"#,
        &[
            ("A", up.addr().to_string()),
            ("LOG", path.to_string_lossy().into_owned()),
            ("SECRET", SECRET.to_string()),
        ],
    )
    .await;
    let base = gw.url();
    let client = http_client();
    let bearer = format!("Bearer {}", hs256_for(SECRET.as_bytes(), "alice", 600));
    struct Sent {
        method: &'static str,
        path: &'static str,
        resp: HttpResponse,
        body_len: usize,
    }
    let mut sent = Vec::new();
    // (method, path, headers, body)
    type Case<'a> = (
        &'static str,
        &'static str,
        Vec<(&'a str, &'a str)>,
        &'static str,
    );
    let cases: [Case<'_>; 4] = [
        (
            "GET",
            "/open/x",
            vec![("x-request-id", "client-chosen-id-42")],
            "",
        ),
        (
            "POST",
            "/open/echo",
            vec![("content-type", "text/plain")],
            "hello world",
        ),
        ("GET", "/nowhere", vec![], ""),
        (
            "GET",
            "/secure/me",
            vec![("authorization", bearer.as_str())],
            "",
        ),
    ];
    for (method, p, headers, body) in cases {
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        let resp = gateway_testkit::send(&client, m, &format!("{base}{p}"), &headers, body).await;
        sent.push(Sent {
            method,
            path: p,
            body_len: body.len(),
            resp,
        });
    }
    let statuses: Vec<u16> = sent.iter().map(|s| s.resp.status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 404, 200]);
    assert_eq!(
        sent[0].resp.header("x-request-id"),
        Some("client-chosen-id-42")
    );

    // Lines are written after the response: flush until all four are there.
    let lines: Vec<serde_json::Value> = Wait::new("every access log line", DEADLINE)
        .every(Duration::from_millis(20))
        .poll(|| {
            gw.engine.access_log.flush().expect("flush");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "partial line: {text:?}"
            );
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect();
            std::future::ready(if lines.len() >= sent.len() {
                Ok(lines)
            } else {
                Err(format!("only {} lines: {text}", lines.len()))
            })
        })
        .await;
    assert_eq!(lines.len(), sent.len(), "{lines:#?}");
    const FIELDS: [&str; 16] = [
        "ts",
        "request_id",
        "trace_id",
        "client_ip",
        "method",
        "path",
        "route",
        "upstream",
        "endpoint",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream_duration_ms",
        "limit",
        "user",
    ];
    let by_id: HashMap<String, &serde_json::Value> = lines
        .iter()
        .map(|l| (l["request_id"].as_str().expect("request_id").to_string(), l))
        .collect();
    assert_eq!(by_id.len(), sent.len(), "request ids are unique");
    let endpoint = up.addr().to_string();
    for s in &sent {
        let rid = s
            .resp
            .header("x-request-id")
            .expect("x-request-id on every response");
        let l = by_id
            .get(rid)
            .unwrap_or_else(|| panic!("no line for request id {rid}: {lines:#?}"));
        let keys: Vec<&str> = l
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut want: Vec<&str> = FIELDS.to_vec();
        want.sort();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort();
        assert_eq!(keys_sorted, want, "{l}");
        let ts = l["ts"].as_str().expect("ts");
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(
            ts.ends_with('Z') && &ts[10..11] == "T" && &ts[19..20] == ".",
            "{ts}"
        );
        assert!(ts.starts_with("20"), "{ts}");
        let trace = l["trace_id"].as_str().expect("trace_id");
        assert!(
            trace.len() == 32
                && trace
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{trace}"
        );
        assert_eq!(l["client_ip"], "127.0.0.1");
        assert_eq!(l["method"], s.method);
        assert_eq!(l["path"], s.path);
        assert_eq!(l["status"], s.resp.status.as_u16());
        assert_eq!(l["bytes_in"], s.body_len as u64, "{l}");
        assert_eq!(l["bytes_out"], s.resp.body.len() as u64, "{l}");
        let d = l["duration_ms"].as_f64().expect("duration_ms is a number");
        assert!((0.0..10_000.0).contains(&d), "{l}");
        let routed = s.path != "/nowhere";
        if routed {
            assert_eq!(l["upstream"], "svc");
            assert_eq!(l["endpoint"], endpoint.as_str());
            let ud = l["upstream_duration_ms"]
                .as_f64()
                .expect("upstream_duration_ms");
            assert!(ud >= 0.0 && ud <= d, "{l}");
        } else {
            for k in [
                "route",
                "upstream",
                "endpoint",
                "upstream_duration_ms",
                "limit",
                "user",
            ] {
                assert!(
                    l[k].is_null(),
                    "{k} must be null for an unrouted request: {l}"
                );
            }
        }
        match s.path {
            "/secure/me" => {
                assert_eq!(l["route"], "secure");
                assert_eq!(l["user"], "alice");
                assert!(l["limit"].is_null(), "{l}");
            }
            "/nowhere" => {}
            _ => {
                assert_eq!(l["route"], "open");
                assert_eq!(l["limit"], "allowed");
                assert!(l["user"].is_null(), "{l}");
            }
        }
    }
    assert!(by_id.contains_key("client-chosen-id-42"));
    assert_eq!(gw.engine.access_log.dropped(), 0);
    drop(gw);
    let _ = std::fs::remove_file(&path);
}

// ---------------------------------------------------------------------------------------------
// Admin listener.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_are_not_reachable_on_the_public_listener() {
    let up = Upstream::start("a").await;
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0", token: "t0ken-for-the-admin-api" }
upstreams: [{ name: svc, endpoints: [{ address: "{{A}}" }] }]
routes: [{ name: api, match: { prefix: /api }, upstream: svc }]
"#,
        &[("A", up.addr().to_string())],
    )
    .await;
    for p in ["/metrics", "/healthz", "/readyz", "/admin/breakers"] {
        let r = raw_request(
            gw.addrs[0],
            format!(
                "GET {p} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer t0ken-for-the-admin-api\r\nConnection: close\r\n\r\n"
            ),
        )
        .await
        .expect("public request");
        assert_eq!(r.status, 404, "{p}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["error"], "no_route", "{p}: {v}");
        assert!(!r.text().contains("gw_"), "{p} leaked metrics");
    }
    assert_eq!(up.hits(), 0);
    // ... and they are served on the admin listener.
    let admin = gw.admin_addr.expect("admin");
    let unrouted = [
        ("route", ""),
        ("upstream", ""),
        ("method", "GET"),
        ("status", "404"),
    ];
    // the last request is logged just after its response was sent
    let m = scrape_until(admin, "the four 404s counted", |m| {
        m.get("gw_requests_total", &unrouted) == Some(4.0)
    })
    .await;
    assert_eq!(m.get("gw_requests_total", &unrouted), Some(4.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_configured_token() {
    let up = Upstream::start("a").await;
    let yaml = |admin: &str| {
        format!(
            r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
admin: {admin}
upstreams:
  - name: svc
    endpoints: [{{ address: "{{{{A}}}}" }}]
    circuit_breaker: {{ failure_threshold: 5, success_threshold: 1, open_duration: 30s }}
routes: [{{ name: api, match: {{ prefix: /api }}, upstream: svc }}]
"#
        )
    };
    let vars = [("A", up.addr().to_string())];
    let with_token = gw_suite::gateway(
        &yaml(r#"{ address: "127.0.0.1:0", token: "s3cret-admin-token" }"#),
        &vars,
    )
    .await;
    let admin = with_token.admin_addr.expect("admin");
    const TOKEN: &str = "Bearer s3cret-admin-token";
    let good = Some(TOKEN);
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some("Bearer s3cret-admin-toke"),
        Some("s3cret-admin-token"),
    ] {
        let r = admin_get(admin, "/admin/breakers", auth).await;
        assert_eq!(r.status, 401, "{auth:?}: {}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["error"], "unauthorized");
        let r = admin_post(admin, "/admin/breakers/svc/open", auth.unwrap_or("")).await;
        assert_eq!(r.status, 401, "{auth:?}");
    }
    let r = admin_get(admin, "/admin/breakers", good).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v[0]["upstream"], "svc");
    assert_eq!(v[0]["state"], "closed");
    // The read-only endpoints need no token.
    for p in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(admin_get(admin, p, None).await.status, 200, "{p}");
    }
    // Forcing the breaker open through the API shows in the breaker gauge and in the proxy.
    let r = admin_post(admin, "/admin/breakers/svc/open", TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = scrape(admin).await;
    assert_eq!(m.get("gw_breaker_state", &[("upstream", "svc")]), Some(2.0));
    let r = send(
        &http_client(),
        Method::GET,
        &format!("{}/api/x", with_token.url()),
        &[],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(up.hits(), 0);
    let r = admin_post(admin, "/admin/breakers/svc/auto", TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Without a token the admin API is off, whatever the client sends.
    let without = gw_suite::gateway(&yaml(r#"{ address: "127.0.0.1:0" }"#), &vars).await;
    let admin = without.admin_addr.expect("admin");
    for auth in [None, good] {
        let r = admin_get(admin, "/admin/breakers", auth).await;
        assert_eq!(r.status, 404, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["error"], "admin_api_disabled");
    }
    assert_eq!(admin_get(admin, "/metrics", None).await.status, 200);
    let r = admin_get(admin, "/nothing-here", None).await;
    assert_eq!(r.status, 404);

    // observability.metrics: false turns /metrics off.
    let off = gw_suite::gateway(
        &format!(
            "observability: {{ metrics: false }}\n{}",
            yaml(r#"{ address: "127.0.0.1:0" }"#)
        ),
        &vars,
    )
    .await;
    let r = admin_get(off.admin_addr.expect("admin"), "/metrics", None).await;
    assert_eq!(r.status, 404);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["error"], "metrics_disabled");
}

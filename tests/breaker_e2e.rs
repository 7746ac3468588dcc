//! End-to-end circuit breaker and outlier ejection: the in-process gateway in front of real upstreams
//! that are told to fail, hang, be slow or recover.
//!
//! The breaker records a request's outcome in the `logging` phase, i.e. just after the response
//! went out. A client that fires the next request on a fresh connection could in theory overtake
//! that bookkeeping, so the tests wait (bounded) for the breaker to have seen each outcome before
//! sending the next request; every wait has a deadline and fails the test when it passes.

use gateway_core::policy::breaker::{BreakerSnapshot, CircuitBreaker, OutlierDetector, State};
use gateway_core::proxy::server::Embedded;
use gateway_testkit::prom::Scrape;
use gateway_testkit::wait::{until, until_async};
use gateway_testkit::{http_client, Bytes, HttpResponse, Method, Mode, Upstream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cret-admin-token-0123456789";

/// `GET url`, bounded in time.
async fn send(url: &str) -> HttpResponse {
    call(Method::GET, url, &[]).await
}

async fn call(method: Method, url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    gateway_testkit::send(&http_client(), method, url, headers, Bytes::new()).await
}

fn breaker(gw: &Embedded, upstream: usize) -> CircuitBreaker {
    gw.engine.runtime().upstreams[upstream]
        .breaker
        .clone()
        .expect("the upstream has a circuit breaker")
}

fn snap(b: &CircuitBreaker) -> BreakerSnapshot {
    b.snapshot(Instant::now())
}

fn state(b: &CircuitBreaker) -> State {
    b.state(Instant::now())
}

/// Asserts the breaker's 503: JSON error shape, `circuit_open`, and the given `Retry-After`.
fn assert_circuit_open(r: &HttpResponse, upstream: &str, retry_after: &str) {
    assert_eq!(r.status, 503, "body: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("retry-after"), Some(retry_after));
    assert!(r.header("x-upstream").is_none(), "must not reach upstream");
    let v = r.json().expect("JSON error body");
    assert_eq!(v["error"], "circuit_open", "{v}");
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains(upstream)),
        "{v}"
    );
    assert_eq!(
        v["request_id"].as_str(),
        r.header("x-request-id"),
        "request_id in the body matches X-Request-Id"
    );
}

/// Sends one request that the upstream fails with a counted failure and waits until the breaker
/// has recorded it (`n` = failures so far in this streak).
async fn fail_once(url: &str, b: &CircuitBreaker, n: u32, threshold: u32, expect_status: u16) {
    let r = send(url).await;
    assert_eq!(r.status, expect_status, "failure {n}: {}", r.text());
    if n < threshold {
        until(
            &format!("failure {n} recorded"),
            Duration::from_secs(3),
            || snap(b).consecutive_failures == n,
        )
        .await;
        assert_eq!(state(b), State::Closed, "still closed after {n} failures");
    } else {
        until(
            &format!("open after failure {n}"),
            Duration::from_secs(3),
            || snap(b).state == State::Open,
        )
        .await;
    }
}

fn one_upstream(extra: &str, route_extra: &str) -> String {
    format!(
        r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
upstreams:
  - name: svc
    endpoints: [{{ address: "{{{{A}}}}" }}]
{extra}
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: svc
{route_extra}
"#
    )
}

const BREAKER: &str =
    "    circuit_breaker: { failure_threshold: 3, success_threshold: 2, open_duration: 1s }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_after_exactly_three_failures_probes_closes_and_reopens() {
    let up = Upstream::start("svc").await;
    up.set_mode(Mode::Fail(500));
    let gw = gw_suite::gateway(&one_upstream(BREAKER, ""), &[("A", up.addr().to_string())]).await;
    let b = breaker(&gw, 0);
    let url = format!("{}/x", gw.url());

    for n in 1..=3 {
        fail_once(&url, &b, n, 3, 500).await;
        assert_eq!(up.hits(), u64::from(n), "failure {n} reached the upstream");
    }
    // 4th and later: rejected by the gateway, the upstream never sees them
    for _ in 0..5 {
        let r = send(&url).await;
        assert_circuit_open(&r, "svc", "1");
    }
    assert_eq!(
        up.hits(),
        3,
        "rejected requests must not reach the upstream"
    );

    // after open_duration one probe goes through; 2 successes close it
    up.set_mode(Mode::Ok);
    until("open time over", Duration::from_secs(3), || {
        state(&b) == State::HalfOpen
    })
    .await;
    let r = send(&url).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("svc"));
    assert_eq!(up.hits(), 4);
    until("first probe recorded", Duration::from_secs(3), || {
        let s = snap(&b);
        s.consecutive_successes == 1 && s.half_open_in_flight == 0
    })
    .await;
    assert_eq!(state(&b), State::HalfOpen, "one success is not enough");
    let r = send(&url).await;
    assert_eq!(r.status, 200);
    until(
        "closed after 2 probe successes",
        Duration::from_secs(3),
        || state(&b) == State::Closed,
    )
    .await;
    for _ in 0..5 {
        assert_eq!(send(&url).await.status, 200);
    }
    assert_eq!(up.hits(), 10);

    // a failing probe re-opens it for a fresh open_duration
    up.set_mode(Mode::Fail(500));
    for n in 1..=3 {
        fail_once(&url, &b, n, 3, 500).await;
    }
    assert_eq!(up.hits(), 13);
    until("open time over again", Duration::from_secs(3), || {
        state(&b) == State::HalfOpen
    })
    .await;
    let r = send(&url).await;
    assert_eq!(
        r.status, 500,
        "the probe reaches the (still failing) upstream"
    );
    assert_eq!(up.hits(), 14);
    until(
        "re-opened by the failed probe",
        Duration::from_secs(3),
        || {
            let s = snap(&b);
            s.state == State::Open && s.open_remaining.is_some_and(|d| d > Duration::ZERO)
        },
    )
    .await;
    let r = send(&url).await;
    assert_circuit_open(&r, "svc", "1");
    assert_eq!(up.hits(), 14);
    assert_eq!(snap(&b).times_opened, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_count_as_failures() {
    let up = Upstream::start("svc").await;
    up.set_mode(Mode::Hang);
    let extra = format!("{BREAKER}\n    timeouts: {{ read: 200ms }}");
    let gw = gw_suite::gateway(&one_upstream(&extra, ""), &[("A", up.addr().to_string())]).await;
    let b = breaker(&gw, 0);
    let url = format!("{}/slow", gw.url());
    for n in 1..=3 {
        let t = Instant::now();
        fail_once(&url, &b, n, 3, 504).await;
        assert!(t.elapsed() >= Duration::from_millis(190), "read timeout");
    }
    assert_eq!(up.hits(), 3);
    let t = Instant::now();
    let r = send(&url).await;
    assert_circuit_open(&r, "svc", "1");
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "rejected at once, took {:?}",
        t.elapsed()
    );
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_never_trip_the_breaker() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(&one_upstream(BREAKER, ""), &[("A", up.addr().to_string())]).await;
    let b = breaker(&gw, 0);
    up.set_mode(Mode::Fail(404));
    for i in 1..=6u64 {
        assert_eq!(send(&format!("{}/x", gw.url())).await.status, 404);
        until("404 recorded", Duration::from_secs(3), || up.hits() == i).await;
    }
    up.set_mode(Mode::Ok);
    for code in [400, 401, 403, 404, 409, 429] {
        for _ in 0..2 {
            let r = send(&format!("{}/status/{code}", gw.url())).await;
            assert_eq!(r.status, code);
        }
    }
    assert_eq!(up.hits(), 18, "every 4xx reached the upstream");
    let s = snap(&b);
    assert_eq!(s.state, State::Closed);
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!(s.times_opened, 0);
    // ... while 5xx of the default set do count
    assert_eq!(send(&format!("{}/status/503", gw.url())).await.status, 503);
    until("503 counted", Duration::from_secs(3), || {
        snap(&b).consecutive_failures == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_based_trip_opens_at_the_failure_percentage() {
    let up = Upstream::start("svc").await;
    let extra = "    circuit_breaker:
      failure_threshold: 100
      success_threshold: 1
      open_duration: 5s
      rate: { calls: 10, min_calls: 10, failure_rate_percent: 50 }";
    let gw = gw_suite::gateway(&one_upstream(extra, ""), &[("A", up.addr().to_string())]).await;
    let b = breaker(&gw, 0);
    // fail, ok, fail, ok, ... : 5 failures in the first 9 calls, below min_calls
    for i in 0..10u64 {
        let path = if i % 2 == 0 { "status/500" } else { "ok" };
        let r = send(&format!("{}/{path}", gw.url())).await;
        assert_eq!(r.status, if i % 2 == 0 { 500 } else { 200 });
        if i < 9 {
            until(
                "call recorded in the window",
                Duration::from_secs(3),
                || snap(&b).window.is_some_and(|w| w.calls == i + 1),
            )
            .await;
            assert_eq!(state(&b), State::Closed, "after {} calls", i + 1);
        }
    }
    // the 10th call fills the window: 5/10 = 50 % failures
    until("open at 50 %", Duration::from_secs(3), || {
        state(&b) == State::Open
    })
    .await;
    let r = send(&format!("{}/ok", gw.url())).await;
    assert_circuit_open(&r, "svc", "5");
    assert_eq!(up.hits(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_fallback_is_served_while_open() {
    let up = Upstream::start("svc").await;
    up.set_mode(Mode::Fail(500));
    let route_extra = r#"    fallback:
      type: static
      status: 200
      headers: { content-type: application/json }
      body: '{"degraded":true}'"#;
    let gw = gw_suite::gateway(
        &one_upstream(BREAKER, route_extra),
        &[("A", up.addr().to_string())],
    )
    .await;
    let b = breaker(&gw, 0);
    let url = format!("{}/items", gw.url());
    for n in 1..=3 {
        fail_once(&url, &b, n, 3, 500).await;
    }
    for _ in 0..10 {
        let r = send(&url).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-gw-fallback"), Some("circuit-open"));
        assert!(r.header("x-request-id").is_some());
        assert_eq!(
            r.json().expect("json"),
            serde_json::json!({"degraded": true})
        );
    }
    assert_eq!(up.hits(), 3, "the fallback never touches the upstream");
    // recovery: the upstream answers again
    up.set_mode(Mode::Ok);
    until("open time over", Duration::from_secs(3), || {
        state(&b) == State::HalfOpen
    })
    .await;
    let r = send(&url).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), Some("svc"));
    assert!(r.header("x-gw-fallback").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_upstream_takes_the_traffic_while_open() {
    let primary = Upstream::start("primary").await;
    let backup = Upstream::start("backup").await;
    primary.set_mode(Mode::Fail(500));
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: primary
    endpoints: [{ address: "{{P}}" }]
    circuit_breaker:
      failure_threshold: 3
      success_threshold: 2
      open_duration: 1s
      fallback: { type: upstream, upstream: backup }
  - name: backup
    endpoints: [{ address: "{{B}}" }]
routes:
  - name: api
    match: { prefix: /api }
    rewrite: { strip_prefix: true }
    upstream: primary
"#,
        &[
            ("P", primary.addr().to_string()),
            ("B", backup.addr().to_string()),
        ],
    )
    .await;
    let b = breaker(&gw, 0);
    let url = format!("{}/api/orders/7?x=1", gw.url());
    for n in 1..=3 {
        fail_once(&url, &b, n, 3, 500).await;
    }
    for _ in 0..20 {
        let r = send(&url).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-upstream"), Some("backup"));
        let v = r.json().expect("json");
        assert_eq!(v["uri"], "/orders/7?x=1", "same rewrite as the primary");
    }
    assert_eq!(primary.hits(), 3);
    assert_eq!(backup.hits(), 20);
    // recovery: traffic returns to the primary
    primary.set_mode(Mode::Ok);
    until("open time over", Duration::from_secs(3), || {
        state(&b) == State::HalfOpen
    })
    .await;
    let r = send(&url).await;
    assert_eq!(r.header("x-upstream"), Some("primary"));
    assert_eq!(backup.hits(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_admits_only_one_probe_at_a_time() {
    let up = Upstream::start("svc").await;
    up.set_mode(Mode::Fail(500));
    let extra = "    circuit_breaker: { failure_threshold: 3, success_threshold: 2, open_duration: 1s, half_open_max_calls: 1 }";
    let gw = gw_suite::gateway(&one_upstream(extra, ""), &[("A", up.addr().to_string())]).await;
    let b = breaker(&gw, 0);
    let url = format!("{}/x", gw.url());
    for n in 1..=3 {
        fail_once(&url, &b, n, 3, 500).await;
    }
    up.set_mode(Mode::Delay(Duration::from_millis(700)));
    until("open time over", Duration::from_secs(3), || {
        state(&b) == State::HalfOpen
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move { send(&url).await }));
    }
    let mut ok = 0;
    let mut rejected = 0;
    for t in tasks {
        let r = t.await.expect("task");
        match r.status.as_u16() {
            200 => ok += 1,
            503 => {
                assert_circuit_open(&r, "svc", "1");
                rejected += 1;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert_eq!((ok, rejected), (1, 5), "exactly one probe");
    assert_eq!(up.hits(), 4, "exactly one request reached the upstream");
    // the slot frees when the probe ends: the second probe closes the breaker
    until("probe recorded", Duration::from_secs(3), || {
        snap(&b).consecutive_successes == 1
    })
    .await;
    up.set_mode(Mode::Ok);
    assert_eq!(send(&url).await.status, 200);
    until("closed", Duration::from_secs(3), || {
        state(&b) == State::Closed
    })
    .await;
}

fn runtime_with_outlier(gw: &Embedded) -> Arc<gateway_core::proxy::runtime::Runtime> {
    let rt = gw.engine.runtime();
    assert!(rt.upstreams[0].outlier.is_some(), "outlier detection on");
    rt
}

fn ejected(o: &OutlierDetector, i: usize) -> bool {
    o.is_ejected(i, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_ejection_routes_around_a_failing_endpoint_and_lets_it_back() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set_mode(Mode::Fail(500));
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: pool
    endpoints: [{ address: "{{A}}" }, { address: "{{B}}" }]
    outlier_detection: { consecutive_failures: 3, base_ejection: 2s, max_ejected_percent: 50 }
routes:
  - name: all
    match: { prefix: / }
    upstream: pool
"#,
        &[("A", a.addr().to_string()), ("B", b.addr().to_string())],
    )
    .await;
    let rt = runtime_with_outlier(&gw);
    let o = rt.upstreams[0].outlier.as_ref().expect("detector");
    let url = format!("{}/x", gw.url());

    // round robin sends every other request to a until it has failed 3 times
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut failed = 0;
    while a.hits() < 3 {
        assert!(Instant::now() < deadline, "a never got 3 requests");
        let r = send(&url).await;
        match r.header("x-upstream") {
            Some("a") => {
                assert_eq!(r.status, 500);
                failed += 1;
            }
            _ => assert_eq!(r.status, 200),
        }
    }
    assert_eq!(failed, 3);
    until("a ejected", Duration::from_secs(3), || ejected(o, 0)).await;
    let ejected_at = Instant::now();
    assert!(!ejected(o, 1), "b stays in");

    // while a is out, clients see no failures at all
    for _ in 0..50 {
        let r = send(&url).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-upstream"), Some("b"));
    }
    assert_eq!(a.hits(), 3, "no traffic to the ejected endpoint");

    // a recovers; once the ejection time is over it gets traffic again
    a.set_mode(Mode::Ok);
    until_async("a back in rotation", Duration::from_secs(6), || {
        let url = url.clone();
        async move {
            let r = send(&url).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.header("x-upstream") == Some("a")
        }
    })
    .await;
    let out_for = ejected_at.elapsed();
    assert!(
        out_for >= Duration::from_millis(1500),
        "a returned after {out_for:?}, before its 2 s ejection ended"
    );
    assert!(!ejected(o, 0));

    // it flaps right away: the second ejection is longer (2 × base)
    a.set_mode(Mode::Fail(500));
    let hits = a.hits();
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.hits() < hits + 3 {
        assert!(Instant::now() < deadline, "a never got 3 more requests");
        send(&url).await;
    }
    until("a ejected again", Duration::from_secs(3), || ejected(o, 0)).await;
    let h = o.snapshot(Instant::now())[0];
    assert_eq!(h.times_ejected, 2);
    assert!(
        h.ejected_remaining
            .is_some_and(|d| d > Duration::from_millis(3000)),
        "second ejection lasts ~4 s: {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_forces_the_breaker_open_and_releases_it() {
    let up = Upstream::start("svc").await;
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\", token: \"{TOKEN}\" }}\n{}",
        one_upstream(BREAKER, "")
    );
    let gw = gw_suite::gateway(&yaml, &[("A", up.addr().to_string())]).await;
    let admin = format!("http://{}", gw.admin_addr.expect("admin listener"));
    let url = format!("{}/x", gw.url());
    let bearer = format!("Bearer {TOKEN}");
    let auth: &[(&str, &str)] = &[("authorization", bearer.as_str())];

    // no token, wrong token: 401, and nothing changes
    let r = call(Method::GET, &format!("{admin}/admin/breakers"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json().expect("json")["error"], "unauthorized");
    let r = call(
        Method::POST,
        &format!("{admin}/admin/breakers/svc/open"),
        &[("authorization", "Bearer not-the-token-at-all!")],
    )
    .await;
    assert_eq!(r.status, 401);
    let r = call(
        Method::POST,
        &format!("{admin}/admin/breakers/svc/open"),
        &[],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(send(&url).await.status, 200);
    assert_eq!(up.hits(), 1);

    // force open
    let r = call(
        Method::POST,
        &format!("{admin}/admin/breakers/svc/open"),
        auth,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().expect("json")["state"], "open");
    for _ in 0..3 {
        assert_circuit_open(&send(&url).await, "svc", "1");
    }
    assert_eq!(up.hits(), 1);
    let r = call(Method::GET, &format!("{admin}/admin/breakers"), auth).await;
    assert_eq!(r.status, 200);
    let list = r.json().expect("json");
    assert_eq!(list[0]["upstream"], "svc", "{list}");
    assert_eq!(list[0]["state"], "open", "{list}");

    // release
    let r = call(
        Method::POST,
        &format!("{admin}/admin/breakers/svc/auto"),
        auth,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().expect("json")["state"], "closed");
    assert_eq!(send(&url).await.status, 200);
    assert_eq!(up.hits(), 2);
    let r = call(Method::GET, &format!("{admin}/admin/breakers"), auth).await;
    assert_eq!(r.json().expect("json")[0]["state"], "closed");

    // unknown upstream / action
    let r = call(
        Method::POST,
        &format!("{admin}/admin/breakers/nope/open"),
        auth,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = call(
        Method::POST,
        &format!("{admin}/admin/breakers/svc/explode"),
        auth,
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_state_transitions_and_rejections() {
    let up = Upstream::start("svc").await;
    up.set_mode(Mode::Fail(502));
    let extra =
        "    circuit_breaker: { failure_threshold: 3, success_threshold: 2, open_duration: 2500ms }";
    let gw = gw_suite::gateway(&one_upstream(extra, ""), &[("A", up.addr().to_string())]).await;
    let b = breaker(&gw, 0);
    let m = || gw.engine.metrics.render();
    assert_eq!(
        Scrape::parse(&m()).get("gw_breaker_state", &[("upstream", "svc")]),
        Some(0.0)
    );
    let url = format!("{}/x", gw.url());
    for n in 1..=3 {
        fail_once(&url, &b, n, 3, 502).await;
    }
    // Retry-After is the remaining open time rounded up (2.5 s open: 3, not 2)
    let before = snap(&b).open_remaining.expect("open");
    let r = send(&url).await;
    let after = snap(&b).open_remaining.expect("open");
    let ceil = |d: Duration| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).to_string();
    let ra = r.header("retry-after").unwrap_or_default().to_string();
    assert!(
        ra == ceil(before) || ra == ceil(after),
        "Retry-After {ra}, remaining {before:?}..{after:?}"
    );
    assert_circuit_open(&r, "svc", &ra);

    let text = m();
    let s = Scrape::parse(&text);
    assert_eq!(
        s.get("gw_breaker_state", &[("upstream", "svc")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        s.get(
            "gw_breaker_transitions_total",
            &[("upstream", "svc"), ("from", "closed"), ("to", "open")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        s.get(
            "gw_breaker_transitions_total",
            &[("upstream", "svc"), ("from", "open"), ("to", "half_open")]
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        s.get("gw_breaker_rejected_total", &[("upstream", "svc")]),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_failure_retried_on_another_endpoint_counts_only_against_the_dead_one() {
    let mut dead = Upstream::start("dead").await;
    let live = Upstream::start("live").await;
    dead.stop().await; // connection refused from now on
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: pool
    endpoints: [{ address: "{{D}}" }, { address: "{{L}}" }]
    retries: { attempts: 1 }
    outlier_detection: { consecutive_failures: 3, base_ejection: 10s, max_ejected_percent: 50 }
    circuit_breaker:
      failure_threshold: 3
      success_threshold: 1
      open_duration: 10s
      rate: { calls: 100, min_calls: 100, failure_rate_percent: 100 }
routes:
  - name: all
    match: { prefix: / }
    upstream: pool
"#,
        &[
            ("D", dead.addr().to_string()),
            ("L", live.addr().to_string()),
        ],
    )
    .await;
    let b = breaker(&gw, 0);
    let rt = gw.engine.runtime();
    let o = rt.upstreams[0].outlier.as_ref().expect("detector");
    for i in 1..=12u64 {
        let r = send(&format!("{}/x", gw.url())).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.header("x-upstream"), Some("live"));
        until("request reached live", Duration::from_secs(3), || {
            live.hits() == i
        })
        .await;
        // the client got a 200: the breaker must not count a failure, nor blame the live endpoint
        until("outcome recorded", Duration::from_secs(3), || {
            snap(&b).window.is_some_and(|w| w.calls == i)
        })
        .await;
        let s = snap(&b);
        assert_eq!(s.window.map(|w| w.failed), Some(0), "after request {i}");
        assert_eq!(s.consecutive_failures, 0, "after request {i}");
        assert_eq!(s.state, State::Closed, "after request {i}");
        assert!(!ejected(o, 1), "live endpoint ejected after request {i}");
    }
    // after a connect failure, first attempts skip the dead endpoint for 2 s (the recent-failure mark),
    // so its failure streak grows by one probe per 2 s, not one per request: keep the traffic going
    // until outlier detection ejects it (3 probes)
    let end = Instant::now() + Duration::from_secs(10);
    while !ejected(o, 0) {
        assert!(
            Instant::now() < end,
            "dead endpoint not ejected within 10 s"
        );
        let r = send(&format!("{}/x", gw.url())).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!ejected(o, 1), "live endpoint ejected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

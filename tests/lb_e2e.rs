//! Load balancing under change, end to end: the gateway runs in-process (`gw_suite::gateway`) in front of
//! real testkit upstreams on `127.0.0.1:0`; requests go over real TCP.
//!
//! 1. `fastest` follows a latency swap and re-measures an endpoint it stopped picking
//!    [`fastest_follows_a_latency_swap`, `fastest_remeasures_an_endpoint_it_stopped_picking`];
//! 2. panic mode (every endpoint ejected) with round robin spreads traffic evenly over 2 and 3
//!    endpoints [`panic_mode_round_robin_spreads_over_two`, `…_three`];
//! 3. an endpoint that blackholes connects costs one connect timeout per hold period, not one per request
//!    [`blackholed_endpoint_costs_few_connect_timeouts`].

use gateway_testkit::{http_client, request, HttpClient, Method, Mode, Upstream};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Upper bound for any single client exchange in these tests.
const CALL_LIMIT: Duration = Duration::from_secs(10);

fn var(name: &'static str, addr: SocketAddr) -> (&'static str, String) {
    (name, addr.to_string())
}

/// One GET through the gateway; returns the answering upstream's name (`x-upstream`) and the latency.
async fn get(c: &HttpClient, url: &str) -> (String, Duration) {
    let t = Instant::now();
    let r = tokio::time::timeout(CALL_LIMIT, request(c, Method::GET, url, &[], ""))
        .await
        .unwrap_or_else(|_| panic!("{url}: no response within {CALL_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("{url}: {e:?}"));
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    (
        r.header("x-upstream").unwrap_or("?").to_string(),
        t.elapsed(),
    )
}

fn config(endpoints: &[&str], lb: &str, extra: &str) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|e| format!("{{ address: \"{{{{{e}}}}}\" }}"))
        .collect();
    format!(
        r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
upstreams:
  - name: svc
    endpoints: [{}]
    load_balancing: {lb}
{extra}
routes:
  - name: svc
    match: {{ prefix: /api/svc }}
    rewrite: {{ strip_prefix: true }}
    upstream: svc
"#,
        eps.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// 1. fastest
// ---------------------------------------------------------------------------------------------

/// A answers in 100 ms and B in 2 ms, then they swap: the gateway must move to A at once (the outside
/// suite, with 50 ms, saw A get 0 of the next 120 requests). 100 ms rather than 50 so that scheduling
/// stalls of a loaded test machine (a peak on the fast endpoint sends a request or two to the slow one)
/// stay below the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastest_follows_a_latency_swap() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set_mode(Mode::Delay(Duration::from_millis(100)));
    b.set_mode(Mode::Delay(Duration::from_millis(2)));
    let gw = gw_suite::gateway(
        &config(&["A", "B"], "{ type: fastest }", ""),
        &[var("A", a.addr()), var("B", b.addr())],
    )
    .await;
    let c = http_client();
    let url = format!("{}/api/svc/f", gw.url());
    let mut before = Vec::new();
    for _ in 0..40 {
        before.push(get(&c, &url).await.0);
    }
    let b_before = before.iter().filter(|w| *w == "b").count();
    assert!(
        b_before >= 36,
        "before the swap B (2 ms) should win: {before:?}"
    );

    a.set_mode(Mode::Delay(Duration::from_millis(2)));
    b.set_mode(Mode::Delay(Duration::from_millis(100)));
    let t = Instant::now();
    let mut after = Vec::new();
    for _ in 0..120 {
        after.push(get(&c, &url).await.0);
    }
    let a_after = after.iter().filter(|w| *w == "a").count();
    // requests until A answered 10 in a row
    let settled = after
        .windows(10)
        .position(|w| w.iter().all(|x| x == "a"))
        .unwrap_or(after.len());
    eprintln!(
        "fastest swap: A got {a_after} of 120 after the swap; A answers every request from request \
         {} on; 120 requests took {:?}",
        settled + 1,
        t.elapsed()
    );
    assert!(
        a_after >= 110,
        "after the swap A (now 2 ms) got {a_after} of 120: {after:?}"
    );
    assert!(settled < 10, "took {} requests to settle on A", settled + 1);
}

/// An endpoint the balancer stopped picking is measured again once its estimate has decayed below the
/// best one (DECAY · ln(30 ms / 10 ms) ≈ 5.5 s, sooner if the best one has a slow response), and wins
/// when it got faster meanwhile. Before the decay it was measured again only if the other endpoint's
/// average climbed above 30 ms (one 77 ms+ response).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastest_remeasures_an_endpoint_it_stopped_picking() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set_mode(Mode::Delay(Duration::from_millis(30)));
    b.set_mode(Mode::Delay(Duration::from_millis(10)));
    let gw = gw_suite::gateway(
        &config(&["A", "B"], "{ type: fastest }", ""),
        &[var("A", a.addr()), var("B", b.addr())],
    )
    .await;
    let c = http_client();
    let url = format!("{}/api/svc/f", gw.url());
    for _ in 0..10 {
        get(&c, &url).await;
    }
    assert!(a.hits() >= 1, "both endpoints are measured first");
    // A becomes the fastest while nobody is sending to it
    a.set_mode(Mode::Ok);
    let t = Instant::now();
    let mut first_a = None;
    let mut a_last_second = 0;
    // bounded: at most 12 s of sequential requests
    while t.elapsed() < Duration::from_secs(12) {
        let (who, _) = get(&c, &url).await;
        if who == "a" {
            first_a.get_or_insert(t.elapsed());
            if first_a.is_some_and(|f| t.elapsed() > f + Duration::from_secs(1)) {
                break;
            }
            a_last_second += 1;
        } else if first_a.is_some() {
            a_last_second -= 1;
        }
    }
    let first_a = first_a.expect("A was never measured again within 12 s");
    eprintln!("fastest: the stale endpoint was re-measured after {first_a:?}");
    assert!(
        first_a < Duration::from_secs(9),
        "re-measured only after {first_a:?}"
    );
    assert!(
        a_last_second > 20,
        "after re-measuring, A (now the fastest) must take the traffic: net {a_last_second}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. panic mode
// ---------------------------------------------------------------------------------------------

const EJECT_ALL: &str =
    "    outlier_detection: { consecutive_failures: 1, base_ejection: 60s, max_ejected_percent: 100 }";

/// Ejects every endpoint (each answers 503 once), brings them back to health while still ejected, then
/// checks that `n × 100` requests spread evenly.
async fn panic_mode_spread(names: &[&'static str]) {
    let ups: Vec<Upstream> = {
        let mut v = Vec::new();
        for n in names {
            v.push(Upstream::start(&n.to_lowercase()).await);
        }
        v
    };
    let vars: Vec<(&str, String)> = names
        .iter()
        .zip(&ups)
        .map(|(n, u)| var(n, u.addr()))
        .collect();
    let gw = gw_suite::gateway(&config(names, "{ type: round_robin }", EJECT_ALL), &vars).await;
    let c = http_client();
    let url = format!("{}/api/svc/p", gw.url());
    for u in &ups {
        u.set_mode(Mode::Fail(503));
    }
    for _ in 0..names.len() * 3 {
        let r = request(&c, Method::GET, &url, &[], "")
            .await
            .expect("answer");
        assert_eq!(r.status, 503);
    }
    let rt = gw.engine.runtime();
    let outlier = rt.upstreams[0].outlier.as_ref().expect("outlier detection");
    let now = Instant::now();
    for i in 0..names.len() {
        assert!(outlier.is_ejected(i, now), "endpoint {i} not ejected");
    }
    for u in &ups {
        u.set_mode(Mode::Ok);
        u.reset_log();
    }
    let total = names.len() * 100;
    for _ in 0..total {
        get(&c, &url).await;
    }
    let hits: Vec<u64> = ups.iter().map(|u| u.hits()).collect();
    eprintln!("panic mode over {} endpoints: {hits:?}", names.len());
    assert_eq!(hits.iter().sum::<u64>(), total as u64);
    for h in &hits {
        assert!(
            (95..=105).contains(h),
            "uneven spread in panic mode: {hits:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_mode_round_robin_spreads_over_two() {
    panic_mode_spread(&["A", "B"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_mode_round_robin_spreads_over_three() {
    panic_mode_spread(&["A", "B", "C"]).await;
}

// ---------------------------------------------------------------------------------------------
// 3. an endpoint that blackholes
// ---------------------------------------------------------------------------------------------

/// A loopback endpoint that blackholes connects: a listener with a backlog of 0 whose one queue slot is
/// taken by a connection nobody accepts. Linux then drops further SYNs (no RST: the client retransmits
/// and waits), which is what a host that drops packets looks like. Returns the listener and the filler
/// (keep both alive) and checks the premise: a connect times out instead of being refused.
async fn blackhole() -> (tokio::net::TcpListener, tokio::net::TcpStream, SocketAddr) {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let listener = sock.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let filler = tokio::net::TcpStream::connect(addr)
        .await
        .expect("first connect fills the queue");
    let probe = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(addr),
    )
    .await;
    assert!(
        probe.is_err(),
        "the blackhole answered a connect: {probe:?}"
    );
    (listener, filler, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_endpoint_costs_few_connect_timeouts() {
    let (_listener, _filler, dead) = blackhole().await;
    let b = Upstream::start("b").await;
    let gw = gw_suite::gateway(
        &config(
            &["A", "B"],
            "{ type: round_robin }",
            "    timeouts: { connect: 300ms }\n    retries: { attempts: 1 }",
        ),
        &[var("A", dead), var("B", b.addr())],
    )
    .await;
    let c = http_client();
    let url = format!("{}/api/svc/bh", gw.url());
    let t = Instant::now();
    let mut slow = 0;
    let n = 100;
    for _ in 0..n {
        let (who, took) = get(&c, &url).await;
        assert_eq!(who, "b");
        if took >= Duration::from_millis(250) {
            slow += 1;
        }
    }
    let elapsed = t.elapsed();
    eprintln!("blackhole: {slow} of {n} requests waited the connect timeout; {n} took {elapsed:?}");
    // one probe per recent-failure hold (2 s) at most, plus the first request
    let allowed = 1 + (elapsed.as_secs_f64() / 2.0).ceil() as usize;
    assert!(
        slow <= allowed,
        "{slow} of {n} requests waited the connect timeout (allowed {allowed})"
    );
    assert_eq!(b.hits(), n as u64);
}

//! Connection hardening on the embedded runner (`proxy::server::Embedded`, its own accept loop), with raw
//! sockets: slowloris deadlines, connection caps, pipelining, framing, and the drain. Issue 11, items 3,
//! 5, 7, 8 (`gw serve` is covered by `gateway-cli/tests/hardening_serve.rs`).
use gateway_core::proxy::server::Embedded;
use gateway_testkit::raw::{get, get_close, Raw};
use gateway_testkit::Upstream;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

async fn start(server: &str, up: &Upstream) -> Embedded {
    gw_suite::gateway(
        &format!(
            "server: {server}\nlisteners: [{{ name: p, address: \"127.0.0.1:0\" }}]\nadmin: {{ address: \"127.0.0.1:0\" }}\nupstreams:\n  - {{ name: b, endpoints: [{{ address: \"{{{{UP}}}}\" }}] }}\nroutes:\n  - {{ name: r, match: {{ prefix: /api }}, rewrite: {{ strip_prefix: true }}, upstream: b }}\n"
        ),
        &[("UP", up.addr().to_string())],
    )
    .await
}

fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> std::thread::JoinHandle<R> {
    std::thread::spawn(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_slowloris_connections_are_closed_within_header_timeout() {
    let up = Upstream::start("e-slow").await;
    let gw = start("{ downstream: { header_timeout: 1s } }", &up).await;
    let addr = gw.addrs[0];
    let mut hs = Vec::new();
    for i in 0..9 {
        hs.push(blocking(move || {
            let mut c = Raw::connect(addr);
            match i % 3 {
                0 => c.closed_within(Duration::from_secs(8)),
                1 => {
                    c.send(b"GET /api/x HTTP/1.1\r\nHost: gw.test\r\n");
                    c.closed_within(Duration::from_secs(8))
                }
                _ => {
                    let start = Instant::now();
                    for b in b"GET /api/drip HTTP/1.1\r\n" {
                        if !c.send(&[*b]) || c.closed_within(Duration::from_millis(400)).is_some() {
                            return Some(start.elapsed());
                        }
                    }
                    None
                }
            }
        }));
    }
    let r = blocking(move || {
        let mut c = Raw::connect(addr);
        c.send(&get_close("/api/normal"));
        c.response(T).map(|r| r.status)
    })
    .join()
    .expect("join");
    assert_eq!(r.expect("a normal client is served"), 200);
    for (i, h) in hs.into_iter().enumerate() {
        let d = h
            .join()
            .expect("join")
            .unwrap_or_else(|| panic!("slow connection #{i} still open"));
        assert!(
            d <= Duration::from_millis(3000),
            "slow connection #{i} closed after {d:?}"
        );
    }
    let m = gateway_testkit::get(&format!("http://{}/metrics", gw.admin_addr.expect("admin")))
        .await
        .expect("metrics")
        .text();
    assert!(
        m.contains("gw_header_timeouts_total{listener=\"p\"} 9"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_connections_beyond_the_cap_are_closed() {
    let up = Upstream::start("e-cap").await;
    let gw = start("{ downstream: { max_connections: 2 } }", &up).await;
    let addr = gw.addrs[0];
    let mut held: Vec<Raw> = (0..2).map(|_| Raw::connect(addr)).collect();
    for c in &mut held {
        c.send(b"G");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closed = blocking(move || Raw::connect(addr).closed_within(Duration::from_secs(3)))
        .join()
        .expect("join");
    assert!(closed.is_some(), "the third connection is closed");
    let m = gateway_testkit::get(&format!("http://{}/metrics", gw.admin_addr.expect("admin")))
        .await
        .expect("metrics")
        .text();
    assert!(
        m.contains("gw_connections_rejected_total{listener=\"p\",reason=\"listener_cap\"} 1"),
        "{m}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_pipelined_requests_are_answered_in_order() {
    let up = Upstream::start("e-pipe").await;
    let gw = start("{}", &up).await;
    let addr: SocketAddr = gw.addrs[0];
    blocking(move || {
        let mut c = Raw::connect(addr);
        c.send(&[get("/api/1"), get("/api/2"), get_close("/api/3")].concat());
        let paths: Vec<String> = (0..3)
            .map(|i| {
                let r = c
                    .response(T)
                    .unwrap_or_else(|e| panic!("response {}: {e}", i + 1));
                r.json()["path"].as_str().unwrap_or_default().to_string()
            })
            .collect();
        assert_eq!(paths, ["/1", "/2", "/3"]);
    })
    .join()
    .expect("pipelining");
}

/// A local answer to a request whose body was not read (404 here; 401 and 429 take the same path) keeps
/// the connection when the body is small and has a declared length: the body is read and dropped
/// before the next request, also when it arrives after the answer. A large, chunked or
/// `Expect: 100-continue` body still closes the connection after the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_local_answers_keep_the_connection_past_a_small_unread_body() {
    let up = Upstream::start("e-drain").await;
    let gw = start("{}", &up).await;
    let addr: SocketAddr = gw.addrs[0];
    let post = |path: &str, extra: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: gw.test\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    blocking(move || {
        let mut c = Raw::connect(addr);
        // the body with the head, then a pipelined request behind it
        c.send(&[post("/nope", "", "hello=world"), get("/api/after")].concat());
        let r = c.response(T).expect("404");
        assert_eq!(r.status, 404);
        assert_eq!(r.header("connection"), Some("keep-alive"), "{}", r.head);
        let r = c.response(T).expect("the request after the body");
        assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/after")));
        // the head alone; the body only after the answer has come
        c.send(b"POST /nope HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\n");
        let r = c.response(T).expect("404 before the body");
        assert_eq!(r.status, 404);
        assert_eq!(r.header("connection"), Some("keep-alive"), "{}", r.head);
        c.send(b"hello");
        c.send(&get_close("/api/last"));
        let r = c.response(T).expect("the request after the late body");
        assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/last")));

        let big = "x".repeat(70_000);
        let chunked = "POST /nope HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        for (what, req) in [
            ("70,000-byte body", post("/nope", "", &big)),
            ("chunked body", chunked.as_bytes().to_vec()),
            (
                "Expect: 100-continue, body not sent",
                b"POST /nope HTTP/1.1\r\nHost: gw.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n".to_vec(),
            ),
        ] {
            let mut c = Raw::connect(addr);
            c.send(&req);
            let r = c.response(T).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(r.status, 404, "{what}");
            assert_eq!(r.header("connection"), Some("close"), "{what}: {}", r.head);
            assert!(c.closed_within(Duration::from_secs(5)).is_some(), "{what}");
        }
    })
    .join()
    .expect("drain");
}

/// Between requests a keep-alive connection waits for the next one outside a Pingora session (its
/// bytes are read by the connection loop and handed to the session): requests after an idle pause,
/// after a body with a length, and after a chunked body (where the session itself waits) are all
/// answered, and an idle connection is closed once `idle_timeout` has passed, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_keepalive_waits_between_requests_and_closes_when_idle() {
    let up = Upstream::start("e-idle").await;
    let gw = start(
        "{ downstream: { header_timeout: 5s, idle_timeout: 1s } }",
        &up,
    )
    .await;
    let addr = gw.addrs[0];
    blocking(move || {
        let mut c = Raw::connect(addr);
        let path = |c: &mut Raw, req: &[u8]| {
            c.send(req);
            let r = c.response(T).expect("response");
            assert_eq!(r.status, 200);
            r.json()["path"].as_str().unwrap_or_default().to_string()
        };
        assert_eq!(path(&mut c, &get("/api/a")), "/a");
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(path(&mut c, &get("/api/b")), "/b");
        let sized = b"POST /api/c HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(path(&mut c, sized), "/c");
        std::thread::sleep(Duration::from_millis(300));
        let chunked =
            b"POST /api/d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(path(&mut c, chunked), "/d");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(path(&mut c, &get("/api/e")), "/e");
        // idle now: open at half the idle timeout, closed soon after it
        let idle_since = Instant::now();
        assert!(c.closed_within(Duration::from_millis(500)).is_none(), "closed early");
        assert!(c.closed_within(Duration::from_secs(3)).is_some(), "idle connection not closed");
        let idle = idle_since.elapsed();
        assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");
    })
    .join()
    .expect("keep-alive");
    assert_eq!(up.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_framing_rejects_and_closes() {
    let up = Upstream::start("e-frame").await;
    let gw = start("{}", &up).await;
    let addr = gw.addrs[0];
    let cases: [(&[u8], u16); 3] = [
        (b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET /api/x HTTP/1.1\r\n\r\n", 400),
        (b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    ];
    for (head, status) in cases {
        let (got, closed) = blocking(move || {
            let mut c = Raw::connect(addr);
            c.send(&[head, &get("/api/next")[..]].concat());
            let r = c.response(T).expect("response");
            (
                r.status,
                c.closed_within(Duration::from_secs(3)).is_some() && c.pending().is_empty(),
            )
        })
        .join()
        .expect("join");
        assert_eq!(got, status, "{}", String::from_utf8_lossy(head));
        assert!(closed, "closed with nothing more sent");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_drain_answers_in_flight_and_closes_idle() {
    let up = Upstream::start("e-drain").await;
    // two runtimes: the idle and the busy connection land on different ones, and the busy request
    // reads an upstream connection pooled by the other (a runtime that stopped once its own
    // connections were gone failed it with a 502)
    let gw = start("{ threads: 2 }", &up).await;
    let addr = gw.addrs[0];
    let warm = move || {
        let mut c = Raw::connect(addr);
        c.send(&get("/api/warm"));
        assert_eq!(c.response(T).expect("warm").status, 200);
        c
    };
    let mut idle = warm();
    let mut busy = warm();
    busy.send(&get("/api/delay/800"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let drained = tokio::spawn(async move {
        let ok = gw.drain(Duration::from_secs(5)).await;
        (ok, gw)
    });
    let busy = blocking(move || {
        let r = busy.response(T).expect("in-flight request answered");
        (r.status, r.closes(), busy.closed_within(T).is_some())
    });
    let idle_closed = blocking(move || idle.closed_within(Duration::from_secs(2)))
        .join()
        .expect("join");
    assert!(
        idle_closed.is_some(),
        "idle keep-alive connection closed by the drain"
    );
    assert_eq!(busy.join().expect("join"), (200, true, true));
    let (ok, gw) = drained.await.expect("join");
    assert!(ok, "drain finished");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(gw.open_connections(), 0);
}

//! End-to-end tests of the testkit's upstream server and clients (all on 127.0.0.1:0).

use std::time::{Duration, Instant};

use gateway_testkit::wait::until;
use gateway_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

async fn must_get(url: &str) -> HttpResponse {
    send(&http_client(), Method::GET, url, &[], Bytes::new()).await
}

#[tokio::test]
async fn default_json_describes_request_and_logs_it() {
    let up = Upstream::start("alpha").await;
    let c = http_client();
    let url = format!("{}/api/users?id=7&x=y", up.url());
    let hdrs = [("X-Request-Id", "req-1"), ("x-multi", "a")];
    let r = timeout(T, request(&c, Method::POST, &url, &hdrs, "hello body"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-upstream"), Some("alpha"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json().unwrap();
    assert_eq!(j["upstream"], "alpha");
    assert_eq!(j["method"], "POST");
    assert_eq!(j["path"], "/api/users");
    assert_eq!(j["query"], "id=7&x=y");
    assert_eq!(j["uri"], "/api/users?id=7&x=y");
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["headers"]["x-request-id"], "req-1");
    assert_eq!(j["body_len"], 10);
    assert_eq!(j["body_fnv1a64"], checksum_hex(b"hello body"));
    assert!(j["peer"].as_str().unwrap().starts_with("127.0.0.1:"));

    assert_eq!(up.hits(), 1);
    assert_eq!(up.hits_for("post", "/api/users"), 1);
    assert_eq!(up.hits_for("GET", "/api/users"), 0);
    let rec = up.last_request().unwrap();
    assert_eq!(rec.uri, "/api/users?id=7&x=y");
    assert_eq!(rec.header("x-request-id").as_deref(), Some("req-1"));
    assert_eq!(&rec.body[..], b"hello body");
    assert!(rec.body_complete);
    assert_eq!(rec.body_fnv1a64, fnv1a64(b"hello body"));
}

#[tokio::test]
async fn any_method_and_query_null() {
    let up = Upstream::start("m").await;
    let c = http_client();
    for m in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "CUSTOM"] {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        let r = request(&c, method, &format!("{}/r", up.url()), &[], "")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{m}");
        let j = r.json().unwrap();
        assert_eq!(j["method"], m);
        assert!(j["query"].is_null());
    }
    assert_eq!(up.hits(), 6);
    assert_eq!(up.hits_for("CUSTOM", "/r"), 1);
    // HEAD: same status, no body.
    let r = request(&c, Method::HEAD, &format!("{}/r", up.url()), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn mode_fail_applies_everywhere_including_health() {
    let up = Upstream::start("f").await;
    up.set_mode(Mode::Fail(503));
    let r = must_get(&format!("{}/x", up.url())).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json().unwrap()["error"], "forced failure");
    assert_eq!(must_get(&format!("{}/health", up.url())).await.status, 503);
    up.set_mode(Mode::Fail(500));
    assert_eq!(must_get(&format!("{}/echo", up.url())).await.status, 500);
    up.set_mode(Mode::Ok);
    assert_eq!(must_get(&format!("{}/x", up.url())).await.status, 200);
    assert_eq!(must_get(&format!("{}/health", up.url())).await.status, 200);
    assert_eq!(up.hits(), 3);
    assert_eq!(up.health_hits(), 2);
    assert_eq!(up.total_hits(), 5);
}

#[tokio::test]
async fn set_health_fails_only_health() {
    let up = Upstream::start("h").await;
    up.set_health(false);
    let r = must_get(&format!("{}/health", up.url())).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json().unwrap()["status"], "down");
    assert_eq!(
        must_get(&format!("{}/health/x", up.url())).await.status,
        200
    );
    assert_eq!(must_get(&format!("{}/x", up.url())).await.status, 200);
    up.set_health(true);
    assert_eq!(must_get(&format!("{}/health", up.url())).await.status, 200);
}

#[tokio::test]
async fn mode_hang_never_answers_and_stop_kills_it() {
    let mut up = Upstream::start("hang").await;
    up.set_mode(Mode::Hang);
    let url = format!("{}/slow", up.url());
    let pending = tokio::spawn(async move { get(&url).await });
    until("up.in_flight() == 1", T, || up.in_flight() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "Hang mode answered");
    assert_eq!(up.hits(), 1);
    assert_eq!(up.open_connections(), 1);
    // Health hangs too.
    assert!(timeout(
        Duration::from_millis(200),
        get(&format!("{}/health", up.url()))
    )
    .await
    .is_err());
    up.stop().await;
    // The hanging client sees its connection closed.
    let res = timeout(T, pending).await.unwrap().unwrap();
    assert!(res.is_err(), "expected a closed connection, got {res:?}");
    assert_eq!(up.open_connections(), 0);
    assert_eq!(up.in_flight(), 0);
    let log = up.requests();
    assert_eq!(log.len(), 2);
    assert!(
        log.iter().all(|r| !r.body_complete),
        "hung requests never read their body"
    );
}

#[tokio::test]
async fn mode_delay_and_delay_path() {
    let up = Upstream::start("d").await;
    up.set_mode(Mode::Delay(Duration::from_millis(150)));
    let t0 = Instant::now();
    let r = must_get(&format!("{}/health", up.url())).await;
    assert_eq!(r.status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(150));
    up.set_mode(Mode::Ok);

    let t0 = Instant::now();
    let r = must_get(&format!("{}/api/delay/120", up.url())).await;
    assert!(t0.elapsed() >= Duration::from_millis(120));
    assert_eq!(r.json().unwrap()["path"], "/api/delay/120");
}

#[tokio::test]
async fn mode_reset_closes_without_response() {
    let up = Upstream::start("r").await;
    up.set_mode(Mode::Reset);
    let res = raw_request(up.addr(), "GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let err = res.expect_err("Reset mode answered");
    assert_ne!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(timeout(T, get(&format!("{}/x", up.url())))
        .await
        .unwrap()
        .is_err());
    assert_eq!(up.hits(), 2);
    until("up.open_connections() == 0", T, || {
        up.open_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn echo_streams_large_content_length_body() {
    let up = Upstream::start("e").await;
    let c = http_client();
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let r = timeout(
        T,
        request(
            &c,
            Method::PUT,
            &format!("{}/files/echo", up.url()),
            &[("content-type", "application/x-test")],
            data.clone(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-test"));
    assert_eq!(r.header("content-length"), Some("8388608"));
    assert!(r.body == data, "echoed body differs");
    until(
        "up.last_request().is_some_and(|q| q.body_complete)",
        T,
        || up.last_request().is_some_and(|q| q.body_complete),
    )
    .await;
    let rec = up.last_request().unwrap();
    assert_eq!(rec.body_len, data.len() as u64);
    assert_eq!(rec.body_fnv1a64, fnv1a64(&data));
    assert_eq!(rec.body.len(), BODY_KEEP);
}

/// Reads from `s` into `buf` until `needle` appears.
async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) {
    timeout(T, async {
        while !buf.windows(needle.len()).any(|w| w == needle) {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("timed out waiting for echo");
}

#[tokio::test]
async fn echo_streams_chunked_body_before_it_ends() {
    let up = Upstream::start("e").await;
    let mut s = TcpStream::connect(up.addr()).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    // The first chunk comes back while the request body is still open: streamed, not buffered.
    read_until(&mut s, &mut buf, b"hello").await;
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/plain"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    s.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    read_until(&mut s, &mut buf, b"0\r\n\r\n").await;
    assert!(String::from_utf8_lossy(&buf).contains(" world"));
    until(
        "up.last_request().is_some_and(|q| q.body_complete)",
        T,
        || up.last_request().is_some_and(|q| q.body_complete),
    )
    .await;
    assert_eq!(&up.last_request().unwrap().body[..], b"hello world");

    // Same through raw_request (de-chunking).
    let r = raw_request(
        up.addr(),
        "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"abc");
}

#[tokio::test]
async fn bytes_endpoint() {
    let up = Upstream::start("b").await;
    let n = 3 * 1024 * 1024 + 7;
    let r = must_get(&format!("{}/bytes/{n}", up.url())).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(n.to_string().as_str()));
    assert!(r.body == pattern_bytes(n));
    let r = must_get(&format!("{}/bytes/0", up.url())).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 0));
    let r = must_get(&format!("{}/bytes/{}", up.url(), MAX_BYTES + 1)).await;
    assert_eq!(r.status, 400);
    // Non-numeric: default answer.
    let r = must_get(&format!("{}/bytes/abc", up.url())).await;
    assert_eq!(r.json().unwrap()["path"], "/bytes/abc");
    until("up.in_flight() == 0", T, || up.in_flight() == 0).await;
}

#[tokio::test]
async fn status_endpoint() {
    let up = Upstream::start("s").await;
    let r = must_get(&format!("{}/status/418", up.url())).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.json().unwrap()["upstream"], "s");
    let r = must_get(&format!("{}/v1/status/503", up.url())).await;
    assert_eq!(r.status, 503);
    let r = must_get(&format!("{}/status/204", up.url())).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(
        must_get(&format!("{}/status/99", up.url())).await.status,
        400
    );
    assert_eq!(
        must_get(&format!("{}/status/1000", up.url())).await.status,
        400
    );
}

#[tokio::test]
async fn websocket_echo() {
    let up = Upstream::start("w").await;
    let url = format!("ws://{}/chat/ws", up.addr());
    assert_eq!(
        timeout(T, ws_echo(&url, "hi")).await.unwrap().unwrap(),
        "hi"
    );

    let mut ws = timeout(T, ws_connect(&url)).await.unwrap().unwrap();
    until("up.open_connections() == 1", T, || {
        up.open_connections() == 1
    })
    .await;
    ws.send(WsMessage::binary(vec![1u8, 2, 3])).await.unwrap();
    let m = timeout(T, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(m, WsMessage::binary(vec![1u8, 2, 3]));
    ws.send(WsMessage::text("second")).await.unwrap();
    let m = timeout(T, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(m, WsMessage::text("second"));
    ws.close(None).await.unwrap();
    until("up.open_connections() == 0", T, || {
        up.open_connections() == 0
    })
    .await;

    // Not a handshake.
    assert_eq!(must_get(&format!("{}/ws", up.url())).await.status, 400);
}

#[tokio::test]
async fn stop_kills_websocket_too() {
    let mut up = Upstream::start("w").await;
    let mut ws = ws_connect(&format!("ws://{}/ws", up.addr())).await.unwrap();
    until("up.open_connections() == 1", T, || {
        up.open_connections() == 1
    })
    .await;
    up.stop().await;
    let next = timeout(T, ws.next()).await.unwrap();
    assert!(!matches!(next, Some(Ok(WsMessage::Text(_)))));
    assert_eq!(up.open_connections(), 0);
}

#[tokio::test]
async fn keep_alive_and_gauges() {
    let up = Upstream::start("k").await;
    let c = http_client();
    for _ in 0..3 {
        let r = request(&c, Method::GET, &format!("{}/a", up.url()), &[], "")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        up.total_connections(),
        1,
        "keep-alive should reuse one connection"
    );
    assert_eq!(up.open_connections(), 1);
    assert_eq!(up.in_flight(), 0);

    // Three concurrent slow requests: three connections and three in flight.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let url = format!("{}/delay/400", up.url());
        tasks.push(tokio::spawn(async move { get(&url).await }));
    }
    until("up.in_flight() == 3", T, || up.in_flight() == 3).await;
    assert!(up.open_connections() >= 4);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status, 200);
    }
    until("up.in_flight() == 0", T, || up.in_flight() == 0).await;
    drop(c);
    until("up.open_connections() == 0", T, || {
        up.open_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn stop_and_restart_same_port() {
    let mut up = Upstream::start("p").await;
    let addr = up.addr();
    // An idle keep-alive connection must be closed by stop.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    until("up.open_connections() == 1", T, || {
        up.open_connections() == 1
    })
    .await;
    assert_eq!(must_get(&format!("{}/one", up.url())).await.status, 200);
    up.stop().await;
    assert!(!up.is_running());
    let mut b = [0u8; 1];
    let n = timeout(T, idle.read(&mut b)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "idle connection not closed");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
    assert!(timeout(T, get(&format!("{}/x", up.url())))
        .await
        .unwrap()
        .is_err());

    up.restart().await.unwrap();
    assert_eq!(up.addr(), addr);
    let r = must_get(&format!("{}/two", up.url())).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 2);
    assert_eq!(up.hits_for("GET", "/one"), 1);
    up.reset_log();
    assert_eq!((up.hits(), up.requests().len()), (0, 0));
}

#[tokio::test]
async fn drop_closes_listener() {
    let up = Upstream::start("x").await;
    let addr = up.addr();
    drop(up);
    until("listener closed after drop", T, || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
}

#[tokio::test]
async fn raw_request_keeps_hostile_paths_verbatim() {
    let up = Upstream::start("raw").await;
    for path in ["/api/../admin", "/api/%2e%2e/admin", "/a//b?q=%00"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let r = raw_request(up.addr(), req).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("X-UPSTREAM"), Some("raw"));
        let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(j["uri"], path);
    }
    // Oversized header: hyper rejects it (431), the raw client still reads the answer.
    let big = "x".repeat(512 * 1024);
    let r = raw_request(
        up.addr(),
        format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    let r = r.expect("hyper answers an oversized head");
    assert_eq!(r.status, 431, "{}", r.head);
    // HEAD: no body read even with Content-Length.
    let r = raw_request(up.addr(), "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn demo_upstreams_start_and_report_errors() {
    let ups = demo_upstreams(&[("a", "127.0.0.1:0"), ("b", "127.0.0.1:0")])
        .await
        .unwrap();
    assert_eq!(ups.len(), 2);
    for u in &ups {
        let r = must_get(&format!("{}/", u.url())).await;
        assert_eq!(r.json().unwrap()["upstream"], u.name());
    }
    let taken = ups[0].addr().to_string();
    let err = demo_upstreams(&[("c", taken.as_str())]).await.unwrap_err();
    assert!(err.to_string().contains("cannot listen"), "{err}");
    let err = demo_upstreams(&[("d", "not-an-addr")]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn fnv_known_vectors() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    let mut h = Fnv64::default();
    h.update(b"foo");
    h.update(b"bar");
    assert_eq!(h.value(), fnv1a64(b"foobar"));
    assert_eq!(checksum_hex(b"a"), "af63dc4c8601ec8c");
    assert_eq!(&pattern_bytes(28), b"abcdefghijklmnopqrstuvwxyzab");
}

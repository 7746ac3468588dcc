//! WebSocket through the gateway, end to end: the embedded runner (`gw_suite::gateway`) in front of a real
//! testkit upstream on `127.0.0.1:0`, clients over real TCP.
//!
//! Pingora 0.9.1 tears an upgraded HTTP/1 tunnel down right after the `101` when its upstream half reads
//! the `101` before it has consumed the upgrade request's own empty body from the body pipe
//! (cloudflare/pingora#946, fixes proposed in #947/#1016, none released). That can only happen when the
//! upstream socket becomes readable *while the proxy task is still inside the poll that wrote the
//! request* — which a work-stealing runtime allows (another worker drives the I/O driver and marks the
//! socket readable mid-poll), and a current-thread runtime never does (its driver runs only between
//! polls). The embedded runner therefore serves connections on gw's own current-thread runtimes, like
//! `gw serve`, whatever runtime the embedding program uses; see `docs/proxy.md` ("WebSocket").
//!
//! A pooled keep-alive upstream connection opened by another gateway thread's runtime can lose the same
//! race, so upgrades always open a fresh upstream connection (`gateway_core::upstream::tunnel`).
//!
//! Each test below makes 200 handshakes with an exchange each, no reconnects. Before the fixes: 40–52 of
//! 200 lost with the test (the embedding program) on a multi-thread runtime, 0 on a current-thread one;
//! with two gateway threads and pooled connections 9 of 200 (embedded) and 6–8 of 200 (Pingora server).

use gateway_testkit::{raw_request, ws_connect, SinkExt, StreamExt, Upstream, WsMessage};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Upper bound for any single client exchange in these tests.
const CALL_LIMIT: Duration = Duration::from_secs(10);

const HANDSHAKES: usize = 200;

const SVC_STRIP: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{UP}}" }]
routes:
  - name: svc
    match: { prefix: /api/svc }
    rewrite: { strip_prefix: true }
    upstream: svc
"#;

/// One fresh tunnel: handshake, then (optionally) the upstream's greeting, then one echoed message.
/// `Err` describes how the tunnel failed.
async fn one_tunnel(url: &str, i: usize, greeting: Option<&str>) -> Result<(), String> {
    let mut ws = ws_connect(url)
        .await
        .map_err(|e| format!("handshake {i}: {e}"))?;
    if let Some(g) = greeting {
        match ws.next().await {
            Some(Ok(m)) if m == WsMessage::text(g) => {}
            other => return Err(format!("greeting {i}: {other:?}")),
        }
    }
    let text = format!("m{i}");
    ws.send(WsMessage::text(text.clone()))
        .await
        .map_err(|e| format!("send {i}: {e}"))?;
    match ws.next().await {
        Some(Ok(m)) if m == WsMessage::text(text) => {}
        other => return Err(format!("echo {i}: {other:?}")),
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// Starts an upstream and the gateway, makes [`HANDSHAKES`] tunnels one after the other and returns the
/// failures.
async fn tunnels(greeting: Option<&str>) -> Vec<String> {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(SVC_STRIP, &[("UP", up.addr().to_string())]).await;
    let url = match greeting {
        None => format!("ws://{}/api/svc/ws", gw.addrs[0]),
        Some(g) => format!("ws://{}/api/svc/ws?greet={g}", gw.addrs[0]),
    };
    let mut failed = Vec::new();
    for i in 0..HANDSHAKES {
        match tokio::time::timeout(CALL_LIMIT, one_tunnel(&url, i, greeting)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(e),
            Err(_) => failed.push(format!("tunnel {i}: no answer within {CALL_LIMIT:?}")),
        }
    }
    failed
}

fn check(failed: Vec<String>) {
    assert!(
        failed.is_empty(),
        "{} of {HANDSHAKES} websocket tunnels failed, first: {:?}",
        failed.len(),
        failed.first()
    );
}

/// The embedding program runs a work-stealing runtime (the common `#[tokio::main]`): before the fix
/// 38–51 of 200 tunnels died after the 101.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnel_never_torn_down_after_101() {
    check(tunnels(None).await);
}

/// Same with four workers (more threads able to drive the I/O driver mid-poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_tunnel_never_torn_down_multi_thread_4_workers() {
    check(tunnels(None).await);
}

/// The embedding program runs a current-thread runtime.
#[tokio::test(flavor = "current_thread")]
async fn websocket_tunnel_never_torn_down_current_thread() {
    check(tunnels(None).await);
}

/// The upstream greets right after its 101 (101 and the first frame can arrive in one read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnel_with_upstream_greeting_after_101() {
    check(tunnels(Some("hello")).await);
}

/// A longer conversation on one upgraded connection — text and binary (70 kB), in order — with no
/// reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_gateway() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(SVC_STRIP, &[("UP", up.addr().to_string())]).await;
    let url = format!("ws://{}/api/svc/ws", gw.addrs[0]);

    let echoed = tokio::time::timeout(
        CALL_LIMIT,
        gateway_testkit::ws_echo(&url, "hello through gw"),
    )
    .await
    .expect("ws echo in time")
    .expect("ws echo through the gateway");
    assert_eq!(echoed, "hello through gw");

    let mut ws = tokio::time::timeout(CALL_LIMIT, ws_connect(&url))
        .await
        .expect("connect in time")
        .expect("websocket handshake through the gateway");
    let rec = up.last_request().expect("recorded");
    assert_eq!(rec.path, "/ws");
    assert_eq!(
        rec.header("upgrade").map(|v| v.to_ascii_lowercase()),
        Some("websocket".into())
    );
    let bin: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let msgs = vec![
        WsMessage::text("one"),
        WsMessage::binary(bin),
        WsMessage::text("three"),
    ];
    for m in &msgs {
        ws.send(m.clone()).await.expect("send");
    }
    for want in &msgs {
        let got = tokio::time::timeout(CALL_LIMIT, ws.next())
            .await
            .expect("reply in time")
            .expect("stream open")
            .expect("frame");
        assert_eq!(&got, want);
    }
    ws.close(None).await.expect("close");
}

/// Two gateway threads and plain requests between the handshakes: an upgrade request may find a pooled
/// keep-alive upstream connection opened by the other thread's runtime (before upgrades got fresh
/// connections: 9 of 200 lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnel_after_pooled_requests_two_gateway_threads() {
    let up = Upstream::start("svc").await;
    let cfg = format!("server: {{ threads: 2 }}\n{SVC_STRIP}");
    let gw = gw_suite::gateway(&cfg, &[("UP", up.addr().to_string())]).await;
    check(pooled_then_tunnels(&up, gw.addrs[0]).await);
}

/// The same through `gw serve`'s Pingora server (no-steal runtime, two threads), served in-process on
/// chosen ports (Pingora binds the configured addresses; the server runs until the test process exits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnel_through_pingora_server_two_threads() {
    let up = Upstream::start("svc").await;
    let port = serve_on_free_ports(&up).await;
    check(pooled_then_tunnels(&up, ([127, 0, 0, 1], port).into()).await);
}

/// Starts `serve_blocking` on free ports and waits for `/readyz`; returns the public port. A free port
/// can be taken by another socket before Pingora binds it (this binary opens thousands of connections),
/// so a start that fails to bind is retried on new ports.
async fn serve_on_free_ports(up: &Upstream) -> u16 {
    use gateway_testkit::redis::free_port;
    for _ in 0..5 {
        let (port, admin_port) = (free_port(), free_port());
        let cfg = format!(
            "server: {{ threads: 2 }}\nadmin: {{ address: \"127.0.0.1:{admin_port}\" }}\n{}",
            SVC_STRIP.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        );
        let plan = gw_suite::plan(&cfg, &[("UP", up.addr().to_string())]);
        let server = std::thread::spawn(move || gateway_core::proxy::server::serve_blocking(plan));
        let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = raw_request(
                admin,
                "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await
            .is_ok_and(|r| r.status == 200);
            if ready {
                return port;
            }
            if server.is_finished() {
                let r = server.join().expect("serve_blocking does not panic");
                eprintln!("gw serve did not start ({r:?}); new ports");
                break;
            }
            assert!(Instant::now() < end, "gw serve did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("gw serve did not start on 5 pairs of free ports");
}

/// [`HANDSHAKES`] tunnels, each after two plain requests on fresh client connections (so they land on
/// either gateway thread and leave pooled upstream connections behind).
async fn pooled_then_tunnels(up: &Upstream, gw: SocketAddr) -> Vec<String> {
    let url = format!("ws://{gw}/api/svc/ws");
    let http = format!("http://{gw}/api/svc/plain");
    let mut failed = Vec::new();
    for i in 0..HANDSHAKES {
        // fresh client connections, so they land on either gateway thread
        for _ in 0..2 {
            let r = tokio::time::timeout(CALL_LIMIT, gateway_testkit::get(&http))
                .await
                .expect("plain request in time")
                .expect("plain request");
            assert_eq!(r.status, 200);
        }
        match tokio::time::timeout(CALL_LIMIT, one_tunnel(&url, i, None)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(e),
            Err(_) => failed.push(format!("tunnel {i}: no answer within {CALL_LIMIT:?}")),
        }
    }
    eprintln!("upstream connections: {}", up.total_connections());
    failed
}

/// The embedded runner's own connection runtimes keep `stop()`'s promise: no new connections, but a
/// request in flight and an open tunnel finish on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_stop_lets_in_flight_requests_and_tunnels_finish() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(SVC_STRIP, &[("UP", up.addr().to_string())]).await;
    let mut ws = ws_connect(&format!("ws://{}/api/svc/ws", gw.addrs[0]))
        .await
        .expect("handshake");
    let slow_url = format!("{}/api/svc/delay/300", gw.url());
    let slow = tokio::spawn(async move { gateway_testkit::get(&slow_url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.stop();
    let r = tokio::time::timeout(CALL_LIMIT, slow)
        .await
        .expect("in time")
        .expect("task")
        .expect("the request in flight is answered");
    assert_eq!(r.status, 200);
    ws.send(WsMessage::text("after stop")).await.expect("send");
    let got = tokio::time::timeout(CALL_LIMIT, ws.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("frame");
    assert_eq!(got, WsMessage::text("after stop"));
    // and no new connection is served
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        gateway_testkit::get(&format!("{}/api/svc/x", gw.url())),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(ref r)) if r.status == 200),
        "a new request was served after stop()"
    );
}

//! Connection hardening against `gw serve` (a real process) with raw sockets: slowloris deadlines,
//! connection caps, request framing (RFC 9112), pipelining, SIGHUP, and the SIGTERM drain.
//! Issue 11, items 3, 5, 6, 7, 8.
use gateway_testkit::raw::{get, get_close, Raw};
use gateway_testkit::redis::free_port;
use gateway_testkit::Upstream;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// Starts `gw serve CFG` quietly. `GW_TEST_BIN` runs these tests against another build (e.g. the one
/// before a fix).
fn spawn_serve(cfg: &std::path::Path) -> Child {
    let bin = std::env::var("GW_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_gw").into());
    Command::new(bin)
        .arg("serve")
        .arg(cfg)
        .env("GW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gw serve")
}

struct Gw {
    child: Child,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gw {
    /// Starts `gw serve` on a config whose `{{PORT}}`/`{{ADMIN}}`/`{{UP}}` placeholders are filled in.
    fn start(tag: &str, yaml: &str, up: &Upstream) -> Gw {
        let dir = std::env::temp_dir().join(format!("gw-harden-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let port = free_port();
        let admin_port = free_port();
        let text = yaml
            .replace("{{PORT}}", &port.to_string())
            .replace("{{ADMIN}}", &admin_port.to_string())
            .replace("{{UP}}", &up.addr().to_string());
        let cfg = dir.join("gw.yaml");
        std::fs::write(&cfg, &text).expect("config");
        let child = spawn_serve(&cfg);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let admin = text
            .contains("admin:")
            .then(|| format!("127.0.0.1:{admin_port}").parse().expect("addr"));
        let gw = Gw { child, addr, admin };
        gw.wait_ready();
        gw
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = std::net::TcpStream::connect(self.addr) {
                let mut c = Raw::from_std(s);
                c.send(&get_close("/api/ready"));
                if c.response(Duration::from_secs(2))
                    .is_ok_and(|r| r.status == 200)
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "gw serve did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        // the shell's builtin kill: no dependency on procps
        let ok = Command::new("sh")
            .args(["-c", &format!("kill -{sig} {}", self.child.id())])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit; returns after how long (None: still running at `limit`).
    fn exited_within(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.child.try_wait().expect("wait").is_some() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn metrics(&self) -> String {
        let mut c = Raw::connect(self.admin.expect("admin listener"));
        c.send(&get_close("/metrics"));
        c.response(T).expect("metrics").text()
    }
}

fn config(server: &str) -> String {
    format!(
        "server: {server}\nlisteners: [{{ name: p, address: \"127.0.0.1:{{{{PORT}}}}\" }}]\nadmin: {{ address: \"127.0.0.1:{{{{ADMIN}}}}\" }}\nupstreams:\n  - {{ name: b, endpoints: [{{ address: \"{{{{UP}}}}\" }}] }}\nroutes:\n  - {{ name: r, match: {{ prefix: /api }}, rewrite: {{ strip_prefix: true }}, upstream: b }}\n"
    )
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Item 3: connections that send nothing, half a head, or one byte a second are all closed within
/// header_timeout (+ slack), from accept and, on a keep-alive connection, from the next head's first byte;
/// a normal client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_within_header_timeout() {
    let up = Upstream::start("slowloris").await;
    let gw = Gw::start(
        "slowloris",
        &config("{ downstream: { header_timeout: 2s, idle_timeout: 30s } }"),
        &up,
    );
    let addr = gw.addr;
    let drip = |mut c: Raw, text: &'static [u8]| {
        std::thread::spawn(move || {
            let start = Instant::now();
            for b in text.iter().cycle().take(12) {
                if !c.send(&[*b]) {
                    return Some(start.elapsed());
                }
                if c.closed_within(Duration::from_secs(1)).is_some() {
                    return Some(start.elapsed());
                }
            }
            None
        })
    };
    let mut threads = Vec::new();
    for _ in 0..5 {
        // nothing at all
        threads.push(std::thread::spawn(move || {
            Raw::connect(addr).closed_within(Duration::from_secs(12))
        }));
        // a partial head
        threads.push(std::thread::spawn(move || {
            let mut c = Raw::connect(addr);
            c.send(b"GET /api/x HTTP/1.1\r\nHost: gw.test\r\n");
            c.closed_within(Duration::from_secs(12))
        }));
        // one byte a second
        threads.push(drip(
            Raw::connect(addr),
            b"GET /api/drip HTTP/1.1\r\nX: 1\r\n",
        ));
    }
    // a keep-alive connection that dripped after a first complete request: timed from its first byte
    let keepalive = std::thread::spawn(move || {
        let mut c = Raw::connect(addr);
        c.send(&get("/api/first"));
        let r = c
            .response(T)
            .expect("first request on the keep-alive connection");
        assert_eq!(r.status, 200);
        std::thread::sleep(Duration::from_millis(2500));
        let start = Instant::now();
        for b in b"GET /api/second HTTP/1.1\r\n".iter() {
            if !c.send(&[*b]) || c.closed_within(Duration::from_secs(1)).is_some() {
                return Some(start.elapsed());
            }
        }
        None
    });
    // a normal client is served while they hang on
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ok = tokio::task::spawn_blocking(move || {
        let mut c = Raw::connect(addr);
        c.send(&get_close("/api/normal"));
        c.response(T).map(|r| r.status)
    })
    .await
    .expect("join");
    assert_eq!(ok.expect("normal request"), 200);
    for (i, t) in threads.into_iter().enumerate() {
        let closed = t.join().expect("join");
        let kind = ["silent", "partial head", "drip"][i % 3];
        let d = closed.unwrap_or_else(|| panic!("{kind} connection #{i} still open after 12 s"));
        assert!(
            d <= Duration::from_millis(4500),
            "{kind} connection #{i} closed only after {d:?} (header_timeout 2 s)"
        );
    }
    let d = keepalive
        .join()
        .expect("join")
        .expect("dripping keep-alive connection still open");
    assert!(
        d <= Duration::from_millis(4500),
        "keep-alive drip closed after {d:?}"
    );
    let m = gw.metrics();
    assert!(
        metric(&m, "gw_header_timeouts_total{listener=\"p\"}") >= 16,
        "header timeouts counted:\n{m}"
    );
}

async fn connect_from(src: &str, addr: SocketAddr) -> Raw {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.bind(format!("{src}:0").parse().expect("src"))
        .expect("bind");
    let t = s.connect(addr).await.expect("connect");
    let std = t.into_std().expect("std");
    std.set_nonblocking(false).expect("blocking");
    Raw::from_std(std)
}

/// Item 3: connections beyond `max_connections` (per listener) and `max_connections_per_ip` are closed
/// at once and counted; freeing a slot lets a new connection in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_caps_are_closed_and_counted() {
    let up = Upstream::start("caps").await;
    let gw = Gw::start(
        "caps",
        &config("{ downstream: { header_timeout: 20s, max_connections: 4, max_connections_per_ip: 2 } }"),
        &up,
    );
    let addr = gw.addr;
    // two from 127.0.0.1 fill that address's share
    let mut a1 = Raw::connect(addr);
    let mut a2 = Raw::connect(addr);
    a1.send(b"G");
    a2.send(b"G");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut a3 = Raw::connect(addr);
    let closed = tokio::task::spawn_blocking(move || a3.closed_within(Duration::from_secs(3)))
        .await
        .expect("join");
    assert!(closed.is_some(), "a third connection from one IP is closed");
    // other client addresses still get in, up to the listener cap of 4
    let mut b1 = connect_from("127.0.0.2", addr).await;
    let mut b2 = connect_from("127.0.0.3", addr).await;
    b1.send(b"G");
    b2.send(b"G");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = connect_from("127.0.0.4", addr).await;
    let closed = tokio::task::spawn_blocking(move || c.closed_within(Duration::from_secs(3)))
        .await
        .expect("join");
    assert!(
        closed.is_some(),
        "a fifth connection on the listener is closed"
    );
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            "gw_connections_rejected_total{listener=\"p\",reason=\"per_ip_cap\"}"
        ),
        1,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "gw_connections_rejected_total{listener=\"p\",reason=\"listener_cap\"}"
        ),
        1,
        "{m}"
    );
    // the held connections still work, and a freed slot admits a new client
    let r = tokio::task::spawn_blocking(move || {
        a1.send(b"ET /api/held HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let r = a1.response(T).map(|r| r.status);
        drop(a1);
        std::thread::sleep(Duration::from_millis(200));
        let mut n = Raw::connect(addr);
        n.send(&get_close("/api/new"));
        (r, n.response(T).map(|r| r.status))
    })
    .await
    .expect("join");
    assert_eq!(r.0.expect("held"), 200);
    assert_eq!(r.1.expect("after a slot was freed"), 200);
    drop((a2, b1, b2));
}

/// Item 8: three requests written at once on one connection are answered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start("pipeline").await;
    let gw = Gw::start("pipeline", &config("{}"), &up);
    let addr = gw.addr;
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::connect(addr);
        let mut all = get("/api/one");
        all.extend(b"POST /api/two HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhello");
        all.extend(get_close("/api/three"));
        c.send(&all);
        let mut paths = Vec::new();
        for i in 0..3 {
            let r = c
                .response(T)
                .unwrap_or_else(|e| panic!("response {} of 3: {e}", i + 1));
            assert_eq!(r.status, 200, "{}", r.text());
            paths.push(r.json()["path"].as_str().unwrap_or_default().to_string());
        }
        assert_eq!(paths, ["/one", "/two", "/three"]);
        assert!(
            c.closed_within(T).is_some(),
            "closed after Connection: close"
        );
    })
    .await
    .expect("pipelining");
    // the same with the second request arriving while the first is still being answered
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::connect(addr);
        c.send(&get("/api/delay/300"));
        std::thread::sleep(Duration::from_millis(100));
        c.send(&[get("/api/a"), get_close("/api/b")].concat());
        let got: Vec<u16> = (0..3)
            .map(|i| {
                c.response(T)
                    .unwrap_or_else(|e| panic!("response {}: {e}", i + 1))
                    .status
            })
            .collect();
        assert_eq!(got, [200, 200, 200]);
    })
    .await
    .expect("pipelining while busy");
}

/// Item 6: SIGHUP neither kills nor disturbs `gw serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_does_not_kill_gw_serve() {
    let up = Upstream::start("hup").await;
    let mut gw = Gw::start("hup", &config("{}"), &up);
    for _ in 0..3 {
        gw.signal("HUP");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        gw.exited_within(Duration::from_millis(500)).is_none(),
        "SIGHUP killed gw serve"
    );
    let addr = gw.addr;
    let status = tokio::task::spawn_blocking(move || {
        let mut c = Raw::connect(addr);
        c.send(&get_close("/api/after-hup"));
        c.response(T).map(|r| r.status)
    })
    .await
    .expect("join");
    assert_eq!(status.expect("served after SIGHUP"), 200);
}

/// Item 7: during the SIGTERM drain idle keep-alive connections are closed at once, requests in flight and
/// requests whose head was arriving are answered with `Connection: close`, and the process exits as soon
/// as the last connection is done (well before the 10 s grace period).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drain_answers_received_requests_and_closes_idle_connections() {
    let up = Upstream::start("drain").await;
    let mut gw = Gw::start("drain", &config("{ grace_period: 10s }"), &up);
    let addr = gw.addr;
    let open_keepalive = move || {
        let mut c = Raw::connect(addr);
        c.send(&get("/api/warm"));
        let r = c.response(T).expect("warm-up");
        assert_eq!(r.status, 200);
        assert!(!r.closes());
        c
    };
    let mut idle: Vec<Raw> = (0..4).map(|_| open_keepalive()).collect();
    let mut busy: Vec<Raw> = (0..4).map(|_| open_keepalive()).collect();
    let mut arriving: Vec<Raw> = (0..4).map(|_| open_keepalive()).collect();
    for c in &mut busy {
        c.send(&get("/api/delay/1500"));
    }
    for c in &mut arriving {
        c.send(b"GET /api/late HTTP/1.1\r\nHost: gw.test\r\n");
    }
    std::thread::sleep(Duration::from_millis(300));
    let term = Instant::now();
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    for c in &mut arriving {
        assert!(
            c.send(b"X-Late: 1\r\n\r\n"),
            "connection with a head on the way was closed"
        );
    }
    let mut handles = Vec::new();
    for (kind, conns) in [("busy", busy), ("arriving", arriving)] {
        for mut c in conns {
            handles.push(std::thread::spawn(move || {
                let r = c
                    .response(T)
                    .unwrap_or_else(|e| panic!("{kind} request lost in the drain: {e}"));
                assert_eq!(r.status, 200, "{kind}: {}", r.text());
                assert!(
                    r.closes(),
                    "{kind}: drain response without Connection: close: {r:?}"
                );
                assert!(c.closed_within(T).is_some(), "{kind}: connection left open");
            }));
        }
    }
    for c in &mut idle {
        let d = c.closed_within(Duration::from_secs(3));
        assert!(
            d.is_some(),
            "an idle keep-alive connection is closed when the drain starts"
        );
        assert!(
            c.pending().is_empty(),
            "nothing is sent on an idle connection"
        );
    }
    for h in handles {
        h.join().expect("drain client");
    }
    let exited = gw
        .exited_within(Duration::from_secs(15))
        .map(|_| term.elapsed())
        .expect("gw serve did not exit");
    assert!(
        exited < Duration::from_secs(5),
        "exit {exited:?} after SIGTERM: the drain was over after ~1.5 s; the grace period is 10 s"
    );
}

/// Item 7: an idle gateway exits at once on SIGTERM instead of sleeping the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_gateway_exits_at_once_on_sigterm() {
    let up = Upstream::start("idle-exit").await;
    let mut gw = Gw::start("idle-exit", &config("{ grace_period: 10s }"), &up);
    let start = Instant::now();
    gw.signal("TERM");
    let d = gw
        .exited_within(Duration::from_secs(15))
        .expect("gw serve did not exit");
    assert!(
        d < Duration::from_secs(2),
        "an idle gateway took {:?} to exit (grace period 10 s)",
        start.elapsed()
    );
}

/// Item 5: request framing by RFC 9112 over raw sockets: every bad head gets its status and the
/// connection closes (the request written after it is never processed); repeated identical
/// Content-Length lines reach the upstream as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_framing_follows_rfc_9112() {
    let up = Upstream::start("framing").await;
    let gw = Gw::start("framing", &config("{}"), &up);
    let addr = gw.addr;
    let cases: Vec<(&str, &[u8], u16)> = vec![
        (
            "TE and CL",
            b"POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        ("no Host in HTTP/1.1", b"GET /api/x HTTP/1.1\r\n\r\n", 400),
        ("two Host lines", b"GET /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("invalid Host", b"GET /api/x HTTP/1.1\r\nHost: a b@c\r\n\r\n", 400),
        (
            "differing CL",
            b"POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            400,
        ),
        ("CL with sign", b"POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: +5\r\n\r\nhello", 400),
        ("CL list that differs", b"POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5, 6\r\n\r\nhello", 400),
        ("TE gzip", b"POST /api/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("TE chunked twice", b"POST /api/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("TE gzip, chunked", b"POST /api/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ("TE in HTTP/1.0", b"POST /api/x HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("obs-fold", b"GET /api/x HTTP/1.1\r\nHost: gw.test\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
        ("space before colon", b"GET /api/x HTTP/1.1\r\nHost : gw.test\r\n\r\n", 400),
    ];
    let before = up.hits();
    for (name, head, status) in cases {
        let got = tokio::task::spawn_blocking(move || {
            let mut c = Raw::connect(addr);
            // a second, valid request right behind: it must not be processed
            c.send(&[head, &get("/api/smuggled")[..]].concat());
            let r = c.response(T).map_err(|e| format!("{name}: {e}"))?;
            let closed = c.closed_within(Duration::from_secs(3)).is_some();
            let extra = c.response(Duration::from_millis(50)).ok().map(|r| r.status);
            Ok::<_, String>((r.status, r.closes(), closed, extra))
        })
        .await
        .expect("join")
        .expect("response");
        assert_eq!(got.0, status, "{name}");
        assert!(got.1, "{name}: the refusal says Connection: close");
        assert!(got.2, "{name}: the connection is closed");
        assert_eq!(got.3, None, "{name}: the request behind it was answered");
    }
    assert_eq!(
        up.hits(),
        before,
        "no refused or smuggled request reached the upstream"
    );
    // two identical Content-Length lines: forwarded as one
    let v = tokio::task::spawn_blocking(move || {
        let mut c = Raw::connect(addr);
        c.send(b"POST /api/cl HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
        c.response(T).expect("response")
    })
    .await
    .expect("join");
    assert_eq!(v.status, 200, "{}", v.text());
    let j = v.json();
    assert_eq!(j["headers"]["content-length"], "5", "{j}");
    assert_eq!(j["body_len"], 5, "{j}");
}

/// Item 3 on a TLS listener: a TLS handshake that never starts or stalls halfway is closed within
/// header_timeout (Pingora alone allows 60 s), while HTTPS clients are served (HTTP/1.1 and HTTP/2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_are_bounded_by_header_timeout() {
    let up = Upstream::start("tls-slow").await;
    let dir = std::env::temp_dir().join(format!("gw-harden-tls-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("cert");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("key");
    let yaml = format!(
        "server: {{ downstream: {{ header_timeout: 2s, idle_timeout: 2s }} }}\nlisteners: [{{ name: p, address: \"127.0.0.1:{{{{PORT}}}}\", tls: {{ cert: {}, key: {} }} }}]\nupstreams:\n  - {{ name: b, endpoints: [{{ address: \"{{{{UP}}}}\" }}] }}\nroutes:\n  - {{ name: r, match: {{ prefix: /api }}, rewrite: {{ strip_prefix: true }}, upstream: b }}\n",
        cert.display(),
        key.display()
    );
    let dir2 = std::env::temp_dir().join(format!("gw-harden-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir2).expect("tmp dir");
    let port = free_port();
    let cfg = dir2.join("gw.yaml");
    std::fs::write(
        &cfg,
        yaml.replace("{{PORT}}", &port.to_string())
            .replace("{{UP}}", &up.addr().to_string()),
    )
    .expect("config");
    let child = spawn_serve(&cfg);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let _gw = Gw {
        child,
        addr,
        admin: None,
    };
    let root = reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).expect("root");
    let client = |h1: bool| {
        let b = reqwest::Client::builder().add_root_certificate(root.clone());
        let b = if h1 { b.http1_only() } else { b };
        b.build().expect("client")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while client(true)
        .get(format!("https://localhost:{port}/api/up"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "gw serve (TLS) did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let silent =
        std::thread::spawn(move || Raw::connect(addr).closed_within(Duration::from_secs(8)));
    let partial = std::thread::spawn(move || {
        let mut c = Raw::connect(addr);
        // the start of a ClientHello record, then nothing
        c.send(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
        c.closed_within(Duration::from_secs(8))
    });
    for (v, h1) in [
        (reqwest::Version::HTTP_11, true),
        (reqwest::Version::HTTP_2, false),
    ] {
        let r = client(h1)
            .get(format!("https://localhost:{port}/api/ok"))
            .send()
            .await
            .expect("HTTPS request");
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), v);
        let j: serde_json::Value = r.json().await.expect("json");
        assert_eq!(j["headers"]["x-forwarded-proto"], "https");
    }
    // HTTP/2 (ALPN h2): a client that never sends its preface, and one that goes idle after it
    let h2_silent = h2_connect(addr, ck.cert.der()).await;
    let mut h2_idle = h2_connect(addr, ck.cert.der()).await;
    let silent_h2 =
        tokio::spawn(async move { closed_within(h2_silent, Duration::from_secs(8)).await });
    use tokio::io::AsyncWriteExt;
    h2_idle
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let idle_h2 = tokio::spawn(async move { closed_within(h2_idle, Duration::from_secs(8)).await });
    for (name, d) in [
        ("h2 without preface", silent_h2.await.expect("join")),
        ("idle h2 connection", idle_h2.await.expect("join")),
    ] {
        let d = d.unwrap_or_else(|| panic!("{name}: still open after 8 s"));
        assert!(
            d <= Duration::from_millis(4500),
            "{name}: closed after {d:?}"
        );
    }
    for (name, t) in [("silent", silent), ("partial ClientHello", partial)] {
        let d = t
            .join()
            .expect("join")
            .unwrap_or_else(|| panic!("{name} TLS connection still open after 8 s"));
        assert!(
            d <= Duration::from_millis(4500),
            "{name}: closed after {d:?}"
        );
    }
}

type TlsClient = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `localhost` offering only ALPN `h2`, trusting `root`.
async fn h2_connect(addr: SocketAddr, root: &[u8]) -> TlsClient {
    use tokio_rustls::rustls;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(root.to_vec()))
        .expect("root");
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// Reads (and drops) whatever the server sends until it closes; how long that took, or None at `limit`.
async fn closed_within(mut s: TlsClient, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

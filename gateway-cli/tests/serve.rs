//! `gw serve` as a subprocess: TLS with HTTP/2 via ALPN, graceful SIGTERM with a request in flight, and a
//! clear error (not a panic) when a listen address is taken.
use gateway_testkit::redis::free_port;
use gateway_testkit::wait::Wait;
use gateway_testkit::Upstream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Gw(Child);

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gw-serve-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

fn spawn(cfg: &std::path::Path) -> Gw {
    let child = Command::new(env!("CARGO_BIN_EXE_gw"))
        .arg("serve")
        .arg(cfg)
        .env("GW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gw serve");
    Gw(child)
}

fn wait_port(port: u16) {
    Wait::new(
        format!("gw serve listening on {port}"),
        Duration::from_secs(15),
    )
    .every(Duration::from_millis(50))
    .until_blocking(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_speaks_http2() {
    let up = Upstream::start("tls-backend").await;
    let dir = tmpdir("tls");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).expect("key");
    let port = free_port();
    let cfg = dir.join("gw.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listeners:\n  - name: tls\n    address: 127.0.0.1:{port}\n    tls: {{ cert: cert.pem, key: key.pem }}\nupstreams:\n  - {{ name: b, endpoints: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: r, match: {{ prefix: /api }}, rewrite: {{ strip_prefix: true }}, upstream: b }}\n",
            up.addr()
        ),
    )
    .expect("config");
    let _gw = spawn(&cfg);
    wait_port(port);
    let root = reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).expect("root");
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .expect("client");
    let (status, version, _, body) = Wait::new("a TLS response", Duration::from_secs(10))
        .every(Duration::from_millis(100))
        .poll(|| async {
            let r = client
                .get(format!("https://localhost:{port}/api/hello"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((
                r.status().as_u16(),
                r.version(),
                r.headers().get("x-forwarded-proto").cloned(),
                r.text().await.unwrap_or_default(),
            ))
        })
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(version, reqwest::Version::HTTP_2, "ALPN must negotiate h2");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let up = Upstream::start("slow").await;
    let dir = tmpdir("term");
    let port = free_port();
    let cfg = dir.join("gw.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server: {{ grace_period: 5s }}\nlisteners: [{{ name: p, address: \"127.0.0.1:{port}\" }}]\nupstreams:\n  - {{ name: b, endpoints: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: r, match: {{ prefix: / }}, upstream: b }}\n",
            up.addr()
        ),
    )
    .expect("config");
    let mut gw = spawn(&cfg);
    wait_port(port);
    let url = format!("http://127.0.0.1:{port}/delay/1500");
    let req = tokio::spawn(async move { gateway_testkit::get(&url).await.map(|r| r.status) });
    // let the request reach the upstream, then ask the gateway to stop
    Wait::new("the request reached the upstream", Duration::from_secs(5))
        .every(Duration::from_millis(20))
        .until(|| up.in_flight() > 0)
        .await;
    let pid = gw.0.id().to_string();
    // the shell's builtin kill: no dependency on procps
    assert!(Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .expect("kill")
        .success());
    let status = tokio::time::timeout(Duration::from_secs(10), req)
        .await
        .expect("in-flight request finished")
        .expect("join")
        .expect("response");
    assert_eq!(
        status, 200,
        "the in-flight request completes during the grace period"
    );
    let st = Wait::new("gw to exit after SIGTERM", Duration::from_secs(12))
        .every(Duration::from_millis(50))
        .poll_blocking(|| gw.0.try_wait().expect("wait").ok_or("still running"));
    assert!(st.success() || st.code().is_none(), "gw exited with {st:?}");
}

#[test]
fn address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tmpdir("inuse");
    let cfg = dir.join("gw.yaml");
    std::fs::write(
        &cfg,
        format!("listeners: [{{ name: p, address: \"127.0.0.1:{port}\" }}]\nupstreams:\n  - {{ name: b, endpoints: [{{ address: \"127.0.0.1:9\" }}] }}\nroutes:\n  - {{ name: r, match: {{ prefix: / }}, upstream: b }}\n"),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_gw"))
        .arg("serve")
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot bind 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

//! `gw serve` (a real process) with Consul (the testkit double) and file discovery: endpoints come from
//! the sources and follow their changes; `gw validate` accepts the configuration without warnings.
use gateway_testkit::consul::{ConsulDouble, Instance};
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

async fn answer_from(url: &str) -> Option<String> {
    let r = tokio::time::timeout(Duration::from_secs(3), gateway_testkit::get(url))
        .await
        .ok()?
        .ok()?;
    (r.status == 200).then(|| {
        r.headers
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_endpoints_from_consul_and_a_file() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let f = Upstream::start("f").await;
    let consul = ConsulDouble::start().await.unwrap();
    consul.register(Instance::new("a", "api", "127.0.0.1", a.addr().port()));
    let dir = std::env::temp_dir().join(format!("gw-serve-discovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("eps.txt"), format!("{}\n", f.addr())).unwrap();
    let port = free_port();
    let cfg = dir.join("gw.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listeners: [{{name: p, address: \"127.0.0.1:{port}\"}}]\nupstreams:\n  - name: api\n    discovery: {{type: consul, url: \"{}\", service: api, wait: 30s}}\n  - name: files\n    discovery: {{type: file, path: eps.txt}}\nroutes:\n  - {{name: api, match: {{prefix: /api}}, upstream: api}}\n  - {{name: files, match: {{prefix: /files}}, upstream: files}}\n",
            consul.url()
        ),
    )
    .unwrap();
    let v = Command::new(env!("CARGO_BIN_EXE_gw"))
        .args(["validate", "--deny-warnings"])
        .arg(&cfg)
        .output()
        .expect("gw validate");
    assert!(
        v.status.success(),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let _gw = Gw(Command::new(env!("CARGO_BIN_EXE_gw"))
        .arg("serve")
        .arg(&cfg)
        .env("GW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gw serve"));
    let base = format!("http://127.0.0.1:{port}");
    let api = format!("{base}/api/x");
    let files = format!("{base}/files/x");
    Wait::new("api answered by a", Duration::from_secs(15))
        .every(Duration::from_millis(50))
        .poll(|| async {
            (answer_from(&api).await.as_deref() == Some("a"))
                .then_some(())
                .ok_or("not yet")
        })
        .await;
    assert_eq!(answer_from(&files).await.as_deref(), Some("f"));
    consul.register(Instance::new("b", "api", "127.0.0.1", b.addr().port()));
    consul.deregister("a");
    Wait::new("api answered by b", Duration::from_secs(10))
        .every(Duration::from_millis(50))
        .poll(|| async {
            (answer_from(&api).await.as_deref() == Some("b"))
                .then_some(())
                .ok_or("not yet")
        })
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

//! `gw upstreams`, `gw register`, `gw deregister` against a real `gw serve` process, and
//! `admin.state_file`: registrations survive a restart (even a SIGKILL); a corrupt state file stops
//! the start with a clear error.
use gateway_testkit::redis::free_port;
use gateway_testkit::wait::Wait;
use gateway_testkit::Upstream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const TOKEN: &str = "cli-registration-token-0123456789";

struct Gw(Child);

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gw"))
        .args(args)
        .env("GW_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run gw")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn serve(cfg: &Path) -> Gw {
    Gw(Command::new(env!("CARGO_BIN_EXE_gw"))
        .arg("serve")
        .arg(cfg)
        .env("GW_ADMIN_TOKEN", TOKEN)
        .env("GW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gw serve"))
}

async fn wait_ready(admin: &str) {
    let url = format!("{admin}/readyz");
    Wait::new("gw serve ready", Duration::from_secs(15))
        .every(Duration::from_millis(50))
        .poll(|| async {
            match gateway_testkit::get(&url).await {
                Ok(r) if r.status == 200 => Ok(()),
                _ => Err("not ready"),
            }
        })
        .await;
}

/// `gw upstreams --format json`: the endpoints of `svc` as (address, source, weight).
fn listed(cfg: &str) -> Vec<(String, String, u64)> {
    let o = gw(&["upstreams", "--config", cfg, "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let svc = v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "svc")
        .unwrap()
        .clone();
    svc["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().to_string(),
                e["source"].as_str().unwrap().to_string(),
                e["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn hits_b(url: &str, b: &Upstream) {
    let before = b.hits();
    for _ in 0..12 {
        let r = gateway_testkit::get(url).await.expect("request");
        assert_eq!(r.status, 200);
    }
    assert!(b.hits() > before, "the registered endpoint got no traffic");
}

fn setup(name: &str, a: &Upstream) -> (TempDir, PathBuf, u16, u16) {
    let dir = std::env::temp_dir().join(format!("gw-registration-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let cfg = dir.join("gw.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"listeners: [{{name: p, address: "127.0.0.1:{port}"}}]
admin: {{address: "127.0.0.1:{admin_port}", token: "${{GW_ADMIN_TOKEN}}", state_file: state.json}}
upstreams:
  - name: svc
    endpoints: [{{address: "{}"}}]
    health_check: {{path: /health, interval: 200ms, timeout: 150ms}}
routes: [{{name: svc, match: {{prefix: /svc}}, upstream: svc}}]
"#,
            a.addr()
        ),
    )
    .unwrap();
    (TempDir(dir), cfg, port, admin_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_registers_lists_and_deregisters_and_the_state_file_survives_a_restart() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (dir, cfg, port, admin_port) = setup("cli", &a);
    let cfg_s = cfg.to_str().unwrap();
    let v = gw(&["validate", "--deny-warnings", cfg_s]);
    assert!(v.status.success(), "{}", text(&v));
    let admin = format!("http://127.0.0.1:{admin_port}");
    let url = format!("http://127.0.0.1:{port}/svc/x");
    let baddr = b.addr().to_string();
    let aaddr = a.addr().to_string();

    let mut server = serve(&cfg);
    wait_ready(&admin).await;

    // register (address and token from the configuration and GW_ADMIN_TOKEN)
    let o = gw(&[
        "register", "svc", &baddr, "--weight", "3", "--config", cfg_s,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("registered {baddr} in svc (weight 3, healthy")),
        "{out}"
    );
    hits_b(&url, &b).await;
    let mut want = vec![
        (aaddr.clone(), "static".to_string(), 1),
        (baddr.clone(), "admin".to_string(), 3),
    ];
    want.sort();
    let mut got = listed(cfg_s);
    got.sort();
    assert_eq!(got, want);
    // human output, with --admin and --token
    let o = gw(&["upstreams", "--admin", &admin, "--token", TOKEN]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("svc\n"), "{out}");
    assert!(
        out.contains(&baddr) && out.contains("admin") && out.contains("healthy"),
        "{out}"
    );

    // rejected calls exit 1 with the gateway's reason
    for (args, says) in [
        (
            vec!["register", "svc", baddr.as_str(), "--config", cfg_s],
            "409 conflict",
        ),
        (
            vec!["register", "nope", baddr.as_str(), "--config", cfg_s],
            "404 not_found",
        ),
        (
            vec!["register", "svc", "127.0.0.1:99999", "--config", cfg_s],
            "400 bad_request",
        ),
        (
            vec!["deregister", "svc", aaddr.as_str(), "--config", cfg_s],
            "404 not_found",
        ),
        (
            vec![
                "upstreams",
                "--admin",
                admin.as_str(),
                "--token",
                "wrong-token-wrong-token",
            ],
            "401 unauthorized",
        ),
    ] {
        let o = gw(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(says),
            "{args:?}: {}",
            text(&o)
        );
    }
    // unreachable: exit 2
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let o = gw(&["upstreams", "--admin", &nobody]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the admin API"));

    // the state file has the registration; a hard kill and a restart bring it back
    let state = std::fs::read_to_string(dir.0.join("state.json")).unwrap();
    assert!(state.contains(&baddr), "{state}");
    drop(server);
    server = serve(&cfg);
    wait_ready(&admin).await;
    let mut got = listed(cfg_s);
    got.sort();
    assert_eq!(got, want, "registrations are back after the restart");
    hits_b(&url, &b).await;

    // deregister: gone from the listing, the state file and the traffic
    let o = gw(&[
        "deregister",
        "svc",
        &baddr,
        "--config",
        cfg_s,
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["deregistered"], true);
    assert_eq!(
        listed(cfg_s),
        vec![(aaddr.clone(), "static".to_string(), 1)]
    );
    let state = std::fs::read_to_string(dir.0.join("state.json")).unwrap();
    assert!(!state.contains(&baddr), "{state}");
    let before = b.hits();
    for _ in 0..6 {
        assert_eq!(gateway_testkit::get(&url).await.unwrap().status, 200);
    }
    assert_eq!(b.hits(), before);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_stops_the_start_with_a_clear_error() {
    let a = Upstream::start("a").await;
    let (dir, cfg, _, _) = setup("corrupt", &a);
    std::fs::write(
        dir.0.join("state.json"),
        "{\"version\": 1, \"registrations\": [",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_gw"))
        .arg("serve")
        .arg(&cfg)
        .env("GW_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("gw serve");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("admin.state_file")
            && err.contains("state.json")
            && err.contains("not a gw state file"),
        "{err}"
    );
}

//! Hot reload of `gw serve` as a subprocess: `SIGHUP` with a broken and a good file, the file
//! watch, TLS certificates replaced on disk, and the exit codes of `gw reload`.
use gateway_testkit::redis::free_port;
use gateway_testkit::wait::Wait;
use gateway_testkit::Upstream;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "reload-cli-token-0123456789";

/// A `gw serve` child whose stderr lines are collected.
struct Gw {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gw {
    fn spawn(cfg: &Path) -> Gw {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gw"))
            .arg("serve")
            .arg(cfg)
            .env("GW_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gw serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().expect("log").push(line);
            }
        });
        Gw { child, log }
    }

    fn lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    async fn wait_log(&self, needle: &str) {
        Wait::new(format!("log line with {needle:?}"), Duration::from_secs(15))
            .every(Duration::from_millis(50))
            .until(|| !self.lines(needle).is_empty())
            .await;
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id();
        assert!(Command::new("sh")
            .args(["-c", &format!("kill -{sig} {pid}")])
            .status()
            .expect("kill")
            .success());
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gw-reload-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

fn config(port: u16, admin: u16, up: &Upstream, prefix: &str, extra: &str) -> String {
    format!(
        "{extra}listeners: [{{ name: p, address: \"127.0.0.1:{port}\" }}]\nadmin: {{ address: \"127.0.0.1:{admin}\", token: \"{TOKEN}\" }}\nupstreams:\n  - {{ name: b, endpoints: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: r, match: {{ prefix: {prefix} }}, upstream: b }}\n",
        up.addr()
    )
}

/// Line 7 names an upstream that does not exist.
const BROKEN_LINE: usize = 7;
fn broken(port: u16, admin: u16, up: &Upstream) -> String {
    let mut c = config(port, admin, up, "/old", "");
    c.push_str("  - { name: lost, match: { prefix: /lost }, upstream: nowhere }\n");
    assert_eq!(c.lines().count(), BROKEN_LINE);
    c
}

async fn status(url: &str) -> Option<u16> {
    gateway_testkit::get(url)
        .await
        .ok()
        .map(|r| r.status.as_u16())
}

async fn wait_status(url: &str, want: u16) {
    Wait::new(format!("{url} answers {want}"), Duration::from_secs(15))
        .every(Duration::from_millis(50))
        .until_async(|| async { status(url).await == Some(want) })
        .await;
}

/// `SIGHUP` with a broken file: the process lives, the old configuration serves, and one log line
/// names file:line:col. `SIGHUP` with a good file: the new route is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rejects_a_broken_file_and_applies_a_good_one() {
    let up = Upstream::start("b").await;
    let (port, admin) = (free_port(), free_port());
    let dir = tmpdir("hup");
    let cfg = dir.join("gw.yaml");
    std::fs::write(&cfg, config(port, admin, &up, "/old", "")).expect("write");
    let mut gw = Gw::spawn(&cfg);
    gw.wait_log("SIGHUP reloads the configuration file").await;
    let base = format!("http://127.0.0.1:{port}");
    wait_status(&format!("{base}/old"), 200).await;

    std::fs::write(&cfg, broken(port, admin, &up)).expect("write");
    gw.signal("HUP");
    let at = format!("{}:{BROKEN_LINE}:", cfg.display());
    gw.wait_log(&at).await;
    let lines = gw.lines(&at);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("config reload rejected"), "{lines:?}");
    assert!(lines[0].contains("nowhere"), "{lines:?}");
    assert!(gw.alive(), "SIGHUP must not end the process");
    assert_eq!(
        status(&format!("{base}/old")).await,
        Some(200),
        "old config serves"
    );
    assert_eq!(status(&format!("{base}/lost")).await, Some(404));

    std::fs::write(&cfg, config(port, admin, &up, "/new", "")).expect("write");
    gw.signal("HUP");
    wait_status(&format!("{base}/new"), 200).await;
    assert_eq!(status(&format!("{base}/old")).await, Some(404));
    gw.wait_log("config reloaded from").await;
    let applied = gw.lines("config reloaded from");
    assert!(applied[0].contains("routes +0 -0 ~1 ~r"), "{applied:?}");
    assert!(gw.alive());
    let m = gateway_testkit::get(&format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("metrics")
        .text();
    let m = gateway_testkit::prom::Scrape::parse(&m);
    assert_eq!(
        m.get("gw_config_reloads_total", &[("result", "applied")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("gw_config_reloads_total", &[("result", "rejected")]),
        Some(1.0)
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn gw_reload(admin: &str, token: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gw"))
        .args([
            "reload",
            "--admin",
            admin,
            "--token",
            token,
            "--timeout",
            "10s",
        ])
        .output()
        .expect("run gw reload");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `gw reload`: 0 applied, 1 rejected (broken file, wrong token), 2 unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gw_reload_exit_codes() {
    let up = Upstream::start("b").await;
    let (port, admin) = (free_port(), free_port());
    let dir = tmpdir("cli");
    let cfg = dir.join("gw.yaml");
    std::fs::write(&cfg, config(port, admin, &up, "/old", "")).expect("write");
    let _gw = Gw::spawn(&cfg);
    let base = format!("http://127.0.0.1:{port}");
    wait_status(&format!("{base}/old"), 200).await;
    let admin_url = format!("http://127.0.0.1:{admin}");

    std::fs::write(&cfg, config(port, admin, &up, "/new", "")).expect("write");
    let (code, out, err) = tokio::task::block_in_place(|| gw_reload(&admin_url, TOKEN));
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["result"], "applied");
    assert_eq!(v["summary"]["routes"]["changed"], serde_json::json!(["r"]));
    assert_eq!(status(&format!("{base}/new")).await, Some(200));

    std::fs::write(&cfg, broken(port, admin, &up)).expect("write");
    let (code, out, err) = tokio::task::block_in_place(|| gw_reload(&admin_url, TOKEN));
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["error"], "invalid_config");
    assert_eq!(v["diagnostics"][0]["line"], BROKEN_LINE);
    assert!(
        err.contains(&format!("{}:{BROKEN_LINE}:", cfg.display())),
        "{err}"
    );
    assert_eq!(
        status(&format!("{base}/new")).await,
        Some(200),
        "still serving"
    );

    let (code, out, err) = tokio::task::block_in_place(|| gw_reload(&admin_url, "wrong-token"));
    assert_eq!(code, 1, "{out}{err}");

    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (code, out, err) = tokio::task::block_in_place(|| gw_reload(&nobody, TOKEN));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("cannot reach"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `server.reload.watch`: a file replaced by write-and-rename is applied once; a broken file is
/// rejected (logged with file:line:col) and never applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_applies_a_renamed_file_and_never_a_broken_one() {
    let up = Upstream::start("b").await;
    let (port, admin) = (free_port(), free_port());
    let dir = tmpdir("watch");
    let cfg = dir.join("gw.yaml");
    let extra = "server: { reload: { watch: true, debounce: 200ms } }\n";
    std::fs::write(&cfg, config(port, admin, &up, "/old", extra)).expect("write");
    let gw = Gw::spawn(&cfg);
    gw.wait_log("watching the configuration file").await;
    let base = format!("http://127.0.0.1:{port}");
    wait_status(&format!("{base}/old"), 200).await;

    // an editor's save: write a temporary file, rename it over the configuration
    let tmp = dir.join(".gw.yaml.swp");
    std::fs::write(&tmp, config(port, admin, &up, "/new", extra)).expect("write");
    std::fs::rename(&tmp, &cfg).expect("rename");
    wait_status(&format!("{base}/new"), 200).await;
    gw.wait_log("config reloaded from").await;

    // a broken file (written in two steps, the first of which is also broken YAML)
    let text = broken(port, admin, &up).replace("listeners:", &format!("{extra}listeners:"));
    let (head, _) = text.split_at(text.len() / 2);
    std::fs::write(&cfg, head).expect("write");
    std::fs::write(&cfg, &text).expect("write");
    gw.wait_log("config reload rejected").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rejected = gw.lines("config reload rejected");
    assert_eq!(
        rejected.len(),
        1,
        "one debounced read of the final file: {rejected:?}"
    );
    assert!(
        rejected[0].contains(&format!("{}:{}:", cfg.display(), BROKEN_LINE + 1)),
        "{rejected:?}"
    );
    assert_eq!(
        status(&format!("{base}/new")).await,
        Some(200),
        "old config serves"
    );
    assert_eq!(gw.lines("config reloaded from").len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// A TLS listener's certificate replaced on disk is served after `SIGHUP` without a restart:
/// new handshakes present the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_tls_certificates() {
    let up = Upstream::start("tls").await;
    let dir = tmpdir("tls");
    let (port, admin) = (free_port(), free_port());
    let write_cert = || {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).expect("cert");
        std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).expect("key");
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).expect("root"),
            )
            .tls_built_in_root_certs(false)
            .build()
            .expect("client")
    };
    let trusts_first = write_cert();
    let cfg = dir.join("gw.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listeners:\n  - name: tls\n    address: 127.0.0.1:{port}\n    tls: {{ cert: cert.pem, key: key.pem }}\nadmin: {{ address: \"127.0.0.1:{admin}\", token: \"{TOKEN}\" }}\nupstreams:\n  - {{ name: b, endpoints: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: r, match: {{ prefix: / }}, upstream: b }}\n",
            up.addr()
        ),
    )
    .expect("config");
    let gw = Gw::spawn(&cfg);
    gw.wait_log("SIGHUP reloads the configuration file").await;
    let url = format!("https://localhost:{port}/x");
    let ok = |c: &reqwest::Client| {
        let (c, url) = (c.clone(), url.clone());
        async move { c.get(&url).send().await.map(|r| r.status().as_u16()) }
    };
    Wait::new("TLS answer", Duration::from_secs(15))
        .every(Duration::from_millis(50))
        .until_async(|| async { ok(&trusts_first).await.ok() == Some(200) })
        .await;
    let trusts_second = write_cert();
    assert!(
        ok(&trusts_second).await.is_err(),
        "old certificate still served before SIGHUP"
    );
    gw.signal("HUP");
    gw.wait_log("certificates reloaded: tls").await;
    // fresh connections (a new client each time) see the new certificate
    assert_eq!(ok(&trusts_second).await.ok(), Some(200));
    let fresh_first = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(dir.join("cert.pem")).expect("pem"))
                .expect("root"),
        )
        .tls_built_in_root_certs(false)
        .build()
        .expect("client");
    assert_eq!(ok(&fresh_first).await.ok(), Some(200));
    let _ = std::fs::remove_dir_all(dir);
}

/// A reload that removes a route and an upstream (with a circuit breaker) deletes their series from
/// `/metrics`: no stale `gw_breaker_state` or `gw_endpoint_healthy` for what is gone, no growth when
/// names churn. The routes and upstreams that stay keep their counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_deletes_the_series_of_removed_routes_and_upstreams() {
    let (b, c) = (Upstream::start("b").await, Upstream::start("c").await);
    let (port, admin) = (free_port(), free_port());
    let dir = tmpdir("series");
    let cfg = dir.join("gw.yaml");
    let second = format!(
        "  - {{ name: c, endpoints: [{{ address: \"{}\" }}], circuit_breaker: {{ failure_threshold: 5, success_threshold: 1, open_duration: 10s }} }}\n",
        c.addr()
    );
    let with_c = config(port, admin, &b, "/old", "").replace(
        "routes:\n",
        &format!("{second}routes:\n  - {{ name: r2, match: {{ prefix: /c }}, upstream: c }}\n"),
    );
    std::fs::write(&cfg, &with_c).expect("write");
    let gw = Gw::spawn(&cfg);
    gw.wait_log("SIGHUP reloads the configuration file").await;
    let base = format!("http://127.0.0.1:{port}");
    wait_status(&format!("{base}/old"), 200).await;
    wait_status(&format!("{base}/c"), 200).await;
    let scrape = || async {
        gateway_testkit::get(&format!("http://127.0.0.1:{admin}/metrics"))
            .await
            .expect("metrics")
            .text()
    };
    // a request is logged (and its route series made) just after its response was sent
    let before = Wait::new("route r2 and route r with series", Duration::from_secs(10))
        .every(Duration::from_millis(20))
        .poll(|| async {
            let text = scrape().await;
            if text.contains(r#"route="r2""#) && text.contains(r#"route="r""#) {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .await;
    assert!(before.contains(r#"upstream="c""#), "{before}");
    let served = |text: &str| {
        gateway_testkit::prom::Scrape::parse(text)
            .sum_matching("gw_requests_total", &[("route", "r"), ("status", "200")])
    };
    let served_before = served(&before);
    assert!(served_before >= 1.0);

    std::fs::write(&cfg, config(port, admin, &b, "/old", "")).expect("write");
    gw.signal("HUP");
    wait_status(&format!("{base}/c"), 404).await;
    // logged once the swap (and the series clean-up after it) is done
    gw.wait_log("config reloaded from").await;
    let after = scrape().await;
    for gone in [r#"route="r2""#, r#"upstream="c""#] {
        let left: Vec<&str> = after.lines().filter(|l| l.contains(gone)).collect();
        assert!(left.is_empty(), "{gone} still has series: {left:?}");
    }
    assert!(served(&after) >= served_before, "route r keeps its count");
    assert!(
        after.contains(r#"gw_endpoint_healthy{endpoint=""#),
        "{after}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

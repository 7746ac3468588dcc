//! `deploy/systemd/gw.service`: its hardening options, `systemd-analyze verify` (no finding about the
//! unit), `systemd-analyze security --offline` (exposure at most 2.0, "OK"), and its commands run as
//! systemd would run them against the real `gw` binary: `ExecStartPre` validates, `ExecStart` serves,
//! `ExecReload` (SIGHUP) applies a changed file, `KillSignal` stops it cleanly.
//!
//! systemd cannot run the unit itself here (no systemd as PID 1 in a container), so the sandbox
//! options are checked statically by systemd's own tools, and the commands are run without them.
//! `systemd-analyze` comes with the `systemd` package, `/bin/kill` with `procps` (`.ci/run` installs
//! both); without them the corresponding parts print why they are skipped, except with `GW_CI` set.
use gateway_testkit::prom::Scrape;
use gateway_testkit::prometheus_server::{find, require};
use gateway_testkit::redis::free_port;
use gateway_testkit::wait::Wait;
use gateway_testkit::Upstream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/systemd/gw.service");
const INSTALLED_BIN: &str = "/usr/local/bin/gw";
const INSTALLED_CFG: &str = "/etc/gw/gw.yaml";

/// `Key=value` lines of `[section]`, in order (repeated keys kept).
fn section(unit: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let (k, v) = line.split_once('=').expect("Key=value");
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

fn value<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn systemd_analyze(args: &[&str]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `systemd-analyze verify`: the lines that are about `unit` (findings about other units of the
/// machine are printed, not counted).
fn verify_findings(unit: &Path) -> Vec<String> {
    let (ok, text) = systemd_analyze(&["verify", unit.to_str().expect("utf-8 path")]);
    let name = unit.file_name().and_then(|n| n.to_str()).expect("name");
    let mine: Vec<String> = text
        .lines()
        .filter(|l| l.contains(name))
        .map(String::from)
        .collect();
    if !ok && mine.is_empty() {
        panic!("systemd-analyze verify failed without naming {name}:\n{text}");
    }
    if !text.trim().is_empty() {
        eprintln!("systemd-analyze verify output:\n{text}");
    }
    mine
}

#[test]
fn unit_has_reload_and_hardening() {
    let unit = std::fs::read_to_string(UNIT).expect("gw.service");
    let s = section(&unit, "Service");
    let want = [
        ("ExecStart", "/usr/local/bin/gw serve /etc/gw/gw.yaml"),
        ("ExecStartPre", "/usr/local/bin/gw validate /etc/gw/gw.yaml"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("LogsDirectory", "gw"),
        ("StateDirectory", "gw"),
    ];
    for (k, v) in want {
        assert_eq!(value(&s, k), Some(v), "[Service] {k}");
    }
    assert_eq!(
        value(&section(&unit, "Install"), "WantedBy"),
        Some("multi-user.target")
    );
}

struct Gw(Child);

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(public: u16, admin: u16, up: &Upstream, extra_route: bool) -> String {
    let extra = if extra_route {
        "  - { name: added, match: { prefix: /added }, upstream: app }\n"
    } else {
        ""
    };
    format!(
        "listeners: [{{ name: public, address: \"127.0.0.1:{public}\" }}]\n\
         admin: {{ address: \"127.0.0.1:{admin}\" }}\n\
         upstreams: [{{ name: app, endpoints: [{{ address: \"{}\" }}] }}]\n\
         routes:\n  - {{ name: app, match: {{ prefix: /app }}, upstream: app }}\n{extra}",
        up.addr()
    )
}

/// The unit with the installed paths replaced by this build's binary and a test configuration.
fn unit_for_test(dir: &Path, cfg: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(UNIT)
        .expect("gw.service")
        .replace(INSTALLED_BIN, env!("CARGO_BIN_EXE_gw"))
        .replace(INSTALLED_CFG, cfg.to_str().expect("utf-8"));
    let path = dir.join("gw.service");
    std::fs::write(&path, unit).expect("unit");
    path
}

#[test]
fn systemd_analyze_verify_and_security() {
    let test = "systemd_analyze_verify_and_security";
    if require(
        find("systemd-analyze", "/usr/bin/systemd-analyze"),
        "systemd-analyze",
        "systemd",
        test,
    )
    .is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("gw.yaml");
    std::fs::write(&cfg, "listeners: []\n").expect("cfg");
    let unit = unit_for_test(dir.path(), &cfg);
    let findings = verify_findings(&unit);
    assert!(findings.is_empty(), "systemd-analyze verify: {findings:?}");

    // The check is live: a misspelled option is reported.
    let bad_dir = tempfile::tempdir().expect("tmp");
    let bad = bad_dir.path().join("gw.service");
    let text = std::fs::read_to_string(&unit)
        .expect("unit")
        .replace("NoNewPrivileges=yes", "NoNewPrivilege=yes");
    std::fs::write(&bad, text).expect("bad unit");
    let findings = verify_findings(&bad);
    assert!(
        findings.iter().any(|l| l.contains("NoNewPrivilege")),
        "a misspelled key must be reported: {findings:?}"
    );

    // Exposure (systemd's 0-10 scale, threshold in tenths): at most 2.0.
    let (ok, text) = systemd_analyze(&[
        "security",
        "--offline=yes",
        "--threshold=20",
        unit.to_str().expect("utf-8"),
    ]);
    assert!(ok, "systemd-analyze security above 2.0:\n{text}");
    assert!(text.contains("Overall exposure level"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_commands_validate_serve_reload_and_stop_gw() {
    let up = Upstream::start("app").await;
    let dir = tempfile::tempdir().expect("tmp");
    let (public, admin) = (free_port(), free_port());
    let cfg = dir.path().join("gw.yaml");
    std::fs::write(&cfg, config(public, admin, &up, false)).expect("cfg");
    let unit = std::fs::read_to_string(unit_for_test(dir.path(), &cfg)).expect("unit");
    let s = section(&unit, "Service");
    let argv = |k: &str| -> Vec<String> {
        value(&s, k)
            .unwrap_or_else(|| panic!("{k}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };

    // ExecStartPre: gw validate accepts the file (and refuses a broken one).
    let pre = argv("ExecStartPre");
    let st = Command::new(&pre[0]).args(&pre[1..]).output().expect("pre");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "listeners: [{ name: p }]\n").expect("broken");
    let st = Command::new(&pre[0])
        .args(&pre[1..pre.len() - 1])
        .arg(&broken)
        .output()
        .expect("pre broken");
    assert!(!st.status.success(), "ExecStartPre must stop a broken file");

    // ExecStart
    let start = argv("ExecStart");
    let mut gw = Gw(Command::new(&start[0])
        .args(&start[1..])
        .env("GW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ExecStart"));
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    Wait::new("gw serve ready", Duration::from_secs(20))
        .every(Duration::from_millis(50))
        .until_async(|| async {
            matches!(gateway_testkit::get(&format!("http://127.0.0.1:{admin}/readyz")).await, Ok(r) if r.status == 200)
        })
        .await;
    let added = format!("http://127.0.0.1:{public}/added/x");
    assert_eq!(gateway_testkit::get(&added).await.expect("GET").status, 404);

    // ExecReload, with $MAINPID as systemd substitutes it, after the file changed.
    let reload = argv("ExecReload");
    assert_eq!(reload[2], "$MAINPID");
    std::fs::write(&cfg, config(public, admin, &up, true)).expect("cfg");
    let kill = require(
        Path::new(&reload[0])
            .exists()
            .then(|| PathBuf::from(&reload[0])),
        &reload[0],
        "procps",
        "unit_commands_validate_serve_reload_and_stop_gw (ExecReload)",
    );
    let pid = gw.0.id().to_string();
    if kill.is_some() {
        let st = Command::new(&reload[0])
            .arg(&reload[1])
            .arg(&pid)
            .status()
            .expect("ExecReload");
        assert!(st.success());
        Wait::new("the reload applied", Duration::from_secs(10))
            .every(Duration::from_millis(50))
            .until_async(|| async {
                let Ok(r) = gateway_testkit::get(&metrics).await else {
                    return false;
                };
                Scrape::parse(&r.text()).get("gw_config_reloads_total", &[("result", "applied")])
                    == Some(1.0)
            })
            .await;
        assert_eq!(gateway_testkit::get(&added).await.expect("GET").status, 200);
        assert!(
            gw.0.try_wait().expect("wait").is_none(),
            "alive after SIGHUP"
        );
    }

    // KillSignal=SIGTERM: a clean exit well within TimeoutStopSec.
    assert_eq!(value(&s, "KillSignal"), Some("SIGTERM"));
    assert!(Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .expect("kill")
        .success());
    let status = Wait::new("gw exits on SIGTERM", Duration::from_secs(15))
        .every(Duration::from_millis(50))
        .poll_blocking(|| gw.0.try_wait().expect("wait").ok_or("running"));
    assert!(status.success(), "exit status {status}");
}

//! A real Prometheus server (and `promtool`) for tests: proof that what gw exposes parses in the real
//! consumer, and that the shipped rules load and behave.
//!
//! [`PrometheusServer::start`] writes a `prometheus.yml` that scrapes the given targets every
//! `interval`, then runs `prometheus --config.file <tmp>/prometheus.yml --storage.tsdb.path <tmp>/data
//! --web.listen-address 127.0.0.1:<free port>` and waits (bounded) until `/-/ready` answers 200. The
//! process is killed and its directory removed on drop; its output goes to `<tmp>/prometheus.log`, which
//! [`PrometheusServer::log`] returns for failure messages. [`PrometheusServer::query`] calls the HTTP API
//! (`/api/v1/query`).
//!
//! Binaries are looked up on `PATH`, then at Debian's paths (`/usr/bin/prometheus`, `/usr/bin/promtool`:
//! package `prometheus`, which `.ci/run` installs). [`require`] decides what a test does when one is
//! missing: with `GW_CI` set (as `.ci/run` does) it panics, otherwise it prints why the test is
//! skipped and returns `None`.
//!
//! ```no_run
//! # async fn t(admin: std::net::SocketAddr) {
//! use gateway_testkit::prometheus_server::PrometheusServer;
//! use std::time::Duration;
//! let prom = PrometheusServer::start(&[admin], Duration::from_millis(500)).expect("prometheus");
//! let v = prom.query("sum(gw_requests_total)").await.expect("query");
//! println!("{v:?}");
//! # }
//! ```

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis::free_port;
use crate::BoxError;

/// Debian's path of the Prometheus server binary.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// Debian's path of `promtool` (same package).
pub const PROMTOOL_BIN: &str = "/usr/bin/promtool";

/// `name` on `PATH`, else `default` if it exists.
pub fn find(name: &str, default: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    });
    on_path.or_else(|| Path::new(default).is_file().then(|| default.into()))
}

/// The `prometheus` binary, if installed.
pub fn prometheus_bin() -> Option<PathBuf> {
    find("prometheus", PROMETHEUS_BIN)
}

/// The `promtool` binary, if installed.
pub fn promtool_bin() -> Option<PathBuf> {
    find("promtool", PROMTOOL_BIN)
}

/// `bin` (from [`prometheus_bin`], [`promtool_bin`], ...) for test `test`: `Some(path)` when installed;
/// when missing, panics if `GW_CI` is set (CI installs it, so a missing binary is a CI defect), else
/// prints to stderr why the test is skipped and returns `None`.
pub fn require(bin: Option<PathBuf>, name: &str, package: &str, test: &str) -> Option<PathBuf> {
    if bin.is_some() {
        return bin;
    }
    let why = format!("{test}: `{name}` is not installed (apt-get install {package})");
    if std::env::var_os("GW_CI").is_some() {
        panic!("{why}; GW_CI is set, so this test must run");
    }
    eprintln!("SKIPPED {why}");
    None
}

/// A running Prometheus server; see the module docs.
pub struct PrometheusServer {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `targets` (`/metrics`, plain HTTP, job `gw`) every `interval`
    /// (also the scrape timeout), and waits up to 30 s until it is ready. Errors name the missing
    /// binary, or carry the server's log when it did not come up.
    pub fn start(targets: &[SocketAddr], interval: Duration) -> Result<Self, String> {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let ms = interval.as_millis().max(1);
        let config = format!(
            "global:\n  scrape_interval: {ms}ms\n  scrape_timeout: {ms}ms\n  evaluation_interval: {ms}ms\n\
             scrape_configs:\n  - job_name: gw\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        Self::start_with_config(&config)
    }

    /// Starts Prometheus with a complete `prometheus.yml` text, written to a fresh temp dir (use
    /// [`PrometheusServer::start_in`] when the config names `rule_files` to put there first).
    pub fn start_with_config(config: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir for prometheus: {e}"))?;
        Self::start_in(dir, config)
    }

    /// Like [`PrometheusServer::start_with_config`] in a directory the caller prepared (rule files).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Result<Self, String> {
        let bin = prometheus_bin()
            .ok_or("prometheus is not installed (apt-get install prometheus)".to_string())?;
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).map_err(|e| format!("{}: {e}", cfg.display()))?;
        let log_path = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("prometheus log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("prometheus log: {e}"))?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("failed to start {}: {e}", bin.display()))?;
        let mut s = PrometheusServer { child, addr, dir };
        s.wait_ready(Duration::from_secs(30))?;
        Ok(s)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("prometheus exited ({st}):\n{}", self.log()));
            }
            if ready(self.addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "prometheus not ready on {} after {limit:?}:\n{}",
                    self.addr,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's working directory (config, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>?<query>` (`query` already encoded); the `data` member of a `success` answer.
    pub async fn api(&self, path: &str, query: &str) -> Result<serde_json::Value, BoxError> {
        let url = format!("{}/api/v1/{path}?{query}", self.url());
        let r = crate::get(&url).await?;
        let v: serde_json::Value = r.json()?;
        if r.status != 200 || v["status"] != "success" {
            return Err(format!("{url}: {} {}", r.status, r.text()).into());
        }
        Ok(v["data"].clone())
    }

    /// Instant query (`/api/v1/query?query=<promql>`): the result vector, one
    /// `{"metric": {labels}, "value": [ts, "value"]}` per series.
    pub async fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, BoxError> {
        let data = self
            .api("query", &format!("query={}", encode(promql)))
            .await?;
        match data["result"].as_array() {
            Some(v) => Ok(v.clone()),
            None => Err(format!("not a vector: {data}").into()),
        }
    }

    /// The scrape targets (`/api/v1/targets`, active ones): `health`, `lastError`, `scrapeUrl`, ...
    pub async fn targets(&self) -> Result<Vec<serde_json::Value>, BoxError> {
        let data = self.api("targets", "state=active").await?;
        Ok(data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The numeric value of one element of a [`PrometheusServer::query`] result.
pub fn sample_value(sample: &serde_json::Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}

fn ready(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let req = format!("GET /-/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut buf = [0u8; 12];
    s.write_all(req.as_bytes()).is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/1.1 200"
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for a query-string value).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql() {
        assert_eq!(
            encode("sum(x{a=\"b c\"}) > 0.5"),
            "sum%28x%7Ba%3D%22b%20c%22%7D%29%20%3E%200.5"
        );
        assert_eq!(encode("a-b_c.d~"), "a-b_c.d~");
    }
}

//! The files of `deploy/` against real consumers and a real `gw serve`:
//! - `deploy/prometheus/gw-rules.yaml` passes `promtool check rules` and its unit tests
//!   (`promtool test rules gw-rules.test.yaml`); `prometheus.yml` passes `promtool check config`;
//! - a real Prometheus scrapes a running `gw serve` (admin listener on a free port), finds
//!   `gw_requests_total` for exactly the requests this test sent, evaluates the shipped recording
//!   rules over it, and accepts every query of the Grafana dashboard;
//! - every metric name the rules and `deploy/grafana/gw-dashboard.json` use exists in the exposition of
//!   a `gw serve` whose configuration and traffic make every family appear.
//!
//! Tests that need `promtool`/`prometheus` print why they are skipped when it is not installed, except
//! under `.ci/run` (`GW_CI` set), which installs it and where a missing binary fails them.
use gateway_testkit::prom::Scrape;
use gateway_testkit::prometheus_server::{
    prometheus_bin, promtool_bin, require, sample_value, PrometheusServer,
};
use gateway_testkit::redis::free_port;
use gateway_testkit::wait::Wait;
use gateway_testkit::Upstream;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "deploy-test-admin-token-0123456789";
const SECRET: &str = "an-example-secret-of-at-least-32-bytes!";

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// promtool

fn promtool(args: &[&str], cwd: &Path) -> (bool, String) {
    let bin = promtool_bin().expect("promtool");
    let out = Command::new(&bin)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let test = "rules_pass_promtool_check_and_unit_tests";
    if require(promtool_bin(), "promtool", "prometheus", test).is_none() {
        return;
    }
    let dir = deploy("prometheus");
    let (ok, out) = promtool(&["check", "rules", "gw-rules.yaml"], &dir);
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS: 13 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "gw-rules.test.yaml"], &dir);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"], &dir);
    assert!(ok, "promtool check config:\n{out}");

    // The unit tests can fail: a rule with a wrong threshold is caught.
    let tmp = tempfile::tempdir().expect("tmp");
    let rules = read("prometheus/gw-rules.yaml").replace("[10m]) >= 1", "[5m]) >= 1");
    assert_ne!(rules, read("prometheus/gw-rules.yaml"), "mutation applied");
    std::fs::write(tmp.path().join("gw-rules.yaml"), rules).expect("write");
    std::fs::copy(
        dir.join("gw-rules.test.yaml"),
        tmp.path().join("gw-rules.test.yaml"),
    )
    .expect("copy");
    let (ok, out) = promtool(&["test", "rules", "gw-rules.test.yaml"], tmp.path());
    assert!(!ok && out.contains("GwBreakerOpen"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// A `gw serve` whose configuration makes every metric family appear.

struct Gw {
    child: Child,
    public: u16,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
    _up: Upstream,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Routes: `app` (healthy upstream), `down` (its only endpoint refuses connections; health-checked,
/// with a breaker), `disc` (file discovery, a Redis-backed limit whose Redis is not running, so store
/// errors with `on_store_error: allow`), `secure` (JWT), `limited` (local limit of 2 a minute).
async fn start_gw() -> Gw {
    let up = Upstream::start("app").await;
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("endpoints.txt"), format!("{}\n", up.addr())).expect("eps");
    let (public, admin_port, closed, no_redis) =
        (free_port(), free_port(), free_port(), free_port());
    let cfg = format!(
        r#"listeners: [{{ name: public, address: "127.0.0.1:{public}" }}]
admin: {{ address: "127.0.0.1:{admin_port}", token: "{TOKEN}" }}
upstreams:
  - {{ name: app, endpoints: [{{ address: "{up}" }}] }}
  - name: down
    endpoints: [{{ address: "127.0.0.1:{closed}" }}]
    health_check: {{ path: /health, interval: 1s, timeout: 500ms }}
    circuit_breaker: {{ failure_threshold: 2, success_threshold: 1, open_duration: 60s }}
  - name: disc
    discovery: {{ type: file, path: endpoints.txt, interval: 1s }}
routes:
  - {{ name: app, match: {{ prefix: /app }}, upstream: app }}
  - {{ name: down, match: {{ prefix: /down }}, upstream: down }}
  - {{ name: disc, match: {{ prefix: /disc }}, upstream: disc, policies: [shared] }}
  - {{ name: secure, match: {{ prefix: /secure }}, upstream: app, policies: [jwt] }}
  - {{ name: limited, match: {{ prefix: /limited }}, upstream: app, policies: [two-a-minute] }}
policies:
  - name: jwt
    type: jwt
    keys: {{ type: hmac, secret: "{SECRET}", algorithms: [HS256] }}
  - name: shared
    type: rate_limit
    window: 60s
    max: 100
    key: {{ type: client_ip }}
    store: {{ type: redis, url: "redis://127.0.0.1:{no_redis}/", timeout: 50ms }}
    on_store_error: allow
  - name: two-a-minute
    type: rate_limit
    window: 60s
    max: 2
    key: {{ type: client_ip }}
    store: {{ type: local }}
"#,
        up = up.addr()
    );
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, cfg).expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_gw"))
        .arg("serve")
        .arg(&path)
        .env("GW_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gw serve");
    let gw = Gw {
        child,
        public,
        admin: ([127, 0, 0, 1], admin_port).into(),
        _dir: dir,
        _up: up,
    };
    let ready = format!("http://{}/readyz", gw.admin);
    Wait::new("gw serve ready", Duration::from_secs(20))
        .every(Duration::from_millis(50))
        .until_async(|| async {
            matches!(gateway_testkit::get(&ready).await, Ok(r) if r.status == 200)
        })
        .await;
    gw
}

impl Gw {
    async fn get(&self, path: &str) -> u16 {
        let url = format!("http://127.0.0.1:{}{path}", self.public);
        let r = gateway_testkit::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        r.status.as_u16()
    }

    async fn scrape(&self) -> Scrape {
        let r = gateway_testkit::get(&format!("http://{}/metrics", self.admin))
            .await
            .expect("GET /metrics");
        assert_eq!(r.status, 200);
        Scrape::parse(&r.text())
    }

    /// Traffic that touches every family: 2xx, 404, 401, 429, 502/503, store errors, discovery.
    async fn drive_every_family(&self) {
        assert_eq!(self.get("/app/x").await, 200);
        assert_eq!(self.get("/disc/x").await, 200, "discovered endpoint");
        assert_eq!(self.get("/secure/x").await, 401);
        for want in [200, 200, 429] {
            assert_eq!(self.get("/limited/x").await, want);
        }
        assert!([502, 503].contains(&self.get("/down/x").await));
        assert_eq!(self.get("/nothing").await, 404);
    }
}

// ---------------------------------------------------------------------------------------------
// Metric names used by PromQL text

/// Every identifier of `expr` that names a gw series (contains `gw_`), string literals excluded.
fn gw_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                // skip a string literal (escapes included)
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let mut id = String::from(c);
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                        id.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if id.contains("gw_") {
                    out.insert(id);
                }
            }
            c if c.is_ascii_digit() => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')
                {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    out
}

/// Every PromQL text of the dashboard: panel targets and templating queries.
fn dashboard_queries(d: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        ("query", serde_json::Value::String(s)) if s.contains("gw_") => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(d, &mut out);
    out
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("grafana/gw-dashboard.json")).expect("dashboard is JSON")
}

/// `(record names, alert names, exprs)` of the rules file.
fn rules() -> (BTreeSet<String>, Vec<String>, Vec<String>) {
    let y: serde_yaml::Value =
        serde_yaml::from_str(&read("prometheus/gw-rules.yaml")).expect("rules are YAML");
    let (mut records, mut alerts, mut exprs) = (BTreeSet::new(), Vec::new(), Vec::new());
    for g in y["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            if let Some(n) = r["record"].as_str() {
                records.insert(n.to_string());
            }
            if let Some(n) = r["alert"].as_str() {
                alerts.push(n.to_string());
            }
            exprs.push(r["expr"].as_str().expect("expr").to_string());
        }
    }
    (records, alerts, exprs)
}

/// Sample names of the scrape (`x_bucket`, `x_sum`, `x_count` for histograms).
fn exposed(s: &Scrape) -> BTreeSet<String> {
    s.families.keys().cloned().collect()
}

/// Names used by `exprs` that are neither exposed nor in `also`.
fn unknown(
    exprs: &[String],
    exposed: &BTreeSet<String>,
    also: &BTreeSet<String>,
) -> BTreeSet<String> {
    exprs
        .iter()
        .flat_map(|e| gw_names(e))
        .filter(|n| !exposed.contains(n) && !also.contains(n))
        .collect()
}

#[test]
fn name_extraction_finds_misspelled_names() {
    let names = gw_names(
        r#"sum by (route) (rate(gw_request_total{job=~"gw_x",status=~"5.."}[5m])) / 1e3 > route:gw_requests:rate5m"#,
    );
    let want: BTreeSet<String> = ["gw_request_total", "route:gw_requests:rate5m"]
        .map(String::from)
        .into();
    assert_eq!(names, want);
    let exposed: BTreeSet<String> = ["gw_requests_total".to_string()].into();
    assert_eq!(
        unknown(
            &["rate(gw_request_total[1m])".into()],
            &exposed,
            &BTreeSet::new()
        ),
        ["gw_request_total".to_string()].into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_rules_use_only_metric_names_gw_exposes() {
    let gw = start_gw().await;
    gw.drive_every_family().await;
    // The last request is recorded just after its response; discovery and store errors too.
    let scrape = Wait::new("every family in /metrics", Duration::from_secs(10))
        .every(Duration::from_millis(100))
        .poll(|| async {
            let s = gw.scrape().await;
            let missing: Vec<_> = [
                "gw_ratelimit_store_errors_total",
                "gw_auth_failures_total",
                "gw_discovery_last_success_timestamp_seconds",
            ]
            .into_iter()
            .filter(|n| !s.families.contains_key(*n))
            .collect();
            if missing.is_empty() && s.first("gw_requests_total", &[("status", "404")]).is_some() {
                Ok(s)
            } else {
                Err(missing)
            }
        })
        .await;
    let exposed = exposed(&scrape);

    let d = dashboard();
    let queries = dashboard_queries(&d);
    assert!(queries.len() >= 20, "{queries:?}");
    let none = BTreeSet::new();
    let bad = unknown(&queries, &exposed, &none);
    assert!(
        bad.is_empty(),
        "dashboard uses names gw does not expose: {bad:?}\nexposed: {exposed:?}"
    );
    // It covers traffic, errors, latency, limits, breakers and upstream health.
    let used: BTreeSet<String> = queries.iter().flat_map(|q| gw_names(q)).collect();
    for n in [
        "gw_requests_total",
        "gw_request_duration_seconds_bucket",
        "gw_upstream_errors_total",
        "gw_ratelimit_decisions_total",
        "gw_ratelimit_store_errors_total",
        "gw_breaker_state",
        "gw_endpoint_healthy",
        "gw_upstream_endpoints",
    ] {
        assert!(used.contains(n), "dashboard does not chart {n}");
    }
    let rows: Vec<&str> = d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for r in [
        "Traffic",
        "Errors",
        "Latency",
        "Limits",
        "Breakers",
        "Upstream health",
    ] {
        assert!(rows.contains(&r), "row {r} missing: {rows:?}");
    }

    let (records, alerts, exprs) = rules();
    let bad = unknown(&exprs, &exposed, &records);
    assert!(
        bad.is_empty(),
        "rules use names gw does not expose: {bad:?}"
    );
    assert_eq!(
        alerts,
        [
            "GwRoute5xxRatioHigh",
            "GwUpstreamNoHealthyEndpoint",
            "GwBreakerOpen",
            "GwRateLimitStoreErrors",
            "GwConfigReloadRejected",
            "GwDiscoveryStale",
            "GwAccessLogDropping"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// A real Prometheus scraping gw serve

async fn wait_value(prom: &PrometheusServer, promql: &str, want: f64) {
    Wait::new(
        format!("Prometheus: {promql} == {want}"),
        Duration::from_secs(30),
    )
    .every(Duration::from_millis(200))
    .poll(|| async {
        let r = prom.query(promql).await.map_err(|e| e.to_string())?;
        match r.as_slice() {
            [one] if sample_value(one) == Some(want) => Ok(()),
            _ => Err(format!("{r:?}\n{}", prom.log())),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_scrapes_gw_serve() {
    let test = "real_prometheus_scrapes_gw_serve";
    if require(prometheus_bin(), "prometheus", "prometheus", test).is_none() {
        return;
    }
    let gw = start_gw().await;
    // Prometheus with the shipped rules, scraping the admin listener. /metrics needs no token even
    // though admin.token is set (the token only guards /admin/...), so the scrape config has none.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(
        deploy("prometheus/gw-rules.yaml"),
        dir.path().join("gw-rules.yaml"),
    )
    .expect("copy rules");
    let config = format!(
        "global: {{ scrape_interval: 250ms, scrape_timeout: 250ms, evaluation_interval: 250ms }}\n\
         rule_files: [gw-rules.yaml]\n\
         scrape_configs:\n  - job_name: gw\n    static_configs: [{{ targets: [\"{}\"] }}]\n",
        gw.admin
    );
    let prom = PrometheusServer::start_in(dir, &config).unwrap_or_else(|e| panic!("{e}"));
    wait_value(&prom, r#"up{job="gw"}"#, 1.0).await;
    let targets = prom.targets().await.expect("targets");
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0]["health"], "up", "{targets:?}");

    // Two batches with a scrape in between, so that the counter is seen growing (rate > 0).
    let q = r#"gw_requests_total{job="gw",route="app",method="GET",status="200"}"#;
    for _ in 0..3 {
        assert_eq!(gw.get("/app/x").await, 200);
    }
    wait_value(&prom, q, 3.0).await;
    for _ in 0..4 {
        assert_eq!(gw.get("/app/x").await, 200);
    }
    assert_eq!(gw.get("/nothing").await, 404);
    wait_value(&prom, q, 7.0).await;
    wait_value(
        &prom,
        r#"gw_requests_total{job="gw",route="",upstream="",method="GET",status="404"}"#,
        1.0,
    )
    .await;
    wait_value(&prom, r#"sum(gw_requests_total{job="gw"})"#, 8.0).await;
    wait_value(
        &prom,
        r#"gw_request_duration_seconds_count{job="gw",route="app"}"#,
        7.0,
    )
    .await;
    // The shipped recording rules evaluate over gw's real series.
    Wait::new("route:gw_requests:rate5m > 0", Duration::from_secs(30))
        .every(Duration::from_millis(250))
        .poll(|| async {
            let r = prom
                .query(r#"route:gw_requests:rate5m{job="gw",route="app"} > 0"#)
                .await
                .map_err(|e| e.to_string())?;
            if r.len() == 1 {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        })
        .await;
    let rules = prom.api("rules", "type=alert").await.expect("rules");
    let n: usize = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["rules"].as_array().map_or(0, |r| r.len()))
        .sum();
    assert_eq!(n, 7, "alerting rules loaded: {rules}");

    // Every dashboard query is valid PromQL for the real server (Grafana variables substituted).
    for q in dashboard_queries(&dashboard()) {
        if q.starts_with("label_values(") {
            continue; // Grafana templating function, not PromQL
        }
        let promql = q.replace("$__rate_interval", "1m").replace("$job", "gw");
        prom.query(&promql)
            .await
            .unwrap_or_else(|e| panic!("dashboard query {q:?} rejected by Prometheus: {e}"));
    }
}

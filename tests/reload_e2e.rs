//! Hot reload end to end: the in-process gateway started from a configuration file, reloaded
//! through the admin API (`POST /admin/reload`) while real upstreams (and a real `redis-server`)
//! serve, and checked from the outside: traffic under constant load, rejected configurations,
//! rate-limit counters and breaker state carried over.
use gateway_core::proxy::server::Embedded;
use gateway_testkit::prom::Scrape;
use gateway_testkit::redis::RedisServer;
use gateway_testkit::{http_client, Bytes, HttpResponse, Method, Upstream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TOKEN: &str = "reload-admin-token-0123456789";

/// The load test owns the machine's cores while it runs.
static SERIAL: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gw-reload-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut t = template.to_string();
    for (k, v) in vars {
        t = t.replace(&format!("{{{{{k}}}}}"), v);
    }
    t
}

/// Starts the gateway from the file at `path` (compiled like `gw serve` does).
async fn start(path: &Path) -> Embedded {
    let (text, c) = gateway_core::compile_file(&path.to_string_lossy()).expect("read config");
    let plan = c.plan.unwrap_or_else(|| {
        panic!(
            "{}",
            c.diagnostics
                .iter()
                .map(|d| d.render(&text))
                .collect::<String>()
        )
    });
    Embedded::start(plan).await.expect("gateway starts")
}

fn admin(gw: &Embedded) -> String {
    format!("http://{}", gw.admin_addr.expect("admin listener"))
}

async fn admin_call(gw: &Embedded, method: Method, path: &str) -> HttpResponse {
    let auth = format!("Bearer {TOKEN}");
    gateway_testkit::send(
        &http_client(),
        method,
        &format!("{}{path}", admin(gw)),
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await
}

/// Writes `text` to `path` and asks the gateway to reload it.
async fn reload_with(gw: &Embedded, path: &Path, text: &str) -> HttpResponse {
    std::fs::write(path, text).expect("write config");
    admin_call(gw, Method::POST, "/admin/reload").await
}

async fn get(url: &str) -> HttpResponse {
    gateway_testkit::send(&http_client(), Method::GET, url, &[], Bytes::new()).await
}

// ---------------------------------------------------------------------------------------------
// Constant load, reloads every 200 ms

const LOAD: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0", token: "{{TOKEN}}" }
upstreams:
  - { name: svc, endpoints: [{ address: "{{E1}}" }, { address: "{{E2}}" }] }
routes:
  - { name: common, match: { prefix: /common }, upstream: svc }
  - { name: only-{{X}}, match: { prefix: /only-{{X}} }, upstream: svc }
  - { name: limited, match: { prefix: /limited }, upstream: svc, policies: [quota] }
policies:
  - { name: quota, type: rate_limit, window: 1m, max: {{Q}}, key: { type: client_ip }, scope: route }
"#;

/// An invalid configuration: a route names an upstream that does not exist (line 8).
const BROKEN: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0", token: "{{TOKEN}}" }
upstreams:
  - { name: svc, endpoints: [{ address: "{{E1}}" }] }
routes:
  - { name: common, match: { prefix: /common }, upstream: svc }
  - { name: lost, match: { prefix: /lost }, upstream: nowhere }
"#;

const PATHS: [&str; 4] = ["/common/x", "/only-a/x", "/only-b/x", "/limited/x"];
/// Quotas of the `quota` limit in configurations A and B.
const QUOTA: [u64; 2] = [5, 8];

/// What answered a request: configuration A (0) or B (1), or a failure.
fn attribute(path: usize, r: &HttpResponse) -> Result<usize, String> {
    let by_upstream = |r: &HttpResponse| -> Result<usize, String> {
        let v = r.json().map_err(|e| format!("200 without JSON: {e}"))?;
        match v["upstream"].as_str() {
            Some("a1" | "a2") => Ok(0),
            Some("b1" | "b2") => Ok(1),
            other => Err(format!("unknown upstream {other:?}")),
        }
    };
    match (r.status.as_u16(), path) {
        (200, 0 | 3) => by_upstream(r),
        // a route only A (B) has, answered by an upstream of A (B)
        (200, 1) => by_upstream(r).and_then(|c| (c == 0).then_some(0).ok_or("only-a by B".into())),
        (200, 2) => by_upstream(r).and_then(|c| (c == 1).then_some(1).ok_or("only-b by A".into())),
        (404, 1) => Ok(1),
        (404, 2) => Ok(0),
        (429, 3) => match r.header("ratelimit-policy") {
            Some(p) if p == format!("\"quota\";q={};w=60", QUOTA[0]) => Ok(0),
            Some(p) if p == format!("\"quota\";q={};w=60", QUOTA[1]) => Ok(1),
            p => Err(format!("429 with policy {p:?}")),
        },
        (s, p) => Err(format!("{s} on {}: {}", PATHS[p], r.text())),
    }
}

struct Answer {
    start: Instant,
    end: Instant,
    outcome: Result<usize, String>,
}

/// 32 keep-alive clients for 30 s; every 200 ms the file is rewritten and reloaded, in the
/// rotation B, broken, A, broken: the valid configurations differ in routes (`only-a` / `only-b`),
/// the upstream's endpoints (a1, a2 / b1, b2) and the quota of `quota` (5 / 8 per minute). Every
/// answer must be an upstream 200 or a deliberate answer (404 no route, 429 limited) of a
/// configuration that was in force at some point while the request ran; every broken
/// configuration is rejected with its diagnostics; no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_fail_no_request() {
    let _serial = SERIAL.write().await;
    let mut ups = Vec::new();
    for n in ["a1", "a2", "b1", "b2"] {
        ups.push(Upstream::start(n).await);
    }
    let addr = |i: usize| ups[i].addr().to_string();
    let cfg = |x: usize| {
        fill(
            LOAD,
            &[
                ("TOKEN", TOKEN.into()),
                ("E1", addr(2 * x)),
                ("E2", addr(2 * x + 1)),
                ("X", ["a", "b"][x].into()),
                ("Q", QUOTA[x].to_string()),
            ],
        )
    };
    let broken = fill(BROKEN, &[("TOKEN", TOKEN.into()), ("E1", addr(0))]);
    let dir = tmpdir("load");
    let path = dir.join("gw.yaml");
    std::fs::write(&path, cfg(0)).expect("write");
    let gw = start(&path).await;
    let url = gw.url();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..32usize {
        let (url, stop) = (url.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let client = http_client();
            let mut out = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let p = i % PATHS.len();
                i += 1;
                let start = Instant::now();
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    gateway_testkit::request(
                        &client,
                        Method::GET,
                        &format!("{url}{}", PATHS[p]),
                        &[],
                        Bytes::new(),
                    ),
                )
                .await;
                let outcome = match r {
                    Ok(Ok(r)) => attribute(p, &r),
                    Ok(Err(e)) => Err(format!("transport error: {e:?}")),
                    Err(_) => Err("no answer within 10 s".into()),
                };
                out.push(Answer {
                    start,
                    end: Instant::now(),
                    outcome,
                });
            }
            out
        }));
    }
    // (configuration, may be in force from, applied by): A from the start
    let mut applied: Vec<(usize, Instant, Instant)> = vec![(0, t0, t0)];
    let (mut n_applied, mut n_rejected) = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let rotation = [Some(1), None, Some(0), None];
    let mut k = 0;
    while t0.elapsed() < Duration::from_secs(30) {
        tick.tick().await;
        let next = rotation[k % rotation.len()];
        k += 1;
        let text = next.map_or_else(|| broken.clone(), cfg);
        let sent = Instant::now();
        let r = reload_with(&gw, &path, &text).await;
        let done = Instant::now();
        let v = r.json().expect("JSON answer");
        match next {
            Some(x) => {
                assert_eq!(r.status, 200, "{v}");
                assert_eq!(v["result"], "applied");
                n_applied += 1;
                applied.push((x, sent, done));
            }
            None => {
                assert_eq!(r.status, 422, "{v}");
                assert_eq!(v["result"], "rejected");
                assert_eq!(v["error"], "invalid_config");
                let d = &v["diagnostics"][0];
                assert_eq!(d["file"], path.to_string_lossy().as_ref(), "{v}");
                assert_eq!(
                    (d["line"].as_u64(), d["severity"].as_str()),
                    (Some(8), Some("error")),
                    "{v}"
                );
                assert!(d["column"].as_u64().unwrap_or(0) > 0, "{v}");
                assert!(
                    d["message"].as_str().unwrap_or("").contains("nowhere"),
                    "{v}"
                );
                n_rejected += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.expect("client task"));
    }
    // a configuration is in force from (at the earliest) the sending of its reload until (at the
    // latest) the next applied reload's answer
    let far = Instant::now() + Duration::from_secs(3600);
    let windows: Vec<(usize, Instant, Instant)> = applied
        .iter()
        .enumerate()
        .map(|(i, &(x, from, _))| (x, from, applied.get(i + 1).map_or(far, |n| n.2)))
        .collect();
    let mut failures = Vec::new();
    let mut by_config = [0u64; 2];
    for a in &answers {
        match &a.outcome {
            Ok(x) => {
                by_config[*x] += 1;
                if !windows
                    .iter()
                    .any(|&(c, from, to)| c == *x && from <= a.end && a.start <= to)
                {
                    failures.push(format!(
                        "answered by {} which was not in force during the request",
                        ["A", "B"][*x]
                    ));
                }
            }
            Err(e) => failures.push(e.clone()),
        }
    }
    let total = answers.len();
    eprintln!(
        "load: {total} requests ({} by A, {} by B), {} failed; reloads: {n_applied} applied, {n_rejected} rejected",
        by_config[0],
        by_config[1],
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(total > 1000, "too little load: {total}");
    assert!(by_config[0] > 100 && by_config[1] > 100, "{by_config:?}");
    assert!(
        n_applied >= 50 && n_rejected >= 50,
        "{n_applied} / {n_rejected}"
    );
    let m = Scrape::parse(&get(&format!("{}/metrics", admin(&gw))).await.text());
    assert_eq!(
        m.get("gw_config_reloads_total", &[("result", "applied")]),
        Some(n_applied as f64)
    );
    assert_eq!(
        m.get("gw_config_reloads_total", &[("result", "rejected")]),
        Some(n_rejected as f64)
    );
    let last = applied.last().expect("applied").0;
    let hash = gateway_core::compile::config_hash(&cfg(last));
    assert_eq!(m.family("gw_config_hash").len(), 1);
    assert_eq!(m.get("gw_config_hash", &[("hash", &hash)]), Some(1.0));
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Rate-limit counters across reloads

const LIMITED: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0", token: "{{TOKEN}}" }
upstreams: [{ name: svc, endpoints: [{ address: "{{UP}}" }] }]
routes:
  - { name: limited, match: { prefix: /limited }, upstream: svc, policies: [hundred] }
  - { name: other, match: { prefix: {{OTHER}} }, upstream: svc }
policies:
  - { name: hundred, type: rate_limit, window: 1m, max: {{MAX}}, key: { type: client_ip }, scope: route, store: {{STORE}} }
"#;

/// Waits until at least `need` remains of the current wall-clock minute (the limit's window), so
/// that a test's requests fall into one window.
async fn room_in_minute(need: Duration) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let left = 60_000 - ms % 60_000;
    if left < need.as_millis() as u64 {
        tokio::time::sleep(Duration::from_millis(left + 50)).await;
    }
}

/// Sends `n` requests to `/limited`; how many were admitted (the others must be 429).
async fn admitted(url: &str, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let r = get(&format!("{url}/limited/x")).await;
        match r.status.as_u16() {
            200 => ok += 1,
            429 => {}
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    ok
}

/// 100 per minute, 60 spent; a reload that changes only another route leaves 40; a reload that
/// changes the limit's quota (100 → 120) behaves as documented in docs/reload.md.
async fn limit_keeps_counting(store: &str, redis: Option<&RedisServer>, after_quota_change: usize) {
    let up = Upstream::start("svc").await;
    let vars = |other: &str, max: u64| {
        fill(
            LIMITED,
            &[
                ("TOKEN", TOKEN.into()),
                ("UP", up.addr().to_string()),
                ("OTHER", other.into()),
                ("MAX", max.to_string()),
                (
                    "STORE",
                    match redis {
                        Some(r) => format!("{{ type: redis, url: \"{}\", timeout: 1s }}", r.url()),
                        None => store.into(),
                    },
                ),
            ],
        )
    };
    let dir = tmpdir(&format!("limit-{store}"));
    let path = dir.join("gw.yaml");
    std::fs::write(&path, vars("/other", 100)).expect("write");
    let gw = start(&path).await;
    room_in_minute(Duration::from_secs(20)).await;
    assert_eq!(admitted(&gw.url(), 60).await, 60);
    let r = reload_with(&gw, &path, &vars("/elsewhere", 100)).await;
    let v = r.json().expect("json");
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(
        v["summary"]["routes"]["changed"],
        serde_json::json!(["other"]),
        "{v}"
    );
    assert_eq!(
        v["summary"]["policies"]["changed"],
        serde_json::json!([]),
        "{v}"
    );
    assert_eq!(
        get(&format!("{}/elsewhere", gw.url())).await.status,
        200,
        "new route served"
    );
    assert_eq!(
        admitted(&gw.url(), 50).await,
        40,
        "only the rest of the quota"
    );
    let r = reload_with(&gw, &path, &vars("/elsewhere", 120)).await;
    let v = r.json().expect("json");
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(
        v["summary"]["policies"]["changed"],
        serde_json::json!(["hundred"]),
        "{v}"
    );
    assert_eq!(admitted(&gw.url(), 50).await, after_quota_change);
    let _ = std::fs::remove_dir_all(dir);
}

/// Local store: a changed quota starts a fresh count (the limit's identity changed), so all 50 of
/// the next requests fit into the new quota of 120.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_limit_keeps_counting_across_an_unrelated_reload() {
    let _serial = SERIAL.read().await;
    limit_keeps_counting("{ type: local }", None, 50).await;
}

/// Redis store: counts live in Redis under the limit's name and window, so a changed quota applies
/// to the 100 already counted: 20 more of the next 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_limit_keeps_counting_across_an_unrelated_reload() {
    let _serial = SERIAL.read().await;
    let redis = RedisServer::start();
    limit_keeps_counting("redis", Some(&redis), 20).await;
}

// ---------------------------------------------------------------------------------------------
// Breaker state across reloads

const BREAKER: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0", token: "{{TOKEN}}" }
upstreams:
  - name: svc
    endpoints: [{ address: "{{UP}}" }]
    circuit_breaker: { failure_threshold: {{THRESHOLD}}, success_threshold: 1, open_duration: 60s }
  - { name: other, endpoints: [{ address: "{{OTHER}}" }] }
routes:
  - { name: svc, match: { prefix: /svc }, upstream: svc }
  - { name: other, match: { prefix: {{PREFIX}} }, upstream: other }
"#;

/// A breaker forced open through the admin API stays open across a reload that changes another
/// route and another upstream's endpoint; a reload that changes the breaker's own settings gives
/// it fresh (closed) state, as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_open_breaker_survives_an_unrelated_reload() {
    let _serial = SERIAL.read().await;
    let up = Upstream::start("svc").await;
    let o1 = Upstream::start("o1").await;
    let o2 = Upstream::start("o2").await;
    let vars = |other: &Upstream, prefix: &str, threshold: u32| {
        fill(
            BREAKER,
            &[
                ("TOKEN", TOKEN.into()),
                ("UP", up.addr().to_string()),
                ("OTHER", other.addr().to_string()),
                ("PREFIX", prefix.into()),
                ("THRESHOLD", threshold.to_string()),
            ],
        )
    };
    let dir = tmpdir("breaker");
    let path = dir.join("gw.yaml");
    std::fs::write(&path, vars(&o1, "/other", 5)).expect("write");
    let gw = start(&path).await;
    assert_eq!(get(&format!("{}/svc", gw.url())).await.status, 200);
    let r = admin_call(&gw, Method::POST, "/admin/breakers/svc/open").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(&format!("{}/svc", gw.url())).await.status, 503);
    let r = reload_with(&gw, &path, &vars(&o2, "/else", 5)).await;
    let v = r.json().expect("json");
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(
        v["summary"]["upstreams"]["changed"],
        serde_json::json!(["other"]),
        "{v}"
    );
    let b = admin_call(&gw, Method::GET, "/admin/breakers")
        .await
        .json()
        .expect("json");
    assert_eq!(b[0]["upstream"], "svc");
    assert_eq!(b[0]["state"], "open", "{b}");
    let r = get(&format!("{}/svc", gw.url())).await;
    assert_eq!(r.status, 503, "still open: {}", r.text());
    assert_eq!(r.json().expect("json")["error"], "circuit_open");
    let r = get(&format!("{}/else", gw.url())).await;
    assert_eq!(
        r.json().expect("json")["upstream"],
        "o2",
        "the reload applied"
    );
    // the breaker's own settings change: fresh state
    let r = reload_with(&gw, &path, &vars(&o2, "/else", 6)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(&format!("{}/svc", gw.url())).await.status, 200);
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Admin endpoint contract

/// `POST /admin/reload` needs the token; a change that needs a restart is refused with 409 and
/// the field named; the running configuration keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_needs_the_token_and_refuses_restart_only_changes() {
    let _serial = SERIAL.read().await;
    let up = Upstream::start("svc").await;
    let text = fill(
        LIMITED,
        &[
            ("TOKEN", TOKEN.into()),
            ("UP", up.addr().to_string()),
            ("OTHER", "/other".into()),
            ("MAX", "100".into()),
            ("STORE", "{ type: local }".into()),
        ],
    );
    let dir = tmpdir("admin");
    let path = dir.join("gw.yaml");
    std::fs::write(&path, &text).expect("write");
    let gw = start(&path).await;
    let r = gateway_testkit::send(
        &http_client(),
        Method::POST,
        &format!("{}/admin/reload", admin(&gw)),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let moved = text.replace("address: \"127.0.0.1:0\" }]", "address: \"127.0.0.1:1\" }]");
    assert_ne!(moved, text);
    let r = reload_with(&gw, &path, &moved).await;
    let v = r.json().expect("json");
    assert_eq!(r.status, 409, "{v}");
    assert_eq!(v["error"], "restart_needed");
    assert_eq!(
        v["restart_needed"],
        serde_json::json!([
            "listeners[0].address changed (127.0.0.1:0 → 127.0.0.1:1): restart needed"
        ])
    );
    assert_eq!(get(&format!("{}/other", gw.url())).await.status, 200);
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Endpoint state across reloads

const ENDPOINTS: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0", token: "{{TOKEN}}" }
upstreams:
  - name: svc
    endpoints: [{{EPS}}]
    health_check: { path: /health, interval: 60s, timeout: 1s, unhealthy_threshold: 3, healthy_threshold: 1 }
routes:
  - { name: all, match: { prefix: / }, upstream: svc }
"#;

/// Three failed checks (the threshold) mark e2 down; a reload that adds e3 keeps e2 down (its
/// health is carried by address: the one check the reload runs before the swap is its 4th failure,
/// not a fresh 1st) and e1's counters; the new endpoint e3 starts healthy and gets traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_endpoints_keep_their_health_across_a_reload() {
    let _serial = SERIAL.read().await;
    let e1 = Upstream::start("e1").await;
    let e2 = Upstream::start("e2").await;
    let e3 = Upstream::start("e3").await;
    e2.set_health(false);
    let eps = |list: &[&Upstream]| {
        let eps: Vec<String> = list
            .iter()
            .map(|u| format!("{{ address: \"{}\" }}", u.addr()))
            .collect();
        fill(
            ENDPOINTS,
            &[("TOKEN", TOKEN.into()), ("EPS", eps.join(", "))],
        )
    };
    let dir = tmpdir("endpoints");
    let path = dir.join("gw.yaml");
    std::fs::write(&path, eps(&[&e1, &e2])).expect("write");
    let gw = start(&path).await; // one check in warm-up
    let before = gw.engine.runtime();
    for _ in 0..2 {
        before.upstreams[0].balancer.run_health_check().await;
    }
    assert!(before.upstreams[0].balancer.healthy(0));
    assert!(
        !before.upstreams[0].balancer.healthy(1),
        "e2 down after 3 failed checks"
    );
    let r = reload_with(&gw, &path, &eps(&[&e1, &e2, &e3])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = gw.engine.runtime();
    let b = &after.upstreams[0].balancer;
    assert!(
        !Arc::ptr_eq(b, &before.upstreams[0].balancer),
        "a new endpoint set"
    );
    assert!(!b.healthy(1), "e2 stays down across the reload");
    assert!(b.healthy(0) && b.healthy(2));
    assert!(
        Arc::ptr_eq(&b.endpoints[0], &before.upstreams[0].balancer.endpoints[0]),
        "e1 keeps its counters (in flight, response time)"
    );
    drop((before, after));
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let r = get(&format!("{}/x", gw.url())).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let name = r.json().expect("json")["upstream"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *seen.entry(name).or_insert(0) += 1;
    }
    assert!(!seen.contains_key("e2"), "{seen:?}");
    assert!(
        seen.contains_key("e1") && seen.contains_key("e3"),
        "{seen:?}"
    );
    let m = Scrape::parse(&get(&format!("{}/metrics", admin(&gw))).await.text());
    let e2_addr = e2.addr().to_string();
    assert_eq!(
        m.get(
            "gw_endpoint_healthy",
            &[("upstream", "svc"), ("endpoint", &e2_addr)]
        ),
        Some(0.0)
    );
    let _ = std::fs::remove_dir_all(dir);
}

const TWO_LIMITS: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0", token: "{{TOKEN}}" }
upstreams: [{ name: svc, endpoints: [{ address: "{{UP}}" }] }]
routes:
  - { name: limited, match: { prefix: /limited }, upstream: svc, policies: [hundred] }
  - { name: other, match: { prefix: /other }, upstream: svc, policies: [second] }
policies:
  - { name: hundred, type: rate_limit, window: 1m, max: 100, key: { type: client_ip }, scope: route }
  - { name: second, type: rate_limit, window: 1m, max: {{MAX2}}, key: { type: client_ip }, scope: route }
"#;

/// Local counters are kept per limit: changing (or adding, removing) another limit leaves an
/// unchanged limit counting — 60 spent of 100, another limit's quota changes, 40 more admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_local_limit_keeps_counting_when_another_limit_changes() {
    let _serial = SERIAL.read().await;
    let up = Upstream::start("svc").await;
    let text = |max2: u64| {
        fill(
            TWO_LIMITS,
            &[
                ("TOKEN", TOKEN.into()),
                ("UP", up.addr().to_string()),
                ("MAX2", max2.to_string()),
            ],
        )
    };
    let dir = tmpdir("two-limits");
    let path = dir.join("gw.yaml");
    std::fs::write(&path, text(10)).expect("write");
    let gw = start(&path).await;
    room_in_minute(Duration::from_secs(20)).await;
    assert_eq!(admitted(&gw.url(), 60).await, 60);
    let r = reload_with(&gw, &path, &text(20)).await;
    let v = r.json().expect("json");
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(
        v["summary"]["policies"]["changed"],
        serde_json::json!(["second"]),
        "{v}"
    );
    assert_eq!(admitted(&gw.url(), 50).await, 40, "hundred kept counting");
    let _ = std::fs::remove_dir_all(dir);
}

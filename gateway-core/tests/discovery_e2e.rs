//! Discovery end to end: a gateway (embedded, real listeners) whose upstream endpoints come from a
//! watched file, the Consul double and a real dnsmasq, with real HTTP upstreams and traffic running
//! while the sets change.
use gateway_core::proxy::server::Embedded;
use gateway_testkit::consul::{ConsulDouble, Instance};
use gateway_testkit::dnsmasq::Dnsmasq;
use gateway_testkit::{http_client, request, Method, Upstream};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn gateway(yaml: &str) -> Embedded {
    let c = gateway_core::compile("/tmp/gw-discovery-e2e.yaml", yaml, &|_| None);
    let warnings: Vec<_> = c.warnings().map(|d| d.message.clone()).collect();
    assert!(warnings.is_empty(), "warnings: {warnings:?}");
    let plan = c.plan.unwrap_or_else(|| panic!("{:?}", c.diagnostics));
    Embedded::start(plan).await.expect("gateway starts")
}

fn yaml(discovery: &str, extra: &str) -> String {
    format!(
        "listeners: [{{name: p, address: \"127.0.0.1:0\"}}]\nupstreams:\n  - name: svc\n    discovery: {discovery}\n{extra}routes:\n  - {{name: r, match: {{prefix: /}}, upstream: svc}}\n"
    )
}

/// Sequential traffic through the gateway until stopped (at most 20 000 requests): per answering
/// upstream (the `x-upstream` header, or the status for local answers) and the failures.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let client = http_client();
            for _ in 0..20_000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    request(&client, Method::GET, &format!("{url}/x"), &[], ""),
                )
                .await;
                let who = match r {
                    Ok(Ok(r)) if r.status == 200 => r
                        .headers
                        .get("x-upstream")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_string(),
                    Ok(Ok(r)) => format!("status {}", r.status.as_u16()),
                    Ok(Err(e)) => format!("error {e}"),
                    Err(_) => "timeout".into(),
                };
                v.lock().unwrap().push(who);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Load { stop, seen, task }
    }

    fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until the last `n` answers all came from `who` (bounded); returns the time it took.
    async fn until_only(&self, who: &[&str], n: usize, within: Duration) -> Duration {
        let t = Instant::now();
        loop {
            {
                let s = self.seen.lock().unwrap();
                if s.len() >= n && s[s.len() - n..].iter().all(|w| who.contains(&w.as_str())) {
                    return t.elapsed();
                }
                assert!(
                    t.elapsed() < within,
                    "last answers {:?}, wanted only {who:?}",
                    &s[s.len().saturating_sub(10)..]
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> HashMap<String, usize> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let mut m = HashMap::new();
        for w in self.seen.lock().unwrap().iter() {
            *m.entry(w.clone()).or_insert(0) += 1;
        }
        m
    }
}

fn failures(counts: &HashMap<String, usize>, ok: &[&str]) -> usize {
    counts
        .iter()
        .filter(|(k, _)| !ok.contains(&k.as_str()))
        .map(|(_, v)| v)
        .sum()
}

fn metric(gw: &Embedded, needle: &str) -> bool {
    gw.engine.metrics.render().contains(needle)
}

#[tokio::test]
async fn file_rewrites_move_traffic_without_failed_requests() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eps.txt");
    std::fs::write(&path, format!("{}\n", a.addr())).unwrap();
    let gw = gateway(&yaml(
        &format!(
            "{{type: file, path: \"{}\", interval: 60s}}",
            path.display()
        ),
        "",
    ))
    .await;
    let load = Load::start(gw.url());
    load.until_only(&["a"], 5, Duration::from_secs(10)).await;

    // atomic replace
    let tmp = dir.path().join("eps.tmp");
    std::fs::write(&tmp, format!("- address: \"{}\"\n", b.addr())).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let t1 = load.until_only(&["b"], 20, Duration::from_secs(10)).await;
    // the removed endpoint's series are gone (a stale `gw_endpoint_healthy` 1 would count it as
    // up), the new one's are there
    let series_of = |addr: String| format!("endpoint=\"{addr}\"");
    assert!(!metric(&gw, &series_of(a.addr().to_string())));
    assert!(metric(&gw, &series_of(b.addr().to_string())));
    let a_hits = a.hits();
    // in-place write: both
    std::fs::write(
        &path,
        format!(
            "[{{\"address\": \"{}\"}}, {{\"address\": \"{}\"}}]",
            a.addr(),
            b.addr()
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.hits() < a_hits + 5 {
        assert!(
            Instant::now() < deadline,
            "a gets no traffic after the in-place write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metric(&gw, &series_of(a.addr().to_string())), "a is back");
    // garbage: the last good set keeps serving both
    std::fs::write(&path, "this is not an endpoint list\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ha, hb) = (a.hits(), b.hits());
    let n = load.len();
    while load.len() < n + 40 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        a.hits() > ha && b.hits() > hb,
        "both keep serving after garbage"
    );
    assert!(metric(
        &gw,
        r#"gw_discovery_updates_total{result="failure",source="file",upstream="svc"}"#
    ));
    let counts = load.finish().await;
    eprintln!("file: moved to b after {t1:?}; answers {counts:?}");
    assert_eq!(failures(&counts, &["a", "b"]), 0, "{counts:?}");
}

#[tokio::test]
async fn consul_registrations_under_load_with_zero_failed_requests() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = ConsulDouble::start().await.unwrap();
    let inst =
        |id: &str, addr: SocketAddr| Instance::new(id, "svc", &addr.ip().to_string(), addr.port());
    c.register(inst("a", a.addr()));
    let gw = gateway(&yaml(
        &format!(
            "{{type: consul, url: \"{}\", service: svc, wait: 30s}}",
            c.url()
        ),
        "",
    ))
    .await;
    let load = Load::start(gw.url());
    load.until_only(&["a"], 5, Duration::from_secs(10)).await;
    assert!(metric(
        &gw,
        r#"gw_upstream_endpoints{source="consul",upstream="svc"} 1"#
    ));

    c.register(inst("b", b.addr()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.hits() == 0 {
        assert!(
            Instant::now() < deadline,
            "b registered but gets no traffic"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.deregister("a");
    let t = load.until_only(&["b"], 20, Duration::from_secs(5)).await;
    // no new request reaches a once it is gone
    let a_hits = a.hits();
    let n = load.len();
    while load.len() < n + 40 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.hits(), a_hits);

    // Consul goes down: the last known endpoints keep serving
    let mut c = c;
    c.stop();
    let n = load.len();
    while load.len() < n + 40 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = load.finish().await;
    eprintln!("consul: a drained {t:?} after deregistration; answers {counts:?}");
    assert_eq!(failures(&counts, &["a", "b"]), 0, "{counts:?}");
}

#[tokio::test]
async fn consul_with_no_passing_instance_answers_503_and_static_endpoints_stay() {
    let a = Upstream::start("a").await;
    let s = Upstream::start("s").await;
    let c = ConsulDouble::start().await.unwrap();
    c.register(Instance::new("a", "svc", "127.0.0.1", a.addr().port()));
    // only discovery: zero instances → 503 no_healthy_upstream
    let gw = gateway(&yaml(
        &format!("{{type: consul, url: \"{}\", service: svc}}", c.url()),
        "",
    ))
    .await;
    let r = gateway_testkit::get(&format!("{}/x", gw.url()))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    c.set_check("a", "critical");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = gateway_testkit::get(&format!("{}/x", gw.url()))
            .await
            .unwrap();
        if r.status == 503 {
            assert!(String::from_utf8_lossy(&r.body).contains("no_healthy_upstream"));
            break;
        }
        assert!(Instant::now() < deadline, "still {}", r.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // with a static endpoint as well, it keeps serving
    let gw2 = gateway(&format!(
        "listeners: [{{name: p, address: \"127.0.0.1:0\"}}]\nupstreams:\n  - name: svc\n    endpoints: [{{address: \"{}\"}}]\n    discovery: {{type: consul, url: \"{}\", service: svc}}\nroutes:\n  - {{name: r, match: {{prefix: /}}, upstream: svc}}\n",
        s.addr(),
        c.url()
    ))
    .await;
    let r = gateway_testkit::get(&format!("{}/x", gw2.url()))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("x-upstream").unwrap(), "s");
    assert!(metric(
        &gw2,
        r#"gw_upstream_endpoints{source="static",upstream="svc"} 1"#
    ));
}

#[tokio::test]
async fn a_discovered_endpoint_is_health_checked_before_it_gets_traffic() {
    let a = Upstream::start("a").await;
    let sick = Upstream::start("sick").await;
    sick.set_health(false);
    let c = ConsulDouble::start().await.unwrap();
    c.register(Instance::new("a", "svc", "127.0.0.1", a.addr().port()));
    let gw = gateway(&yaml(
        &format!("{{type: consul, url: \"{}\", service: svc, wait: 30s}}", c.url()),
        "    health_check: {path: /health, interval: 200ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1}\n",
    ))
    .await;
    let load = Load::start(gw.url());
    load.until_only(&["a"], 5, Duration::from_secs(10)).await;
    c.register(Instance::new(
        "sick",
        "svc",
        "127.0.0.1",
        sick.addr().port(),
    ));
    // the new set is in use once its endpoint was health-checked
    let deadline = Instant::now() + Duration::from_secs(5);
    while sick.health_hits() == 0 {
        assert!(
            Instant::now() < deadline,
            "the registered endpoint was never health-checked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let n = load.len();
    while load.len() < n + 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = load.finish().await;
    assert_eq!(
        sick.hits(),
        0,
        "an unhealthy endpoint got traffic: {counts:?}"
    );
    assert_eq!(failures(&counts, &["a"]), 0, "{counts:?}");
}

#[tokio::test]
async fn dns_record_changes_move_traffic() {
    // two upstreams on the same port, on two loopback addresses
    let a = Upstream::start_on("a", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port = a.addr().port();
    let Ok(b) = Upstream::start_on("b", SocketAddr::from(([127, 0, 0, 2], port))).await else {
        eprintln!("SKIPPED dns_record_changes_move_traffic: 127.0.0.2:{port} is taken");
        return;
    };
    let d = Dnsmasq::start("127.0.0.1 svc.test\n", 1, &[]);
    let gw = gateway(&yaml(
        &format!("{{type: dns, host: svc.test, port: {port}, resolver: \"{}\", min_interval: 200ms, max_interval: 2s}}", d.addr()),
        "",
    ))
    .await;
    let load = Load::start(gw.url());
    load.until_only(&["a"], 5, Duration::from_secs(10)).await;
    d.set_hosts("127.0.0.2 svc.test\n");
    // TTL 1 s + one interval (1 s), with margin for a loaded machine
    let t = load.until_only(&["b"], 20, Duration::from_secs(6)).await;
    drop(d); // DNS gone: the last good set keeps serving
    let n = load.len();
    while load.len() < n + 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = load.finish().await;
    eprintln!("dns: moved to b after {t:?}; answers {counts:?}");
    assert_eq!(failures(&counts, &["a", "b"]), 0, "{counts:?}");
    assert!(b.hits() > 100);
}

#[tokio::test]
async fn reload_keeps_an_unchanged_source_and_restarts_a_changed_one() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    std::fs::write(&pa, format!("{}\n", a.addr())).unwrap();
    std::fs::write(&pb, format!("{}\n", b.addr())).unwrap();
    let text = |p: &std::path::Path, prefix: &str| {
        format!(
            "listeners: [{{name: p, address: \"127.0.0.1:0\"}}]\nupstreams:\n  - name: svc\n    discovery: {{type: file, path: \"{}\", interval: 60s}}\nroutes:\n  - {{name: r, match: {{prefix: {prefix}}}, upstream: svc}}\n",
            p.display()
        )
    };
    let gw = gateway(&text(&pa, "/")).await;
    let load = Load::start(gw.url());
    load.until_only(&["a"], 5, Duration::from_secs(10)).await;
    let fetches = || {
        gw.engine
            .metrics
            .render()
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    r#"gw_discovery_updates_total{result="success",source="file",upstream="svc"} "#,
                )
                .map(|v| v.trim().parse::<u64>().unwrap())
            })
            .unwrap()
    };
    // same discovery, other routes: the source (and its set) carries over, no new read
    let before = fetches();
    let plan = |t: String| {
        gateway_core::compile("/tmp/x.yaml", &t, &|_| None)
            .plan
            .unwrap()
    };
    gw.engine.swap(plan(text(&pa, "/x"))).await.unwrap();
    assert_eq!(fetches(), before);
    assert_eq!(gw.engine.registry.discovery.len(), 1);
    load.until_only(&["a"], 10, Duration::from_secs(5)).await;
    // another file: a fresh source, applied by the reload itself
    gw.engine.swap(plan(text(&pb, "/"))).await.unwrap();
    let t = load.until_only(&["b"], 10, Duration::from_secs(5)).await;
    // no discovery any more: the source stops, the static endpoint serves
    gw.engine
        .swap(plan(format!(
            "listeners: [{{name: p, address: \"127.0.0.1:0\"}}]\nupstreams:\n  - {{name: svc, endpoints: [{{address: \"{}\"}}]}}\nroutes:\n  - {{name: r, match: {{prefix: /}}, upstream: svc}}\n",
            a.addr()
        )))
        .await
        .unwrap();
    assert_eq!(gw.engine.registry.discovery.len(), 0);
    load.until_only(&["a"], 10, Duration::from_secs(5)).await;
    let counts = load.finish().await;
    eprintln!("reload: moved to b after {t:?}; answers {counts:?}");
    assert_eq!(failures(&counts, &["a", "b"]), 0, "{counts:?}");
}

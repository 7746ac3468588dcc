//! The embedding examples, exercised with real requests: each example's service (its `ProxyHttp`,
//! built by the example's own code) is served on a free loopback port by [`gw_suite::serve_app`] in
//! front of real testkit upstreams; a dead upstream is a port nothing listens on.
//!
//! `embed_policies`: 401 without a token, 200 with one (claims forwarded, forged copies removed,
//! rate-limit headers), 429 after the per-user limit, the service's own routing and metrics, and the
//! breaker opening against a dead upstream (502 twice, then 503 `circuit_open`).
//! `embed_gateway`: the low-level `Gateway` + `AdminApp` + background service.

#[allow(dead_code)]
#[path = "../examples/embed_policies.rs"]
mod embed_policies;

#[allow(dead_code)]
#[path = "../examples/embed_gateway.rs"]
mod embed_gateway;

use gateway_testkit::prom::Scrape;
use gateway_testkit::wait::until;
use gateway_testkit::{http_client, jwt, Bytes, HttpResponse, Method, Upstream};
use pingora::server::configuration::ServerConf;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "a-secret-of-at-least-32-bytes-long!";

async fn call(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    gateway_testkit::send(&http_client(), Method::GET, url, headers, Bytes::new()).await
}

/// A loopback address nothing listens on (bound, then released).
fn dead_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn error_code(r: &HttpResponse) -> String {
    let v = r.json().unwrap_or_else(|e| panic!("{e}: {}", r.text()));
    assert_eq!(
        v["request_id"].as_str(),
        r.header("x-request-id"),
        "the body's request_id is X-Request-Id"
    );
    v["error"].as_str().unwrap_or_default().to_string()
}

/// `gw_requests_total` of a guard with a status, from the policies' own registry.
fn requests(p: &gateway_core::policies::Policies, guard: &str, status: &str) -> f64 {
    Scrape::parse(&p.render_metrics())
        .sum_matching("gw_requests_total", &[("route", guard), ("status", status)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_policies_jwt_rate_limit_and_breaker_in_an_own_proxy() {
    let orders = Upstream::start("orders").await;
    let dead = dead_addr();
    let (orders_addr, dead_s) = (orders.addr().to_string(), dead.to_string());
    let env = move |k: &str| match k {
        "JWT_SECRET" => Some(SECRET.to_string()),
        "ORDERS_ADDR" => Some(orders_addr.clone()),
        "INVENTORY_ADDR" => Some(dead_s.clone()),
        _ => None,
    };
    let shop = embed_policies::Shop::new(&env).unwrap_or_else(|e| panic!("{e}"));
    let policies = shop.policies.clone();
    policies.warm_up().await;
    let conf = Arc::new(ServerConf::default());
    let svc = gw_suite::serve_app(pingora::proxy::http_proxy(&conf, shop)).await;
    let orders_url = format!("{}/orders/1", svc.url());

    // no token: 401 from gw's policy, never reaches the upstream
    let r = call(&orders_url, &[]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(error_code(&r), "missing_token");
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(orders.hits(), 0);

    // a token: 200 from the upstream, the claim forwarded, the forged header gone
    let alice = format!("Bearer {}", jwt::hs256_for(SECRET.as_bytes(), "alice", 300));
    let auth = [("authorization", alice.as_str()), ("x-user-id", "forged")];
    let r = call(&orders_url, &auth).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("orders"));
    assert!(r.header("ratelimit-policy").is_some(), "{:?}", r.headers);
    let seen = orders.last_request().expect("the upstream saw the request");
    assert_eq!(seen.header("x-user-id").as_deref(), Some("alice"));
    assert_eq!(seen.headers.get_all("x-user-id").iter().count(), 1);

    // 5 per minute per user: 4 more pass, the 6th is a 429 that does not reach the upstream
    for i in 2..=5 {
        let r = call(&orders_url, &auth).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let r = call(&orders_url, &auth).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(error_code(&r), "rate_limited");
    assert!(r.header("retry-after").is_some());
    assert_eq!(orders.hits(), 5);
    // another user has their own quota
    let bob = format!("Bearer {}", jwt::hs256_for(SECRET.as_bytes(), "bob", 300));
    let r = call(&orders_url, &[("authorization", bob.as_str())]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // the service's own routing and its /metrics with gw's series
    assert_eq!(call(&format!("{}/nope", svc.url()), &[]).await.status, 404);
    let m = call(&format!("{}/metrics", svc.url()), &[]).await;
    assert_eq!(m.status, 200);
    let s = Scrape::parse(&m.text());
    assert_eq!(
        s.sum_matching(
            "gw_requests_total",
            &[("route", "orders"), ("status", "200")]
        ),
        6.0
    );
    assert_eq!(
        s.sum_matching(
            "gw_requests_total",
            &[("route", "orders"), ("status", "429")]
        ),
        1.0
    );

    // a dead upstream: 502 upstream_unavailable twice (each reported as a connect failure), then
    // the breaker is open and answers 503 circuit_open without trying the upstream
    let inv_url = format!("{}/inventory/7", svc.url());
    let bob_h = [("authorization", bob.as_str())];
    for n in 1..=2 {
        let r = call(&inv_url, &bob_h).await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(error_code(&r), "upstream_unavailable");
        // `logging` reports after the response went out: wait for it before the next request
        until(
            "the connect failure is reported",
            Duration::from_secs(5),
            || requests(&policies, "inventory", "502") == n as f64,
        )
        .await;
    }
    let r = call(&inv_url, &bob_h).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(error_code(&r), "circuit_open");
    assert!(r.header("retry-after").is_some());
    let s = Scrape::parse(&policies.render_metrics());
    assert_eq!(
        s.get("gw_breaker_state", &[("upstream", "inventory")]),
        Some(2.0),
        "open"
    );
    assert_eq!(
        s.get("gw_breaker_state", &[("upstream", "orders")]),
        Some(0.0),
        "closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_gateway_serves_a_plan_with_gateway_admin_and_background() {
    let up = Upstream::start("svc").await;
    let dir = std::env::temp_dir().join(format!("gw-embed-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
upstreams: [{{ name: svc, endpoints: [{{ address: "{}" }}] }}]
routes:
  - {{ name: open, match: {{ prefix: /open }}, upstream: svc }}
  - {{ name: closed, match: {{ prefix: /closed }}, upstream: svc, policies: [jwt] }}
policies:
  - {{ name: jwt, type: jwt, keys: {{ type: hmac, secret: "{SECRET}" }} }}
"#,
            up.addr()
        ),
    )
    .unwrap();
    let plan = embed_gateway::load_plan(path.to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(embed_gateway::load_plan("/nonexistent/gateway.yaml").is_err());

    let engine = gateway_core::proxy::server::build_engine(plan).expect("engine");
    let conf = Arc::new(ServerConf::default());
    let gateway = gateway_core::proxy::Gateway::new(engine.clone());
    let proxy = gw_suite::serve_app(pingora::proxy::http_proxy(&conf, gateway)).await;
    let admin = gateway_core::proxy::admin::AdminApp {
        engine: engine.clone(),
        token: None,
    };
    let admin = gw_suite::serve_app(pingora::apps::http_app::HttpServer::new_app(admin)).await;

    // not warmed up yet: not ready
    assert_eq!(
        call(&format!("{}/readyz", admin.url()), &[]).await.status,
        503
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let bg = embed_gateway::GwBackground(engine.clone());
    let task = tokio::spawn(async move { bg.start(shutdown).await });
    let ready = format!("{}/readyz", admin.url());
    gateway_testkit::wait::until_async("the engine is ready", Duration::from_secs(10), || {
        let ready = ready.clone();
        async move { call(&ready, &[]).await.status == 200 }
    })
    .await;

    let r = call(&format!("{}/open/x", proxy.url()), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.header("x-upstream")),
        (200, Some("svc"))
    );
    let r = call(&format!("{}/closed/x", proxy.url()), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(error_code(&r), "missing_token");
    let t = format!("Bearer {}", jwt::hs256_for(SECRET.as_bytes(), "u", 60));
    let r = call(
        &format!("{}/closed/x", proxy.url()),
        &[("authorization", &t)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        call(&format!("{}/none", proxy.url()), &[]).await.status,
        404
    );
    let m = call(&format!("{}/metrics", admin.url()), &[]).await;
    let s = Scrape::parse(&m.text());
    assert_eq!(
        s.sum_matching("gw_requests_total", &[("route", "closed")]),
        2.0
    );

    // the background service ends with the shutdown signal
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the background service stops on shutdown")
        .unwrap();
}

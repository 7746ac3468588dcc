//! The admin API for upstreams, registrations and routes, end to end: the gateway runs in-process
//! (`gw_suite::gateway`) in front of real testkit upstreams on `127.0.0.1:0`; requests and admin calls
//! go over real TCP.
//!
//! - a registered endpoint gets traffic once its health check passes; an unhealthy one gets none
//!   [`registered_endpoint_gets_traffic_after_its_health_check`];
//! - deregistering under load (16 clients): 0 failed requests, in-flight requests finish, no new request
//!   reaches it [`deregister_under_load_fails_nothing_and_stops_new_requests`];
//! - bad inputs: 400/404/409 with JSON bodies; no token: 401
//!   [`bad_inputs_get_json_errors_and_no_token_gets_401`];
//! - a reload keeps the registrations of upstreams that remain and drops the others
//!   [`a_reload_keeps_registrations_of_remaining_upstreams`];
//! - registrations survive discovery updates (file source) and combine with them
//!   [`registrations_survive_discovery_updates_and_combine_with_them`];
//! - `GET /admin/routes` lists the routes in the order dry-run matches them
//!   [`routes_are_listed_in_dry_run_match_order`].
use gateway_testkit::prom::Scrape;
use gateway_testkit::{http_client, send, HttpClient, HttpResponse, Method, Mode, Upstream};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "registration-admin-token-0123";
const AUTH: (&str, &str) = ("authorization", "Bearer registration-admin-token-0123");

fn config(static_ep: &str, extra_upstreams: &str) -> String {
    format!(
        r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0", token: "{TOKEN}" }}
upstreams:
  - name: svc
    endpoints: [{{ address: "{static_ep}" }}]
    load_balancing: {{ type: round_robin }}
    health_check: {{ path: /health, interval: 100ms, timeout: 500ms }}
{extra_upstreams}
routes:
  - {{ name: svc, match: {{ prefix: /svc }}, upstream: svc }}
"#
    )
}

struct Admin {
    c: HttpClient,
    base: String,
}

impl Admin {
    fn of(gw: &gateway_core::proxy::server::Embedded) -> Admin {
        Admin {
            c: http_client(),
            base: format!("http://{}", gw.admin_addr.expect("admin listener")),
        }
    }
    async fn call(&self, m: Method, path: &str, body: &str) -> HttpResponse {
        let mut h = vec![AUTH];
        if !body.is_empty() {
            h.push(("content-type", "application/json"));
        }
        send(
            &self.c,
            m,
            &format!("{}{path}", self.base),
            &h,
            body.to_string(),
        )
        .await
    }
    async fn register(&self, up: &str, addr: &str, weight: u32) -> HttpResponse {
        self.call(
            Method::POST,
            &format!("/admin/upstreams/{up}/endpoints"),
            &format!(r#"{{"address": "{addr}", "weight": {weight}}}"#),
        )
        .await
    }
    async fn endpoints(&self, up: &str) -> Vec<Value> {
        let r = self.call(Method::GET, "/admin/upstreams", "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json().unwrap();
        v["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == up)
            .unwrap_or_else(|| panic!("no upstream {up} in {v}"))["endpoints"]
            .as_array()
            .unwrap()
            .clone()
    }
    async fn scrape(&self) -> Scrape {
        let r = send(
            &self.c,
            Method::GET,
            &format!("{}/metrics", self.base),
            &[],
            "",
        )
        .await;
        Scrape::parse(&r.text())
    }
}

fn endpoint<'a>(eps: &'a [Value], addr: &str) -> &'a Value {
    eps.iter()
        .find(|e| e["address"] == addr)
        .unwrap_or_else(|| panic!("no endpoint {addr} in {eps:?}"))
}

#[tokio::test]
async fn registered_endpoint_gets_traffic_after_its_health_check() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let sick = Upstream::start("sick").await;
    sick.set_health(false);
    let gw = gw_suite::gateway(&config(&a.addr().to_string(), ""), &[]).await;
    let admin = Admin::of(&gw);
    let c = http_client();
    let url = format!("{}/svc/x", gw.url());

    // an endpoint whose health check fails is registered but gets no request, from the first one on
    let r = admin.register("svc", &sick.addr().to_string(), 1).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json().unwrap();
    assert_eq!(v["source"], "admin");
    assert_eq!(v["healthy"], false, "{v}");
    for _ in 0..20 {
        assert_eq!(send(&c, Method::GET, &url, &[], "").await.status, 200);
    }
    assert_eq!(
        sick.hits(),
        0,
        "an unhealthy registered endpoint got traffic"
    );
    assert!(sick.health_hits() > 0, "it was health-checked");

    // a healthy one: checked first, then gets its share at once
    let r = admin.register("svc", &b.addr().to_string(), 2).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json().unwrap()["healthy"], true);
    assert!(b.health_hits() > 0, "checked before traffic");
    for _ in 0..30 {
        assert_eq!(send(&c, Method::GET, &url, &[], "").await.status, 200);
    }
    assert!(b.hits() >= 10, "b got {} of 30", b.hits());
    assert_eq!(sick.hits(), 0);

    let eps = admin.endpoints("svc").await;
    assert_eq!(eps.len(), 3, "{eps:?}");
    let e = endpoint(&eps, &a.addr().to_string());
    assert_eq!(
        (e["source"].as_str(), e["weight"].as_u64()),
        (Some("static"), Some(1))
    );
    let e = endpoint(&eps, &b.addr().to_string());
    assert_eq!(e["source"], "admin");
    assert_eq!(e["weight"], 2);
    assert_eq!(e["healthy"], true);
    assert_eq!(e["ejected"], false);
    assert_eq!(e["in_flight"], 0);
    assert_eq!(endpoint(&eps, &sick.addr().to_string())["healthy"], false);

    // metrics: the admin source's endpoint count and update counter
    let s = admin.scrape().await;
    let l = [("upstream", "svc"), ("source", "admin")];
    assert_eq!(s.get("gw_upstream_endpoints", &l), Some(2.0));
    assert_eq!(
        s.get(
            "gw_discovery_updates_total",
            &[
                ("upstream", "svc"),
                ("source", "admin"),
                ("result", "success")
            ]
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn deregister_under_load_fails_nothing_and_stops_new_requests() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    // slow enough that requests are in flight on b when it is deregistered
    b.set_mode(Mode::Delay(Duration::from_millis(150)));
    let gw = gw_suite::gateway(&config(&a.addr().to_string(), ""), &[]).await;
    let admin = Admin::of(&gw);
    assert_eq!(
        admin.register("svc", &b.addr().to_string(), 1).await.status,
        201
    );

    let url = format!("{}/svc/x", gw.url());
    let stop_at = Instant::now() + Duration::from_millis(2500);
    let failed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (url, failed, done) = (url.clone(), failed.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let c = http_client();
            while Instant::now() < stop_at {
                let r = gateway_testkit::request(&c, Method::GET, &url, &[], "").await;
                match r {
                    Ok(r) if r.status == 200 => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(b.hits() > 0, "b got traffic before deregistration");
    let path = format!("/admin/upstreams/svc/endpoints/{}", b.addr());
    let r = admin.call(Method::DELETE, &path, "").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    let at_delete = b.hits();
    // requests picked before the swap may still arrive (at most one per client); none after
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = b.hits();
    assert!(settled <= at_delete + 16, "{at_delete} -> {settled}");
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(
        b.hits(),
        settled,
        "a new request reached the deregistered endpoint"
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests");
    assert!(done.load(Ordering::Relaxed) > 50);
    let eps = admin.endpoints("svc").await;
    assert_eq!(eps.len(), 1, "{eps:?}");
    let s = admin.scrape().await;
    assert_eq!(
        s.get(
            "gw_upstream_endpoints",
            &[("upstream", "svc"), ("source", "admin")]
        ),
        Some(0.0)
    );
}

async fn assert_error(r: HttpResponse, status: u16, code: &str, says: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r
        .json()
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()));
    assert_eq!(v["error"], code, "{v}");
    let m = v["message"].as_str().unwrap_or_default();
    assert!(m.contains(says), "message {m:?} should say {says:?}");
    assert!(v["request_id"].is_string(), "{v}");
}

#[tokio::test]
async fn bad_inputs_get_json_errors_and_no_token_gets_401() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = gw_suite::gateway(&config(&a.addr().to_string(), ""), &[]).await;
    let admin = Admin::of(&gw);
    let reg = |body: &'static str| {
        let admin = &admin;
        async move {
            admin
                .call(Method::POST, "/admin/upstreams/svc/endpoints", body)
                .await
        }
    };
    assert_error(reg("{").await, 400, "bad_request", "the body must be").await;
    assert_error(
        reg(r#"{"address": "127.0.0.1:3001", "wieght": 2}"#).await,
        400,
        "bad_request",
        "unknown field",
    )
    .await;
    assert_error(
        reg(r#"{"address": "nope"}"#).await,
        400,
        "bad_request",
        "invalid endpoint address",
    )
    .await;
    assert_error(
        reg(r#"{"address": "127.0.0.1:0"}"#).await,
        400,
        "bad_request",
        "invalid endpoint address",
    )
    .await;
    assert_error(
        reg(r#"{"address": "db.internal:80"}"#).await,
        400,
        "bad_request",
        "not an IP address",
    )
    .await;
    assert_error(
        reg(r#"{"address": "127.0.0.1:3001", "weight": 0}"#).await,
        400,
        "bad_request",
        "weight must be between 1 and 1000",
    )
    .await;
    assert_error(
        reg(r#"{"address": "127.0.0.1:3001", "weight": 1001}"#).await,
        400,
        "bad_request",
        "weight must be between 1 and 1000",
    )
    .await;
    // unknown upstream (POST and DELETE), unknown address
    let r = admin.register("nope", "127.0.0.1:3001", 1).await;
    assert_error(r, 404, "not_found", "no upstream named \"nope\"").await;
    let r = admin
        .call(
            Method::DELETE,
            "/admin/upstreams/nope/endpoints/127.0.0.1:3001",
            "",
        )
        .await;
    assert_error(r, 404, "not_found", "no upstream").await;
    let r = admin
        .call(
            Method::DELETE,
            "/admin/upstreams/svc/endpoints/127.0.0.1:3001",
            "",
        )
        .await;
    assert_error(r, 404, "not_found", "not a registered endpoint").await;
    // already there: the static endpoint, then a registered one
    let r = admin.register("svc", &a.addr().to_string(), 1).await;
    assert_error(r, 409, "conflict", "source static").await;
    assert_eq!(
        admin.register("svc", &b.addr().to_string(), 1).await.status,
        201
    );
    let r = admin.register("svc", &b.addr().to_string(), 3).await;
    assert_error(r, 409, "conflict", "already").await;
    // a static endpoint cannot be deregistered
    let r = admin
        .call(
            Method::DELETE,
            &format!("/admin/upstreams/svc/endpoints/{}", a.addr()),
            "",
        )
        .await;
    assert_error(r, 404, "not_found", "not a registered endpoint").await;
    // nothing of that changed the registrations
    assert_eq!(admin.endpoints("svc").await.len(), 2);
    // failures are counted for the admin source
    let s = admin.scrape().await;
    assert!(
        s.get(
            "gw_discovery_updates_total",
            &[
                ("upstream", "svc"),
                ("source", "admin"),
                ("result", "failure")
            ]
        ) >= Some(9.0)
    );

    // no token, a wrong token: 401 on every endpoint of this API, and nothing changes
    let c = http_client();
    for (m, path, body) in [
        (Method::GET, "/admin/upstreams".to_string(), String::new()),
        (Method::GET, "/admin/routes".to_string(), String::new()),
        (
            Method::POST,
            "/admin/upstreams/svc/endpoints".to_string(),
            r#"{"address": "127.0.0.1:3009"}"#.to_string(),
        ),
        (
            Method::DELETE,
            format!("/admin/upstreams/svc/endpoints/{}", b.addr()),
            String::new(),
        ),
    ] {
        for h in [
            vec![],
            vec![("authorization", "Bearer wrong-token-wrong-token")],
        ] {
            let r = send(
                &c,
                m.clone(),
                &format!("{}{path}", admin.base),
                &h,
                body.clone(),
            )
            .await;
            assert_eq!(r.status, 401, "{m} {path}: {}", r.text());
            assert_eq!(r.json().unwrap()["error"], "unauthorized");
        }
    }
    assert_eq!(admin.endpoints("svc").await.len(), 2);
}

#[tokio::test]
async fn a_reload_keeps_registrations_of_remaining_upstreams() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let o = Upstream::start("o").await;
    let other = format!(
        "  - {{ name: other, endpoints: [{{ address: \"{}\" }}] }}",
        o.addr()
    );
    let gw = gw_suite::gateway(&config(&a.addr().to_string(), &other), &[]).await;
    let admin = Admin::of(&gw);
    assert_eq!(
        admin.register("svc", &b.addr().to_string(), 1).await.status,
        201
    );
    assert_eq!(
        admin
            .register("other", &b.addr().to_string(), 1)
            .await
            .status,
        201
    );
    // a reload with another health check interval (a new endpoint set) and without `other`
    let plan = gw_suite::plan(
        &config(&a.addr().to_string(), "").replace("interval: 100ms", "interval: 200ms"),
        &[],
    );
    gw.engine.swap(plan).await.expect("reload");
    let eps = admin.endpoints("svc").await;
    assert_eq!(endpoint(&eps, &b.addr().to_string())["source"], "admin");
    let v = admin
        .call(Method::GET, "/admin/upstreams", "")
        .await
        .json()
        .unwrap();
    assert_eq!(v["upstreams"].as_array().unwrap().len(), 1, "{v}");
    // `other` comes back in the next reload without its registration
    let plan = gw_suite::plan(&config(&a.addr().to_string(), &other), &[]);
    gw.engine.swap(plan).await.expect("reload");
    assert_eq!(admin.endpoints("other").await.len(), 1);
    // and svc's registered endpoint still gets traffic
    let c = http_client();
    for _ in 0..10 {
        assert_eq!(
            send(&c, Method::GET, &format!("{}/svc/x", gw.url()), &[], "")
                .await
                .status,
            200
        );
    }
    assert!(b.hits() >= 3, "b got {}", b.hits());
}

#[tokio::test]
async fn routes_are_listed_in_dry_run_match_order() {
    let a = Upstream::start("a").await;
    // declared out of match order on purpose
    let yaml = format!(
        r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0", token: "{TOKEN}" }}
upstreams: [{{ name: svc, endpoints: [{{ address: "{}" }}] }}]
routes:
  - {{ name: root, match: {{ prefix: / }}, upstream: svc }}
  - {{ name: api, match: {{ prefix: /api }}, upstream: svc }}
  - {{ name: users, match: {{ prefix: /api/users, methods: [GET, POST] }}, upstream: svc }}
  - {{ name: user, match: {{ pattern: "/api/users/{{id}}" }}, upstream: svc }}
  - {{ name: me, match: {{ path: /api/users/me, hosts: [api.example.com] }}, upstream: svc }}
"#,
        a.addr()
    );
    let gw = gw_suite::gateway(&yaml, &[]).await;
    let admin = Admin::of(&gw);
    let r = admin.call(Method::GET, "/admin/routes", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json().unwrap();
    let routes = v["routes"].as_array().unwrap();
    let names: Vec<&str> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["me", "user", "users", "api", "root"]);
    let users = &routes[2];
    assert_eq!(users["methods"], serde_json::json!(["GET", "POST"]));
    assert_eq!(users["upstream"], "svc");
    assert_eq!(routes[0]["hosts"], serde_json::json!(["api.example.com"]));
    // each probe matches every route from its expected one down the list: dry-run picks the first
    let plan = gw_suite::plan(&yaml, &[]);
    for (path, want) in [
        ("/api/users/me", "me"),
        ("/api/users/7", "user"),
        ("/api/users/7/x", "users"),
        ("/api/x", "api"),
        ("/x", "root"),
    ] {
        let ex = gateway_core::explain::explain(
            &plan,
            &gateway_core::explain::DryRunRequest {
                method: "GET".into(),
                target: path.into(),
                headers: vec![("host".into(), "api.example.com".into())],
                client_ip: "127.0.0.1".parse().unwrap(),
            },
        );
        assert_eq!(ex.route.as_deref(), Some(want), "{path}");
    }
}

#[tokio::test]
async fn registrations_survive_discovery_updates_and_combine_with_them() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let f = Upstream::start("f").await;
    let dir = std::env::temp_dir().join(format!("gw-registration-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("eps.txt");
    std::fs::write(&file, format!("{}\n", a.addr())).unwrap();
    let yaml = format!(
        r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0", token: "{TOKEN}" }}
upstreams:
  - name: svc
    discovery: {{ type: file, path: "{}", interval: 100ms }}
routes: [{{ name: svc, match: {{ prefix: /svc }}, upstream: svc }}]
"#,
        file.display()
    );
    let gw = gw_suite::gateway(&yaml, &[]).await;
    let admin = Admin::of(&gw);
    assert_eq!(
        admin.register("svc", &b.addr().to_string(), 1).await.status,
        201
    );
    // the same address as the file: 409, it is there already (source file)
    let r = admin.register("svc", &a.addr().to_string(), 1).await;
    assert_eq!(r.status, 409, "{}", r.text());
    // the file changes: the discovered part follows, the registration stays
    let tmp = dir.join("eps.tmp");
    std::fs::write(&tmp, format!("{}\n", f.addr())).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let want = |eps: &[Value]| {
        let mut v: Vec<(String, String)> = eps
            .iter()
            .map(|e| {
                (
                    e["address"].as_str().unwrap().to_string(),
                    e["source"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut expected = vec![
        (b.addr().to_string(), "admin".to_string()),
        (f.addr().to_string(), "file".to_string()),
    ];
    expected.sort();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = want(&admin.endpoints("svc").await);
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "endpoints never became {expected:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = http_client();
    for _ in 0..10 {
        assert_eq!(
            send(&c, Method::GET, &format!("{}/svc/x", gw.url()), &[], "")
                .await
                .status,
            200
        );
    }
    assert!(
        b.hits() >= 3 && f.hits() >= 3,
        "b {} f {}",
        b.hits(),
        f.hits()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

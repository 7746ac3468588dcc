//! Carry-over by identity: runtimes rebuilt from equal plans share state; changed parameters give fresh
//! state; `retain_only` forgets what a plan no longer uses; `Engine::swap` keeps a limit's counters
//! against a real upstream.
use super::*;
use crate::observability::Metrics;
use crate::plan::Plan;
use crate::policy::breaker::{ForcedState, State};
use crate::proxy::runtime::Runtime;
use crate::proxy::server::Embedded;
use std::time::Instant;

fn config(max: u64, upstream: &str, route: &str) -> String {
    format!(
        r#"
listeners: [{{ name: l, address: "127.0.0.1:0" }}]
upstreams:
  - name: u
    endpoints: [{{ address: "{upstream}" }}]
    circuit_breaker: {{ failure_threshold: 5, success_threshold: 1, open_duration: 10s }}
    outlier_detection: {{ consecutive_failures: 3, base_ejection: 10s }}
policies:
  - {{ name: per-ip, type: rate_limit, window: 60s, max: {max}, key: {{ type: client_ip }} }}
routes:
  - {{ name: {route}, match: {{ prefix: / }}, upstream: u, policies: [per-ip] }}
"#
    )
}

fn plan(text: &str) -> Plan {
    let c = crate::compile("t.yaml", text, &|_| None);
    c.plan
        .unwrap_or_else(|| panic!("invalid test config: {:?}", c.diagnostics))
}

fn build(p: Plan, m: &Metrics, r: &Registry) -> Runtime {
    Runtime::build(Arc::new(p), m, r).expect("runtime builds")
}

async fn spend(rt: &Runtime, n: usize) {
    let l = rt.limits.as_ref().expect("limits");
    for _ in 0..n {
        let d = l
            .limiter
            .check_all(&[(l.refs[0], b"g|k".as_slice())], 1_000_000)
            .await;
        assert!(d.admitted);
    }
}

fn count(rt: &Runtime) -> Option<u64> {
    let l = rt.limits.as_ref()?;
    l.limiter.local_counts(l.refs[0], b"g|k").map(|(_, _, c)| c)
}

#[tokio::test]
async fn equal_plans_share_state_and_changed_parameters_get_fresh_state() {
    let m = Metrics::new().unwrap();
    let reg = Registry::new();
    let a = build(plan(&config(100, "127.0.0.1:9", "r")), &m, &reg);
    spend(&a, 3).await;
    let breaker = a.upstreams[0].breaker.as_ref().unwrap();
    breaker.force(ForcedState::Open);
    // an equal plan (and one differing only in a route name): everything carries over
    for route in ["r", "other"] {
        let b = build(plan(&config(100, "127.0.0.1:9", route)), &m, &reg);
        assert_eq!(count(&b), Some(3), "counters carried over");
        assert!(Arc::ptr_eq(
            a.limits.as_ref().unwrap(),
            b.limits.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            &a.upstreams[0].balancer,
            &b.upstreams[0].balancer
        ));
        let ob = b.upstreams[0].outlier.as_ref().unwrap();
        assert!(Arc::ptr_eq(a.upstreams[0].outlier.as_ref().unwrap(), ob));
        let bb = b.upstreams[0].breaker.as_ref().unwrap();
        assert_eq!(
            bb.state(Instant::now()),
            State::Open,
            "breaker state carried over"
        );
    }
    // a changed max: fresh counters; a changed endpoint: fresh endpoint set and outlier state, but the
    // breaker (same upstream, same parameters) keeps its state
    let c = build(plan(&config(50, "127.0.0.1:10", "r")), &m, &reg);
    assert_eq!(count(&c), None, "fresh counters after changing max");
    assert!(!Arc::ptr_eq(
        &a.upstreams[0].balancer,
        &c.upstreams[0].balancer
    ));
    let oc = c.upstreams[0].outlier.as_ref().unwrap();
    assert!(!Arc::ptr_eq(a.upstreams[0].outlier.as_ref().unwrap(), oc));
    let cb = c.upstreams[0].breaker.as_ref().unwrap();
    assert_eq!(cb.state(Instant::now()), State::Open);
    // the old runtime still works on its own state
    assert_eq!(count(&a), Some(3));
}

#[tokio::test]
async fn retain_only_forgets_what_the_plan_no_longer_uses() {
    let m = Metrics::new().unwrap();
    let reg = Registry::new();
    let a = build(plan(&config(100, "127.0.0.1:9", "r")), &m, &reg);
    assert_eq!(reg.counts(), [1, 1, 1, 0, 1, 0]);
    let without = r#"
listeners: [{ name: l, address: "127.0.0.1:0" }]
upstreams: [{ name: v, endpoints: [{ address: "127.0.0.1:9" }] }]
routes: [{ name: r, match: { prefix: / }, upstream: v }]
"#;
    let p = plan(without);
    let b = build(p, &m, &reg);
    reg.retain_only(&b.plan);
    assert_eq!(
        reg.counts(),
        [1, 0, 0, 0, 0, 0],
        "only v's endpoint set is left"
    );
    // the old runtime keeps what it holds until it is dropped
    let weak = Arc::downgrade(a.limits.as_ref().unwrap());
    spend(&a, 1).await;
    drop(a);
    assert!(weak.upgrade().is_none(), "dropped with the last runtime");
    // coming back gives fresh state
    let c = build(plan(&config(100, "127.0.0.1:9", "r")), &m, &reg);
    assert_eq!(count(&c), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_keeps_counting_across_an_engine_swap() {
    let up = gateway_testkit::Upstream::start("a").await;
    let addr = up.addr().to_string();
    let gw = Embedded::start(plan(&config(3, &addr, "r")))
        .await
        .expect("gateway starts");
    let url = format!("{}/x", gw.url());
    for _ in 0..2 {
        let r = gateway_testkit::get(&url).await.expect("request");
        assert_eq!(r.status, 200);
    }
    // a reload that renames the route: the limit is unchanged, its counters carry over
    gw.engine
        .swap(plan(&config(3, &addr, "renamed")))
        .await
        .expect("swap");
    assert_eq!(&*gw.engine.runtime().plan.routes[0].name, "renamed");
    let r = gateway_testkit::get(&url).await.expect("request");
    assert_eq!(r.status, 200, "third request of 3");
    let r = gateway_testkit::get(&url).await.expect("request");
    assert_eq!(r.status, 429, "the quota was not reset by the swap");
    // a changed quota is a new limit: fresh counters
    gw.engine
        .swap(plan(&config(5, &addr, "renamed")))
        .await
        .expect("swap");
    let r = gateway_testkit::get(&url).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 4);
    gw.stop();
}

/// A static endpoint's address is resolved once per plan: a rebuild from the same plan (discovery,
/// registration) does not ask DNS again (nor fail when it is down); a new plan resolves afresh; a
/// failed lookup is not remembered.
#[tokio::test]
async fn static_endpoints_resolve_once_per_plan() {
    let text = r#"
listeners: [{ name: l, address: "127.0.0.1:0" }]
upstreams: [{ name: u, endpoints: [{ address: "localhost:9" }] }]
routes: [{ name: r, match: { prefix: / }, upstream: u }]
"#;
    let m = Metrics::new().unwrap();
    let reg = Registry::new();
    let p = Arc::new(plan(text));
    let rt = Runtime::build(p.clone(), &m, &reg).expect("runtime builds");
    let resolved = rt.upstreams[0].balancer.endpoints[0].addr;
    assert_eq!(resolved.port(), 9);
    let u: Arc<str> = "u".into();
    let never =
        || -> Result<std::net::SocketAddr, ()> { panic!("resolved again for the same plan") };
    // what a rebuild from the same plan gets: the build's answer, no lookup
    assert_eq!(reg.static_addr(&p, &u, "localhost:9", never), Ok(resolved));
    let again = Runtime::build(p.clone(), &m, &reg).expect("rebuild");
    assert_eq!(again.upstreams[0].balancer.endpoints[0].addr, resolved);
    // a new plan (a reload) resolves again; a failure is returned and not kept
    let q = Arc::new(plan(text));
    let other: std::net::SocketAddr = "127.0.0.2:9".parse().unwrap();
    assert_eq!(
        reg.static_addr(&q, &u, "localhost:9", || Err("dns down")),
        Err("dns down")
    );
    assert_eq!(
        reg.static_addr(&q, &u, "localhost:9", || Ok::<_, ()>(other)),
        Ok(other)
    );
    assert_eq!(reg.static_addr(&q, &u, "localhost:9", never), Ok(other));
}

/// When an upstream's endpoint set changes (discovery, registration, reload), the endpoints it keeps
/// keep their outlier state: an ejected endpoint is not brought back by another endpoint coming or
/// going. Changed outlier settings start afresh.
#[tokio::test]
async fn outlier_state_of_kept_endpoints_survives_a_set_change() {
    let yaml = |eps: &str, failures: u32| {
        format!(
            r#"
listeners: [{{ name: l, address: "127.0.0.1:0" }}]
upstreams:
  - name: u
    endpoints: [{eps}]
    outlier_detection: {{ consecutive_failures: {failures}, base_ejection: 60s }}
routes: [{{ name: r, match: {{ prefix: / }}, upstream: u }}]
"#
        )
    };
    let (a, b, c) = (
        r#"{ address: "127.0.0.1:9001" }"#,
        r#"{ address: "127.0.0.1:9002" }"#,
        r#"{ address: "127.0.0.1:9003" }"#,
    );
    let m = Metrics::new().unwrap();
    let reg = Registry::new();
    let now = Instant::now();
    let at = |rt: &Runtime, port: u16| {
        rt.upstreams[0]
            .balancer
            .endpoints
            .iter()
            .position(|e| e.addr.port() == port)
            .expect("endpoint")
    };
    let first = build(plan(&yaml(&format!("{a}, {b}"), 1)), &m, &reg);
    let o = first.upstreams[0].outlier.as_ref().unwrap();
    o.record(at(&first, 9002), true, now);
    assert!(o.is_ejected(at(&first, 9002), now));
    // 9003 joins, 9001 leaves: 9002 is still ejected, the newcomer is in service
    let second = build(plan(&yaml(&format!("{c}, {b}"), 1)), &m, &reg);
    let o2 = second.upstreams[0].outlier.as_ref().unwrap();
    assert!(!Arc::ptr_eq(o, o2), "a detector for the new set");
    assert!(o2.is_ejected(at(&second, 9002), now));
    assert!(!o2.is_ejected(at(&second, 9003), now));
    // other outlier settings: fresh state
    let third = build(plan(&yaml(&format!("{c}, {b}"), 2)), &m, &reg);
    let o3 = third.upstreams[0].outlier.as_ref().unwrap();
    assert!(!o3.is_ejected(at(&third, 9002), now));
}

//! The embedder's API: `Engine::reload` and `Engine::reload_file` against a running in-process
//! gateway and real upstreams.
use super::*;
use crate::proxy::server::Embedded;
use gateway_testkit::{get, Upstream};
use std::time::Duration;

fn config(up: &Upstream, prefix: &str, listener: &str) -> String {
    format!(
        r#"
listeners: [{{ name: l, address: "{listener}" }}]
upstreams: [{{ name: u, endpoints: [{{ address: "{}" }}] }}]
routes: [{{ name: r, match: {{ prefix: {prefix} }}, upstream: u }}]
"#,
        up.addr()
    )
}

fn plan(text: &str) -> Plan {
    let c = crate::compile("t.yaml", text, &|_| None);
    c.plan.unwrap_or_else(|| panic!("{:?}", c.diagnostics))
}

/// A request in flight finishes on the runtime it started with (its route and upstream), even
/// though the reload removed both; the next request uses the new configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_their_runtime() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let gw = Embedded::start(plan(&config(&a, "/slow", "127.0.0.1:0")))
        .await
        .expect("start");
    let url = gw.url();
    let slow = tokio::spawn(async move { get(&format!("{url}/slow/delay/700")).await });
    gateway_testkit::wait::until("request at the upstream", Duration::from_secs(5), || {
        a.in_flight() > 0
    })
    .await;
    let s = gw
        .engine
        .reload(plan(&config(&b, "/fast", "127.0.0.1:0")))
        .await
        .expect("applied");
    assert_eq!(s.routes.changed, ["r"]);
    assert_eq!(s.upstreams.changed, ["u"]);
    let r = slow.await.expect("task").expect("answer");
    assert_eq!(r.status, 200);
    assert_eq!(r.json().expect("json")["upstream"], "a");
    let r = get(&format!("{}/fast", gw.url())).await.expect("answer");
    assert_eq!(r.json().expect("json")["upstream"], "b");
    assert_eq!(
        get(&format!("{}/slow", gw.url()))
            .await
            .expect("answer")
            .status,
        404
    );
}

/// Restart-only changes, unreadable and invalid files are refused; the running runtime is the very
/// same afterwards, and each refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_change_nothing() {
    let a = Upstream::start("a").await;
    let gw = Embedded::start(plan(&config(&a, "/a", "127.0.0.1:0")))
        .await
        .expect("start");
    let before = gw.engine.runtime();
    let e = gw
        .engine
        .reload(plan(&config(&a, "/b", "127.0.0.2:0")))
        .await
        .expect_err("restart needed");
    assert!(
        matches!(&e, ReloadError::RestartNeeded(l) if l.len() == 1),
        "{e}"
    );
    assert_eq!(e.status(), 409);
    let e = gw
        .engine
        .reload_file(Some("/nonexistent/gw.yaml"))
        .await
        .expect_err("unreadable");
    assert_eq!(e.kind(), "unreadable");
    let dir = std::env::temp_dir().join(format!("gw-reload-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let f = dir.join("bad.yaml");
    std::fs::write(
        &f,
        "routes: [{ name: r, match: { prefix: /x }, upstream: nope }]\n",
    )
    .expect("write");
    let e = gw
        .engine
        .reload_file(Some(&f.to_string_lossy()))
        .await
        .expect_err("invalid");
    let ReloadError::Invalid { diagnostics, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(diagnostics.iter().any(|d| d.is_error() && d.line == 1));
    assert_eq!(
        e.to_json()["diagnostics"],
        crate::diag::to_json(diagnostics)
    );
    assert!(
        Arc::ptr_eq(&before, &gw.engine.runtime()),
        "nothing swapped"
    );
    let m = gw.engine.metrics.render();
    assert!(
        m.contains("gw_config_reloads_total{result=\"rejected\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("gw_config_reloads_total{result=\"applied\"} 0"),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

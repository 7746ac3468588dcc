//! A first end-to-end check: a prefix route with strip_prefix over two real upstreams.
mod support;
use gateway_testkit::{get, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_strips_prefix() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = support::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{A}}" }, { address: "{{B}}" }]
routes:
  - name: svc
    match: { prefix: /api/svc }
    rewrite: { strip_prefix: true }
    upstream: svc
"#,
        &[("A", a.addr().to_string()), ("B", b.addr().to_string())],
    )
    .await;
    let r = get(&format!("{}/api/svc/42?x=1", gw.url()))
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    let v = r.json().expect("json body");
    assert_eq!(v["path"], "/42");
    assert_eq!(v["query"], "x=1");
    let r2 = get(&format!("{}/api/svc/42", gw.url()))
        .await
        .expect("request");
    assert_ne!(
        r.header("x-upstream"),
        r2.header("x-upstream"),
        "round robin alternates"
    );
}

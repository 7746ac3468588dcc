//! Issue 11 item 2, end to end: every hostile path variant of `gateway_core::fuzzing::PATH_VARIANTS`
//! is sent as a raw request line to the in-process gateway, with `/public` (open) and `/admin`
//! (behind a `jwt` policy) on two recording upstreams. Each variant must get 400, or reach the
//! protected route's auth (401, admin upstream untouched), or reach the public upstream as a path that
//! even a lenient upstream (`fuzzing::lenient_view`: repeated decoding, `\` as `/`, `;` parameters
//! dropped, look-alikes folded) does not read as being under `/admin`.
use gateway_core::fuzzing::{lenient_view, under, PATH_VARIANTS};
use gateway_testkit::{raw_request, Upstream};
use std::net::SocketAddr;

const ROUTES: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: pub
    endpoints: [{ address: "{{PUB}}" }]
  - name: adm
    endpoints: [{ address: "{{ADM}}" }]
routes:
  - name: public
    match: { prefix: /public }
    upstream: pub
  - name: admin
    match: { prefix: /admin }
    upstream: adm
    policies: [admin-jwt]
policies:
  - type: jwt
    name: admin-jwt
    keys: { type: hmac, secret: "0123456789abcdef0123456789abcdef-test" }
"#;

async fn get(addr: SocketAddr, path: &str) -> gateway_testkit::RawResponse {
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    raw_request(addr, req)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_never_reach_admin_through_public() {
    let pubu = Upstream::start("public").await;
    let adm = Upstream::start("admin").await;
    let gw = gw_suite::gateway(
        ROUTES,
        &[
            ("PUB", pubu.addr().to_string()),
            ("ADM", adm.addr().to_string()),
        ],
    )
    .await;
    let addr = gw.addrs[0];
    let mut refused = 0;
    for &(path, want) in PATH_VARIANTS {
        let before = pubu.hits();
        let r = get(addr, path).await;
        if want.starts_with("400") {
            assert_eq!(r.status, 400, "{path}: {}", r.text());
            assert_eq!(pubu.hits(), before, "{path} was forwarded");
            refused += 1;
        } else if under(want, "/admin") {
            assert_eq!(r.status, 401, "{path}: {}", r.text());
        } else if under(want, "/public") {
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            let rec = pubu.last_request().expect("recorded");
            assert_eq!(rec.path, want, "{path} sent upstream as");
            assert!(
                !under(&lenient_view(&rec.path), "/admin"),
                "{path} reached the public upstream as {}",
                rec.path
            );
        } else {
            assert_eq!(r.status, 404, "{path}: {}", r.text());
        }
        assert_eq!(adm.hits(), 0, "{path} reached the admin upstream");
    }
    assert!(refused > 40, "only {refused} variants refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_says_why() {
    let pubu = Upstream::start("public").await;
    let adm = Upstream::start("admin").await;
    let gw = gw_suite::gateway(
        ROUTES,
        &[
            ("PUB", pubu.addr().to_string()),
            ("ADM", adm.addr().to_string()),
        ],
    )
    .await;
    let r = get(gw.addrs[0], "/public/..%2Fadmin").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("encoded slash"), "{}", r.text());
    let r = get(gw.addrs[0], "/public/..;/admin").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("';'"), "{}", r.text());
    assert_eq!(pubu.hits() + adm.hits(), 0);
}

/// The non-default options reach the runtime: `keep` forwards `%2F` as data, `decode` routes it as a
/// separator, `semicolons: allow` forwards `;` — and hidden dot segments stay refused under each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slash_and_semicolon_options() {
    let pubu = Upstream::start("public").await;
    let adm = Upstream::start("admin").await;
    let vars = [
        ("PUB", pubu.addr().to_string()),
        ("ADM", adm.addr().to_string()),
    ];
    let with = |policy: &str| format!("server:\n  path_policy: {policy}\n{ROUTES}");

    let gw = gw_suite::gateway(&with("{ escaped_slashes: keep, semicolons: allow }"), &vars).await;
    let a = gw.addrs[0];
    let r = get(a, "/public/repos/a%2fb;v=1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(pubu.last_request().unwrap().path, "/public/repos/a%2Fb;v=1");
    for hostile in [
        "/public/..%2fadmin",
        "/public/..;/admin",
        "/public/x%2F..%2F..%2Fadmin",
    ] {
        assert_eq!(get(a, hostile).await.status, 400, "{hostile}");
    }
    drop(gw);

    let gw = gw_suite::gateway(&with("{ escaped_slashes: decode }"), &vars).await;
    let a = gw.addrs[0];
    let r = get(a, "/public/a%2Fb").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(pubu.last_request().unwrap().path, "/public/a/b");
    // decoded before routing: this is the admin route, and its auth applies
    assert_eq!(get(a, "/public/..%2Fadmin").await.status, 401);
    assert_eq!(
        get(a, "/public/x;y").await.status,
        400,
        "semicolons still refused"
    );
    assert_eq!(adm.hits(), 0);
}

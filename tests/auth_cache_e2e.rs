//! The verified-token cache on HS256 policies (issue 14): a cached token never outlives its `exp`, and a
//! changed secret (a reload) rejects tokens verified with the old one at once. Real tokens, the
//! in-process gateway, a real upstream.
use gateway_testkit::jwt::{hs256, unix_now};
use gateway_testkit::{http_client, send, Bytes, Method, Upstream};
use serde_json::json;
use std::time::Duration;

const CONFIG: &str = r#"
listeners: [{ name: main, address: "127.0.0.1:0" }]
upstreams: [{ name: svc, endpoints: [{ address: "{{UP}}" }] }]
routes:
  - { name: api, match: { prefix: /api }, upstream: svc, policies: [jwt] }
policies:
  - name: jwt
    type: jwt
    leeway: 0s
    keys: { type: hmac, secret: "{{SECRET}}", algorithms: [HS256] }
"#;
const OLD: &str = "cache-e2e-old-secret-0123456789abcdef";
const NEW: &str = "cache-e2e-new-secret-0123456789abcdef";

async fn status(url: &str, token: &str) -> u16 {
    let bearer = format!("Bearer {token}");
    send(
        &http_client(),
        Method::GET,
        url,
        &[("authorization", &bearer)],
        Bytes::new(),
    )
    .await
    .status
    .as_u16()
}

fn vars(up: &Upstream, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("UP", up.addr().to_string()),
        ("SECRET", secret.to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_secret_rejects_cached_tokens_at_once() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(CONFIG, &vars(&up, OLD)).await;
    let url = format!("http://{}/api/x", gw.addrs[0]);
    let old = hs256(
        OLD.as_bytes(),
        &json!({"sub": "u1", "exp": unix_now() + 600}),
    );
    // verified, then answered from the cache
    assert_eq!(status(&url, &old).await, 200);
    assert_eq!(status(&url, &old).await, 200);
    gw.engine
        .swap(gw_suite::plan(CONFIG, &vars(&up, NEW)))
        .await
        .expect("swap");
    assert_eq!(status(&url, &old).await, 401, "token of the old secret");
    let new = hs256(
        NEW.as_bytes(),
        &json!({"sub": "u1", "exp": unix_now() + 600}),
    );
    assert_eq!(status(&url, &new).await, 200);
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_refused_once_it_expires() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(CONFIG, &vars(&up, OLD)).await;
    let url = format!("http://{}/api/x", gw.addrs[0]);
    let exp = unix_now() + 2;
    let tok = hs256(OLD.as_bytes(), &json!({"sub": "u1", "exp": exp}));
    assert_eq!(status(&url, &tok).await, 200);
    assert_eq!(status(&url, &tok).await, 200);
    // past exp (leeway 0): the cache must not answer for it
    while unix_now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&url, &tok).await, 401);
    assert_eq!(up.hits(), 2);
}

#[test]
fn hmac_policies_cache_verified_tokens_bounded() {
    let plan = gw_suite::plan(
        CONFIG,
        &[("UP", "127.0.0.1:9".into()), ("SECRET", OLD.into())],
    );
    let cache = plan.auths[0]
        .settings
        .cache
        .as_ref()
        .expect("HS256 tokens are cached");
    assert_eq!(cache.capacity, 100_000);
    assert_eq!(cache.max_ttl_secs, 300);
}

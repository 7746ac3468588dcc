use super::*;
use pingora::http::ResponseHeader;
use std::time::Duration;

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!!";

fn fragment(extra: &str) -> String {
    format!(
        r#"
upstreams:
  - name: orders
    endpoints: [{{ address: "127.0.0.1:9" }}]
    circuit_breaker: {{ failure_threshold: 2, success_threshold: 1, open_duration: 30s }}
routes:
  - {{ name: orders, match: {{ prefix: / }}, upstream: orders, policies: [user-jwt, per-user] }}
  - {{ name: open, match: {{ prefix: /open }}, upstream: orders }}
policies:
  - name: user-jwt
    type: jwt
    keys: {{ type: hmac, secret: "${{SECRET}}" }}
    forward: [{{ claim: sub, header: X-User-Id }}]
  - {{ name: per-user, type: rate_limit, window: 1m, max: 2, key: {{ type: jwt_claim, claim: sub }} }}
{extra}"#
    )
}

fn policies() -> Policies {
    Policies::from_yaml("p.yaml", &fragment(""), &|k| {
        (k == "SECRET").then(|| SECRET.to_string())
    })
    .unwrap_or_else(|e| match e {
        BuildError::Invalid(d) => panic!("{d:?}"),
        e => panic!("{e}"),
    })
}

fn token(sub: &str) -> String {
    gateway_testkit::jwt::hs256_for(SECRET.as_bytes(), sub, 300)
}

fn req(tok: Option<&str>) -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/orders/1", None).unwrap();
    r.insert_header("x-user-id", "forged").unwrap();
    if let Some(t) = tok {
        r.insert_header("authorization", format!("Bearer {t}"))
            .unwrap();
    }
    r
}

fn peer() -> Option<IpAddr> {
    Some("127.0.0.1".parse().unwrap())
}

#[tokio::test]
async fn a_fragment_needs_no_listeners_and_diagnostics_are_positioned() {
    let p = policies();
    assert_eq!(p.guard_names(), ["orders", "open"]);
    assert!(p.guard("nope").is_none());
    // the full compiler still wants listeners
    let full = crate::compile("p.yaml", &fragment(""), &|_| Some(SECRET.into()));
    assert!(full.errors().any(|d| d.message.contains("no listeners")));
    // a bad fragment: the same positioned diagnostics as gw validate
    let bad = fragment(
        "  - { name: x, type: rate_limit, window: 1m, max: 0, key: { type: client_ip } }\n",
    );
    let Err(BuildError::Invalid(d)) = Policies::from_yaml("p.yaml", &bad, &|_| Some(SECRET.into()))
    else {
        panic!("a rate limit of 0 must not compile")
    };
    let e = d.iter().find(|d| d.is_error()).unwrap();
    assert_eq!((e.file.as_str(), e.line), ("p.yaml", 15), "{e:?}");
    assert_eq!(e.path, "policies[2].max", "{e:?}");
    // listeners in a fragment: a warning, not an error
    let with = format!(
        "listeners: [{{ name: l, address: \"127.0.0.1:0\" }}]\n{}",
        fragment("")
    );
    let c = crate::compile::compile_policies("p.yaml", &with, &|_| Some(SECRET.into()));
    assert!(c.plan.is_some());
    assert!(
        c.warnings().any(|w| w.path == "listeners"),
        "{:?}",
        c.diagnostics
    );
}

#[tokio::test]
async fn jwt_then_limits_then_breaker() {
    let p = policies();
    let g = p.guard("orders").unwrap();
    // no token: 401 with the gateway's JSON body and WWW-Authenticate
    let Decision::Respond(r) = p.check_request(&g, &req(None), peer()).await else {
        panic!("no token must be refused")
    };
    assert_eq!((r.status(), r.code), (401, Some("missing_token")));
    assert!(r.header.headers.contains_key("www-authenticate"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "missing_token");
    assert_eq!(
        body["request_id"],
        r.header.headers["x-request-id"].to_str().unwrap()
    );
    // a token: allowed, the claim forwarded, the forged header replaced, limit headers out
    let t = token("alice");
    let Decision::Allow(pass) = p.check_request(&g, &req(Some(&t)), peer()).await else {
        panic!("a valid token must pass")
    };
    assert_eq!((pass.subject(), pass.upstream()), (Some("alice"), "orders"));
    let mut up = req(Some(&t));
    pass.apply_upstream(&mut up).unwrap();
    assert_eq!(up.headers["x-user-id"], "alice");
    assert_eq!(up.headers.get_all("x-user-id").iter().count(), 1);
    let mut resp = ResponseHeader::build(200, None).unwrap();
    pass.apply_downstream(&mut resp).unwrap();
    assert!(resp.headers.contains_key("ratelimit-policy"), "{resp:?}");
    pass.report(Outcome::Status(200), Duration::from_millis(1));
    // max 2 per user: the third is a 429 with Retry-After; another user still passes
    let Decision::Allow(_) = p.check_request(&g, &req(Some(&t)), peer()).await else {
        panic!("second request is within the limit")
    };
    let Decision::Respond(r) = p.check_request(&g, &req(Some(&t)), peer()).await else {
        panic!("third request is over the limit")
    };
    assert_eq!((r.status(), r.code), (429, Some("rate_limited")));
    assert!(r.header.headers.contains_key("retry-after"));
    // the breaker: two connect failures open it, then 503 circuit_open without a token check change
    for _ in 0..2 {
        let Decision::Allow(pass) = p.check_request(&g, &req(Some(&token("bob"))), peer()).await
        else {
            panic!("bob is within his limit and the breaker is closed")
        };
        pass.report(Outcome::ConnectFailed, Duration::from_millis(1));
    }
    let Decision::Respond(r) = p
        .check_request(&g, &req(Some(&token("carol"))), peer())
        .await
    else {
        panic!("the breaker must be open")
    };
    assert_eq!((r.status(), r.code), (503, Some("circuit_open")));
    // the unguarded route shares the upstream, hence the breaker
    let open = p.guard("open").unwrap();
    let Decision::Respond(r) = p.check_request(&open, &req(None), peer()).await else {
        panic!("same upstream, same breaker")
    };
    assert_eq!(r.status(), 503);
    let m = p.render_metrics();
    assert!(m.contains("gw_requests_total"), "{m}");
    assert!(m.contains(r#"route="orders""#), "{m}");
}

#[tokio::test]
async fn swap_keeps_counters_by_identity() {
    let p = policies();
    let g = p.guard("orders").unwrap();
    let t = token("dave");
    for _ in 0..2 {
        assert!(matches!(
            p.check_request(&g, &req(Some(&t)), peer()).await,
            Decision::Allow(_)
        ));
    }
    let plan = crate::compile::compile_policies("p.yaml", &fragment(""), &|_| Some(SECRET.into()))
        .plan
        .unwrap();
    p.swap(plan).await.unwrap();
    // the same limit (same identity) keeps counting: dave is still over his quota
    let Decision::Respond(r) = p.check_request(&g, &req(Some(&t)), peer()).await else {
        panic!("the counter must carry over the swap")
    };
    assert_eq!(r.status(), 429);
}

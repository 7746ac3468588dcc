//! JWT authentication end to end: real tokens (signed with `jsonwebtoken` and the fixture keys in
//! `gateway-core/tests/fixtures/keys/`), the in-process gateway, a real upstream that records the
//! headers it received, and (for JWKS) a small HTTP server on 127.0.0.1:0 whose body and
//! availability the test controls.
//!
//! Every rejection asserts the status, the exact `WWW-Authenticate` value, the JSON error shape
//! `{"error","message","request_id"}`, that the upstream was not reached, and that neither the body
//! nor any response header contains the token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gateway_core::proxy::server::Embedded;
use gateway_testkit::jwks::JwksServer;
use gateway_testkit::jwt::{self, jwks, sign, unix_now, with, without, Keys};
use gateway_testkit::prom::Scrape;
use gateway_testkit::wait::Wait;
use gateway_testkit::{http_client, send, Bytes, HttpResponse, Method, Upstream};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

const SECRET: &str = "e2e-hmac-secret-0123456789abcdef-0123";
const ISS: &str = "https://issuer.test";
const AUD: &str = "api";
/// Poll interval of the JWKS waits (each poll of the first one sends a request).
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// Keys and tokens

/// The fixture key pairs (`rsa`, `rsa2`, `ec`) and the test HMAC secret (`hmac`).
static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys::fixtures(SECRET));

/// Every token gets a fresh `jti`, so no two tokens are equal (the verified-token cache never
/// answers for a token that was not verified in the same situation).
static JTI: AtomicU64 = AtomicU64::new(0);

fn claims(sub: &str) -> Value {
    let now = unix_now();
    json!({
        "sub": sub,
        "iss": ISS,
        "aud": AUD,
        "iat": now,
        "exp": now + 600,
        "jti": format!("jti-{}", JTI.fetch_add(1, Ordering::Relaxed)),
        "roles": ["reader", "writer"],
    })
}

fn hs(claims: &Value) -> String {
    jwt::hs256(SECRET.as_bytes(), claims)
}

// ---------------------------------------------------------------------------------------------
// Requests and assertions

async fn call(url: &str, token: Option<&str>, extra: &[(&str, &str)]) -> HttpResponse {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    send(&http_client(), Method::GET, url, &headers, Bytes::new()).await
}

const REALM: &str = "api";

/// What a rejection must look like.
struct Reject {
    status: u16,
    www: String,
    code: &'static str,
    message: &'static str,
}

impl Reject {
    /// No token: 401 with a bare challenge (no `error` attribute).
    fn missing() -> Self {
        Reject {
            status: 401,
            www: format!("Bearer realm=\"{REALM}\""),
            code: "missing_token",
            message: "authentication required",
        }
    }

    /// A token that does not verify: 401 `invalid_token` with the safe description.
    fn invalid(desc: &'static str) -> Self {
        Reject {
            status: 401,
            www: format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{desc}\""
            ),
            code: "invalid_token",
            message: desc,
        }
    }

    /// Expired: like `invalid` but the body's code is `token_expired`.
    fn expired() -> Self {
        Reject {
            code: "token_expired",
            ..Reject::invalid("token expired")
        }
    }

    /// Valid token without the required roles/scopes: 403 `insufficient_scope`.
    fn forbidden() -> Self {
        Reject {
            status: 403,
            www: format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", \
                 error_description=\"insufficient role or scope\""
            ),
            code: "insufficient_scope",
            message: "insufficient role or scope",
        }
    }
}

/// Checks a gateway rejection: status, exact challenge, JSON shape, and no token echo.
fn assert_rejected(case: &str, r: &HttpResponse, want: &Reject, token: Option<&str>) {
    let body = r.text();
    assert_eq!(
        r.status.as_u16(),
        want.status,
        "{case}: status; body {body}"
    );
    let challenges: Vec<&str> = r
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().expect("ascii challenge"))
        .collect();
    assert_eq!(
        challenges,
        vec![want.www.as_str()],
        "{case}: WWW-Authenticate"
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{case}: content-type"
    );
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{case}: json {e}"));
    let obj = v.as_object().expect("error body is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["error", "message", "request_id"],
        "{case}: body keys"
    );
    assert_eq!(v["error"], want.code, "{case}: error code");
    assert_eq!(v["message"], want.message, "{case}: message");
    let rid = v["request_id"].as_str().expect("request_id string");
    assert!(!rid.is_empty(), "{case}: request_id empty");
    assert_eq!(
        r.header("x-request-id"),
        Some(rid),
        "{case}: body request_id matches the X-Request-Id header"
    );
    if let Some(t) = token {
        assert!(!body.contains(t), "{case}: body echoes the token");
        let sig = t.rsplit('.').next().unwrap_or_default();
        assert!(
            sig.len() < 8 || !body.contains(sig),
            "{case}: body echoes the signature"
        );
        for (name, value) in &r.headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains(t),
                "{case}: header {name} echoes the token"
            );
        }
    }
}

/// Rejection plus "the upstream never saw this request".
async fn expect_rejected(case: &str, url: &str, up: &Upstream, token: Option<&str>, want: &Reject) {
    let before = up.hits();
    let r = call(url, token, &[]).await;
    assert_rejected(case, &r, want, token);
    assert_eq!(
        up.hits(),
        before,
        "{case}: the upstream must not be reached"
    );
}

/// A 200 from the upstream; returns the headers the upstream received.
async fn expect_ok(
    case: &str,
    gw_url: &str,
    path: &str,
    up: &Upstream,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> gateway_testkit::HeaderMap {
    let before = up.hits();
    let r = call(&format!("{gw_url}{path}"), token, extra).await;
    assert_eq!(r.status.as_u16(), 200, "{case}: status; body {}", r.text());
    assert_eq!(up.hits(), before + 1, "{case}: upstream reached once");
    let rec = up.last_request().expect("recorded request");
    assert_eq!(rec.path, path, "{case}: path at the upstream");
    rec.headers
}

fn values(h: &gateway_testkit::HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// `gw_auth_failures_total{route,reason}` from the gateway's registry (0 when absent).
fn auth_failures(gw: &Embedded, route: &str, reason: &str) -> u64 {
    let s = Scrape::parse(&gw.engine.metrics.render());
    s.sum_matching(
        "gw_auth_failures_total",
        &[("route", route), ("reason", reason)],
    ) as u64
}

// ---------------------------------------------------------------------------------------------
// Configurations

/// An HS256 policy `jwt` on `/api` (forwarding sub and roles) and a public route `/public`.
const HMAC_GW: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{UP}}" }]
routes:
  - name: protected
    match: { prefix: /api }
    upstream: svc
    policies: [jwt]
  - name: open
    match: { prefix: /public }
    upstream: svc
policies:
  - name: jwt
    type: jwt
    realm: api
    keys: { type: hmac, secret: "{{SECRET}}", algorithms: [HS256] }
    issuer: ["https://issuer.test"]
    audience: [api]
    leeway: 30s
    forward:
      - { claim: sub, header: X-User-Id }
      - { claim: roles, header: X-User-Roles }
"#;

async fn hmac_gateway(up: &Upstream) -> Embedded {
    gw_suite::gateway(
        HMAC_GW,
        &[
            ("UP", up.addr().to_string()),
            ("SECRET", SECRET.to_string()),
        ],
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_token_matrix() {
    let up = Upstream::start("svc").await;
    let gw = hmac_gateway(&up).await;
    let base = gw.url();
    let api = format!("{base}/api/me");
    let now = unix_now();

    // Valid: identity forwarded, roles joined with commas.
    let t = hs(&claims("user-1"));
    let h = expect_ok("valid", &base, "/api/me", &up, Some(&t), &[]).await;
    assert_eq!(values(&h, "x-user-id"), ["user-1"]);
    assert_eq!(values(&h, "x-user-roles"), ["reader,writer"]);

    // Missing token: bare challenge, no error attribute.
    expect_rejected("missing", &api, &up, None, &Reject::missing()).await;
    // A non-Bearer Authorization is no token either.
    let before = up.hits();
    let r = call(&api, None, &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_rejected("basic auth", &r, &Reject::missing(), None);
    assert_eq!(up.hits(), before);

    let other_secret = EncodingKey::from_secret(b"another-secret-0123456789abcdef-xx");
    let cases: Vec<(&str, String, Reject)> = vec![
        (
            "expired",
            hs(&with(claims("u"), "exp", json!(now - 120))),
            Reject::expired(),
        ),
        (
            "exp beyond leeway",
            hs(&with(claims("u"), "exp", json!(now - 45))),
            Reject::expired(),
        ),
        (
            "not yet valid",
            hs(&with(claims("u"), "nbf", json!(now + 120))),
            Reject::invalid("token not yet valid"),
        ),
        (
            "nbf beyond leeway",
            hs(&with(claims("u"), "nbf", json!(now + 45))),
            Reject::invalid("token not yet valid"),
        ),
        (
            "wrong iss",
            hs(&with(claims("u"), "iss", json!("https://evil.test"))),
            Reject::invalid("invalid token issuer"),
        ),
        (
            "no iss",
            hs(&without(claims("u"), "iss")),
            Reject::invalid("invalid token issuer"),
        ),
        (
            "wrong aud",
            hs(&with(claims("u"), "aud", json!(["other", "web"]))),
            Reject::invalid("invalid token audience"),
        ),
        (
            "no exp",
            hs(&without(claims("u"), "exp")),
            Reject::invalid("token lacks a required claim"),
        ),
        (
            "bad signature (other secret)",
            sign(Algorithm::HS256, &other_secret, None, &claims("u")),
            Reject::invalid("invalid token signature"),
        ),
        (
            "HS512 is not pinned",
            KEYS.sign(Algorithm::HS512, "hmac", None, &claims("u")),
            Reject::invalid("token algorithm not allowed"),
        ),
        (
            "RS256 against an HMAC policy",
            KEYS.sign(Algorithm::RS256, "rsa", None, &claims("u")),
            Reject::invalid("token algorithm not allowed"),
        ),
        (
            "malformed",
            "not-a-jwt".to_string(),
            Reject::invalid("malformed token"),
        ),
    ];
    for (case, token, want) in &cases {
        expect_rejected(case, &api, &up, Some(token), want).await;
    }

    // Payload swapped after signing (a valid signature over other claims).
    let good = hs(&claims("user-1"));
    let forged_payload = URL_SAFE_NO_PAD.encode(claims("admin").to_string());
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    let want = Reject::invalid("invalid token signature");
    expect_rejected("tampered payload", &api, &up, Some(&tampered), &want).await;

    // alg none, hand-crafted with an empty signature, in two spellings.
    for (case, alg) in [("alg none", "none"), ("alg None", "None")] {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims("admin").to_string());
        let unsigned = format!("{header}.{payload}.");
        let want = Reject::invalid("token algorithm not allowed");
        expect_rejected(case, &api, &up, Some(&unsigned), &want).await;
    }

    // Within the 30 s leeway: accepted.
    let t = hs(&with(claims("late"), "exp", json!(now - 10)));
    let h = expect_ok("exp within leeway", &base, "/api/me", &up, Some(&t), &[]).await;
    assert_eq!(values(&h, "x-user-id"), ["late"]);
    let t = hs(&with(claims("early"), "nbf", json!(now + 10)));
    let h = expect_ok("nbf within leeway", &base, "/api/me", &up, Some(&t), &[]).await;
    assert_eq!(values(&h, "x-user-id"), ["early"]);

    // No query-parameter source is configured: a token there is not looked at.
    let t = hs(&claims("q"));
    let before = up.hits();
    let r = call(&format!("{api}?access_token={t}"), None, &[]).await;
    assert_rejected(
        "query token not configured",
        &r,
        &Reject::missing(),
        Some(&t),
    );
    assert_eq!(up.hits(), before);

    // The failure metric counts by reason.
    for (reason, n) in [
        ("missing", 3),
        ("expired", 2),
        ("not_yet_valid", 2),
        ("bad_issuer", 2),
        ("bad_audience", 1),
        ("missing_claim", 1),
        ("bad_signature", 2),
        ("disallowed_alg", 4),
        ("malformed", 1),
        ("insufficient_scope", 0),
    ] {
        assert_eq!(
            auth_failures(&gw, "protected", reason),
            n,
            "reason {reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_route_rejects_hs256_keyed_with_the_public_key_pem() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{UP}}" }]
routes:
  - name: rsa
    match: { prefix: /api }
    upstream: svc
    policies: [jwt]
policies:
  - name: jwt
    type: jwt
    realm: api
    keys: { type: pem, files: [{ path: "{{PEM}}" }], algorithms: [RS256] }
    issuer: ["https://issuer.test"]
    audience: [api]
    forward: [{ claim: sub, header: X-User-Id }]
"#,
        &[
            ("UP", up.addr().to_string()),
            (
                "PEM",
                KEYS.path("rsa_public.pem").to_string_lossy().into_owned(),
            ),
        ],
    )
    .await;
    let base = gw.url();
    let api = format!("{base}/api/x");

    let t = KEYS.sign(Algorithm::RS256, "rsa", None, &claims("rs-user"));
    let h = expect_ok("RS256 valid", &base, "/api/x", &up, Some(&t), &[]).await;
    assert_eq!(values(&h, "x-user-id"), ["rs-user"]);

    // The key-confusion attack: an HMAC over the token keyed with the public PEM text.
    let pem = KEYS.read("rsa_public.pem");
    let not_allowed = Reject::invalid("token algorithm not allowed");
    for (case, secret) in [
        ("HS256 keyed with the PEM", pem.clone()),
        (
            "HS256 keyed with the PEM without its final newline",
            pem.trim_ascii_end().to_vec(),
        ),
    ] {
        let key = EncodingKey::from_secret(&secret);
        let t = sign(Algorithm::HS256, &key, None, &claims("attacker"));
        expect_rejected(case, &api, &up, Some(&t), &not_allowed).await;
    }
    // Another RSA key; PS256 is RSA too but not pinned.
    let t = KEYS.sign(Algorithm::RS256, "rsa2", None, &claims("u"));
    let want = Reject::invalid("invalid token signature");
    expect_rejected("RS256 by another key", &api, &up, Some(&t), &want).await;
    let t = KEYS.sign(Algorithm::PS256, "rsa", None, &claims("u"));
    expect_rejected("PS256 not pinned", &api, &up, Some(&t), &not_allowed).await;
    assert_eq!(auth_failures(&gw, "rsa", "disallowed_alg"), 3);
}

const JWKS_GW: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{UP}}" }]
routes:
  - name: jwks
    match: { prefix: /api }
    upstream: svc
    policies: [jwt]
policies:
  - name: jwt
    type: jwt
    realm: api
    keys:
      type: jwks
      url: "{{JWKS}}"
      refresh: {{REFRESH}}
      ready_timeout: {{READY}}
      algorithms: [RS256, ES256]
    issuer: ["https://issuer.test"]
    audience: [api]
    forward: [{ claim: sub, header: X-User-Id }]
"#;

async fn jwks_gateway(up: &Upstream, jwks: &JwksServer, refresh: &str, ready: &str) -> Embedded {
    gw_suite::gateway(
        JWKS_GW,
        &[
            ("UP", up.addr().to_string()),
            ("JWKS", jwks.url()),
            ("REFRESH", refresh.to_string()),
            ("READY", ready.to_string()),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_kid_selection_and_unknown_kid_refresh() {
    let up = Upstream::start("svc").await;
    let k1 = KEYS.jwk("rsa", Algorithm::RS256, "k1");
    let k2 = KEYS.jwk("ec", Algorithm::ES256, "k2");
    let k3 = KEYS.jwk("rsa2", Algorithm::RS256, "k3");
    let server = JwksServer::start(jwks(&[k1.clone(), k2.clone()])).await;
    let gw = jwks_gateway(&up, &server, "300s", "3s").await;
    let base = gw.url();
    let api = format!("{base}/api/a");
    assert_eq!(server.hits(), 1, "one fetch at start");

    let t = KEYS.sign(Algorithm::RS256, "rsa", Some("k1"), &claims("by-k1"));
    let h = expect_ok("kid k1", &base, "/api/a", &up, Some(&t), &[]).await;
    assert_eq!(values(&h, "x-user-id"), ["by-k1"]);
    let t = KEYS.sign(Algorithm::ES256, "ec", Some("k2"), &claims("by-k2"));
    let h = expect_ok("kid k2", &base, "/api/a", &up, Some(&t), &[]).await;
    assert_eq!(values(&h, "x-user-id"), ["by-k2"]);

    let t = KEYS.sign(Algorithm::RS256, "rsa", None, &claims("u"));
    let want = Reject::invalid("token has no key id");
    expect_rejected("no kid, several keys", &api, &up, Some(&t), &want).await;
    let t = KEYS.sign(Algorithm::RS256, "rsa2", Some("k1"), &claims("u"));
    let want = Reject::invalid("invalid token signature");
    expect_rejected("kid k1, other signer", &api, &up, Some(&t), &want).await;
    let t = KEYS.sign(Algorithm::ES256, "ec", Some("k1"), &claims("u"));
    let want = Reject::invalid("token algorithm not allowed");
    expect_rejected("ES256 naming RSA key k1", &api, &up, Some(&t), &want).await;
    assert_eq!(server.hits(), 1, "known kids never trigger a fetch");

    // Rotation: k3 is published; the first token naming it triggers one fetch and verifies.
    server.set_body(jwks(&[k1.clone(), k2.clone(), k3.clone()]));
    let t = KEYS.sign(Algorithm::RS256, "rsa2", Some("k3"), &claims("by-k3"));
    let h = expect_ok("kid k3 after rotation", &base, "/api/a", &up, Some(&t), &[]).await;
    assert_eq!(values(&h, "x-user-id"), ["by-k3"]);
    assert_eq!(server.hits(), 2, "exactly one on-demand fetch");

    // Another unknown kid right away: the on-demand refresh is rate limited (no fetch).
    let t = KEYS.sign(Algorithm::RS256, "rsa2", Some("k4"), &claims("u"));
    let unknown = Reject::invalid("unknown signing key");
    expect_rejected("unknown kid, rate limited", &api, &up, Some(&t), &unknown).await;
    assert_eq!(server.hits(), 2, "rate limited: no second on-demand fetch");
    assert_eq!(auth_failures(&gw, "jwks", "unknown_kid"), 1);
    assert_eq!(auth_failures(&gw, "jwks", "missing_kid"), 1);

    // A fresh gateway (fresh rate-limit budget): an unknown kid fetches once, is still unknown.
    let gw2 = jwks_gateway(&up, &server, "300s", "3s").await;
    let hits = server.hits();
    let t = KEYS.sign(Algorithm::RS256, "rsa2", Some("k9"), &claims("u"));
    let api2 = format!("{}/api/a", gw2.url());
    expect_rejected("unknown kid after a fetch", &api2, &up, Some(&t), &unknown).await;
    assert_eq!(server.hits(), hits + 1, "one on-demand fetch");

    // A key removed from the JWKS no longer verifies once the new set is loaded.
    server.set_body(jwks(&[k2.clone(), k3.clone()]));
    let gw3 = jwks_gateway(&up, &server, "300s", "3s").await;
    let t = KEYS.sign(Algorithm::RS256, "rsa", Some("k1"), &claims("u"));
    let api3 = format!("{}/api/a", gw3.url());
    expect_rejected("removed kid", &api3, &up, Some(&t), &unknown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_down_at_start_then_up_then_down_keeps_last_good_keys() {
    let up = Upstream::start("svc").await;
    let mut server = JwksServer::down_at(jwks(&[KEYS.jwk("rsa", Algorithm::RS256, "k1")]));
    let fresh = |sub: &str| KEYS.sign(Algorithm::RS256, "rsa", Some("k1"), &claims(sub));

    // Down at start: the gateway still starts (waiting at most ready_timeout for the keys).
    let t0 = Instant::now();
    let gw = jwks_gateway(&up, &server, "400ms", "300ms").await;
    let startup = t0.elapsed();
    assert!(startup < Duration::from_secs(5), "start took {startup:?}");
    let base = gw.url();
    let api = format!("{base}/api/a");
    let unavailable = Reject::invalid("signing keys unavailable");
    let t = fresh("u");
    expect_rejected("keys unavailable", &api, &up, Some(&t), &unavailable).await;
    assert_eq!(auth_failures(&gw, "jwks", "keys_unavailable"), 1);
    expect_rejected(
        "missing, keys unavailable",
        &api,
        &up,
        None,
        &Reject::missing(),
    )
    .await;

    // The server comes up: the background retry loads the keys and tokens verify.
    server.up().await;
    let t_up = Instant::now();
    Wait::new("tokens verify once the JWKS is up", Duration::from_secs(10))
        .every(POLL)
        .until_async(|| {
            let api = api.clone();
            let t = fresh("u");
            let unavailable = &unavailable;
            async move {
                let r = call(&api, Some(&t), &[]).await;
                if r.status.as_u16() == 200 {
                    return true;
                }
                assert_rejected("keys unavailable while waiting", &r, unavailable, Some(&t));
                false
            }
        })
        .await;
    eprintln!("keys loaded {:?} after the JWKS came up", t_up.elapsed());

    // The server fails later (HTTP 503): refreshes fail and the last good set keeps verifying.
    server.set_failing(true);
    let hits = server.hits();
    Wait::new("two failed refreshes", Duration::from_secs(10))
        .every(POLL)
        .until_async(|| {
            let n = server.hits();
            async move { n >= hits + 2 }
        })
        .await;
    let t = fresh("still-ok");
    let h = expect_ok(
        "after failed refreshes",
        &base,
        "/api/a",
        &up,
        Some(&t),
        &[],
    )
    .await;
    assert_eq!(values(&h, "x-user-id"), ["still-ok"]);

    // Fully down (connection refused): for three refresh periods every fresh token verifies.
    server.down().await;
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(1200) {
        let t = fresh("down");
        let h = expect_ok("server down", &base, "/api/a", &up, Some(&t), &[]).await;
        assert_eq!(values(&h, "x-user-id"), ["down"]);
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n >= 5, "only {n} checks while the server was down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_scopes_any_of_all_of_and_claim_paths() {
    let up = Upstream::start("svc").await;
    let policy = |name: &str, require: &str| {
        format!(
            "  - name: {name}\n    type: jwt\n    realm: api\n    \
             keys: {{ type: hmac, secret: \"{SECRET}\", algorithms: [HS256] }}\n    \
             require: {require}\n    forward: [{{ claim: sub, header: X-User-Id }}]\n"
        )
    };
    let yaml = format!(
        r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
upstreams:
  - name: svc
    endpoints: [{{ address: "{up}" }}]
routes:
  - {{ name: any, match: {{ prefix: /any }}, upstream: svc, policies: [p-any] }}
  - {{ name: all, match: {{ prefix: /all }}, upstream: svc, policies: [p-all] }}
  - {{ name: scope, match: {{ prefix: /scope }}, upstream: svc, policies: [p-scope] }}
  - {{ name: nested, match: {{ prefix: /nested }}, upstream: svc, policies: [p-nested] }}
policies:
{}{}{}{}"#,
        policy("p-any", "{ claim: roles, any_of: [admin, ops] }"),
        policy("p-all", "{ claim: roles, all_of: [reader, writer] }"),
        policy("p-scope", "{ claim: scope, all_of: [read, write] }"),
        policy("p-nested", "{ claim: realm_access.roles, any_of: [ops] }"),
        up = up.addr(),
    );
    let gw = gw_suite::gateway(&yaml, &[]).await;
    let base = gw.url();
    let tok = |k: &str, v: Value| hs(&with(claims("u"), k, v));

    let allowed: Vec<(&str, &str, String)> = vec![
        ("any_of: admin", "/any", tok("roles", json!(["admin"]))),
        (
            "any_of: ops among others",
            "/any",
            tok("roles", json!(["x", "ops"])),
        ),
        (
            "all_of: both",
            "/all",
            tok("roles", json!(["writer", "reader", "x"])),
        ),
        (
            "scope string",
            "/scope",
            tok("scope", json!("openid read  write")),
        ),
        (
            "scope array",
            "/scope",
            tok("scope", json!(["write", "read"])),
        ),
        (
            "nested claim path",
            "/nested",
            tok("realm_access", json!({"roles": ["viewer", "ops"]})),
        ),
    ];
    for (case, path, t) in &allowed {
        let h = expect_ok(case, &base, path, &up, Some(t), &[]).await;
        assert_eq!(values(&h, "x-user-id"), ["u"], "{case}");
    }

    let denied: Vec<(&str, &str, String)> = vec![
        (
            "any_of: none present",
            "/any",
            tok("roles", json!(["reader"])),
        ),
        (
            "any_of: no roles claim",
            "/any",
            hs(&without(claims("u"), "roles")),
        ),
        ("any_of: roles is a number", "/any", tok("roles", json!(7))),
        (
            "any_of: case matters",
            "/any",
            tok("roles", json!(["Admin"])),
        ),
        (
            "all_of: one missing",
            "/all",
            tok("roles", json!(["reader"])),
        ),
        ("scope: one missing", "/scope", tok("scope", json!("read"))),
        (
            "scope: no substrings",
            "/scope",
            tok("scope", json!("readwrite")),
        ),
        (
            "nested: other roles",
            "/nested",
            tok("realm_access", json!({"roles": ["viewer"]})),
        ),
        (
            "nested: top-level roles do not count",
            "/nested",
            tok("roles", json!(["ops"])),
        ),
    ];
    for (case, path, t) in &denied {
        let url = format!("{base}{path}");
        expect_rejected(case, &url, &up, Some(t), &Reject::forbidden()).await;
    }
    // Authentication comes first: a bad token on a role route is a 401, not a 403.
    let wrong = EncodingKey::from_secret(b"wrong-secret-0123456789abcdef-0123");
    let t = sign(
        Algorithm::HS256,
        &wrong,
        None,
        &with(claims("u"), "roles", json!(["admin"])),
    );
    let any = format!("{base}/any");
    let want = Reject::invalid("invalid token signature");
    expect_rejected("bad signature, role route", &any, &up, Some(&t), &want).await;
    expect_rejected("missing, role route", &any, &up, None, &Reject::missing()).await;
    assert_eq!(auth_failures(&gw, "any", "insufficient_scope"), 4);
    assert_eq!(auth_failures(&gw, "nested", "insufficient_scope"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_mode_verifies_present_tokens_only() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{UP}}" }]
routes:
  - name: opt
    match: { prefix: /opt }
    upstream: svc
    policies: [jwt]
policies:
  - name: jwt
    type: jwt
    realm: api
    mode: optional
    keys: { type: hmac, secret: "{{SECRET}}", algorithms: [HS256] }
    audience: [api]
    forward:
      - { claim: sub, header: X-User-Id }
      - { claim: roles, header: X-User-Roles }
"#,
        &[
            ("UP", up.addr().to_string()),
            ("SECRET", SECRET.to_string()),
        ],
    )
    .await;
    let base = gw.url();
    let opt = format!("{base}/opt/x");

    let h = expect_ok("no token", &base, "/opt/x", &up, None, &[]).await;
    assert!(values(&h, "x-user-id").is_empty(), "anonymous: no identity");
    assert!(values(&h, "x-user-roles").is_empty());
    let forged: &[(&str, &str)] = &[("x-user-id", "forged"), ("x-user-roles", "admin")];
    let h = expect_ok(
        "no token, forged identity",
        &base,
        "/opt/x",
        &up,
        None,
        forged,
    )
    .await;
    assert!(
        values(&h, "x-user-id").is_empty(),
        "{:?}",
        values(&h, "x-user-id")
    );
    assert!(values(&h, "x-user-roles").is_empty());

    let t = hs(&claims("opt-user"));
    let h = expect_ok("valid token", &base, "/opt/x", &up, Some(&t), forged).await;
    assert_eq!(values(&h, "x-user-id"), ["opt-user"]);
    assert_eq!(values(&h, "x-user-roles"), ["reader,writer"]);

    let wrong = EncodingKey::from_secret(b"wrong-secret-0123456789abcdef-0123");
    let bad = sign(Algorithm::HS256, &wrong, None, &claims("u"));
    let want = Reject::invalid("invalid token signature");
    expect_rejected("bad token is a 401", &opt, &up, Some(&bad), &want).await;
    let expired = hs(&with(claims("u"), "exp", json!(unix_now() - 3600)));
    expect_rejected(
        "expired is a 401",
        &opt,
        &up,
        Some(&expired),
        &Reject::expired(),
    )
    .await;
    let t = hs(&with(claims("u"), "aud", json!("other")));
    let want = Reject::invalid("invalid token audience");
    expect_rejected("wrong aud is a 401", &opt, &up, Some(&t), &want).await;
    assert_eq!(auth_failures(&gw, "opt", "missing"), 0);
    assert_eq!(auth_failures(&gw, "opt", "bad_signature"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_are_stripped_on_every_route() {
    let up = Upstream::start("svc").await;
    let gw = hmac_gateway(&up).await;
    let base = gw.url();
    let forged: &[(&str, &str)] = &[
        ("x-user-id", "forged"),
        ("X-User-Id", "forged-2"),
        ("x-user-roles", "admin"),
    ];

    // Protected: the upstream sees only the verified values.
    let t = hs(&claims("user-1"));
    let h = expect_ok("protected", &base, "/api/p", &up, Some(&t), forged).await;
    assert_eq!(values(&h, "x-user-id"), ["user-1"]);
    assert_eq!(values(&h, "x-user-roles"), ["reader,writer"]);

    // Protected, token without roles: the forged roles header is removed, nothing replaces it.
    let t = hs(&without(claims("user-2"), "roles"));
    let h = expect_ok(
        "protected, no roles",
        &base,
        "/api/p",
        &up,
        Some(&t),
        forged,
    )
    .await;
    assert_eq!(values(&h, "x-user-id"), ["user-2"]);
    assert!(
        values(&h, "x-user-roles").is_empty(),
        "{:?}",
        values(&h, "x-user-roles")
    );

    // Unprotected route: stripped, with or without a (valid) token, which is not verified there.
    for (case, token) in [
        ("public", None),
        ("public with token", Some(hs(&claims("user-1")))),
    ] {
        let h = expect_ok(case, &base, "/public/p", &up, token.as_deref(), forged).await;
        assert!(
            values(&h, "x-user-id").is_empty(),
            "{case}: {:?}",
            values(&h, "x-user-id")
        );
        assert!(values(&h, "x-user-roles").is_empty(), "{case}");
    }

    // Rejected requests never reach the upstream at all.
    let before = up.hits();
    let r = call(&format!("{base}/api/p"), None, forged).await;
    assert_rejected("forged without token", &r, &Reject::missing(), None);
    assert_eq!(up.hits(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_by_verified_sub_gives_each_user_a_quota() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{UP}}" }]
routes:
  - name: api
    match: { prefix: /api }
    upstream: svc
    policies: [jwt, per-user]
policies:
  - name: jwt
    type: jwt
    realm: api
    keys: { type: hmac, secret: "{{SECRET}}", algorithms: [HS256] }
    forward: [{ claim: sub, header: X-User-Id }]
  - name: per-user
    type: rate_limit
    window: 3600s
    max: 3
    key: { type: jwt_claim, claim: sub }
"#,
        &[
            ("UP", up.addr().to_string()),
            ("SECRET", SECRET.to_string()),
        ],
    )
    .await;
    let api = format!("{}/api/x", gw.url());
    // A fresh token per request: the quota follows the claim, not the token.
    let burst = |sub: &'static str, n: usize, extra: &'static [(&'static str, &'static str)]| {
        let api = api.clone();
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                let t = hs(&claims(sub));
                out.push(call(&api, Some(&t), extra).await.status.as_u16());
            }
            out
        }
    };

    // Invalid tokens claiming to be carol are rejected before the limiter: no quota used.
    let wrong = EncodingKey::from_secret(b"wrong-secret-0123456789abcdef-0123");
    for _ in 0..3 {
        let bad = sign(Algorithm::HS256, &wrong, None, &claims("carol"));
        assert_eq!(call(&api, Some(&bad), &[]).await.status.as_u16(), 401);
    }

    // alice sends a forged X-User-Id naming bob: her own quota is used, not bob's.
    assert_eq!(
        burst("alice", 4, &[("x-user-id", "bob")]).await,
        [200, 200, 200, 429]
    );
    assert_eq!(
        burst("bob", 4, &[]).await,
        [200, 200, 200, 429],
        "bob has his own quota"
    );
    assert_eq!(
        burst("carol", 4, &[]).await,
        [200, 200, 200, 429],
        "carol's quota untouched"
    );
    assert_eq!(
        burst("alice", 1, &[]).await,
        [429],
        "alice is still limited"
    );

    let seen: Vec<String> = up
        .requests()
        .iter()
        .filter_map(|r| r.header("x-user-id"))
        .collect();
    for who in ["alice", "bob", "carol"] {
        assert_eq!(seen.iter().filter(|s| *s == who).count(), 3, "{who}");
    }
    assert_eq!(seen.len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_example_protects_admin_and_leaves_docs_public() {
    let up = Upstream::start("svc").await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/jwt.yaml");
    let text = std::fs::read_to_string(path).expect("examples/jwt.yaml");
    let text = text
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:3001", &up.addr().to_string())
        .replace("127.0.0.1:4001", &up.addr().to_string())
        .replace("${JWT_SECRET}", SECRET);
    let gw = gw_suite::gateway(&text, &[]).await;
    let base = gw.url();
    let admin = format!("{base}/api/admin/users");
    let tok = |roles: Value| {
        let c = with(claims("ann"), "roles", roles);
        let c = with(c, "iss", json!("https://auth.example.com"));
        hs(&with(c, "aud", json!("admin-api")))
    };
    let forged: &[(&str, &str)] = &[("x-user-id", "root"), ("x-user-roles", "admin")];

    let t = tok(json!(["admin", "dev"]));
    let r = call(&admin, Some(&t), forged).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let rec = up.last_request().expect("recorded");
    assert_eq!(rec.path, "/users", "prefix stripped");
    assert_eq!(values(&rec.headers, "x-user-id"), ["ann"]);
    assert_eq!(values(&rec.headers, "x-user-roles"), ["admin,dev"]);

    let realm = |w: Reject| Reject {
        www: w.www.replace("realm=\"api\"", "realm=\"admin-api\""),
        ..w
    };
    let t = tok(json!(["dev"]));
    expect_rejected(
        "not admin",
        &admin,
        &up,
        Some(&t),
        &realm(Reject::forbidden()),
    )
    .await;
    expect_rejected("no token", &admin, &up, None, &realm(Reject::missing())).await;
    let t = hs(&with(claims("ann"), "roles", json!(["admin"])));
    let want = realm(Reject::invalid("invalid token issuer"));
    expect_rejected("default test issuer", &admin, &up, Some(&t), &want).await;

    let h = expect_ok("docs are public", &base, "/docs/intro", &up, None, forged).await;
    assert!(values(&h, "x-user-id").is_empty());
    assert!(values(&h, "x-user-roles").is_empty());
}

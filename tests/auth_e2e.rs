//! JWT authentication end to end: real tokens (signed with `jsonwebtoken` and the fixture keys in
//! `gateway-core/tests/fixtures/keys/`), the in-process gateway, a real upstream that records the
//! headers it received, and (for JWKS) a small HTTP server on 127.0.0.1:0 whose body and
//! availability the test controls.
//!
//! Every rejection asserts the status, the exact `WWW-Authenticate` value, the JSON error shape
//! `{"error","message","request_id"}`, that the upstream was not reached, and that neither the body
//! nor any response header contains the token.
mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gateway_core::proxy::server::Embedded;
use gateway_testkit::{http_client, request, Bytes, HttpResponse, Method, Upstream};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "e2e-hmac-secret-0123456789abcdef-0123";
const ISS: &str = "https://issuer.test";
const AUD: &str = "api";

// ---------------------------------------------------------------------------------------------
// Keys and tokens

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("gateway-core/tests/fixtures/keys")
        .join(name)
}

fn read_key(name: &str) -> Vec<u8> {
    std::fs::read(key_file(name)).expect("fixture key")
}

/// Private fixture keys (`rsa`, `rsa2`, `ec`) or the test HMAC secret (`hmac`).
fn enc(which: &str) -> EncodingKey {
    match which {
        "hmac" => EncodingKey::from_secret(SECRET.as_bytes()),
        "rsa" | "rsa2" => {
            EncodingKey::from_rsa_pem(&read_key(&format!("{which}_private.pem"))).expect("rsa key")
        }
        "ec" => EncodingKey::from_ec_pem(&read_key("ec_private.pem")).expect("ec key"),
        other => panic!("unknown key {other}"),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

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

fn with(mut v: Value, k: &str, x: Value) -> Value {
    v[k] = x;
    v
}

fn without(mut v: Value, k: &str) -> Value {
    v.as_object_mut().expect("object").remove(k);
    v
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).expect("encode")
}

fn hs(claims: &Value) -> String {
    sign(Algorithm::HS256, &enc("hmac"), None, claims)
}

fn jwk(which: &str, alg: Algorithm, kid: &str) -> Value {
    let mut j = Jwk::from_encoding_key(&enc(which), alg).expect("jwk");
    j.common.key_id = Some(kid.to_string());
    serde_json::to_value(j).expect("jwk json")
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

// ---------------------------------------------------------------------------------------------
// Requests and assertions

async fn call(url: &str, token: Option<&str>, extra: &[(&str, &str)]) -> HttpResponse {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        request(&http_client(), Method::GET, url, &headers, Bytes::new()),
    )
    .await
    .expect("gateway answered in time")
    .expect("request")
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
    let text = gw.engine.metrics.render();
    let r = format!("route=\"{route}\"");
    let why = format!("reason=\"{reason}\"");
    text.lines()
        .filter(|l| l.starts_with("gw_auth_failures_total{") && l.contains(&r) && l.contains(&why))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

async fn until<F, Fut>(what: &str, deadline: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A JWKS server whose body, status and availability the test controls

struct JwksState {
    body: Mutex<String>,
    failing: AtomicBool,
    hits: AtomicUsize,
}

struct JwksServer {
    addr: SocketAddr,
    state: Arc<JwksState>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl JwksServer {
    /// Serving `body` on 127.0.0.1:0.
    async fn start(body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut s = Self::reserved(listener.local_addr().expect("addr"), body);
        s.serve(listener);
        s
    }

    /// Not listening yet: the address was bound once to get a free port, then released.
    fn down_at(body: String) -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        Self::reserved(addr, body)
    }

    fn reserved(addr: SocketAddr, body: String) -> Self {
        JwksServer {
            addr,
            state: Arc::new(JwksState {
                body: Mutex::new(body),
                failing: AtomicBool::new(false),
                hits: AtomicUsize::new(0),
            }),
            task: None,
        }
    }

    async fn up(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind jwks port");
        self.serve(listener);
    }

    async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        let state = self.state.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = if state.failing.load(Ordering::SeqCst) {
                        ("503 Service Unavailable", "{}".to_string())
                    } else {
                        ("200 OK", state.body.lock().expect("body").clone())
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        }));
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn set_body(&self, body: String) {
        *self.state.body.lock().expect("body") = body;
    }

    fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
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
    support::gateway(
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
            sign(Algorithm::HS512, &enc("hmac"), None, &claims("u")),
            Reject::invalid("token algorithm not allowed"),
        ),
        (
            "RS256 against an HMAC policy",
            sign(Algorithm::RS256, &enc("rsa"), None, &claims("u")),
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
    let gw = support::gateway(
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
                key_file("rsa_public.pem").to_string_lossy().into_owned(),
            ),
        ],
    )
    .await;
    let base = gw.url();
    let api = format!("{base}/api/x");

    let t = sign(Algorithm::RS256, &enc("rsa"), None, &claims("rs-user"));
    let h = expect_ok("RS256 valid", &base, "/api/x", &up, Some(&t), &[]).await;
    assert_eq!(values(&h, "x-user-id"), ["rs-user"]);

    // The key-confusion attack: an HMAC over the token keyed with the public PEM text.
    let pem = read_key("rsa_public.pem");
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
    let t = sign(Algorithm::RS256, &enc("rsa2"), None, &claims("u"));
    let want = Reject::invalid("invalid token signature");
    expect_rejected("RS256 by another key", &api, &up, Some(&t), &want).await;
    let t = sign(Algorithm::PS256, &enc("rsa"), None, &claims("u"));
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
    support::gateway(
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
    let k1 = jwk("rsa", Algorithm::RS256, "k1");
    let k2 = jwk("ec", Algorithm::ES256, "k2");
    let k3 = jwk("rsa2", Algorithm::RS256, "k3");
    let server = JwksServer::start(jwks(&[k1.clone(), k2.clone()])).await;
    let gw = jwks_gateway(&up, &server, "300s", "3s").await;
    let base = gw.url();
    let api = format!("{base}/api/a");
    assert_eq!(server.hits(), 1, "one fetch at start");

    let t = sign(Algorithm::RS256, &enc("rsa"), Some("k1"), &claims("by-k1"));
    let h = expect_ok("kid k1", &base, "/api/a", &up, Some(&t), &[]).await;
    assert_eq!(values(&h, "x-user-id"), ["by-k1"]);
    let t = sign(Algorithm::ES256, &enc("ec"), Some("k2"), &claims("by-k2"));
    let h = expect_ok("kid k2", &base, "/api/a", &up, Some(&t), &[]).await;
    assert_eq!(values(&h, "x-user-id"), ["by-k2"]);

    let t = sign(Algorithm::RS256, &enc("rsa"), None, &claims("u"));
    let want = Reject::invalid("token has no key id");
    expect_rejected("no kid, several keys", &api, &up, Some(&t), &want).await;
    let t = sign(Algorithm::RS256, &enc("rsa2"), Some("k1"), &claims("u"));
    let want = Reject::invalid("invalid token signature");
    expect_rejected("kid k1, other signer", &api, &up, Some(&t), &want).await;
    let t = sign(Algorithm::ES256, &enc("ec"), Some("k1"), &claims("u"));
    let want = Reject::invalid("token algorithm not allowed");
    expect_rejected("ES256 naming RSA key k1", &api, &up, Some(&t), &want).await;
    assert_eq!(server.hits(), 1, "known kids never trigger a fetch");

    // Rotation: k3 is published; the first token naming it triggers one fetch and verifies.
    server.set_body(jwks(&[k1.clone(), k2.clone(), k3.clone()]));
    let t = sign(Algorithm::RS256, &enc("rsa2"), Some("k3"), &claims("by-k3"));
    let h = expect_ok("kid k3 after rotation", &base, "/api/a", &up, Some(&t), &[]).await;
    assert_eq!(values(&h, "x-user-id"), ["by-k3"]);
    assert_eq!(server.hits(), 2, "exactly one on-demand fetch");

    // Another unknown kid right away: the on-demand refresh is rate limited (no fetch).
    let t = sign(Algorithm::RS256, &enc("rsa2"), Some("k4"), &claims("u"));
    let unknown = Reject::invalid("unknown signing key");
    expect_rejected("unknown kid, rate limited", &api, &up, Some(&t), &unknown).await;
    assert_eq!(server.hits(), 2, "rate limited: no second on-demand fetch");
    assert_eq!(auth_failures(&gw, "jwks", "unknown_kid"), 1);
    assert_eq!(auth_failures(&gw, "jwks", "missing_kid"), 1);

    // A fresh gateway (fresh rate-limit budget): an unknown kid fetches once, is still unknown.
    let gw2 = jwks_gateway(&up, &server, "300s", "3s").await;
    let hits = server.hits();
    let t = sign(Algorithm::RS256, &enc("rsa2"), Some("k9"), &claims("u"));
    let api2 = format!("{}/api/a", gw2.url());
    expect_rejected("unknown kid after a fetch", &api2, &up, Some(&t), &unknown).await;
    assert_eq!(server.hits(), hits + 1, "one on-demand fetch");

    // A key removed from the JWKS no longer verifies once the new set is loaded.
    server.set_body(jwks(&[k2.clone(), k3.clone()]));
    let gw3 = jwks_gateway(&up, &server, "300s", "3s").await;
    let t = sign(Algorithm::RS256, &enc("rsa"), Some("k1"), &claims("u"));
    let api3 = format!("{}/api/a", gw3.url());
    expect_rejected("removed kid", &api3, &up, Some(&t), &unknown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_down_at_start_then_up_then_down_keeps_last_good_keys() {
    let up = Upstream::start("svc").await;
    let mut server = JwksServer::down_at(jwks(&[jwk("rsa", Algorithm::RS256, "k1")]));
    let fresh = |sub: &str| sign(Algorithm::RS256, &enc("rsa"), Some("k1"), &claims(sub));

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
    until(
        "tokens verify once the JWKS is up",
        Duration::from_secs(10),
        || {
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
        },
    )
    .await;
    eprintln!("keys loaded {:?} after the JWKS came up", t_up.elapsed());

    // The server fails later (HTTP 503): refreshes fail and the last good set keeps verifying.
    server.set_failing(true);
    let hits = server.hits();
    let state = server.state.clone();
    until("two failed refreshes", Duration::from_secs(10), || {
        let n = state.hits.load(Ordering::SeqCst);
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
    let gw = support::gateway(&yaml, &[]).await;
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
    let gw = support::gateway(
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
    let gw = support::gateway(
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
    let gw = support::gateway(&text, &[]).await;
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

//! End-to-end tests of gw's proxy behaviour: the gateway runs in-process (`gw_suite::gateway`) in front
//! of real testkit upstreams on `127.0.0.1:0`; requests go over real TCP.
//!
//! Covered (one test each, names in brackets):
//! 1. rewrites — prefix strip, pattern parameter rewrite, query kept, Host kept / set by `rewrite.host`
//!    [`rewrites_prefix_pattern_query_and_host`];
//! 2. bodies ≥ 1 MiB with Content-Length and chunked, checked by the length/checksum the upstream
//!    recorded and by the echoed bytes [`large_body_content_length`, `large_body_chunked`];
//! 3. load balancing through the gateway: round robin alternates exactly, 3:1 weights, consistent hash
//!    on a header, least connections, fastest [`lb_*`];
//! 4. active health checks take an endpoint out and put it back, and a stopped endpoint costs no
//!    failed request [`health_check_removes_and_restores_endpoint`];
//! 5. gateway errors — exact status and the `{"error","message","request_id"}` body: 404, 405 + `Allow`,
//!    502, 503, 504, 413 (Content-Length and chunked), 400 [`error_*`];
//! 6. retries: connect failures are retried on another endpoint for any method; a POST that may have
//!    reached the upstream is never sent twice [`retry_*`];
//! 7. `X-Forwarded-*`, `X-Request-Id` (kept / replaced / generated) and hop-by-hop stripping
//!    [`forwarded_and_hop_by_hop_headers`, `request_id_kept_replaced_or_generated`];
//! 8. hostile paths: dot segments, encoded dots and repeated slashes resolve to the right route, an
//!    encoded slash (`%2F`, `..%2f`) is refused with 400 by the default path policy, traversal never skips a
//!    route's auth, an oversized header gets 431 (64 KiB gateway limit) or Pingora's 400 (> 1 MiB) and
//!    the gateway keeps serving [`hostile_paths_*`, `traversal_cannot_skip_route_auth`,
//!    `oversized_request_header_is_refused`];
//!
//! WebSocket tunnels are tested in `tests/websocket_e2e.rs`.

// `call(client, method, url, headers, body)`: one request, bounded by `CALL_LIMIT`; panics on errors.
use gateway_testkit::send as call;
use gateway_testkit::{
    checksum_hex, fnv1a64, get, http_client, raw_request, Bytes, HttpClient, HttpResponse, Method,
    Mode, Upstream,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for any single client exchange in these tests.
const CALL_LIMIT: Duration = gateway_testkit::SEND_LIMIT;

fn addr_var(name: &'static str, up: &Upstream) -> (&'static str, String) {
    (name, up.addr().to_string())
}

async fn get_via(client: &HttpClient, url: &str) -> HttpResponse {
    call(client, Method::GET, url, &[], Bytes::new()).await
}

/// The upstream that answered (testkit sets `x-upstream`).
fn who(r: &HttpResponse) -> String {
    r.header("x-upstream").unwrap_or("<none>").to_string()
}

/// Checks a gateway-generated error: exact status, a JSON body with exactly `error`, `message` and
/// `request_id`, the expected code, and the `x-request-id` header equal to the body's id.
fn check_error(
    status: u16,
    request_id_header: Option<&str>,
    body: &[u8],
    want_status: u16,
    want_code: &str,
) -> Value {
    let text = String::from_utf8_lossy(body);
    assert_eq!(status, want_status, "status; body: {text}");
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    let obj = v.as_object().expect("error body is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "message", "request_id"], "body: {text}");
    assert_eq!(v["error"], want_code, "body: {text}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message: {text}"
    );
    let id = v["request_id"].as_str().expect("request_id is a string");
    assert!(!id.is_empty());
    assert_eq!(Some(id), request_id_header, "x-request-id header vs body");
    v
}

fn check_http_error(r: &HttpResponse, want_status: u16, want_code: &str) -> Value {
    check_error(
        r.status.as_u16(),
        r.header("x-request-id"),
        &r.body,
        want_status,
        want_code,
    )
}

/// Deterministic pseudo-random bytes (xorshift), so a checksum match means the exact bytes arrived.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A response read off a raw socket until the server closed it.
struct Parsed {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Parsed {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_response(buf: &[u8]) -> Parsed {
    let end = find(buf, b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut p = Parsed {
        status,
        headers,
        body: Vec::new(),
    };
    let mut rest = &buf[end + 4..];
    if p.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let eol = find(rest, b"\r\n").expect("chunk size line");
            let size_txt = String::from_utf8_lossy(&rest[..eol]);
            let size_txt = size_txt.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_txt, 16).expect("hex chunk size");
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            p.body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    } else if let Some(len) = p.header("content-length") {
        let len: usize = len.parse().expect("content-length");
        p.body = rest[..len].to_vec();
    } else {
        p.body = rest.to_vec();
    }
    p
}

/// Sends `head` (which must ask for `Connection: close` and chunked encoding) and then `chunks`
/// chunk-framed, while concurrently reading the whole response until the gateway closes — so a
/// streamed echo of a big body cannot deadlock on socket buffers.
async fn raw_chunked(addr: SocketAddr, head: &str, chunks: Vec<Vec<u8>>) -> Parsed {
    let stream = TcpStream::connect(addr).await.expect("connect to gateway");
    let (mut rd, mut wr) = stream.into_split();
    let head = head.to_owned();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for c in chunks {
            wr.write_all(format!("{:x}\r\n", c.len()).as_bytes())
                .await?;
            wr.write_all(&c).await?;
            wr.write_all(b"\r\n").await?;
        }
        wr.write_all(b"0\r\n\r\n").await?;
        wr.flush().await?;
        // hand the write half back so the socket is not half-closed before the response is read
        Ok::<_, std::io::Error>(wr)
    });
    let mut buf = Vec::new();
    tokio::time::timeout(CALL_LIMIT, rd.read_to_end(&mut buf))
        .await
        .expect("response within the time limit")
        .expect("read response");
    let _ = writer.await;
    parse_response(&buf)
}

// ---------------------------------------------------------------------------------------------
// 1. rewrites
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_prefix_pattern_query_and_host() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{UP}}" }]
routes:
  - name: users
    match: { pattern: "/api/users/{id}" }
    rewrite: { path: "/v2/users/{id}" }
    upstream: svc
  - name: strip
    match: { prefix: /api/svc }
    rewrite: { strip_prefix: true }
    upstream: svc
  - name: hosted
    match: { prefix: /api/hosted }
    rewrite: { strip_prefix: true, host: internal.svc }
    upstream: svc
"#,
        &[addr_var("UP", &up)],
    )
    .await;
    let c = http_client();
    let host = [("host", "public.example:8080")];

    // pattern parameter rewrite, query string untouched (order and encoding kept)
    let r = call(
        &c,
        Method::GET,
        &format!("{}/api/users/42?b=2&a=%20x", gw.url()),
        &host,
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json().expect("json");
    assert_eq!(v["path"], "/v2/users/42");
    assert_eq!(v["query"], "b=2&a=%20x");
    assert_eq!(v["uri"], "/v2/users/42?b=2&a=%20x");
    assert_eq!(
        v["headers"]["host"], "public.example:8080",
        "client Host kept"
    );
    // a pattern parameter is one segment: /api/users/42/x is not this route (and no other matches)
    let r = get_via(&c, &format!("{}/api/users/42/x", gw.url())).await;
    check_http_error(&r, 404, "no_route");

    // prefix strip: below the prefix, and the prefix itself becomes "/"
    let r = get_via(&c, &format!("{}/api/svc/a/b?x=1", gw.url())).await;
    let v = r.json().expect("json");
    assert_eq!(
        (v["path"].as_str(), v["query"].as_str()),
        (Some("/a/b"), Some("x=1"))
    );
    let r = get_via(&c, &format!("{}/api/svc", gw.url())).await;
    assert_eq!(r.json().expect("json")["path"], "/");
    // segment boundary: /api/svcx is not under /api/svc
    let r = get_via(&c, &format!("{}/api/svcx", gw.url())).await;
    check_http_error(&r, 404, "no_route");

    // rewrite.host replaces Host; the original goes in X-Forwarded-Host
    let r = call(
        &c,
        Method::GET,
        &format!("{}/api/hosted/q?z=9", gw.url()),
        &host,
        Bytes::new(),
    )
    .await;
    let v = r.json().expect("json");
    assert_eq!(v["path"], "/q");
    assert_eq!(v["query"], "z=9");
    assert_eq!(v["headers"]["host"], "internal.svc");
    assert_eq!(v["headers"]["x-forwarded-host"], "public.example:8080");
}

// ---------------------------------------------------------------------------------------------
// 2. large bodies
// ---------------------------------------------------------------------------------------------

const BIG: usize = 1536 * 1024 + 7; // 1.5 MiB and an odd tail

const SVC_STRIP: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{UP}}" }]
routes:
  - name: svc
    match: { prefix: /api/svc }
    rewrite: { strip_prefix: true }
    upstream: svc
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_content_length() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(SVC_STRIP, &[addr_var("UP", &up)]).await;
    let c = http_client();
    let body = noise(BIG, 7);
    let sum = fnv1a64(&body);

    // echoed back byte for byte
    let r = call(
        &c,
        Method::POST,
        &format!("{}/api/svc/echo", gw.url()),
        &[("content-type", "application/octet-stream")],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), BIG, "echoed length");
    assert!(r.body[..] == body[..], "echoed bytes differ");
    let rec = up.last_request().expect("recorded");
    assert_eq!(rec.path, "/echo");
    assert_eq!(rec.body_len, BIG as u64);
    assert_eq!(rec.body_fnv1a64, sum);
    assert!(rec.body_complete);
    assert_eq!(
        rec.header("content-length").as_deref(),
        Some(BIG.to_string().as_str())
    );

    // the upstream's own accounting of a consumed body
    let r = call(
        &c,
        Method::PUT,
        &format!("{}/api/svc/upload", gw.url()),
        &[],
        body.clone(),
    )
    .await;
    let v = r.json().expect("json");
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["body_len"], BIG as u64);
    assert_eq!(v["body_fnv1a64"], checksum_hex(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_chunked() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(SVC_STRIP, &[addr_var("UP", &up)]).await;
    let body = noise(BIG, 11);
    // uneven chunk sizes, 1 byte to ~40 KiB
    let mut chunks = Vec::new();
    let mut off = 0;
    let mut k = 1usize;
    while off < body.len() {
        let n = (k * 7919 % 40_000 + 1).min(body.len() - off);
        chunks.push(body[off..off + n].to_vec());
        off += n;
        k += 1;
    }
    let n_chunks = chunks.len();
    let head = "POST /api/svc/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
                Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n";
    let p = raw_chunked(gw.addrs[0], head, chunks.clone()).await;
    assert_eq!(p.status, 200);
    assert_eq!(p.body.len(), BIG, "echoed length ({n_chunks} chunks sent)");
    assert!(p.body == body, "echoed bytes differ");
    let rec = up.last_request().expect("recorded");
    assert_eq!(rec.path, "/echo");
    assert_eq!(rec.body_len, BIG as u64);
    assert_eq!(rec.body_fnv1a64, fnv1a64(&body));
    assert!(rec.body_complete);
    assert_eq!(rec.header("transfer-encoding").as_deref(), Some("chunked"));
    assert!(rec.header("content-length").is_none());

    // consumed (not echoed) chunked body
    let head = "POST /api/svc/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
                Connection: close\r\n\r\n";
    let p = raw_chunked(gw.addrs[0], head, chunks).await;
    assert_eq!(p.status, 200);
    let v: Value = serde_json::from_slice(&p.body).expect("json");
    assert_eq!(v["body_len"], BIG as u64);
    assert_eq!(v["body_fnv1a64"], checksum_hex(&body));
}

// ---------------------------------------------------------------------------------------------
// 3. load balancing
// ---------------------------------------------------------------------------------------------

/// Two weighted endpoints `A`, `B` behind `/api/svc` (prefix stripped); `lb` is the
/// `load_balancing` value, or `""` to leave it out (the default policy).
fn lb_config(lb: &str, weights: (u32, u32)) -> String {
    let lb = if lb.is_empty() {
        String::new()
    } else {
        format!("\n    load_balancing: {lb}")
    };
    format!(
        r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
upstreams:
  - name: svc
    endpoints: [{{ address: "{{{{A}}}}", weight: {} }}, {{ address: "{{{{B}}}}", weight: {} }}]{lb}
routes:
  - name: svc
    match: {{ prefix: /api/svc }}
    rewrite: {{ strip_prefix: true }}
    upstream: svc
"#,
        weights.0, weights.1
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_round_robin_alternates_exactly() {
    // explicit, and the default when `load_balancing` is left out
    for lb in ["{ type: round_robin }", ""] {
        let a = Upstream::start("a").await;
        let b = Upstream::start("b").await;
        let gw = gw_suite::gateway(
            &lb_config(lb, (1, 1)),
            &[addr_var("A", &a), addr_var("B", &b)],
        )
        .await;
        let c = http_client();
        let mut seq = Vec::new();
        for i in 0..20 {
            let r = get_via(&c, &format!("{}/api/svc/rr/{i}", gw.url())).await;
            assert_eq!(r.status, 200);
            seq.push(who(&r));
        }
        for w in seq.windows(2) {
            assert_ne!(w[0], w[1], "{lb:?}: not alternating: {seq:?}");
        }
        assert_eq!((a.hits(), b.hits()), (10, 10), "{lb:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_weighted_round_robin_3_to_1() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = gw_suite::gateway(
        &lb_config("{ type: round_robin }", (3, 1)),
        &[addr_var("A", &a), addr_var("B", &b)],
    )
    .await;
    let c = http_client();
    for _ in 0..400 {
        let r = get_via(&c, &format!("{}/api/svc/w", gw.url())).await;
        assert_eq!(r.status, 200);
    }
    let (na, nb) = (a.hits(), b.hits());
    eprintln!("weights 3:1 over 400: a={na} b={nb}");
    assert_eq!(na + nb, 400);
    // expected 300:100; tolerance ±20 (5% of the total)
    assert!(
        (280..=320).contains(&na),
        "weights 3:1 gave a={na} b={nb} over 400"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_consistent_hash_on_header() {
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    ];
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{A}}" }, { address: "{{B}}" }, { address: "{{C}}" }]
    load_balancing: { type: consistent_hash, key: { type: header, name: x-user } }
routes:
  - name: svc
    match: { prefix: /api/svc }
    upstream: svc
"#,
        &[
            addr_var("A", &ups[0]),
            addr_var("B", &ups[1]),
            addr_var("C", &ups[2]),
        ],
    )
    .await;
    let c = http_client();
    let url = format!("{}/api/svc/h", gw.url());
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    // four interleaved rounds over 30 keys: each key must land on the same endpoint every time
    for round in 0..4 {
        for k in 0..30 {
            let key = format!("user-{k}");
            let r = call(&c, Method::GET, &url, &[("x-user", &key)], Bytes::new()).await;
            assert_eq!(r.status, 200);
            let w = who(&r);
            match owner.get(&key) {
                None => {
                    owner.insert(key, w);
                }
                Some(prev) => assert_eq!(*prev, w, "key {key} moved in round {round}"),
            }
        }
    }
    let mut per_ep: BTreeMap<&str, usize> = BTreeMap::new();
    for w in owner.values() {
        *per_ep.entry(w.as_str()).or_default() += 1;
    }
    eprintln!("consistent hash, 30 keys: {per_ep:?}");
    assert!(
        per_ep.len() >= 2,
        "30 keys all hashed onto one endpoint: {per_ep:?}"
    );
    // a request without the key still gets an answer
    let r = get_via(&c, &url).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_least_connections_prefers_idle_endpoint() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = gw_suite::gateway(
        &lb_config("{ type: least_connections }", (1, 1)),
        &[addr_var("A", &a), addr_var("B", &b)],
    )
    .await;
    let url = format!("{}/api/svc/lc", gw.url());
    a.set_mode(Mode::Delay(Duration::from_millis(1200)));

    // Fire requests one by one until one of them sits on the slow endpoint A.
    let mut pending = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while a.in_flight() == 0 {
        assert!(
            Instant::now() < deadline,
            "no request reached A (pending {})",
            pending.len()
        );
        let u = url.clone();
        pending.push(tokio::spawn(async move { get(&u).await }));
        let t = Instant::now();
        while a.in_flight() == 0 && t.elapsed() < Duration::from_millis(200) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(a.in_flight(), 1);
    let a_hits = a.hits();

    // While A holds one request, every new request goes to the idle endpoint B.
    let c = http_client();
    for _ in 0..10 {
        let r = get_via(&c, &url).await;
        assert_eq!(r.status, 200);
        assert_eq!(who(&r), "b", "least_connections sent to the busy endpoint");
    }
    assert_eq!(a.hits(), a_hits, "A got traffic while busy");
    assert_eq!(a.in_flight(), 1, "the slow request is still in flight");

    // Once A is idle again (and fast), both share the load again.
    a.set_mode(Mode::Ok);
    for h in pending {
        let r = tokio::time::timeout(CALL_LIMIT, h)
            .await
            .expect("slow request finishes")
            .expect("task")
            .expect("request");
        assert_eq!(r.status, 200);
    }
    let mut seen = HashMap::new();
    for _ in 0..10 {
        *seen.entry(who(&get_via(&c, &url).await)).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "idle endpoints share load: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_fastest_prefers_quick_endpoint() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = gw_suite::gateway(
        &lb_config("{ type: fastest }", (1, 1)),
        &[addr_var("A", &a), addr_var("B", &b)],
    )
    .await;
    a.set_mode(Mode::Delay(Duration::from_millis(40)));
    let c = http_client();
    let url = format!("{}/api/svc/f", gw.url());
    // a few samples: endpoints without a sample are tried first, so both get measured
    for _ in 0..4 {
        assert_eq!(get_via(&c, &url).await.status, 200);
    }
    assert!(a.hits() >= 1 && b.hits() >= 1, "both endpoints sampled");
    let a_hits = a.hits();
    for _ in 0..20 {
        let r = get_via(&c, &url).await;
        assert_eq!(who(&r), "b", "fastest picked the slow endpoint");
    }
    assert_eq!(a.hits(), a_hits);
}

// ---------------------------------------------------------------------------------------------
// 4. active health checks
// ---------------------------------------------------------------------------------------------

const HEALTH_CFG: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{A}}" }, { address: "{{B}}" }]
    health_check: { path: /health, interval: 200ms, timeout: 150ms, unhealthy_threshold: 1, healthy_threshold: 1 }
routes:
  - name: svc
    match: { prefix: /api/svc }
    rewrite: { strip_prefix: true }
    upstream: svc
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_removes_and_restores_endpoint() {
    let mut a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = gw_suite::gateway(HEALTH_CFG, &[addr_var("A", &a), addr_var("B", &b)]).await;
    let c = http_client();
    let url = format!("{}/api/svc/x", gw.url());
    let bound = Duration::from_secs(3);

    // A reports unhealthy: within a bound, A gets no more traffic, and nothing fails meanwhile.
    a.set_health(false);
    let t = Instant::now();
    let mut run_of_b = 0;
    while run_of_b < 10 {
        assert!(t.elapsed() < bound, "A still gets traffic after {bound:?}");
        let r = get_via(&c, &url).await;
        assert_eq!(r.status, 200);
        run_of_b = if who(&r) == "b" { run_of_b + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = t.elapsed();
    let a_hits = a.hits();
    for _ in 0..20 {
        let r = get_via(&c, &url).await;
        assert_eq!((r.status.as_u16(), who(&r).as_str()), (200, "b"));
    }
    assert_eq!(a.hits(), a_hits, "unhealthy endpoint got traffic");

    // A recovers: it gets traffic again within a bound.
    a.set_health(true);
    let t = Instant::now();
    loop {
        assert!(t.elapsed() < bound, "A not back after {bound:?}");
        let r = get_via(&c, &url).await;
        assert_eq!(r.status, 200);
        if who(&r) == "a" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let restored = t.elapsed();

    // A dies: the checker marks it down, and no client request fails meanwhile (connect failures
    // are retried on B until then).
    a.stop().await;
    let t = Instant::now();
    let rt = gw.engine.runtime();
    while rt.upstreams[0].balancer.healthy(0) {
        assert!(t.elapsed() < bound, "stopped endpoint still healthy");
        let r = get_via(&c, &url).await;
        assert_eq!((r.status.as_u16(), who(&r).as_str()), (200, "b"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let marked_down = t.elapsed();
    a.restart().await.expect("restart A");
    let t = Instant::now();
    loop {
        assert!(t.elapsed() < bound, "restarted A not back after {bound:?}");
        let r = get_via(&c, &url).await;
        assert_eq!(r.status, 200);
        if who(&r) == "a" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "health: drained in {drained:?}, restored in {restored:?}, stop marked down in \
         {marked_down:?}, restart back in {:?}",
        t.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_404_no_route() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(SVC_STRIP, &[addr_var("UP", &up)]).await;
    let r = get_via(&http_client(), &format!("{}/nothing/here", gw.url())).await;
    check_http_error(&r, 404, "no_route");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_405_with_allow_header() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{UP}}" }]
routes:
  - name: items
    match: { prefix: /api/items, methods: [GET, POST] }
    upstream: svc
"#,
        &[addr_var("UP", &up)],
    )
    .await;
    let c = http_client();
    let r = call(
        &c,
        Method::DELETE,
        &format!("{}/api/items/1", gw.url()),
        &[],
        Bytes::new(),
    )
    .await;
    check_http_error(&r, 405, "method_not_allowed");
    let allow = r.header("allow").expect("Allow header");
    let mut methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    methods.sort_unstable();
    assert_eq!(methods, ["GET", "POST"], "Allow: {allow}");
    assert_eq!(up.hits(), 0);
    // the allowed methods pass
    assert_eq!(
        get_via(&c, &format!("{}/api/items/1", gw.url()))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_502_when_every_endpoint_refuses() {
    let mut a = Upstream::start("a").await;
    let mut b = Upstream::start("b").await;
    let gw = gw_suite::gateway(
        &lb_config("{ type: round_robin }", (1, 1)),
        &[addr_var("A", &a), addr_var("B", &b)],
    )
    .await;
    a.stop().await;
    b.stop().await;
    let c = http_client();
    for m in [Method::GET, Method::POST] {
        let t = Instant::now();
        let r = call(
            &c,
            m.clone(),
            &format!("{}/api/svc/x", gw.url()),
            &[],
            "body",
        )
        .await;
        check_http_error(&r, 502, "upstream_unavailable");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{m}: {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_503_when_no_endpoint_is_healthy() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = gw_suite::gateway(HEALTH_CFG, &[addr_var("A", &a), addr_var("B", &b)]).await;
    let c = http_client();
    let url = format!("{}/api/svc/x", gw.url());
    assert_eq!(get_via(&c, &url).await.status, 200);
    a.set_health(false);
    b.set_health(false);
    let t = Instant::now();
    let r = loop {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "never answered 503 after all endpoints went unhealthy"
        );
        let r = get_via(&c, &url).await;
        if r.status != 200 {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    check_http_error(&r, 503, "no_healthy_upstream");
    assert_eq!(r.header("retry-after"), Some("1"));
    let hits = a.hits() + b.hits();
    let r = get_via(&c, &url).await;
    check_http_error(&r, 503, "no_healthy_upstream");
    assert_eq!(a.hits() + b.hits(), hits, "a 503 reached an upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_504_on_upstream_read_timeout() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{UP}}" }]
    timeouts: { read: 300ms }
routes:
  - name: svc
    match: { prefix: /api/svc }
    rewrite: { strip_prefix: true }
    upstream: svc
"#,
        &[addr_var("UP", &up)],
    )
    .await;
    up.set_mode(Mode::Hang);
    let t = Instant::now();
    let r = get_via(&http_client(), &format!("{}/api/svc/slow", gw.url())).await;
    let took = t.elapsed();
    check_http_error(&r, 504, "upstream_timeout");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "504 after {took:?}"
    );
    // a GET that may have reached the upstream is not retried without idempotent_on_error
    assert_eq!(up.hits_for("GET", "/slow"), 1);
    eprintln!("504 after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_413_body_too_large() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(
        r#"
server: { max_body_size: 1KiB }
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{UP}}" }]
routes:
  - name: small
    match: { prefix: /api/small }
    upstream: svc
  - name: big
    match: { prefix: /api/big }
    upstream: svc
    max_body_size: 4KiB
"#,
        &[addr_var("UP", &up)],
    )
    .await;
    let c = http_client();
    let post = |path: &'static str, n: usize| {
        let c = c.clone();
        let url = format!("{}{path}", gw.url());
        async move { call(&c, Method::POST, &url, &[], vec![b'x'; n]).await }
    };

    // Content-Length over the server limit: refused before anything reaches the upstream
    let r = post("/api/small/cl", 2048).await;
    check_http_error(&r, 413, "payload_too_large");
    assert_eq!(up.hits_for("POST", "/api/small/cl"), 0);
    let r = post("/api/small/cl-big", 256 * 1024).await;
    check_http_error(&r, 413, "payload_too_large");
    // exactly at the limit passes
    let r = post("/api/small/ok", 1024).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().expect("json")["body_len"], 1024);
    // the route's own limit overrides the server's, both ways
    assert_eq!(post("/api/big/ok", 2048).await.status, 200);
    check_http_error(&post("/api/big/cl", 5000).await, 413, "payload_too_large");
    assert_eq!(up.hits_for("POST", "/api/big/cl"), 0);

    // chunked (no Content-Length): counted as it streams
    let head = "POST /api/small/chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
                Connection: close\r\n\r\n";
    let p = raw_chunked(gw.addrs[0], head, vec![vec![b'y'; 600]; 4]).await;
    check_error(
        p.status,
        p.header("x-request-id"),
        &p.body,
        413,
        "payload_too_large",
    );
    // the upstream never got the whole oversized body
    assert!(
        up.requests()
            .iter()
            .filter(|q| q.path == "/api/small/chunked")
            .all(|q| !q.body_complete || q.body_len <= 1024),
        "an oversized chunked body was delivered upstream"
    );
    // a much larger refused upload: the 413 still reaches the client (the gateway drains what the
    // client keeps sending instead of resetting the connection under the response)
    let head = "POST /api/small/chunked-big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
                Connection: close\r\n\r\n";
    let p = raw_chunked(gw.addrs[0], head, vec![vec![b'w'; 16 * 1024]; 16]).await;
    check_error(
        p.status,
        p.header("x-request-id"),
        &p.body,
        413,
        "payload_too_large",
    );
    // a small chunked body passes
    let head = "POST /api/small/chunked-ok HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
                Connection: close\r\n\r\n";
    let p = raw_chunked(gw.addrs[0], head, vec![vec![b'z'; 300]; 3]).await;
    assert_eq!(p.status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&p.body).expect("json")["body_len"],
        900
    );
    // the gateway still serves
    assert_eq!(post("/api/small/after", 10).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_400_malformed_path_escape() {
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
"#,
        &[addr_var("UP", &up)],
    )
    .await;
    for path in ["/api/%zz", "/api/%4", "/api/a%00b"] {
        let r = raw_request(
            gw.addrs[0],
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        )
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        check_error(
            r.status,
            r.header("x-request-id"),
            &r.body,
            400,
            "bad_request",
        );
    }
    assert_eq!(up.hits(), 0);
    let r = raw_request(
        gw.addrs[0],
        "GET /api/ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200);
}

// ---------------------------------------------------------------------------------------------
// 6. retries
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_connect_failure_on_other_endpoint() {
    let mut a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = gw_suite::gateway(
        &lb_config("{ type: round_robin }", (1, 1)),
        &[addr_var("A", &a), addr_var("B", &b)],
    )
    .await;
    a.stop().await;
    let c = http_client();
    for i in 0..10 {
        let r = get_via(&c, &format!("{}/api/svc/g/{i}", gw.url())).await;
        assert_eq!((r.status.as_u16(), who(&r).as_str()), (200, "b"), "GET {i}");
        let payload = format!("payload-{i}");
        let r = call(
            &c,
            Method::POST,
            &format!("{}/api/svc/p/{i}", gw.url()),
            &[],
            payload.clone(),
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), who(&r).as_str()),
            (200, "b"),
            "POST {i}"
        );
        // the body arrived whole, exactly once
        let got: Vec<_> = b
            .requests()
            .into_iter()
            .filter(|q| q.path == format!("/p/{i}"))
            .collect();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].body[..], payload.as_bytes());
    }
    assert_eq!(b.hits(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_never_replays_a_post_that_reached_the_upstream() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: svc
    endpoints: [{ address: "{{A}}" }, { address: "{{B}}" }]
    retries: { attempts: 2, idempotent_on_error: true }
routes:
  - name: svc
    match: { prefix: /api/svc }
    rewrite: { strip_prefix: true }
    upstream: svc
"#,
        &[addr_var("A", &a), addr_var("B", &b)],
    )
    .await;
    a.set_mode(Mode::Reset);
    b.set_mode(Mode::Reset);
    let c = http_client();
    let r = call(
        &c,
        Method::POST,
        &format!("{}/api/svc/once", gw.url()),
        &[("content-type", "application/json")],
        r#"{"charge":100}"#,
    )
    .await;
    check_http_error(&r, 502, "bad_gateway");
    let sent = a.hits_for("POST", "/once") + b.hits_for("POST", "/once");
    assert_eq!(sent, 1, "a POST was sent {sent} times");

    // Control: the same failure on a GET is retried (idempotent_on_error): 1 + 2 attempts, on
    // alternating endpoints, and the client gets the real failure (502), not "no healthy endpoint".
    let r = get_via(&c, &format!("{}/api/svc/again", gw.url())).await;
    check_http_error(&r, 502, "bad_gateway");
    let (na, nb) = (a.hits_for("GET", "/again"), b.hits_for("GET", "/again"));
    assert_eq!(na + nb, 3, "GET attempts: a={na} b={nb}");
    assert!(
        na >= 1 && nb >= 1,
        "retries used both endpoints: a={na} b={nb}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. headers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_and_hop_by_hop_headers() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(SVC_STRIP, &[addr_var("UP", &up)]).await;
    let r = raw_request(
        gw.addrs[0],
        "GET /api/svc/h HTTP/1.1\r\nHost: shop.example:8443\r\nConnection: x-custom, close\r\n\
         X-Custom: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
         Proxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n",
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = up.last_request().expect("recorded");
    assert_eq!(rec.path, "/h");
    assert_eq!(rec.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(rec.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        rec.header("x-forwarded-host").as_deref(),
        Some("shop.example:8443")
    );
    assert_eq!(rec.header("host").as_deref(), Some("shop.example:8443"));
    assert_eq!(rec.header("x-kept").as_deref(), Some("yes"));
    for h in ["x-custom", "keep-alive", "te", "proxy-connection"] {
        assert!(
            rec.header(h).is_none(),
            "hop-by-hop {h} forwarded: {:?}",
            rec.header(h)
        );
    }
    if let Some(conn) = rec.header("connection") {
        assert!(
            !conn.to_ascii_lowercase().contains("x-custom"),
            "Connection forwarded: {conn}"
        );
    }

    // an X-Forwarded-For from an untrusted client is kept and the peer appended
    let r = raw_request(
        gw.addrs[0],
        "GET /api/svc/h2 HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.9\r\n\
         Connection: close\r\n\r\n",
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200);
    let rec = up.last_request().expect("recorded");
    assert_eq!(
        rec.header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_kept_replaced_or_generated() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(SVC_STRIP, &[addr_var("UP", &up)]).await;
    let upr = &up;
    let send = |id: Option<String>| {
        let addr = gw.addrs[0];
        async move {
            let hdr = id
                .map(|v| format!("X-Request-Id: {v}\r\n"))
                .unwrap_or_default();
            let r = raw_request(
                addr,
                format!("GET /api/svc/id HTTP/1.1\r\nHost: t\r\n{hdr}Connection: close\r\n\r\n"),
            )
            .await
            .expect("request");
            assert_eq!(r.status, 200);
            let sent_up = upr.last_request().expect("recorded").header("x-request-id");
            (r.header("x-request-id").map(str::to_owned), sent_up)
        }
    };
    let sane = |s: &str| {
        (1..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    };

    // a sane client id is kept, sent upstream and echoed
    let (resp, upstream) = send(Some("req-42.a_b:c".into())).await;
    assert_eq!(resp.as_deref(), Some("req-42.a_b:c"));
    assert_eq!(upstream.as_deref(), Some("req-42.a_b:c"));

    // hostile ids are replaced by a generated one, the same upstream and in the response
    let long = "a".repeat(200);
    for bad in ["bad id with spaces", long.as_str(), "x\"<script>"] {
        let (resp, upstream) = send(Some(bad.to_owned())).await;
        let resp = resp.expect("x-request-id in response");
        assert_ne!(resp, bad);
        assert!(sane(&resp), "generated id {resp:?}");
        assert_eq!(upstream.as_deref(), Some(resp.as_str()), "for {bad:?}");
    }

    // none sent: generated, unique per request
    let (r1, u1) = send(None).await;
    let (r2, _) = send(None).await;
    let r1 = r1.expect("generated id");
    assert!(sane(&r1));
    assert_eq!(u1.as_deref(), Some(r1.as_str()));
    assert_ne!(Some(r1), r2);
}

// ---------------------------------------------------------------------------------------------
// 8. hostile paths
// ---------------------------------------------------------------------------------------------

const TWO_ROUTES: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  - name: pub
    endpoints: [{ address: "{{PUB}}" }]
  - name: adm
    endpoints: [{ address: "{{ADM}}" }]
routes:
  - name: public
    match: { prefix: /api/public }
    upstream: pub
  - name: admin
    match: { prefix: /api/admin }
    upstream: adm
"#;

async fn raw_get(addr: SocketAddr, path: &str) -> gateway_testkit::RawResponse {
    raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .await
    .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_resolve_to_the_normalised_route() {
    let pubu = Upstream::start("public").await;
    let adm = Upstream::start("admin").await;
    let gw = gw_suite::gateway(TWO_ROUTES, &[addr_var("PUB", &pubu), addr_var("ADM", &adm)]).await;
    let addr = gw.addrs[0];

    // (request path, upstream that must answer, path it must receive)
    let cases = [
        ("/api/public/../admin", "admin", "/api/admin"),
        ("/api/public/%2e%2e/admin", "admin", "/api/admin"),
        ("/api/public/%2E%2E/admin/x", "admin", "/api/admin/x"),
        ("/api/public/.%2e/admin", "admin", "/api/admin"),
        ("//api//admin", "admin", "/api/admin"),
        ("/api/./admin/", "admin", "/api/admin/"),
        ("/api/admin/../public/y", "public", "/api/public/y"),
        ("/../../api/public", "public", "/api/public"),
        ("/%61pi/public/z", "public", "/api/public/z"),
    ];
    for (path, want, upstream_path) in cases {
        let r = raw_get(addr, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("x-upstream"), Some(want), "{path}");
        let rec = if want == "admin" {
            adm.last_request()
        } else {
            pubu.last_request()
        }
        .expect("recorded");
        assert_eq!(rec.path, upstream_path, "{path} sent upstream as");
    }

    // an encoded slash is refused by the default path policy (issue 11 item 2; tests/path_policy_e2e.rs)
    for path in [
        "/api%2Fadmin",
        "/api%2fpublic/x",
        "/api/admin%2Fx",
        "/api/public/x%2fy",
        "/api/public/..%2fadmin",
    ] {
        let r = raw_get(addr, path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_cannot_skip_route_auth() {
    let pubu = Upstream::start("public").await;
    let adm = Upstream::start("admin").await;
    let yaml = format!(
        "{TWO_ROUTES}    policies: [admin-jwt]\n{}",
        r#"
policies:
  - type: jwt
    name: admin-jwt
    keys: { type: hmac, secret: "0123456789abcdef0123456789abcdef-test" }
"#
    );
    let gw = gw_suite::gateway(&yaml, &[addr_var("PUB", &pubu), addr_var("ADM", &adm)]).await;
    let addr = gw.addrs[0];
    for path in [
        "/api/admin",
        "/api/public/../admin",
        "/api/public/%2e%2e/admin",
        "/api/public/%2E%2e/admin/users",
        "//api//admin",
        "/api/public/./../admin/",
    ] {
        let r = raw_get(addr, path).await;
        assert_eq!(
            r.status,
            401,
            "{path} skipped the admin route's auth: {}",
            r.text()
        );
        assert!(r.header("www-authenticate").is_some(), "{path}");
    }
    assert_eq!(adm.hits(), 0);
    assert_eq!(pubu.hits(), 0);
    // `..%2f` would be traversal to an upstream that decodes `%2F`: refused by the default path policy
    let r = raw_get(addr, "/api/public/..%2fadmin").await;
    assert_eq!(r.status, 400);
    assert_eq!(adm.hits() + pubu.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_header_is_refused() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(SVC_STRIP, &[addr_var("UP", &up)]).await;
    let addr = gw.addrs[0];
    let send = |path: &'static str, size: usize| async move {
        let big = "v".repeat(size);
        raw_request(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"),
        )
        .await
        .unwrap_or_else(|e| panic!("{size}-byte header: {e}"))
    };
    // a large but reasonable header passes
    assert_eq!(send("/api/svc/fine", 32 * 1024).await.status, 200);
    // 100 KiB: the gateway's own limit (64 KiB), a JSON 431
    let r = send("/api/svc/big", 100 * 1024).await;
    check_error(
        r.status,
        r.header("x-request-id"),
        &r.body,
        431,
        "header_too_large",
    );
    assert_eq!(raw_get(addr, "/api/svc/after").await.status, 200);
    // 2 MiB: over Pingora's parser limit (1 MiB), refused by Pingora itself with a bare 400
    let r = send("/api/svc/huge", 2 * 1024 * 1024).await;
    assert!(
        (400..500).contains(&r.status),
        "2 MiB header got {}",
        r.status
    );
    // the gateway is still serving, and nothing oversized was proxied
    assert_eq!(raw_get(addr, "/api/svc/after").await.status, 200);
    assert_eq!(up.hits_for("GET", "/big") + up.hits_for("GET", "/huge"), 0);
    assert_eq!(up.hits_for("GET", "/fine"), 1);
}

//! Per-request header work on the proxy path, before/after the issue 14 changes, side by side:
//! `X-Forwarded-For` (one buffer vs intermediate strings), the request id (stack buffer vs `format!`),
//! the rate-limit headers (texts rendered once per limit vs rendered per request); and the whole
//! upstream head step (`upstream_head`: the forwarded headers cost ~140 ns each through Pingora's
//! `insert_header`, which parses and allocates the name and hashes it into two maps).
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gateway_core::plan::{RateBackend, RateKey, RateLimitPlan, RateMode, RateScope};
use gateway_core::policy::rate_limit::{header_values, Decision, HeaderInfo, OnStoreError};
use gateway_core::proxy::bench_internals::{forward_headers, render, Forwarding, LimitTexts};
use gateway_core::proxy::headers::{forwarded_for_value, new_request_id_value};
use http::HeaderValue;
use pingora::http::RequestHeader;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The `X-Forwarded-For` builder as it was before (peer via `to_string`, value copied).
fn xff_before<'a>(peer: IpAddr, lines: impl IntoIterator<Item = &'a [u8]>) -> Option<HeaderValue> {
    let mut out: Vec<u8> = Vec::new();
    for line in lines {
        for item in line.split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() {
                continue;
            }
            out.extend_from_slice(item);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(peer.to_string().as_bytes());
    HeaderValue::from_bytes(&out).ok()
}

/// The request id as it was before (`format!`, then a header value).
fn request_id_before(seed: u64, n: u64) -> HeaderValue {
    HeaderValue::try_from(format!("{seed:016x}{n:016x}")).unwrap_or(HeaderValue::from_static("-"))
}

fn bench(c: &mut Criterion) {
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let hop: &[u8] = b"203.0.113.7";
    let mut g = c.benchmark_group("x_forwarded_for");
    g.bench_function("before_no_hops", |b| {
        b.iter(|| xff_before(black_box(peer), []))
    });
    g.bench_function("after_no_hops", |b| {
        b.iter(|| forwarded_for_value(Some(black_box(peer)), []))
    });
    g.bench_function("before_one_hop", |b| {
        b.iter(|| xff_before(black_box(peer), [hop]))
    });
    g.bench_function("after_one_hop", |b| {
        b.iter(|| forwarded_for_value(Some(black_box(peer)), [hop]))
    });
    g.finish();

    let mut g = c.benchmark_group("request_id");
    let mut n = 0u64;
    g.bench_function("before_format", |b| {
        b.iter(|| {
            n += 1;
            request_id_before(black_box(0x1234_5678_9abc_def0), n)
        })
    });
    g.bench_function("after_buffer", |b| b.iter(new_request_id_value));
    g.finish();

    let limit = RateLimitPlan {
        name: Arc::from("per-user-route"),
        window: Duration::from_secs(60),
        max: 1_000_000_000,
        key: RateKey::ClientIp,
        scope: RateScope::Route,
        backend: RateBackend::Local,
        mode: RateMode::Enforce,
        on_store_error: OnStoreError::Local,
        headers: true,
    };
    let texts = LimitTexts::new(&limit).expect("texts");
    let d = Decision {
        admitted: true,
        rejected_by: None,
        outcomes: Vec::new(),
        headers: Some(HeaderInfo {
            policy: limit.name.clone(),
            limit: limit.max,
            window_secs: 60,
            remaining: 999_999_123,
            reset_secs: 42,
            retry_after_secs: None,
        }),
        retry_after_secs: None,
    };
    assert_eq!(render(&d, &[&texts]), header_values(&d));
    let mut g = c.benchmark_group("rate_limit_headers");
    g.bench_function("before_per_request", |b| {
        b.iter(|| header_values(black_box(&d)))
    });
    g.bench_function("after_prerendered", |b| {
        b.iter(|| render(black_box(&d), &[&texts]))
    });
    g.finish();
}

/// The head sent upstream (step 8) for a request like the shared bench's (`wrk`: only `Host`), with
/// the header case map a head read from the wire has; the clone of the client head is measured alone
/// as `clone_only`.
fn upstream_head(c: &mut Criterion) {
    let mut client = RequestHeader::build("GET", b"/api/user/x", None).expect("head");
    client
        .append_header("Host", "127.0.0.1:8088")
        .expect("host");
    let host = client.headers.get("host").cloned();
    let rid = new_request_id_value();
    let f = Forwarding {
        upstream_path: "/x",
        injected: &[],
        claims: &[],
        route_host: None,
        original_host: host.as_ref(),
        peer: Some("127.0.0.1".parse().unwrap()),
        tls: false,
        request_id: &rid,
    };
    let mut g = c.benchmark_group("upstream_head");
    g.bench_function("clone_only", |b| b.iter(|| black_box(&client).clone()));
    g.bench_function("clone_and_forward", |b| {
        b.iter(|| {
            let mut up = black_box(&client).clone();
            assert!(forward_headers(&mut up, black_box(&f)));
            up
        })
    });
    g.finish();
}

criterion_group!(benches, bench, upstream_head);
criterion_main!(benches);

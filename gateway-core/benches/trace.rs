//! W3C trace context propagation, the per-request cost it adds: parsing the client's `traceparent`
//! (or starting a trace), and setting `traceparent` on the upstream request head.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gateway_core::fuzzing::trace;
use http::{HeaderMap, HeaderValue};
use pingora::http::RequestHeader;

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A typical request head: a dozen headers, with or without `traceparent`.
fn headers(tp: Option<&'static str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("authorization", "Bearer abc.def.ghi"),
        ("x-request-id", "01J9Z3K2V7Q8R5T6Y4W2X1C0B9"),
        ("x-forwarded-for", "203.0.113.7"),
        ("content-type", "application/json"),
        ("cookie", "session=abcdef0123456789"),
        ("tracestate", "congo=t61rcWkgMzE"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if let Some(tp) = tp {
        h.insert("traceparent", HeaderValue::from_static(tp));
    }
    h
}

fn propagation(c: &mut Criterion) {
    let mut g = c.benchmark_group("trace");
    g.bench_function("parse_valid", |b| {
        b.iter(|| trace::parse(black_box(VALID.as_bytes())))
    });
    let joined = headers(Some(VALID));
    g.bench_function("context_joined", |b| {
        b.iter(|| trace::context(black_box(&joined)))
    });
    let none = headers(None);
    g.bench_function("context_new_trace", |b| {
        b.iter(|| trace::context(black_box(&none)))
    });
    let invalid = headers(Some(
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ));
    g.bench_function("context_invalid", |b| {
        b.iter(|| trace::context(black_box(&invalid)))
    });
    // context + set on an upstream head that already carries the client's headers (the real path)
    let mut up = RequestHeader::build("GET", b"/api/v1/users/12345", None).expect("head");
    for (k, v) in &joined {
        up.insert_header(k.clone(), v.clone()).expect("header");
    }
    g.bench_function("context_and_apply", |b| {
        b.iter(|| {
            let t = trace::context(black_box(&joined));
            assert!(trace::apply(black_box(&mut up), &t));
        })
    });
    g.finish();
}

criterion_group!(benches, propagation);
criterion_main!(benches);

//! Hot-path cost: pre-resolved handles vs `with_label_values`, and access-log enqueue.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use gateway_core::observability::access_log::duration_ms;
use gateway_core::observability::*;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

fn metrics(c: &mut Criterion) {
    let m = Metrics::new().unwrap();
    // Many routes so the label-hash lookups are not trivially small maps.
    for i in 0..100 {
        let r = m.route(&format!("route-{i}"), &format!("upstream-{i}"));
        for st in [200, 201, 204, 301, 304, 400, 401, 403, 404, 500, 502, 503] {
            r.count(HttpMethod::Get, st);
        }
    }
    let handle = m.route("route-42", "upstream-42");
    let mut g = c.benchmark_group("record_request");
    g.bench_function("handle", |b| {
        b.iter(|| {
            handle.record(
                black_box(HttpMethod::Get),
                black_box(200),
                black_box(Duration::from_micros(1500)),
            )
        })
    });
    g.bench_function("handle_with_method_parse", |b| {
        b.iter(|| {
            handle.record(
                HttpMethod::parse(black_box("POST")),
                black_box(404),
                black_box(Duration::from_micros(1500)),
            )
        })
    });

    // Baseline: families with the same shape, resolved by label values on every request.
    let counters = IntCounterVec::new(
        Opts::new("t_requests_total", "t"),
        &["route", "upstream", "method", "status"],
    )
    .unwrap();
    let hist = HistogramVec::new(
        HistogramOpts::new("t_seconds", "t")
            .buckets(gateway_core::observability::metrics::DEFAULT_DURATION_BUCKETS.to_vec()),
        &["route", "upstream"],
    )
    .unwrap();
    for i in 0..100 {
        let (r, u) = (format!("route-{i}"), format!("upstream-{i}"));
        for st in [
            "200", "201", "204", "301", "304", "400", "401", "403", "404", "500",
        ] {
            counters.with_label_values(&[&r, &u, "GET", st]).inc();
        }
        hist.with_label_values(&[&r, &u]).observe(0.0);
    }
    let (route, upstream) = (String::from("route-42"), String::from("upstream-42"));
    g.bench_function("with_label_values_static_status", |b| {
        b.iter(|| {
            counters
                .with_label_values(&[
                    route.as_str(),
                    &upstream,
                    black_box("GET"),
                    black_box("200"),
                ])
                .inc();
            hist.with_label_values(&[route.as_str(), &upstream])
                .observe(black_box(Duration::from_micros(1500)).as_secs_f64());
        })
    });
    g.bench_function("with_label_values_formatted_status", |b| {
        b.iter(|| {
            let status = black_box(200u16).to_string();
            counters
                .with_label_values(&[route.as_str(), &upstream, black_box("GET"), &status])
                .inc();
            hist.with_label_values(&[route.as_str(), &upstream])
                .observe(black_box(Duration::from_micros(1500)).as_secs_f64());
        })
    });
    g.finish();

    let mut g = c.benchmark_group("count_only");
    g.bench_function("handle", |b| {
        b.iter(|| handle.count(black_box(HttpMethod::Get), black_box(200)))
    });
    g.bench_function("with_label_values", |b| {
        b.iter(|| {
            counters
                .with_label_values(&[
                    route.as_str(),
                    &upstream,
                    black_box("GET"),
                    black_box("200"),
                ])
                .inc()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("other_handles");
    let auth = m.auth("route-42");
    for r in [
        "missing_credentials",
        "invalid_token",
        "expired",
        "forbidden",
    ] {
        auth.failure(r);
    }
    g.bench_function("auth_failure_4th_cached_reason", |b| {
        b.iter(|| auth.failure(black_box("forbidden")))
    });
    let ep = m.endpoint("upstream-42", "10.0.0.1:8080");
    g.bench_function("endpoint_observe", |b| {
        b.iter(|| ep.observe(black_box(Duration::from_micros(900))))
    });
    g.bench_function("in_flight_guard", |b| {
        b.iter(|| drop(black_box(m.track_in_flight())))
    });
    g.finish();

    let mut g = c.benchmark_group("render");
    g.bench_function("render_100_routes", |b| {
        let mut s = String::new();
        b.iter(|| {
            s.clear();
            m.render_into(&mut s);
            black_box(s.len())
        })
    });
    g.finish();
}

fn record(now: SystemTime) -> AccessLogRecord<'static> {
    AccessLogRecord {
        ts: now,
        request_id: "01J9Z3K2V7Q8R5T6Y4W2X1C0B9",
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))),
        method: "GET",
        path: "/api/v1/users/12345/orders",
        route: Some("users"),
        upstream: Some("users-svc"),
        endpoint: Some("10.0.0.1:8080"),
        status: 200,
        bytes_in: 312,
        bytes_out: 18_934,
        duration_ms: duration_ms(Duration::from_micros(12_345)),
        upstream_duration_ms: Some(10.871),
        limit: Some("allowed"),
        user: Some("user-7f3a"),
    }
}

fn access_log(c: &mut Criterion) {
    let mut g = c.benchmark_group("access_log");
    let now = SystemTime::now();
    let rec = record(now);
    let mut buf = Vec::with_capacity(512);
    g.bench_function("serialize_only", |b| {
        b.iter(|| {
            buf.clear();
            serde_json::to_writer(&mut buf, black_box(&rec)).unwrap();
            black_box(buf.len())
        })
    });
    let log = AccessLog::new(AccessLogConfig {
        sink: AccessLogSink::Writer(Box::new(std::io::sink())),
        queue_capacity: 1 << 16,
        ..Default::default()
    })
    .unwrap();
    g.bench_function("serialize_and_enqueue", |b| {
        b.iter(|| black_box(log.log(black_box(&rec))))
    });
    log.flush().unwrap();
    eprintln!(
        "access_log: dropped {} of {} lines during bench",
        log.dropped(),
        log.dropped() + log.lines_written()
    );
    g.finish();
}

/// What a reload adds after the install: deleting the series of removed owners
/// (`Metrics::retain_series`), with 10,000 routes that all have traffic (2 statuses each, so
/// ~200,000 series) and every one still live: the cost of the walk when nothing goes.
fn retain(c: &mut Criterion) {
    let m = Metrics::new().unwrap();
    let names: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("route-{i}"), format!("upstream-{}", i % 100)))
        .collect();
    for (r, u) in &names {
        let h = m.route(r, u);
        h.record(HttpMethod::Get, 200, Duration::from_millis(2));
        h.record(HttpMethod::Get, 404, Duration::from_millis(1));
    }
    let live = LiveSeries {
        routes: names
            .iter()
            .map(|(r, u)| (r.as_str(), u.as_str()))
            .collect(),
        ..LiveSeries::default()
    };
    let mut g = c.benchmark_group("retain_series");
    g.sample_size(10);
    g.bench_function("10k_routes_all_live", |b| b.iter(|| m.retain_series(&live)));
    g.finish();
}

criterion_group!(benches, metrics, access_log, retain);
criterion_main!(benches);

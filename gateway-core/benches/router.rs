//! Route matching with 10, 1,000 and 10,000 routes, and compiling a 10,000-route configuration.
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use gateway_core::routing::{PathRule, Pattern, RequestView, RouteRule, Router};
use http::{HeaderMap, Method};

/// A realistic mix: a third prefixes, a third patterns, a third exact paths, spread over services.
fn rules(n: usize) -> Vec<RouteRule> {
    (0..n)
        .map(|i| {
            let svc = i / 3;
            let path = match i % 3 {
                0 => PathRule::Prefix(format!("/api/svc{svc}")),
                1 => PathRule::Pattern(
                    Pattern::parse(&format!("/api/svc{svc}/items/{{id}}/detail")).expect("pattern"),
                ),
                _ => PathRule::Exact(format!("/api/svc{svc}/health")),
            };
            RouteRule {
                path,
                hosts: vec![],
                methods: vec![],
                headers: vec![],
            }
        })
        .collect()
}

fn yaml(n: usize) -> String {
    let mut s = String::from("listeners: [{name: p, address: 127.0.0.1:8080}]\nupstreams:\n  - {name: u, endpoints: [{address: 127.0.0.1:3001}]}\nroutes:\n");
    for i in 0..n {
        let svc = i / 3;
        let m = match i % 3 {
            0 => format!("{{prefix: /api/svc{svc}}}"),
            1 => format!("{{pattern: \"/api/svc{svc}/items/{{id}}/detail\"}}"),
            _ => format!("{{path: /api/svc{svc}/health}}"),
        };
        s.push_str(&format!("  - {{name: r{i}, match: {m}, upstream: u}}\n"));
    }
    s
}

fn bench_match(c: &mut Criterion) {
    let mut g = c.benchmark_group("match");
    let h = HeaderMap::new();
    for n in [10usize, 1_000, 10_000] {
        let router = Router::new(rules(n));
        let last = n / 3 - 1;
        let paths = [
            format!("/api/svc{last}/items/42/detail"),
            format!("/api/svc{last}/anything/else"),
            format!("/api/svc{last}/health"),
            "/nope/x".to_string(),
        ];
        g.bench_with_input(BenchmarkId::new("mixed_4_paths", n), &router, |b, r| {
            b.iter(|| {
                for p in &paths {
                    black_box(r.find(&RequestView {
                        method: &Method::GET,
                        path: p,
                        host: None,
                        headers: &h,
                    }));
                }
            })
        });
    }
    g.finish();
}

fn bench_compile(c: &mut Criterion) {
    let text = yaml(10_000);
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("10k_routes", |b| {
        b.iter(|| black_box(gateway_core::compile("bench.yaml", &text, &|_| None)))
    });
    g.finish();
}

criterion_group!(benches, bench_match, bench_compile);
criterion_main!(benches);

//! Hot reload of a 10,000-route configuration: compile alone, and `Engine::reload` of an
//! already-compiled plan (restart-only checks, diff, runtime build from the state registry, warm-up,
//! swap). Requests never wait for either: they load the current runtime from an `ArcSwap`.
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use gateway_core::proxy::server::build_engine;

fn yaml(n: usize, prefix: &str) -> String {
    let mut s = String::from("listeners: [{name: p, address: 127.0.0.1:8080}]\nupstreams:\n  - {name: u, endpoints: [{address: 127.0.0.1:3001}]}\nroutes:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  - {{name: r{i}, match: {{prefix: /{prefix}/svc{i}}}, upstream: u}}\n"
        ));
    }
    s
}

fn plan(text: &str) -> gateway_core::plan::Plan {
    gateway_core::compile("bench.yaml", text, &|_| None)
        .plan
        .expect("valid")
}

fn bench_reload(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (a, b) = (yaml(10_000, "a"), yaml(10_000, "b"));
    let engine = build_engine(plan(&a)).expect("engine");
    let mut g = c.benchmark_group("reload");
    g.sample_size(10);
    let mut flip = false;
    g.bench_function("10k_routes_apply", |bch| {
        bch.iter_batched(
            || {
                flip = !flip;
                plan(if flip { &b } else { &a })
            },
            |p| black_box(rt.block_on(engine.reload(p)).expect("applied")),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_reload);
criterion_main!(benches);

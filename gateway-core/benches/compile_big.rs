//! Compiling big configurations: N generated routes (`examples/gen_routes.rs`, ~460 bytes each)
//! through `gateway_core::compile`, the function `gw validate` and `gw serve` run. Memory numbers are
//! in `docs/performance.md (memory section)` (`examples/bench/memory.sh`); this measures time.
//!
//!     cargo bench -p gateway-core --bench compile_big            # 1k and 10k routes
//!     GW_BENCH_ROUTES=100000 cargo bench -p gateway-core --bench compile_big
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[allow(dead_code)]
#[path = "../examples/gen_routes.rs"]
mod gen_routes;

fn sizes() -> Vec<usize> {
    match std::env::var("GW_BENCH_ROUTES") {
        Ok(v) => v
            .split(',')
            .map(|n| n.trim().parse().expect("GW_BENCH_ROUTES: numbers"))
            .collect(),
        Err(_) => vec![1_000, 10_000],
    }
}

fn bench_compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile_big");
    g.sample_size(10);
    for n in sizes() {
        let text = gen_routes::config(n);
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            b.iter(|| {
                let c = gateway_core::compile("routes.yaml", black_box(text), &|_| None);
                assert!(c.plan.is_some(), "the generated configuration compiles");
                c
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_compile);
criterion_main!(benches);

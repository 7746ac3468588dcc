//! ns per local check: one hot key, and keys drawn from 1M distinct keys.

use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gateway_core::policy::rate_limit::{LimitSpec, LocalConfig, RateLimiter, RateLimiterConfig};

const NOW: u64 = 1_700_000_040_000;
const N_KEYS: u64 = 1_000_000;

fn key(i: u64) -> [u8; 16] {
    let mut k = *b"client-000000000";
    let digits = format!("{i:09}");
    k[7..].copy_from_slice(digits.as_bytes());
    k
}

fn limiter() -> RateLimiter {
    let cfg = RateLimiterConfig {
        local: LocalConfig {
            shards: 64,
            max_keys: 2 * N_KEYS as usize,
        },
        redis: None,
    };
    RateLimiter::new(
        vec![LimitSpec::new(
            "bench",
            Duration::from_secs(60),
            1_000_000_000_000,
        )],
        cfg,
    )
    .expect("valid")
}

fn bench(c: &mut Criterion) {
    let l = limiter();
    let r = l.limit_ref("bench").expect("exists");
    let k = key(1);
    c.bench_function("local check, 1 key", |b| {
        b.iter(|| black_box(l.check_all_local(&[(r, black_box(&k))], 1, NOW)))
    });
    c.bench_function(
        "local check via async check_all (polled once), 1 key",
        |b| {
            b.iter(|| {
                let items: [(_, &[u8]); 1] = [(r, &k)];
                let fut = l.check_all(&items, NOW);
                let mut fut = std::pin::pin!(fut);
                match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(d) => black_box(d),
                    Poll::Pending => panic!("local check must not await"),
                }
            })
        },
    );

    let l = limiter();
    let keys: Vec<[u8; 16]> = (0..N_KEYS).map(key).collect();
    for k in &keys {
        l.check_all_local(&[(r, k)], 1, NOW);
    }
    assert_eq!(l.local_keys().0, N_KEYS as usize);
    let mut i: u64 = 0;
    c.bench_function("local check, 1M keys (random order)", |b| {
        b.iter(|| {
            // LCG over the key space: no locality between consecutive checks.
            i = (i
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407))
                % N_KEYS;
            black_box(l.check_all_local(&[(r, &keys[i as usize])], 1, NOW))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);

//! Hot-path costs of the circuit breaker and the outlier detector.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gateway_core::policy::breaker::{
    BreakerSettings, CallOutcome, CircuitBreaker, OutlierDetector, OutlierSettings, RateTrip,
    RateWindow,
};

fn rate(window: RateWindow) -> BreakerSettings {
    BreakerSettings {
        failure_threshold: 1_000_000,
        rate: Some(RateTrip {
            window,
            min_calls: 100,
            failure_rate_percent: Some(50.0),
            slow_call_rate_percent: Some(80.0),
            slow_call_threshold: Duration::from_secs(1),
        }),
        ..BreakerSettings::default()
    }
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    let ok = CallOutcome::success(Duration::from_millis(3));

    let cb = CircuitBreaker::new("b", BreakerSettings::default(), now);
    c.bench_function("closed/acquire+record (consecutive only, no lock)", |b| {
        b.iter(|| {
            let p = black_box(&cb).try_acquire(black_box(now)).unwrap();
            p.record(black_box(ok), now);
        })
    });

    let cb = CircuitBreaker::new("b", rate(RateWindow::Calls(100)), now);
    c.bench_function("closed/acquire+record (count window, mutex)", |b| {
        b.iter(|| {
            let p = black_box(&cb).try_acquire(black_box(now)).unwrap();
            p.record(black_box(ok), now);
        })
    });

    let cb = CircuitBreaker::new("b", rate(RateWindow::Time(Duration::from_secs(10))), now);
    let mut t = now;
    c.bench_function(
        "closed/acquire+record (time window, mutex, advancing clock)",
        |b| {
            b.iter(|| {
                t += Duration::from_micros(10);
                let p = black_box(&cb).try_acquire(black_box(t)).unwrap();
                p.record(black_box(ok), t);
            })
        },
    );

    let cb = CircuitBreaker::new("b", BreakerSettings::default(), now);
    for _ in 0..5 {
        let p = cb.try_acquire(now).unwrap();
        p.record(CallOutcome::failure(Duration::ZERO), now);
    }
    c.bench_function("open/try_acquire (rejected)", |b| {
        b.iter(|| black_box(&cb).try_acquire(black_box(now)).is_err())
    });

    let d = OutlierDetector::new(16, OutlierSettings::default(), now);
    c.bench_function("outlier/is_ejected", |b| {
        b.iter(|| black_box(&d).is_ejected(black_box(3), black_box(now)))
    });
    c.bench_function("outlier/record success", |b| {
        b.iter(|| black_box(&d).record(black_box(3), false, black_box(now)))
    });

    // Contended: a second thread hammers the same breaker while we measure.
    for (name, settings) in [
        (
            "contended/closed acquire+record (no lock)",
            BreakerSettings::default(),
        ),
        (
            "contended/closed acquire+record (count window)",
            rate(RateWindow::Calls(100)),
        ),
    ] {
        let cb = Arc::new(CircuitBreaker::new("b", settings, now));
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let other = {
                    let cb = cb.clone();
                    thread::spawn(move || {
                        for _ in 0..iters {
                            if let Ok(p) = cb.try_acquire(now) {
                                p.record(ok, now);
                            }
                        }
                    })
                };
                let start = Instant::now();
                for _ in 0..iters {
                    if let Ok(p) = black_box(&cb).try_acquire(now) {
                        p.record(ok, now);
                    }
                }
                let elapsed = start.elapsed();
                let _ = other.join();
                elapsed
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

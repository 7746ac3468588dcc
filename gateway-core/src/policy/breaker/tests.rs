//! Deterministic tests for the breaker state machine and the outlier detector (times are
//! `base + offsets`; no sleeps).

use super::*;
use std::sync::{Barrier, Mutex as StdMutex};
use std::thread;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

#[derive(Default)]
struct Recorder {
    transitions: StdMutex<Vec<(State, State)>>,
    rejected: AtomicU64,
}

impl BreakerObserver for Recorder {
    fn on_transition(&self, from: State, to: State) {
        if let Ok(mut v) = self.transitions.lock() {
            v.push((from, to));
        }
    }
    fn on_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

impl Recorder {
    fn transitions(&self) -> Vec<(State, State)> {
        self.transitions
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

fn settings(failures: u32, successes: u32, open: Duration, probes: u32) -> BreakerSettings {
    BreakerSettings {
        failure_threshold: failures,
        success_threshold: successes,
        open_duration: open,
        half_open_max_calls: probes,
        rate: None,
    }
}

fn breaker(s: BreakerSettings) -> (CircuitBreaker, Arc<Recorder>, Instant) {
    let base = Instant::now();
    let rec = Arc::new(Recorder::default());
    let cb = CircuitBreaker::with_observer("test", s, rec.clone(), base);
    (cb, rec, base)
}

fn call(cb: &CircuitBreaker, now: Instant, failed: bool) -> Result<(), Rejected> {
    let p = cb.try_acquire(now)?;
    p.record(
        CallOutcome {
            failed,
            duration: ms(1),
        },
        now,
    );
    Ok(())
}

/// Opens `cb` (failure_threshold consecutive failures) at `at`.
fn trip(cb: &CircuitBreaker, at: Instant) {
    for _ in 0..cb.settings().failure_threshold {
        assert!(call(cb, at, true).is_ok());
    }
    assert_eq!(cb.state(at), State::Open);
}

#[test]
fn closed_to_open_exactly_at_consecutive_threshold() {
    let (cb, rec, t0) = breaker(settings(3, 1, secs(30), 1));
    // Two failures, then a success resets the streak.
    call(&cb, t0, true).unwrap();
    call(&cb, t0, true).unwrap();
    assert_eq!(cb.snapshot(t0).consecutive_failures, 2);
    call(&cb, t0, false).unwrap();
    assert_eq!(cb.snapshot(t0).consecutive_failures, 0);
    // Threshold - 1 failures: still closed.
    call(&cb, t0, true).unwrap();
    call(&cb, t0, true).unwrap();
    assert_eq!(cb.state(t0), State::Closed);
    assert!(rec.transitions().is_empty());
    // The threshold-th failure opens it.
    call(&cb, t0, true).unwrap();
    assert_eq!(cb.state(t0), State::Open);
    assert_eq!(rec.transitions(), vec![(State::Closed, State::Open)]);
    let snap = cb.snapshot(t0);
    assert_eq!(snap.times_opened, 1);
    assert_eq!(snap.opened_at, Some(t0));
}

#[test]
fn open_rejects_with_remaining_time() {
    let (cb, rec, t0) = breaker(settings(1, 1, secs(30), 1));
    let opened = t0 + secs(10);
    trip(&cb, opened);
    let err = cb.try_acquire(opened + secs(5)).unwrap_err();
    assert_eq!(
        err,
        Rejected {
            retry_after: secs(25),
            state: State::Open
        }
    );
    let err = cb.try_acquire(opened + secs(30) - ms(1)).unwrap_err();
    assert_eq!(err.retry_after, ms(1));
    assert_eq!(rec.rejected.load(Ordering::Relaxed), 2);
    let snap = cb.snapshot(opened + secs(12));
    assert_eq!(snap.state, State::Open);
    assert_eq!(snap.open_remaining, Some(secs(18)));
    assert_eq!(snap.rejected_total, 2);
    assert!(err.to_string().contains("open"));
}

#[test]
fn open_to_half_open_after_duration() {
    let (cb, rec, t0) = breaker(settings(1, 1, secs(30), 1));
    trip(&cb, t0);
    assert!(cb
        .try_acquire(t0 + secs(30) - Duration::from_nanos(1))
        .is_err());
    // Pure read reports half-open once the time is up, without transitioning.
    assert_eq!(cb.state(t0 + secs(30)), State::HalfOpen);
    assert_eq!(rec.transitions(), vec![(State::Closed, State::Open)]);
    let probe = cb.try_acquire(t0 + secs(30)).unwrap();
    assert!(probe.is_probe());
    assert_eq!(cb.state(t0 + secs(30)), State::HalfOpen);
    assert_eq!(
        rec.transitions(),
        vec![(State::Closed, State::Open), (State::Open, State::HalfOpen)]
    );
    drop(probe);
}

#[test]
fn half_open_probe_limit_under_concurrency() {
    const THREADS: usize = 16;
    const PROBES: u32 = 3;
    let (cb, rec, t0) = breaker(settings(1, 5, secs(2), PROBES));
    // Several rounds to exercise both the Open→HalfOpen race and the in-half-open race.
    let mut now = t0;
    for round in 0..20 {
        trip(&cb, now);
        now += secs(2);
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let cb = cb.clone();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    cb.try_acquire(now)
                })
            })
            .collect();
        let results: Vec<Result<Permit, Rejected>> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, PROBES as usize, "round {round}");
        for r in &results {
            if let Err(e) = r {
                assert_eq!(e.state, State::HalfOpen);
                assert_eq!(e.retry_after, secs(1));
            }
        }
        assert_eq!(cb.snapshot(now).half_open_in_flight, PROBES);
        // Fail one probe: re-opens; the others' results are then stale.
        let mut permits: Vec<Permit> = results.into_iter().filter_map(Result::ok).collect();
        permits
            .pop()
            .unwrap()
            .record(CallOutcome::failure(ms(1)), now);
        assert_eq!(cb.state(now), State::Open);
        for p in permits {
            p.record(CallOutcome::success(ms(1)), now);
        }
        assert_eq!(cb.state(now), State::Open);
        // Close it for the next round.
        now += secs(2);
        for _ in 0..5 {
            call(&cb, now, false).unwrap();
        }
        assert_eq!(cb.state(now), State::Closed);
    }
    assert_eq!(rec.transitions().len(), 20 * 5);
}

#[test]
fn half_open_to_closed_after_success_threshold() {
    let mut s = settings(2, 2, secs(10), 1);
    s.rate = Some(RateTrip {
        window: RateWindow::Calls(10),
        min_calls: 100,
        failure_rate_percent: Some(50.0),
        slow_call_rate_percent: None,
        slow_call_threshold: secs(1),
    });
    let (cb, rec, t0) = breaker(s);
    call(&cb, t0, false).unwrap();
    trip(&cb, t0);
    let t1 = t0 + secs(10);
    call(&cb, t1, false).unwrap();
    assert_eq!(cb.state(t1), State::HalfOpen);
    assert_eq!(cb.snapshot(t1).consecutive_successes, 1);
    call(&cb, t1, false).unwrap();
    assert_eq!(cb.state(t1), State::Closed);
    let snap = cb.snapshot(t1);
    assert_eq!(snap.consecutive_failures, 0);
    assert_eq!(snap.consecutive_successes, 0);
    assert_eq!(snap.window, Some(WindowCounts::default()));
    assert_eq!(
        rec.transitions(),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
    // Fully closed again: the consecutive trigger works from zero.
    call(&cb, t1, true).unwrap();
    assert_eq!(cb.state(t1), State::Closed);
    call(&cb, t1, true).unwrap();
    assert_eq!(cb.state(t1), State::Open);
}

#[test]
fn half_open_failure_reopens_with_fresh_duration() {
    let (cb, rec, t0) = breaker(settings(1, 3, secs(10), 2));
    trip(&cb, t0);
    let t1 = t0 + secs(15);
    call(&cb, t1, false).unwrap();
    call(&cb, t1 + secs(1), true).unwrap();
    assert_eq!(cb.state(t1 + secs(1)), State::Open);
    let err = cb.try_acquire(t1 + secs(1)).unwrap_err();
    assert_eq!(err.retry_after, secs(10));
    let snap = cb.snapshot(t1 + secs(1));
    assert_eq!(snap.opened_at, Some(t1 + secs(1)));
    assert_eq!(snap.times_opened, 2);
    assert_eq!(
        rec.transitions(),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Open)
        ]
    );
}

#[test]
fn dropped_permit_releases_probe_slot_without_counting() {
    let (cb, _rec, t0) = breaker(settings(1, 2, secs(10), 1));
    trip(&cb, t0);
    let t1 = t0 + secs(10);
    let probe = cb.try_acquire(t1).unwrap();
    let err = cb.try_acquire(t1).unwrap_err();
    assert_eq!(err.state, State::HalfOpen);
    assert_eq!(err.retry_after, secs(1));
    drop(probe); // cancelled
    let snap = cb.snapshot(t1);
    assert_eq!(snap.half_open_in_flight, 0);
    assert_eq!(snap.consecutive_successes, 0);
    assert_eq!(snap.state, State::HalfOpen);
    // The slot is free again; one success is not enough (threshold 2), so the drop didn't count.
    call(&cb, t1, false).unwrap();
    assert_eq!(cb.state(t1), State::HalfOpen);
    call(&cb, t1, false).unwrap();
    assert_eq!(cb.state(t1), State::Closed);
}

#[test]
fn half_open_retry_after_capped_by_open_duration() {
    let (cb, _rec, t0) = breaker(settings(1, 1, ms(200), 1));
    trip(&cb, t0);
    let _probe = cb.try_acquire(t0 + ms(200)).unwrap();
    assert_eq!(
        cb.try_acquire(t0 + ms(200)).unwrap_err().retry_after,
        ms(200)
    );
}

#[test]
fn stale_closed_results_are_ignored() {
    let (cb, _rec, t0) = breaker(settings(2, 1, secs(10), 1));
    let late = cb.try_acquire(t0).unwrap();
    trip(&cb, t0);
    // A CLOSED-era success finishing while open must not close it.
    late.record(CallOutcome::success(ms(1)), t0);
    assert_eq!(cb.state(t0), State::Open);
    // And a CLOSED-era failure must not touch the next closed epoch.
    let t1 = t0 + secs(10);
    let late = cb.try_acquire(t0).unwrap_err();
    assert_eq!(late.state, State::Open);
    let early = {
        call(&cb, t1, false).unwrap(); // probe closes it
        cb.try_acquire(t1).unwrap()
    };
    cb.force(ForcedState::Open);
    cb.force(ForcedState::Auto);
    early.record(CallOutcome::failure(ms(1)), t1);
    assert_eq!(cb.snapshot(t1).consecutive_failures, 0);
}

fn rate_settings(
    window: RateWindow,
    min_calls: u32,
    fail: Option<f64>,
    slow: Option<f64>,
) -> BreakerSettings {
    BreakerSettings {
        failure_threshold: 0, // only the rate trips
        success_threshold: 1,
        open_duration: secs(30),
        half_open_max_calls: 1,
        rate: Some(RateTrip {
            window,
            min_calls,
            failure_rate_percent: fail,
            slow_call_rate_percent: slow,
            slow_call_threshold: ms(100),
        }),
    }
}

#[test]
fn rate_trip_respects_min_calls() {
    let (cb, _rec, t0) = breaker(rate_settings(RateWindow::Calls(10), 5, Some(50.0), None));
    for _ in 0..4 {
        call(&cb, t0, true).unwrap();
    }
    // 100 % failures but only 4 calls < min_calls.
    assert_eq!(cb.state(t0), State::Closed);
    assert_eq!(
        cb.snapshot(t0).window,
        Some(WindowCounts {
            calls: 4,
            failed: 4,
            slow: 0
        })
    );
    call(&cb, t0, false).unwrap(); // 5 calls, 80 %
    assert_eq!(cb.state(t0), State::Open);
}

#[test]
fn rate_trip_by_count_window_exactly_at_percent() {
    let (cb, _rec, t0) = breaker(rate_settings(RateWindow::Calls(10), 10, Some(50.0), None));
    for _ in 0..5 {
        call(&cb, t0, false).unwrap();
    }
    for _ in 0..4 {
        call(&cb, t0, true).unwrap();
    }
    assert_eq!(cb.state(t0), State::Closed); // 9 calls
    call(&cb, t0, true).unwrap(); // 10 calls, 5 failed = 50 %
    assert_eq!(cb.state(t0), State::Open);
}

#[test]
fn rate_count_window_slides() {
    let (cb, _rec, t0) = breaker(rate_settings(RateWindow::Calls(4), 4, Some(75.0), None));
    // F F S S -> 50 %; then S S evict the failures; F F F -> 3/4 = 75 % trips.
    for f in [true, true, false, false, false, false, true, true] {
        call(&cb, t0, f).unwrap();
        assert_eq!(cb.state(t0), State::Closed);
    }
    call(&cb, t0, true).unwrap();
    assert_eq!(cb.state(t0), State::Open);
}

#[test]
fn slow_call_rate_trip() {
    let (cb, _rec, t0) = breaker(rate_settings(RateWindow::Calls(4), 4, None, Some(50.0)));
    for d in [100, 200, 50] {
        // 100 ms is not slow (strictly greater than the threshold is).
        let p = cb.try_acquire(t0).unwrap();
        p.record(CallOutcome::success(ms(d)), t0);
    }
    assert_eq!(cb.state(t0), State::Closed);
    assert_eq!(cb.snapshot(t0).window.map(|w| w.slow), Some(1));
    let p = cb.try_acquire(t0).unwrap();
    p.record(CallOutcome::success(ms(150)), t0); // 2/4 slow
    assert_eq!(cb.state(t0), State::Open);
}

#[test]
fn rate_trip_by_time_window() {
    let s = rate_settings(RateWindow::Time(secs(10)), 3, Some(50.0), None);
    // Failures spread inside the window trip it.
    let (cb, _rec, t0) = breaker(s.clone());
    call(&cb, t0, true).unwrap();
    call(&cb, t0 + secs(4), false).unwrap();
    assert_eq!(cb.state(t0 + secs(4)), State::Closed); // 2 calls < min_calls
    call(&cb, t0 + secs(9), true).unwrap(); // 3 calls, 66 %
    assert_eq!(cb.state(t0 + secs(9)), State::Open);

    // Old failures expire out of the window.
    let (cb, _rec, t0) = breaker(s);
    call(&cb, t0, true).unwrap();
    call(&cb, t0 + secs(1), true).unwrap();
    call(&cb, t0 + secs(11), false).unwrap(); // the failures at 0 s and 1 s are gone
    assert_eq!(cb.state(t0 + secs(11)), State::Closed);
    assert_eq!(cb.snapshot(t0 + secs(11)).window.map(|w| w.calls), Some(1));
    call(&cb, t0 + secs(12), true).unwrap();
    assert_eq!(cb.state(t0 + secs(12)), State::Closed); // 2 calls
    call(&cb, t0 + secs(13), true).unwrap(); // 3 calls, 66 %
    assert_eq!(cb.state(t0 + secs(13)), State::Open);
}

#[test]
fn slow_rate_by_time_window() {
    let (cb, _rec, t0) = breaker(rate_settings(
        RateWindow::Time(secs(5)),
        2,
        None,
        Some(100.0),
    ));
    let p = cb.try_acquire(t0).unwrap();
    p.record(CallOutcome::success(secs(1)), t0);
    assert_eq!(cb.state(t0), State::Closed);
    let p = cb.try_acquire(t0 + secs(2)).unwrap();
    p.record(CallOutcome::success(secs(1)), t0 + secs(2));
    assert_eq!(cb.state(t0 + secs(2)), State::Open);
}

#[test]
fn four_xx_is_not_a_failure() {
    let policy = FailurePolicy::default();
    let (cb, _rec, t0) = breaker(settings(1, 1, secs(10), 1));
    for s in [400, 401, 403, 404, 429, 499, 200, 501] {
        let p = cb.try_acquire(t0).unwrap();
        p.record(policy.outcome(UpstreamOutcome::Status(s), ms(1)), t0);
    }
    assert_eq!(cb.state(t0), State::Closed);
    let p = cb.try_acquire(t0).unwrap();
    p.record(policy.outcome(UpstreamOutcome::Status(503), ms(1)), t0);
    assert_eq!(cb.state(t0), State::Open);
}

#[test]
fn forced_states() {
    let (cb, rec, t0) = breaker(settings(1, 1, secs(30), 1));
    cb.force(ForcedState::Auto); // not pinned: no-op
    assert!(rec.transitions().is_empty());

    cb.force(ForcedState::Open);
    assert_eq!(cb.state(t0 + secs(1000)), State::Open);
    let err = cb.try_acquire(t0 + secs(1000)).unwrap_err();
    assert_eq!(err.retry_after, secs(30));
    assert_eq!(cb.snapshot(t0).forced, ForcedState::Open);

    cb.force(ForcedState::Closed);
    for _ in 0..10 {
        call(&cb, t0, true).unwrap(); // never trips
    }
    assert_eq!(cb.state(t0), State::Closed);
    assert_eq!(cb.snapshot(t0).forced, ForcedState::Closed);

    cb.force(ForcedState::Auto);
    assert_eq!(cb.snapshot(t0).forced, ForcedState::Auto);
    assert_eq!(cb.state(t0), State::Closed);
    call(&cb, t0, true).unwrap(); // normal again
    assert_eq!(cb.state(t0), State::Open);

    // Forcing closed from OPEN, and auto from forced open.
    cb.force(ForcedState::Closed);
    assert!(cb.try_acquire(t0).is_ok());
    cb.force(ForcedState::Open);
    cb.force(ForcedState::Auto);
    assert!(cb.try_acquire(t0).is_ok());
    assert_eq!(
        rec.transitions(),
        vec![
            (State::Closed, State::Open), // forced open
            (State::Open, State::Closed), // forced closed
            (State::Closed, State::Open), // tripped
            (State::Open, State::Closed), // forced closed
            (State::Closed, State::Open), // forced open
            (State::Open, State::Closed), // auto
        ]
    );
}

#[test]
fn zero_settings_are_normalised() {
    let (cb, _rec, t0) = breaker(settings(0, 0, Duration::ZERO, 0));
    for _ in 0..100 {
        call(&cb, t0, true).unwrap(); // threshold 0: never trips
    }
    assert_eq!(cb.state(t0), State::Closed);
    assert_eq!(cb.settings().half_open_max_calls, 1);
    assert_eq!(cb.settings().success_threshold, 1);
    // Times before the base are clamped, not a panic.
    let early = t0.checked_sub(secs(1)).unwrap_or(t0);
    call(&cb, early, false).unwrap();
    let odd = RateTrip {
        window: RateWindow::Calls(0),
        min_calls: 0,
        failure_rate_percent: Some(f64::NAN),
        slow_call_rate_percent: Some(-5.0),
        slow_call_threshold: Duration::ZERO,
    };
    let mut s = settings(0, 1, secs(1), 1);
    s.rate = Some(odd);
    let (cb, _rec, t0) = breaker(s);
    for _ in 0..10 {
        call(&cb, t0, true).unwrap();
    }
    assert_eq!(cb.state(t0), State::Closed);
}

#[test]
fn types_are_send_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<CircuitBreaker>();
    check::<Permit>();
    check::<OutlierDetector>();
}

// ---------------------------------------------------------------- outlier detection

#[derive(Default)]
struct OutlierRec {
    events: StdMutex<Vec<String>>,
}

impl OutlierRec {
    fn push(&self, e: String) {
        if let Ok(mut v) = self.events.lock() {
            v.push(e);
        }
    }
    fn take(&self) -> Vec<String> {
        self.events
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

impl OutlierObserver for OutlierRec {
    fn on_ejected(&self, idx: usize, duration: Duration) {
        self.push(format!("eject {idx} {}s", duration.as_secs()));
    }
    fn on_returned(&self, idx: usize) {
        self.push(format!("return {idx}"));
    }
    fn on_ejection_skipped(&self, idx: usize) {
        self.push(format!("skip {idx}"));
    }
}

fn detector(n: usize, s: OutlierSettings) -> (OutlierDetector, Arc<OutlierRec>, Instant) {
    let base = Instant::now();
    let rec = Arc::new(OutlierRec::default());
    (
        OutlierDetector::with_observer(n, s, rec.clone(), base),
        rec,
        base,
    )
}

fn osettings(failures: u32, pct: u32) -> OutlierSettings {
    OutlierSettings {
        consecutive_failures: failures,
        base_ejection: secs(10),
        max_ejection: secs(35),
        max_ejected_percent: pct,
    }
}

fn fail_n(d: &OutlierDetector, idx: usize, n: u32, now: Instant) {
    for _ in 0..n {
        d.record(idx, true, now);
    }
}

#[test]
fn outlier_ejects_after_n_failures_and_returns() {
    let (d, rec, t0) = detector(4, osettings(3, 100));
    fail_n(&d, 1, 2, t0);
    assert!(!d.is_ejected(1, t0));
    d.record(1, true, t0);
    assert!(d.is_ejected(1, t0));
    assert!(!d.is_ejected(0, t0));
    assert_eq!(rec.take(), vec!["eject 1 10s"]);
    // Failures while ejected are ignored.
    fail_n(&d, 1, 10, t0 + secs(1));
    let h = d.snapshot(t0 + secs(4));
    assert_eq!(h[1].ejected_remaining, Some(secs(6)));
    assert_eq!(h[1].consecutive_failures, 0);
    assert_eq!(h[1].times_ejected, 1);
    // Returns by itself exactly at base_ejection.
    assert!(d.is_ejected(1, t0 + secs(10) - Duration::from_nanos(1)));
    assert!(!d.is_ejected(1, t0 + secs(10)));
    assert!(!d.is_ejected(1, t0 + secs(11)));
    assert_eq!(rec.take(), vec!["return 1"]); // reported once
    assert_eq!(d.ejected_count(t0 + secs(11)), 0);
}

#[test]
fn outlier_success_resets_streak() {
    let (d, rec, t0) = detector(2, osettings(3, 100));
    for _ in 0..5 {
        fail_n(&d, 0, 2, t0);
        d.record(0, false, t0);
    }
    assert!(!d.is_ejected(0, t0));
    assert!(rec.take().is_empty());
    assert_eq!(d.snapshot(t0)[0].consecutive_failures, 0);
}

#[test]
fn outlier_ejection_time_grows_caps_and_decays() {
    let (d, rec, t0) = detector(1, osettings(1, 100));
    let mut now = t0;
    let mut lengths = Vec::new();
    for _ in 0..5 {
        d.record(0, true, now);
        let h = d.snapshot(now);
        let len = h[0].ejected_remaining.unwrap_or_default();
        lengths.push(len.as_secs());
        now += len; // fail again right after returning
        assert!(!d.is_ejected(0, now));
    }
    assert_eq!(lengths, vec![10, 20, 30, 35, 35]); // base × k, capped at 35 s
    rec.take();
    // Multiplier is 5 now; 3 healthy base periods bring it to 2, so the next one is 3 × 10 s.
    now += secs(30);
    d.record(0, true, now);
    assert_eq!(d.snapshot(now)[0].ejected_remaining, Some(secs(30)));
    assert_eq!(d.snapshot(now)[0].times_ejected, 3);
    // A long healthy period resets it to the base.
    now += secs(30) + secs(1000);
    d.record(0, true, now);
    assert_eq!(d.snapshot(now)[0].ejected_remaining, Some(secs(10)));
    assert_eq!(rec.take(), vec!["eject 0 30s", "return 0", "eject 0 10s"]);
}

#[test]
fn outlier_max_ejected_percent() {
    let (d, rec, t0) = detector(10, osettings(2, 20)); // at most 2 of 10
    assert_eq!(d.max_ejected(), 2);
    fail_n(&d, 0, 2, t0);
    fail_n(&d, 1, 2, t0 + secs(5));
    fail_n(&d, 2, 2, t0 + secs(5));
    assert!(d.is_ejected(0, t0 + secs(5)));
    assert!(d.is_ejected(1, t0 + secs(5)));
    assert!(!d.is_ejected(2, t0 + secs(5)));
    assert_eq!(d.ejected_count(t0 + secs(5)), 2);
    assert_eq!(rec.take(), vec!["eject 0 10s", "eject 1 10s", "skip 2"]);
    // Streak kept: once endpoint 0 returns, the next failure ejects endpoint 2.
    assert_eq!(d.snapshot(t0 + secs(5))[2].consecutive_failures, 2);
    d.record(2, true, t0 + secs(10));
    assert!(d.is_ejected(2, t0 + secs(10)));
    assert!(!d.is_ejected(0, t0 + secs(10)));
    assert_eq!(rec.take(), vec!["return 0", "eject 2 10s"]);
}

#[test]
fn outlier_percent_rounding() {
    let t0 = Instant::now();
    // Small pool: 10 % of 3 rounds to 0, but at least one may be ejected.
    let d = OutlierDetector::new(3, osettings(1, 10), t0);
    assert_eq!(d.max_ejected(), 1);
    d.record(0, true, t0);
    d.record(1, true, t0);
    assert_eq!(d.ejected_count(t0), 1);
    // 0 % disables ejection.
    let d = OutlierDetector::new(3, osettings(1, 0), t0);
    d.record(0, true, t0);
    assert_eq!(d.ejected_count(t0), 0);
    // ≥ 100 % allows all.
    let d = OutlierDetector::new(3, osettings(1, 250), t0);
    for i in 0..3 {
        d.record(i, true, t0);
    }
    assert_eq!(d.ejected_count(t0), 3);
}

#[test]
fn outlier_ignores_bad_input() {
    let t0 = Instant::now();
    let d = OutlierDetector::new(2, osettings(1, 100), t0);
    d.record(7, true, t0);
    assert!(!d.is_ejected(7, t0));
    let d = OutlierDetector::new(0, OutlierSettings::default(), t0);
    assert!(d.is_empty());
    d.record(0, true, t0);
    let zero = OutlierSettings {
        consecutive_failures: 1,
        base_ejection: Duration::ZERO,
        max_ejection: secs(10),
        max_ejected_percent: 100,
    };
    let d = OutlierDetector::new(1, zero, t0);
    d.record(0, true, t0);
    assert!(!d.is_ejected(0, t0));
    let off = OutlierSettings {
        consecutive_failures: 0,
        ..OutlierSettings::default()
    };
    let d = OutlierDetector::new(1, off, t0);
    fail_n(&d, 0, 100, t0);
    assert!(!d.is_ejected(0, t0));
}

#[test]
fn outlier_concurrent_failures_respect_cap() {
    let t0 = Instant::now();
    let d = Arc::new(OutlierDetector::new(20, osettings(3, 25), t0)); // at most 5
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let d = d.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                for i in 0..20 {
                    for _ in 0..3 {
                        d.record((i + t) % 20, true, t0);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(d.ejected_count(t0), 5);
}

//! Sliding rate windows used by the circuit breaker's rate-based trip.
//!
//! Two flavours, both O(1) per recorded call (the time window is amortised O(1): advancing it
//! clears at most one bucket per elapsed bucket width, and never more than its bucket count):
//!
//! * [`CallsWindow`]: the outcomes of the last N calls, kept as a ring of one-byte flags with
//!   running totals, so recording evicts the oldest entry and adjusts the totals.
//! * [`TimeWindow`]: the outcomes of the last T, kept as a ring of fixed-width buckets (1 s wide
//!   for windows of at least one second, up to [`MAX_BUCKETS`] buckets; wider buckets beyond
//!   that, ten buckets for sub-second windows) with running totals. The window covers the current
//!   (partial) bucket plus the previous `buckets - 1` full ones, so its effective span lies
//!   between `T - width` and `T`.
//!
//! Time is a `u64` of nanoseconds since an arbitrary base chosen by the owner. A timestamp older
//! than the newest bucket (callers racing with slightly older `Instant`s) is counted in the
//! newest bucket rather than going back in time.
//!
//! Windows are plain data: the breaker keeps its window behind its bookkeeping mutex.

use std::time::Duration;

/// Largest call-count window; larger configured values are clamped (memory: 1 byte per call).
pub const MAX_CALLS_WINDOW: u32 = 1 << 20;
/// Largest number of buckets in a time window; longer windows use wider buckets.
pub const MAX_BUCKETS: u64 = 600;

const FAILED: u8 = 1;
const SLOW: u8 = 2;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Totals over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Calls recorded in the window.
    pub calls: u64,
    /// Of those, calls that failed.
    pub failed: u64,
    /// Of those, calls slower than the slow-call threshold (whether or not they failed).
    pub slow: u64,
}

impl WindowCounts {
    /// Failed calls as a percentage of all calls (0 when empty).
    pub fn failure_rate_percent(&self) -> f64 {
        percent(self.failed, self.calls)
    }

    /// Slow calls as a percentage of all calls (0 when empty).
    pub fn slow_rate_percent(&self) -> f64 {
        percent(self.slow, self.calls)
    }

    fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failed += u64::from(failed);
        self.slow += u64::from(slow);
    }

    fn sub(&mut self, other: &WindowCounts) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.failed = self.failed.saturating_sub(other.failed);
        self.slow = self.slow.saturating_sub(other.slow);
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The last N calls.
#[derive(Debug)]
pub struct CallsWindow {
    slots: Box<[u8]>,
    next: usize,
    len: usize,
    counts: WindowCounts,
}

impl CallsWindow {
    /// A window over the last `size` calls (clamped to `1..=MAX_CALLS_WINDOW`).
    pub fn new(size: u32) -> Self {
        let size = size.clamp(1, MAX_CALLS_WINDOW) as usize;
        Self {
            slots: vec![0u8; size].into_boxed_slice(),
            next: 0,
            len: 0,
            counts: WindowCounts::default(),
        }
    }

    /// Records one call, evicting the oldest when full.
    pub fn record(&mut self, failed: bool, slow: bool) {
        let cap = self.slots.len();
        let Some(slot) = self.slots.get_mut(self.next) else {
            return;
        };
        if self.len == cap {
            let old = *slot;
            self.counts.sub(&WindowCounts {
                calls: 1,
                failed: u64::from(old & FAILED != 0),
                slow: u64::from(old & SLOW != 0),
            });
        } else {
            self.len += 1;
        }
        *slot = (if failed { FAILED } else { 0 }) | (if slow { SLOW } else { 0 });
        self.counts.add(failed, slow);
        self.next = (self.next + 1) % cap;
    }

    /// Current totals.
    pub fn counts(&self) -> WindowCounts {
        self.counts
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.slots.fill(0);
        self.next = 0;
        self.len = 0;
        self.counts = WindowCounts::default();
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    counts: WindowCounts,
}

/// The last T of wall time, in buckets.
#[derive(Debug)]
pub struct TimeWindow {
    buckets: Box<[Bucket]>,
    width_nanos: u64,
    /// Absolute index (`now_nanos / width`) of the newest bucket.
    head: u64,
    counts: WindowCounts,
}

impl TimeWindow {
    /// A window spanning `span` (a zero span is treated as 1 ns).
    pub fn new(span: Duration) -> Self {
        let span_nanos = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX).max(1);
        let buckets = if span_nanos < NANOS_PER_SEC {
            10
        } else {
            span_nanos.div_ceil(NANOS_PER_SEC).clamp(1, MAX_BUCKETS)
        };
        let width_nanos = span_nanos.div_ceil(buckets).max(1);
        Self {
            buckets: vec![Bucket::default(); buckets as usize].into_boxed_slice(),
            width_nanos,
            head: 0,
            counts: WindowCounts::default(),
        }
    }

    /// Width of one bucket.
    pub fn bucket_width(&self) -> Duration {
        Duration::from_nanos(self.width_nanos)
    }

    /// Number of buckets.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    fn slot(&self, idx: u64) -> usize {
        (idx % self.buckets.len() as u64) as usize
    }

    /// Moves the head to `now`, clearing buckets that fell out of the window.
    fn advance(&mut self, now_nanos: u64) {
        let idx = now_nanos / self.width_nanos;
        if idx <= self.head {
            return;
        }
        let steps = idx - self.head;
        if steps >= self.buckets.len() as u64 {
            self.buckets.fill(Bucket::default());
            self.counts = WindowCounts::default();
        } else {
            for i in (self.head + 1)..=idx {
                let s = self.slot(i);
                if let Some(b) = self.buckets.get_mut(s) {
                    let old = std::mem::take(b);
                    self.counts.sub(&old.counts);
                }
            }
        }
        self.head = idx;
    }

    /// Records one call at `now_nanos`.
    pub fn record(&mut self, now_nanos: u64, failed: bool, slow: bool) {
        self.advance(now_nanos);
        let s = self.slot(self.head);
        if let Some(b) = self.buckets.get_mut(s) {
            b.counts.add(failed, slow);
            self.counts.add(failed, slow);
        }
    }

    /// Totals of the window as of `now_nanos` (expires old buckets first).
    pub fn counts(&mut self, now_nanos: u64) -> WindowCounts {
        self.advance(now_nanos);
        self.counts
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.buckets.fill(Bucket::default());
        self.counts = WindowCounts::default();
    }
}

/// Either window, as configured.
#[derive(Debug)]
pub enum RateWindowState {
    /// Count-based.
    Calls(CallsWindow),
    /// Time-based.
    Time(TimeWindow),
}

impl RateWindowState {
    /// Records one call at `now_nanos`.
    pub fn record(&mut self, now_nanos: u64, failed: bool, slow: bool) {
        match self {
            Self::Calls(w) => w.record(failed, slow),
            Self::Time(w) => w.record(now_nanos, failed, slow),
        }
    }

    /// Totals as of `now_nanos`.
    pub fn counts(&mut self, now_nanos: u64) -> WindowCounts {
        match self {
            Self::Calls(w) => w.counts(),
            Self::Time(w) => w.counts(now_nanos),
        }
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        match self {
            Self::Calls(w) => w.reset(),
            Self::Time(w) => w.reset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = NANOS_PER_SEC;

    #[test]
    fn calls_window_evicts_oldest() {
        let mut w = CallsWindow::new(3);
        w.record(true, false);
        w.record(true, true);
        w.record(false, false);
        assert_eq!(
            w.counts(),
            WindowCounts {
                calls: 3,
                failed: 2,
                slow: 1
            }
        );
        w.record(false, false); // evicts the first failure
        assert_eq!(
            w.counts(),
            WindowCounts {
                calls: 3,
                failed: 1,
                slow: 1
            }
        );
        w.record(false, false); // evicts the slow failure
        assert_eq!(
            w.counts(),
            WindowCounts {
                calls: 3,
                failed: 0,
                slow: 0
            }
        );
        w.reset();
        assert_eq!(w.counts(), WindowCounts::default());
    }

    #[test]
    fn zero_sized_windows_do_not_panic() {
        let mut c = CallsWindow::new(0);
        c.record(true, true);
        assert_eq!(c.counts().calls, 1);
        let mut t = TimeWindow::new(Duration::ZERO);
        t.record(5, true, false);
        let _ = t.counts(u64::MAX);
    }

    #[test]
    fn time_window_geometry() {
        let w = TimeWindow::new(Duration::from_secs(10));
        assert_eq!(w.bucket_count(), 10);
        assert_eq!(w.bucket_width(), Duration::from_secs(1));
        let w = TimeWindow::new(Duration::from_secs(3600));
        assert_eq!(w.bucket_count(), 600);
        assert_eq!(w.bucket_width(), Duration::from_secs(6));
        let w = TimeWindow::new(Duration::from_millis(500));
        assert_eq!(w.bucket_count(), 10);
        assert_eq!(w.bucket_width(), Duration::from_millis(50));
    }

    #[test]
    fn time_window_expires_buckets() {
        let mut w = TimeWindow::new(Duration::from_secs(3));
        w.record(0, true, false); // bucket 0
        w.record(S + 1, false, false); // bucket 1
        w.record(2 * S, true, true); // bucket 2
        assert_eq!(w.counts(2 * S + 5).calls, 3);
        // At t=3s bucket 0 is dropped.
        assert_eq!(
            w.counts(3 * S),
            WindowCounts {
                calls: 2,
                failed: 1,
                slow: 1
            }
        );
        // A stale timestamp lands in the newest bucket.
        w.record(0, false, false);
        assert_eq!(w.counts(3 * S).calls, 3);
        // Long gap clears everything.
        assert_eq!(w.counts(100 * S), WindowCounts::default());
    }

    proptest! {
        /// The ring agrees with a naive "keep every call and filter" model.
        #[test]
        fn time_window_matches_naive(steps in proptest::collection::vec((0u64..1_500_000_000, any::<bool>(), any::<bool>()), 1..200)) {
            let span = 5 * S;
            let mut w = TimeWindow::new(Duration::from_nanos(span));
            let width = w.bucket_width().as_nanos() as u64;
            let n = w.bucket_count() as u64;
            let mut now = 0u64;
            let mut all: Vec<(u64, bool, bool)> = Vec::new();
            for (dt, failed, slow) in steps {
                now += dt;
                w.record(now, failed, slow);
                all.push((now / width, failed, slow));
                let head = now / width;
                let mut expect = WindowCounts::default();
                for &(b, f, s) in &all {
                    if b + n > head {
                        expect.add(f, s);
                    }
                }
                prop_assert_eq!(w.counts(now), expect);
            }
        }

        #[test]
        fn calls_window_matches_naive(size in 1u32..20, steps in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..100)) {
            let mut w = CallsWindow::new(size);
            let mut all = Vec::new();
            for (f, s) in steps {
                w.record(f, s);
                all.push((f, s));
                let tail = &all[all.len().saturating_sub(size as usize)..];
                let mut expect = WindowCounts::default();
                for &(f, s) in tail {
                    expect.add(f, s);
                }
                prop_assert_eq!(w.counts(), expect);
            }
        }
    }
}

//! Passive outlier ejection (passive health checking) for a fixed set of endpoints `0..n`.
//!
//! # Semantics
//! * `consecutive_failures` failures in a row (0 disables ejection) eject the endpoint for
//!   `base_ejection × k`, capped at `max_ejection`, where `k` is its ejection multiplier after
//!   this ejection (1 the first time, then 2, 3, ...). A zero resulting duration disables
//!   ejection.
//! * **Multiplier decay**: for every full `base_ejection` the endpoint has spent back in service
//!   since its last ejection ended, the multiplier drops by one (computed lazily at the next
//!   ejection). So an endpoint that flaps keeps getting longer ejections; one that behaved for a
//!   while starts again near `base_ejection`.
//! * **Max ejected percent**: at most `max(1, floor(n × max_ejected_percent / 100))` endpoints
//!   are ejected at once when `max_ejected_percent > 0` (like Envoy, at least one endpoint can be
//!   ejected even when the percent rounds down to zero, so small pools still get protection);
//!   `max_ejected_percent == 0` disables ejection; ≥ 100 allows all. When the cap prevents an
//!   ejection the endpoint stays in service, its failure streak is kept (the next failure tries
//!   again) and [`OutlierObserver::on_ejection_skipped`] fires. Note that with one endpoint and a
//!   percent > 0 that endpoint can be ejected: the load balancer should fall back to all
//!   endpoints when every one is ejected ("panic mode").
//! * A success resets the failure streak. Outcomes recorded for an endpoint while it is ejected
//!   (requests that were in flight) are ignored.
//! * An endpoint returns by itself once its ejection time has passed: [`is_ejected`] is a
//!   lock-free O(1) read of an `AtomicU64` "ejected until" (nanoseconds since the detector's
//!   base instant; 0 = in service). The first call that observes the expiry (`is_ejected`,
//!   `record`, `snapshot`) clears it with a CAS and fires [`OutlierObserver::on_returned`] once.
//! * Out-of-range indices are ignored (`is_ejected` answers `false`). The detector is built for
//!   a fixed `n`; rebuild it when the endpoint set changes.
//!
//! [`is_ejected`]: OutlierDetector::is_ejected

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Outlier-detection configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierSettings {
    /// Failures in a row that eject an endpoint (0 disables ejection).
    pub consecutive_failures: u32,
    /// First ejection length; the k-th (undecayed) ejection lasts `k ×` this.
    pub base_ejection: Duration,
    /// Upper bound of one ejection.
    pub max_ejection: Duration,
    /// Most endpoints ejected at once, in percent (see module docs for rounding).
    pub max_ejected_percent: u32,
}

impl Default for OutlierSettings {
    /// Envoy's defaults: 5 failures, 30 s base, 300 s max, 10 %.
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 10,
        }
    }
}

/// Receives ejection events. Called outside the detector's lock, on the caller's thread.
pub trait OutlierObserver: Send + Sync {
    /// Endpoint `idx` was ejected for `duration`.
    fn on_ejected(&self, idx: usize, duration: Duration) {
        let _ = (idx, duration);
    }
    /// Endpoint `idx` came back into service.
    fn on_returned(&self, idx: usize) {
        let _ = idx;
    }
    /// Endpoint `idx` qualified for ejection but the max-ejected-percent cap prevented it.
    fn on_ejection_skipped(&self, idx: usize) {
        let _ = idx;
    }
}

/// Observer that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopOutlierObserver;

impl OutlierObserver for NoopOutlierObserver {}

/// Per-endpoint view for listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointHealth {
    /// Currently ejected.
    pub ejected: bool,
    /// Time left in the current ejection.
    pub ejected_remaining: Option<Duration>,
    /// Current failure streak.
    pub consecutive_failures: u32,
    /// Ejection multiplier (before decay is applied at the next ejection).
    pub times_ejected: u32,
}

struct Slot {
    /// Nanos since base until which the endpoint is ejected; 0 = in service.
    ejected_until: AtomicU64,
    consecutive: AtomicU32,
}

#[derive(Clone, Copy, Default)]
struct Book {
    times_ejected: u32,
    /// Nanos since base at which the last ejection ended (start of the decay clock).
    returned_at: u64,
}

/// Passive outlier detector for endpoints `0..n`. `Send + Sync`; share it behind an `Arc`.
pub struct OutlierDetector {
    base: Instant,
    settings: OutlierSettings,
    slots: Box<[Slot]>,
    book: Mutex<Box<[Book]>>,
    observer: Arc<dyn OutlierObserver>,
}

impl fmt::Debug for OutlierDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutlierDetector")
            .field("endpoints", &self.slots.len())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn dur_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl OutlierDetector {
    /// A detector for `n` endpoints, all in service. `now` is the time base.
    pub fn new(n: usize, settings: OutlierSettings, now: Instant) -> Self {
        Self::with_observer(n, settings, Arc::new(NoopOutlierObserver), now)
    }

    /// Like [`new`](Self::new), reporting events to `observer`.
    pub fn with_observer(
        n: usize,
        settings: OutlierSettings,
        observer: Arc<dyn OutlierObserver>,
        now: Instant,
    ) -> Self {
        let slots = (0..n)
            .map(|_| Slot {
                ejected_until: AtomicU64::new(0),
                consecutive: AtomicU32::new(0),
            })
            .collect();
        Self {
            base: now,
            settings,
            slots,
            book: Mutex::new(vec![Book::default(); n].into_boxed_slice()),
            observer,
        }
    }

    /// A detector for a new endpoint set of the same upstream and settings: endpoint `i` of the new
    /// set takes over the state (ejection, failure streak, ejection count and its decay clock) of
    /// endpoint `from[i]` of this one, `None` starts in service. Same time base, so an ejection
    /// keeps its end. What Envoy does when hosts come and go: a change of *other* endpoints does not
    /// bring an ejected one back early.
    pub fn successor(&self, from: &[Option<usize>]) -> Self {
        let book = self.book.lock();
        let slots = from
            .iter()
            .map(|o| {
                let old = o.and_then(|i| self.slots.get(i));
                Slot {
                    ejected_until: AtomicU64::new(
                        old.map_or(0, |s| s.ejected_until.load(Ordering::Acquire)),
                    ),
                    consecutive: AtomicU32::new(
                        old.map_or(0, |s| s.consecutive.load(Ordering::Relaxed)),
                    ),
                }
            })
            .collect();
        let books = from
            .iter()
            .map(|o| o.and_then(|i| book.get(i).copied()).unwrap_or_default())
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Self {
            base: self.base,
            settings: self.settings.clone(),
            slots,
            book: Mutex::new(books),
            observer: self.observer.clone(),
        }
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no endpoints.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn nanos(&self, now: Instant) -> u64 {
        dur_nanos(now.saturating_duration_since(self.base))
    }

    /// Most endpoints that may be ejected at once.
    pub fn max_ejected(&self) -> usize {
        let n = self.slots.len();
        match self.settings.max_ejected_percent {
            0 => 0,
            p if p >= 100 => n,
            p => ((n as u128 * u128::from(p)) / 100).max(1) as usize,
        }
    }

    /// Whether endpoint `idx` is ejected at `now`. Lock-free, O(1).
    #[inline]
    pub fn is_ejected(&self, idx: usize, now: Instant) -> bool {
        let Some(slot) = self.slots.get(idx) else {
            return false;
        };
        let until = slot.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        if self.nanos(now) < until {
            return true;
        }
        self.try_return(idx, slot, until);
        false
    }

    /// Clears an expired ejection; the winner of the CAS reports the return.
    fn try_return(&self, idx: usize, slot: &Slot, until: u64) {
        if Self::clear(slot, until) {
            self.report_return(idx);
        }
    }

    fn clear(slot: &Slot, until: u64) -> bool {
        slot.ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn report_return(&self, idx: usize) {
        tracing::info!(endpoint = idx, "outlier endpoint returned to service");
        self.observer.on_returned(idx);
    }

    /// Records the outcome of a call to endpoint `idx`.
    #[inline]
    pub fn record(&self, idx: usize, failed: bool, now: Instant) {
        let Some(slot) = self.slots.get(idx) else {
            return;
        };
        if self.is_ejected(idx, now) {
            return;
        }
        if !failed {
            if slot.consecutive.load(Ordering::Relaxed) != 0 {
                slot.consecutive.store(0, Ordering::Relaxed);
            }
            return;
        }
        let threshold = self.settings.consecutive_failures;
        let c = slot
            .consecutive
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if threshold == 0 || c < threshold {
            return;
        }
        self.try_eject(idx, now);
    }

    #[cold]
    fn try_eject(&self, idx: usize, now: Instant) {
        let n = self.nanos(now);
        // Report expired ejections (returns) first, so events come in time order.
        for i in 0..self.slots.len() {
            let _ = self.is_ejected(i, now);
        }
        let mut book = self.book.lock();
        let Some(slot) = self.slots.get(idx) else {
            return;
        };
        let until = slot.ejected_until.load(Ordering::Acquire);
        if until != 0 && n < until {
            return; // someone else ejected it meanwhile
        }
        let ejected_now = self
            .slots
            .iter()
            .filter(|s| {
                let u = s.ejected_until.load(Ordering::Acquire);
                u != 0 && n < u
            })
            .count();
        if ejected_now >= self.max_ejected() {
            drop(book);
            tracing::debug!(
                endpoint = idx,
                "outlier ejection skipped: max ejected percent"
            );
            self.observer.on_ejection_skipped(idx);
            return;
        }
        let Some(b) = book.get_mut(idx) else {
            return;
        };
        let base = dur_nanos(self.settings.base_ejection);
        if base == 0 {
            return;
        }
        let healthy_periods = n.saturating_sub(b.returned_at) / base;
        let decayed = b
            .times_ejected
            .saturating_sub(u32::try_from(healthy_periods).unwrap_or(u32::MAX));
        let times = decayed.saturating_add(1);
        let duration = self
            .settings
            .base_ejection
            .checked_mul(times)
            .unwrap_or(Duration::MAX)
            .min(self.settings.max_ejection);
        if duration.is_zero() {
            return;
        }
        let new_until = n.saturating_add(dur_nanos(duration)).max(1);
        b.times_ejected = times;
        b.returned_at = new_until;
        slot.consecutive.store(0, Ordering::Relaxed);
        // An expired-but-unreported ejection is reported as a return before the new one.
        let returned = until != 0 && Self::clear(slot, until);
        slot.ejected_until.store(new_until, Ordering::Release);
        drop(book);
        if returned {
            self.report_return(idx);
        }
        tracing::info!(endpoint = idx, ejection = ?duration, times, "outlier endpoint ejected");
        self.observer.on_ejected(idx, duration);
    }

    /// Endpoints ejected at `now` (O(n)).
    pub fn ejected_count(&self, now: Instant) -> usize {
        (0..self.slots.len())
            .filter(|&i| self.is_ejected(i, now))
            .count()
    }

    /// Per-endpoint view for listing (O(n)).
    pub fn snapshot(&self, now: Instant) -> Vec<EndpointHealth> {
        let n = self.nanos(now);
        let ejected: Vec<bool> = (0..self.slots.len())
            .map(|i| self.is_ejected(i, now))
            .collect();
        let book = self.book.lock();
        self.slots
            .iter()
            .zip(book.iter())
            .zip(ejected)
            .map(|((slot, b), ejected)| {
                let until = slot.ejected_until.load(Ordering::Acquire);
                EndpointHealth {
                    ejected,
                    ejected_remaining: ejected.then(|| Duration::from_nanos(until - n.min(until))),
                    consecutive_failures: slot.consecutive.load(Ordering::Relaxed),
                    times_ejected: b.times_ejected,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new endpoint set keeps the state of the endpoints it shares with the old one, at their new
    /// positions: an ejection keeps its end, a streak and the ejection count go on; new endpoints
    /// start in service.
    #[test]
    fn successor_carries_kept_endpoints_over() {
        let t0 = Instant::now();
        let d = OutlierDetector::new(
            3,
            OutlierSettings {
                consecutive_failures: 2,
                base_ejection: Duration::from_secs(10),
                max_ejection: Duration::from_secs(300),
                max_ejected_percent: 100,
            },
            t0,
        );
        d.record(0, true, t0);
        d.record(0, true, t0); // ejected for 10 s
        d.record(2, true, t0); // a streak of 1
        let t1 = t0 + Duration::from_secs(4);
        // old endpoint 1 went, old 0 is now at 1, old 2 at 0, a new one at 2
        let s = d.successor(&[Some(2), Some(0), None]);
        assert_eq!(s.len(), 3);
        assert!(s.is_ejected(1, t1), "the ejected endpoint stays ejected");
        assert!(
            !s.is_ejected(1, t0 + Duration::from_secs(10)),
            "until its end"
        );
        assert!(!s.is_ejected(0, t1) && !s.is_ejected(2, t1));
        let snap = s.snapshot(t1);
        assert_eq!(snap[0].consecutive_failures, 1, "the streak goes on");
        assert_eq!(snap[1].times_ejected, 1);
        assert_eq!(
            snap[2],
            EndpointHealth {
                ejected: false,
                ejected_remaining: None,
                consecutive_failures: 0,
                times_ejected: 0,
            }
        );
        s.record(0, true, t1);
        assert!(
            s.is_ejected(0, t1),
            "one more failure completes the carried streak"
        );
    }

    /// Issue 11 item 9: the largest durations (even beyond what the config accepts) never overflow:
    /// every combination of durations and instants saturates.
    #[test]
    fn absurd_durations_saturate() {
        let t0 = Instant::now();
        for (base, max) in [
            (Duration::MAX, Duration::MAX),
            (Duration::from_secs(u64::MAX), Duration::MAX),
            (Duration::from_nanos(1), Duration::MAX),
            (Duration::MAX, Duration::from_secs(1)),
        ] {
            let d = OutlierDetector::new(
                3,
                OutlierSettings {
                    consecutive_failures: 1,
                    base_ejection: base,
                    max_ejection: max,
                    max_ejected_percent: 100,
                },
                t0,
            );
            for round in 0..4u32 {
                let now = t0 + Duration::from_secs(u64::from(round) * 3600);
                d.record(0, true, now);
                d.record(1, true, now);
                let _ = d.is_ejected(0, now);
                let _ = d.snapshot(now);
            }
            let long = base.min(max) >= Duration::from_secs(86_400);
            assert_eq!(d.is_ejected(0, t0 + Duration::from_secs(4 * 3600)), long);
        }
    }
}

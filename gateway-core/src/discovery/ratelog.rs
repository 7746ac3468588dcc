//! Rate-limited logging of repeated failures: the first failure is logged at once, later ones at most
//! once per period, with the number of failures not logged in between.
use std::time::{Duration, Instant};

/// Decides whether a failure is logged now.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// Logs at most once per `every`.
    pub fn new(every: Duration) -> Self {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when this failure should be logged, `n` being how many were skipped since the last log
    /// line; `None` when it should be skipped (and is counted).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Forgets the last log time (after a recovery the next failure is logged at once).
    pub fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_then_once_per_period_with_skipped_count() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(30));
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(31)), Some(2));
        l.reset();
        assert_eq!(l.allow(t0 + Duration::from_secs(32)), Some(0));
    }
}

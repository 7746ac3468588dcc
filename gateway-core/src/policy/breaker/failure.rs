//! What counts as a failure for the breaker and the outlier detector.
//!
//! [`FailurePolicy`] classifies an [`UpstreamOutcome`] (connect error, timeout, or a response
//! status). The default counts connect errors, timeouts and the statuses **500, 502, 503, 504**:
//! those signal an unhealthy or overloaded upstream (internal error, bad gateway, unavailable,
//! gateway timeout). Other 5xx are left out on purpose: 501 (Not Implemented), 505 (HTTP Version
//! Not Supported) and friends are deterministic answers about the request, not about the
//! upstream's health, and tripping on them would eject a healthy upstream because of one route.
//! Any status can be added or removed with the builder methods, except **4xx, which never count**
//! (a client error says nothing about upstream health; adding one is silently ignored).
//!
//! Status lookup is a fixed 1024-bit set: O(1), no allocation.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::CallOutcome;

/// How an upstream call ended, as far as failure classification cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// The connection could not be established (refused, reset, TLS handshake failure, ...).
    ConnectError,
    /// Connect, write or read timed out.
    Timeout,
    /// The upstream answered with this status.
    Status(u16),
}

const WORDS: usize = 16; // 1024 bits: every u16 status below 1024

/// Classifies upstream outcomes as failures; see the module docs for the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailurePolicy {
    connect_errors: bool,
    timeouts: bool,
    statuses: [u64; WORDS],
}

impl Default for FailurePolicy {
    /// Connect errors, timeouts, 500, 502, 503, 504.
    fn default() -> Self {
        Self::none()
            .with_connect_errors(true)
            .with_timeouts(true)
            .with_status(500)
            .with_status(502)
            .with_status(503)
            .with_status(504)
    }
}

impl FailurePolicy {
    /// A policy under which nothing counts as a failure (build up from here).
    pub fn none() -> Self {
        Self {
            connect_errors: false,
            timeouts: false,
            statuses: [0; WORDS],
        }
    }

    /// Whether connect errors count.
    pub fn with_connect_errors(mut self, yes: bool) -> Self {
        self.connect_errors = yes;
        self
    }

    /// Whether timeouts count.
    pub fn with_timeouts(mut self, yes: bool) -> Self {
        self.timeouts = yes;
        self
    }

    /// Counts `status` as a failure (ignored for 4xx and for values >= 1024).
    pub fn with_status(mut self, status: u16) -> Self {
        self.set(status, true);
        self
    }

    /// Counts every status in `range` as a failure (4xx inside the range are skipped).
    pub fn with_status_range(mut self, range: RangeInclusive<u16>) -> Self {
        for s in range {
            self.set(s, true);
        }
        self
    }

    /// Stops counting `status` as a failure.
    pub fn without_status(mut self, status: u16) -> Self {
        self.set(status, false);
        self
    }

    fn set(&mut self, status: u16, on: bool) {
        if (400..=499).contains(&status) {
            return;
        }
        let (w, b) = (usize::from(status / 64), status % 64);
        if let Some(word) = self.statuses.get_mut(w) {
            if on {
                *word |= 1 << b;
            } else {
                *word &= !(1 << b);
            }
        }
    }

    /// Whether a response with `status` counts as a failure.
    pub fn counts_status(&self, status: u16) -> bool {
        if (400..=499).contains(&status) {
            return false;
        }
        let (w, b) = (usize::from(status / 64), status % 64);
        self.statuses
            .get(w)
            .is_some_and(|word| word & (1 << b) != 0)
    }

    /// Whether `outcome` counts as a failure.
    pub fn is_failure(&self, outcome: UpstreamOutcome) -> bool {
        match outcome {
            UpstreamOutcome::ConnectError => self.connect_errors,
            UpstreamOutcome::Timeout => self.timeouts,
            UpstreamOutcome::Status(s) => self.counts_status(s),
        }
    }

    /// Convenience: the [`CallOutcome`] to record for `outcome` that took `duration`.
    pub fn outcome(&self, outcome: UpstreamOutcome, duration: Duration) -> CallOutcome {
        CallOutcome {
            failed: self.is_failure(outcome),
            duration,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy() {
        let p = FailurePolicy::default();
        assert!(p.is_failure(UpstreamOutcome::ConnectError));
        assert!(p.is_failure(UpstreamOutcome::Timeout));
        for s in [500, 502, 503, 504] {
            assert!(p.is_failure(UpstreamOutcome::Status(s)), "{s}");
        }
        for s in [200, 204, 301, 304, 501, 505, 599] {
            assert!(!p.is_failure(UpstreamOutcome::Status(s)), "{s}");
        }
    }

    #[test]
    fn four_xx_never_counts() {
        let p = FailurePolicy::default()
            .with_status_range(0..=1023)
            .with_status(404)
            .with_status(429);
        for s in 400..=499 {
            assert!(!p.is_failure(UpstreamOutcome::Status(s)), "{s}");
        }
        assert!(p.is_failure(UpstreamOutcome::Status(501)));
        assert!(p.is_failure(UpstreamOutcome::Status(399)));
        // Out-of-range values are harmless.
        let p = FailurePolicy::none().with_status(u16::MAX);
        assert!(!p.is_failure(UpstreamOutcome::Status(u16::MAX)));
    }

    #[test]
    fn builder_toggles() {
        let p = FailurePolicy::default()
            .with_connect_errors(false)
            .with_timeouts(false)
            .without_status(503);
        assert!(!p.is_failure(UpstreamOutcome::ConnectError));
        assert!(!p.is_failure(UpstreamOutcome::Timeout));
        assert!(!p.is_failure(UpstreamOutcome::Status(503)));
        assert!(p.is_failure(UpstreamOutcome::Status(502)));
        let o = p.outcome(UpstreamOutcome::Status(502), Duration::from_millis(3));
        assert!(o.failed);
        assert_eq!(o.duration, Duration::from_millis(3));
    }
}

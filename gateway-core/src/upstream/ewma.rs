//! Peak EWMA: the response-time estimate behind the `fastest` balancer.
//!
//! The estimator of Finagle's and linkerd's peak-EWMA balancers, in three rules:
//! - **peak**: a response slower than the current estimate replaces it at once, so an endpoint that gets
//!   slow loses its traffic on the next pick;
//! - **smoothing**: a faster response moves the estimate [`ALPHA`] of the way towards it, so one lucky
//!   sample does not make a slow endpoint look fast;
//! - **decay**: between samples the estimate decays towards zero with time constant [`DECAY`]. An
//!   endpoint that stopped being picked therefore looks cheaper and cheaper until it is picked (re-measured)
//!   again: an estimate `E` drops below the best endpoint's `B` after `DECAY · ln(E / B)` (50 ms against
//!   2 ms: 3.2 · 5 s ≈ 16 s). Without decay an endpoint that was slow once would never be measured again.
//!
//! The balancer's score is the estimate times (requests in flight + 1), so concurrent requests spread
//! over near-equal endpoints instead of piling onto the single fastest one.
use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Time constant of the decay towards zero between samples.
pub const DECAY: Duration = Duration::from_secs(5);

/// Share of the distance to a faster sample that one sample covers.
pub const ALPHA: f64 = 0.3;

#[derive(Debug, Clone, Copy)]
struct State {
    /// Estimate in nanoseconds when last updated.
    cost_ns: f64,
    /// When it was last updated; `None` = no sample yet.
    stamp: Option<Instant>,
}

/// A peak-EWMA response-time estimate for one endpoint. Cheap to read and update (one short lock).
#[derive(Debug)]
pub struct PeakEwma {
    state: Mutex<State>,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            state: Mutex::new(State {
                cost_ns: 0.0,
                stamp: None,
            }),
        }
    }
}

fn decayed(s: State, now: Instant) -> f64 {
    match s.stamp {
        None => 0.0,
        Some(t) => {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            s.cost_ns * (-dt / DECAY.as_secs_f64()).exp()
        }
    }
}

impl PeakEwma {
    /// The estimate at `now`, in nanoseconds (0 = never measured, or measured very long ago).
    pub fn cost_ns(&self, now: Instant) -> f64 {
        decayed(*self.state.lock(), now)
    }

    /// Whether the endpoint was ever measured.
    pub fn measured(&self) -> bool {
        self.state.lock().stamp.is_some()
    }

    /// Folds one response time, observed at `now`, into the estimate.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let sample = rtt.as_nanos().min(u64::MAX as u128) as f64;
        let mut s = self.state.lock();
        let current = decayed(*s, now);
        s.cost_ns = if s.stamp.is_none() || sample >= current {
            sample
        } else {
            current + (sample - current) * ALPHA
        };
        s.stamp = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn peak_jumps_up_at_once_and_smooths_down() {
        let e = PeakEwma::default();
        let t = Instant::now();
        assert_eq!(e.cost_ns(t), 0.0);
        assert!(!e.measured());
        e.observe(2 * MS, t);
        assert!((e.cost_ns(t) - 2e6).abs() < 1.0);
        e.observe(50 * MS, t);
        assert!(
            (e.cost_ns(t) - 50e6).abs() < 1.0,
            "a slower sample is taken at once"
        );
        e.observe(2 * MS, t);
        let c = e.cost_ns(t);
        assert!((c - (50e6 - 48e6 * ALPHA)).abs() < 1.0, "{c}");
        for _ in 0..30 {
            e.observe(2 * MS, t);
        }
        assert!(e.cost_ns(t) < 2.1e6, "converges to the new level");
    }

    #[test]
    fn unpicked_estimate_decays_to_be_remeasured() {
        let e = PeakEwma::default();
        let t = Instant::now();
        e.observe(50 * MS, t);
        let half = t + DECAY.mul_f64(std::f64::consts::LN_2);
        assert!((e.cost_ns(half) - 25e6).abs() < 1e3);
        // 50 ms drops below a 2 ms competitor after DECAY · ln 25
        let cross = DECAY.mul_f64(25f64.ln());
        assert!(e.cost_ns(t + cross - 100 * MS) > 2e6);
        assert!(e.cost_ns(t + cross + 100 * MS) < 2e6);
        // an observation in the past (clock order across threads) never panics or grows the estimate
        e.observe(50 * MS, t + cross);
        assert!(e.cost_ns(t) <= 50e6 + 1.0);
    }
}

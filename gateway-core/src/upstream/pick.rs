//! The whole endpoint pick for one attempt ([`Balancer::pick_attempt`]) and the per-endpoint
//! recent-failure mark ([`Balancer::record_connect_failure`]).
//!
//! Candidates are narrowed by three soft filters, dropped one at a time when nothing is left:
//!
//! | stage | not tried | not ejected | no recent connect failure |
//! |---|---|---|---|
//! | 1 | ✓ | ✓ | ✓ |
//! | 2 (panic mode: ejection ignored) | ✓ | | ✓ |
//! | 3 (every candidate just failed) | ✓ | ✓ | |
//! | 4 | ✓ | | |
//! | 5 (a retry after every endpoint was tried: round again) | | | ✓ |
//! | 6 | | | |
//!
//! Unhealthy endpoints (active health checks) are never picked; nothing left → `None` (503).
//!
//! **Rotation.** A request's first attempt takes one step of the selector (Pingora's weighted round
//! robin, random or Ketama ring; least-connections and fastest compare scores) and, when that step lands
//! on a filtered-out endpoint, a second rotation spreads those picks evenly (by weight) over the
//! remaining candidates. Retries use only the second rotation. So each request advances Pingora's
//! round-robin counter exactly once, whatever was filtered: in panic mode traffic alternates as usual,
//! and a retry cannot shift the next request back onto the endpoint that just failed.
//!
//! **Recent-failure mark.** A connect failure or connect timeout marks the endpoint for
//! [`RECENT_FAILURE_HOLD`]; first attempts skip marked endpoints (stage 1), so an endpoint that drops
//! packets costs one connect timeout per hold period instead of one per request. When the hold has
//! passed, the next request that picks the endpoint re-arms the mark before trying (one probe per
//! period, however many requests arrive meanwhile); a successful response clears it.
use super::lb::Balancer;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long an endpoint is skipped by first attempts after a connect failure or connect timeout.
pub const RECENT_FAILURE_HOLD: Duration = Duration::from_secs(2);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// When an endpoint last failed to connect (0 = not marked), as nanoseconds since a process epoch + 1.
#[derive(Debug, Default)]
pub struct FailMark(AtomicU64);

fn stamp(now: Instant) -> u64 {
    now.saturating_duration_since(epoch())
        .as_nanos()
        .min(u64::MAX as u128 - 1) as u64
        + 1
}

impl FailMark {
    /// Marks a failure at `now`.
    pub fn set(&self, now: Instant) {
        self.0.store(stamp(now), Relaxed);
    }

    /// Clears the mark (the endpoint answered).
    pub fn clear(&self) {
        if self.0.load(Relaxed) != 0 {
            self.0.store(0, Relaxed);
        }
    }

    /// Whether a failure was marked less than [`RECENT_FAILURE_HOLD`] before `now`.
    pub fn active(&self, now: Instant) -> bool {
        let m = self.0.load(Relaxed);
        m != 0 && stamp(now).saturating_sub(m) < RECENT_FAILURE_HOLD.as_nanos() as u64
    }

    /// An expired mark is re-armed at `now` (this attempt is the probe).
    fn rearm_if_expired(&self, now: Instant) {
        let m = self.0.load(Relaxed);
        if m != 0 && !self.active(now) {
            let _ = self.0.compare_exchange(m, stamp(now), Relaxed, Relaxed);
        }
    }
}

/// The soft filters of one stage.
#[derive(Clone, Copy)]
struct Stage {
    skip_tried: bool,
    skip_ejected: bool,
    skip_failed: bool,
}

const STAGES: [Stage; 6] = [
    Stage::new(true, true, true),
    Stage::new(true, false, true),
    Stage::new(true, true, false),
    Stage::new(true, false, false),
    Stage::new(false, false, true),
    Stage::new(false, false, false),
];

impl Stage {
    const fn new(skip_tried: bool, skip_ejected: bool, skip_failed: bool) -> Stage {
        Stage {
            skip_tried,
            skip_ejected,
            skip_failed,
        }
    }
}

impl Balancer {
    /// Picks the endpoint for one attempt of a request: `key` feeds consistent hashing, `tried` lists the
    /// endpoints this request already tried (empty on the first attempt), `ejected(i)` says whether
    /// outlier detection currently ejects endpoint `i`. See the module docs for the stages. `None` when no
    /// endpoint is healthy (or, on a first attempt, when there is none at all).
    pub fn pick_attempt(
        &self,
        key: &[u8],
        tried: &[usize],
        ejected: impl Fn(usize) -> bool,
        now: Instant,
    ) -> Option<super::Pick> {
        let first = tried.is_empty();
        for st in STAGES {
            if !st.skip_tried && first {
                break; // stages 5–6 only serve retries
            }
            let ok = |i: usize| {
                !(st.skip_tried && tried.contains(&i)
                    || st.skip_ejected && ejected(i)
                    || st.skip_failed && self.endpoints[i].failed.active(now))
            };
            // check first, so an empty stage advances no rotation
            if !(0..self.endpoints.len()).any(|i| ok(i) && self.healthy(i)) {
                continue;
            }
            if let Some(i) = self.select(key, &ok, first, now) {
                self.endpoints[i].failed.rearm_if_expired(now);
                return Some(super::Pick {
                    index: i,
                    addr: self.endpoints[i].addr,
                });
            }
        }
        None
    }

    /// Records a connect failure or connect timeout of endpoint `i` at `now`: first attempts skip it for
    /// [`RECENT_FAILURE_HOLD`]. Out-of-range indexes are ignored.
    pub fn record_connect_failure(&self, i: usize, now: Instant) {
        if let Some(e) = self.endpoints.get(i) {
            e.failed.set(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::LoadBalancing as Lb;
    use crate::upstream::Balancer;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    fn balancer(kind: Lb, weights: &[u32]) -> Balancer {
        let eps: Vec<(SocketAddr, u32)> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16)), *w))
            .collect();
        Balancer::new(&kind, &eps)
    }

    /// Counts first-attempt picks over `n` requests with `ejected` applied.
    fn spread(b: &Balancer, n: usize, ejected: impl Fn(usize) -> bool + Copy) -> Vec<usize> {
        let mut counts = vec![0; b.endpoints.len()];
        let now = Instant::now();
        for _ in 0..n {
            counts[b.pick_attempt(b"", &[], ejected, now).unwrap().index] += 1;
        }
        counts
    }

    #[test]
    fn panic_mode_round_robin_spreads_evenly() {
        for n in [2usize, 3, 4] {
            let b = balancer(Lb::RoundRobin, &vec![1; n]);
            let c = spread(&b, 300 * n, |_| true);
            assert!(
                c.iter().all(|&k| k == 300),
                "{n} endpoints all ejected: {c:?}"
            );
        }
    }

    #[test]
    fn one_ejected_spreads_evenly_over_the_rest() {
        let b = balancer(Lb::RoundRobin, &[1, 1, 1]);
        let c = spread(&b, 600, |i| i == 0);
        assert_eq!(c, vec![0, 300, 300]);
        // weights are kept among the rest
        let b = balancer(Lb::RoundRobin, &[1, 3, 1]);
        let c = spread(&b, 500, |i| i == 0);
        assert_eq!(c[0], 0);
        assert!((370..=380).contains(&c[1]), "{c:?}");
    }

    #[test]
    fn retry_does_not_advance_the_first_pick_rotation() {
        let b = balancer(Lb::RoundRobin, &[1, 1]);
        let now = Instant::now();
        let mut firsts = Vec::new();
        for _ in 0..10 {
            let p = b.pick_attempt(b"", &[], |_| false, now).unwrap();
            firsts.push(p.index);
            // a retry on another endpoint
            let r = b.pick_attempt(b"", &[p.index], |_| false, now).unwrap();
            assert_ne!(r.index, p.index);
        }
        assert_eq!(firsts.iter().filter(|&&i| i == 0).count(), 5, "{firsts:?}");
    }

    #[test]
    fn recently_failed_endpoint_is_skipped_until_the_hold_passes() {
        let b = balancer(Lb::RoundRobin, &[1, 1]);
        let t = Instant::now();
        b.record_connect_failure(0, t);
        for _ in 0..20 {
            assert_eq!(b.pick_attempt(b"", &[], |_| false, t).unwrap().index, 1);
        }
        // a retry may still use it when nothing else is left
        assert_eq!(b.pick_attempt(b"", &[1], |_| false, t).unwrap().index, 0);
        // every endpoint failed: still answer
        b.record_connect_failure(1, t);
        assert!(b.pick_attempt(b"", &[], |_| false, t).is_some());
        // after the hold, one probe re-arms the mark: the next first attempt skips it again
        let b = balancer(Lb::RoundRobin, &[1, 1]);
        b.record_connect_failure(0, t);
        let later = t + super::RECENT_FAILURE_HOLD + Duration::from_millis(1);
        let picks: Vec<usize> = (0..6)
            .map(|_| b.pick_attempt(b"", &[], |_| false, later).unwrap().index)
            .collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 1, "{picks:?}");
        // a success clears the mark
        b.endpoints[0].observe_at(Duration::from_millis(1), later);
        let c = spread(&b, 10, |_| false);
        assert_eq!(c, vec![5, 5]);
    }

    #[test]
    fn unhealthy_or_nothing_left_gives_none_and_never_panics() {
        let b = balancer(Lb::LeastConnections, &[]);
        assert!(b
            .pick_attempt(b"k", &[], |_| true, Instant::now())
            .is_none());
        for kind in [
            Lb::RoundRobin,
            Lb::Random,
            Lb::LeastConnections,
            Lb::Fastest,
            Lb::ConsistentHash(crate::plan::HashKey::Path),
        ] {
            let b = balancer(kind, &[1, 2]);
            let now = Instant::now();
            // retries beyond the endpoint count go round again
            for tried in [&[][..], &[0], &[0, 1], &[0, 1, 0, 1]] {
                assert!(b.pick_attempt(b"k", tried, |_| true, now).is_some());
            }
        }
    }

    #[test]
    fn consistent_hash_panic_mode_stays_sticky() {
        let b = balancer(
            Lb::ConsistentHash(crate::plan::HashKey::Path),
            &[1, 1, 1, 1],
        );
        let now = Instant::now();
        let first = b.pick_attempt(b"user-7", &[], |_| true, now).unwrap();
        for _ in 0..10 {
            assert_eq!(
                b.pick_attempt(b"user-7", &[], |_| true, now).unwrap(),
                first
            );
        }
    }
}

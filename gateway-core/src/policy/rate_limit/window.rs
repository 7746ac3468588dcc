//! Pure sliding-window-counter arithmetic, shared by the local and the Redis store.
//!
//! Everything here is exact integer math on milliseconds; no clock is read. With a window of
//! `w` ms, `e` ms elapsed in the current fixed window, `p` requests counted in the previous
//! fixed window and `q` in the current one, the estimate is `p * (w - e) / w + q`. A request of
//! cost `c` is admitted iff `estimate + c <= max`, evaluated without rounding as
//! `p * (w - e) + (q + c) * w <= max * w` in `u128`.
//!
//! The estimate never increases while no request is counted (the previous window's share decays
//! linearly, and at a window boundary the current count becomes the previous one with weight 1),
//! so "how long until `n` units are free" has an exact answer: [`Window::wait_ms`].

/// Position of `now` relative to a limit's fixed windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Window length in milliseconds (>= 1).
    pub w: u64,
    /// Index of the current fixed window: `now_ms / w`.
    pub idx: u64,
    /// Milliseconds elapsed in the current fixed window: `now_ms % w`.
    pub e: u64,
}

impl Window {
    /// Splits a unix-millisecond timestamp for a window of `w` ms (`w` is clamped to >= 1).
    #[inline]
    pub fn at(now_ms: u64, w: u64) -> Self {
        let w = w.max(1);
        Window {
            w,
            idx: now_ms / w,
            e: now_ms % w,
        }
    }

    /// Start of the current fixed window in unix milliseconds.
    #[cfg(test)]
    pub fn start_ms(&self) -> u64 {
        self.idx.saturating_mul(self.w)
    }

    /// Whether `cost` more units fit given counts `prev` and `curr` (before this request).
    #[inline]
    pub fn admits(&self, prev: u64, curr: u64, cost: u64, max: u64) -> bool {
        let w = self.w as u128;
        let used = prev as u128 * (w - self.e as u128) + (curr as u128 + cost as u128) * w;
        used <= max as u128 * w
    }

    /// Whole units still available: `floor(max - estimate)`, clamped at 0.
    #[inline]
    pub fn remaining(&self, prev: u64, curr: u64, max: u64) -> u64 {
        let w = self.w as u128;
        let used = prev as u128 * (w - self.e as u128) + curr as u128 * w;
        let cap = max as u128 * w;
        if used >= cap {
            0
        } else {
            // (cap - used) / w <= max, fits in u64.
            ((cap - used) / w) as u64
        }
    }

    /// Milliseconds from now until `need` units fit (estimate + need <= max), assuming no
    /// further requests are counted. `None` if they never can (`need > max`).
    pub fn wait_ms(&self, prev: u64, curr: u64, max: u64, need: u64) -> Option<u64> {
        if need > max {
            return None;
        }
        let w = self.w as u128;
        let left_in_window = w - self.e as u128;
        let (p, q, m, n) = (prev as u128, curr as u128, max as u128, need as u128);
        if q + n <= m {
            // Phase 1: still in the current window. Need p * s <= (m - q - n) * w where s is the
            // number of ms left in the window at the moment of retrying.
            if p == 0 {
                return Some(0);
            }
            let s_max = (m - q - n) * w / p;
            if s_max >= left_in_window {
                return Some(0);
            }
            return Some((left_in_window - s_max) as u64);
        }
        // Phase 2: only after the boundary, when `curr` becomes the previous window (q > 0 here
        // because q > m - n >= 0). Need q * s' <= (m - n) * w, s' = ms left in that window.
        let s_max = (m - n) * w / q;
        let into_next = w - s_max.min(w);
        Some((left_in_window + into_next) as u64)
    }
}

/// Milliseconds to whole seconds, rounding up.
#[inline]
pub(crate) fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: smallest d (ms) such that the request fits at now + d, simulating rollover.
    fn brute_wait(now: u64, w: u64, prev: u64, curr: u64, max: u64, need: u64) -> Option<u64> {
        let start = Window::at(now, w);
        for d in 0..=(3 * w) {
            let t = Window::at(now + d, w);
            let (p, q) = match t.idx - start.idx {
                0 => (prev, curr),
                1 => (curr, 0),
                _ => (0, 0),
            };
            if t.admits(p, q, need, max) {
                return Some(d);
            }
        }
        None
    }

    #[test]
    fn split_and_admit_exact_boundary() {
        let win = Window::at(10_500, 1000);
        assert_eq!((win.idx, win.e, win.start_ms()), (10, 500, 10_000));
        // prev 10 at half weight = 5, curr 4: estimate 9, one more fits, two do not.
        assert!(win.admits(10, 4, 1, 10));
        assert!(!win.admits(10, 4, 2, 10));
        assert_eq!(win.remaining(10, 4, 10), 1);
        assert_eq!(win.remaining(10, 5, 10), 0);
        assert_eq!(win.remaining(0, 0, 10), 10);
        // Fractional estimate: prev 3 at weight 0.5 = 1.5, remaining floor(10 - 1.5) = 8.
        assert_eq!(win.remaining(3, 0, 10), 8);
    }

    #[test]
    fn wait_matches_brute_force() {
        let w = 1000;
        for &now in &[0u64, 1, 250, 999, 5_731] {
            for &(prev, curr, max) in &[
                (0u64, 0u64, 10u64),
                (10, 0, 10),
                (10, 10, 10),
                (7, 3, 10),
                (0, 10, 10),
                (1000, 999, 1000),
                (3, 9, 10),
                (20, 5, 10),
            ] {
                for need in [1u64, 2, 5, 10, 11] {
                    let win = Window::at(now, w);
                    assert_eq!(
                        win.wait_ms(prev, curr, max, need),
                        brute_wait(now, w, prev, curr, max, need),
                        "now={now} prev={prev} curr={curr} max={max} need={need}"
                    );
                }
            }
        }
    }

    #[test]
    fn ceil_secs_rounds_up() {
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(1000), 1);
        assert_eq!(ceil_secs(1001), 2);
    }
}

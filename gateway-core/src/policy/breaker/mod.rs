//! Circuit breaker state machine (CLOSED → OPEN → HALF_OPEN → CLOSED) for one upstream.
//!
//! # Semantics
//! * **CLOSED**: every call is admitted. The breaker opens after `failure_threshold` consecutive
//!   failures (0 disables this trigger), or, when [`RateTrip`] is configured, as soon as the rate
//!   window holds at least `min_calls` calls and the failure rate or the slow-call rate is at or
//!   above its configured percent (a call is *slow* when its duration is strictly greater than
//!   `slow_call_threshold`; a percent that is `None`, NaN or ≤ 0 is disabled).
//! * **OPEN**: every call is rejected with `retry_after` = the time left until `open_duration`
//!   has elapsed since opening.
//! * **HALF_OPEN** (entered lazily by the first `try_acquire` after the open time ran out): at
//!   most `half_open_max_calls` probes are in flight at once; callers beyond that are rejected
//!   with `retry_after` = `min(1 s, open_duration)` ([`HALF_OPEN_RETRY_AFTER`]) — a short hint,
//!   since a slot frees up as soon as a probe finishes. `success_threshold` consecutive probe
//!   successes close the breaker (windows and counters reset); any probe failure re-opens it with
//!   a fresh `open_duration`. Slowness is ignored for probes; only `failed` matters.
//! * A [`Permit`] dropped without [`Permit::record`] (cancelled request) releases its probe slot
//!   and counts as neither success nor failure.
//! * Results of calls admitted in an earlier state (e.g. a CLOSED-era call that finishes after
//!   the breaker opened) are ignored: each transition starts a new *epoch* and permits carry it.
//! * [`CircuitBreaker::force`] pins the breaker OPEN (rejects with `retry_after` =
//!   `open_duration`) or CLOSED (admits, records nothing) for an admin API; `Auto` releases a
//!   pin into a fresh CLOSED state (no-op when not pinned).
//! * [`CircuitBreaker::state`] is a pure read: an OPEN breaker whose time ran out reports
//!   `HalfOpen` even though the transition (and its observer event) happens on the next
//!   `try_acquire`.
//!
//! # Cost
//! State and epoch live in one `AtomicU64`. In CLOSED state `try_acquire` is one atomic load plus
//! an `Arc` clone (the permit is `'static` so it can live in a per-request context), and
//! `record` is an atomic load plus a counter update; only with a rate window configured does
//! `record` take a short, normally uncontended `parking_lot::Mutex`. OPEN rejection is two atomic
//! loads plus a stats counter. Transitions and half-open bookkeeping take the mutex. Observer
//! callbacks and the `tracing::info!` line run after the mutex is released.
//!
//! Time is injected: every time-dependent call takes `now: Instant`; internally times are stored
//! as nanoseconds since the `Instant` passed to [`CircuitBreaker::new`] (earlier instants count
//! as that base).

pub mod failure;
pub mod outlier;
pub mod window;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use failure::{FailurePolicy, UpstreamOutcome};
pub use outlier::{
    EndpointHealth, NoopOutlierObserver, OutlierDetector, OutlierObserver, OutlierSettings,
};
pub use window::{RateWindowState, WindowCounts};

/// Upper bound of `retry_after` when the half-open probe slots are all taken.
pub const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Breaker configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Consecutive failures (in CLOSED) that open the breaker; 0 disables this trigger.
    pub failure_threshold: u32,
    /// Consecutive half-open probe successes that close it (0 is treated as 1).
    pub success_threshold: u32,
    /// How long OPEN rejects before probing.
    pub open_duration: Duration,
    /// Concurrent half-open probes (0 is treated as 1).
    pub half_open_max_calls: u32,
    /// Optional rate-based trip.
    pub rate: Option<RateTrip>,
}

impl Default for BreakerSettings {
    /// 5 consecutive failures open it for 30 s; 1 probe at a time; 2 successes close it.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            success_threshold: 2,
            open_duration: Duration::from_secs(30),
            half_open_max_calls: 1,
            rate: None,
        }
    }
}

/// Rate-based trip over a sliding window.
#[derive(Debug, Clone, PartialEq)]
pub struct RateTrip {
    /// Which window.
    pub window: RateWindow,
    /// The window must hold at least this many calls before rates are evaluated (0 is treated
    /// as 1).
    pub min_calls: u32,
    /// Open when failed/calls ≥ this percent.
    pub failure_rate_percent: Option<f64>,
    /// Open when slow/calls ≥ this percent.
    pub slow_call_rate_percent: Option<f64>,
    /// Calls that take strictly longer than this are slow.
    pub slow_call_threshold: Duration,
}

/// Window kind for [`RateTrip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateWindow {
    /// The last N calls (clamped to `1..=window::MAX_CALLS_WINDOW`).
    Calls(u32),
    /// The last T of time (1 s buckets; see [`window::TimeWindow`]).
    Time(Duration),
}

impl RateTrip {
    fn enabled(p: Option<f64>) -> Option<f64> {
        p.filter(|p| p.is_finite() && *p > 0.0)
    }

    fn should_trip(&self, c: WindowCounts) -> bool {
        if c.calls < u64::from(self.min_calls.max(1)) {
            return false;
        }
        let calls = c.calls as f64;
        let over = |part: u64, pct: Option<f64>| {
            Self::enabled(pct).is_some_and(|p| part as f64 * 100.0 >= p * calls)
        };
        over(c.failed, self.failure_rate_percent) || over(c.slow, self.slow_call_rate_percent)
    }

    fn new_window(&self) -> RateWindowState {
        match self.window {
            RateWindow::Calls(n) => RateWindowState::Calls(window::CallsWindow::new(n)),
            RateWindow::Time(d) => RateWindowState::Time(window::TimeWindow::new(d)),
        }
    }
}

/// Public breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Admitting calls.
    Closed,
    /// Rejecting calls.
    Open,
    /// Admitting a bounded number of probes.
    HalfOpen,
}

impl State {
    /// Lower-case name, for labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Admin override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForcedState {
    /// Reject everything until released.
    Open,
    /// Admit everything, never trip, until released.
    Closed,
    /// Normal operation.
    Auto,
}

/// Outcome of one admitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOutcome {
    /// Whether the call counts as a failure (see [`FailurePolicy`]).
    pub failed: bool,
    /// How long it took (for slow-call accounting).
    pub duration: Duration,
}

impl CallOutcome {
    /// A successful call.
    pub fn success(duration: Duration) -> Self {
        Self {
            failed: false,
            duration,
        }
    }

    /// A failed call.
    pub fn failure(duration: Duration) -> Self {
        Self {
            failed: true,
            duration,
        }
    }
}

/// A call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Hint for a `Retry-After` header: remaining open time, or [`HALF_OPEN_RETRY_AFTER`]
    /// (capped by `open_duration`) when the half-open probes are taken, or `open_duration` when
    /// forced open.
    pub retry_after: Duration,
    /// State that rejected the call (`Open` or `HalfOpen`).
    pub state: State,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker {}; retry after {:?}",
            self.state, self.retry_after
        )
    }
}

impl std::error::Error for Rejected {}

/// Receives breaker events. Called outside any lock, on the caller's thread; keep it cheap.
pub trait BreakerObserver: Send + Sync {
    /// The public state changed.
    fn on_transition(&self, from: State, to: State) {
        let _ = (from, to);
    }
    /// A call was rejected.
    fn on_rejected(&self) {}
}

/// Observer that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl BreakerObserver for NoopObserver {}

/// Point-in-time view for listing / admin.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSnapshot {
    /// Breaker name.
    pub name: Arc<str>,
    /// State as [`CircuitBreaker::state`] reports it.
    pub state: State,
    /// Admin pin, if any.
    pub forced: ForcedState,
    /// Consecutive failures counted in CLOSED.
    pub consecutive_failures: u32,
    /// Consecutive probe successes in HALF_OPEN.
    pub consecutive_successes: u32,
    /// Probes currently in flight.
    pub half_open_in_flight: u32,
    /// Rate window totals, when configured.
    pub window: Option<WindowCounts>,
    /// When it last opened (not set by a forced open).
    pub opened_at: Option<Instant>,
    /// Time left before probing, while OPEN.
    pub open_remaining: Option<Duration>,
    /// How many times it opened (automatic transitions only).
    pub times_opened: u64,
    /// Calls rejected since creation.
    pub rejected_total: u64,
}

// State word: (epoch << 8) | code.
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const FORCED_CLOSED: u64 = 4;
const CODE_MASK: u64 = 0xff;

fn public(code: u64) -> State {
    match code {
        OPEN | FORCED_OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        _ => State::Closed,
    }
}

fn dur_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

struct Inner {
    window: Option<RateWindowState>,
    half_open_in_flight: u32,
    consecutive_successes: u32,
    opened_at: Option<Instant>,
    times_opened: u64,
}

/// Keeps a value on its own cache line(s) (128 bytes: adjacent-line prefetch on x86), so
/// writes to one hot field (or to the `Arc` refcount) don't invalidate the state word that every
/// `try_acquire` reads.
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Shared {
    name: Arc<str>,
    settings: BreakerSettings,
    base: Instant,
    /// `(epoch << 8) | code`; read on every call, written only on transitions.
    word: Padded<AtomicU64>,
    /// Nanos since `base` at which OPEN may turn HALF_OPEN.
    open_until: AtomicU64,
    consecutive_failures: Padded<AtomicU32>,
    rejected_total: Padded<AtomicU64>,
    inner: Padded<Mutex<Inner>>,
    observer: Arc<dyn BreakerObserver>,
}

/// A transition to report once the lock is released.
#[must_use]
struct Transition {
    from: State,
    to: State,
}

/// A circuit breaker. Cheap to clone (a handle to shared state); `Send + Sync`.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.name)
            .field("word", &self.shared.word.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A CLOSED breaker. `now` is the time base (pass `Instant::now()` in production).
    pub fn new(name: impl Into<Arc<str>>, settings: BreakerSettings, now: Instant) -> Self {
        Self::with_observer(name, settings, Arc::new(NoopObserver), now)
    }

    /// Like [`new`](Self::new), reporting events to `observer`.
    pub fn with_observer(
        name: impl Into<Arc<str>>,
        mut settings: BreakerSettings,
        observer: Arc<dyn BreakerObserver>,
        now: Instant,
    ) -> Self {
        settings.success_threshold = settings.success_threshold.max(1);
        settings.half_open_max_calls = settings.half_open_max_calls.max(1);
        if let Some(r) = settings.rate.as_mut() {
            r.min_calls = r.min_calls.max(1);
        }
        let window = settings.rate.as_ref().map(RateTrip::new_window);
        Self {
            shared: Arc::new(Shared {
                name: name.into(),
                settings,
                base: now,
                word: Padded(AtomicU64::new(CLOSED)),
                open_until: AtomicU64::new(0),
                consecutive_failures: Padded(AtomicU32::new(0)),
                rejected_total: Padded(AtomicU64::new(0)),
                inner: Padded(Mutex::new(Inner {
                    window,
                    half_open_in_flight: 0,
                    consecutive_successes: 0,
                    opened_at: None,
                    times_opened: 0,
                })),
                observer,
            }),
        }
    }

    /// Breaker name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Effective settings (after normalisation of zero values).
    pub fn settings(&self) -> &BreakerSettings {
        &self.shared.settings
    }

    /// Asks to make a call. On `Ok`, make the call and then [`Permit::record`] its outcome.
    #[inline]
    pub fn try_acquire(&self, now: Instant) -> Result<Permit, Rejected> {
        let s = &*self.shared;
        let word = s.word.load(Ordering::Acquire);
        match word & CODE_MASK {
            CLOSED | FORCED_CLOSED => Ok(Permit::new(&self.shared, word, false)),
            OPEN => {
                let until = s.open_until.load(Ordering::Acquire);
                let n = s.nanos(now);
                if n < until {
                    Err(s.reject(Duration::from_nanos(until - n), State::Open))
                } else {
                    self.acquire_slow(now)
                }
            }
            FORCED_OPEN => Err(s.reject(s.settings.open_duration, State::Open)),
            _ => self.acquire_slow(now),
        }
    }

    #[cold]
    fn acquire_slow(&self, now: Instant) -> Result<Permit, Rejected> {
        let s = &*self.shared;
        let mut inner = s.inner.lock();
        let word = s.word.load(Ordering::Acquire);
        let mut transition = None;
        let result = match word & CODE_MASK {
            CLOSED | FORCED_CLOSED => Ok(Permit::new(&self.shared, word, false)),
            FORCED_OPEN => Err(s.settings.open_duration),
            OPEN => {
                let until = s.open_until.load(Ordering::Acquire);
                let n = s.nanos(now);
                if n < until {
                    Err(Duration::from_nanos(until - n))
                } else {
                    let (t, new_word) = s.transition_locked(&mut inner, HALF_OPEN, now);
                    transition = Some(t);
                    inner.half_open_in_flight = 1;
                    Ok(Permit::new(&self.shared, new_word, true))
                }
            }
            _ => {
                if inner.half_open_in_flight < s.settings.half_open_max_calls {
                    inner.half_open_in_flight += 1;
                    Ok(Permit::new(&self.shared, word, true))
                } else {
                    Err(HALF_OPEN_RETRY_AFTER.min(s.settings.open_duration))
                }
            }
        };
        let state = public(s.word.load(Ordering::Acquire) & CODE_MASK);
        drop(inner);
        if let Some(t) = transition {
            s.emit(t);
        }
        result.map_err(|retry_after| s.reject(retry_after, state))
    }

    /// Current state (pure read; see module docs).
    pub fn state(&self, now: Instant) -> State {
        let s = &*self.shared;
        let word = s.word.load(Ordering::Acquire);
        match word & CODE_MASK {
            OPEN if s.nanos(now) >= s.open_until.load(Ordering::Acquire) => State::HalfOpen,
            code => public(code),
        }
    }

    /// Admin override; see [`ForcedState`].
    pub fn force(&self, forced: ForcedState) {
        let s = &*self.shared;
        let mut inner = s.inner.lock();
        let code = s.word.load(Ordering::Acquire) & CODE_MASK;
        let pinned = code == FORCED_OPEN || code == FORCED_CLOSED;
        let target = match forced {
            ForcedState::Open => FORCED_OPEN,
            ForcedState::Closed => FORCED_CLOSED,
            ForcedState::Auto if pinned => CLOSED,
            ForcedState::Auto => return,
        };
        if target == code {
            return;
        }
        let (t, _) = s.transition_locked(&mut inner, target, s.base);
        drop(inner);
        tracing::info!(breaker = %s.name, forced = ?forced, "circuit breaker forced");
        s.emit(t);
    }

    /// Snapshot for listing.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let s = &*self.shared;
        let mut inner = s.inner.lock();
        let word = s.word.load(Ordering::Acquire);
        let code = word & CODE_MASK;
        let n = s.nanos(now);
        let open_remaining = (code == OPEN)
            .then(|| Duration::from_nanos(s.open_until.load(Ordering::Acquire).saturating_sub(n)));
        let window = inner.window.as_mut().map(|w| w.counts(n));
        BreakerSnapshot {
            name: s.name.clone(),
            state: self.state(now),
            forced: match code {
                FORCED_OPEN => ForcedState::Open,
                FORCED_CLOSED => ForcedState::Closed,
                _ => ForcedState::Auto,
            },
            consecutive_failures: s.consecutive_failures.load(Ordering::Relaxed),
            consecutive_successes: inner.consecutive_successes,
            half_open_in_flight: inner.half_open_in_flight,
            window,
            opened_at: inner.opened_at,
            open_remaining,
            times_opened: inner.times_opened,
            rejected_total: s.rejected_total.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    #[inline]
    fn nanos(&self, now: Instant) -> u64 {
        dur_nanos(now.saturating_duration_since(self.base))
    }

    fn reject(&self, retry_after: Duration, state: State) -> Rejected {
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        self.observer.on_rejected();
        Rejected { retry_after, state }
    }

    /// Moves to `code` with a new epoch; caller holds the lock and must `emit` the result.
    fn transition_locked(&self, inner: &mut Inner, code: u64, now: Instant) -> (Transition, u64) {
        let old = self.word.load(Ordering::Acquire);
        if code == OPEN {
            let until = self
                .nanos(now)
                .saturating_add(dur_nanos(self.settings.open_duration));
            self.open_until.store(until, Ordering::Release);
            inner.opened_at = Some(now);
            inner.times_opened += 1;
        }
        inner.half_open_in_flight = 0;
        inner.consecutive_successes = 0;
        if code != HALF_OPEN {
            if let Some(w) = inner.window.as_mut() {
                w.reset();
            }
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let epoch = (old >> 8).wrapping_add(1) & (u64::MAX >> 8);
        let new = (epoch << 8) | code;
        self.word.store(new, Ordering::Release);
        (
            Transition {
                from: public(old & CODE_MASK),
                to: public(code),
            },
            new,
        )
    }

    fn emit(&self, t: Transition) {
        if t.from == t.to {
            return;
        }
        tracing::info!(breaker = %self.name, from = %t.from, to = %t.to, "circuit breaker transition");
        self.observer.on_transition(t.from, t.to);
    }

    /// Result of a call admitted in CLOSED state.
    #[inline]
    fn on_closed_result(&self, word: u64, outcome: CallOutcome, now: Instant) {
        if word & CODE_MASK != CLOSED || self.word.load(Ordering::Acquire) != word {
            return; // forced closed (records nothing), or a stale epoch
        }
        let threshold = self.settings.failure_threshold;
        let mut trip = false;
        if outcome.failed {
            let n = self
                .consecutive_failures
                .fetch_add(1, Ordering::AcqRel)
                .wrapping_add(1);
            trip = threshold > 0 && n >= threshold;
        } else if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.settings.rate.is_none() && !trip {
            return;
        }
        self.closed_locked(word, outcome, now, trip);
    }

    fn closed_locked(&self, word: u64, outcome: CallOutcome, now: Instant, mut trip: bool) {
        let mut inner = self.inner.lock();
        if self.word.load(Ordering::Acquire) != word {
            return;
        }
        if let (Some(rate), Some(w)) = (self.settings.rate.as_ref(), inner.window.as_mut()) {
            let n = self.nanos(now);
            w.record(
                n,
                outcome.failed,
                outcome.duration > rate.slow_call_threshold,
            );
            trip = trip || rate.should_trip(w.counts(n));
        }
        if trip {
            let (t, _) = self.transition_locked(&mut inner, OPEN, now);
            drop(inner);
            self.emit(t);
        }
    }

    /// Result of a half-open probe; `outcome` is `None` for a cancelled probe.
    fn on_probe_result(&self, word: u64, outcome: Option<CallOutcome>, now: Instant) {
        let mut inner = self.inner.lock();
        if self.word.load(Ordering::Acquire) != word {
            return; // the half-open epoch this probe belonged to is over
        }
        inner.half_open_in_flight = inner.half_open_in_flight.saturating_sub(1);
        let t = match outcome {
            None => None,
            Some(o) if o.failed => Some(self.transition_locked(&mut inner, OPEN, now).0),
            Some(_) => {
                inner.consecutive_successes += 1;
                (inner.consecutive_successes >= self.settings.success_threshold)
                    .then(|| self.transition_locked(&mut inner, CLOSED, now).0)
            }
        };
        drop(inner);
        if let Some(t) = t {
            self.emit(t);
        }
    }
}

/// Permission to make one call. Record its outcome with [`record`](Self::record); dropping it
/// unrecorded (cancelled call) releases a half-open probe slot without counting anything.
#[must_use = "record the call outcome, or drop the permit if the call was cancelled"]
pub struct Permit {
    shared: Arc<Shared>,
    word: u64,
    probe: bool,
    settled: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.shared.name)
            .field("probe", &self.probe)
            .field("settled", &self.settled)
            .finish()
    }
}

impl Permit {
    #[inline]
    fn new(shared: &Arc<Shared>, word: u64, probe: bool) -> Self {
        Self {
            shared: Arc::clone(shared),
            word,
            probe,
            settled: false,
        }
    }

    /// Whether this permit is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Records the call's outcome.
    #[inline]
    pub fn record(mut self, outcome: CallOutcome, now: Instant) {
        self.settled = true;
        if self.probe {
            self.shared.on_probe_result(self.word, Some(outcome), now);
        } else {
            self.shared.on_closed_result(self.word, outcome, now);
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if self.probe && !self.settled {
            // No outcome: `now` is unused for a cancellation.
            self.shared
                .on_probe_result(self.word, None, self.shared.base);
        }
    }
}

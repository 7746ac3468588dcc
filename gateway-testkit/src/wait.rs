//! Bounded polling: wait until a condition holds, failing the test (a panic naming what was
//! awaited) once a time limit has passed. Every flavour checks the condition first, then the
//! limit, then sleeps [`Wait::every`] (default [`POLL`]) — so a condition that already holds
//! returns at once and a condition is never checked after the limit has passed.
//!
//! ```
//! # async fn t() {
//! use gateway_testkit::wait::{until, Wait};
//! use std::time::Duration;
//! let start = std::time::Instant::now();
//! until("100 ms passed", Duration::from_secs(1), || start.elapsed().as_millis() >= 100).await;
//! // slower polling, an async condition:
//! Wait::new("always", Duration::from_secs(1))
//!     .every(Duration::from_millis(50))
//!     .until_async(|| async { true })
//!     .await;
//! # }
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// The default poll interval.
pub const POLL: Duration = Duration::from_millis(5);

/// A bounded wait: what is awaited (for the panic message), the limit and the poll interval.
#[derive(Debug, Clone)]
pub struct Wait {
    what: String,
    limit: Duration,
    every: Duration,
}

impl Wait {
    /// Waits at most `limit` for `what`, polling every [`POLL`].
    pub fn new(what: impl Into<String>, limit: Duration) -> Self {
        Wait {
            what: what.into(),
            limit,
            every: POLL,
        }
    }

    /// Polls every `interval` instead of [`POLL`] (e.g. when each check sends a request).
    pub fn every(mut self, interval: Duration) -> Self {
        self.every = interval;
        self
    }

    /// Polls `check` until it returns `Ok(v)` and returns `v`; after the limit, panics with the
    /// last `Err` (a description of what was seen).
    pub async fn poll<T, E, F, Fut>(&self, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Debug,
    {
        let deadline = Instant::now() + self.limit;
        loop {
            match check().await {
                Ok(v) => return v,
                Err(last) => self.check_deadline(deadline, &last),
            }
            tokio::time::sleep(self.every).await;
        }
    }

    /// Polls the async `cond` until it is true.
    pub async fn until_async<F, Fut>(&self, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        self.poll(|| {
            let fut = cond();
            async move {
                if fut.await {
                    Ok(())
                } else {
                    Err("false")
                }
            }
        })
        .await
    }

    /// Polls `cond` until it is true (async sleep between checks).
    pub async fn until(&self, mut cond: impl FnMut() -> bool) {
        self.until_async(|| std::future::ready(cond())).await
    }

    /// Polls `check` until it returns `Ok(v)`, sleeping the thread between checks (for tests
    /// without a runtime, e.g. ones driving a child process).
    pub fn poll_blocking<T, E: Debug>(&self, mut check: impl FnMut() -> Result<T, E>) -> T {
        let deadline = Instant::now() + self.limit;
        loop {
            match check() {
                Ok(v) => return v,
                Err(last) => self.check_deadline(deadline, &last),
            }
            std::thread::sleep(self.every);
        }
    }

    /// Polls `cond` until it is true, sleeping the thread between checks.
    pub fn until_blocking(&self, mut cond: impl FnMut() -> bool) {
        self.poll_blocking(|| if cond() { Ok(()) } else { Err("false") })
    }

    fn check_deadline(&self, deadline: Instant, last: &dyn Debug) {
        assert!(
            Instant::now() < deadline,
            "timed out after {:?} waiting for: {}; last seen: {last:?}",
            self.limit,
            self.what
        );
    }
}

/// Polls `cond` every [`POLL`] until it holds; panics naming `what` after `limit`.
pub async fn until(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    Wait::new(what, limit).until(cond).await
}

/// Like [`until`] for an async condition.
pub async fn until_async<F, Fut>(what: &str, limit: Duration, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    Wait::new(what, limit).until_async(cond).await
}

/// Like [`until`], blocking the thread (no async runtime needed).
pub fn until_blocking(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    Wait::new(what, limit).until_blocking(cond)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const LIMIT: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let n = Cell::new(0);
        until("third check", LIMIT, || {
            n.set(n.get() + 1);
            n.get() == 3
        })
        .await;
        assert_eq!(n.get(), 3, "stops checking once true");
    }

    #[tokio::test]
    async fn a_true_condition_is_checked_once_without_sleeping() {
        let n = Cell::new(0);
        let t = Instant::now();
        Wait::new("now", LIMIT)
            .every(Duration::from_secs(5))
            .until_async(|| {
                n.set(n.get() + 1);
                async { true }
            })
            .await;
        assert_eq!(n.get(), 1);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn poll_returns_the_value() {
        let n = Cell::new(0u32);
        let v = Wait::new("n >= 2", LIMIT)
            .poll(|| {
                n.set(n.get() + 1);
                let n = n.get();
                async move {
                    if n >= 2 {
                        Ok(n * 10)
                    } else {
                        Err(n)
                    }
                }
            })
            .await;
        assert_eq!(v, 20);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for: never; last seen: \"still false\"")]
    async fn panics_after_the_limit_with_the_last_value() {
        Wait::new("never", Duration::from_millis(30))
            .poll(|| async { Err::<(), _>("still false") })
            .await;
    }

    #[tokio::test]
    async fn the_limit_bounds_the_wait() {
        let t = Instant::now();
        let r = tokio::spawn(until("never", Duration::from_millis(50), || false)).await;
        assert!(r.is_err_and(|e| e.is_panic()));
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(50), "{took:?}");
    }

    #[test]
    fn blocking_flavours() {
        let n = Cell::new(0);
        until_blocking("second check", LIMIT, || {
            n.set(n.get() + 1);
            n.get() == 2
        });
        assert_eq!(n.get(), 2);
        let v = Wait::new("ok", LIMIT).poll_blocking(|| Ok::<_, ()>(7));
        assert_eq!(v, 7);
        let r = std::panic::catch_unwind(|| {
            until_blocking("never", Duration::from_millis(20), || false)
        });
        assert!(r.is_err());
    }
}

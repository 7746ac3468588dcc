//! Step 6: the upstream's circuit breaker. Closed: a permit for the call. Open: the route's fallback —
//! a configured static response, another upstream — or 503 with `Retry-After`.
use crate::error::GwError;
use crate::plan::FallbackPlan;
use crate::policy::breaker::{CircuitBreaker, Permit};
use std::time::Instant;

/// What to do with the request.
pub enum Breaker<'a> {
    /// Go on to the route's upstream, recording the outcome on the permit (if there is a breaker).
    Proceed(Option<Permit>),
    /// The breaker is open: answer with this configured response (not an error).
    Static(&'a FallbackPlan),
    /// The breaker is open: send the request to this upstream instead.
    Reroute(u32),
}

/// Decides for one request; `Err(503 circuit_open)` when open without a fallback.
pub fn decide<'a>(
    breaker: Option<&CircuitBreaker>,
    fallback: Option<&'a FallbackPlan>,
    upstream: &str,
    now: Instant,
) -> Result<Breaker<'a>, GwError> {
    let Some(b) = breaker else {
        return Ok(Breaker::Proceed(None));
    };
    match b.try_acquire(now) {
        Ok(p) => Ok(Breaker::Proceed(Some(p))),
        Err(rej) => match fallback {
            Some(f @ FallbackPlan::Static { .. }) => Ok(Breaker::Static(f)),
            Some(FallbackPlan::Upstream(u)) => Ok(Breaker::Reroute(*u)),
            None => Err(GwError::circuit_open(upstream, rej.retry_after)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::breaker::{BreakerSettings, ForcedState};
    use std::time::Duration;

    #[test]
    fn open_breaker_uses_the_fallback_or_answers_503() {
        let now = Instant::now();
        let b = CircuitBreaker::new("u", BreakerSettings::default(), now);
        assert!(matches!(
            decide(Some(&b), None, "u", now),
            Ok(Breaker::Proceed(Some(_)))
        ));
        b.force(ForcedState::Open);
        let e = decide(Some(&b), None, "u", now).err().unwrap();
        assert_eq!((e.status, e.code), (503, "circuit_open"));
        assert_eq!(e.headers[0].0, http::header::RETRY_AFTER);
        let f = FallbackPlan::Upstream(3);
        assert!(matches!(
            decide(Some(&b), Some(&f), "u", now),
            Ok(Breaker::Reroute(3))
        ));
        let s = FallbackPlan::Static {
            status: 200,
            headers: vec![],
            body: bytes::Bytes::from_static(b"x"),
        };
        assert!(matches!(
            decide(Some(&b), Some(&s), "u", now),
            Ok(Breaker::Static(_))
        ));
        assert!(matches!(
            decide(None, None, "u", now + Duration::from_secs(1)),
            Ok(Breaker::Proceed(None))
        ));
    }
}

//! The rate-limit response headers, with the parts that never change per request rendered once per limit
//! when the runtime is built: `RateLimit-Policy` (`"<name>";q=<max>;w=<window>`), `X-RateLimit-Limit`
//! and the `"<name>"` prefix of `RateLimit`. Per request only the counts are written (`;r=..;t=..`,
//! `X-RateLimit-Remaining`, `X-RateLimit-Reset`, `Retry-After`). The output is exactly
//! [`header_values`]'s, which stays the reference (and the fallback for a decision this module did not
//! prepare for).
use crate::plan::RateLimitPlan;
use crate::policy::rate_limit::{header_values, render_headers, Decision, HeaderInfo};
use http::HeaderValue;
use std::fmt::Write as _;
use std::sync::Arc;

/// The fixed header texts of one limit.
#[derive(Debug, Clone)]
pub struct LimitTexts {
    name: Arc<str>,
    max: u64,
    window_secs: u64,
    policy: HeaderValue,
    limit: HeaderValue,
    /// `"<name>"` (structured-field string), the start of `RateLimit`.
    rl_prefix: String,
}

impl LimitTexts {
    /// Renders the fixed texts of `p` (with the same renderer as the per-request path).
    pub fn new(p: &RateLimitPlan) -> Option<LimitTexts> {
        let window_secs = (p.window.as_millis() as u64).div_ceil(1000).max(1);
        let d = Decision {
            admitted: true,
            rejected_by: None,
            outcomes: Vec::new(),
            headers: Some(HeaderInfo {
                policy: p.name.clone(),
                limit: p.max,
                window_secs,
                remaining: 0,
                reset_secs: 0,
                retry_after_secs: None,
            }),
            retry_after_secs: None,
        };
        let r = render_headers(&d);
        let get = |n: &str| r.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        let rl = get("RateLimit")?;
        Some(LimitTexts {
            name: p.name.clone(),
            max: p.max,
            window_secs,
            policy: HeaderValue::from_str(get("RateLimit-Policy")?).ok()?,
            limit: HeaderValue::from_str(get("X-RateLimit-Limit")?).ok()?,
            rl_prefix: rl.strip_suffix(";r=0;t=0")?.to_string(),
        })
    }

    fn fits(&self, h: &HeaderInfo) -> bool {
        h.limit == self.max && h.window_secs == self.window_secs && *h.policy == *self.name
    }
}

/// The rate-limit headers for `d`; `texts` are the prepared texts of the limits that were checked.
pub fn render(d: &Decision, texts: &[&LimitTexts]) -> Vec<(&'static str, HeaderValue)> {
    let Some(h) = &d.headers else {
        return header_values(d);
    };
    let Some(t) = texts.iter().find(|t| t.fits(h)) else {
        return header_values(d);
    };
    let mut out = Vec::with_capacity(6);
    let mut rl = String::with_capacity(t.rl_prefix.len() + 24);
    rl.push_str(&t.rl_prefix);
    let _ = write!(rl, ";r={};t={}", h.remaining, h.reset_secs);
    let Ok(rl) = HeaderValue::from_maybe_shared(bytes::Bytes::from(rl)) else {
        return header_values(d);
    };
    out.push(("RateLimit-Policy", t.policy.clone()));
    out.push(("RateLimit", rl));
    out.push(("X-RateLimit-Limit", t.limit.clone()));
    out.push(("X-RateLimit-Remaining", HeaderValue::from(h.remaining)));
    out.push(("X-RateLimit-Reset", HeaderValue::from(h.reset_secs)));
    if !d.admitted {
        if let Some(r) = d.retry_after_secs {
            out.push(("Retry-After", HeaderValue::from(r)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{RateBackend, RateKey, RateMode, RateScope};
    use crate::policy::rate_limit::OnStoreError;
    use std::time::Duration;

    fn plan(name: &str, window: Duration, max: u64) -> RateLimitPlan {
        RateLimitPlan {
            name: Arc::from(name),
            window,
            max,
            key: RateKey::ClientIp,
            scope: RateScope::Global,
            backend: RateBackend::Local,
            mode: RateMode::Enforce,
            on_store_error: OnStoreError::Local,
            headers: true,
        }
    }

    fn decision(name: &str, window_secs: u64, max: u64, admitted: bool) -> Decision {
        Decision {
            admitted,
            rejected_by: if admitted { None } else { Some(0) },
            outcomes: Vec::new(),
            headers: Some(HeaderInfo {
                policy: Arc::from(name),
                limit: max,
                window_secs,
                remaining: if admitted { 41 } else { 0 },
                reset_secs: 17,
                retry_after_secs: if admitted { None } else { Some(9) },
            }),
            retry_after_secs: if admitted { None } else { Some(9) },
        }
    }

    #[test]
    fn same_headers_as_the_reference_renderer() {
        let a = LimitTexts::new(&plan("per-user", Duration::from_secs(60), 100)).unwrap();
        let b = LimitTexts::new(&plan("odd \"name\"\\é", Duration::from_millis(1500), 7)).unwrap();
        for d in [
            decision("per-user", 60, 100, true),
            decision("per-user", 60, 100, false),
            decision("odd \"name\"\\é", 2, 7, true),
            decision("odd \"name\"\\é", 2, 7, false),
            // not prepared for: the reference renderer answers
            decision("other", 60, 100, true),
            decision("per-user", 61, 100, true),
            Decision {
                admitted: false,
                rejected_by: Some(0),
                outcomes: Vec::new(),
                headers: None,
                retry_after_secs: Some(3),
            },
        ] {
            assert_eq!(render(&d, &[&a, &b]), header_values(&d), "{d:?}");
        }
    }
}

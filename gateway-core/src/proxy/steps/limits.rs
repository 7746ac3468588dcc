//! Step 5: the route's rate limits (global, upstream, route), checked together (429). Whatever the
//! outcome, the rate-limit headers to put on the answer.
use crate::error::GwError;
use crate::plan::RoutePlan;
use crate::policy::rate_limit::from_plan::{write_key, KeyFacts};
use crate::policy::rate_limit::{unix_millis_now, LimitRef, Outcome};
use crate::proxy::runtime::Runtime;
use http::HeaderValue;
use smallvec::SmallVec;

/// The result of the limits step.
pub struct Limited {
    /// Rate-limit headers for the answer (with `Retry-After` when rejected).
    pub headers: Vec<(&'static str, HeaderValue)>,
    /// For the access log: `allowed`, `shadow_rejected` or `rejected`; `None` when nothing ran.
    pub decision: Option<&'static str>,
    /// `Err(429)` when an enforcing limit rejected the request.
    pub result: Result<(), GwError>,
}

/// Checks every limit of `route` for the request described by `facts`.
pub async fn check(rt: &Runtime, route: &RoutePlan, facts: &KeyFacts<'_>) -> Limited {
    let mut out = Limited {
        headers: Vec::new(),
        decision: None,
        result: Ok(()),
    };
    let Some(limits) = rt.limits.as_ref().filter(|_| !route.limits.is_empty()) else {
        return out;
    };
    let plan = &rt.plan;
    let mut keys: SmallVec<[Vec<u8>; 4]> = SmallVec::new();
    for l in &route.limits {
        let p = &plan.rate_limits[l.limit as usize];
        let mut k = Vec::with_capacity(48);
        write_key(&p.key, p.scope, facts, &mut k);
        keys.push(k);
    }
    let items: SmallVec<[(LimitRef, &[u8]); 4]> = route
        .limits
        .iter()
        .zip(keys.iter())
        .map(|(l, k)| (limits.refs[l.limit as usize], k.as_slice()))
        .collect();
    let d = limits.limiter.check_all(&items, unix_millis_now()).await;
    for (l, o) in route.limits.iter().zip(d.outcomes.iter()) {
        let m = &rt.limit_metrics[l.limit as usize];
        match o.outcome {
            Outcome::Allowed => m.allowed(),
            Outcome::Rejected => m.rejected(),
            Outcome::ShadowRejected => m.shadow_rejected(),
            Outcome::Skipped => {}
        }
        if let Some(se) = &o.store_error {
            m.store_error(se.action.as_str());
        }
    }
    let texts: SmallVec<[&super::limit_headers::LimitTexts; 4]> = route
        .limits
        .iter()
        .filter_map(|l| rt.limit_texts[l.limit as usize].as_ref())
        .collect();
    out.headers = super::limit_headers::render(&d, &texts);
    if !d.admitted {
        out.decision = Some("rejected");
        let name = d
            .rejected_by
            .and_then(|i| route.limits.get(i))
            .map(|l| plan.rate_limits[l.limit as usize].name.to_string())
            .unwrap_or_default();
        if !out
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        {
            out.headers.push((
                "retry-after",
                HeaderValue::from(d.retry_after_secs.unwrap_or(1).max(1)),
            ));
        }
        out.result = Err(GwError::rate_limited(&name));
        return out;
    }
    let shadow = d
        .outcomes
        .iter()
        .any(|o| o.outcome == Outcome::ShadowRejected);
    out.decision = Some(if shadow { "shadow_rejected" } else { "allowed" });
    out
}

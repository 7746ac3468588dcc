//! The result of one `check_all`: admission, per-limit outcomes for metrics, store-error events,
//! the header info of the most restrictive limit, and rendering of the response headers.

use std::fmt::Write as _;
use std::sync::Arc;

use super::spec::{LimitRef, LimitSpec, Mode, OnStoreError};
use super::window::{ceil_secs, Window};

/// Per-limit verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The request fits (it consumed quota iff the whole request was admitted).
    Allowed,
    /// Over the limit (enforce mode): this limit rejects the request.
    Rejected,
    /// Over the limit in shadow mode: reported only.
    ShadowRejected,
    /// Not evaluated because an earlier Redis group or local limit already rejected the
    /// request (avoids a Redis round trip for a request that is rejected anyway).
    Skipped,
}

/// Why the store could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The round trip exceeded `RedisConfig::timeout`.
    Timeout,
    /// Not connected yet, or skipped during the back-off after a failure.
    Unavailable,
    /// Redis answered with an error or the connection failed.
    Redis,
}

/// A store failure and the `OnStoreError` action that was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreErrorReport {
    pub kind: StoreErrorKind,
    pub action: OnStoreError,
}

/// Quota numbers of one limit for this request (after consumption if admitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStats {
    /// Whole units left.
    pub remaining: u64,
    /// Seconds (rounded up, 1 ..= window) until the current fixed window ends, i.e. until
    /// this window's requests start to decay out of the estimate; 0 when the full quota is
    /// available. Never more than the window; not a promise that a unit is free by then.
    pub reset_secs: u64,
    /// For `Rejected`/`ShadowRejected`: seconds until this request's cost fits (rounded up,
    /// >= 1). If it can never fit (cost > max) the window length is used.
    pub retry_after_secs: Option<u64>,
}

/// One entry per checked `(LimitRef, key)` pair, in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitReport {
    pub limit: LimitRef,
    pub outcome: Outcome,
    pub store_error: Option<StoreErrorReport>,
    /// `None` when no counts are known (skipped, or store error handled by `Allow`).
    pub stats: Option<LimitStats>,
}

/// Header data of the limit chosen for the response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    pub policy: Arc<str>,
    /// Quota (`q`).
    pub limit: u64,
    /// Window in whole seconds, rounded up (`w`).
    pub window_secs: u64,
    /// `r`.
    pub remaining: u64,
    /// `t`: seconds until the current fixed window ends (<= `window_secs`), see
    /// [`LimitStats::reset_secs`].
    pub reset_secs: u64,
    /// Set when this limit rejected the request.
    pub retry_after_secs: Option<u64>,
}

/// Result of `RateLimiter::check_all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    /// Index (into the checked slice) of the enforcing limit that rejected the request; with
    /// several, the one with the longest retry-after.
    pub rejected_by: Option<usize>,
    pub outcomes: Vec<LimitReport>,
    /// Most restrictive limit with `emit_headers`: a rejecting one (longest retry-after) wins,
    /// otherwise the enforcing limit with the smallest `remaining` (first on ties); shadow
    /// limits supply the headers only when no enforcing limit does.
    pub headers: Option<HeaderInfo>,
    /// When rejected: seconds until every rejecting limit would admit the request.
    pub retry_after_secs: Option<u64>,
}

impl Decision {
    /// Whether any limit hit a store error (for a metric).
    pub fn has_store_error(&self) -> bool {
        self.outcomes.iter().any(|o| o.store_error.is_some())
    }
}

/// Raw material collected during evaluation; turned into [`LimitStats`] once the final
/// admission is known (so rolled-back limits do not report consumption).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counts {
    /// Counts before this request.
    Known { win: Window, prev: u64, curr: u64 },
    /// Store failed and the action was `Deny`: report an exhausted quota, retry in 1 s.
    Denied,
    /// No numbers (skipped, or store failed with `Allow`).
    None,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    pub outcome: Outcome,
    pub store_error: Option<StoreErrorReport>,
    pub counts: Counts,
}

impl Pending {
    pub(crate) const SKIPPED: Pending = Pending {
        outcome: Outcome::Skipped,
        store_error: None,
        counts: Counts::None,
    };
}

pub(crate) fn verdict(mode: Mode, fits: bool) -> Outcome {
    match (fits, mode) {
        (true, _) => Outcome::Allowed,
        (false, Mode::Enforce) => Outcome::Rejected,
        (false, Mode::Shadow) => Outcome::ShadowRejected,
    }
}

fn window_secs(spec_window_ms: u64) -> u64 {
    ceil_secs(spec_window_ms).max(1)
}

fn stats(p: &Pending, window_ms: u64, max: u64, cost: u64, admitted: bool) -> Option<LimitStats> {
    match p.counts {
        Counts::None => None,
        Counts::Denied => Some(LimitStats {
            remaining: 0,
            reset_secs: 1,
            retry_after_secs: Some(1),
        }),
        Counts::Known { win, prev, curr } => {
            let consumed = admitted && p.outcome == Outcome::Allowed;
            let curr = if consumed {
                curr.saturating_add(cost)
            } else {
                curr
            };
            let remaining = win.remaining(prev, curr, max);
            // Time until the current fixed window ends: from then on this window's count
            // decays (and the previous window's is gone). 1 ..= w seconds; 0 if full quota.
            let reset_secs = if remaining >= max {
                0
            } else {
                ceil_secs(win.w.saturating_sub(win.e).max(1)).min(window_secs(window_ms))
            };
            let retry_after_secs = match p.outcome {
                Outcome::Rejected | Outcome::ShadowRejected => Some(
                    win.wait_ms(prev, curr, max, cost)
                        .map_or(window_secs(window_ms), ceil_secs)
                        .max(1),
                ),
                _ => None,
            };
            Some(LimitStats {
                remaining,
                reset_secs,
                retry_after_secs,
            })
        }
    }
}

/// Builds the final decision from `(limit, pending)` pairs in request order. `spec_of` gives
/// the spec and window (ms) of a limit; unknown limits are reported as `Skipped`.
pub(crate) fn finish<'a, 'b>(
    entries: impl ExactSizeIterator<Item = (LimitRef, &'b Pending)> + Clone,
    cost: u64,
    spec_of: impl Fn(LimitRef) -> Option<(&'a LimitSpec, u64)>,
) -> Decision {
    let admitted = !entries.clone().any(|(_, p)| p.outcome == Outcome::Rejected);
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut rejected_by: Option<(usize, u64)> = None;
    // (index, tier, retry, remaining) of the header candidate so far; tier 0 = rejecting,
    // 1 = other enforcing limit, 2 = shadow limit (only used when no enforcing one emits).
    let mut best: Option<(usize, u8, u64, u64)> = None;
    for (i, (limit, p)) in entries.enumerate() {
        let Some((spec, window_ms)) = spec_of(limit) else {
            outcomes.push(LimitReport {
                limit,
                outcome: Outcome::Skipped,
                store_error: None,
                stats: None,
            });
            continue;
        };
        let st = stats(p, window_ms, spec.max, cost, admitted);
        let rej = p.outcome == Outcome::Rejected;
        if rej {
            let retry = st.and_then(|s| s.retry_after_secs).unwrap_or(1);
            if rejected_by.is_none_or(|(_, r)| retry > r) {
                rejected_by = Some((i, retry));
            }
        }
        if let (Some(s), true) = (st, spec.emit_headers) {
            let retry = s.retry_after_secs.unwrap_or(0);
            let tier = match (rej, spec.mode) {
                (true, _) => 0,
                (false, Mode::Enforce) => 1,
                (false, Mode::Shadow) => 2,
            };
            let better = match best {
                None => true,
                Some((_, btier, bretry, brem)) => {
                    tier < btier
                        || (tier == btier && tier == 0 && retry > bretry)
                        || (tier == btier && tier > 0 && s.remaining < brem)
                }
            };
            if better {
                best = Some((i, tier, retry, s.remaining));
            }
        }
        outcomes.push(LimitReport {
            limit,
            outcome: p.outcome,
            store_error: p.store_error,
            stats: st,
        });
    }
    let headers = best.and_then(|(i, tier, _, _)| {
        let rej = tier == 0;
        let report = &outcomes[i];
        let (spec, window_ms) = spec_of(report.limit)?;
        let s = report.stats?;
        Some(HeaderInfo {
            policy: spec.name.clone(),
            limit: spec.max,
            window_secs: window_secs(window_ms),
            remaining: s.remaining,
            reset_secs: s.reset_secs,
            retry_after_secs: if rej { s.retry_after_secs } else { None },
        })
    });
    Decision {
        admitted,
        rejected_by: rejected_by.map(|(i, _)| i),
        outcomes,
        headers,
        retry_after_secs: rejected_by.map(|(_, r)| r),
    }
}

/// Appends `name` as an RFC 8941 sf-string (escaping `"` and `\`; non-printable or non-ASCII
/// characters become `_`).
fn push_sf_string(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
}

/// Response headers for a decision, as `(name, value)` pairs:
/// `RateLimit-Policy: "<name>";q=<max>;w=<window_secs>`,
/// `RateLimit: "<name>";r=<remaining>;t=<reset_secs>` (draft-ietf-httpapi-ratelimit-headers),
/// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (seconds), and
/// `Retry-After` (seconds) when the request was rejected.
/// The same headers as [`render_headers`], as ready-to-send header values (what the proxy uses: no
/// intermediate strings for the numeric headers, no copy when inserting).
pub fn header_values(decision: &Decision) -> Vec<(&'static str, http::HeaderValue)> {
    use http::HeaderValue;
    let mut out = Vec::with_capacity(6);
    if let Some(h) = &decision.headers {
        let mut policy = String::with_capacity(h.policy.len() + 40);
        push_sf_string(&mut policy, &h.policy);
        let mut rl = policy.clone();
        let _ = write!(policy, ";q={};w={}", h.limit, h.window_secs);
        let _ = write!(rl, ";r={};t={}", h.remaining, h.reset_secs);
        if let (Ok(p), Ok(r)) = (HeaderValue::try_from(policy), HeaderValue::try_from(rl)) {
            out.push(("RateLimit-Policy", p));
            out.push(("RateLimit", r));
        }
        out.push(("X-RateLimit-Limit", HeaderValue::from(h.limit)));
        out.push(("X-RateLimit-Remaining", HeaderValue::from(h.remaining)));
        out.push(("X-RateLimit-Reset", HeaderValue::from(h.reset_secs)));
    }
    if !decision.admitted {
        if let Some(r) = decision.retry_after_secs {
            out.push(("Retry-After", HeaderValue::from(r)));
        }
    }
    out
}

/// Rate-limit headers as text (see [`header_values`] for the form the proxy sends).
pub fn render_headers(decision: &Decision) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(6);
    if let Some(h) = &decision.headers {
        let mut policy = String::with_capacity(h.policy.len() + 32);
        push_sf_string(&mut policy, &h.policy);
        let mut rl = policy.clone();
        let _ = write!(policy, ";q={};w={}", h.limit, h.window_secs);
        let _ = write!(rl, ";r={};t={}", h.remaining, h.reset_secs);
        out.push(("RateLimit-Policy", policy));
        out.push(("RateLimit", rl));
        out.push(("X-RateLimit-Limit", h.limit.to_string()));
        out.push(("X-RateLimit-Remaining", h.remaining.to_string()));
        out.push(("X-RateLimit-Reset", h.reset_secs.to_string()));
    }
    if !decision.admitted {
        if let Some(r) = decision.retry_after_secs {
            out.push(("Retry-After", r.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sf_string_escapes() {
        let mut s = String::new();
        push_sf_string(&mut s, "a\"b\\c d\u{e9}");
        assert_eq!(s, "\"a\\\"b\\\\c d_\"");
    }

    #[test]
    fn render_rejected() {
        let d = Decision {
            admitted: false,
            rejected_by: Some(0),
            outcomes: Vec::new(),
            headers: Some(HeaderInfo {
                policy: Arc::from("per-min"),
                limit: 100,
                window_secs: 60,
                remaining: 0,
                reset_secs: 7,
                retry_after_secs: Some(7),
            }),
            retry_after_secs: Some(7),
        };
        let h = render_headers(&d);
        assert_eq!(
            h,
            vec![
                ("RateLimit-Policy", "\"per-min\";q=100;w=60".to_owned()),
                ("RateLimit", "\"per-min\";r=0;t=7".to_owned()),
                ("X-RateLimit-Limit", "100".to_owned()),
                ("X-RateLimit-Remaining", "0".to_owned()),
                ("X-RateLimit-Reset", "7".to_owned()),
                ("Retry-After", "7".to_owned()),
            ]
        );
        let ok = Decision {
            admitted: true,
            rejected_by: None,
            retry_after_secs: None,
            ..d
        };
        assert!(render_headers(&ok).iter().all(|(n, _)| *n != "Retry-After"));
    }
}

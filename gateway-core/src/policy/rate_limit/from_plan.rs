//! Glue between the compiled plan and the limiter: one [`LimitSpec`] per `rate_limit` policy (same
//! order, so a plan `LimitId` is a [`LimitRef`] index), and the key a request is counted under.
//!
//! Key layout: `<scope>|<key>` where scope is `g` (global), `u:<upstream>` or `r:<route>` — names, not
//! indices, so gateway instances sharing one Redis agree on keys as long as their names agree.
use super::{
    KeyFallback, KeySpec, LimitRef, LimitSpec, LocalConfig, LocalCounters, RateLimiter,
    RateLimiterConfig, RedisClient, Scope,
};
use crate::plan::Plan;
use crate::policy::auth::Identity;
use http::HeaderMap;
use std::io::Write;
use std::net::IpAddr;

/// The limiter and the plan-id → limiter-ref table.
pub struct Limits {
    pub limiter: RateLimiter,
    pub refs: Vec<LimitRef>,
}

/// The limiter's spec of each of the plan's limits, in plan order.
pub fn specs(plan: &Plan) -> Vec<LimitSpec> {
    plan.rate_limits
        .iter()
        .map(|p| LimitSpec {
            name: p.name.clone(),
            window: p.window,
            max: p.max,
            mode: p.mode,
            emit_headers: p.headers,
            on_store_error: p.on_store_error,
            backend: p.backend,
        })
        .collect()
}

/// Builds the limiter for a plan; `None` when the plan has no rate limits. The plan is already
/// checked (one Redis URL, valid windows), so an error here is a limiter construction failure.
pub fn build(plan: &Plan) -> Result<Option<Limits>, String> {
    build_with(plan, None)
}

/// [`build`] with a shared Redis client (the state registry's, so a rebuilt limiter keeps its
/// connection).
pub fn build_with(plan: &Plan, redis: Option<RedisClient>) -> Result<Option<Limits>, String> {
    build_with_counters(plan, redis, None)
}

/// [`build_with`] with the local counters of each limit (plan order; the state registry's, so that
/// an unchanged limit keeps counting when the limiter is rebuilt).
pub fn build_with_counters(
    plan: &Plan,
    redis: Option<RedisClient>,
    local: Option<Vec<LocalCounters>>,
) -> Result<Option<Limits>, String> {
    if plan.rate_limits.is_empty() {
        return Ok(None);
    }
    let limiter = RateLimiter::with_stores(
        specs(plan),
        RateLimiterConfig {
            local: LocalConfig::default(),
            redis: plan.rate_limit_redis.clone(),
        },
        redis,
        local,
    )
    .map_err(|e| e.to_string())?;
    let refs = plan
        .rate_limits
        .iter()
        .map(|p| {
            limiter
                .limit_ref(&p.name)
                .ok_or_else(|| format!("rate limit {} was not registered", p.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Limits { limiter, refs }))
}

/// What a rate-limit key can be made of.
pub struct KeyFacts<'a> {
    pub client_ip: Option<IpAddr>,
    pub identity: Option<&'a Identity>,
    pub headers: &'a HeaderMap,
    pub route: &'a str,
    pub upstream: &'a str,
}

/// Writes the counter key of one limit for one request into `out`.
pub fn write_key(key: &KeySpec, scope: Scope, facts: &KeyFacts<'_>, out: &mut Vec<u8>) {
    match scope {
        Scope::Global => out.extend_from_slice(b"g|"),
        Scope::Upstream => {
            out.extend_from_slice(b"u:");
            out.extend_from_slice(facts.upstream.as_bytes());
            out.push(b'|');
        }
        Scope::Route => {
            out.extend_from_slice(b"r:");
            out.extend_from_slice(facts.route.as_bytes());
            out.push(b'|');
        }
    }
    write_part(key, facts, out);
}

fn write_ip(facts: &KeyFacts<'_>, out: &mut Vec<u8>) {
    match facts.client_ip {
        Some(ip) => {
            let _ = write!(out, "ip:{ip}");
        }
        None => out.extend_from_slice(b"ip:unknown"),
    }
}

fn fallback(fb: &Option<KeyFallback>, facts: &KeyFacts<'_>, out: &mut Vec<u8>) {
    match fb {
        Some(KeyFallback::ClientIp) => write_ip(facts, out),
        None => out.extend_from_slice(b"anonymous"),
    }
}

fn write_part(key: &KeySpec, facts: &KeyFacts<'_>, out: &mut Vec<u8>) {
    match key {
        KeySpec::ClientIp => write_ip(facts, out),
        KeySpec::JwtClaim {
            claim,
            fallback: fb,
        } => match facts.identity.and_then(|i| i.claim_str_at(claim)) {
            Some(v) => {
                out.extend_from_slice(b"jwt:");
                out.extend_from_slice(v.as_bytes());
            }
            None => fallback(fb, facts, out),
        },
        KeySpec::Header { name, fallback: fb } => match facts.headers.get(name) {
            Some(v) => {
                out.extend_from_slice(b"h:");
                out.extend_from_slice(v.as_bytes());
            }
            None => fallback(fb, facts, out),
        },
        KeySpec::Route => {
            out.extend_from_slice(b"route:");
            out.extend_from_slice(facts.route.as_bytes());
        }
        KeySpec::Composite(parts) => {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    out.push(b'+');
                }
                write_part(p, facts, out);
            }
        }
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn keys_by_scope_and_fallback() {
        let h = HeaderMap::new();
        let facts = KeyFacts {
            client_ip: Some("203.0.113.7".parse().unwrap()),
            identity: None,
            headers: &h,
            route: "login",
            upstream: "users",
        };
        let mut out = Vec::new();
        write_key(&KeySpec::ClientIp, Scope::Route, &facts, &mut out);
        assert_eq!(out, b"r:login|ip:203.0.113.7");
        out.clear();
        let sub = crate::policy::auth::ClaimPath::parse("sub").expect("path");
        let k = KeySpec::JwtClaim {
            claim: sub.clone(),
            fallback: Some(KeyFallback::ClientIp),
        };
        write_key(&k, Scope::Upstream, &facts, &mut out);
        assert_eq!(out, b"u:users|ip:203.0.113.7");
        out.clear();
        let k = KeySpec::JwtClaim {
            claim: sub,
            fallback: None,
        };
        write_key(&k, Scope::Global, &facts, &mut out);
        assert_eq!(out, b"g|anonymous");
    }
}

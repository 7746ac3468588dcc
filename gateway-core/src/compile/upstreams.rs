//! Upstreams: endpoints, discovery, load balancing, health checks, timeouts, retries, breaker, outliers.
use super::policies::{resolve_refs, Policies, PolicyHandle};
use super::{Broken, Cx};
use crate::config::{
    Config, DiscoveryConfig, FallbackConfig, HashKeyConfig, LoadBalancingConfig, TimeoutsConfig,
    UpstreamConfig,
};
use crate::diag::did_you_mean;
use crate::plan::{
    BreakerPlan, BreakerRatePlan, EndpointPlan, FallbackPlan, HashKey, HealthCheckPlan,
    LoadBalancing, OutlierSpec, Timeouts, UpstreamPlan,
};
use crate::policy::breaker::window::MAX_CALLS_WINDOW;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct UpPlan {
    pub plan: UpstreamPlan,
    pub policies: Vec<PolicyHandle>,
}

/// The `Host` of a health probe: the first endpoint's host (`[v6]` kept in brackets), empty without
/// endpoints.
pub(crate) fn probe_host(address: Option<&str>) -> &str {
    address.map_or("", |a| a.rsplit_once(':').map_or(a, |(h, _)| h))
}

/// Checks `host:port` syntax (hosts are resolved at start, never here: `gw validate` stays offline).
pub(crate) fn check_endpoint(cx: &mut Cx, path: &str, a: &str) {
    if let Err((message, hint)) = endpoint_address(a) {
        cx.error(path, message, Some(hint));
    }
}

/// The endpoint address rule of the compiler (also applied by the admin API): `host:port` with a port
/// in 1..=65535 and an IP address or a DNS name as host. `Err`: message and hint.
pub fn endpoint_address(a: &str) -> Result<(), (String, String)> {
    let ok = match a.rsplit_once(':') {
        Some((host, port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            port.parse::<u16>().is_ok_and(|p| p != 0)
                && !host.is_empty()
                && !crate::config::addr::malformed_ipv4(host)
                && (host.parse::<std::net::IpAddr>().is_ok()
                    || host.split('.').all(|l| {
                        !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    }))
        }
        None => false,
    };
    let lookalike = a
        .rsplit_once(':')
        .is_some_and(|(h, _)| crate::config::addr::malformed_ipv4(h));
    if lookalike {
        Err((
            format!("invalid endpoint address \"{a}\": the host looks like an IPv4 address but is not one"),
            "an IPv4 address is four numbers 0-255 without leading zeros, e.g. \"10.0.0.7:8080\"".into(),
        ))
    } else if ok {
        Ok(())
    } else {
        Err((
            format!("invalid endpoint address \"{a}\""),
            "write host:port, e.g. \"127.0.0.1:3001\" or \"users.internal:8080\"".into(),
        ))
    }
}

/// The endpoint weight rule of the compiler (also applied by the admin API): 1..=1000.
pub fn endpoint_weight(w: u32) -> Result<(), String> {
    if w == 0 || w > 1000 {
        Err(format!("weight must be between 1 and 1000, not {w}"))
    } else {
        Ok(())
    }
}

pub(crate) fn timeouts(cx: &mut Cx, path: &str, t: &TimeoutsConfig, inherit: Timeouts) -> Timeouts {
    let mut check = |name: &str, d: Option<crate::config::Dur>| {
        // the path is only formatted for a diagnostic (this runs for every route)
        if d.is_some_and(|d| d.get().is_zero()) {
            cx.error(&format!("{path}.{name}"), "must be greater than zero", None);
        }
    };
    check("connect", t.connect);
    check("read", t.read);
    check("write", t.write);
    check("request", t.request);
    check("idle", t.idle);
    Timeouts {
        connect: t.connect.map_or(inherit.connect, |d| d.get()),
        read: t.read.map_or(inherit.read, |d| d.get()),
        write: t.write.map_or(inherit.write, |d| d.get()),
        request: t.request.map(|d| d.get()).or(inherit.request),
        idle: t.idle.map_or(inherit.idle, |d| d.get()),
    }
}

pub(crate) fn fallback(
    cx: &mut Cx,
    path: &str,
    f: &FallbackConfig,
    index: &HashMap<&str, u32>,
    broken: Broken,
) -> Option<FallbackPlan> {
    match f {
        FallbackConfig::Static {
            status,
            headers,
            body,
        } => {
            if !(200..=599).contains(status) {
                cx.error(
                    &format!("{path}.status"),
                    format!("status {status} is not between 200 and 599"),
                    None,
                );
            }
            let mut hs = Vec::new();
            for (k, v) in headers {
                match (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(v),
                ) {
                    (Ok(k), Ok(v)) => hs.push((k, v)),
                    _ => cx.error(
                        &format!("{path}.headers.{k}"),
                        format!("invalid header \"{k}: {v}\""),
                        None,
                    ),
                }
            }
            Some(FallbackPlan::Static {
                status: *status,
                headers: hs,
                body: bytes::Bytes::from(body.clone()),
            })
        }
        FallbackConfig::Upstream { upstream } => match index.get(upstream.as_str()) {
            Some(&id) => Some(FallbackPlan::Upstream(id)),
            None => {
                if !broken.upstreams {
                    cx.error(
                        &format!("{path}.upstream"),
                        format!("unknown upstream \"{upstream}\""),
                        did_you_mean(upstream, index.keys().copied()),
                    );
                }
                None
            }
        },
    }
}

pub(crate) fn upstreams(
    cfg: &Config,
    index: &HashMap<&str, u32>,
    policy_index: &HashMap<&str, u32>,
    pols: &Policies,
    broken: Broken,
    cx: &mut Cx,
) -> Vec<Option<UpPlan>> {
    let mut out = Vec::new();
    for (i, u) in cfg.upstreams.iter().enumerate() {
        let Some(u) = u else {
            out.push(None);
            continue;
        };
        let base = format!("upstreams[{i}]");
        endpoints(cx, &base, u);
        let discovery = super::discovery::discovery(cx, &base, u.discovery.as_ref());
        check_load_balancing(cx, &base, u);
        let health_check = u
            .health_check
            .as_ref()
            .map(|h| health_check(cx, &base, u, h));
        let t = timeouts(
            cx,
            &format!("{base}.timeouts"),
            &u.timeouts,
            Timeouts::DEFAULT,
        );
        let (retries, retry_idempotent) = retries(cx, &base, u);
        let breaker = u
            .circuit_breaker
            .as_ref()
            .map(|b| breaker(cx, &base, i, b, index, broken));
        let outlier = u.outlier_detection.as_ref().map(|o| outlier(cx, &base, o));
        let policies = resolve_refs(
            cx,
            &format!("{base}.policies"),
            &u.policies,
            policy_index,
            pols,
            broken,
        );
        out.push(Some(UpPlan {
            plan: UpstreamPlan {
                name: Arc::from(u.name.as_str()),
                endpoints: u
                    .endpoints
                    .iter()
                    .map(|e| EndpointPlan {
                        address: e.address.clone(),
                        weight: e.weight,
                    })
                    .collect(),
                discovery,
                load_balancing: load_balancing(&u.load_balancing),
                health_check,
                timeouts: t,
                retries,
                retry_idempotent,
                breaker,
                outlier,
            },
            policies,
        }));
    }
    out
}

/// `endpoints:`: addresses, weights, duplicates; an upstream needs endpoints or discovery.
fn endpoints(cx: &mut Cx, base: &str, u: &UpstreamConfig) {
    let has_discovery = matches!(&u.discovery, Some(d) if *d != DiscoveryConfig::Static {});
    if u.endpoints.is_empty() && !has_discovery {
        cx.error(
            base,
            format!("upstream \"{}\" has no endpoints", u.name),
            Some("list endpoints:, or configure discovery:".into()),
        );
    }
    let mut seen: Vec<&str> = Vec::new();
    for (j, e) in u.endpoints.iter().enumerate() {
        check_endpoint(cx, &format!("{base}.endpoints[{j}].address"), &e.address);
        if let Err(m) = endpoint_weight(e.weight) {
            cx.error(&format!("{base}.endpoints[{j}].weight"), m, None);
        }
        if seen.contains(&e.address.as_str()) {
            cx.error(
                &format!("{base}.endpoints[{j}].address"),
                format!("endpoint {} is listed twice", e.address),
                Some("raise its weight instead".into()),
            );
        }
        seen.push(&e.address);
    }
}

/// `load_balancing:`: the hash key's header name.
fn check_load_balancing(cx: &mut Cx, base: &str, u: &UpstreamConfig) {
    match &u.load_balancing {
        LoadBalancingConfig::ConsistentHash {
            key: HashKeyConfig::Header { name },
        } if http::HeaderName::from_bytes(name.as_bytes()).is_err() => {
            cx.error(
                &format!("{base}.load_balancing.key.name"),
                format!("invalid header name \"{name}\""),
                None,
            );
        }
        _ => {}
    }
}

/// `health_check:`, with the probe's Host (the first endpoint's host).
fn health_check(
    cx: &mut Cx,
    base: &str,
    u: &UpstreamConfig,
    h: &crate::config::HealthCheckConfig,
) -> HealthCheckPlan {
    let hp = format!("{base}.health_check");
    if !h.path.starts_with('/') {
        cx.error(
            &format!("{hp}.path"),
            "the health-check path must start with '/'",
            None,
        );
    }
    cx.positive(&format!("{hp}.interval"), h.interval.get());
    cx.positive(&format!("{hp}.timeout"), h.timeout.get());
    if h.timeout.get() > h.interval.get() {
        cx.warning(
            &format!("{hp}.timeout"),
            "the timeout is longer than the interval",
            None,
        );
    }
    if h.healthy_threshold == 0 {
        cx.error(
            &format!("{hp}.healthy_threshold"),
            "must be at least 1",
            None,
        );
    }
    if h.unhealthy_threshold == 0 {
        cx.error(
            &format!("{hp}.unhealthy_threshold"),
            "must be at least 1",
            None,
        );
    }
    if h.expected_status.is_empty() {
        cx.error(
            &format!("{hp}.expected_status"),
            "list at least one status",
            None,
        );
    }
    for (k, s) in h.expected_status.iter().enumerate() {
        if !(100..=599).contains(s) {
            cx.error(
                &format!("{hp}.expected_status[{k}]"),
                format!("{s} is not an HTTP status"),
                None,
            );
        }
    }
    let host = probe_host(u.endpoints.first().map(|e| e.address.as_str()));
    let host = match http::HeaderValue::from_str(host) {
        Ok(v) => v,
        Err(_) => {
            cx.error(
                &format!("{base}.endpoints[0].address"),
                format!("\"{host}\" cannot be sent as the health check's Host header"),
                Some("use a host name or IP address of visible ASCII characters".into()),
            );
            http::HeaderValue::from_static("invalid")
        }
    };
    HealthCheckPlan {
        path: h.path.clone(),
        host,
        interval: h.interval.get(),
        timeout: h.timeout.get(),
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
        expected_status: h.expected_status.clone(),
    }
}

/// `retries:`: extra attempts after a failed connect, and whether idempotent requests are retried on
/// other errors.
fn retries(cx: &mut Cx, base: &str, u: &UpstreamConfig) -> (u32, bool) {
    match &u.retries {
        Some(r) => {
            if r.attempts > 10 {
                cx.error(
                    &format!("{base}.retries.attempts"),
                    format!("at most 10 retries, not {}", r.attempts),
                    None,
                );
            }
            (r.attempts, r.idempotent_on_error)
        }
        None => (1, false),
    }
}

/// `circuit_breaker:` of upstream `i`; its fallback must not be the upstream itself.
fn breaker(
    cx: &mut Cx,
    base: &str,
    i: usize,
    b: &crate::config::CircuitBreakerConfig,
    index: &HashMap<&str, u32>,
    broken: Broken,
) -> BreakerPlan {
    let bp = format!("{base}.circuit_breaker");
    if b.failure_threshold == 0 {
        cx.error(
            &format!("{bp}.failure_threshold"),
            "must be at least 1",
            None,
        );
    }
    if b.success_threshold == 0 {
        cx.error(
            &format!("{bp}.success_threshold"),
            "must be at least 1",
            None,
        );
    }
    if b.half_open_max_calls == 0 {
        cx.error(
            &format!("{bp}.half_open_max_calls"),
            "must be at least 1",
            None,
        );
    }
    cx.positive(&format!("{bp}.open_duration"), b.open_duration.get());
    let rate = b.rate.as_ref().map(|r| breaker_rate(cx, &bp, r));
    let fo = b.failure_on.as_ref();
    let statuses = fo
        .and_then(|f| f.statuses.clone())
        .unwrap_or_else(|| vec![500, 502, 503, 504]);
    for (k, s) in statuses.iter().enumerate() {
        if !(500..=599).contains(s) {
            cx.error(
                &format!("{bp}.failure_on.statuses[{k}]"),
                format!("{s} cannot count as an upstream failure; only 5xx statuses can"),
                Some("a 4xx is the client's fault and never trips a breaker".into()),
            );
        }
    }
    let fb = b
        .fallback
        .as_ref()
        .and_then(|f| fallback(cx, &format!("{bp}.fallback"), f, index, broken));
    if let Some(FallbackPlan::Upstream(f)) = fb {
        if f as usize == i {
            cx.error(
                &format!("{bp}.fallback.upstream"),
                "an upstream cannot be its own fallback",
                None,
            );
        }
    }
    BreakerPlan {
        failure_threshold: b.failure_threshold,
        success_threshold: b.success_threshold,
        open_duration: b.open_duration.get(),
        half_open_max_calls: b.half_open_max_calls,
        rate,
        failure_connect: fo.is_none_or(|f| f.connect_error),
        failure_timeout: fo.is_none_or(|f| f.timeout),
        failure_statuses: statuses,
        fallback: fb,
    }
}

/// `circuit_breaker.rate:`: the rate trip.
fn breaker_rate(cx: &mut Cx, bp: &str, r: &crate::config::BreakerRateConfig) -> BreakerRatePlan {
    let rp = format!("{bp}.rate");
    match (r.calls, r.period) {
        (Some(_), Some(_)) | (None, None) => cx.error(
            &rp,
            "the rate window needs exactly one of calls or period",
            Some("calls: 100 (the last 100 calls) or period: 30s".into()),
        ),
        (Some(0), _) => cx.error(&format!("{rp}.calls"), "must be at least 1", None),
        (Some(n), _) if n > MAX_CALLS_WINDOW => cx.error(
            &format!("{rp}.calls"),
            format!("a window of {n} calls is too large (at most {MAX_CALLS_WINDOW})"),
            Some("use period: for long windows".into()),
        ),
        (_, Some(p)) if p.get().is_zero() => {
            cx.error(&format!("{rp}.period"), "must be greater than zero", None)
        }
        _ => {}
    }
    if r.min_calls == 0 {
        cx.error(&format!("{rp}.min_calls"), "must be at least 1", None);
    }
    for (name, v) in [
        ("failure_rate_percent", r.failure_rate_percent),
        ("slow_call_rate_percent", r.slow_call_rate_percent),
    ] {
        if let Some(v) = v {
            if !(v > 0.0 && v <= 100.0) {
                cx.error(
                    &format!("{rp}.{name}"),
                    format!("{v} is not a percentage in (0, 100]"),
                    None,
                );
            }
        }
    }
    if r.failure_rate_percent.is_none() && r.slow_call_rate_percent.is_none() {
        cx.error(
            &rp,
            "set failure_rate_percent, slow_call_rate_percent or both",
            None,
        );
    }
    if r.slow_call_rate_percent.is_some() && r.slow_call_threshold.is_none() {
        cx.error(
            &rp,
            "slow_call_rate_percent needs slow_call_threshold",
            Some("e.g. slow_call_threshold: 2s".into()),
        );
    }
    BreakerRatePlan {
        calls: r.calls,
        period: r.period.map(|p| p.get()),
        min_calls: r.min_calls,
        failure_rate_percent: r.failure_rate_percent,
        slow_call_rate_percent: r.slow_call_rate_percent,
        slow_call_threshold: r.slow_call_threshold.map_or(Duration::MAX, |d| d.get()),
    }
}

/// `outlier_detection:` with defaults applied (max ejection: 10 × base).
fn outlier(cx: &mut Cx, base: &str, o: &crate::config::OutlierConfig) -> OutlierSpec {
    let op = format!("{base}.outlier_detection");
    if o.consecutive_failures == 0 {
        cx.error(
            &format!("{op}.consecutive_failures"),
            "must be at least 1",
            None,
        );
    }
    cx.positive(&format!("{op}.base_ejection"), o.base_ejection.get());
    if o.max_ejected_percent == 0 || o.max_ejected_percent > 100 {
        cx.error(
            &format!("{op}.max_ejected_percent"),
            "must be between 1 and 100",
            None,
        );
    }
    OutlierSpec {
        consecutive_failures: o.consecutive_failures,
        base_ejection: o.base_ejection.get(),
        max_ejection: o
            .max_ejection
            .map_or(o.base_ejection.get().saturating_mul(10), |d| d.get()),
        max_ejected_percent: o.max_ejected_percent,
    }
}

/// The runtime form of a checked `load_balancing:` (header names parsed).
fn load_balancing(lb: &LoadBalancingConfig) -> LoadBalancing {
    match lb {
        LoadBalancingConfig::RoundRobin {} => LoadBalancing::RoundRobin,
        LoadBalancingConfig::Random {} => LoadBalancing::Random,
        LoadBalancingConfig::LeastConnections {} => LoadBalancing::LeastConnections,
        LoadBalancingConfig::Fastest {} => LoadBalancing::Fastest,
        LoadBalancingConfig::ConsistentHash { key } => LoadBalancing::ConsistentHash(match key {
            HashKeyConfig::ClientIp {} => HashKey::ClientIp,
            HashKeyConfig::Path {} => HashKey::Path,
            // checked above; an upstream with a bad name never reaches the plan
            HashKeyConfig::Header { name } => HashKey::Header(
                http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap_or(http::HeaderName::from_static("x-invalid")),
            ),
        }),
    }
}

//! Deleting the series of what a new runtime no longer has.
//!
//! A reload, a deregistration or a discovery update can remove routes, upstreams, endpoints and
//! policies. Their series would otherwise stay until restart: exported with their last values
//! (a stale `gw_breaker_state 2` or `gw_endpoint_healthy 1` for something that is gone), and
//! growing without bound when names or addresses churn. After each install the engine hands the
//! new runtime's owners to [`Metrics::retain_series`], which deletes every series whose owner is
//! not among them. A handle of the old runtime that records after that (a request still in flight)
//! writes to a child no longer exported; it does not bring the series back. A removed owner that
//! comes back starts new series (counters from 0, which Prometheus reads as a counter reset).
//!
//! Process-wide series (connections, in-flight requests, reloads, the access log) have no owner
//! and are never deleted.

use std::collections::{HashMap, HashSet};

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};

use super::{EndpointSeries, Metrics, UpstreamErrorKind, UNROUTED};

/// The owners of series that the installed runtime uses, named by the labels that carry them.
#[derive(Debug, Default)]
pub struct LiveSeries<'a> {
    /// `(route, upstream)` of every route: `gw_requests_total`, `gw_request_duration_seconds` and,
    /// by route name, `gw_auth_failures_total`. The unrouted pair (`""`, `""`) is always kept.
    pub routes: Vec<(&'a str, &'a str)>,
    /// Rate-limit policy names: `gw_ratelimit_decisions_total`, `gw_ratelimit_store_errors_total`.
    pub policies: Vec<&'a str>,
    /// Upstreams with a circuit breaker: `gw_breaker_state`, `gw_breaker_transitions_total`,
    /// `gw_breaker_rejected_total`.
    pub breakers: Vec<&'a str>,
    /// Every upstream with its discovery source (`consul`, `dns`, `file`) if it has one:
    /// `gw_upstream_endpoints` (`static` and `admin` kept for every upstream, a discovery source
    /// only while the upstream uses it), `gw_discovery_updates_total`,
    /// `gw_discovery_last_success_timestamp_seconds`.
    pub upstreams: Vec<(&'a str, Option<&'a str>)>,
    /// `(upstream, endpoint)` of every endpoint: `gw_upstream_duration_seconds`,
    /// `gw_upstream_errors_total`, `gw_endpoint_healthy`.
    pub endpoints: Vec<(&'a str, &'a str)>,
}

/// The label values of one series, by label name (`""` for a label it does not have).
struct Labels<'m>(Vec<(&'m str, &'m str)>);

impl Labels<'_> {
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v)
    }
}

/// Deletes every series of `vec` for which `keep` is false. O(series of the family); runs once
/// per install, never on the request path.
fn retain_where<T: MetricVecBuilder>(vec: &MetricVec<T>, keep: impl Fn(&Labels<'_>) -> bool) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels = Labels(
                metric
                    .get_label()
                    .iter()
                    .map(|p| (p.name(), p.value()))
                    .collect(),
            );
            if !keep(&labels) {
                let by_name: HashMap<&str, &str> = labels.0.iter().copied().collect();
                let _ = vec.remove(&by_name);
            }
        }
    }
}

impl Metrics {
    /// Deletes the series of every route, policy, breaker, upstream source and endpoint that `live`
    /// (the runtime just installed) no longer has; see the module docs. Call it after the install,
    /// never while another runtime is being built (series its new owners just made would go).
    pub fn retain_series(&self, live: &LiveSeries<'_>) {
        self.retain_endpoints(live.endpoints.iter().copied());
        let routes: HashSet<(&str, &str)> = live.routes.iter().copied().collect();
        let route_names: HashSet<&str> = live.routes.iter().map(|r| r.0).collect();
        let policies: HashSet<&str> = live.policies.iter().copied().collect();
        let breakers: HashSet<&str> = live.breakers.iter().copied().collect();
        let upstreams: HashMap<&str, Option<&str>> = live.upstreams.iter().copied().collect();
        let f = &self.f;

        let route = |l: &Labels<'_>| {
            let pair = (l.get("route"), l.get("upstream"));
            pair == (UNROUTED, UNROUTED) || routes.contains(&pair)
        };
        retain_where(&f.requests_total, route);
        retain_where(&f.request_duration, route);
        retain_where(&f.auth_failures, |l| route_names.contains(l.get("route")));

        let policy = |l: &Labels<'_>| policies.contains(l.get("policy"));
        retain_where(&f.ratelimit_decisions, policy);
        retain_where(&f.ratelimit_store_errors, policy);

        let breaker = |l: &Labels<'_>| breakers.contains(l.get("upstream"));
        retain_where(&f.breaker_state, breaker);
        retain_where(&f.breaker_transitions, breaker);
        retain_where(&f.breaker_rejected, breaker);

        let discovered = |l: &Labels<'_>| upstreams.get(l.get("upstream")).copied().flatten();
        retain_where(&f.discovery.endpoints, |l| {
            upstreams.contains_key(l.get("upstream"))
                && match l.get("source") {
                    "static" | "admin" => true,
                    source => discovered(l) == Some(source),
                }
        });
        retain_where(&f.discovery.updates, |l| {
            discovered(l) == Some(l.get("source"))
        });
        retain_where(&f.discovery.last_success, |l| discovered(l).is_some());
    }

    /// Deletes the series (`gw_upstream_duration_seconds`, `gw_upstream_errors_total`,
    /// `gw_endpoint_healthy`) of every endpoint not in `live` (`(upstream, endpoint)` pairs): those
    /// that discovery, a deregistration or a reload removed. A removed endpoint that comes back
    /// starts new series (counters from 0, which Prometheus reads as a reset). Call it with the
    /// endpoints of the runtime just installed, never while another runtime is being built (its
    /// new endpoints would lose their series).
    pub fn retain_endpoints<'a>(&self, live: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut keep = EndpointSeries::new();
        for (u, e) in live {
            keep.entry(u.to_owned()).or_default().insert(e.to_owned());
        }
        let mut known = self.endpoints.lock();
        let f = &self.f;
        for (u, eps) in known.iter() {
            for e in eps {
                if keep.get(u).is_some_and(|k| k.contains(e)) {
                    continue;
                }
                let _ = f.upstream_duration.remove_label_values(&[u, e]);
                for k in UpstreamErrorKind::ALL {
                    let _ = f.upstream_errors.remove_label_values(&[u, e, k.as_str()]);
                }
                let _ = f.endpoint_healthy.remove_label_values(&[u, e]);
            }
        }
        known.retain(|u, eps| {
            eps.retain(|e| keep.get(u).is_some_and(|k| k.contains(e)));
            !eps.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::HttpMethod;
    use std::time::{Duration, SystemTime};

    /// `(family, labels)` of every sample line whose labels contain `label="value"`.
    fn series_with(m: &Metrics, label: &str, value: &str) -> Vec<String> {
        let needle = format!("{label}=\"{value}\"");
        m.render()
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(&needle))
            .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_owned())
            .collect()
    }

    fn live<'a>(
        routes: &[(&'a str, &'a str)],
        policies: &[&'a str],
        breakers: &[&'a str],
        upstreams: &[(&'a str, Option<&'a str>)],
    ) -> LiveSeries<'a> {
        LiveSeries {
            routes: routes.to_vec(),
            policies: policies.to_vec(),
            breakers: breakers.to_vec(),
            upstreams: upstreams.to_vec(),
            endpoints: Vec::new(),
        }
    }

    /// Makes every kind of owned series for route `r` → upstream `u`, policy `p`.
    fn record(m: &Metrics, r: &str, u: &str, p: &str, source: &str) {
        m.route(r, u)
            .record(HttpMethod::Get, 200, Duration::from_millis(3));
        m.auth(r).failure("expired");
        let l = m.ratelimit_policy(p);
        l.allowed();
        l.store_error("fail_open");
        m.breaker(u).rejected();
        m.upstream_endpoints(u, "static").set(1);
        m.discovery(u, source).success(SystemTime::now(), 2);
    }

    #[test]
    fn series_of_removed_owners_go_and_the_rest_stay() {
        let m = Metrics::new().unwrap();
        record(&m, "a", "ua", "pa", "dns");
        record(&m, "b", "ub", "pb", "consul");
        m.unrouted()
            .record(HttpMethod::Get, 404, Duration::from_millis(1));
        let before_a =
            series_with(&m, "route", "a").len() + series_with(&m, "upstream", "ua").len();
        // a reload that removes route b, upstream ub and policy pb
        m.retain_series(&live(
            &[("a", "ua")],
            &["pa"],
            &["ua"],
            &[("ua", Some("dns"))],
        ));
        for (label, value) in [("route", "b"), ("upstream", "ub"), ("policy", "pb")] {
            assert_eq!(
                series_with(&m, label, value),
                Vec::<String>::new(),
                "{label}={value}"
            );
        }
        let after_a = series_with(&m, "route", "a").len() + series_with(&m, "upstream", "ua").len();
        assert_eq!(after_a, before_a, "the live owners keep every series");
        assert!(!series_with(&m, "policy", "pa").is_empty());
        assert!(
            m.render()
                .contains(r#"gw_requests_total{method="GET",route="",status="404",upstream=""} 1"#),
            "unrouted requests are always kept"
        );
    }

    #[test]
    fn a_changed_owner_keeps_only_what_it_still_has() {
        let m = Metrics::new().unwrap();
        record(&m, "a", "ua", "pa", "dns");
        m.upstream_endpoints("ua", "admin").set(1);
        // route a now goes to upstream ux; ua stays without breaker and moves from dns to file
        m.retain_series(&live(
            &[("a", "ux")],
            &["pa"],
            &[],
            &[("ua", Some("file")), ("ux", None)],
        ));
        let text = m.render();
        assert!(!text.contains(r#"route="a",status="200",upstream="ua""#));
        assert!(!text.contains(r#"gw_request_duration_seconds_count{route="a",upstream="ua"}"#));
        assert!(
            text.contains(r#"gw_auth_failures_total{reason="expired",route="a"} 1"#),
            "same route name"
        );
        assert!(!text.contains("gw_breaker_"), "ua has no breaker any more");
        assert!(text.contains(r#"gw_upstream_endpoints{source="static",upstream="ua"} 1"#));
        assert!(text.contains(r#"gw_upstream_endpoints{source="admin",upstream="ua"} 1"#));
        assert!(
            !text.contains(r#"source="dns""#),
            "the old discovery source's series go"
        );
        assert!(
            text.contains(r#"gw_discovery_last_success_timestamp_seconds{upstream="ua"}"#),
            "per upstream, and ua still has a discovery source"
        );
        // a handle of the old runtime recording late does not bring a series back
        m.breaker("ua");
        let old = m.ratelimit_policy("gone");
        m.retain_series(&live(&[("a", "ux")], &["pa"], &[], &[("ua", Some("file"))]));
        old.allowed();
        assert!(series_with(&m, "policy", "gone").is_empty());
    }
}

//! Helpers shared by the discovery source suites (`discovery_consul.rs`, `discovery_dns.rs`,
//! `discovery_file.rs`).
#![allow(dead_code)]
use gateway_core::discovery::{DiscoveredEndpoint, EndpointSet};
use gateway_core::observability::Metrics;
use gateway_testkit::prom::Scrape;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// An endpoint from `ip:port` and a weight.
pub fn ep(a: &str, w: u32) -> DiscoveredEndpoint {
    DiscoveredEndpoint::new(a.parse().unwrap(), w)
}

/// Waits (bounded) until the published set is `want`; returns how long it took.
pub async fn until_set(
    rx: &mut watch::Receiver<Option<EndpointSet>>,
    want: &[DiscoveredEndpoint],
    within: Duration,
) -> Duration {
    let t = Instant::now();
    let ok = tokio::time::timeout(within, rx.wait_for(|s| s.as_deref() == Some(want)))
        .await
        .is_ok();
    assert!(
        ok,
        "set is {:?}, wanted {want:?} within {within:?}",
        rx.borrow().as_deref()
    );
    t.elapsed()
}

/// `gw_discovery_updates_total{upstream, source, result}` (0 when the series does not exist yet).
pub fn updates(m: &Metrics, upstream: &str, source: &str, result: &str) -> u64 {
    Scrape::parse(&m.render())
        .get(
            "gw_discovery_updates_total",
            &[
                ("result", result),
                ("source", source),
                ("upstream", upstream),
            ],
        )
        .unwrap_or(0.0) as u64
}

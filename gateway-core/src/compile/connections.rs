//! Connection caps (`server.downstream.max_connections`, `max_connections_per_ip`): bounded, located errors.
use super::Cx;
use crate::config::DownstreamConfig;
use crate::plan::ConnectionLimits;

/// Highest accepted cap: far above what one process can hold open (file descriptors), low enough that
/// a typo is caught.
const MAX_CAP: u64 = 10_000_000;

pub(crate) fn limits(d: &DownstreamConfig, cx: &mut Cx) -> ConnectionLimits {
    let mut check = |field: &str, v: u64| {
        if v == 0 || v > MAX_CAP {
            cx.error(
                &format!("server.downstream.{field}"),
                format!("{field} must be between 1 and {MAX_CAP}, not {v}"),
                None,
            );
        }
    };
    check("max_connections", d.max_connections);
    if let Some(p) = d.max_connections_per_ip {
        check("max_connections_per_ip", p);
    }
    ConnectionLimits {
        max: d.max_connections.clamp(1, MAX_CAP) as usize,
        per_ip: d
            .max_connections_per_ip
            .map(|p| p.clamp(1, MAX_CAP) as usize),
    }
}

//! Active health checks: Pingora's `HttpHealthCheck`, configured from the plan (path, timeout,
//! thresholds, expected statuses), with a callback that reports health flips.
use crate::plan::HealthCheckPlan;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::health_check::{HealthObserve, HealthObserveCallback, HttpHealthCheck};
use pingora::lb::Backend;
use std::sync::Arc;

/// Called when an endpoint flips between healthy and unhealthy.
pub type HealthHook = Arc<dyn Fn(std::net::SocketAddr, bool) + Send + Sync>;

struct Observer(HealthHook);

#[async_trait::async_trait]
impl HealthObserve for Observer {
    async fn observe(&self, target: &Backend, healthy: bool) {
        if let Some(a) = target.addr.as_inet() {
            (self.0)(*a, healthy);
        }
    }
}

/// Builds the health check for one upstream; `plan.host` is sent as the Host header (the compiler
/// checked it is a valid header value, so nothing is dropped here).
pub fn http_check(plan: &HealthCheckPlan, hook: HealthHook) -> Box<HttpHealthCheck> {
    let host = plan.host.to_str().unwrap_or_default();
    let mut hc = HttpHealthCheck::new(host, false);
    hc.consecutive_success = plan.healthy_threshold.max(1) as usize;
    hc.consecutive_failure = plan.unhealthy_threshold.max(1) as usize;
    hc.peer_template.options.connection_timeout = Some(plan.timeout);
    hc.peer_template.options.read_timeout = Some(plan.timeout);
    hc.peer_template.options.total_connection_timeout = Some(plan.timeout);
    if let Ok(mut req) = RequestHeader::build("GET", plan.path.as_bytes(), None) {
        let _ = req.insert_header(http::header::HOST, plan.host.clone());
        let _ = req.insert_header("User-Agent", "gw-health-check");
        hc.req = req;
    }
    let expected = plan.expected_status.clone();
    hc.validator = Some(Box::new(move |resp: &ResponseHeader| {
        if expected.contains(&resp.status.as_u16()) {
            Ok(())
        } else {
            pingora::Error::e_explain(
                pingora::ErrorType::Custom("unexpected health status"),
                format!("status {}", resp.status),
            )
        }
    }));
    let cb: HealthObserveCallback = Box::new(Observer(hook));
    hc.health_changed_callback = Some(cb);
    Box::new(hc)
}

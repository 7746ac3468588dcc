//! gw's policies inside your own Pingora service (docs/embedding.md, "Policies in your own
//! ProxyHttp"). `Shop` is a `ProxyHttp` with its own routing (`/orders…` → the orders backend,
//! `/inventory…` → the inventory backend, `/metrics` and anything else answered by itself) that calls
//! gw's JWT verification, per-user rate limit and circuit breakers, configured in YAML.
//!
//! ```text
//! JWT_SECRET='a-secret-of-at-least-32-bytes-long!' ORDERS_ADDR=127.0.0.1:3001 \
//! INVENTORY_ADDR=127.0.0.1:3002 cargo run --example embed_policies -- 127.0.0.1:8080
//! curl -i localhost:8080/orders/1                          # 401 missing_token
//! curl -i -H "Authorization: Bearer $TOKEN" localhost:8080/orders/1   # 200, the 6th in a minute: 429
//! curl -s localhost:8080/metrics | grep gw_
//! ```
//!
//! `tests/embed_examples.rs` runs `Shop` against real upstreams.
use async_trait::async_trait;
use bytes::Bytes;
use gateway_core::policies::{Decision, Guard, Outcome, Pass, Policies};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The policies, in the gw configuration language. Each route is a guard the service calls by
/// name; its `match` is not used (the service routes itself).
pub const POLICIES: &str = r#"
upstreams:
  - name: orders
    endpoints: [{ address: "${ORDERS_ADDR}" }]
    circuit_breaker: { failure_threshold: 3, success_threshold: 1, open_duration: 30s }
  - name: inventory
    endpoints: [{ address: "${INVENTORY_ADDR}" }]
    circuit_breaker: { failure_threshold: 2, success_threshold: 1, open_duration: 30s }

routes:
  - { name: orders, match: { prefix: /orders }, upstream: orders, policies: [user-jwt, per-user] }
  - { name: inventory, match: { prefix: /inventory }, upstream: inventory, policies: [user-jwt] }

policies:
  - name: user-jwt
    type: jwt
    keys: { type: hmac, secret: "${JWT_SECRET}", algorithms: [HS256] }
    forward: [{ claim: sub, header: X-User-Id }]
  - name: per-user                  # 5 requests per minute per user
    type: rate_limit
    window: 1m
    max: 5
    key: { type: jwt_claim, claim: sub }
"#;

/// The service: its own path routing and backend table, gw's guards.
pub struct Shop {
    /// gw's guards (clone it to reload with `Policies::swap` or to read the metrics).
    pub policies: Policies,
    /// Path prefix → guard, checked in order.
    routes: Vec<(&'static str, Guard)>,
    /// Upstream name → address: the service's own backend registry.
    backends: HashMap<String, SocketAddr>,
}

/// Per request: the guard's pass, and what the upstream did.
#[derive(Default)]
pub struct ShopCtx {
    pass: Option<Pass>,
    sent: Option<Instant>,
    outcome: Option<Outcome>,
}

impl Shop {
    /// Compiles [`POLICIES`] (`${VAR}` from `env`) and maps `/orders` and `/inventory` to their guards;
    /// the backends' addresses come from `env` too. `Err`: the rendered diagnostics or start error.
    pub fn new(env: &dyn Fn(&str) -> Option<String>) -> std::result::Result<Shop, String> {
        let policies =
            Policies::from_yaml("embed_policies.yaml", POLICIES, env).map_err(|e| match e {
                gateway_core::policies::BuildError::Invalid(d) => {
                    d.iter().map(|d| d.render(POLICIES)).collect()
                }
                e => e.to_string(),
            })?;
        let mut routes = Vec::new();
        for (prefix, name) in [("/orders", "orders"), ("/inventory", "inventory")] {
            let guard = policies.guard(name).ok_or(format!("no guard {name}"))?;
            routes.push((prefix, guard));
        }
        let mut backends = HashMap::new();
        for (name, var) in [("orders", "ORDERS_ADDR"), ("inventory", "INVENTORY_ADDR")] {
            let addr = env(var).ok_or(format!("{var} is not set"))?;
            let addr = addr.parse().map_err(|e| format!("{var}={addr}: {e}"))?;
            backends.insert(name.to_string(), addr);
        }
        Ok(Shop {
            policies,
            routes,
            backends,
        })
    }

    fn guard_for(&self, path: &str) -> Option<&Guard> {
        self.routes
            .iter()
            .find(|(p, _)| path.starts_with(p))
            .map(|(_, g)| g)
    }

    /// The service's own answers: `/metrics` (gw's metrics, here public for the demo), else 404.
    async fn answer_locally(&self, session: &mut Session) -> Result<bool> {
        if session.req_header().uri.path() != "/metrics" {
            session.respond_error(404).await?;
            return Ok(true);
        }
        let body = Bytes::from(self.policies.render_metrics());
        let mut head = ResponseHeader::build(200, Some(2))?;
        head.insert_header("content-type", "text/plain; version=0.0.4")?;
        head.insert_header("content-length", body.len())?;
        session.write_response_header(Box::new(head), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for Shop {
    type CTX = ShopCtx;

    fn new_ctx(&self) -> ShopCtx {
        ShopCtx::default()
    }

    /// Own routing, then the guard: answer its response, or keep the pass.
    async fn request_filter(&self, session: &mut Session, ctx: &mut ShopCtx) -> Result<bool> {
        let Some(guard) = self.guard_for(session.req_header().uri.path()) else {
            return self.answer_locally(session).await;
        };
        match self.policies.check(guard, session).await {
            Decision::Allow(pass) => {
                ctx.pass = Some(pass);
                Ok(false)
            }
            Decision::Respond(resp) => {
                resp.write(session).await?;
                Ok(true)
            }
        }
    }

    /// The backend of the upstream the pass names (a breaker fallback upstream could differ).
    async fn upstream_peer(&self, _s: &mut Session, ctx: &mut ShopCtx) -> Result<Box<HttpPeer>> {
        let addr = ctx
            .pass
            .as_ref()
            .and_then(|p| self.backends.get(p.upstream()))
            .ok_or_else(|| pingora::Error::new_str("no backend"))?;
        ctx.sent = Some(Instant::now());
        let mut peer = HttpPeer::new(*addr, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(1));
        Ok(Box::new(peer))
    }

    /// The verified claims go upstream (client-sent copies are removed).
    async fn upstream_request_filter(
        &self,
        _s: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut ShopCtx,
    ) -> Result<()> {
        match &ctx.pass {
            Some(p) => p.apply_upstream(req),
            None => Ok(()),
        }
    }

    /// The upstream's status for the breaker; the rate-limit headers for the client.
    async fn response_filter(
        &self,
        _s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut ShopCtx,
    ) -> Result<()> {
        ctx.outcome = Some(Outcome::Status(resp.status.as_u16()));
        match &ctx.pass {
            Some(p) => p.apply_downstream(resp),
            None => Ok(()),
        }
    }

    /// The upstream failed: gw's answer (502 / 504 JSON error) and the outcome for the breaker.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut ShopCtx,
    ) -> FailToProxy {
        let code = match &ctx.pass {
            Some(p) => {
                ctx.outcome = Outcome::from_error(e).or(ctx.outcome);
                let resp = p.error_response(e);
                let code = resp.status();
                if session.response_written().is_none() && resp.write(session).await.is_err() {
                    log_error("could not send the error response");
                }
                code
            }
            None => 502,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Every request ends here: the pass reports the outcome (breaker, metrics).
    async fn logging(&self, _s: &mut Session, _e: Option<&pingora::Error>, ctx: &mut ShopCtx) {
        if let Some(pass) = ctx.pass.take() {
            let latency = ctx.sent.map(|t| t.elapsed()).unwrap_or_default();
            pass.report(ctx.outcome.unwrap_or(Outcome::Aborted), latency);
        }
    }
}

fn log_error(msg: &str) {
    eprintln!("embed_policies: {msg}");
}

/// Starts the JWKS fetches / Redis connection of the policies (none in this configuration, but a
/// real service calls it) inside Pingora's runtime.
struct WarmUp(Policies);

#[async_trait]
impl pingora::services::background::BackgroundService for WarmUp {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        self.0.warm_up().await;
    }
}

#[allow(dead_code)] // the tests include this file for `Shop`
fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let shop = Shop::new(&|k| std::env::var(k).ok())?;
    let policies = shop.policies.clone();
    let mut server = pingora::server::Server::new(None)?;
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, shop);
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.add_service(pingora::services::background::background_service(
        "policies-warm-up",
        WarmUp(policies),
    ));
    println!("embed_policies on http://{listen}");
    server.run_forever();
}

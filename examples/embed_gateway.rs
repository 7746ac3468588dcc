//! The low-level way to embed gw (docs/embedding.md, "Low level"): the whole gateway as one
//! `ProxyHttp` (`Gateway`) in your own Pingora `Server`, next to your own services, plus the admin
//! endpoints and the background work `gw serve` would run.
//!
//! ```text
//! cargo run --example embed_gateway -- examples/quickstart.yaml 127.0.0.1:8080 127.0.0.1:9901
//! ```
//!
//! `tests/embed_examples.rs` runs the same pieces against real upstreams.
use async_trait::async_trait;
use gateway_core::plan::Plan;
use gateway_core::proxy::admin::AdminApp;
use gateway_core::proxy::server::build_engine;
use gateway_core::proxy::{Engine, Gateway};
use pingora::apps::http_app::HttpServer;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Reads and compiles a configuration file, prints every diagnostic, `Err` when it has errors.
pub fn load_plan(path: &str) -> Result<Plan, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let compiled = gateway_core::compile(path, &text, &|name| std::env::var(name).ok());
    for d in &compiled.diagnostics {
        eprint!("{}", d.render(&text)); // warnings too
    }
    compiled.plan.ok_or_else(|| format!("{path} has errors"))
}

/// What `serve_blocking` runs in the background: first health checks and key fetches, then
/// readiness, then periodic health checks until shutdown.
pub struct GwBackground(pub Arc<Engine>);

#[async_trait]
impl BackgroundService for GwBackground {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.runtime().warm_up().await;
        self.0.ready.store(true, Ordering::Release);
        self.0.clone().health_loop(shutdown).await; // follows Engine::swap
    }
}

#[allow(dead_code)] // the tests include this file for `load_plan` and `GwBackground`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let config = args.next().unwrap_or_else(|| "gateway.yaml".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let admin_addr = args.next().unwrap_or_else(|| "127.0.0.1:9901".into());
    let plan = load_plan(&config)?;
    let engine = build_engine(plan)?; // resolves endpoints, builds metrics and the access log; binds nothing

    let mut server = Server::new(None)?;
    server.bootstrap();

    // The gateway as one Pingora service among yours. You choose the addresses: the plan's
    // `listeners` and `admin` sections are not used at this level.
    let gateway = Gateway::new(engine.clone());
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, gateway);
    proxy.add_tcp(&listen);
    server.add_service(proxy);

    // Optional: the admin endpoints (/metrics, /healthz, /readyz, /admin/... with a token).
    let admin = AdminApp {
        engine: engine.clone(),
        token: None,
    };
    let mut admin = Service::new("gw-admin".to_string(), HttpServer::new_app(admin));
    admin.add_tcp(&admin_addr);
    server.add_service(admin);

    server.add_service(background_service("gw-background", GwBackground(engine)));
    // server.add_service(my_other_service);

    println!("gateway on http://{listen}, admin on http://{admin_addr}");
    server.run_forever();
}

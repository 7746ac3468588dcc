//! # gw-suite
//!
//! The workspace's root package. It owns the top-level `tests/` (end-to-end suites that run the
//! gateway engine of `gateway-core` in-process in front of the real servers of
//! `gateway-testkit`) and the `examples/`.
//!
//! This library is the one piece those suites share that needs `gateway-core`: turning a YAML
//! snippet into a [`Plan`] and starting the gateway in-process. It lives here rather than in
//! `gateway-testkit` because the testkit must not depend on `gateway-core` (`gateway-core`'s own
//! tests use the testkit). Helpers that need no gateway (upstreams, clients, Prometheus parsing,
//! polling, JWT minting, a JWKS server) are in `gateway-testkit`; helpers only one suite uses stay
//! in that suite's file.
//!
//! ```no_run
//! # async fn t() {
//! let up = gateway_testkit::Upstream::start("a").await;
//! let gw = gw_suite::gateway(
//!     r#"
//! listeners: [{ name: public, address: "127.0.0.1:0" }]
//! upstreams: [{ name: svc, endpoints: [{ address: "{{UP}}" }] }]
//! routes: [{ name: all, match: { prefix: / }, upstream: svc }]
//! "#,
//!     &[("UP", up.addr().to_string())],
//! )
//! .await;
//! let r = gateway_testkit::get(&format!("{}/x", gw.url())).await.unwrap();
//! assert_eq!(r.status, 200);
//! # }
//! ```

use gateway_core::plan::Plan;
use gateway_core::proxy::server::Embedded;

/// Compiles `yaml` (as `test.yaml`, environment lookups from the process); `{{NAME}}` placeholders
/// are replaced from `vars` first. Panics with the rendered diagnostics and the text when it does
/// not compile.
pub fn plan(yaml: &str, vars: &[(&str, String)]) -> Plan {
    let mut text = yaml.to_string();
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    let c = gateway_core::compile("test.yaml", &text, &|k| std::env::var(k).ok());
    match c.plan {
        Some(p) => p,
        None => panic!(
            "test config does not compile:\n{}\n{}",
            c.diagnostics
                .iter()
                .map(|d| d.render(&text))
                .collect::<String>(),
            text
        ),
    }
}

/// Compiles like [`plan`] and starts the gateway in-process (its listeners should use
/// `127.0.0.1:0`); panics if it does not start.
pub async fn gateway(yaml: &str, vars: &[(&str, String)]) -> Embedded {
    Embedded::start(plan(yaml, vars))
        .await
        .unwrap_or_else(|e| panic!("gateway did not start: {e}"))
}

/// A Pingora app served on a free loopback port by [`serve_app`]; dropping it stops accepting.
pub struct ServedApp {
    /// The bound address (`127.0.0.1:<free port>`).
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ServedApp {
    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ServedApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves a Pingora app — e.g. `pingora::proxy::http_proxy(&conf, your_proxy)` or
/// `HttpServer::new_app(..)` — on `127.0.0.1:0` from the current Tokio runtime, one task per
/// connection, with the socket digest Pingora's own listener sets (so `Session::client_addr` works).
/// This is how the tests run the embedding examples' services: Pingora's `Server` cannot bind port 0
/// and report it, and owns the process (signals, exit).
pub async fn serve_app<A: pingora::apps::ServerApp + Send + Sync + 'static>(app: A) -> ServedApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let app = std::sync::Arc::new(app);
    let task = tokio::spawn(async move {
        // never signalled: the connections end with the test's runtime
        let (_keep, shutdown) = tokio::sync::watch::channel(false);
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let (app, shutdown) = (app.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut stream = gateway_core::proxy::server::pingora_stream(tcp, peer);
                while let Some(s) = app.process_new(stream, &shutdown).await {
                    stream = s;
                }
            });
        }
    });
    ServedApp { addr, task }
}

//! The cost floor for bench/compare.sh: the least a path-routing reverse proxy on Pingora does, with
//! nothing of gw in it. `/api/user/*` and `/api/order/*` go to two upstreams each (round robin), the
//! `/api/<svc>` prefix stripped; anything else is a 404. One worker thread, Pingora's no-steal runtime,
//! keep-alive to the upstreams. Env: `ADDR` (default 127.0.0.1:8086), `THREADS` (default 1).
//!
//! `cargo build --release --example pingora-floor` (bench/compare.sh builds it when it is missing).
use async_trait::async_trait;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::sync::Arc;

struct Floor {
    services: [(&'static str, Arc<LoadBalancer<RoundRobin>>); 2],
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, s: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        let path = s.req_header().uri.path();
        let Some((prefix, lb)) = self.services.iter().find(|(p, _)| {
            path.strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
        }) else {
            return Err(Error::explain(HTTPStatus(404), "no route"));
        };
        let rest = s
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |pq| &pq.as_str()[prefix.len()..])
            .to_string();
        let uri = rest
            .parse()
            .map_err(|_| Error::explain(HTTPStatus(400), "bad uri"))?;
        s.req_header_mut().set_uri(uri);
        let backend = lb
            .select(b"", 16)
            .ok_or_else(|| Error::explain(HTTPStatus(503), "no upstream"))?;
        Ok(Box::new(HttpPeer::new(backend.addr, false, String::new())))
    }
}

fn main() {
    let conf = ServerConf {
        threads: std::env::var("THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(1),
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let lb = |a: [&str; 2]| Arc::new(LoadBalancer::try_from_iter(a).expect("static upstreams"));
    let floor = Floor {
        services: [
            ("/api/user", lb(["127.0.0.1:3001", "127.0.0.1:3002"])),
            ("/api/order", lb(["127.0.0.1:4001", "127.0.0.1:4002"])),
        ],
    };
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, floor);
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8086".into());
    proxy.add_tcp(&addr);
    server.add_service(proxy);
    server.run_forever();
}

//! # gateway-testkit
//!
//! Real HTTP/1.1 (and WebSocket) upstream servers plus small clients, for end-to-end tests of the
//! gateway and for the demo. Everything binds loopback; tests use port 0.
//!
//! ```no_run
//! # async fn t() {
//! use gateway_testkit::{get, Mode, Upstream};
//! let up = Upstream::start("a").await;              // 127.0.0.1:0
//! let r = get(&format!("{}/x?y=1", up.url())).await.unwrap();
//! assert_eq!(r.json().unwrap()["path"], "/x");
//! up.set_mode(Mode::Fail(503));                      // switch at runtime
//! assert_eq!(up.hits_for("GET", "/x"), 1);
//! # }
//! ```
//!
//! ## Endpoints (for any method)
//! | path | answer (in [`Mode::Ok`]) |
//! |---|---|
//! | `/health` (exact) | 200 `{"upstream","status":"ok"}`; 503 after `set_health(false)` |
//! | `…/echo` | the request body streamed back (chunked or Content-Length), same Content-Type, trailers too |
//! | `…/bytes/{n}` | `n` bytes of `a..z` repeating ([`pattern_bytes`]), `n` ≤ 256 MiB |
//! | `…/status/{code}` | that status (200..=599) with the default JSON body (empty for 204/304) |
//! | `…/delay/{ms}` | the default JSON after `ms` milliseconds |
//! | `…/ws` | WebSocket handshake (101) then echo of text/binary messages |
//! | anything else | 200, default JSON (below) |
//!
//! `…` means any prefix: special endpoints match the path's last segments, so `/api/v1/echo` is
//! an echo too (a non-numeric `{n}`/`{code}`/`{ms}` falls back to the default answer).
//! Every response carries `x-upstream: <name>`.
//!
//! Default JSON: `{"upstream", "method", "uri" (path+query as received), "path", "query" (string
//! or null), "version", "peer" (the TCP peer, i.e. the gateway), "headers": {lowercase name:
//! value, repeated headers joined with ", "}, "body_len", "body_fnv1a64" (16 hex digits, see
//! [`checksum_hex`])}`.
//!
//! ## Modes ([`Upstream::set_mode`]) apply to every path, `/health` included
//! `Ok`; `Fail(status)` (JSON error with that status); `Hang` (never answers); `Delay(d)`;
//! `Reset` (closes the connection without answering).
//!
//! ## Observability for assertions
//! [`Upstream::hits`], [`Upstream::health_hits`], [`Upstream::hits_for`],
//! [`Upstream::requests`] / [`Upstream::last_request`] ([`RecordedRequest`]),
//! [`Upstream::open_connections`], [`Upstream::total_connections`], [`Upstream::in_flight`].
//! [`Upstream::stop`] kills the endpoint (listener and connections); [`Upstream::restart`]
//! re-binds the same port.
//!
//! ## Shared test helpers (modules)
//! - [`prom`]: parse Prometheus text exposition; get a sample by name and labels.
//! - [`wait`]: poll until a condition holds, bounded in time (async and blocking).
//! - [`jwt`]: mint HS256/RS256/ES256/EdDSA tokens, fixture keys, JWKs and JWKS bodies.
//! - [`jwks`]: a real HTTP JWKS server on port 0 that can swap keys, fail and go down.
//! - [`redis`]: launch a real `redis-server` on a free port.
//! - [`prometheus_server`]: launch a real Prometheus scraping given targets, query its HTTP API; find
//!   `promtool`.
//! - [`redis_cluster`]: a real local Redis Cluster (3 primaries + 3 replicas); reshard, kill, failover.
//! - [`redis_sentinel`]: a real Sentinel setup (primary, replica, 3 sentinels); kill the primary.

mod body;
mod client;
pub mod consul;
pub mod dnsmasq;
mod handler;
pub mod jwks;
pub mod jwt;
pub mod prom;
pub mod prometheus_server;
pub mod raw;
pub mod redis;
pub mod redis_cluster;
pub mod redis_sentinel;
mod upstream;
pub mod wait;
mod ws;

use std::io;
use std::net::SocketAddr;

pub use body::{checksum_hex, fnv1a64, pattern_bytes, Fnv64, BODY_KEEP};
pub use client::{
    get, http_client, raw_request, raw_request_timeout, request, send, HttpClient, HttpResponse,
    RawResponse, RAW_TIMEOUT, SEND_LIMIT,
};
pub use handler::MAX_BYTES;
pub use upstream::{Mode, RecordedRequest, Upstream, LOG_CAP};
pub use ws::{ws_connect, ws_echo, WsClient};

/// Re-exports so tests need no extra dependencies.
pub use bytes::Bytes;
pub use futures_util::{SinkExt, StreamExt};
pub use http::{HeaderMap, Method, StatusCode};
pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Boxed error returned by the client helpers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Starts one upstream per `(name, "ip:port")` pair, e.g.
/// `demo_upstreams(&[("users-1", "127.0.0.1:9001"), ("users-2", "127.0.0.1:9002")])`.
/// Fails on the first unparsable or unbindable address (the ones already started are stopped).
pub async fn demo_upstreams(addrs: &[(&str, &str)]) -> io::Result<Vec<Upstream>> {
    let mut ups = Vec::with_capacity(addrs.len());
    for (name, addr) in addrs {
        let sa: SocketAddr = addr.parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: bad address {addr:?}: {e}"),
            )
        })?;
        let up = Upstream::start_on(name, sa).await.map_err(|e| {
            io::Error::new(e.kind(), format!("{name}: cannot listen on {addr}: {e}"))
        })?;
        tracing::info!(upstream = %name, addr = %up.addr(), "demo upstream listening");
        ups.push(up);
    }
    Ok(ups)
}

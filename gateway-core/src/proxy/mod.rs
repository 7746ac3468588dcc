//! The Pingora side: [`Gateway`] implements `ProxyHttp` and only sequences the named steps of
//! `steps`; every decision is made there (or in routing, policy and upstream), every local answer is
//! written by `respond` from one typed error (`GwError`).
//!
//! Chain, in order (each step may answer locally and stop the chain):
//! 1. request id — keep a sane client `X-Request-Id`, else generate one; request heads over 64 KiB → 431;
//!    trace context — join a valid W3C `traceparent`, else start a trace (`steps::trace`);
//! 2. client IP — the peer, or `X-Forwarded-For` only from trusted proxies;
//! 3. path normalisation (400 on malformed paths) and route match (404 / 405);
//! 4. body size by `Content-Length` (413; streamed bodies are counted as they arrive);
//! 5. auth — the route's jwt policy (401 / 403);
//! 6. rate limits — global, upstream and route limits checked together (429);
//! 7. circuit breaker — open: fallback response, fallback upstream, or 503 with `Retry-After`;
//! 8. proxy — endpoint pick (503 when none), connect (502, retried on another endpoint), timeouts (504).
//!
//! Logging (metrics and the access log) runs for every request, whatever step answered.
//!
//! Rooms: [`engine`](Engine) (what every request and reload shares; swaps, health loop), `gateway`
//! (the `ProxyHttp` sequencer and per-request [`Ctx`]), `steps` (one file per step), `respond` (local
//! answers), [`runtime`] (what one plan needs at run time), `conn` (the HTTP/1 connection loop),
//! `framing` (keep-alive decisions), [`headers`], [`server`] (listeners, `gw serve` and the embedded
//! runner), [`admin`] (the admin API), `signals`.
pub mod admin;
pub(crate) mod conn;
mod engine;
pub(crate) mod framing;
mod gateway;
#[doc(hidden)] // internals: the client-IP header setting of `config`, the fuzz targets
pub mod headers;
pub(crate) mod respond;
pub mod runtime;
pub mod server;
pub(crate) mod signals;
pub(crate) mod steps;

pub use engine::Engine;
pub use gateway::{Ctx, Gateway};

/// Step internals the criterion benches (`gateway-core/benches`) measure; not a stable API.
#[doc(hidden)]
pub mod bench_internals {
    pub use super::steps::forward_headers::Forwarding;
    /// Step 8 (the head sent upstream) on `up`; `false` where the step refuses the request.
    pub fn forward_headers(up: &mut pingora::http::RequestHeader, f: &Forwarding<'_>) -> bool {
        super::steps::forward_headers::apply(up, f).is_ok()
    }
    pub use super::steps::limit_headers::{render, LimitTexts};
}

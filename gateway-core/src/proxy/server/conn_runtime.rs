//! Where the embedded runner serves its connections: gw's own current-thread runtimes (Pingora's
//! no-steal runtime, as `gw serve` uses), not the embedding program's runtime.
//!
//! Why: Pingora 0.9.1 tears an upgraded (WebSocket) tunnel down when, in `proxy_handle_upstream`, the
//! upstream's `101` is read before the upgrade request's empty body task is taken from the body pipe
//! (cloudflare/pingora#946). The body task is queued in the same poll that wrote the request, so the race
//! is lost only if the upstream socket turns readable *during* that poll. On a current-thread runtime the
//! I/O driver runs only between polls, so it cannot; on a work-stealing runtime another worker drives the
//! I/O driver concurrently and marks the socket readable mid-poll (measured: 38–52 of 200 tunnels lost
//! with the test's multi-thread runtime, 0 with a current-thread one). Upstream connections are opened
//! inside the connection's task, so they are registered with — and only ever made readable by — that
//! task's own current-thread runtime.
use std::future::Future;
use tokio::net::TcpStream;

/// A pool of current-thread runtimes (threads start on the first connection, stop when dropped).
pub(super) struct ConnRuntimes(pingora_runtime::Runtime);

impl ConnRuntimes {
    /// `threads` runtimes, each on its own thread (at least one).
    pub(super) fn new(threads: usize) -> ConnRuntimes {
        ConnRuntimes(pingora_runtime::Runtime::new_no_steal(
            threads.max(1),
            "gw-embedded",
        ))
    }

    /// Moves an accepted connection onto one of the runtimes (re-registered with that runtime's I/O
    /// driver) and serves it there with `serve`.
    pub(super) fn spawn<F, Fut>(&self, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let std = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "embedded: cannot move an accepted connection");
                return;
            }
        };
        self.0.get_handle().spawn(async move {
            match TcpStream::from_std(std) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => tracing::debug!(error = %e, "embedded: cannot register a connection"),
            }
        });
    }
}

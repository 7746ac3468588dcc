//! Where the embedded runner serves its connections: gw's own current-thread runtimes (one per
//! `server.threads`, like the no-steal runtime of `gw serve`), not the embedding program's runtime.
//!
//! Why: Pingora 0.9.1 tears an upgraded (WebSocket) tunnel down when, in `proxy_handle_upstream`, the
//! upstream's `101` is read before the upgrade request's empty body task is taken from the body pipe
//! (cloudflare/pingora#946). The body task is queued in the same poll that wrote the request, so the race
//! is lost only if the upstream socket turns readable *during* that poll. On a current-thread runtime the
//! I/O driver runs only between polls, so it cannot; on a work-stealing runtime another worker drives the
//! I/O driver concurrently and marks the socket readable mid-poll (measured: 40–52 of 200 tunnels lost
//! with the test's multi-thread runtime, 0 with a current-thread one). Upstream connections are opened
//! inside the connection's task, so they are registered with — and only made readable by — that task's
//! own runtime (upgrades never reuse pooled connections, see `crate::upstream::tunnel`).
//!
//! Plain tokio runtimes, not `pingora_runtime`'s no-steal pool: that one records its pool in a
//! process-wide per-thread table that outlives the pool, so a Pingora server started later in the same
//! process could inherit a dropped pool's handles on a recycled thread id.
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A pool of current-thread runtimes, each on its own thread. When the pool is dropped, each runtime
/// lets its connections finish (at most `grace`), then stops.
pub(super) struct ConnRuntimes {
    handles: Vec<Handle>,
    next: AtomicUsize,
    _stop: Vec<oneshot::Sender<()>>,
}

impl ConnRuntimes {
    /// `threads` runtimes (at least one). If a runtime or thread cannot be created, connections are
    /// served on the caller's runtime instead (with a warning).
    pub(super) fn new(threads: usize, grace: Duration) -> ConnRuntimes {
        let mut runtimes = Vec::new();
        for _ in 0..threads.max(1) {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => runtimes.push(rt),
                Err(e) => {
                    tracing::warn!(error = %e, "embedded: no runtime of its own; serving on the caller's");
                    break;
                }
            }
        }
        // Every runtime stops only once all of them are idle: Pingora's upstream connection pool is
        // shared, so a request on one runtime may be reading a pooled connection registered with
        // another runtime's I/O driver (an idle runtime that stopped first failed it: "A Tokio 1.x
        // context was found, but it is being shutdown").
        let all: Arc<[Handle]> = runtimes.iter().map(|rt| rt.handle().clone()).collect();
        let mut handles = Vec::new();
        let mut stop = Vec::new();
        for (i, rt) in runtimes.into_iter().enumerate() {
            let handle = rt.handle().clone();
            let (tx, rx) = oneshot::channel::<()>();
            let all = all.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("gw-embedded-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        let _ = rx.await;
                        // in-flight connections finish on their own (keep-alive loops end at the
                        // shutdown signal), bounded by the grace period
                        let end = Instant::now() + grace;
                        while all.iter().any(|h| h.metrics().num_alive_tasks() > 0)
                            && Instant::now() < end
                        {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    });
                    rt.shutdown_background();
                });
            match spawned {
                Ok(_) => {
                    handles.push(handle);
                    stop.push(tx);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "embedded: no thread of its own; serving on the caller's");
                    break;
                }
            }
        }
        ConnRuntimes {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        }
    }

    /// Moves an accepted connection onto one of the runtimes (re-registered with that runtime's I/O
    /// driver, connections spread in turn) and serves it there with `serve`.
    pub(super) fn spawn<F, Fut>(&self, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.handles.is_empty() {
            tokio::spawn(serve(tcp));
            return;
        }
        let std = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "embedded: cannot move an accepted connection");
                return;
            }
        };
        let h = &self.handles[self.next.fetch_add(1, Relaxed) % self.handles.len()];
        h.spawn(async move {
            match TcpStream::from_std(std) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => tracing::debug!(error = %e, "embedded: cannot register a connection"),
            }
        });
    }
}

//! The [`Upstream`] server: binding, the accept loop, per-connection tasks, runtime behaviour
//! switches ([`Mode`], health), counters/gauges and the request log. Stopping closes the
//! listener and every open connection (including WebSockets), like a killed process.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Version};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::body::BodyTally;

/// How the upstream answers; switch at runtime with [`Upstream::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Normal behaviour (default).
    #[default]
    Ok,
    /// Every request, `/health` included, reads the body and answers this status
    /// (a JSON body `{"upstream":..,"error":"forced failure","status":..}`).
    Fail(u16),
    /// Accept and read the request head, never answer (until the connection is closed by the
    /// client or by [`Upstream::stop`]).
    Hang,
    /// Answer normally after this delay (the delay starts when the request head arrives).
    Delay(Duration),
    /// Read the request head, then close the connection without any response (a crash mid-request).
    Reset,
}

/// Maximum number of entries kept in the request log (oldest dropped first).
pub const LOG_CAP: usize = 10_000;

/// One received request, as recorded for assertions.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Arrival order on this upstream, starting at 0 (survives `restart`).
    pub seq: u64,
    /// Method as received.
    pub method: Method,
    /// The request-target as received (path and query, e.g. `/a/b?x=1`).
    pub uri: String,
    /// Path part of the request-target.
    pub path: String,
    /// Query part, without `?`.
    pub query: Option<String>,
    /// HTTP version of the request.
    pub version: Version,
    /// All request headers (names are lowercase).
    pub headers: HeaderMap,
    /// Peer address of the TCP connection (the gateway, when proxied).
    pub peer: SocketAddr,
    /// Body bytes read so far (final once `body_complete`).
    pub body_len: u64,
    /// FNV-1a 64 of the body bytes read (see [`crate::fnv1a64`]).
    pub body_fnv1a64: u64,
    /// The first [`crate::BODY_KEEP`] bytes of the body.
    pub body: Bytes,
    /// Whether the body was read to its end (false for `Hang`/`Reset`, an aborted upload, or an
    /// `/echo` still streaming).
    pub body_complete: bool,
}

impl RecordedRequest {
    /// First value of header `name` as text (lossy), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// State shared between the test's handle, the accept loop and every connection task.
pub(crate) struct Shared {
    pub name: String,
    mode: Mutex<Mode>,
    health_ok: AtomicBool,
    hits: AtomicU64,
    health_hits: AtomicU64,
    seq: AtomicU64,
    open_conns: AtomicUsize,
    total_conns: AtomicU64,
    in_flight: AtomicUsize,
    log: Mutex<VecDeque<RecordedRequest>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn mode(&self) -> Mode {
        *lock(&self.mode)
    }

    pub fn health_ok(&self) -> bool {
        self.health_ok.load(Ordering::Relaxed)
    }

    /// Counts and logs a request whose head just arrived; returns its sequence number.
    pub fn record_arrival<B>(&self, req: &http::Request<B>, peer: SocketAddr) -> u64 {
        let path = req.uri().path().to_owned();
        if path == "/health" {
            self.health_hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let entry = RecordedRequest {
            seq,
            method: req.method().clone(),
            uri: req
                .uri()
                .path_and_query()
                .map_or_else(|| path.clone(), |pq| pq.as_str().to_owned()),
            path,
            query: req.uri().query().map(str::to_owned),
            version: req.version(),
            headers: req.headers().clone(),
            peer,
            body_len: 0,
            body_fnv1a64: crate::body::Fnv64::default().value(),
            body: Bytes::new(),
            body_complete: false,
        };
        let mut log = lock(&self.log);
        if log.len() >= LOG_CAP {
            log.pop_front();
        }
        log.push_back(entry);
        seq
    }

    /// Stores what was read of request `seq`'s body.
    pub fn finish_body(&self, seq: u64, tally: BodyTally, complete: bool) {
        let mut log = lock(&self.log);
        if let Some(e) = log.iter_mut().rev().find(|e| e.seq == seq) {
            e.body_len = tally.len;
            e.body_fnv1a64 = tally.sum.value();
            e.body = tally.kept.freeze();
            e.body_complete = complete;
        }
    }

    pub fn in_flight_guard(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }

    pub fn conn_guard(self: &Arc<Self>) -> ConnGuard {
        self.open_conns.fetch_add(1, Ordering::Relaxed);
        self.total_conns.fetch_add(1, Ordering::Relaxed);
        ConnGuard(self.clone())
    }
}

/// Holds one unit of the in-flight gauge until dropped.
pub(crate) struct InFlightGuard(Arc<Shared>);
impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Holds one unit of the open-connections gauge until dropped.
pub(crate) struct ConnGuard(Arc<Shared>);
impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.open_conns.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once `stop` was signalled (or the sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

struct Running {
    stop_tx: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

/// A real HTTP/1.1 upstream server on loopback (see the crate docs for its endpoints).
///
/// Dropping it is like [`Upstream::stop`] without waiting: listener and connections are closed.
pub struct Upstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: Option<Running>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .field("running", &self.running.is_some())
            .finish()
    }
}

impl Upstream {
    /// Starts an upstream named `name` on `127.0.0.1:0`.
    ///
    /// # Panics
    /// Only if the OS refuses a loopback ephemeral port (a broken test environment).
    pub async fn start(name: &str) -> Upstream {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        match Self::start_on(name, addr).await {
            Ok(u) => u,
            Err(e) => panic!("gateway-testkit: cannot bind 127.0.0.1:0: {e}"),
        }
    }

    /// Starts an upstream on a given address (for demos with fixed ports).
    pub async fn start_on(name: &str, addr: SocketAddr) -> io::Result<Upstream> {
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            mode: Mutex::new(Mode::Ok),
            health_ok: AtomicBool::new(true),
            hits: AtomicU64::new(0),
            health_hits: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            open_conns: AtomicUsize::new(0),
            total_conns: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            log: Mutex::new(VecDeque::new()),
        });
        let (listener, addr) = bind(addr)?;
        let mut up = Upstream {
            shared,
            addr,
            running: None,
        };
        up.spawn(listener);
        Ok(up)
    }

    fn spawn(&mut self, listener: TcpListener) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, self.shared.clone(), stop_rx));
        self.running = Some(Running { stop_tx, accept });
    }

    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` — prefix for URLs.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The name given at start (reported as `upstream` in JSON bodies and the `x-upstream` header).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether the listener is up (false between `stop` and `restart`).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Switches behaviour for all requests from now on (requests already waiting keep theirs).
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// `false` makes only `GET /health` answer 503 (in `Ok`/`Delay` mode); `true` restores 200.
    pub fn set_health(&self, healthy: bool) {
        self.shared.health_ok.store(healthy, Ordering::Relaxed);
    }

    /// Requests received on any path except `/health` (counted when the head arrives, so
    /// requests that hang or fail count too).
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }

    /// Requests received on `/health` (active health checks).
    pub fn health_hits(&self) -> u64 {
        self.shared.health_hits.load(Ordering::Relaxed)
    }

    /// `hits() + health_hits()`.
    pub fn total_hits(&self) -> u64 {
        self.hits() + self.health_hits()
    }

    /// Logged requests with this method (case-insensitive) and exactly this path (query ignored).
    pub fn hits_for(&self, method: &str, path: &str) -> u64 {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.method.as_str().eq_ignore_ascii_case(method) && r.path == path)
            .count() as u64
    }

    /// A copy of the request log (oldest first, at most [`LOG_CAP`] entries).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).iter().cloned().collect()
    }

    /// The most recent logged request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.log).back().cloned()
    }

    /// Empties the log and zeroes `hits`/`health_hits` (gauges are untouched).
    pub fn reset_log(&self) {
        lock(&self.shared.log).clear();
        self.shared.hits.store(0, Ordering::Relaxed);
        self.shared.health_hits.store(0, Ordering::Relaxed);
    }

    /// Currently open TCP connections (an upgraded WebSocket counts as one).
    pub fn open_connections(&self) -> usize {
        self.shared.open_conns.load(Ordering::Relaxed)
    }

    /// Connections accepted since start (a keep-alive test expects this to stay at 1).
    pub fn total_connections(&self) -> u64 {
        self.shared.total_conns.load(Ordering::Relaxed)
    }

    /// Requests being handled now: from head arrival until the response is produced (for
    /// `/echo` and `/bytes/{n}`, until its body is finished or dropped).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Kills the endpoint: closes the listener (new connects are refused) and every open
    /// connection, then waits (up to 2 s) for the connection tasks to finish. Idempotent.
    pub async fn stop(&mut self) {
        let Some(run) = self.running.take() else {
            return;
        };
        run.stop_tx.send_replace(true);
        let _ = run.accept.await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops (if running) and binds the same address again. Log, counters and mode are kept.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await;
        let (listener, _) = bind(self.addr)?;
        self.spawn(listener);
        Ok(())
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(run) = self.running.take() {
            run.stop_tx.send_replace(true);
            run.accept.abort();
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop_rx: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped(&mut stop_rx) => return,
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    tokio::spawn(serve_conn(stream, peer, shared.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "upstream: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop_rx: watch::Receiver<bool>,
) {
    let _conn = shared.conn_guard();
    let _ = stream.set_nodelay(true);
    let svc_shared = shared.clone();
    let svc_stop = stop_rx.clone();
    let svc = service_fn(move |req| {
        crate::handler::handle(req, svc_shared.clone(), peer, svc_stop.clone())
    });
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(error = %e, upstream = %shared.name, "upstream: connection ended with error");
            }
        }
        _ = stopped(&mut stop_rx) => {}
    }
}

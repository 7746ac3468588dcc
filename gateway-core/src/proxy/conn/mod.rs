//! Client connection handling around Pingora's HTTP app ([`Guarded`]): connection caps, a deadline for
//! every request head, HTTP/1.1 pipelining, and the shutdown drain.
//!
//! Pingora's own HTTP/1 loop (`HttpServerApp` → `ServerApp::process_new` in pingora-core `apps/mod.rs`)
//! times each *read* of a request head, not the head: a client that sends nothing waits out the keep-alive
//! timeout, and one that drips a byte at a time is never closed. It also refuses to reuse a connection
//! whose client sent the next request early (pipelining), and on shutdown aborts every connection parked
//! in `read_request` (`HttpProxy::http_cleanup` → `handle_new_request`), bytes on the way or not. So gw
//! runs the HTTP/1 loop itself, with the same public pieces, and keeps Pingora's for HTTP/2 (once the
//! client preface has arrived in time). On TLS listeners it also runs the handshake, under the head
//! deadline (Pingora's listener gives every handshake 60 s).
//!
//! The proxy calls two hooks: [`on_request_head`] once a request head is parsed, and [`on_response`]
//! before a response head is written.
mod slots;
mod watched;

pub use slots::{ConnMetrics, OpenConns};
pub use watched::{ConnState, Watched};

use crate::plan::ConnectionLimits;
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN, IO};
use pingora::server::ShutdownWatch;
use slots::{ListenerCounters, Refused, Slots};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-connection timing, read for every new connection (so a reloaded plan applies to new connections).
#[derive(Clone, Copy, Debug)]
pub struct ConnTiming {
    /// Deadline for a whole request head: from accept for the first request, from its first byte for the
    /// next requests on a keep-alive connection.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait for the next request.
    pub idle_timeout: Duration,
    /// Longest drain after shutdown begins.
    pub grace_period: Duration,
}

/// Where a [`Guarded`] app reads its timing from (the engine's current plan, in the gateway).
pub trait TimingSource: Send + Sync + 'static {
    fn timing(&self) -> ConnTiming;
}

impl TimingSource for ConnTiming {
    fn timing(&self) -> ConnTiming {
        *self
    }
}

/// A Pingora HTTP app behind gw's connection handling. One per listener (the caps are per listener).
pub struct Guarded<A, T> {
    inner: Arc<A>,
    timing: T,
    slots: Arc<Slots>,
    counters: ListenerCounters,
    /// TLS listeners: the handshake runs here, under the head deadline (Pingora's own listener gives a
    /// handshake a fixed 60 s).
    tls: Option<Arc<Acceptor>>,
}

impl<A, T: TimingSource> Guarded<A, T> {
    /// Wraps `inner` for the listener `name`, with its caps; `open` counts connections process-wide.
    pub fn new(
        inner: Arc<A>,
        name: &str,
        limits: ConnectionLimits,
        timing: T,
        open: Arc<OpenConns>,
        metrics: &ConnMetrics,
    ) -> Self {
        Guarded {
            inner,
            timing,
            slots: Slots::new(limits, open),
            counters: metrics.listener(name),
            tls: None,
        }
    }

    /// Terminates TLS on this listener's connections (add the listener to Pingora as plain TCP).
    pub fn with_tls(mut self, acceptor: Acceptor) -> Self {
        self.tls = Some(Arc::new(acceptor));
        self
    }
}

#[async_trait]
impl<A, T> ServerApp for Guarded<A, T>
where
    A: HttpServerApp + Send + Sync + 'static,
    T: TimingSource,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _slot = match self.slots.take(ip) {
            Ok(s) => s,
            Err(why) => {
                match why {
                    Refused::ListenerCap => self.counters.rejected_listener_cap.inc(),
                    Refused::IpCap => self.counters.rejected_ip_cap.inc(),
                }
                tracing::debug!(?ip, ?why, "connection refused: cap reached");
                return None;
            }
        };
        let accepted = Instant::now();
        let stream = match &self.tls {
            None => stream,
            Some(acceptor) => {
                let limit = self.timing.timing().header_timeout;
                // the handshake is part of the first request's head deadline
                let io = Watched::new(stream, ConnState::new());
                // boxed: the handshake's state is large and lives only during the handshake, not in
                // every connection's future (an idle keep-alive connection holds that future)
                match tokio::time::timeout(limit, Box::pin(acceptor.tls_handshake(io))).await {
                    Ok(Ok(tls)) => Box::new(tls) as Stream,
                    Ok(Err(e)) => {
                        tracing::debug!(?ip, "TLS handshake failed: {e}");
                        return None;
                    }
                    Err(_) => {
                        self.counters.header_timeout.inc();
                        tracing::debug!(
                            ?ip,
                            "TLS handshake not done within header_timeout: closing"
                        );
                        return None;
                    }
                }
            }
        };
        if matches!(
            stream.selected_alpn_proto(),
            Some(ALPN::H2) | Some(ALPN::Custom(_))
        ) {
            // HTTP/2: Pingora's loop (GOAWAY on shutdown, its own stream handling; idle connections close
            // after its h2_idle_timeout), once the client preface has arrived in time
            return Box::pin(self.serve_h2(stream, accepted, shutdown)).await;
        }
        self.serve_h1(stream, accepted, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        // Pingora calls this once the listeners stop. Its HTTP app's cleanup aborts every request head being
        // read, so it runs only once the drain is over (or the grace period has passed).
        let grace = self.timing.timing().grace_period;
        self.slots.all().wait_idle(grace).await;
        ServerApp::cleanup(&*self.inner).await
    }
}

impl<A, T> Guarded<A, T>
where
    A: HttpServerApp + Send + Sync + 'static,
    T: TimingSource,
{
    /// The HTTP/1 keep-alive loop: one Pingora session per request, each raced against its head deadline
    /// and the drain. The timer and the shutdown watch are set up once per connection (re-armed per
    /// request only when a head is still on its way), not once per request.
    ///
    /// Between requests the connection waits for the next request's first bytes here, in this small
    /// future, not inside a Pingora session: a session (its request future, ~15 KB, and its 4 KB read
    /// buffer) is made only once bytes have come. That holds when every byte read so far belonged to
    /// finished requests ([`ConnState::all_consumed`]); otherwise (a pipelined request already read, a
    /// body drained by Pingora, a chunked body) the session is made at once and waits itself. On TLS
    /// listeners this wraps the decrypted stream, so the same holds.
    async fn serve_h1(&self, stream: Stream, accepted: Instant, shutdown: &ShutdownWatch) {
        let t = self.timing.timing();
        let state = ConnState::new();
        let mut watched = Box::new(Watched::new(stream, state.clone()));
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        let mut watch = shutdown.clone();
        let mut guard = ConnGuard {
            head_due: std::pin::pin!(tokio::time::sleep_until(
                (accepted + t.header_timeout).into()
            )),
            shutdown: std::pin::pin!(watch.changed()),
        };
        loop {
            let waits_here = first || state.all_consumed();
            state.begin_request();
            let deadline = Deadline {
                start: if first { accepted } else { Instant::now() },
                first,
                t,
            };
            if waits_here
                && !self
                    .next_request(&mut watched, &state, deadline, &mut guard)
                    .await
            {
                return;
            }
            let mut session = ServerSession::new_http1(watched);
            match settings.take() {
                Some(s) => s.apply_to_session(&mut session),
                None => {
                    session.set_keepalive(Some(t.idle_timeout.as_secs().max(1)));
                    // RFC 9112 §9.3.2: answer pipelined requests in order (carried over on reuse)
                    session.set_pipelining_enabled(true);
                }
            }
            if *shutdown.borrow() {
                state.set_draining();
                session.set_keepalive(None);
            }
            let fut = HttpServerApp::process_new_http(&self.inner, session, shutdown);
            first = false;
            let Some(Some(reused)) = self.race(fut, &state, deadline, &mut guard).await else {
                return;
            };
            let (stream, next) = reused.consume();
            settings = next;
            watched = match stream.into_any().downcast::<Watched>() {
                Ok(w) => w,
                // the session hands back the stream it was given: never happens
                Err(_) => return,
            };
        }
    }

    /// Waits for the first bytes of the next request outside a session. `false`: close the
    /// connection (the client closed or failed, the idle keep-alive ran out, the head deadline
    /// of a new connection passed, or the server drains while the connection is idle).
    async fn next_request<S: Future>(
        &self,
        watched: &mut Watched,
        state: &ConnState,
        d: Deadline,
        g: &mut ConnGuard<'_, S>,
    ) -> bool {
        // bytes already there (keep-alive under load): no timer, no wait
        let ready = std::future::poll_fn(|cx| match watched.poll_fill(cx) {
            std::task::Poll::Ready(r) => std::task::Poll::Ready(Some(r)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await;
        if let Some(r) = ready {
            return matches!(r, Ok(n) if n > 0);
        }
        // a new connection gets its head deadline; an idle keep-alive one its idle timeout
        let due = if d.first {
            d.start + d.t.header_timeout
        } else {
            d.start + d.t.idle_timeout
        };
        if g.head_due.deadline() != due.into() {
            g.head_due.as_mut().reset(due.into());
        }
        let mut draining = state.draining();
        loop {
            if draining && !d.first {
                // idle keep-alive during a drain: nothing to lose, close now
                return false;
            }
            tokio::select! {
                biased;
                r = std::future::poll_fn(|cx| watched.poll_fill(cx)) => return matches!(r, Ok(n) if n > 0),
                _ = g.head_due.as_mut() => {
                    if d.first {
                        self.counters.header_timeout.inc();
                        tracing::debug!("request head not received within header_timeout: closing");
                    }
                    return false;
                }
                _ = g.shutdown.as_mut(), if !draining => {
                    draining = true;
                    state.set_draining();
                }
            }
        }
    }

    /// HTTP/2 by Pingora, but the client preface and first SETTINGS frame (24 + 9 bytes) must arrive within
    /// header_timeout of accept: Pingora's HTTP/2 handshake waits for them without a limit.
    async fn serve_h2(
        &self,
        stream: Stream,
        accepted: Instant,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        const PREFACE_AND_SETTINGS: u64 = 24 + 9;
        let state = ConnState::new();
        let stream: Stream = Box::new(Watched::new(stream, state.clone()));
        let due = accepted + self.timing.timing().header_timeout;
        let fut = ServerApp::process_new(&self.inner, stream, shutdown);
        tokio::pin!(fut);
        tokio::select! {
            biased;
            r = &mut fut => return r,
            _ = tokio::time::sleep_until(due.into()) => {}
        }
        if state.total_read() < PREFACE_AND_SETTINGS {
            self.counters.header_timeout.inc();
            tracing::debug!("HTTP/2 preface not received within header_timeout: closing");
            return None;
        }
        fut.await
    }

    /// Runs one request's session; gives up on it (closing the connection) when its head is late, or when
    /// the server drains while the connection is idle. `None`: given up.
    async fn race<F, S>(
        &self,
        fut: F,
        state: &ConnState,
        d: Deadline,
        g: &mut ConnGuard<'_, S>,
    ) -> Option<Option<ReusedHttpStream>>
    where
        F: Future<Output = Option<ReusedHttpStream>>,
        S: Future,
    {
        tokio::pin!(fut);
        // one look at the session first: a head already buffered (keep-alive, pipelining) is parsed now,
        // and a request whose head is complete after it needs no head-deadline timer at all
        let polled = std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
            std::task::Poll::Ready(r) => std::task::Poll::Ready(Some(r)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await;
        if let Some(r) = polled {
            return Some(r);
        }
        // the drain is on already: close if no byte of a request has come (a new connection instead gets
        // its header_timeout: its client is about to send the request it connected for)
        let mut draining = state.draining();
        if draining && !d.first && !state.head_done() && state.first_byte_at().is_none() {
            return None;
        }
        loop {
            let waiting = !state.head_done();
            if waiting {
                let due = d.due(state.first_byte_at());
                if g.head_due.deadline() != due.into() {
                    g.head_due.as_mut().reset(due.into());
                }
            }
            tokio::select! {
                biased;
                r = &mut fut => return Some(r),
                _ = g.head_due.as_mut(), if waiting => {
                    if !state.head_done() && d.due(state.first_byte_at()) <= Instant::now() {
                        self.counters.header_timeout.inc();
                        tracing::debug!("request head not received within header_timeout: closing");
                        return None;
                    }
                }
                // the first byte of a request on a keep-alive connection starts its head deadline
                _ = state.first_byte(), if waiting && !d.first && state.first_byte_at().is_none() => {}
                // polled only until it fires: the drain flag stays set from then on
                _ = g.shutdown.as_mut(), if !draining => {
                    draining = true;
                    // the response to a request in progress says `Connection: close` (see on_response)
                    state.set_draining();
                    // idle keep-alive (no byte of a next request yet): nothing to lose, close now
                    if !d.first && !state.head_done() && state.first_byte_at().is_none() {
                        return None;
                    }
                }
            }
        }
    }
}

/// What one HTTP/1 connection keeps across its requests: the head-deadline timer (re-armed only when a
/// head is still on its way) and the wait for shutdown (registered once; it fires once).
struct ConnGuard<'a, S> {
    head_due: std::pin::Pin<&'a mut tokio::time::Sleep>,
    shutdown: std::pin::Pin<&'a mut S>,
}

/// When a request head must have arrived.
#[derive(Clone, Copy)]
struct Deadline {
    start: Instant,
    first: bool,
    t: ConnTiming,
}

impl Deadline {
    fn due(&self, first_byte: Option<Instant>) -> Instant {
        if self.first {
            // a new connection: the whole head within header_timeout of accept
            return self.start + self.t.header_timeout;
        }
        match first_byte {
            Some(b) => b + self.t.header_timeout,
            // idle keep-alive: Pingora closes it after idle_timeout; this bounds it regardless
            None => self.start + self.t.idle_timeout + self.t.header_timeout,
        }
    }
}

fn state_of(session: &ServerSession) -> Option<&Arc<ConnState>> {
    let io: &dyn IO = &**session.as_http1()?.stream();
    io.as_any().downcast_ref::<Watched>().map(Watched::state)
}

/// Hook: the request head was parsed (call from `early_request_filter`, after any keep-alive setting).
/// Stops the head deadline; during a drain, makes this the connection's last request.
pub fn on_request_head(session: &mut pingora::proxy::Session) {
    let ds = session.as_downstream_mut();
    if let Some(s) = state_of(ds) {
        s.set_head_done();
        if s.draining() {
            ds.set_keepalive(None);
        }
    }
}

/// Hook: the proxy is done with a request (call from `logging`). Records how many bytes of the
/// connection the request took (head and body; unknown for a chunked body), so the connection
/// loop knows whether the next request is still all to come from the socket.
pub fn on_request_end(session: &pingora::proxy::Session) {
    let ds = session.as_downstream();
    let Some(s) = state_of(ds).filter(|s| s.head_done()) else {
        return;
    };
    let Some(h1) = ds.as_http1() else { return };
    let chunked = ds
        .req_header()
        .headers
        .contains_key(http::header::TRANSFER_ENCODING);
    let body = (!chunked).then(|| h1.body_bytes_read());
    s.end_request(h1.get_headers_raw_bytes().len(), body);
}

/// Hook: a response head is about to be written (call from `response_filter` and before writing a local
/// response). During a drain the response says `Connection: close` and the connection closes after it.
pub fn on_response(session: &mut pingora::proxy::Session) {
    let ds = session.as_downstream_mut();
    if state_of(ds).is_some_and(|s| s.draining()) {
        ds.set_keepalive(None);
    }
}

//! [`Watched`]: a transparent wrapper around a client stream that records when the first byte of the
//! current request arrived, so the connection guard can time the request head from its first byte on a
//! keep-alive connection, and tell an idle connection from one with a request on the way.
use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the guard and the proxy hooks share about one client connection.
#[derive(Debug)]
pub struct ConnState {
    epoch: Instant,
    /// Milliseconds after `epoch` (plus one) when the current request's first byte was read; 0: none yet.
    first_byte: AtomicU64,
    /// Set by the proxy once the current request head is parsed.
    head_done: AtomicBool,
    /// Set when the server is draining: the next response closes the connection.
    draining: AtomicBool,
    /// Woken when the first byte of a request arrives (the head deadline starts then).
    first_byte_seen: tokio::sync::Notify,
    /// Bytes read on the connection so far.
    total: AtomicU64,
    /// `total` when the current request began.
    request_start: AtomicU64,
    /// `total` at the end of the last request's bytes (head and body) as the proxy consumed them;
    /// `u64::MAX` when unknown (a chunked body, or no end reported).
    consumed_end: AtomicU64,
}

impl ConnState {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(ConnState {
            epoch: Instant::now(),
            first_byte: AtomicU64::new(0),
            head_done: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            first_byte_seen: tokio::sync::Notify::new(),
            total: AtomicU64::new(0),
            request_start: AtomicU64::new(0),
            consumed_end: AtomicU64::new(u64::MAX),
        })
    }

    /// A new request is awaited: no byte of it seen, head not parsed.
    pub(crate) fn begin_request(&self) {
        self.first_byte.store(0, Ordering::Relaxed);
        self.head_done.store(false, Ordering::Release);
        self.request_start
            .store(self.total.load(Ordering::Relaxed), Ordering::Relaxed);
        self.consumed_end.store(u64::MAX, Ordering::Relaxed);
    }

    /// The proxy is done with the current request, whose head was `head` bytes and whose body
    /// `body` bytes on the wire (`None`: not known, e.g. chunked).
    pub(crate) fn end_request(&self, head: usize, body: Option<usize>) {
        let end = body.map_or(u64::MAX, |b| {
            self.request_start
                .load(Ordering::Relaxed)
                .saturating_add(head as u64)
                .saturating_add(b as u64)
        });
        self.consumed_end.store(end, Ordering::Relaxed);
    }

    /// Whether every byte read from the client so far belonged to requests that are over: then no
    /// byte of a next (pipelined) request sits in a buffer, and the next one is still to come
    /// from the socket.
    pub(crate) fn all_consumed(&self) -> bool {
        self.consumed_end.load(Ordering::Relaxed) == self.total.load(Ordering::Relaxed)
    }

    /// When the first byte of the current request was read, if it was.
    pub(crate) fn first_byte_at(&self) -> Option<Instant> {
        match self.first_byte.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms - 1)),
        }
    }

    /// Resolves once a byte of the current request has been read (at once if one was).
    pub(crate) async fn first_byte(&self) {
        // a wake-up left over from an earlier request only costs one more look
        while self.first_byte.load(Ordering::Relaxed) == 0 {
            self.first_byte_seen.notified().await;
        }
    }

    pub(crate) fn set_head_done(&self) {
        self.head_done.store(true, Ordering::Release);
    }

    /// A response is being written, so the request head was read: apps that do not call the proxy hooks
    /// (the admin listener) never have a response cut by the head deadline.
    fn responding(&self) {
        if !self.head_done.load(Ordering::Relaxed) {
            self.head_done.store(true, Ordering::Release);
        }
    }

    pub(crate) fn head_done(&self) -> bool {
        self.head_done.load(Ordering::Acquire)
    }

    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Bytes read on the connection so far.
    pub(crate) fn total_read(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn saw_bytes(&self, n: usize) {
        self.total.fetch_add(n as u64, Ordering::Relaxed);
        if self.first_byte.load(Ordering::Relaxed) == 0 {
            let ms = self.epoch.elapsed().as_millis() as u64 + 1;
            self.first_byte.store(ms, Ordering::Relaxed);
            self.first_byte_seen.notify_one();
        }
    }
}

/// The client stream, unchanged except that reads are noted in the connection's [`ConnState`], and
/// that the connection loop can wait for a request's first bytes itself ([`Watched::poll_fill`]).
#[derive(Debug)]
pub struct Watched {
    inner: Stream,
    state: Arc<ConnState>,
    /// Bytes read by [`Watched::poll_fill`], handed out by the next reads before the socket's.
    stash: Vec<u8>,
}

/// How much [`Watched::poll_fill`] reads at most (a request head usually fits; the rest of a
/// longer one is read by the session as usual).
const FILL_MAX: usize = 4096;

impl Watched {
    pub(crate) fn new(inner: Stream, state: Arc<ConnState>) -> Self {
        Watched {
            inner,
            state,
            stash: Vec::new(),
        }
    }

    /// The connection's shared state.
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    /// Reads what the client has sent into the stash without a session: `Ready(Ok(n))` with the
    /// bytes now stashed (0: the client closed), `Pending` (woken when bytes arrive). The read
    /// buffer lives only during this call, so a connection waiting here holds no buffer; the
    /// bytes are the same read the session would have made, handed to it by the next
    /// [`AsyncRead::poll_read`] without another system call.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.stash.is_empty() {
            return Poll::Ready(Ok(self.stash.len()));
        }
        let mut local = [0u8; FILL_MAX];
        let mut rb = ReadBuf::new(&mut local);
        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let got = rb.filled();
                if !got.is_empty() {
                    self.state.saw_bytes(got.len());
                    self.stash.extend_from_slice(got);
                }
                Poll::Ready(Ok(got.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.stash.is_empty() {
            let n = self.stash.len().min(buf.remaining());
            buf.put_slice(&self.stash[..n]);
            self.stash.drain(..n);
            if self.stash.is_empty() {
                // the next wait fills a new one; an idle connection keeps no buffer
                self.stash = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 && matches!(r, Poll::Ready(Ok(()))) {
            self.state.saw_bytes(n);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.state.responding();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.state.responding();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Watched {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Watched {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Watched {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Watched {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Watched {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Watched {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Watched {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.stash.is_empty() {
            return self.inner.try_peek(buf).await;
        }
        // bytes already taken from the socket come first: top the stash up to the peek's size
        while self.stash.len() < buf.len() {
            let mut more = vec![0u8; buf.len() - self.stash.len()];
            let n = tokio::io::AsyncReadExt::read(&mut self.inner, &mut more).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.state.saw_bytes(n);
            self.stash.extend_from_slice(&more[..n]);
        }
        buf.copy_from_slice(&self.stash[..buf.len()]);
        Ok(true)
    }
}

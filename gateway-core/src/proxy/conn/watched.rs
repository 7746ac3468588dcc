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
        })
    }

    /// A new request is awaited: no byte of it seen, head not parsed.
    pub(crate) fn begin_request(&self) {
        self.first_byte.store(0, Ordering::Relaxed);
        self.head_done.store(false, Ordering::Release);
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

/// The client stream, unchanged except that reads are noted in the connection's [`ConnState`].
#[derive(Debug)]
pub struct Watched {
    inner: Stream,
    state: Arc<ConnState>,
}

impl Watched {
    pub(crate) fn new(inner: Stream, state: Arc<ConnState>) -> Self {
        Watched { inner, state }
    }

    /// The connection's shared state.
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
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
        self.inner.try_peek(buf).await
    }
}

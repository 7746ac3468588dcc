//! Response bodies and body bookkeeping: the boxed body type every handler returns, the cheap
//! FNV-1a checksum used instead of a cryptographic hash, the deterministic byte pattern served by
//! `/bytes/{n}`, and the streaming `/echo` body that counts what passes through it.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::upstream::{InFlightGuard, Shared};

/// Body type of every response the upstream sends.
pub(crate) type RespBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// How many leading body bytes a [`crate::RecordedRequest`] keeps for assertions.
pub const BODY_KEEP: usize = 16 * 1024;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Incremental 64-bit FNV-1a checksum (not cryptographic; only for "same bytes arrived" checks).
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(FNV_OFFSET)
    }
}

impl Fnv64 {
    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }
    /// The checksum of everything fed so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// FNV-1a 64 of `data` (the value of `body_fnv1a64` in the default JSON, before hex formatting).
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h = Fnv64::default();
    h.update(data);
    h.value()
}

/// `fnv1a64(data)` as the 16-digit lowercase hex string found in the default JSON response.
pub fn checksum_hex(data: &[u8]) -> String {
    format!("{:016x}", fnv1a64(data))
}

/// Byte `i` of the `/bytes/{n}` pattern: `a..z` repeating.
fn pattern_byte(i: u64) -> u8 {
    b'a' + (i % 26) as u8
}

/// The exact bytes `/bytes/{n}` returns (for comparing in tests).
pub fn pattern_bytes(n: usize) -> Vec<u8> {
    (0..n as u64).map(pattern_byte).collect()
}

/// A fixed, in-memory body.
pub(crate) fn full(data: impl Into<Bytes>) -> RespBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub(crate) fn empty() -> RespBody {
    full(Bytes::new())
}

/// Updates a log entry's body fields: what a body reader saw.
#[derive(Default)]
pub(crate) struct BodyTally {
    pub len: u64,
    pub sum: Fnv64,
    pub kept: BytesMut,
}

impl BodyTally {
    pub fn add(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        self.sum.update(data);
        let room = BODY_KEEP.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..room.min(data.len())]);
    }
}

/// Reads a request body to its end without keeping more than [`BODY_KEEP`] bytes of it.
pub(crate) async fn drain(mut body: Incoming) -> (BodyTally, bool) {
    let mut tally = BodyTally::default();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    tally.add(d);
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "upstream: request body error");
                return (tally, false);
            }
            None => return (tally, true),
        }
    }
}

const CHUNK: usize = 64 * 1024;

/// `/bytes/{n}`: `n` pattern bytes produced in 64 KiB chunks, never held whole in memory.
pub(crate) struct PatternBody {
    pub next: u64,
    pub end: u64,
    pub _in_flight: InFlightGuard,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.next >= self.end {
            return Poll::Ready(None);
        }
        static PATTERN: OnceLock<Bytes> = OnceLock::new();
        let pattern = PATTERN.get_or_init(|| Bytes::from(pattern_bytes(CHUNK + 26)));
        let len = (self.end - self.next).min(CHUNK as u64) as usize;
        let start = (self.next % 26) as usize;
        self.next += len as u64;
        // Zero-copy: a slice of the shared pattern, aligned on the current offset.
        Poll::Ready(Some(Ok(Frame::data(pattern.slice(start..start + len)))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end - self.next)
    }
}

/// `/echo`: forwards the request body frames (data and trailers) as the response body as they
/// arrive, counting them; when dropped it writes the totals into the request's log entry.
pub(crate) struct EchoBody {
    pub inner: Incoming,
    pub shared: Arc<Shared>,
    pub seq: u64,
    pub tally: BodyTally,
    pub done: bool,
    pub _in_flight: InFlightGuard,
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.tally.add(d);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for EchoBody {
    fn drop(&mut self) {
        let complete = self.done || self.inner.is_end_stream();
        let tally = std::mem::take(&mut self.tally);
        self.shared.finish_body(self.seq, tally, complete);
    }
}

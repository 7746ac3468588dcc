//! Test clients: a small HTTP/1.1 client on hyper-util's legacy client, and a raw TCP client that
//! sends bytes exactly as written (hostile paths like `/a/../b` or `%2e%2e`, bad framing,
//! oversized headers) and parses the raw response.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BoxError;

/// A fully read HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Whole body.
    pub body: Bytes,
}

impl HttpResponse {
    /// First value of header `name` as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// A pooled keep-alive HTTP/1.1 client (reuse one to test connection reuse).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Builds a new [`HttpClient`] (its own connection pool).
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET url` with a fresh client. Add your own `tokio::time::timeout` when the server may hang.
pub async fn get(url: &str) -> Result<HttpResponse, BoxError> {
    request(&http_client(), Method::GET, url, &[], Bytes::new()).await
}

/// Sends one request with `client` and reads the whole response.
pub async fn request(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<HttpResponse, BoxError> {
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(Full::new(body.into()))?;
    let resp = client.request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(HttpResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Upper bound of one [`send`] exchange.
pub const SEND_LIMIT: Duration = Duration::from_secs(10);

/// [`request`] for tests: bounded by [`SEND_LIMIT`], panicking (with the method and URL) on a
/// transport error or when no whole response arrived in time.
pub async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> HttpResponse {
    let what = format!("{method} {url}");
    match tokio::time::timeout(SEND_LIMIT, request(client, method, url, headers, body)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("{what}: {e:?}"),
        Err(_) => panic!("{what}: no response within {SEND_LIMIT:?}"),
    }
}

/// A response read by [`raw_request`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code from the status line.
    pub status: u16,
    /// Status line and headers as received (up to, excluding, the blank line).
    pub head: String,
    /// Headers in order, names as received.
    pub headers: Vec<(String, String)>,
    /// Body after de-chunking.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The testkit upstream's JSON description of what it received (`Null` if the body is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// Whether the response says `Connection: close`.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Default time limit of [`raw_request`].
pub const RAW_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `request` verbatim to a new TCP connection to `addr` and reads one response
/// (skipping `1xx`), framed by Content-Length, chunked encoding or connection close.
/// Fails with `TimedOut` after [`RAW_TIMEOUT`] and `UnexpectedEof` if closed before a full head.
pub async fn raw_request(addr: SocketAddr, request: impl AsRef<[u8]>) -> io::Result<RawResponse> {
    raw_request_timeout(addr, request, RAW_TIMEOUT).await
}

/// [`raw_request`] with an explicit time limit.
pub async fn raw_request_timeout(
    addr: SocketAddr,
    request: impl AsRef<[u8]>,
    limit: Duration,
) -> io::Result<RawResponse> {
    let request = request.as_ref();
    let is_head = request.starts_with(b"HEAD ");
    let fut = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        read_response(&mut stream, is_head).await
    };
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "raw_request timed out"))?
}

const MAX_HEAD: usize = 1024 * 1024;

struct Reader<'a> {
    stream: &'a mut TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Reader<'_> {
    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            self.eof = true;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Takes bytes up to and including `delim`, reading more as needed.
    async fn take_until(&mut self, delim: &[u8], max: usize) -> io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = find(&self.buf, delim) {
                return Ok(self.buf.drain(..pos + delim.len()).collect());
            }
            if self.buf.len() > max {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if self.eof {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.fill().await?;
        }
    }

    async fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.eof {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

async fn read_response(stream: &mut TcpStream, is_head: bool) -> io::Result<RawResponse> {
    let mut r = Reader {
        stream,
        buf: Vec::new(),
        eof: false,
    };
    loop {
        let raw_head = r.take_until(b"\r\n\r\n", MAX_HEAD).await?;
        let head = String::from_utf8_lossy(&raw_head[..raw_head.len() - 4]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let mut resp = RawResponse {
            status,
            head,
            headers,
            body: Vec::new(),
        };
        if is_head || status == 101 || status == 204 || status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let line = r.take_until(b"\r\n", 4096).await?;
                let size_txt = String::from_utf8_lossy(&line[..line.len() - 2]);
                let size_txt = size_txt.split(';').next().unwrap_or_default().trim();
                let size =
                    usize::from_str_radix(size_txt, 16).map_err(|_| bad("bad chunk size"))?;
                if size == 0 {
                    // Trailers (possibly none) end with an empty line.
                    while r.take_until(b"\r\n", MAX_HEAD).await?.len() > 2 {}
                    break;
                }
                let data = r.take(size + 2).await?;
                resp.body.extend_from_slice(&data[..size]);
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
            resp.body = r.take(len).await?;
        } else {
            while !r.eof {
                r.fill().await?;
            }
            resp.body = std::mem::take(&mut r.buf);
        }
        return Ok(resp);
    }
}

//! Blocking raw-socket HTTP/1 client for connection-level tests: write bytes verbatim, read any number
//! of responses back in order, and time how long the server keeps a connection open. Blocking std
//! sockets (run them on threads or `spawn_blocking`); for one async request/response use
//! [`crate::raw_request`].
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One parsed response: the same type [`crate::raw_request`] returns.
pub type Resp = crate::RawResponse;

/// A client connection.
pub struct Raw {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        let _ = s.set_nodelay(true);
        Raw { s, buf: Vec::new() }
    }

    /// Wraps an already connected socket (e.g. one bound to another loopback source address).
    pub fn from_std(s: TcpStream) -> Raw {
        let _ = s.set_nodelay(true);
        Raw { s, buf: Vec::new() }
    }

    /// Writes bytes verbatim; false when the server already closed.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.s.write_all(bytes).is_ok()
    }

    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline"));
        }
        self.s.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 16384];
        match self.s.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "deadline"))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads one response (the server's next), framed by Content-Length, chunked, or close.
    pub fn response(&mut self, limit: Duration) -> io::Result<Resp> {
        let deadline = Instant::now() + limit;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("closed before a response head ({} bytes)", self.buf.len()),
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, head.clone()))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        self.buf.drain(..head_end);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let body = if let Some(cl) = get("content-length") {
            let n: usize = cl.parse().unwrap_or(0);
            while self.buf.len() < n {
                if self.fill(deadline)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            self.buf.drain(..n).collect()
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    if self.fill(deadline)? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                };
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&self.buf[..line_end])
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim(),
                    16,
                )
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
                while self.buf.len() < line_end + 2 + size + 2 {
                    if self.fill(deadline)? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break body;
                }
            }
        } else if status == 204 || status == 304 {
            Vec::new()
        } else {
            while self.fill(deadline)? > 0 {}
            std::mem::take(&mut self.buf)
        };
        Ok(Resp {
            status,
            head: head.trim_end_matches("\r\n").to_string(),
            headers,
            body,
        })
    }

    /// Waits (up to `limit`) for the server to close; returns how long that took, or `None` if still
    /// open. Bytes the server sends meanwhile are kept for [`Raw::response`].
    pub fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let deadline = start + limit;
        loop {
            match self.fill(deadline) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return None,
                Err(_) => return Some(start.elapsed()),
            }
        }
    }

    /// Bytes received and not yet parsed.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// `GET path` with a Host header (keep-alive).
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n").into_bytes()
}

/// `GET path` asking to close after the response.
pub fn get_close(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n").into_bytes()
}

//! [`JwksServer`]: a real HTTP/1.1 server (hyper) on loopback that answers every request, on any
//! path, with the current JWKS body — for testing key fetching, rotation and outages. The test
//! swaps the body ([`JwksServer::set_body`], [`JwksServer::set_keys`]), makes it answer 503
//! ([`JwksServer::set_failing`]), takes it down and brings it back on the same port
//! ([`JwksServer::down`], [`JwksServer::up`]), or starts with nothing listening yet
//! ([`JwksServer::down_at`]). Every response closes its connection, so a client never holds a
//! pooled connection past [`JwksServer::down`].
//!
//! ```
//! # async fn t() {
//! use gateway_testkit::jwks::JwksServer;
//! let mut s = JwksServer::start(r#"{"keys":[]}"#).await;      // 127.0.0.1:0
//! let r = gateway_testkit::get(&s.url()).await.unwrap();
//! assert_eq!((r.status.as_u16(), r.text()), (200, r#"{"keys":[]}"#.to_string()));
//! s.set_failing(true);                                       // 503 `{}`
//! s.down().await;                                            // connection refused
//! s.up().await;                                              // same port again
//! assert_eq!(s.hits(), 1);
//! # }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// What the server answers; shared with the connection tasks.
struct State {
    body: Mutex<String>,
    failing: AtomicBool,
    hits: AtomicUsize,
}

impl State {
    fn answer(&self) -> Response<Full<Bytes>> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let (status, body) = if self.failing.load(Ordering::SeqCst) {
            (StatusCode::SERVICE_UNAVAILABLE, "{}".to_string())
        } else {
            let body = self.body.lock().unwrap_or_else(PoisonError::into_inner);
            (StatusCode::OK, body.clone())
        };
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONNECTION, "close")
            .body(Full::new(Bytes::from(body)))
            .expect("valid response")
    }
}

/// A JWKS endpoint whose body, status and availability the test controls.
pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<State>,
    /// The accept loop; it owns the connection tasks (aborting it aborts them).
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for JwksServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksServer")
            .field("addr", &self.addr)
            .field("up", &self.task.is_some())
            .field("hits", &self.hits())
            .finish()
    }
}

impl JwksServer {
    /// Serves `body` on `127.0.0.1:0`.
    pub async fn start(body: impl Into<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let mut s = Self::reserved(listener.local_addr().expect("local addr"), body.into());
        s.serve(listener);
        s
    }

    /// Not listening yet: a free loopback port is picked (bound once, then released) and
    /// [`Self::url`] points at it; [`Self::up`] starts serving there.
    pub fn down_at(body: impl Into<String>) -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = l.local_addr().expect("local addr");
        drop(l);
        Self::reserved(addr, body.into())
    }

    fn reserved(addr: SocketAddr, body: String) -> Self {
        JwksServer {
            addr,
            state: Arc::new(State {
                body: Mutex::new(body),
                failing: AtomicBool::new(false),
                hits: AtomicUsize::new(0),
            }),
            task: None,
        }
    }

    /// Starts serving on the same address again (no-op when already up); panics if the port
    /// cannot be bound.
    pub async fn up(&mut self) {
        if self.task.is_some() {
            return;
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("rebind JWKS port {}: {e}", self.addr));
        self.serve(listener);
    }

    /// Stops listening and closes every open connection; new connections are refused.
    pub async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// [`Self::down`], consuming the server.
    pub async fn stop(mut self) {
        self.down().await;
    }

    fn serve(&mut self, listener: TcpListener) {
        let state = self.state.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                while conns.try_join_next().is_some() {}
                let state = state.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |_req| {
                        let resp = state.answer();
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }));
    }

    /// The listening (or reserved) address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/.well-known/jwks.json` (any path gets the same answer).
    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Replaces the body served from now on (any text, valid JSON or not).
    pub fn set_body(&self, body: impl Into<String>) {
        *self
            .state
            .body
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = body.into();
    }

    /// Serves `{"keys": keys}` from now on.
    pub fn set_keys(&self, keys: &[Value]) {
        self.set_body(crate::jwt::jwks(keys));
    }

    /// While `true`, every request gets `503` with body `{}`.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Requests answered so far (failing ones included).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{get, http_client, request, Method};
    use serde_json::json;

    async fn fetch(s: &JwksServer) -> (u16, String) {
        let r = get(&s.url()).await.expect("JWKS answers");
        assert_eq!(r.header("content-type"), Some("application/json"));
        (r.status.as_u16(), r.text())
    }

    #[tokio::test]
    async fn serves_swaps_and_fails() {
        let s = JwksServer::start(r#"{"keys":[]}"#).await;
        assert_eq!(fetch(&s).await, (200, r#"{"keys":[]}"#.to_string()));
        s.set_keys(&[json!({"kty": "oct", "kid": "k"})]);
        let (status, body) = fetch(&s).await;
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            (status, body),
            (200, json!({"keys": [{"kty": "oct", "kid": "k"}]}))
        );
        s.set_failing(true);
        assert_eq!(fetch(&s).await, (503, "{}".to_string()));
        s.set_failing(false);
        s.set_body("{not json");
        let other_path = format!("http://{}/any/path", s.addr());
        let r = request(&http_client(), Method::POST, &other_path, &[], "x")
            .await
            .expect("answers");
        assert_eq!(
            (r.status.as_u16(), r.text()),
            (200, "{not json".to_string())
        );
        assert_eq!(s.hits(), 4);
    }

    #[tokio::test]
    async fn closes_each_connection() {
        let s = JwksServer::start("{}").await;
        let c = http_client();
        for _ in 0..2 {
            let r = request(&c, Method::GET, &s.url(), &[], "")
                .await
                .expect("ok");
            assert_eq!(r.header("connection"), Some("close"));
        }
        assert_eq!(s.hits(), 2);
    }

    #[tokio::test]
    async fn down_refuses_and_up_serves_on_the_same_port() {
        let mut s = JwksServer::down_at(r#"{"keys":[]}"#);
        let addr = s.addr();
        assert!(get(&s.url()).await.is_err(), "nothing listens yet");
        s.up().await;
        assert_eq!(fetch(&s).await.0, 200);
        s.down().await;
        assert!(get(&s.url()).await.is_err(), "down refuses");
        s.up().await;
        assert_eq!(s.addr(), addr);
        assert_eq!(fetch(&s).await.0, 200);
        assert_eq!(s.hits(), 2);
        s.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}

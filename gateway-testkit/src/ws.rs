//! WebSocket: the server side of `…/ws` (RFC 6455 handshake answered by hand, then the hyper
//! upgraded connection is driven by tokio-tungstenite and echoes text/binary messages), plus
//! small client helpers for tests.
//!
//! With a `greet=TEXT` query parameter (`…/ws?greet=hi`) the server sends the text message `TEXT`
//! right after the `101`, before the client says anything (servers that greet, e.g. chat or
//! subscription protocols), then echoes as usual.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::body::{BodyTally, RespBody};
use crate::handler::{bare, text};
use crate::upstream::{stopped, Shared};
use crate::BoxError;

/// Client side of a WebSocket connection made with [`ws_connect`].
pub type WsClient = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Answers a WebSocket handshake with 101 and spawns the echo task, or answers 400.
pub(crate) fn upgrade(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    seq: u64,
    mut stop_rx: watch::Receiver<bool>,
) -> Response<RespBody> {
    shared.finish_body(seq, BodyTally::default(), true);
    let h = req.headers();
    let key = h
        .get(SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()));
    let ok = req.method() == Method::GET
        && has_token(h, CONNECTION, "upgrade")
        && has_token(h, UPGRADE, "websocket")
        && h.get(SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let (Some(accept), true) = (key, ok) else {
        return text(
            shared,
            StatusCode::BAD_REQUEST,
            "not a websocket handshake\n",
        );
    };
    let greeting: Option<String> = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("greet="))
            .map(str::to_owned)
    });
    let protocol = h
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.split(',').next())
        .and_then(|p| HeaderValue::from_str(p.trim()).ok());

    let mut resp = bare(shared, StatusCode::SWITCHING_PROTOCOLS);
    let rh = resp.headers_mut();
    rh.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    rh.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        rh.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        rh.insert(SEC_WEBSOCKET_PROTOCOL, p);
    }

    // Count the upgraded socket as a connection before hyper's connection task ends.
    let conn = shared.conn_guard();
    let on_upgrade = hyper::upgrade::on(req);
    let name = shared.name.clone();
    tokio::spawn(async move {
        let _conn = conn;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, upstream = %name, "upstream: websocket upgrade failed");
                return;
            }
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if let Some(g) = greeting {
            if ws.send(Message::text(g)).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                _ = stopped(&mut stop_rx) => return,
                msg = ws.next() => match msg {
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                        if ws.send(m).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        // tungstenite queued the close reply; flush it and finish.
                        let _ = ws.close(None).await;
                        return;
                    }
                    Some(Ok(_)) => {} // ping/pong are answered by tungstenite
                }
            }
        }
    });
    resp
}

/// Opens a WebSocket to `url` (`ws://host:port/path`).
pub async fn ws_connect(url: &str) -> Result<WsClient, BoxError> {
    let (ws, _resp) = tokio_tungstenite::connect_async(url).await?;
    Ok(ws)
}

/// Connects to `url`, sends `text`, and returns the first text message received back.
pub async fn ws_echo(url: &str, text: &str) -> Result<String, BoxError> {
    let mut ws = ws_connect(url).await?;
    ws.send(Message::text(text)).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg? {
            let _ = ws.close(None).await;
            return Ok(t.as_str().to_owned());
        }
    }
    Err("websocket closed before a text reply".into())
}

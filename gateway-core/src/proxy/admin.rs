//! The admin listener (loopback by default): `GET /metrics`, `/healthz`, `/readyz`, and — only when a
//! token is configured, and only with `Authorization: Bearer <token>` — the admin API:
//! `GET /admin/breakers`, `POST /admin/breakers/<upstream>/{open,close,auto}` and `POST /admin/reload`
//! (reload the configuration file: 200 with the diff, 422 with the diagnostics in the shape of
//! `gw validate --format json`, 409 when the change needs a restart; see `docs/reload.md`); the
//! upstreams, registration and routes endpoints are served by `crate::registration::api`.
//! `/metrics` answers 404 `metrics_disabled` when `observability.metrics` is false.
use super::Engine;
use crate::policy::breaker::ForcedState;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;
use std::time::Instant;

/// The admin endpoints as a Pingora `ServeHttp`: `/metrics`, `/healthz`, `/readyz`, and with the token the `/admin/...` API.
pub struct AdminApp {
    /// The engine the endpoints report on and act on.
    pub engine: Arc<Engine>,
    /// The bearer token of the `/admin/...` API (`None`: that API answers 401 for everything).
    pub token: Option<String>,
}

fn reply(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response<Vec<u8>> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json(status: u16, v: serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", v.to_string())
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn token_ok(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

impl AdminApp {
    /// `None` when `authorization` may use the admin API; else the answer: 404 `admin_api_disabled`
    /// without a configured token, 401 `unauthorized` without the right bearer token.
    pub fn refuse(&self, authorization: Option<&[u8]>) -> Option<Response<Vec<u8>>> {
        let Some(token) = &self.token else {
            return Some(json(
                404,
                serde_json::json!({"error": "admin_api_disabled", "message": "configure admin.token to enable the admin API"}),
            ));
        };
        let given = authorization
            .and_then(|a| a.strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        (!token_ok(given, token.as_bytes())).then(|| {
            json(
                401,
                serde_json::json!({"error": "unauthorized", "message": "a valid admin bearer token is required"}),
            )
        })
    }

    /// `POST /admin/reload`: reloads the file the running configuration was compiled from.
    pub async fn reload(&self, authorization: Option<&[u8]>) -> Response<Vec<u8>> {
        if let Some(r) = self.refuse(authorization) {
            return r;
        }
        match self.engine.reload_file(None).await {
            Ok(s) => json(
                200,
                serde_json::json!({"result": "applied", "summary": s, "message": s.to_string()}),
            ),
            Err(e) => json(e.status(), e.to_json()),
        }
    }

    /// Answers one admin request (method, path and query, headers, body).
    pub fn handle(
        &self,
        method: &http::Method,
        path: &str,
        authorization: Option<&[u8]>,
    ) -> Response<Vec<u8>> {
        match (method.as_str(), path) {
            ("GET", "/metrics") if !self.engine.runtime().plan.metrics => json(
                404,
                serde_json::json!({"error": "metrics_disabled", "message": "observability.metrics is false"}),
            ),
            ("GET", "/metrics") => reply(
                200,
                crate::observability::metrics::CONTENT_TYPE,
                self.engine.metrics.render(),
            ),
            ("GET", "/healthz") => reply(200, "text/plain", "ok\n"),
            ("GET", "/readyz") => {
                if self.engine.is_ready() {
                    reply(200, "text/plain", "ready\n")
                } else {
                    reply(503, "text/plain", "not ready\n")
                }
            }
            (_, p) if p.starts_with("/admin/") => match self.refuse(authorization) {
                Some(r) => r,
                None => self.admin_api(method, p),
            },
            _ => json(
                404,
                serde_json::json!({"error": "not_found", "message": "unknown admin path"}),
            ),
        }
    }

    fn admin_api(&self, method: &http::Method, path: &str) -> Response<Vec<u8>> {
        let rt = self.engine.runtime();
        let now = Instant::now();
        let parts: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
        match (method.as_str(), parts.as_slice()) {
            ("GET", ["breakers"]) => {
                let list: Vec<serde_json::Value> = rt
                    .plan
                    .upstreams
                    .iter()
                    .zip(&rt.upstreams)
                    .filter_map(|(p, u)| {
                        u.breaker.as_ref().map(|b| {
                            let s = b.snapshot(now);
                            serde_json::json!({"upstream": &*p.name, "state": s.state.as_str(), "consecutive_failures": s.consecutive_failures})
                        })
                    })
                    .collect();
                json(200, serde_json::json!(list))
            }
            ("POST", ["breakers", name, action]) => {
                let Some(i) = rt.plan.upstreams.iter().position(|u| &*u.name == *name) else {
                    return json(
                        404,
                        serde_json::json!({"error": "not_found", "message": "no such upstream"}),
                    );
                };
                let Some(b) = &rt.upstreams[i].breaker else {
                    return json(
                        404,
                        serde_json::json!({"error": "not_found", "message": "this upstream has no circuit breaker"}),
                    );
                };
                let f = match *action {
                    "open" => ForcedState::Open,
                    "close" => ForcedState::Closed,
                    "auto" => ForcedState::Auto,
                    _ => {
                        return json(
                            400,
                            serde_json::json!({"error": "bad_request", "message": "action is open, close or auto"}),
                        )
                    }
                };
                b.force(f);
                json(
                    200,
                    serde_json::json!({"upstream": name, "state": b.state(now).as_str()}),
                )
            }
            _ => json(
                404,
                serde_json::json!({"error": "not_found", "message": "unknown admin path"}),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if let Some(r) =
            crate::registration::api::serve(&self.engine, |a| self.refuse(a), session).await
        {
            return r;
        }
        let req = session.req_header();
        let auth = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        if method == http::Method::POST && path == "/admin/reload" {
            return self.reload(auth.as_deref()).await;
        }
        self.handle(&method, &path, auth.as_deref())
    }
}

//! The Pingora side: [`Gateway`] implements `ProxyHttp` and only sequences phases; every decision is made
//! by plain functions elsewhere (routing, auth, rate limits, breaker, load balancing).
//!
//! Chain, in order (each step may answer locally and stop the chain):
//! 1. request id — keep a sane client `X-Request-Id`, else generate one; request heads over 64 KiB → 431;
//! 2. client IP — the peer, or `X-Forwarded-For` only from trusted proxies;
//! 3. path normalisation (400 on malformed paths) and route match (404 / 405);
//! 4. body size by `Content-Length` (413; streamed bodies are counted as they arrive);
//! 5. auth — the route's jwt policy (401 / 403);
//! 6. rate limits — global, upstream and route limits checked together (429);
//! 7. circuit breaker — open: fallback response, fallback upstream, or 503 with `Retry-After`;
//! 8. proxy — endpoint pick (503 when none), connect (502, retried on another endpoint), timeouts (504).
//!
//! Logging (metrics and the access log) runs for every request, whatever step answered.
pub mod admin;
pub mod conn;
pub mod framing;
pub mod headers;
pub mod runtime;
pub mod server;
pub mod signals;

use crate::error::{error_body, GwError, Side};
use crate::observability::{
    AccessLog, AccessLogRecord, GaugeGuard, HttpMethod, Metrics, UpstreamErrorKind,
};
use crate::plan::FallbackPlan;
use crate::policy::auth::{Identity, Now};
use crate::policy::breaker::{Permit, UpstreamOutcome};
use crate::policy::rate_limit::from_plan::{write_key, KeyFacts};
use crate::policy::rate_limit::{header_values, unix_millis_now, Outcome as LimitOutcome};
use crate::routing::{normalize_path, MatchOutcome, RequestView};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use runtime::Runtime;
use smallvec::SmallVec;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Shared by every request and every reload: the current runtime, metrics, the access log, readiness.
pub struct Engine {
    pub current: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    /// Set once listeners are bound and the first health checks and key fetches are done.
    pub ready: AtomicBool,
}

impl Engine {
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load_full()
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The `ProxyHttp` implementation.
pub struct Gateway {
    pub engine: Arc<Engine>,
}

/// What the outcome of the upstream exchange was, for the breaker and outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UpstreamFailure {
    Connect,
    Timeout,
    Other,
}

/// Per-request state.
pub struct Ctx {
    rt: Arc<Runtime>,
    start: Instant,
    request_id: HeaderValue,
    client_ip: Option<IpAddr>,
    route: Option<u32>,
    /// The upstream actually used (the route's, or a breaker fallback upstream).
    upstream: Option<u32>,
    upstream_path: String,
    original_host: Option<HeaderValue>,
    identity: Option<Arc<Identity>>,
    forward: Vec<(HeaderName, HeaderValue)>,
    limit_headers: Vec<(&'static str, HeaderValue)>,
    limit_decision: Option<&'static str>,
    permit: Option<Permit>,
    /// Endpoints tried by this request, in order.
    tried: SmallVec<[usize; 4]>,
    /// Endpoint whose `active` counter this request currently holds.
    active: Option<usize>,
    attempt_start: Option<Instant>,
    upstream_elapsed: Option<Duration>,
    upstream_status: Option<u16>,
    failure: Option<UpstreamFailure>,
    error: Option<GwError>,
    status: u16,
    bytes_in: u64,
    max_body: Option<u64>,
    deadline: Option<Instant>,
    _in_flight: Option<GaugeGuard>,
}

impl Ctx {
    /// The request id as text (for error bodies and the access log).
    fn rid(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }
}

/// What a phase decided.
pub enum Phase {
    Continue,
    Respond,
}

impl Gateway {
    pub fn new(engine: Arc<Engine>) -> Self {
        Gateway { engine }
    }

    /// Writes a gateway-generated JSON error with optional extra headers.
    async fn respond_error(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        err: &GwError,
        extra: &[(&str, String)],
    ) -> Result<Phase> {
        let body = err.json_body(ctx.rid());
        self.respond(session, ctx, err.status, "application/json", extra, body)
            .await
    }

    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        content_type: &str,
        extra: &[(&str, String)],
        body: Bytes,
    ) -> Result<Phase> {
        let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
        resp.insert_header("content-type", content_type)?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
        for (k, v) in extra {
            resp.append_header(k.to_string(), v.as_str())?;
        }
        for (k, v) in &ctx.limit_headers {
            resp.insert_header(*k, v.clone())?;
        }
        ctx.status = status;
        conn::on_response(session);
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(Phase::Respond)
    }

    /// Steps 1–7 of the chain.
    async fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Phase> {
        let rt = ctx.rt.clone();
        let plan = &rt.plan;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // Everything that reads the request head happens in this block, without copying the path or
        // the host; a local answer is sent after the borrow ends.
        let routed: std::result::Result<u32, (GwError, Option<String>)> = {
            let req = session.req_header();
            ctx.request_id = match req.headers.get("x-request-id") {
                Some(v) if headers::sane_request_id(v.as_bytes()) => v.clone(),
                _ => HeaderValue::try_from(headers::new_request_id())
                    .unwrap_or(HeaderValue::from_static("-")),
            };
            ctx.client_ip = headers::client_ip(
                peer,
                req.headers.get("x-forwarded-for").map(|v| v.as_bytes()),
                &plan.server.trusted_proxies,
            );
            let host_header = req.headers.get(http::header::HOST);
            ctx.original_host = host_header.cloned();
            let host = req
                .uri
                .host()
                .or_else(|| host_header.and_then(|h| h.to_str().ok()).map(strip_port));
            if headers::request_head_bytes(req) > headers::MAX_REQUEST_HEAD_BYTES {
                let msg = format!(
                    "the request headers are larger than {} bytes",
                    headers::MAX_REQUEST_HEAD_BYTES
                );
                Err((
                    GwError::new(Side::Client, 431, "header_too_large", msg),
                    None,
                ))
            } else {
                match normalize_path(req.uri.path()) {
                    Err(e) => Err((GwError::bad_request(e.message()), None)),
                    Ok(path) => {
                        let view = RequestView {
                            method: &req.method,
                            path: &path,
                            host,
                            headers: &req.headers,
                        };
                        match plan.router.find(&view) {
                            MatchOutcome::Found { route, captures } => {
                                ctx.upstream_path.clear();
                                plan.routes[route as usize].rewrite.apply(
                                    &path,
                                    &captures,
                                    &mut ctx.upstream_path,
                                );
                                if let Some(q) = req.uri.query() {
                                    ctx.upstream_path.push('?');
                                    ctx.upstream_path.push_str(q);
                                }
                                Ok(route)
                            }
                            MatchOutcome::NotFound => Err((GwError::no_route(), None)),
                            MatchOutcome::MethodNotAllowed { allowed } => {
                                let allow = allowed
                                    .iter()
                                    .map(|m| m.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ");
                                Err((GwError::method_not_allowed(), Some(allow)))
                            }
                        }
                    }
                }
            }
        };
        let route_id = match routed {
            Ok(r) => r,
            Err((err, allow)) => {
                let extra: Vec<(&str, String)> = allow.into_iter().map(|a| ("allow", a)).collect();
                return self.respond_error(session, ctx, &err, &extra).await;
            }
        };
        let route = &plan.routes[route_id as usize];
        ctx.route = Some(route_id);
        ctx.upstream = Some(route.upstream);
        let req = session.req_header();
        // 4. body size
        ctx.max_body = route.max_body_size.or(plan.server.max_body_size);
        if let Some(max) = ctx.max_body {
            let declared = req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return self
                    .respond_error(session, ctx, &GwError::payload_too_large(max), &[])
                    .await;
            }
        }
        // 5. auth
        if let Some(a) = route.auth {
            let auth = &rt.auths[a as usize];
            let rrt = &rt.routes[route_id as usize];
            if let Some(policy) = &rrt.auth_policy {
                let req = session.req_header();
                match auth
                    .authenticate(&req.headers, req.uri.query(), policy, Now::system())
                    .await
                {
                    Ok(Some(id)) => {
                        ctx.forward = auth.forward_headers(&id).collect();
                        ctx.identity = Some(id);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        rrt.auth_metrics.failure(e.reason().as_str());
                        let body = error_body(e.code(), e.description(), ctx.rid());
                        let www = e.www_authenticate();
                        return self
                            .respond(
                                session,
                                ctx,
                                e.status().as_u16(),
                                "application/json",
                                &[("www-authenticate", www)],
                                body,
                            )
                            .await;
                    }
                }
            }
        }
        // 6. rate limits, all together
        if !route.limits.is_empty() {
            if let Some(limits) = &rt.limits {
                let req = session.req_header();
                let facts = KeyFacts {
                    client_ip: ctx.client_ip,
                    identity: ctx.identity.as_deref(),
                    headers: &req.headers,
                    route: &route.name,
                    upstream: &plan.upstreams[route.upstream as usize].name,
                };
                let mut keys: SmallVec<[Vec<u8>; 4]> = SmallVec::new();
                for l in &route.limits {
                    let p = &plan.rate_limits[l.limit as usize];
                    let mut k = Vec::with_capacity(48);
                    write_key(&p.key, p.scope, &facts, &mut k);
                    keys.push(k);
                }
                let items: SmallVec<[(crate::policy::rate_limit::LimitRef, &[u8]); 4]> = route
                    .limits
                    .iter()
                    .zip(keys.iter())
                    .map(|(l, k)| (limits.refs[l.limit as usize], k.as_slice()))
                    .collect();
                let d = limits.limiter.check_all(&items, unix_millis_now()).await;
                for (l, o) in route.limits.iter().zip(d.outcomes.iter()) {
                    let m = &rt.limit_metrics[l.limit as usize];
                    match o.outcome {
                        LimitOutcome::Allowed => m.allowed(),
                        LimitOutcome::Rejected => m.rejected(),
                        LimitOutcome::ShadowRejected => m.shadow_rejected(),
                        LimitOutcome::Skipped => {}
                    }
                    if let Some(se) = &o.store_error {
                        m.store_error(match se.action {
                            crate::policy::rate_limit::OnStoreError::Allow => "allow",
                            crate::policy::rate_limit::OnStoreError::Deny => "deny",
                            crate::policy::rate_limit::OnStoreError::Local => "local",
                        });
                    }
                }
                ctx.limit_headers = header_values(&d);
                if !d.admitted {
                    ctx.limit_decision = Some("rejected");
                    let name = d
                        .rejected_by
                        .and_then(|i| route.limits.get(i))
                        .map(|l| plan.rate_limits[l.limit as usize].name.to_string())
                        .unwrap_or_default();
                    if !ctx
                        .limit_headers
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                    {
                        ctx.limit_headers.push((
                            "retry-after",
                            HeaderValue::from(d.retry_after_secs.unwrap_or(1).max(1)),
                        ));
                    }
                    let err = GwError::new(
                        Side::Client,
                        429,
                        "rate_limited",
                        format!("rate limit {name} exceeded"),
                    );
                    return self.respond_error(session, ctx, &err, &[]).await;
                }
                ctx.limit_decision = Some(
                    if d.outcomes
                        .iter()
                        .any(|o| o.outcome == LimitOutcome::ShadowRejected)
                    {
                        "shadow_rejected"
                    } else {
                        "allowed"
                    },
                );
            }
        }
        // 7. breaker
        let up = &rt.upstreams[route.upstream as usize];
        if let Some(b) = &up.breaker {
            match b.try_acquire(Instant::now()) {
                Ok(p) => ctx.permit = Some(p),
                Err(rej) => match &route.fallback {
                    Some(FallbackPlan::Static {
                        status,
                        headers,
                        body,
                    }) => {
                        let mut extra: Vec<(&str, String)> = headers
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("").to_string()))
                            .collect();
                        extra.push(("x-gw-fallback", "circuit-open".into()));
                        let ct = headers
                            .iter()
                            .find(|(k, _)| k == http::header::CONTENT_TYPE)
                            .and_then(|(_, v)| v.to_str().ok())
                            .unwrap_or("text/plain")
                            .to_string();
                        let extra: Vec<(&str, String)> = extra
                            .into_iter()
                            .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
                            .collect();
                        return self
                            .respond(session, ctx, *status, &ct, &extra, body.clone())
                            .await;
                    }
                    Some(FallbackPlan::Upstream(u)) => ctx.upstream = Some(*u),
                    None => {
                        let secs = rej.retry_after.as_secs()
                            + u64::from(rej.retry_after.subsec_nanos() > 0);
                        let err =
                            GwError::circuit_open(&plan.upstreams[route.upstream as usize].name);
                        return self
                            .respond_error(
                                session,
                                ctx,
                                &err,
                                &[("retry-after", secs.max(1).to_string())],
                            )
                            .await;
                    }
                },
            }
        }
        Ok(Phase::Continue)
    }

    /// Releases the endpoint's in-flight counter and records the attempt for outlier detection.
    fn end_attempt(&self, ctx: &mut Ctx, failed: bool) {
        let (Some(up), Some(i)) = (ctx.upstream, ctx.active.take()) else {
            return;
        };
        let u = &ctx.rt.upstreams[up as usize];
        let e = &u.balancer.endpoints[i];
        e.active.fetch_sub(1, Ordering::Relaxed);
        let elapsed = ctx.attempt_start.map(|s| s.elapsed()).unwrap_or_default();
        ctx.upstream_elapsed = Some(elapsed);
        if !failed {
            e.observe(elapsed);
        }
        if ctx.rt.plan.metrics {
            u.endpoint_metrics[i].observe(elapsed);
        }
        if let Some(o) = &u.outlier {
            o.record(i, failed, Instant::now());
        }
    }
}

fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.split(']').next().map_or(h, |s| s.trim_start_matches('['));
    }
    h.rsplit_once(':').map_or(h, |(a, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            a
        } else {
            h
        }
    })
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            rt: self.engine.runtime(),
            start: Instant::now(),
            request_id: HeaderValue::from_static(""),
            client_ip: None,
            route: None,
            upstream: None,
            upstream_path: String::new(),
            original_host: None,
            identity: None,
            forward: Vec::new(),
            limit_headers: Vec::new(),
            limit_decision: None,
            permit: None,
            tried: SmallVec::new(),
            active: None,
            attempt_start: None,
            upstream_elapsed: None,
            upstream_status: None,
            failure: None,
            error: None,
            status: 0,
            bytes_in: 0,
            max_body: None,
            deadline: None,
            _in_flight: Some(self.engine.metrics.track_in_flight()),
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let s = &ctx.rt.plan.server;
        session.set_keepalive(Some(s.idle_timeout.as_secs().max(1)));
        session
            .as_downstream_mut()
            .set_read_timeout(Some(s.header_timeout));
        conn::on_request_head(session);
        framing::enforce(session, &mut ctx.error)?;
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        Ok(matches!(self.admit(session, ctx).await?, Phase::Respond))
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _eos: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.bytes_in += b.len() as u64;
            if let Some(max) = ctx.max_body {
                if ctx.bytes_in > max {
                    ctx.error = Some(GwError::payload_too_large(max));
                    return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
                }
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let rt = ctx.rt.clone();
        let (Some(route_id), Some(up_id)) = (ctx.route, ctx.upstream) else {
            ctx.error = Some(GwError::internal("no route selected"));
            return Error::e_explain(ErrorType::HTTPStatus(500), "no route");
        };
        let route = &rt.plan.routes[route_id as usize];
        let up = &rt.upstreams[up_id as usize];
        let up_plan = &rt.plan.upstreams[up_id as usize];
        let key: Vec<u8> = match &up.hash_key {
            None => Vec::new(),
            Some(crate::config::HashKeyConfig::ClientIp {}) => ctx
                .client_ip
                .map(|i| i.to_string().into_bytes())
                .unwrap_or_default(),
            Some(crate::config::HashKeyConfig::Path {}) => ctx
                .upstream_path
                .split('?')
                .next()
                .unwrap_or("")
                .as_bytes()
                .to_vec(),
            Some(crate::config::HashKeyConfig::Header { name }) => session
                .req_header()
                .headers
                .get(name.as_str())
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
        };
        let now = Instant::now();
        let tried = &ctx.tried;
        let pick = up
            .balancer
            .pick(&key, |i| {
                !tried.contains(&i) && !up.outlier.as_ref().is_some_and(|o| o.is_ejected(i, now))
            })
            // every candidate ejected: outlier detection must not take the whole upstream down
            .or_else(|| {
                if up.outlier.is_some() {
                    up.balancer.pick(&key, |i| !tried.contains(&i))
                } else {
                    None
                }
            })
            // a retry once every healthy endpoint was tried (more attempts than endpoints, or Pingora
            // retrying a stale pooled connection): go round again instead of answering 503
            .or_else(|| {
                if tried.is_empty() {
                    None
                } else {
                    up.balancer.pick(&key, |_| true)
                }
            });
        let Some(pick) = pick else {
            ctx.error = Some(GwError::no_healthy_endpoint(&up_plan.name));
            return Error::e_explain(ErrorType::HTTPStatus(503), "no healthy endpoint");
        };
        // a new attempt: an earlier attempt's failure (already recorded against its endpoint) must not
        // count against this endpoint or the breaker when this attempt succeeds
        ctx.failure = None;
        ctx.upstream_status = None;
        ctx.tried.push(pick.index);
        up.balancer.endpoints[pick.index]
            .active
            .fetch_add(1, Ordering::Relaxed);
        ctx.active = Some(pick.index);
        ctx.attempt_start = Some(now);
        let t = if ctx.upstream == Some(route.upstream) {
            route.timeouts
        } else {
            up_plan.timeouts
        };
        ctx.deadline = t.request.map(|d| now + d);
        let mut peer = HttpPeer::new(pick.addr, false, String::new());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.request.map_or(t.read, |r| r.min(t.read)));
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let rt = &ctx.rt;
        let uri = ctx.upstream_path.parse::<http::Uri>().map_err(|_| {
            Error::explain(
                ErrorType::HTTPStatus(400),
                "rewritten path is not a valid URI",
            )
        })?;
        upstream_request.set_uri(uri);
        for h in &rt.injected {
            upstream_request.remove_header(h);
        }
        for (k, v) in &ctx.forward {
            upstream_request.insert_header(k.clone(), v.clone())?;
        }
        if let Some(route) = ctx.route.map(|r| &rt.plan.routes[r as usize]) {
            if let Some(h) = &route.host {
                upstream_request.insert_header(http::header::HOST, h.clone())?;
            } else if upstream_request.headers.get(http::header::HOST).is_none() {
                if let Some(h) = &ctx.original_host {
                    upstream_request.insert_header(http::header::HOST, h.clone())?;
                }
            }
        }
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let prev = upstream_request
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .filter(|p| !p.trim().is_empty());
            let xff = match prev {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip.to_string(),
            };
            upstream_request.insert_header(
                "x-forwarded-for",
                HeaderValue::try_from(xff)
                    .map_err(|_| Error::explain(ErrorType::InternalError, "x-forwarded-for"))?,
            )?;
        }
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        upstream_request.insert_header(
            "x-forwarded-proto",
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        )?;
        if let Some(h) = &ctx.original_host {
            upstream_request.insert_header("x-forwarded-host", h.clone())?;
        }
        upstream_request.insert_header("x-request-id", ctx.request_id.clone())?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        ctx.upstream_status = Some(status);
        if let (Some(up), Some(i)) = (ctx.upstream, ctx.active) {
            let u = &ctx.rt.upstreams[up as usize];
            if status >= 500 {
                u.endpoint_metrics[i].error(UpstreamErrorKind::Status5xx);
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _eos: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if ctx.deadline.is_some_and(|d| Instant::now() > d) {
            return Error::e_explain(ErrorType::ReadTimedout, "whole-request timeout");
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
        for (k, v) in &ctx.limit_headers {
            resp.insert_header(*k, v.clone())?;
        }
        ctx.status = resp.status.as_u16();
        conn::on_response(session);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let timed_out = matches!(e.etype(), ErrorType::ConnectTimedout);
        if let (Some(up), Some(i)) = (ctx.upstream, ctx.active) {
            ctx.rt.upstreams[up as usize].endpoint_metrics[i].error(if timed_out {
                UpstreamErrorKind::Timeout
            } else {
                UpstreamErrorKind::Connect
            });
        }
        self.end_attempt(ctx, true);
        ctx.failure = Some(if timed_out {
            UpstreamFailure::Timeout
        } else {
            UpstreamFailure::Connect
        });
        let retries = ctx
            .upstream
            .map_or(0, |u| ctx.rt.plan.upstreams[u as usize].retries);
        // a connect failure never reached the upstream: safe to retry any method, on another endpoint
        if (ctx.tried.len() as u32) <= retries {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let idempotent = session.req_header().method.is_idempotent();
        let up = ctx.upstream.map(|u| &ctx.rt.plan.upstreams[u as usize]);
        if !idempotent || session.as_ref().retry_buffer_truncated() {
            // the request may have reached the upstream: a POST is never sent twice
            e.set_retry(false);
        } else if up.is_some_and(|u| u.retry_idempotent && (ctx.tried.len() as u32) <= u.retries) {
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        if e.retry() {
            self.end_attempt(ctx, true);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let up_name = ctx
            .upstream
            .map(|u| ctx.rt.plan.upstreams[u as usize].name.to_string())
            .unwrap_or_default();
        let err = match ctx.error.take() {
            Some(g) => g,
            None => match e.etype() {
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                    if e.esource() != &pingora::ErrorSource::Downstream =>
                {
                    ctx.failure = Some(UpstreamFailure::Timeout);
                    GwError::upstream_timeout(&up_name)
                }
                ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError
                | ErrorType::TLSHandshakeFailure
                | ErrorType::TLSHandshakeTimedout => {
                    ctx.failure = Some(UpstreamFailure::Connect);
                    GwError::upstream_unavailable(&up_name)
                }
                ErrorType::HTTPStatus(c) => GwError::new(
                    if *c >= 500 {
                        Side::Upstream
                    } else {
                        Side::Client
                    },
                    *c,
                    "error",
                    "request failed",
                ),
                _ => match e.esource() {
                    pingora::ErrorSource::Upstream => {
                        ctx.failure.get_or_insert(UpstreamFailure::Other);
                        GwError::bad_gateway(&up_name)
                    }
                    pingora::ErrorSource::Downstream => match e.etype() {
                        ErrorType::ReadError
                        | ErrorType::WriteError
                        | ErrorType::ConnectionClosed => {
                            GwError::new(Side::Client, 0, "client_closed", "client went away")
                        }
                        ErrorType::ReadTimedout => GwError::new(
                            Side::Client,
                            408,
                            "request_timeout",
                            "the client was too slow sending the request",
                        ),
                        _ => GwError::bad_request("malformed request"),
                    },
                    _ => GwError::internal("internal error"),
                },
            },
        };
        if err.side == Side::Upstream {
            if let (Some(up), Some(i)) = (ctx.upstream, ctx.active) {
                if matches!(ctx.failure, Some(UpstreamFailure::Timeout)) {
                    ctx.rt.upstreams[up as usize].endpoint_metrics[i]
                        .error(UpstreamErrorKind::Timeout);
                }
            }
        }
        let code = err.status;
        if code > 0 && session.response_written().is_none() {
            // the connection is closed after this response (`can_reuse_downstream: false`): say so with
            // `Connection: close`, or a keep-alive client may send its next request into the closing socket
            session.set_keepalive(None);
            let body = err.json_body(ctx.rid());
            let mut extra: Vec<(&str, String)> = Vec::new();
            if code == 503 {
                extra.push(("retry-after", "1".into()));
            }
            if self
                .respond(session, ctx, code, "application/json", &extra, body)
                .await
                .is_err()
            {
                tracing::debug!("could not send the error response");
            }
            if code == 413 {
                // lingering close: the client may still be sending the refused body; read and drop it
                // briefly, or closing with unread bytes resets the connection and can destroy the 413
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    session.as_downstream_mut().drain_request_body(),
                )
                .await;
            }
        }
        ctx.status = code;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let failed = ctx.failure.is_some();
        let active_failed = failed
            || ctx.upstream_status.is_some_and(|s| {
                ctx.upstream
                    .is_some_and(|u| ctx.rt.upstreams[u as usize].failure.counts_status(s))
            });
        self.end_attempt(ctx, active_failed);
        let rt = ctx.rt.clone();
        // breaker outcome: upstream answered, failed, or (client gone) nothing to say
        if let (Some(p), Some(up)) = (ctx.permit.take(), ctx.upstream) {
            let policy = &rt.upstreams[up as usize].failure;
            let elapsed = ctx.upstream_elapsed.unwrap_or_default();
            let outcome = match (ctx.failure, ctx.upstream_status) {
                (Some(UpstreamFailure::Timeout), _) => Some(UpstreamOutcome::Timeout),
                (Some(UpstreamFailure::Connect), _) => Some(UpstreamOutcome::ConnectError),
                (_, Some(s)) => Some(UpstreamOutcome::Status(s)),
                (Some(UpstreamFailure::Other), None) => Some(UpstreamOutcome::Status(502)),
                (None, None) => None,
            };
            if let Some(o) = outcome {
                p.record(policy.outcome(o, elapsed), Instant::now());
            }
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.status);
        let req = session.req_header();
        let method = HttpMethod::from_bytes(req.method.as_str().as_bytes());
        let elapsed = ctx.start.elapsed();
        if rt.plan.metrics {
            match ctx.route {
                Some(r) => rt.routes[r as usize]
                    .metrics
                    .record(method, status, elapsed),
                None => rt.unrouted.record(method, status, elapsed),
            }
        }
        let log: &AccessLog = &self.engine.access_log;
        if log.is_enabled() {
            let route = ctx.route.map(|r| &*rt.plan.routes[r as usize].name);
            let upstream = ctx.upstream.map(|u| &*rt.plan.upstreams[u as usize].name);
            let endpoint = match (ctx.upstream, ctx.tried.last()) {
                (Some(u), Some(&i)) => Some(&*rt.upstreams[u as usize].balancer.endpoints[i].label),
                _ => None,
            };
            let user = ctx.identity.as_ref().and_then(|i| i.subject.as_deref());
            log.log(&AccessLogRecord {
                ts: SystemTime::now(),
                request_id: ctx.rid(),
                client_ip: ctx.client_ip,
                method: req.method.as_str(),
                path: req.uri.path(),
                route,
                upstream,
                endpoint,
                status,
                bytes_in: session.as_downstream().body_bytes_read() as u64,
                bytes_out: session.as_downstream().body_bytes_sent() as u64,
                duration_ms: crate::observability::duration_ms(elapsed),
                upstream_duration_ms: ctx.upstream_elapsed.map(crate::observability::duration_ms),
                limit: ctx.limit_decision,
                user,
            });
        }
    }
}

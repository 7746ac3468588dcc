//! [`Gateway`]: the `ProxyHttp` implementation. It only sequences the named steps of `steps` (see
//! the chain in the module docs of `proxy`) and keeps the per-request state ([`Ctx`]).
use super::Engine;
use super::{conn, framing, respond, runtime, steps};
use crate::error::{GwError, Side};
use crate::observability::{AccessLog, AccessLogRecord, GaugeGuard, HttpMethod, UpstreamErrorKind};
use crate::plan::FallbackPlan;
use crate::policy::auth::Identity;
use crate::policy::breaker::{Permit, UpstreamOutcome};
use crate::policy::rate_limit::from_plan::KeyFacts;
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use respond::Answer;
use runtime::Runtime;
use smallvec::SmallVec;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use steps::breaker::Breaker;
use steps::classify::UpstreamFailure;

/// The `ProxyHttp` implementation.
pub struct Gateway {
    /// The engine every request of this service uses.
    pub engine: Arc<Engine>,
}

/// Per-request state.
pub struct Ctx {
    rt: Arc<Runtime>,
    start: Instant,
    request_id: HeaderValue,
    /// W3C trace context (set in step 1; `None` if the request ended before it).
    trace: Option<steps::trace::TraceContext>,
    /// Time gw's own checks took (set when `request_filter` lets the request through).
    gateway_elapsed: Option<Duration>,
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

impl Gateway {
    /// The `ProxyHttp` for `engine` (from [`super::server::build_engine`]).
    pub fn new(engine: Arc<Engine>) -> Self {
        Gateway { engine }
    }

    /// Answers a request locally with an error; `Ok(true)` = "response sent" for `request_filter`.
    async fn reject(&self, session: &mut Session, ctx: &mut Ctx, err: GwError) -> Result<bool> {
        ctx.status = err.status;
        let a = Answer::error(&err, ctx.rid());
        respond::write(session, a, &ctx.request_id, &ctx.limit_headers, false).await?;
        Ok(true)
    }

    /// The request as one exported span (see [`crate::observability::otlp`]).
    fn span_record(
        &self,
        rt: &Runtime,
        ctx: &Ctx,
        t: &steps::trace::TraceContext,
        method: http::Method,
        status: u16,
        elapsed: Duration,
    ) -> crate::observability::otlp::SpanRecord {
        let end = SystemTime::now();
        crate::observability::otlp::SpanRecord {
            trace_id: t.trace_id(),
            span_id: t.span_id(),
            parent_span_id: t.parent_span_id(),
            start: end.checked_sub(elapsed).unwrap_or(end),
            end,
            method,
            route: ctx.route.map(|r| rt.plan.routes[r as usize].name.clone()),
            upstream: ctx
                .upstream
                .map(|u| rt.plan.upstreams[u as usize].name.clone()),
            endpoint: match (ctx.upstream, ctx.tried.last()) {
                (Some(u), Some(&i)) => {
                    Some(rt.upstreams[u as usize].balancer.endpoints[i].label.clone())
                }
                _ => None,
            },
            status,
            gateway_elapsed: ctx.gateway_elapsed,
            upstream_elapsed: ctx.upstream_elapsed,
            attempts: ctx.tried.len() as u32,
            request_id: ctx.request_id.clone(),
        }
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

/// The phases gw uses, in the order Pingora calls them for one request. Phases not implemented here
/// keep Pingora's defaults.
#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    /// Runs once per request before anything else: pins the runtime the request will use to the end
    /// (a reload swaps the engine's runtime; this request keeps the one it started with).
    fn new_ctx(&self) -> Ctx {
        Ctx {
            rt: self.engine.runtime(),
            start: Instant::now(),
            request_id: HeaderValue::from_static(""),
            trace: None,
            gateway_elapsed: None,
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

    /// Runs first for every request, before modules: sets the downstream keep-alive and body read
    /// timeouts, tells the connection guard the head has arrived (`conn::on_request_head`), checks
    /// the request framing (`framing::enforce`; `Err` with a 400/501 in `ctx.error` on a violation),
    /// and lets a local answer keep the connection past a small unread body
    /// (`framing::keep_alive_past_unread_body`).
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let s = &ctx.rt.plan.server;
        session.set_keepalive(Some(s.idle_timeout.as_secs().max(1)));
        session
            .as_downstream_mut()
            .set_read_timeout(Some(s.header_timeout));
        conn::on_request_head(session);
        framing::enforce(session, &mut ctx.error)?;
        framing::keep_alive_past_unread_body(session, s.header_timeout);
        Ok(())
    }

    /// Runs once the request head is read: steps 1–7 (request id and client IP, route, body size by
    /// `Content-Length`, auth, rate limits, circuit breaker). `Ok(true)`: a step answered locally (an
    /// error via `respond`, or a static breaker fallback) and the request ends here. `Ok(false)`: go
    /// on to the upstream. `Err`: the answer could not be written (Pingora ends the request).
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let rt = ctx.rt.clone();
        let plan = &rt.plan;
        // 1. request id, client IP
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        ctx.request_id = steps::request_id::request_id(&req.headers);
        ctx.trace = Some(steps::trace::context(&req.headers));
        ctx.client_ip = steps::request_id::client_ip(
            peer,
            &req.headers,
            &plan.server.trusted_proxies,
            plan.server.client_ip_header,
        );
        ctx.original_host = req.headers.get(http::header::HOST).cloned();
        // 2. route
        let route_id = match steps::route::route(plan, req, &mut ctx.upstream_path) {
            Ok(r) => r,
            Err(e) => return self.reject(session, ctx, e).await,
        };
        let route = &plan.routes[route_id as usize];
        ctx.route = Some(route_id);
        ctx.upstream = Some(route.upstream);
        // 3. body size
        ctx.max_body = route.max_body_size.or(plan.server.max_body_size);
        let req = session.req_header();
        if let Err(e) = steps::body_limit::check_declared(ctx.max_body, &req.headers) {
            return self.reject(session, ctx, e).await;
        }
        // 4. auth
        let rrt = &rt.routes[route_id as usize];
        if let (Some(a), Some(policy)) = (route.auth, &rrt.auth_policy) {
            let auth = &rt.auths[a as usize];
            match steps::auth::authenticate(auth, policy, &rrt.auth_metrics, req).await {
                Ok(done) => {
                    ctx.identity = done.identity;
                    ctx.forward = done.forward;
                }
                Err(e) => return self.reject(session, ctx, e).await,
            }
        }
        // 5. rate limits
        let up_name = &plan.upstreams[route.upstream as usize].name;
        let facts = KeyFacts {
            client_ip: ctx.client_ip,
            identity: ctx.identity.as_deref(),
            headers: &session.req_header().headers,
            route: &route.name,
            upstream: up_name,
        };
        let limited = steps::limits::check(&rt, route, &facts).await;
        ctx.limit_headers = limited.headers;
        ctx.limit_decision = limited.decision;
        if let Err(e) = limited.result {
            return self.reject(session, ctx, e).await;
        }
        // 6. circuit breaker
        let breaker = rt.upstreams[route.upstream as usize].breaker.as_ref();
        match steps::breaker::decide(breaker, route.fallback.as_ref(), up_name, Instant::now()) {
            Ok(Breaker::Proceed(p)) => ctx.permit = p,
            Ok(Breaker::Reroute(u)) => ctx.upstream = Some(u),
            Ok(Breaker::Static(FallbackPlan::Static {
                status,
                headers,
                body,
            })) => {
                ctx.status = *status;
                let a = Answer::fallback(*status, headers, body.clone());
                respond::write(session, a, &ctx.request_id, &ctx.limit_headers, true).await?;
                return Ok(true);
            }
            Ok(Breaker::Static(_)) => {}
            Err(e) => return self.reject(session, ctx, e).await,
        }
        ctx.gateway_elapsed = Some(ctx.start.elapsed());
        Ok(false)
    }

    /// Runs for every chunk of the request body as it is read: counts it against the body limit.
    /// `Err` (413): the request ends; [`Self::fail_to_proxy`] answers it.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _eos: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = body {
            if let Err(e) = steps::body_limit::count(&mut ctx.bytes_in, b.len(), ctx.max_body) {
                ctx.error = Some(e);
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        Ok(())
    }

    /// Runs before each connection attempt (again on a retry): step 7, the endpoint pick, and the
    /// attempt's timeouts. `Ok(peer)`: connect there. `Err` (503 no healthy endpoint): the request
    /// ends; [`Self::fail_to_proxy`] answers it.
    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let rt = ctx.rt.clone();
        let (Some(route_id), Some(up_id)) = (ctx.route, ctx.upstream) else {
            ctx.error = Some(GwError::internal("no route selected"));
            return Error::e_explain(ErrorType::HTTPStatus(500), "no route");
        };
        let route = &rt.plan.routes[route_id as usize];
        let up = &rt.upstreams[up_id as usize];
        let up_plan = &rt.plan.upstreams[up_id as usize];
        let key = steps::pick::hash_key(
            up.hash_key.as_ref(),
            ctx.client_ip,
            &ctx.upstream_path,
            &session.req_header().headers,
        );
        let now = Instant::now();
        let Some(pick) = steps::pick::pick(up, &key, &ctx.tried, now) else {
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
        ctx.deadline = t.request.and_then(|d| now.checked_add(d));
        let mut peer = HttpPeer::new(pick.addr, false, String::new());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.request.map_or(t.read, |r| r.min(t.read)));
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        crate::upstream::tunnel::fresh_connection_for_upgrade(&mut peer, session.is_upgrade_req());
        Ok(Box::new(peer))
    }

    /// Runs once connected, before the request head goes upstream: step 8, the forwarded headers.
    /// `Err` (400 for a rewritten path that is not a URI): the request ends; [`Self::fail_to_proxy`]
    /// answers it.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let rt = &ctx.rt;
        let f = steps::forward_headers::Forwarding {
            upstream_path: &ctx.upstream_path,
            injected: &rt.injected,
            claims: &ctx.forward,
            route_host: ctx
                .route
                .and_then(|r| rt.plan.routes[r as usize].host.as_ref()),
            original_host: ctx.original_host.as_ref(),
            peer: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
            request_id: &ctx.request_id,
        };
        let traced = match &ctx.trace {
            Some(t) => steps::trace::apply(upstream_request, t),
            None => Ok(()),
        };
        if let Err(e) = steps::forward_headers::apply(upstream_request, &f).and(traced) {
            let status = e.status;
            ctx.error = Some(e);
            return Error::e_explain(
                ErrorType::HTTPStatus(status),
                "cannot build the upstream request",
            );
        }
        Ok(())
    }

    /// Runs when the upstream's response head arrives: records the status (for the breaker, outlier
    /// detection and endpoint metrics). Never fails.
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

    /// Runs for every chunk of the upstream's response body: enforces the whole-request timeout.
    /// `Err` (a read timeout): the exchange ends (504 if nothing was sent yet).
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

    /// Runs before the upstream's response head goes to the client: adds `X-Request-Id` and the
    /// rate-limit headers; during a drain, the response closes the connection (`conn::on_response`).
    /// `Err` only when a header cannot be set.
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

    /// Runs when a connection to the chosen endpoint fails: records the failure, and allows a retry
    /// (on another endpoint; a failed connect never reached the upstream, so any method is safe) while
    /// the upstream's retries last. Returns the error, marked retryable or not.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let timed_out = matches!(e.etype(), ErrorType::ConnectTimedout);
        if let (Some(up), Some(i)) = (ctx.upstream, ctx.active) {
            ctx.rt.upstreams[up as usize]
                .balancer
                .record_connect_failure(i, Instant::now());
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
        if (ctx.tried.len() as u32) <= retries {
            e.set_retry(true);
        }
        e
    }

    /// Runs when the exchange with a connected upstream fails: decides whether a retry is safe (never
    /// for a request that may have reached the upstream unless it is idempotent and the upstream allows
    /// it). Returns the error, marked retryable or not.
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

    /// Runs when the request fails after `request_filter` (a phase returned `Err`, or the upstream
    /// failed for good): step 9 classifies the error (unless a step already typed it) and, if no
    /// response was sent yet, answers it via `respond` with `Connection: close`. Returns the status
    /// for the log and that the downstream connection is not reused.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let err = match ctx.error.take() {
            Some(g) => g,
            None => {
                let up_name = ctx
                    .upstream
                    .map(|u| ctx.rt.plan.upstreams[u as usize].name.clone())
                    .unwrap_or_else(|| Arc::from(""));
                let (err, failure) = steps::classify::classify(e, &up_name);
                match failure {
                    Some(UpstreamFailure::Other) => {
                        ctx.failure.get_or_insert(UpstreamFailure::Other);
                    }
                    Some(f) => ctx.failure = Some(f),
                    None => {}
                }
                err
            }
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
            let a = Answer::error(&err, ctx.rid());
            if respond::write(session, a, &ctx.request_id, &ctx.limit_headers, false)
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

    /// Runs last for every request, whatever answered it: ends the attempt (in-flight counters,
    /// outlier detection), records the breaker outcome, metrics and the access-log line.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        conn::on_request_end(session);
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
                trace_id: ctx.trace.as_ref().map(|t| t.trace_id_hex()),
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
        if let (Some(x), Some(t)) = (&self.engine.otlp, &ctx.trace) {
            if t.sampled() {
                x.record(self.span_record(&rt, ctx, t, req.method.clone(), status, elapsed));
            }
        }
    }
}

//! What a guard decided ([`Decision`]), what an admitted request carries ([`Pass`]) and the ready
//! answer of a refused one ([`Response`]).
use crate::error::GwError;
use crate::observability::HttpMethod;
use crate::policy::auth::Identity;
use crate::policy::breaker::{Permit, UpstreamOutcome};
use crate::proxy::respond::{self, Answer};
use crate::proxy::runtime::Runtime;
use crate::proxy::steps;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The result of [`super::Policies::check`].
#[derive(Debug)]
#[must_use = "a refused request must be answered with the response"]
pub enum Decision {
    /// Go on to the upstream; keep the pass in your `CTX` until `logging`.
    Allow(Pass),
    /// Answer the client with this response and stop (`request_filter` returns `Ok(true)`).
    Respond(Response),
}

/// How the upstream exchange of an admitted request ended, for the breaker and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status (the breaker counts the statuses its `failure_on`
    /// lists; by default 5xx).
    Status(u16),
    /// The connection to the upstream could not be established (the client gets a 502).
    ConnectFailed,
    /// Connect, write or read timed out (the client gets a 504).
    Timeout,
    /// Nothing to say about the upstream (the client went away, the request never went out): the
    /// breaker records nothing; the metrics record the client status 499.
    Aborted,
}

impl Outcome {
    /// The outcome a Pingora error means, with the gateway's classification (`upstream_peer`,
    /// `fail_to_connect`, `fail_to_proxy`): connect errors, timeouts, other upstream failures (a
    /// 502); `None` when the error is not the upstream's (e.g. the client closed).
    pub fn from_error(e: &pingora::Error) -> Option<Outcome> {
        match steps::classify::classify(e, "").1? {
            steps::classify::UpstreamFailure::Connect => Some(Outcome::ConnectFailed),
            steps::classify::UpstreamFailure::Timeout => Some(Outcome::Timeout),
            steps::classify::UpstreamFailure::Other => Some(Outcome::Status(502)),
        }
    }

    fn client_status(self) -> u16 {
        match self {
            Outcome::Status(s) => s,
            Outcome::ConnectFailed => 502,
            Outcome::Timeout => 504,
            Outcome::Aborted => 499,
        }
    }
}

/// An admitted request: what to add to the upstream request and to the response, and the breaker
/// permit to settle. Dropping it without [`Pass::report`] records nothing (a half-open probe slot is
/// released).
pub struct Pass {
    pub(super) rt: Arc<Runtime>,
    pub(super) route: u32,
    pub(super) upstream: u32,
    pub(super) permit: Option<Permit>,
    pub(super) identity: Option<Arc<Identity>>,
    pub(super) forward: Vec<(HeaderName, HeaderValue)>,
    pub(super) limit_headers: Vec<(&'static str, HeaderValue)>,
    pub(super) request_id: HeaderValue,
    pub(super) method: HttpMethod,
    pub(super) start: Instant,
}

impl std::fmt::Debug for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pass")
            .field("guard", &self.guard())
            .field("upstream", &self.upstream())
            .field("subject", &self.subject())
            .finish_non_exhaustive()
    }
}

impl Pass {
    /// The guard that admitted the request.
    pub fn guard(&self) -> &str {
        &self.rt.plan.routes[self.route as usize].name
    }

    /// The upstream to send the request to: the guard's, or — while its breaker is open and the
    /// route has `fallback: { type: upstream }` — the fallback upstream (see [`Pass::rerouted`]).
    pub fn upstream(&self) -> &str {
        &self.rt.plan.upstreams[self.upstream as usize].name
    }

    /// Whether the breaker sent the request to the fallback upstream.
    pub fn rerouted(&self) -> bool {
        self.upstream != self.rt.plan.routes[self.route as usize].upstream
    }

    /// The verified token's `sub`, when the guard's JWT policy verified one.
    pub fn subject(&self) -> Option<&str> {
        self.identity.as_ref()?.subject.as_deref()
    }

    /// The verified token's claims, when the guard's JWT policy verified one.
    pub fn claims(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.identity.as_ref().map(|i| &i.claims)
    }

    /// The request id: the client's `X-Request-Id` when sane, else a new one.
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// Headers to set on the upstream request: the claims the JWT policy forwards.
    pub fn upstream_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.forward
    }

    /// Headers to set on the response: the rate-limit headers (`RateLimit-Policy`, `RateLimit`, ...).
    pub fn downstream_headers(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        self.limit_headers.iter().map(|(k, v)| (*k, v))
    }

    /// For `upstream_request_filter`: removes every header some JWT policy of the plan injects (a
    /// client must never be able to set them, on any guard), then sets [`Pass::upstream_headers`].
    /// `Err` only when a header cannot be set.
    pub fn apply_upstream(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        steps::forward_headers::apply_identity(req, &self.rt.injected, &self.forward).map_err(|e| {
            pingora::Error::explain(pingora::ErrorType::InternalError, e.message.into_owned())
        })
    }

    /// For `response_filter`: sets [`Pass::downstream_headers`].
    pub fn apply_downstream(&self, resp: &mut ResponseHeader) -> pingora::Result<()> {
        for (k, v) in &self.limit_headers {
            resp.insert_header(*k, v.clone())?;
        }
        Ok(())
    }

    /// The answer for a Pingora error of this request's upstream exchange (for `fail_to_proxy`), from
    /// the gateway's one error map: 502 `upstream_unavailable`, 504 `upstream_timeout`, ... with the
    /// JSON body and this request's id and rate-limit headers.
    pub fn error_response(&self, e: &pingora::Error) -> Response {
        let (err, _) = steps::classify::classify(e, self.upstream());
        let rid = self.request_id.to_str().unwrap_or("-");
        Response::from_answer(
            Answer::error(&err, rid),
            &self.request_id,
            &self.limit_headers,
            false,
            Some(err.code),
        )
    }

    /// For `logging`: records how the upstream exchange ended — the breaker outcome (with
    /// `upstream_latency`, for its slow-call rate), `gw_requests_total` and
    /// `gw_request_duration_seconds` of the guard (time since the check).
    pub fn report(mut self, outcome: Outcome, upstream_latency: Duration) {
        let up = &self.rt.upstreams[self.upstream as usize];
        if let Some(p) = self.permit.take() {
            let o = match outcome {
                Outcome::Status(s) => Some(UpstreamOutcome::Status(s)),
                Outcome::ConnectFailed => Some(UpstreamOutcome::ConnectError),
                Outcome::Timeout => Some(UpstreamOutcome::Timeout),
                Outcome::Aborted => None,
            };
            if let Some(o) = o {
                p.record(up.failure.outcome(o, upstream_latency), Instant::now());
            }
        }
        if self.rt.plan.metrics {
            self.rt.routes[self.route as usize].metrics.record(
                self.method,
                outcome.client_status(),
                self.start.elapsed(),
            );
        }
    }
}

/// A ready answer for a refused request (or a breaker's static fallback).
#[derive(Debug)]
pub struct Response {
    /// Status, `Content-Type`, `Content-Length`, `X-Request-Id`, the error's own headers
    /// (`WWW-Authenticate`, `Retry-After`, ...) and the rate-limit headers.
    pub header: ResponseHeader,
    /// The body: `{"error": "<code>", "message": "...", "request_id": "..."}` for an error, the
    /// configured body for a fallback.
    pub body: Bytes,
    /// The error code (`unauthorized`, `rate_limited`, `circuit_open`, ...); `None` for a fallback.
    pub code: Option<&'static str>,
}

impl Response {
    pub(super) fn error(
        e: &GwError,
        request_id: &HeaderValue,
        limit_headers: &[(&'static str, HeaderValue)],
        code: Option<&'static str>,
    ) -> Response {
        let rid = request_id.to_str().unwrap_or("-");
        Response::from_answer(
            Answer::error(e, rid),
            request_id,
            limit_headers,
            false,
            code,
        )
    }

    pub(super) fn from_answer(
        a: Answer<'_>,
        request_id: &HeaderValue,
        limit_headers: &[(&'static str, HeaderValue)],
        fallback: bool,
        code: Option<&'static str>,
    ) -> Response {
        let body = a.body.clone();
        let header = respond::head(&a, request_id, limit_headers, fallback).unwrap_or_else(|_| {
            // only a header that cannot be set gets here: a bare answer with the same status
            ResponseHeader::build(a.status, None)
                .unwrap_or_else(|_| ResponseHeader::build(500, None).expect("500 is a status"))
        });
        Response { header, body, code }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.header.status.as_u16()
    }

    /// Writes the answer (head and body) to the client of `session`.
    pub async fn write(self, session: &mut Session) -> pingora::Result<()> {
        session
            .write_response_header(Box::new(self.header), false)
            .await?;
        session.write_response_body(Some(self.body), true).await
    }
}

//! Optional OTLP/HTTP (protobuf) export of one span per request (`observability.tracing.otlp`).
//!
//! The request path builds a small [`SpanRecord`] (ids, times, `Arc` names, no formatting) and
//! hands it to [`OtlpExport::record`], a `try_send` on a bounded channel: it never waits. When the
//! queue is full the span is dropped and `gw_trace_spans_dropped_total` counts it. One exporter
//! thread (its own single-threaded Tokio runtime, so it never competes with the proxy's) turns
//! records into `opentelemetry_sdk` [`SpanData`] and sends them in batches of at most `batch_size`,
//! at least every `interval`, through `opentelemetry-otlp`'s HTTP exporter over gw's own reqwest
//! client (rustls). Spans of a failed export are counted in `gw_trace_spans_failed_total`.
//!
//! Only sampled requests are exported (the client's sampled flag is respected; traces gw starts are
//! sampled). The exporter is built at start-up and, like the access log, is not rebuilt on reload.
use crate::observability::Metrics;
use crate::plan::OtlpPlan;
use async_trait::async_trait;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// What the request path knows about one finished request, cheap to build and move.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    /// gw's span (the parent of the upstream's).
    pub span_id: [u8; 8],
    /// The client's span, `None` when gw started the trace.
    pub parent_span_id: Option<[u8; 8]>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub method: http::Method,
    pub route: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    /// `host:port` of the last upstream attempt.
    pub endpoint: Option<Arc<str>>,
    /// Status sent to the client.
    pub status: u16,
    /// Time from the request head to the end of gw's own checks (route, auth, limits, breaker).
    pub gateway_elapsed: Option<Duration>,
    /// Time of the last upstream attempt (connect to response end).
    pub upstream_elapsed: Option<Duration>,
    /// Attempts made (retries included).
    pub attempts: u32,
    pub request_id: http::HeaderValue,
}

/// What the request path and the shutdown send to the exporter thread.
enum Msg {
    Span(SpanRecord),
    /// Export what is batched now, then answer on the channel (graceful shutdown).
    Flush(SyncSender<()>),
}

/// The export handle held by the engine. Dropping it lets the exporter thread send what is queued
/// and end.
pub struct OtlpExport {
    tx: Option<SyncSender<Msg>>,
    dropped: IntCounter,
    thread: Option<JoinHandle<()>>,
}

/// The counters of the exporter, registered in the engine's registry.
struct Counters {
    dropped: IntCounter,
    exported: IntCounter,
    failed: IntCounter,
}

impl Counters {
    fn register(m: &Metrics) -> Result<Self, String> {
        let reg = |name: &str, help: &str| -> Result<IntCounter, String> {
            let c = IntCounter::new(name, help).map_err(|e| e.to_string())?;
            m.registry()
                .register(Box::new(c.clone()))
                .map_err(|e| e.to_string())?;
            Ok(c)
        };
        Ok(Counters {
            dropped: reg(
                "gw_trace_spans_dropped_total",
                "Spans dropped because the OTLP export queue was full.",
            )?,
            exported: reg(
                "gw_trace_spans_exported_total",
                "Spans accepted by the OTLP collector.",
            )?,
            failed: reg(
                "gw_trace_spans_failed_total",
                "Spans of OTLP export requests that failed (after the exporter's retries).",
            )?,
        })
    }
}

impl OtlpExport {
    /// Registers the `gw_trace_*` counters and starts the exporter thread.
    pub fn start(plan: &OtlpPlan, metrics: &Metrics) -> Result<Self, String> {
        let counters = Counters::register(metrics)?;
        let exporter = build_exporter(plan)?;
        let (tx, rx) = mpsc::sync_channel(plan.queue_size);
        let dropped = counters.dropped.clone();
        let (batch, interval) = (plan.batch_size, plan.interval);
        let resource = Resource::builder_empty()
            .with_service_name(plan.service_name.clone())
            .build();
        let thread = std::thread::Builder::new()
            .name("gw-otlp".into())
            .spawn(move || run(exporter, resource, rx, batch, interval, counters))
            .map_err(|e| format!("cannot start the exporter thread: {e}"))?;
        Ok(OtlpExport {
            tx: Some(tx),
            dropped,
            thread: Some(thread),
        })
    }

    /// Queues a span for export; drops (and counts) it when the queue is full. Never blocks.
    pub fn record(&self, span: SpanRecord) {
        if let Some(tx) = &self.tx {
            if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Span(span)) {
                self.dropped.inc();
            }
        }
    }

    /// Spans dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Asks the exporter to send everything queued before this call now and waits for it, at most
    /// `limit`; whether it finished in time. Called once the gateway shuts down gracefully, so that
    /// spans still batched (up to `interval` old) are not lost with the process.
    pub fn flush(&self, limit: Duration) -> bool {
        let Some(tx) = &self.tx else { return true };
        let deadline = Instant::now() + limit;
        let (ack, done) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(ack);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// Stops accepting spans and waits for the exporter to send what was queued.
    pub fn shutdown(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for OtlpExport {
    fn drop(&mut self) {
        // the thread sends what is queued and ends on its own (not joined: never hold up a shutdown)
        self.tx = None;
    }
}

fn build_exporter(plan: &OtlpPlan) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let client = reqwest::Client::builder()
        .timeout(plan.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("OTLP HTTP client: {e}"))?;
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(plan.endpoint.clone())
        .with_timeout(plan.timeout)
        .with_headers(plan.headers.iter().cloned().collect())
        .with_http_client(ReqwestClient(client))
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))
}

/// The exporter thread: batches by size and age, exports, counts; ends when the handle is gone.
fn run(
    mut exporter: opentelemetry_otlp::SpanExporter,
    resource: Resource,
    rx: Receiver<Msg>,
    batch: usize,
    interval: Duration,
    counters: Counters,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "OTLP export disabled: cannot start its runtime");
            return;
        }
    };
    exporter.set_resource(&resource);
    let scope = InstrumentationScope::builder("gw")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut open = true;
    while open {
        // wait for a first span, then fill the batch until it is full or `interval` old
        let first = match rx.recv() {
            Ok(Msg::Span(s)) => s,
            Ok(Msg::Flush(ack)) => {
                let _ = ack.try_send(());
                continue;
            }
            Err(_) => break,
        };
        let deadline = Instant::now() + interval;
        let mut spans = vec![to_span_data(first, &scope)];
        let mut flushed = None;
        while spans.len() < batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Msg::Span(s)) => spans.push(to_span_data(s, &scope)),
                Ok(Msg::Flush(ack)) => {
                    flushed = Some(ack);
                    break;
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let n = spans.len() as u64;
        match rt.block_on(exporter.export(spans)) {
            Ok(()) => counters.exported.inc_by(n),
            Err(e) => {
                counters.failed.inc_by(n);
                tracing::warn!(error = %e, spans = n, "OTLP export failed");
            }
        }
        if let Some(ack) = flushed {
            let _ = ack.try_send(());
        }
    }
    let _ = exporter.shutdown();
}

/// One request as an OTLP server span, with OpenTelemetry's HTTP attribute names where they exist.
pub fn to_span_data(r: SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let method = r.method.as_str().to_owned();
    let name = match &r.route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.response.status_code", i64::from(r.status)),
        KeyValue::new("gw.attempts", i64::from(r.attempts)),
    ];
    if let Some(route) = r.route {
        attributes.push(KeyValue::new("http.route", route.to_string()));
    }
    if let Some(u) = r.upstream {
        attributes.push(KeyValue::new("gw.upstream", u.to_string()));
    }
    if let Some(e) = r.endpoint {
        attributes.push(KeyValue::new("gw.endpoint", e.to_string()));
    }
    if let Ok(id) = r.request_id.to_str() {
        attributes.push(KeyValue::new("gw.request_id", id.to_owned()));
    }
    if let Some(d) = r.gateway_elapsed {
        attributes.push(KeyValue::new("gw.gateway_ms", super::duration_ms(d)));
    }
    if let Some(d) = r.upstream_elapsed {
        attributes.push(KeyValue::new("gw.upstream_ms", super::duration_ms(d)));
    }
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(r.trace_id),
            SpanId::from_bytes(r.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: r.parent_span_id.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: r.parent_span_id.is_some(),
        span_kind: SpanKind::Server,
        name: name.into(),
        start_time: r.start,
        end_time: r.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if r.status >= 500 {
            Status::error(format!("HTTP {}", r.status))
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    }
}

/// `opentelemetry-http`'s client trait over gw's reqwest (rustls, already in the build).
#[derive(Debug)]
struct ReqwestClient(reqwest::Client);

/// Largest collector response read (the OTLP response is a small status message).
const MAX_RESPONSE: usize = 1 << 20;

#[async_trait]
impl HttpClient for ReqwestClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut resp = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if out.len() + chunk.len() > MAX_RESPONSE {
                return Err("OTLP collector response too large".into());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Response::builder().status(status).body(Bytes::from(out))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: u16, parent: Option<[u8; 8]>) -> SpanRecord {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        SpanRecord {
            trace_id: [7; 16],
            span_id: [1; 8],
            parent_span_id: parent,
            start: t,
            end: t + Duration::from_millis(5),
            method: http::Method::GET,
            route: Some("users".into()),
            upstream: Some("users-svc".into()),
            endpoint: Some("127.0.0.1:1".into()),
            status,
            gateway_elapsed: Some(Duration::from_micros(250)),
            upstream_elapsed: Some(Duration::from_millis(4)),
            attempts: 1,
            request_id: http::HeaderValue::from_static("rid-1"),
        }
    }

    #[test]
    fn a_record_becomes_a_server_span() {
        let scope = InstrumentationScope::builder("gw").build();
        let s = to_span_data(rec(200, Some([2; 8])), &scope);
        assert_eq!(s.name, "GET users");
        assert_eq!(s.span_kind, SpanKind::Server);
        assert_eq!(s.span_context.trace_id(), TraceId::from_bytes([7; 16]));
        assert_eq!(s.parent_span_id, SpanId::from_bytes([2; 8]));
        assert!(s.parent_span_is_remote);
        assert_eq!(s.status, Status::Unset);
        let attr = |k: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attr("http.route").as_deref(), Some("users"));
        assert_eq!(attr("http.response.status_code").as_deref(), Some("200"));
        assert_eq!(attr("gw.upstream_ms").as_deref(), Some("4"));
        let root = to_span_data(rec(503, None), &scope);
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        assert!(matches!(root.status, Status::Error { .. }));
    }
}

//! W3C trace context and OTLP span export end to end: the in-process gateway in front of real
//! upstreams; the OTLP collector is a testkit upstream that records the request bodies, decoded here
//! with the official OpenTelemetry protobuf types (`opentelemetry-proto`).

use gateway_testkit::wait::Wait;
use gateway_testkit::{http_client, send, Method, Mode, RecordedRequest, Upstream};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};
use prost::Message;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DEADLINE: Duration = Duration::from_secs(10);
const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn temp_log(tag: &str) -> std::path::PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    std::env::temp_dir().join(format!(
        "gw-tracing-{tag}-{}-{nanos}.log",
        std::process::id()
    ))
}

/// The `traceparent` the upstream got for the request with id `rid`.
fn forwarded(up: &Upstream, rid: &str) -> RecordedRequest {
    up.requests()
        .into_iter()
        .find(|r| r.header("x-request-id").as_deref() == Some(rid))
        .unwrap_or_else(|| panic!("request {rid} did not reach the upstream"))
}

/// `(trace id, span id, flags)` of a version-00 header gw sent.
fn fields(tp: &str) -> (&str, &str, &str) {
    assert_eq!(tp.len(), 55, "{tp}");
    assert!(tp.starts_with("00-"), "{tp}");
    (&tp[3..35], &tp[36..52], &tp[53..55])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_is_joined_or_replaced_and_the_trace_id_is_logged() {
    let up = Upstream::start("svc").await;
    let log = temp_log("log");
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
observability: { access_log: { type: file, path: "{{LOG}}" } }
upstreams: [{ name: svc, endpoints: [{ address: "{{A}}" }] }]
routes: [{ name: r, match: { prefix: / }, upstream: svc }]
"#,
        &[
            ("A", up.addr().to_string()),
            ("LOG", log.to_string_lossy().into_owned()),
        ],
    )
    .await;
    let c = http_client();
    let url = format!("{}/x", gw.url());
    let get = |rid: &'static str, extra: Vec<(&'static str, String)>| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let mut h: Vec<(&str, &str)> = vec![("x-request-id", rid)];
            h.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
            let r = send(&c, Method::GET, &url, &h, "").await;
            assert_eq!(r.status, 200, "{rid}");
        }
    };

    // a valid header: same trace, gw's own span as the parent, sampled flag and tracestate kept
    get(
        "joined",
        vec![
            ("traceparent", VALID.into()),
            (
                "tracestate",
                "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".into(),
            ),
        ],
    )
    .await;
    let r = forwarded(&up, "joined");
    let tp = r.header("traceparent").unwrap();
    let (trace, span, flags) = fields(&tp);
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(span, "00f067aa0ba902b7");
    assert_ne!(span, "0000000000000000");
    assert_eq!(flags, "01");
    assert_eq!(
        r.header("tracestate").as_deref(),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );
    let mut expected_ids = vec![("joined", trace.to_string())];

    // unsampled stays unsampled; a later version is read by the version-00 layout
    get(
        "unsampled",
        vec![("traceparent", VALID.replace("-01", "-00"))],
    )
    .await;
    let tp = forwarded(&up, "unsampled").header("traceparent").unwrap();
    assert_eq!(fields(&tp).0, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(fields(&tp).2, "00");
    get(
        "future",
        vec![("traceparent", format!("cc{}-later-fields", &VALID[2..]))],
    )
    .await;
    let tp = forwarded(&up, "future").header("traceparent").unwrap();
    assert_eq!(fields(&tp).0, "4bf92f3577b34da6a3ce929d0e0e4736");

    // invalid or absent: a new trace, sampled; the client's header and tracestate never go upstream
    let invalid: [(&'static str, String); 7] = [
        ("ff", format!("ff{}", &VALID[2..])),
        (
            "zero-trace",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
        ),
        (
            "zero-span",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".into(),
        ),
        ("upper", VALID.to_uppercase()),
        ("long", format!("{VALID}-01")),
        ("short", VALID[..54].into()),
        ("junk", "hello".into()),
    ];
    for (rid, bad) in &invalid {
        get(
            rid,
            vec![("traceparent", bad.clone()), ("tracestate", "a=b".into())],
        )
        .await;
        let r = forwarded(&up, rid);
        let lines: Vec<_> = r.headers.get_all("traceparent").iter().collect();
        assert_eq!(lines.len(), 1, "{rid}");
        let tp = r.header("traceparent").unwrap();
        assert_ne!(&tp, bad, "{rid}: forwarded as it came");
        let (trace, _, flags) = fields(&tp);
        assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "{rid}");
        assert_ne!(trace, "00000000000000000000000000000000", "{rid}");
        assert_eq!(flags, "01", "{rid}");
        assert!(r.header("tracestate").is_none(), "{rid}: stale tracestate");
        expected_ids.push((rid, trace.to_string()));
    }
    get("none", vec![]).await;
    let tp = forwarded(&up, "none").header("traceparent").unwrap();
    let fresh = fields(&tp).0.to_string();
    assert!(expected_ids.iter().all(|(_, t)| *t != fresh));
    expected_ids.push(("none", fresh));
    // two traceparent lines: ambiguous, replaced
    get(
        "two",
        vec![("traceparent", VALID.into()), ("traceparent", VALID.into())],
    )
    .await;
    let tp = forwarded(&up, "two").header("traceparent").unwrap();
    assert_ne!(fields(&tp).0, "4bf92f3577b34da6a3ce929d0e0e4736");

    // the access log line of each request carries the trace id the upstream saw
    let want = expected_ids.len();
    let lines: Vec<serde_json::Value> = Wait::new("access log lines", DEADLINE)
        .every(Duration::from_millis(20))
        .poll(|| {
            gw.engine.access_log.flush().expect("flush");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("JSON line"))
                .collect();
            std::future::ready(if lines.len() >= want + 3 {
                Ok(lines)
            } else {
                Err(lines.len())
            })
        })
        .await;
    for (rid, trace) in &expected_ids {
        let line = lines
            .iter()
            .find(|l| l["request_id"] == *rid)
            .unwrap_or_else(|| panic!("no line for {rid}"));
        assert_eq!(line["trace_id"], *trace.as_str(), "{rid}");
    }
    let _ = std::fs::remove_file(&log);
}

/// Every span the collector received so far.
fn spans(collector: &Upstream) -> Vec<Span> {
    collector
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/traces")
        .flat_map(|r| {
            assert_eq!(r.method, Method::POST);
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("application/x-protobuf")
            );
            assert!(r.body_complete, "export body cut");
            let req = ExportTraceServiceRequest::decode(r.body.clone()).expect("OTLP protobuf");
            let rs = req.resource_spans;
            assert!(rs.iter().all(|rs| {
                rs.resource.as_ref().is_some_and(|res| {
                    res.attributes.iter().any(|kv| {
                        kv.key == "service.name" && attr_str(kv.value.as_ref()) == Some("edge-gw")
                    })
                })
            }));
            rs.into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn attr_str(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<&str> {
    match v?.value.as_ref()? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn attr(s: &Span, key: &str) -> Option<String> {
    let v = s
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_exports_one_span_per_sampled_request() {
    let up = Upstream::start("svc").await;
    let down = Upstream::start("down").await;
    down.set_mode(Mode::Fail(503));
    let collector = Upstream::start("collector").await;
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
observability:
  tracing:
    otlp:
      endpoint: "{{C}}/v1/traces"
      service_name: edge-gw
      headers: { x-api-key: secret-1 }
      batch_size: 8
      interval: 100ms
      timeout: 5s
upstreams:
  - { name: svc, endpoints: [{ address: "{{A}}" }] }
  - { name: down, endpoints: [{ address: "{{D}}" }] }
routes:
  - { name: api, match: { prefix: /api }, upstream: svc }
  - { name: broken, match: { prefix: /broken }, upstream: down }
"#,
        &[
            ("A", up.addr().to_string()),
            ("D", down.addr().to_string()),
            ("C", collector.url()),
        ],
    )
    .await;
    let c = http_client();
    let base = gw.url();
    let r = send(
        &c,
        Method::GET,
        &format!("{base}/api/a"),
        &[("x-request-id", "joined"), ("traceparent", VALID)],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let unsampled = VALID.replace("-01", "-00");
    let r = send(
        &c,
        Method::GET,
        &format!("{base}/api/b"),
        &[("x-request-id", "unsampled"), ("traceparent", &unsampled)],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        &c,
        Method::POST,
        &format!("{base}/broken"),
        &[("x-request-id", "broken")],
        "x",
    )
    .await;
    assert_eq!(r.status, 503);
    let r = send(
        &c,
        Method::GET,
        &format!("{base}/nowhere"),
        &[("x-request-id", "unrouted")],
        "",
    )
    .await;
    assert_eq!(r.status, 404);

    let got = Wait::new("three exported spans", DEADLINE)
        .every(Duration::from_millis(50))
        .poll(|| {
            let s = spans(&collector);
            std::future::ready(if s.len() >= 3 { Ok(s) } else { Err(s.len()) })
        })
        .await;
    // give a wrongly exported unsampled span the time of one more batch to show up
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_all = spans(&collector);
    assert_eq!(got_all.len(), 3, "unsampled request exported? {got_all:#?}");
    assert_eq!(got.len(), 3);
    let by_rid = |rid: &str| {
        got_all
            .iter()
            .find(|s| attr(s, "gw.request_id").as_deref() == Some(rid))
            .unwrap_or_else(|| panic!("no span for {rid}"))
            .clone()
    };
    let auth = collector
        .requests()
        .iter()
        .find(|r| r.path == "/v1/traces")
        .and_then(|r| r.header("x-api-key"));
    assert_eq!(auth.as_deref(), Some("secret-1"));

    // the joined request: the client's trace, the client's span as parent, gw's span = the
    // parent the upstream was given
    let s = by_rid("joined");
    let tp = forwarded(&up, "joined").header("traceparent").unwrap();
    let (trace, span, _) = fields(&tp);
    assert_eq!(hex(&s.trace_id), trace);
    assert_eq!(hex(&s.span_id), span);
    assert_eq!(hex(&s.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(s.name, "GET api");
    assert_eq!(s.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(attr(&s, "http.route").as_deref(), Some("api"));
    assert_eq!(attr(&s, "gw.upstream").as_deref(), Some("svc"));
    assert_eq!(attr(&s, "gw.endpoint"), Some(up.addr().to_string()));
    assert_eq!(attr(&s, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(
        attr(&s, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(attr(&s, "gw.gateway_ms").is_some() && attr(&s, "gw.upstream_ms").is_some());
    assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);
    assert_ne!(
        s.status.as_ref().map(|st| st.code),
        Some(StatusCode::Error as i32)
    );

    // a 5xx is an error span; gw started that trace (no parent), the upstream got gw's span
    let s = by_rid("broken");
    let tp = forwarded(&down, "broken").header("traceparent").unwrap();
    assert_eq!(hex(&s.trace_id), fields(&tp).0);
    assert_eq!(hex(&s.span_id), fields(&tp).1);
    assert!(s.parent_span_id.is_empty() || s.parent_span_id == [0; 8]);
    assert_eq!(
        s.status.as_ref().map(|st| st.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        attr(&s, "http.response.status_code").as_deref(),
        Some("503")
    );
    // answered by gw itself: a span without a route or upstream
    let s = by_rid("unrouted");
    assert_eq!(s.name, "GET");
    assert_eq!(attr(&s, "http.route"), None);
    assert_eq!(
        attr(&s, "http.response.status_code").as_deref(),
        Some("404")
    );
    assert_eq!(gw.engine.otlp.as_ref().expect("exporter").dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_collector_drops_and_counts_spans_and_never_holds_a_request() {
    let up = Upstream::start("svc").await;
    let collector = Upstream::start("stuck").await;
    collector.set_mode(Mode::Hang);
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
observability:
  tracing:
    otlp: { endpoint: "{{C}}/v1/traces", queue_size: 1, batch_size: 1, interval: 10ms, timeout: 60s }
upstreams: [{ name: svc, endpoints: [{ address: "{{A}}" }] }]
routes: [{ name: r, match: { prefix: / }, upstream: svc }]
"#,
        &[("A", up.addr().to_string()), ("C", collector.url())],
    )
    .await;
    let c = http_client();
    for _ in 0..12 {
        let r = send(&c, Method::GET, &format!("{}/x", gw.url()), &[], "").await;
        assert_eq!(r.status, 200);
    }
    // the exporter holds at most one span (its stuck export) and the queue one more
    let x = gw.engine.otlp.as_ref().expect("exporter");
    let dropped = Wait::new("10 dropped spans", DEADLINE)
        .every(Duration::from_millis(20))
        .poll(|| {
            std::future::ready(if x.dropped() >= 10 {
                Ok(x.dropped())
            } else {
                Err(x.dropped())
            })
        })
        .await;
    assert!(dropped <= 12);
    let m = gateway_testkit::raw_request(
        gw.admin_addr.expect("admin"),
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("scrape");
    let text = m.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("gw_trace_spans_dropped_total "))
        .unwrap_or_else(|| panic!("no drop counter in {text}"));
    assert_eq!(line, format!("gw_trace_spans_dropped_total {dropped}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_batched_are_exported_when_the_gateway_stops() {
    let up = Upstream::start("svc").await;
    let collector = Upstream::start("collector").await;
    // a batch that would only go out after a minute
    let gw = gw_suite::gateway(
        r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
observability:
  tracing:
    otlp: { endpoint: "{{C}}/v1/traces", service_name: edge-gw, batch_size: 512, interval: 60s, timeout: 5s }
upstreams: [{ name: svc, endpoints: [{ address: "{{A}}" }] }]
routes: [{ name: r, match: { prefix: / }, upstream: svc }]
"#,
        &[("A", up.addr().to_string()), ("C", collector.url())],
    )
    .await;
    let c = http_client();
    for _ in 0..3 {
        let r = send(&c, Method::GET, &format!("{}/x", gw.url()), &[], "").await;
        assert_eq!(r.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(spans(&collector).len(), 0, "batched, not sent yet");
    gw.stop();
    let got = Wait::new("the three batched spans after stop", DEADLINE)
        .every(Duration::from_millis(50))
        .poll(|| {
            let s = spans(&collector);
            std::future::ready(if s.len() >= 3 { Ok(s) } else { Err(s.len()) })
        })
        .await;
    assert_eq!(got.len(), 3);
}

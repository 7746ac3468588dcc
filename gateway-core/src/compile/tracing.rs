//! `observability.tracing`: checks the OTLP export settings and applies their defaults.
use super::Cx;
use crate::config::TracingConfig;
use crate::plan::OtlpPlan;
use std::time::Duration;

const BASE: &str = "observability.tracing.otlp";
/// Largest accepted `queue_size` (spans held in memory while the collector is slow).
pub const MAX_QUEUE: usize = 1_000_000;

/// The export plan, `None` when off or invalid (errors are reported on `cx`).
pub(crate) fn otlp(t: &TracingConfig, cx: &mut Cx) -> Option<OtlpPlan> {
    let o = t.otlp.as_ref()?;
    let before = cx.error_count();
    let e = o.endpoint.trim();
    let uri_ok = (e.starts_with("http://") || e.starts_with("https://"))
        && e.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
    if !uri_ok {
        cx.error(
            &format!("{BASE}.endpoint"),
            format!("{e:?} is not an http:// or https:// URL"),
            Some("the full traces URL, e.g. http://127.0.0.1:4318/v1/traces".into()),
        );
    }
    for (k, v) in &o.headers {
        if http::HeaderName::try_from(k.as_str()).is_err()
            || http::HeaderValue::try_from(v.as_str()).is_err()
        {
            cx.error_at_key(
                &format!("{BASE}.headers.{k}"),
                format!("header {k:?} is not a valid HTTP header name and value"),
                None,
            );
        }
    }
    let queue_size = o.queue_size.unwrap_or(2048);
    let batch_size = o.batch_size.unwrap_or(512.min(queue_size));
    if !(1..=MAX_QUEUE).contains(&queue_size) {
        cx.error(
            &format!("{BASE}.queue_size"),
            format!("queue_size must be between 1 and {MAX_QUEUE}"),
            None,
        );
    }
    if batch_size == 0 || batch_size > queue_size {
        cx.error(
            &format!("{BASE}.batch_size"),
            format!("batch_size must be between 1 and queue_size ({queue_size})"),
            None,
        );
    }
    let interval = positive(cx, "interval", o.interval.map(|d| d.get()), 1);
    let timeout = positive(cx, "timeout", o.timeout.map(|d| d.get()), 10);
    let service_name = o.service_name.clone().unwrap_or_else(|| "gw".into());
    if service_name.is_empty() {
        cx.error(
            &format!("{BASE}.service_name"),
            "service_name must not be empty",
            None,
        );
    }
    (cx.error_count() == before).then(|| OtlpPlan {
        endpoint: e.to_string(),
        headers: o
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        service_name,
        queue_size,
        batch_size,
        interval,
        timeout,
    })
}

fn positive(cx: &mut Cx, field: &str, d: Option<Duration>, default_secs: u64) -> Duration {
    let d = d.unwrap_or(Duration::from_secs(default_secs));
    if d.is_zero() {
        cx.error(
            &format!("{BASE}.{field}"),
            format!("{field} must be greater than zero"),
            None,
        );
    }
    d
}

#[cfg(test)]
mod tests {
    use crate::compile;

    fn cfg(otlp: &str) -> String {
        format!(
            "listeners: [{{ name: l, address: \"127.0.0.1:8080\" }}]\nupstreams: [{{ name: u, endpoints: [{{ address: \"127.0.0.1:9\" }}] }}]\nroutes: [{{ name: r, match: {{ prefix: / }}, upstream: u }}]\nobservability:\n  tracing:\n    otlp: {otlp}\n"
        )
    }

    #[test]
    fn defaults_apply_and_off_is_the_default() {
        let c = compile(
            "t.yaml",
            &cfg("{ endpoint: \"http://127.0.0.1:4318/v1/traces\" }"),
            &|_| None,
        );
        let p = c.plan.unwrap().otlp.unwrap();
        assert_eq!(p.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!((p.queue_size, p.batch_size), (2048, 512));
        assert_eq!(p.interval, std::time::Duration::from_secs(1));
        assert_eq!(p.service_name, "gw");
        let plain = cfg("null").replace("observability:\n  tracing:\n    otlp: null\n", "");
        assert!(compile("t.yaml", &plain, &|_| None)
            .plan
            .unwrap()
            .otlp
            .is_none());
    }

    #[test]
    fn bad_settings_are_errors_at_their_position() {
        let text = cfg("{ endpoint: \"ftp://x\", queue_size: 10, batch_size: 20, interval: 0s }");
        let c = compile("t.yaml", &text, &|_| None);
        let e: Vec<_> = c.diagnostics.iter().filter(|d| d.is_error()).collect();
        let paths: Vec<&str> = e.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "observability.tracing.otlp.endpoint",
                "observability.tracing.otlp.batch_size",
                "observability.tracing.otlp.interval"
            ]
        );
        assert_eq!((e[0].line, e[0].column), (6, 23), "{}", e[0].message);
        assert!(c.plan.is_none());
        // units are explicit, unknown fields are refused
        for bad in [
            "{ endpoint: \"http://127.0.0.1:4318/v1/traces\", interval: 5 }",
            "{ endpoint: \"http://127.0.0.1:4318/v1/traces\", batchsize: 5 }",
        ] {
            let c = compile("t.yaml", &cfg(bad), &|_| None);
            assert!(c.diagnostics.iter().any(|d| d.is_error()), "{bad}");
            assert!(c.plan.is_none());
        }
    }
}

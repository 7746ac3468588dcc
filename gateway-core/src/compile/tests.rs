//! Compiler checks that have no fixture of their own under `tests/fixtures`.
use crate::compile;
use crate::diag::Diagnostic;

fn errors(text: &str) -> Vec<Diagnostic> {
    compile("t.yaml", text, &|_| None)
        .diagnostics
        .into_iter()
        .filter(|d| d.is_error())
        .collect()
}

#[test]
fn a_warning_never_makes_a_policy_invalid() {
    // a short HMAC secret is a warning: the plan must still be built (dry-run and serve use it)
    let text = r#"
listeners: [{ name: l, address: "127.0.0.1:8080" }]
upstreams: [{ name: u, endpoints: [{ address: "127.0.0.1:9" }] }]
policies: [{ name: j, type: jwt, keys: { type: hmac, secret: short } }]
routes: [{ name: r, match: { prefix: / }, upstream: u, policies: [j] }]
"#;
    let c = compile("t.yaml", text, &|_| None);
    assert_eq!(c.errors().count(), 0);
    assert_eq!(c.warnings().count(), 1);
    let plan = c.plan.expect("a plan despite the warning");
    assert_eq!(plan.auths.len(), 1);
}

#[test]
fn a_route_cannot_fall_back_to_its_own_upstream() {
    let text = r#"
listeners: [{ name: l, address: "127.0.0.1:8080" }]
upstreams:
  - name: u
    endpoints: [{ address: "127.0.0.1:9" }]
    circuit_breaker: { failure_threshold: 5, success_threshold: 1, open_duration: 10s }
routes:
  - name: r
    match: { prefix: / }
    upstream: u
    fallback: { type: upstream, upstream: u }
"#;
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "routes[0].fallback.upstream");
    assert_eq!((e[0].line, e[0].column), (11, 43));
    assert!(e[0].message.contains("own upstream"), "{}", e[0].message);
    // another upstream is fine
    let ok = text.replace(
        "upstream: u }",
        "upstream: v }\n  - { name: v2, match: { prefix: /v }, upstream: v }",
    );
    let ok = ok.replace(
        "routes:",
        "  - { name: v, endpoints: [{ address: \"127.0.0.1:10\" }] }\nroutes:",
    );
    assert!(errors(&ok).is_empty(), "{:?}", errors(&ok));
}

#[test]
fn health_probes_send_the_first_endpoints_host() {
    let text = r#"
listeners: [{ name: l, address: "127.0.0.1:8080" }]
upstreams:
  - name: u
    endpoints: [{ address: "[::1]:8080" }, { address: "127.0.0.1:9" }]
    health_check: { path: /health, interval: 5s }
routes: [{ name: r, match: { prefix: / }, upstream: u }]
"#;
    let c = compile("t.yaml", text, &|_| None);
    let plan = c.plan.unwrap_or_else(|| panic!("{:?}", c.diagnostics));
    let hc = plan.upstreams[0].health_check.as_ref().unwrap();
    assert_eq!(hc.host, "[::1]");
    // and the probe really carries it (nothing is dropped on the way)
    let check = crate::upstream::health::http_check(hc, std::sync::Arc::new(|_, _| {}));
    assert_eq!(check.req.headers["host"], "[::1]");
    assert_eq!(
        super::upstreams::probe_host(Some("svc.internal:80")),
        "svc.internal"
    );
    assert_eq!(super::upstreams::probe_host(None), "");
}

#[test]
fn a_breaker_calls_window_is_bounded_not_clamped() {
    let text = r#"
listeners: [{ name: l, address: "127.0.0.1:8080" }]
upstreams:
  - name: u
    endpoints: [{ address: "127.0.0.1:9" }]
    circuit_breaker:
      failure_threshold: 5
      success_threshold: 1
      open_duration: 10s
      rate: { calls: 4294967295, min_calls: 10, failure_rate_percent: 50 }
routes: [{ name: r, match: { prefix: / }, upstream: u }]
"#;
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "upstreams[0].circuit_breaker.rate.calls");
    assert!(e[0].message.contains("too large"), "{}", e[0].message);
    assert!(errors(&text.replace("4294967295", "1000")).is_empty());
}

#[test]
fn worker_threads_default_to_one_per_cpu() {
    let base = "listeners: [{ name: l, address: \"127.0.0.1:8080\" }]\n";
    let threads = |server: &str| {
        compile("t.yaml", &format!("{base}{server}"), &|_| None)
            .plan
            .map(|p| p.server.threads)
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(threads(""), Some(cpus));
    assert_eq!(threads("server: { grace_period: 2s }\n"), Some(cpus));
    assert_eq!(threads("server: { threads: 3 }\n"), Some(3));
    for bad in ["0", "1025"] {
        let e = errors(&format!("{base}server: {{ threads: {bad} }}\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].message
                .contains(&format!("threads must be between 1 and 1024, not {bad}")),
            "{e:?}"
        );
    }
}

#[test]
fn a_rate_limit_claim_path_with_an_empty_part_is_refused() {
    let text = |claim: &str| {
        format!(
            "listeners: [{{ name: l, address: \"127.0.0.1:8080\" }}]\n\
             policies: [{{ name: p, type: rate_limit, window: 1m, max: 5, key: {{ type: jwt_claim, claim: \"{claim}\" }} }}]\n"
        )
    };
    let e = errors(&text("tenant..id"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "policies[0].key.claim");
    assert!(e[0].message.contains("invalid claim path"), "{e:?}");
    assert!(errors(&text("tenant.id")).is_empty());
    assert!(errors(&text("https://example.com/tenant")).is_empty());
}

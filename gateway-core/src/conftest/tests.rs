//! The engine on the shipped seed configuration: every case of `examples/seed.test.yaml` passes, its
//! routing agrees with `gw dry-run`, and the simulated clock drives the real limiter.
use super::harness::{explain, Harness};
use super::load;
use super::FileOutcome;

const SEED: &str = include_str!("../../../examples/seed.yaml");
const SEED_TESTS: &str = include_str!("../../../examples/seed.test.yaml");

fn seed() -> (load::TestFile, crate::plan::Plan) {
    let (t, ds) = load::parse("seed.test.yaml", SEED_TESTS).expect("parse");
    assert!(ds.is_empty(), "{ds:?}");
    let env = |k: &str| t.env.get(k).cloned();
    let c = crate::compile("seed.yaml", SEED, &env);
    let plan = c.plan.unwrap_or_else(|| panic!("{:?}", c.diagnostics));
    (t, plan)
}

#[test]
fn seed_cases_pass() {
    let FileOutcome::Ran(rs) = super::run_file("seed.yaml", SEED, "seed.test.yaml", SEED_TESTS)
    else {
        panic!("seed tests invalid")
    };
    assert!(rs.len() >= 25);
    let failed: Vec<String> = rs
        .iter()
        .filter(|r| !r.passed)
        .map(super::report::case_line)
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

/// `gw test` and `gw dry-run` pick the same route (or none) for every request of the seed file.
#[test]
fn routing_agrees_with_dry_run() {
    let (t, plan) = seed();
    let h = Harness::new(&plan, &t).expect("harness");
    let lim = h.limiter().expect("limiter");
    for c in &t.cases {
        let (req, ip) = h
            .request(&c.case.request, &t.defaults, t.clock_start_ms)
            .expect("request");
        let seen = h.send(&req, ip, &lim, t.clock_start_ms);
        let ex = explain(&plan, &req, ip);
        assert_eq!(seen.route, ex.route, "case {}", c.case.name);
        if seen.route.is_some() {
            assert_eq!(seen.upstream_path, ex.upstream_path, "case {}", c.case.name);
        }
    }
}

/// The clock is the only thing that lets the login quota come back: same instant → 429, a window and
/// a half later → admitted again.
#[test]
fn simulated_clock_drives_the_real_limiter() {
    let (t, plan) = seed();
    let h = Harness::new(&plan, &t).expect("harness");
    let lim = h.limiter().expect("limiter");
    let c = &t.cases[0].case;
    let t0 = t.clock_start_ms;
    let (req, ip) = h.request(&c.request, &t.defaults, t0).expect("request");
    let statuses: Vec<Option<u16>> = (0..6).map(|_| h.send(&req, ip, &lim, t0).status).collect();
    assert_eq!(statuses, [None, None, None, None, None, Some(429)]);
    let later = h.send(&req, ip, &lim, t0 + 60_000 * 2);
    assert_eq!(later.status, None);
    assert_eq!(later.limits[2].remaining, Some(4));
    // a fresh limiter (a new case) starts from zero
    let fresh = h.limiter().expect("limiter");
    assert_eq!(h.send(&req, ip, &fresh, t0).limits[2].remaining, Some(4));
}

/// Under a non-default `server.path_policy`, `gw test` (the serving steps) and `gw dry-run` still
/// agree: dry-run normalises with the configuration's policy, not the default one.
#[test]
fn dry_run_uses_the_configured_path_policy() {
    let yaml = "server: { path_policy: { escaped_slashes: decode } }\n\
                listeners: [{ name: l, address: \"127.0.0.1:0\" }]\n\
                upstreams: [{ name: u, endpoints: [{ address: \"127.0.0.1:9\" }] }]\n\
                routes: [{ name: files, match: { prefix: /files/a }, upstream: u }]\n";
    let tests = "cases:\n  - name: decoded slash\n    request: { path: /files%2Fa/x }\n    expect: { route: files, upstream_path: /files/a/x, status: proxy }\n";
    let (t, ds) = load::parse("t.test.yaml", tests).expect("parse");
    assert!(ds.is_empty());
    let c = crate::compile("t.yaml", yaml, &|_| None);
    let plan = c.plan.unwrap_or_else(|| panic!("{:?}", c.diagnostics));
    let h = Harness::new(&plan, &t).expect("harness");
    let (req, ip) = h
        .request(&t.cases[0].case.request, &t.defaults, t.clock_start_ms)
        .expect("request");
    let ex = explain(&plan, &req, ip);
    assert_eq!(ex.route.as_deref(), Some("files"), "{:?}", ex.outcome);
    assert_eq!(ex.upstream_path.as_deref(), Some("/files/a/x"));
    let FileOutcome::Ran(rs) = super::run_file("t.yaml", yaml, "t.test.yaml", tests) else {
        panic!("invalid")
    };
    assert!(rs[0].passed, "{:?}", rs[0].failures);
}

/// Local answers other than auth and limits (413 by Content-Length, 405 with Allow, 400 for a bad
/// path), the route's Host override, and failures reported with the field, expected and got.
#[test]
fn local_answers_host_override_and_mismatches() {
    let yaml = "listeners: [{ name: l, address: \"127.0.0.1:0\" }]\n\
                upstreams: [{ name: u, endpoints: [{ address: \"127.0.0.1:9\" }] }]\n\
                routes:\n\
                \x20 - { name: up, match: { path: /upload, methods: [PUT] }, upstream: u, max_body_size: 1KiB, rewrite: { host: files.internal } }\n";
    let tests = "cases:\n\
        \x20 - name: too big\n\
        \x20   request: { method: PUT, path: /upload, headers: { Content-Length: \"1025\" } }\n\
        \x20   expect: { route: up, status: 413, error: payload_too_large }\n\
        \x20 - name: fits, host overridden\n\
        \x20   request: { method: PUT, path: /upload, headers: { Content-Length: \"1024\", Host: api.example.com } }\n\
        \x20   expect: { status: proxy, upstream_host: files.internal, upstream_headers: { X-Forwarded-Host: api.example.com } }\n\
        \x20 - name: wrong method\n\
        \x20   request: { path: /upload }\n\
        \x20   expect: { status: 405, headers: { Allow: PUT } }\n\
        \x20 - name: deliberately wrong\n\
        \x20   request: { method: PUT, path: /upload }\n\
        \x20   expect: { status: 404, route: none, upstream_path: /x, headers: { RateLimit: ~ } }\n";
    let rs = match super::run_file("t.yaml", yaml, "t.test.yaml", tests) {
        FileOutcome::Ran(rs) => rs,
        FileOutcome::Invalid(ds) => panic!("{:#?}", ds.iter().map(|d| &d.0).collect::<Vec<_>>()),
    };
    for r in &rs[..3] {
        assert!(r.passed, "{}", super::report::case_line(r));
    }
    let bad = &rs[3];
    assert_eq!(bad.line, 11);
    let got: Vec<(&str, &str, &str)> = bad
        .failures
        .iter()
        .map(|m| (m.field.as_str(), m.expected.as_str(), m.got.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("route", "none", "up"),
            ("upstream_path", "/x", "/upload"),
            ("status", "404", "proxy"),
        ]
    );
    assert_eq!(super::report::summary(&rs), "3 passed, 1 failed");
}

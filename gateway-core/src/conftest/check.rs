//! The checks of a test file that need the compiled configuration: route, upstream and policy names,
//! test keys and their files, auth outcomes, request syntax. Every problem is a positioned diagnostic.
use super::load::{TestCase, TestFile, AUTH_OUTCOMES, AUTH_REASONS};
use super::model::Expect;
use crate::diag::{did_you_mean, Diagnostic, Diags, Severity};
use crate::plan::Plan;
use std::path::Path;

/// The names a test file may refer to, from the compiled configuration.
struct Names<'a> {
    routes: Vec<&'a str>,
    upstreams: Vec<&'a str>,
    jwt: Vec<&'a str>,
    limits: Vec<&'a str>,
}

/// Checks every reference of the test file against the configuration (route, upstream, policy and key
/// names, auth reasons, algorithms, request syntax) and reads the key files.
pub fn check(t: &TestFile, plan: &Plan) -> Vec<Diagnostic> {
    let mut diags = Diags::new(&t.file);
    let names = Names {
        routes: plan.routes.iter().map(|r| &*r.name).collect(),
        upstreams: plan.upstreams.iter().map(|u| &*u.name).collect(),
        jwt: plan.auths.iter().map(|a| &*a.name).collect(),
        limits: plan.rate_limits.iter().map(|l| &*l.name).collect(),
    };
    let sp = &t.spans;
    let mut unknown = |diags: &mut Diags, path: &str, what: &str, got: &str, known: &[&str]| {
        diags.push(
            Severity::Error,
            sp.value(path),
            path,
            if what == "test key" {
                format!("unknown {what} \"{got}\" (not declared under `keys`)")
            } else {
                format!("unknown {what} \"{got}\" (not in the configuration)")
            },
            did_you_mean(got, known.iter().copied())
                .or_else(|| (!known.is_empty()).then(|| format!("known: {}", known.join(", ")))),
        )
    };
    for (i, k) in t.keys.iter().enumerate() {
        let base = format!("keys[{i}]");
        if t.keys[..i].iter().any(|o| o.name == k.name) {
            let p = format!("{base}.name");
            diags.push(
                Severity::Error,
                sp.value(&p),
                &p,
                format!("duplicate key name \"{}\"", k.name),
                None,
            );
        }
        match (&k.hmac, &k.private_key) {
            (Some(_), Some(_)) | (None, None) => diags.push(
                Severity::Error,
                sp.value(&base),
                &base,
                "a key is either `hmac: <secret>` or `private_key: <PEM file>`".into(),
                None,
            ),
            (None, Some(p)) => {
                read_key_file(t, &mut diags, &format!("{base}.private_key"), p);
                match &k.public_key {
                    Some(pk) => read_key_file(t, &mut diags, &format!("{base}.public_key"), pk),
                    None if !k.verifies.is_empty() => {
                        let p = format!("{base}.verifies");
                        diags.push(
                            Severity::Error,
                            sp.key(&p),
                            &p,
                            "a private key that verifies a policy needs its `public_key` file"
                                .into(),
                            Some("openssl pkey -in key.pem -pubout -out key.pub.pem".into()),
                        );
                    }
                    None => {}
                }
            }
            (Some(_), None) => {}
        }
        for (j, v) in k.verifies.iter().enumerate() {
            if !names.jwt.contains(&v.as_str()) {
                unknown(
                    &mut diags,
                    &format!("{base}.verifies[{j}]"),
                    "jwt policy",
                    v,
                    &names.jwt,
                );
            }
        }
    }
    for (k, v) in &t.defaults.headers {
        let p = format!("defaults.headers.{k}");
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(v).is_err()
        {
            diags.push(
                Severity::Error,
                sp.value(&p),
                &p,
                format!("invalid header {k:?}"),
                None,
            );
        }
    }
    if let Some(m) = &t.defaults.method {
        if http::Method::from_bytes(m.as_bytes()).is_err() {
            diags.push(
                Severity::Error,
                sp.value("defaults.method"),
                "defaults.method",
                format!("invalid method {m:?}"),
                None,
            );
        }
    }
    for c in &t.cases {
        let base = format!("cases[{}]", c.index);
        check_request(t, c, &base, &names, &mut diags, &mut unknown);
        let with_steps = sp.contains(&format!("{base}.steps"));
        for (s, step) in c.case.steps.iter().enumerate() {
            let sbase = if with_steps {
                format!("{base}.steps[{s}]")
            } else {
                base.clone()
            };
            let repeat = step.repeat.unwrap_or(1);
            if repeat == 0 || repeat > 100_000 {
                let p = format!("{sbase}.repeat");
                diags.push(
                    Severity::Error,
                    sp.value(&p),
                    &p,
                    "repeat must be between 1 and 100000".into(),
                    None,
                );
            }
            check_expect(
                t,
                &step.expect,
                repeat,
                &format!("{sbase}.expect"),
                &names,
                &mut diags,
                &mut unknown,
            );
        }
    }
    diags.finish()
}

type Unknown<'a> = dyn FnMut(&mut Diags, &str, &str, &str, &[&str]) + 'a;

fn check_request(
    t: &TestFile,
    c: &TestCase,
    base: &str,
    names: &Names<'_>,
    diags: &mut Diags,
    unknown: &mut Unknown<'_>,
) {
    let sp = &t.spans;
    let r = &c.case.request;
    let err = |diags: &mut Diags, path: String, msg: String| {
        diags.push(Severity::Error, sp.value(&path), &path, msg, None)
    };
    let method = r
        .method
        .as_deref()
        .or(t.defaults.method.as_deref())
        .unwrap_or("GET");
    if http::Method::from_bytes(method.as_bytes()).is_err() {
        err(
            diags,
            format!("{base}.request.method"),
            format!("invalid method {method:?}"),
        );
    }
    if !r.path.starts_with('/') || r.path.parse::<http::Uri>().is_err() {
        err(
            diags,
            format!("{base}.request.path"),
            format!(
                "{:?} is not a request target: it starts with / and is a valid URI path",
                r.path
            ),
        );
    }
    for (k, v) in &r.headers {
        let p = format!("{base}.request.headers.{k}");
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            err(diags, p.clone(), format!("invalid header name {k:?}"));
        }
        if http::HeaderValue::from_str(v).is_err() {
            err(diags, p, format!("invalid value for header {k}"));
        }
    }
    if r.jwt.is_some() && r.token.is_some() {
        err(
            diags,
            format!("{base}.request.token"),
            "give either `jwt` (signed by gw test) or a literal `token`, not both".into(),
        );
    }
    let _ = names;
    if let Some(j) = &r.jwt {
        if !t.keys.iter().any(|k| k.name == j.key) {
            let known: Vec<&str> = t.keys.iter().map(|k| k.name.as_str()).collect();
            unknown(
                diags,
                &format!("{base}.request.jwt.key"),
                "test key",
                &j.key,
                &known,
            );
        }
        if let Some(a) = &j.algorithm {
            if a.parse::<jsonwebtoken::Algorithm>().is_err() {
                err(
                    diags,
                    format!("{base}.request.jwt.algorithm"),
                    format!("unknown algorithm {a:?} (HS256, RS256, ES256, EdDSA, ...)"),
                );
            }
        }
        if let Some(e) = &j.expires_in {
            if let Err(m) = super::token::signed_secs(e) {
                err(diags, format!("{base}.request.jwt.expires_in"), m);
            }
        }
    }
}

fn check_expect(
    t: &TestFile,
    e: &Expect,
    repeat: u32,
    base: &str,
    names: &Names<'_>,
    diags: &mut Diags,
    unknown: &mut Unknown<'_>,
) {
    let sp = &t.spans;
    if let Some(r) = &e.route {
        if r != "none" && !names.routes.contains(&r.as_str()) {
            let mut known = names.routes.clone();
            known.push("none");
            unknown(diags, &format!("{base}.route"), "route", r, &known);
        }
    }
    if let Some(u) = &e.upstream {
        if !names.upstreams.contains(&u.as_str()) {
            unknown(
                diags,
                &format!("{base}.upstream"),
                "upstream",
                u,
                &names.upstreams,
            );
        }
    }
    let all: Vec<&str> = names.jwt.iter().chain(&names.limits).copied().collect();
    for (i, p) in e.policies.iter().flatten().enumerate() {
        if !all.contains(&p.as_str()) {
            unknown(diags, &format!("{base}.policies[{i}]"), "policy", p, &all);
        }
    }
    for (i, l) in e.limits.iter().flatten().enumerate() {
        if !names.limits.contains(&l.policy.as_str()) {
            unknown(
                diags,
                &format!("{base}.limits[{i}].policy"),
                "rate_limit policy",
                &l.policy,
                &names.limits,
            );
        }
    }
    if let Some(a) = &e.auth {
        if !AUTH_OUTCOMES.contains(&a.as_str()) && !AUTH_REASONS.contains(&a.as_str()) {
            let p = format!("{base}.auth");
            let known = AUTH_OUTCOMES.iter().chain(AUTH_REASONS).copied();
            diags.push(
                Severity::Error,
                sp.value(&p),
                &p,
                format!("unknown auth outcome \"{a}\""),
                did_you_mean(a, known.clone())
                    .or_else(|| Some(format!("one of: {}", known.collect::<Vec<_>>().join(", ")))),
            );
        }
    }
    if let Some(k) = e.admitted {
        if k > repeat {
            let p = format!("{base}.admitted");
            diags.push(
                Severity::Error,
                sp.value(&p),
                &p,
                format!("admitted {k} is more than the {repeat} request(s) sent"),
                Some("set `repeat:` on the case or step".into()),
            );
        }
    }
}

fn read_key_file(t: &TestFile, diags: &mut Diags, path: &str, file: &Path) {
    let full = t.resolve(file);
    if let Err(e) = std::fs::read(&full) {
        diags.push(
            Severity::Error,
            t.spans.value(path),
            path,
            format!("cannot read {}: {e}", full.display()),
            Some("key paths are relative to the test file".into()),
        );
    }
}

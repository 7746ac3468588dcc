//! Reading a test file: YAML syntax, each section and each case deserialized on its own (so every bad
//! case is reported), then the checks that need the compiled configuration (route, upstream and policy
//! names, test keys). Every problem is a positioned [`Diagnostic`] like `gw validate`'s.
use super::model::{Case, ClockSpec, Defaults, Expect, KeyDecl, Step, SECTIONS};
use crate::config::load::de;
use crate::config::spans::{Pos, SpanIndex};
use crate::diag::{did_you_mean, Diagnostic, Diags, Severity};
use crate::plan::Plan;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default start of the simulated clock: 2026-01-01T00:00:00Z (aligned to every whole minute and hour,
/// so a fresh window's `RateLimit` reset is the full window).
pub const DEFAULT_START_MS: u64 = 1_767_225_600_000;

/// Reasons an `auth:` expectation may name besides the rejection reasons.
pub const AUTH_OUTCOMES: &[&str] = &["accept", "anonymous", "none"];
/// Rejection reasons (`AuthReason::as_str`).
pub const AUTH_REASONS: &[&str] = &[
    "missing",
    "malformed",
    "expired",
    "not_yet_valid",
    "bad_signature",
    "bad_issuer",
    "bad_audience",
    "unknown_kid",
    "missing_kid",
    "disallowed_alg",
    "missing_claim",
    "keys_unavailable",
    "insufficient_scope",
];

/// A test file, read and checked for shape (not yet against a configuration).
#[derive(Debug)]
pub struct TestFile {
    /// The file's path as given.
    pub file: String,
    /// Variables for `${VAR}` in the configuration (before the process environment).
    pub env: BTreeMap<String, String>,
    /// Start of the simulated clock, unix ms.
    pub clock_start_ms: u64,
    pub keys: Vec<KeyDecl>,
    pub defaults: Defaults,
    pub cases: Vec<TestCase>,
    pub(crate) spans: SpanIndex,
    /// Directory that relative key paths are read from.
    pub(crate) base_dir: PathBuf,
}

/// One case, normalised to steps, with its position.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub case: Case,
    /// Index in `cases` (YAML path `cases[i]`).
    pub index: usize,
    /// Line of the case in the test file.
    pub line: usize,
}

/// Parses a test file: the file (with the cases that could be read) and the diagnostics of the others.
/// `Err` when nothing usable could be read (YAML syntax, not a mapping), with its diagnostics.
pub fn parse(file: &str, text: &str) -> Result<(TestFile, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut diags = Diags::new(file);
    let root: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let pos = e.location().map_or(Pos { line: 1, column: 1 }, |l| Pos {
                line: l.line(),
                column: l.column(),
            });
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            diags.push(
                Severity::Error,
                pos,
                "",
                format!("invalid YAML: {msg}"),
                None,
            );
            return Err(diags.finish());
        }
    };
    let spans = SpanIndex::build(text);
    let Value::Mapping(top) = root else {
        let msg = if root.is_null() {
            "the test file is empty"
        } else {
            "a test file must be a mapping of sections"
        };
        diags.push(
            Severity::Error,
            spans.value(""),
            "",
            msg.into(),
            Some(format!("sections are: {}", SECTIONS.join(", "))),
        );
        return Err(diags.finish());
    };
    let base_dir = Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut out = TestFile {
        file: file.to_string(),
        env: BTreeMap::new(),
        clock_start_ms: DEFAULT_START_MS,
        keys: Vec::new(),
        defaults: Defaults::default(),
        cases: Vec::new(),
        spans: SpanIndex::default(),
        base_dir,
    };
    let mut saw_cases = false;
    for (k, v) in top {
        let Some(key) = k.as_str().map(str::to_string) else {
            diags.push(
                Severity::Error,
                spans.value(""),
                "",
                "section names must be strings".into(),
                None,
            );
            continue;
        };
        match key.as_str() {
            "env" => out.env = de(v, "env", &spans, &mut diags).unwrap_or_default(),
            "clock" => {
                if let Some(c) = de::<ClockSpec>(v, "clock", &spans, &mut diags) {
                    match humantime::parse_rfc3339(c.start.trim()) {
                        Ok(t) => {
                            out.clock_start_ms = t
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_millis() as u64)
                        }
                        Err(e) => diags.push(
                            Severity::Error,
                            spans.value("clock.start"),
                            "clock.start",
                            format!("invalid instant {:?}: {e}", c.start),
                            Some("write it as RFC 3339, e.g. 2026-01-01T00:00:00Z".into()),
                        ),
                    }
                }
            }
            "keys" => {
                out.keys = items(v, "keys", &spans, &mut diags)
                    .into_iter()
                    .flatten()
                    .collect()
            }
            "defaults" => out.defaults = de(v, "defaults", &spans, &mut diags).unwrap_or_default(),
            "cases" => {
                saw_cases = true;
                for (i, c) in items::<Case>(v, "cases", &spans, &mut diags)
                    .into_iter()
                    .enumerate()
                {
                    if let Some(c) = c {
                        if let Some(c) = normalise(c, i, &spans, &mut diags) {
                            out.cases.push(c);
                        }
                    }
                }
            }
            other => diags.push(
                Severity::Error,
                spans.key(other),
                other,
                format!("unknown section \"{other}\""),
                did_you_mean(other, SECTIONS.iter().copied())
                    .or_else(|| Some(format!("sections are: {}", SECTIONS.join(", ")))),
            ),
        }
    }
    if !saw_cases {
        diags.push(
            Severity::Error,
            Pos { line: 1, column: 1 },
            "",
            "the test file has no \"cases\"".into(),
            Some("add `cases:` with at least one `- name: ...`".into()),
        );
    }
    out.spans = spans;
    Ok((out, diags.finish()))
}

/// The items of a list section, each deserialized on its own (`None` for a bad one).
fn items<T: serde::de::DeserializeOwned>(
    v: Value,
    path: &str,
    spans: &SpanIndex,
    diags: &mut Diags,
) -> Vec<Option<T>> {
    match v {
        Value::Null => Vec::new(),
        Value::Sequence(xs) => xs
            .into_iter()
            .enumerate()
            .map(|(i, x)| de::<T>(x, &format!("{path}[{i}]"), spans, diags))
            .collect(),
        _ => {
            diags.push(
                Severity::Error,
                spans.value(path),
                path,
                format!("\"{path}\" must be a list"),
                Some(format!("write it as\n  {path}:\n    - ...")),
            );
            Vec::new()
        }
    }
}

/// A case as steps: `expect` (+ `repeat`, `interval`) is one step; `steps` are taken as written.
fn normalise(mut c: Case, i: usize, spans: &SpanIndex, diags: &mut Diags) -> Option<TestCase> {
    let base = format!("cases[{i}]");
    let mut err = |path: String, msg: &str, hint: Option<&str>| {
        diags.push(
            Severity::Error,
            spans.key(&path),
            &path,
            msg.into(),
            hint.map(str::to_string),
        )
    };
    match (c.expect.take(), c.steps.is_empty()) {
        (Some(_), false) => {
            err(
                format!("{base}.steps"),
                "a case has either \"expect\" or \"steps\", not both",
                Some("put the expectation into the steps"),
            );
            return None;
        }
        (None, true) => {
            err(
                base.clone(),
                "the case has nothing to check",
                Some("add `expect:` (or `steps:`)"),
            );
            return None;
        }
        (Some(expect), true) => c.steps.push(Step {
            advance: None,
            repeat: c.repeat,
            interval: c.interval,
            expect,
        }),
        (None, false) => {
            for key in ["repeat", "interval"] {
                if spans.contains(&format!("{base}.{key}")) {
                    err(
                        format!("{base}.{key}"),
                        &format!("\"{key}\" goes into each step when a case has \"steps\""),
                        None,
                    );
                }
            }
        }
    }
    Some(TestCase {
        line: spans.value(&base).line,
        index: i,
        case: c,
    })
}

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

impl TestFile {
    /// A path from the test file, relative to its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Position of a YAML path of this file.
    pub(crate) fn pos(&self, path: &str) -> Pos {
        self.spans.value(path)
    }
}

//! Runs the cases of a test file on the [`Harness`] and compares what happened with what each case
//! expects (only the fields it states).
use super::harness::{Harness, Observed};
use super::load::TestFile;
use super::model::{Expect, StatusExpect};
use serde::Serialize;

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The test file.
    pub file: String,
    /// Line of the case.
    pub line: usize,
    /// The case's `name`.
    pub name: String,
    /// Whether every expectation held.
    pub passed: bool,
    /// The expectations that did not hold.
    pub failures: Vec<Mismatch>,
}

/// One expectation that did not hold.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// Line of the step (the case's line for a single-step case).
    pub line: usize,
    /// 1-based step, when the case has several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// 1-based request within a repeated step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<u32>,
    /// The expectation, e.g. `status`, `limits.login-limit.key`, `headers.RateLimit`.
    pub field: String,
    /// What the case expects.
    pub expected: String,
    /// What happened.
    pub got: String,
}

/// Runs every case of `t` (each with fresh rate-limit counters and the clock at its start).
pub fn run(t: &TestFile, h: &Harness<'_>) -> Vec<CaseResult> {
    t.cases
        .iter()
        .map(|c| {
            let base = format!("cases[{}]", c.index);
            let with_steps = t.spans.contains(&format!("{base}.steps"));
            let mut failures = Vec::new();
            match h.limiter() {
                Err(e) => failures.push(Mismatch {
                    line: c.line,
                    step: None,
                    request: None,
                    field: "setup".into(),
                    expected: "a rate limiter".into(),
                    got: e,
                }),
                Ok(lim) => {
                    let mut now = t.clock_start_ms;
                    for (si, step) in c.case.steps.iter().enumerate() {
                        let line = if with_steps {
                            t.pos(&format!("{base}.steps[{si}]")).line
                        } else {
                            c.line
                        };
                        let step_no = with_steps.then_some(si + 1);
                        now += step.advance.map_or(0, |d| d.0.as_millis() as u64);
                        let interval = step.interval.map_or(0, |d| d.0.as_millis() as u64);
                        let repeat = step.repeat.unwrap_or(1).max(1);
                        let mut rejected = Vec::with_capacity(repeat as usize);
                        let mut last = None;
                        for i in 0..repeat {
                            if i > 0 {
                                now += interval;
                            }
                            match h.request(&c.case.request, &t.defaults, now) {
                                Ok((req, ip)) => {
                                    let o = h.send(&req, ip, &lim, now);
                                    rejected.push(o.status == Some(429));
                                    last = Some(o);
                                }
                                Err(e) => {
                                    failures.push(Mismatch {
                                        line,
                                        step: step_no,
                                        request: (repeat > 1).then_some(i + 1),
                                        field: "request".into(),
                                        expected: "a request that can be built".into(),
                                        got: e,
                                    });
                                    break;
                                }
                            }
                        }
                        let Some(o) = last else { break };
                        let mut push = |field: &str, expected: String, got: String| {
                            failures.push(Mismatch {
                                line,
                                step: step_no,
                                request: (repeat > 1).then_some(repeat),
                                field: field.into(),
                                expected,
                                got,
                            })
                        };
                        if let Some(k) = step.expect.admitted {
                            let got_k = rejected.iter().take_while(|r| !**r).count() as u32;
                            let clean = rejected[got_k as usize..].iter().all(|r| *r);
                            if got_k != k || !clean {
                                push("admitted", format!("{k} then 429"), admission(&rejected));
                            }
                        }
                        compare(&step.expect, &o, &mut push);
                    }
                }
            }
            CaseResult {
                file: t.file.clone(),
                line: c.line,
                name: c.case.name.clone(),
                passed: failures.is_empty(),
                failures,
            }
        })
        .collect()
}

/// `5 then 429` / `3, 429, then 2 more admitted ...` (the pattern, compressed).
fn admission(rejected: &[bool]) -> String {
    let mut runs: Vec<(bool, usize)> = Vec::new();
    for r in rejected {
        match runs.last_mut() {
            Some((v, n)) if v == r => *n += 1,
            _ => runs.push((*r, 1)),
        }
    }
    runs.iter()
        .map(|(r, n)| {
            if *r {
                format!("{n} × 429")
            } else {
                format!("{n} admitted")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "none".into())
}

/// Compares the stated fields of `e` with `o`.
fn compare(e: &Expect, o: &Observed, push: &mut dyn FnMut(&str, String, String)) {
    if let Some(r) = &e.route {
        let mut got = opt(&o.route);
        if *r != got {
            if !o.nearest.is_empty() {
                got.push_str(&format!(" (nearest: {})", o.nearest.join(", ")));
            }
            push("route", r.clone(), got);
        }
    }
    if let Some(u) = &e.upstream {
        if o.upstream.as_ref() != Some(u) {
            push("upstream", u.clone(), opt(&o.upstream));
        }
    }
    if let Some(p) = &e.upstream_path {
        if o.upstream_path.as_ref() != Some(p) {
            push("upstream_path", p.clone(), opt(&o.upstream_path));
        }
    }
    if let Some(h) = &e.upstream_host {
        if o.upstream_host.as_ref() != Some(h) {
            push("upstream_host", h.clone(), opt(&o.upstream_host));
        }
    }
    if let Some(s) = e.status {
        let got = match o.status {
            None => StatusExpect::Proxy,
            Some(s) => StatusExpect::Local(s),
        };
        if s != got {
            let mut g = got.to_string();
            if let Some(code) = &o.error {
                g.push_str(&format!(" ({code})"));
            }
            push("status", s.to_string(), g);
        }
    }
    if let Some(c) = &e.error {
        if o.error.as_ref() != Some(c) {
            push("error", c.clone(), opt(&o.error));
        }
    }
    if let Some(a) = &e.auth {
        if *a != o.auth {
            push("auth", a.clone(), o.auth.clone());
        }
    }
    if let Some(p) = &e.policies {
        if *p != o.policies {
            push("policies", list(p), list(&o.policies));
        }
    }
    if let Some(ls) = &e.limits {
        let names: Vec<&str> = ls.iter().map(|l| l.policy.as_str()).collect();
        let got_names: Vec<&str> = o.limits.iter().map(|l| l.policy.as_str()).collect();
        if names != got_names {
            push(
                "limits",
                format!("[{}]", names.join(", ")),
                format!("[{}]", got_names.join(", ")),
            );
        } else {
            for (l, g) in ls.iter().zip(&o.limits) {
                if let Some(k) = &l.key {
                    if *k != g.key {
                        push(
                            &format!("limits.{}.key", l.policy),
                            k.clone(),
                            g.key.clone(),
                        );
                    }
                }
                if let Some(m) = l.max {
                    if m != g.max {
                        push(
                            &format!("limits.{}.max", l.policy),
                            m.to_string(),
                            g.max.to_string(),
                        );
                    }
                }
                if let Some(w) = l.window {
                    if w.0.as_millis() as u64 != g.window_ms {
                        push(
                            &format!("limits.{}.window", l.policy),
                            w.to_string(),
                            crate::config::Dur::from_millis(g.window_ms).to_string(),
                        );
                    }
                }
                if let Some(r) = l.remaining {
                    if Some(r) != g.remaining {
                        push(
                            &format!("limits.{}.remaining", l.policy),
                            r.to_string(),
                            g.remaining.map_or("unknown".into(), |r| r.to_string()),
                        );
                    }
                }
            }
        }
    }
    if let Some(hs) = &e.upstream_headers {
        if o.status.is_some() {
            push(
                "upstream_headers",
                "a request sent upstream".into(),
                format!("answered locally with {}", o.status.unwrap_or(0)),
            );
        } else {
            headers("upstream_headers", hs, &o.upstream_headers, push);
        }
    }
    if let Some(hs) = &e.headers {
        headers("headers", hs, &o.headers, push);
    }
}

fn headers(
    what: &str,
    want: &std::collections::BTreeMap<String, Option<String>>,
    got: &[(String, String)],
    push: &mut dyn FnMut(&str, String, String),
) {
    for (name, v) in want {
        let lname = name.to_ascii_lowercase();
        let values: Vec<&str> = got
            .iter()
            .filter(|(k, _)| *k == lname)
            .map(|(_, v)| v.as_str())
            .collect();
        let got_s = if values.is_empty() {
            "absent".to_string()
        } else {
            values.join(", ")
        };
        let ok = match v {
            None => values.is_empty(),
            Some(v) => values.len() == 1 && values[0] == v,
        };
        if !ok {
            push(
                &format!("{what}.{name}"),
                v.clone().unwrap_or_else(|| "absent".into()),
                got_s,
            );
        }
    }
}

fn list(v: &[String]) -> String {
    format!("[{}]", v.join(", "))
}

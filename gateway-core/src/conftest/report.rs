//! Rendering results: one line per case (`ok` / `FAIL` with expected vs got and `file:line`), a
//! summary `N passed, M failed`, or JSON for CI annotations.
use super::runner::{CaseResult, Mismatch};
use crate::diag::Diagnostic;
use std::fmt::Write as _;

/// One line for a case: `ok   file:line name` or
/// `FAIL file:line name: status: expected 401, got proxy; ...`.
pub fn case_line(c: &CaseResult) -> String {
    if c.passed {
        return format!("ok   {}:{} {}", c.file, c.line, c.name);
    }
    let mut s = format!("FAIL {}:{} {}: ", c.file, c.line, c.name);
    let parts: Vec<String> = c.failures.iter().map(mismatch).collect();
    s.push_str(&parts.join("; "));
    s
}

fn mismatch(m: &Mismatch) -> String {
    let mut at = String::new();
    if let Some(s) = m.step {
        let _ = write!(at, "step {s} (line {}) ", m.line);
    }
    if let Some(r) = m.request {
        let _ = write!(at, "request {r} ");
    }
    format!("{at}{}: expected {}, got {}", m.field, m.expected, m.got)
}

/// `N passed, M failed`.
pub fn summary(results: &[CaseResult]) -> String {
    let passed = results.iter().filter(|c| c.passed).count();
    format!("{passed} passed, {} failed", results.len() - passed)
}

/// The JSON report: `{"passed": N, "failed": M, "cases": [...], "diagnostics": [...]}`; every case
/// has `file`, `line`, `name`, `passed` and `failures` (`line`, `step`, `request`, `field`,
/// `expected`, `got`); diagnostics are `gw validate --format json`'s.
pub fn json(results: &[CaseResult], diagnostics: &[Diagnostic]) -> serde_json::Value {
    let passed = results.iter().filter(|c| c.passed).count();
    serde_json::json!({
        "passed": passed,
        "failed": results.len() - passed,
        "cases": results,
        "diagnostics": crate::diag::to_json(diagnostics),
    })
}

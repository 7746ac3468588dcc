//! `gw test`: offline expectation files for a configuration's routes and policies.
//!
//! A test file (YAML) lists cases: a request (method, path with query, headers, client address, a JWT
//! signed by the runner or a literal token) and what must happen to it (route or `none`, upstream, the
//! path and `Host` sent upstream, the status of a local answer, the policies that run in order, the
//! rate-limit keys and quotas, forwarded identity headers, the auth outcome). Only the fields a case
//! states are checked. Sequences (`repeat`, `steps` with `advance`) run on a simulated clock against the
//! real local rate limiter. See `docs/testing-config.md` for the format.
//!
//! Pipeline: `load::parse` (shape, positioned diagnostics) → compile the configuration with the
//! file's `env` → `check::check` (names against the plan) → `harness::Harness` (the proxy's own
//! request steps, offline) → `runner::run` → `report`.
mod check;
mod harness;
mod load;
mod model;
pub mod report;
mod runner;
mod token;

use crate::diag::Diagnostic;
pub use runner::{CaseResult, Mismatch};

/// The outcome of one test file.
#[derive(Debug)]
pub enum FileOutcome {
    /// The cases ran.
    Ran(Vec<CaseResult>),
    /// The test file (or the configuration, compiled with the file's `env`) is invalid: nothing ran.
    /// Each diagnostic comes with the text of the file it points into, for rendering.
    Invalid(Vec<(Diagnostic, String)>),
}

/// The text of a file (configuration or test file): an `InvalidData` error names the line and column of
/// its first byte that is not UTF-8.
pub fn read_text(path: &str) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    crate::config::load::utf8_text(&bytes)
        .map(str::to_string)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Runs one test file against a configuration (both given as text with their paths). Never touches the
/// network; reads only the key files the configuration and the test file name.
pub fn run_file(
    config_path: &str,
    config_text: &str,
    test_path: &str,
    test_text: &str,
) -> FileOutcome {
    let with = |ds: Vec<Diagnostic>, text: &str| -> Vec<(Diagnostic, String)> {
        ds.into_iter().map(|d| (d, text.to_string())).collect()
    };
    let (t, mut shape) = match load::parse(test_path, test_text) {
        Ok(x) => x,
        Err(ds) => return FileOutcome::Invalid(with(ds, test_text)),
    };
    let env = |k: &str| t.env.get(k).cloned().or_else(|| std::env::var(k).ok());
    let compiled = crate::compile(config_path, config_text, &env);
    let Some(plan) = compiled.plan else {
        let errors = compiled
            .diagnostics
            .into_iter()
            .filter(|d| d.is_error())
            .collect();
        return FileOutcome::Invalid(with(errors, config_text));
    };
    shape.extend(check::check(&t, &plan));
    if shape.iter().any(Diagnostic::is_error) {
        shape.sort_by_key(|d| (d.line, d.column));
        return FileOutcome::Invalid(with(shape, test_text));
    }
    let h = match harness::Harness::new(&plan, &t) {
        Ok(h) => h,
        Err(msg) => {
            let d = Diagnostic {
                severity: crate::diag::Severity::Error,
                file: test_path.to_string(),
                line: 1,
                column: 1,
                path: String::new(),
                message: msg,
                hint: None,
            };
            return FileOutcome::Invalid(with(vec![d], test_text));
        }
    };
    FileOutcome::Ran(runner::run(&t, &h))
}

#[cfg(test)]
mod tests;

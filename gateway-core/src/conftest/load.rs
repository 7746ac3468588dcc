//! Reading a test file: YAML syntax, each section and each case deserialized on its own (so every bad
//! case is reported). Every problem is a positioned [`Diagnostic`] like `gw validate`'s; the checks
//! against the compiled configuration are in `check.rs`.
use super::model::{Case, ClockSpec, Defaults, KeyDecl, Step, SECTIONS};
use crate::config::load::{de, section_name};
use crate::config::spans::{Pos, SpanIndex};
use crate::diag::{did_you_mean, Diagnostic, Diags, Severity};
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
    pub(crate) spans: SpanIndex<'static>,
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
    let spans = SpanIndex::build(text.to_owned());
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
        let Some(key) = section_name(&k, &spans, &mut diags) else {
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

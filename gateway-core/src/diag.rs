//! Diagnostics: what the compiler says about a configuration, with where and, when it can, how to fix it.
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
/// How bad a diagnostic is.
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// Worth a look; the configuration is still used.
    Warning,
}

/// One problem in a configuration file. `line` and `column` are 1-based; `path` is the YAML path
/// (`routes[3].match.path`, `""` for the document).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The configuration's name (the `source` given to the compiler).
    pub file: String,
    /// 1-based line of the offending value (0 when unknown).
    pub line: usize,
    /// 1-based column of the offending value (0 when unknown).
    pub column: usize,
    /// Where in the configuration, e.g. `routes[2].match.prefix`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is a suggestion.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Compiler-style rendering: the message, `file:line:col`, the offending source line and a caret.
    pub fn render(&self, source: &str) -> String {
        let mut out = String::new();
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{sev}: {}", self.message);
        let at = if self.path.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.path)
        };
        let _ = writeln!(out, "  --> {}:{}:{}{at}", self.file, self.line, self.column);
        if let Some(text) = source.lines().nth(self.line.saturating_sub(1)) {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            let caret_pad: String = text
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{num} | {text}");
            let _ = writeln!(out, "{pad} | {caret_pad}^");
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(out, "  = hint: {h}");
        }
        out
    }
}

/// Diagnostics as JSON: the output of `gw validate --format json` and the `diagnostics` of a
/// rejected reload (`POST /admin/reload`), one array of objects with `severity`, `file`, `line`,
/// `column`, `path`, `message`, `hint`.
pub fn to_json(diags: &[Diagnostic]) -> serde_json::Value {
    serde_json::to_value(diags).unwrap_or_else(|_| serde_json::json!([]))
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Diags {
    /// The configuration's name.
    pub file: String,
    /// The diagnostics so far, in push order.
    pub list: Vec<Diagnostic>,
    /// Paths already reported as unusable (e.g. an unset `${VAR}`): later checks of the same value would
    /// only repeat the problem, so they are dropped.
    pub settled: std::collections::HashSet<String>,
}

impl Diags {
    /// An empty list for the configuration named `file`.
    pub fn new(file: &str) -> Self {
        Diags {
            file: file.to_string(),
            list: Vec::new(),
            settled: Default::default(),
        }
    }

    /// Adds a diagnostic at `pos`.
    pub fn push(
        &mut self,
        severity: Severity,
        pos: crate::config::spans::Pos,
        path: &str,
        message: String,
        hint: Option<String>,
    ) {
        if self.settled.contains(path) {
            return;
        }
        self.list.push(Diagnostic {
            severity,
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message,
            hint,
        });
    }

    /// Whether an error was pushed.
    pub fn has_errors(&self) -> bool {
        self.list.iter().any(Diagnostic::is_error)
    }

    /// Sorted by position, errors before warnings at the same spot; exact duplicates removed.
    pub fn finish(mut self) -> Vec<Diagnostic> {
        self.list.sort_by_key(|d| (d.line, d.column, d.severity));
        self.list.dedup();
        self.list
    }
}

/// `did you mean "x"?` when some candidate is close enough.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean \"{c}\"?"))
}

//! `gw test CONFIG TESTS.yaml...`: runs offline expectation files (see `gateway_core::conftest`).
//!
//! Exit status: 0 every case passed, 1 some case failed, 2 a file is unreadable or invalid.
use gateway_core::conftest::{read_text as read, report, run_file, CaseResult, FileOutcome};
use gateway_core::diag::Diagnostic;
use std::process::ExitCode;

/// Runs `tests` against `config` and prints the report (`json`: one JSON document on stdout).
pub fn run(config: &str, tests: &[String], json: bool) -> ExitCode {
    let config_text = match read(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {config}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut results: Vec<CaseResult> = Vec::new();
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut invalid = false;
    for t in tests {
        let text = match read(t) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: cannot read {t}: {e}");
                invalid = true;
                continue;
            }
        };
        match run_file(config, &config_text, t, &text) {
            FileOutcome::Ran(rs) => {
                if !json {
                    for r in &rs {
                        println!("{}", report::case_line(r));
                    }
                }
                results.extend(rs);
            }
            FileOutcome::Invalid(ds) => {
                invalid = true;
                for (d, source) in ds {
                    if !json {
                        eprint!("{}", d.render(&source));
                    }
                    diagnostics.push(d);
                }
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::json(&results, &diagnostics)).unwrap_or_default()
        );
    } else {
        println!("{}", report::summary(&results));
        if invalid {
            eprintln!("some files are unreadable or invalid: their cases did not run");
        }
    }
    if invalid {
        ExitCode::from(2)
    } else if results.iter().any(|r| !r.passed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

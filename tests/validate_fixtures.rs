//! Every invalid configuration under `tests/fixtures/invalid/` must produce exactly the diagnostics listed
//! in its `.expected` file (`severity line:column message`), all of them, in one pass.
use gateway_core::compile;
use std::path::Path;

fn render(d: &gateway_core::diag::Diagnostic) -> String {
    let sev = if d.is_error() { "error" } else { "warning" };
    format!("{sev} {}:{} {}", d.line, d.column, d.message)
}

#[test]
fn invalid_fixtures_report_every_error_with_positions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fixtures folder") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("fixture");
        let expected =
            std::fs::read_to_string(path.with_extension("expected")).expect("expected file");
        let name = path.to_string_lossy().to_string();
        let compiled = compile(&name, &text, &|_| None);
        let got: Vec<String> = compiled.diagnostics.iter().map(render).collect();
        let want: Vec<String> = expected
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        if got != want {
            failures.push(format!(
                "{name}\n  got:\n    {}\n  want:\n    {}",
                got.join("\n    "),
                want.join("\n    ")
            ));
        }
        if compiled.errors().count() > 0 {
            assert!(
                compiled.plan.is_none(),
                "{name}: a plan must not be produced when there are errors"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 5,
        "expected at least 5 fixtures, found {checked}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let env = |k: &str| match k {
        "JWT_SECRET" => Some("an-example-secret-of-at-least-32-bytes!".to_string()),
        "GW_ADMIN_TOKEN" => Some("an-example-admin-token".to_string()),
        _ => None,
    };
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples folder") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml")
            || path.to_string_lossy().ends_with(".test.yaml")
        {
            // `gw test` expectation files are not configurations
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("example");
        let c = compile(&path.to_string_lossy(), &text, &env);
        let problems: Vec<String> = c.diagnostics.iter().map(|d| d.render(&text)).collect();
        assert!(
            problems.is_empty(),
            "{}:\n{}",
            path.display(),
            problems.join("\n")
        );
        assert!(c.plan.is_some());
        n += 1;
    }
    assert!(n >= 3);
}

//! The `gw` binary: exit codes, compiler-style and JSON diagnostics, dry-run explanations, completions.
use std::path::PathBuf;
use std::process::{Command, Output};

fn gw() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gw"));
    c.current_dir(root());
    c.env("JWT_SECRET", "an-example-secret-of-at-least-32-bytes!");
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> Output {
    gw().args(args).output().expect("run gw")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn validate_accepts_every_example() {
    let mut files: Vec<String> = Vec::new();
    for dir in ["examples", "examples/bench"] {
        files.extend(
            std::fs::read_dir(root().join(dir))
                .expect("examples")
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                // `gw test` expectation files are not configurations
                .filter(|p| !p.to_string_lossy().ends_with(".test.yaml"))
                .map(|p| {
                    format!(
                        "{dir}/{}",
                        p.file_name().unwrap_or_default().to_string_lossy()
                    )
                }),
        );
    }
    files.sort();
    assert!(files.len() >= 3);
    let mut args = vec!["validate", "--deny-warnings"];
    args.extend(files.iter().map(String::as_str));
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("valid"));
}

#[test]
fn validate_reports_all_errors_with_positions_and_carets() {
    let o = run(&["validate", "tests/fixtures/invalid/typos.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("tests/fixtures/invalid/typos.yaml:11:5 (routes[0].uptream)"),
        "{e}"
    );
    assert!(e.contains("hint: did you mean \"upstream\"?"), "{e}");
    assert!(e.contains("11 |     uptream: users"), "{e}");
    assert!(e.contains("   |     ^"), "{e}");
    assert!(e.contains("5 error(s), 0 warning(s)"), "{e}");
}

#[test]
fn validate_json_format_for_ci() {
    let o = run(&[
        "validate",
        "--format",
        "json",
        "tests/fixtures/invalid/references.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json array");
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 6);
    let first = &arr[0];
    for k in [
        "severity", "file", "line", "column", "path", "message", "hint",
    ] {
        assert!(first.get(k).is_some(), "missing key {k} in {first}");
    }
    assert_eq!(first["severity"], "error");
    assert_eq!(first["line"], 7);
    assert_eq!(first["path"], "upstreams[1].name");
}

#[test]
fn warnings_fail_only_with_deny_warnings() {
    let dir = std::env::temp_dir().join(format!("gw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let f = dir.join("warn.yaml");
    std::fs::write(
        &f,
        "listeners: [{name: p, address: 127.0.0.1:18080}]\nupstreams:\n  - {name: a, endpoints: [{address: 127.0.0.1:1}]}\n  - {name: unused, endpoints: [{address: 127.0.0.1:2}]}\nroutes:\n  - {name: r, match: {prefix: /}, upstream: a}\n",
    )
    .expect("write");
    let p = f.to_string_lossy().to_string();
    let o = run(&["validate", &p]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: upstream \"unused\" is not used"));
    let o = run(&["validate", "--deny-warnings", &p]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn usage_and_io_errors_exit_2() {
    assert_eq!(run(&["validate"]).status.code(), Some(2));
    assert_eq!(
        run(&["validate", "does/not/exist.yaml"]).status.code(),
        Some(2)
    );
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("dry-run"));
    for sub in ["validate", "dry-run", "serve", "completions"] {
        let o = run(&[sub, "--help"]);
        assert!(o.status.success());
        assert!(
            stdout(&o).contains("Examples:"),
            "{sub} --help has no examples"
        );
    }
}

#[test]
fn dry_run_explains_seed_login_and_payment() {
    let o = run(&[
        "dry-run",
        "examples/seed.yaml",
        "--method",
        "POST",
        "--path",
        "/api/auth/login",
        "--client-ip",
        "203.0.113.7",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["route"], "auth-login");
    assert_eq!(v["upstream"]["name"], "user-service");
    assert_eq!(v["upstream_path"], "/auth/login");
    assert_eq!(v["outcome"]["action"], "proxy");
    let policies = v["policies"].as_array().expect("policies");
    let login = policies
        .iter()
        .find(|p| p["name"] == "login-limit")
        .expect("login-limit in chain");
    let d = login["detail"].as_str().unwrap_or("");
    assert!(d.starts_with("5 requests per 60s"), "{d}");
    assert!(d.contains("client IP 203.0.113.7"), "{d}");
    assert!(d.contains("scope route auth-login"), "{d}");
    // chain order: route match, then limits (login has no auth), breaker, proxy
    let phases: Vec<&str> = policies
        .iter()
        .filter_map(|p| p["phase"].as_str())
        .collect();
    assert_eq!(
        phases,
        [
            "request_id",
            "access_log",
            "route_match",
            "rate_limit",
            "rate_limit",
            "rate_limit",
            "circuit_breaker",
            "proxy"
        ]
    );

    let o = run(&[
        "dry-run",
        "examples/seed.yaml",
        "--path",
        "/api/payment/charge?id=9",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["route"], "payment");
    assert_eq!(v["upstream_path"], "/api/payment/charge?id=9");
    assert_eq!(
        v["outcome"]["status"], 401,
        "no token: the jwt policy answers 401"
    );
    let pay = v["policies"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "payment-limit").cloned())
        .expect("payment-limit");
    assert!(pay["detail"]
        .as_str()
        .unwrap_or("")
        .starts_with("10 requests per 60s"));
}

#[test]
fn dry_run_normalises_and_explains_misses() {
    let o = run(&[
        "dry-run",
        "examples/seed.yaml",
        "--path",
        "/api/public/../user/42",
        "-H",
        "Authorization: Bearer x",
    ]);
    let out = stdout(&o);
    assert!(out.contains("normalised to /api/user/42"), "{out}");
    assert!(out.contains("route     user"), "{out}");
    assert!(out.contains("forward   path /42"), "{out}");
    let o = run(&[
        "dry-run",
        "examples/seed.yaml",
        "--path",
        "/api/usr/1",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(v["route"].is_null());
    assert_eq!(v["outcome"]["status"], 404);
    assert!(!v["candidates"].as_array().expect("candidates").is_empty());
    let o = run(&[
        "dry-run",
        "examples/seed.yaml",
        "--method",
        "GET",
        "--path",
        "/api/auth/login",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["outcome"]["status"], 405);
}

#[test]
fn serve_refuses_invalid_config() {
    let o = run(&["serve", "tests/fixtures/invalid/references.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not starting"));
}

#[test]
fn completions_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["completions", shell]);
        assert!(o.status.success());
        assert!(stdout(&o).contains("gw"), "{shell}");
    }
}

//! `gw test`: the shipped seed expectations pass; wrong expectations fail with expected/got and the
//! case's line; malformed test files get positioned diagnostics; JWKS/PEM-keyed configurations are
//! testable offline with a test key. Every test runs the built `gw` binary.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `gw` run from the workspace root, without JWT_SECRET (test files bring their own `env`).
fn gw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gw"))
        .current_dir(root())
        .env_remove("JWT_SECRET")
        .args(args)
        .output()
        .expect("run gw")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gw_test_{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn seed_tests() -> String {
    std::fs::read_to_string(root().join("examples/seed.test.yaml")).expect("seed tests")
}

/// The number of cases of a test file (list items under `cases:`).
fn case_count(text: &str) -> usize {
    let cases = text.split("\ncases:\n").nth(1).expect("a cases section");
    cases
        .lines()
        .filter(|l| l.starts_with("  - name: "))
        .count()
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the file"))
        + 1
}

#[test]
fn seed_expectations_pass() {
    let o = gw(&["test", "examples/seed.yaml", "examples/seed.test.yaml"]);
    let s = out(&o);
    assert_eq!(o.status.code(), Some(0), "{s}{}", err(&o));
    let cases = case_count(&seed_tests());
    assert!(cases >= 25, "{cases} cases");
    assert_eq!(
        s.lines().filter(|l| l.starts_with("ok   ")).count(),
        cases,
        "{s}"
    );
    assert!(s.ends_with(&format!("{cases} passed, 0 failed\n")), "{s}");
    assert!(
        s.contains("ok   examples/seed.test.yaml:")
            && s.contains(" login allows 5 per minute per IP"),
        "{s}"
    );
}

/// 401 vs 403, issuer and audience on examples/jwt.yaml (seed.yaml has no role requirement).
#[test]
fn jwt_example_expectations_pass() {
    let o = gw(&["test", "examples/jwt.yaml", "examples/jwt.test.yaml"]);
    let s = out(&o);
    assert_eq!(o.status.code(), Some(0), "{s}{}", err(&o));
    let cases =
        case_count(&std::fs::read_to_string(root().join("examples/jwt.test.yaml")).expect("read"));
    assert!(s.ends_with(&format!("{cases} passed, 0 failed\n")), "{s}");
    assert!(
        s.contains(" a valid token without the admin role is 403\n"),
        "{s}"
    );
}

#[test]
fn a_wrong_expectation_fails_with_expected_got_and_line() {
    let dir = scratch("wrong");
    // the login limit is 5: claim 4, and a wrong upstream for the payment route
    let text = seed_tests()
        .replacen(
            "    repeat: 6\n    expect:\n      admitted: 5",
            "    repeat: 6\n    expect:\n      admitted: 4",
            1,
        )
        .replacen(
            "      route: payment\n      upstream: order-service",
            "      route: payment\n      upstream: user-service",
            1,
        );
    let file = dir.join("seed.test.yaml");
    std::fs::write(&file, &text).expect("write");
    let f = file.to_string_lossy().into_owned();
    let o = gw(&["test", "examples/seed.yaml", &f]);
    let s = out(&o);
    assert_eq!(o.status.code(), Some(1), "{s}{}", err(&o));
    let login = line_of(&text, "- name: login allows 5 per minute per IP");
    assert!(
        s.contains(&format!(
            "FAIL {f}:{login} login allows 5 per minute per IP, the 6th gets 429: request 6 admitted: expected 4 then 429, got 5 admitted, 1 × 429"
        )),
        "{s}"
    );
    let pay = line_of(&text, "- name: payment keeps its path");
    assert!(
        s.contains(&format!("FAIL {f}:{pay} payment keeps its path and has its own limit of 10 per user: upstream: expected user-service, got order-service")),
        "{s}"
    );
    let cases = case_count(&text);
    assert!(
        s.ends_with(&format!("{} passed, 2 failed\n", cases - 2)),
        "{s}"
    );

    // the same as JSON, for CI annotations
    let o = gw(&["test", "examples/seed.yaml", &f, "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).expect("json");
    assert_eq!(v["failed"], 2);
    assert_eq!(v["passed"], cases as u64 - 2);
    let failed: Vec<&serde_json::Value> = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["passed"] == false)
        .collect();
    assert_eq!(failed[0]["line"], login);
    assert_eq!(failed[0]["file"], f.as_str());
    assert_eq!(failed[0]["failures"][0]["field"], "admitted");
    assert_eq!(failed[0]["failures"][0]["expected"], "4 then 429");
    assert_eq!(failed[1]["failures"][0]["got"], "order-service");
}

#[test]
fn a_malformed_test_file_gets_positioned_diagnostics() {
    let dir = scratch("malformed");
    let file = dir.join("bad.test.yaml");
    std::fs::write(
        &file,
        "env: { JWT_SECRET: seed-test-secret-of-at-least-32-bytes }\n\
         cases:\n\
         \x20 - name: typo\n\
         \x20   request: { path: /api/user/1, metod: GET }\n\
         \x20   expect: { status: 401 }\n\
         \x20 - name: unknown names\n\
         \x20   request: { path: /api/user/1 }\n\
         \x20   expect: { route: usr, upstream: user-servce, auth: expird }\n\
         \x20 - name: wrong type\n\
         \x20   request: { path: /api/user/1 }\n\
         \x20   expect: { status: [401] }\n",
    )
    .expect("write");
    let f = file.to_string_lossy().into_owned();
    let o = gw(&["test", "examples/seed.yaml", &f]);
    let e = err(&o);
    assert_eq!(o.status.code(), Some(2), "{}{e}", out(&o));
    for want in [
        format!("error: unknown field \"metod\"\n  --> {f}:4:35 (cases[0].request.metod)"),
        "hint: did you mean \"method\"?".to_string(),
        format!("error: unknown route \"usr\" (not in the configuration)\n  --> {f}:8:22"),
        "hint: did you mean \"user\"?".to_string(),
        format!(
            "error: unknown upstream \"user-servce\" (not in the configuration)\n  --> {f}:8:37"
        ),
        format!("error: unknown auth outcome \"expird\"\n  --> {f}:8:56"),
        format!("--> {f}:11:23 (cases[2].expect.status)"),
    ] {
        assert!(e.contains(&want), "missing {want:?} in\n{e}");
    }
    assert!(
        !out(&o).contains("ok "),
        "no case runs from an invalid file"
    );

    let syntax = dir.join("syntax.test.yaml");
    std::fs::write(&syntax, "cases: [\n").expect("write");
    let o = gw(&["test", "examples/seed.yaml", &syntax.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("invalid YAML"), "{}", err(&o));

    let o = gw(&["test", "examples/seed.yaml", "no/such.test.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("cannot read no/such.test.yaml"),
        "{}",
        err(&o)
    );
}

/// A configuration whose jwt policy fetches a JWKS over https is tested offline: the test file's key
/// pair verifies the policy instead, and the runner signs with the pinned ES256. A PEM-keyed policy is
/// tested end to end with the matching private key.
#[test]
fn jwks_and_pem_policies_are_testable_offline_with_test_keys() {
    let dir = scratch("keys");
    let kp = rcgen::KeyPair::generate().expect("P-256 key");
    std::fs::write(dir.join("signer.key.pem"), kp.serialize_pem()).expect("write");
    std::fs::write(dir.join("signer.pub.pem"), kp.public_key_pem()).expect("write");
    let other = rcgen::KeyPair::generate().expect("P-256 key");
    std::fs::write(dir.join("other.key.pem"), other.serialize_pem()).expect("write");
    std::fs::write(
        dir.join("gw.yaml"),
        "listeners: [{ name: l, address: 127.0.0.1:8080 }]\n\
         upstreams: [{ name: api, endpoints: [{ address: 127.0.0.1:3001 }] }]\n\
         routes:\n\
         \x20 - { name: admin, match: { prefix: /admin }, upstream: api, policies: [idp] }\n\
         \x20 - { name: partner, match: { prefix: /partner }, upstream: api, policies: [partner-keys] }\n\
         policies:\n\
         \x20 - name: idp\n\
         \x20   type: jwt\n\
         \x20   keys: { type: jwks, url: \"https://idp.invalid/.well-known/jwks.json\", algorithms: [ES256] }\n\
         \x20   require: { claim: roles, any_of: [admin] }\n\
         \x20   forward: [{ claim: sub, header: X-User-Id }]\n\
         \x20 - name: partner-keys\n\
         \x20   type: jwt\n\
         \x20   keys: { type: pem, files: [{ path: signer.pub.pem }], algorithms: [ES256] }\n",
    )
    .expect("write");
    let cases = "cases:\n\
         \x20 - name: admin token accepted\n\
         \x20   request: { path: /admin/x, jwt: { key: signer, claims: { sub: ada, roles: [admin] } } }\n\
         \x20   expect: { status: proxy, auth: accept, upstream_headers: { X-User-Id: ada } }\n\
         \x20 - name: valid token without the role is 403\n\
         \x20   request: { path: /admin/x, jwt: { key: signer, claims: { sub: bob, roles: [dev] } } }\n\
         \x20   expect: { status: 403, auth: insufficient_scope, error: insufficient_scope }\n\
         \x20 - name: no token is 401\n\
         \x20   request: { path: /admin/x }\n\
         \x20   expect: { status: 401, auth: missing }\n\
         \x20 - name: a key the policy does not trust is 401\n\
         \x20   request: { path: /admin/x, jwt: { key: other, claims: { sub: eve, roles: [admin] } } }\n\
         \x20   expect: { status: 401, auth: bad_signature }\n\
         \x20 - name: the PEM-keyed policy verifies with its own public key\n\
         \x20   request: { path: /partner/y, jwt: { key: signer, claims: { sub: p1 } } }\n\
         \x20   expect: { status: proxy, auth: accept }\n";
    std::fs::write(
        dir.join("gw.test.yaml"),
        format!(
            "keys:\n\
             \x20 - {{ name: signer, private_key: signer.key.pem, public_key: signer.pub.pem, verifies: [idp] }}\n\
             \x20 - {{ name: other, private_key: other.key.pem }}\n{cases}"
        ),
    )
    .expect("write");
    let cfg = dir.join("gw.yaml").to_string_lossy().into_owned();
    let t = dir.join("gw.test.yaml").to_string_lossy().into_owned();
    let o = gw(&["test", &cfg, &t]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).ends_with("5 passed, 0 failed\n"), "{}", out(&o));

    // without the substitution the JWKS URL would have to be fetched: refused, never fetched
    std::fs::write(
        dir.join("nokey.test.yaml"),
        format!("keys:\n  - {{ name: signer, private_key: signer.key.pem }}\n  - {{ name: other, private_key: other.key.pem }}\n{cases}"),
    )
    .expect("write");
    let o = gw(&["test", &cfg, &dir.join("nokey.test.yaml").to_string_lossy()]);
    assert_eq!(o.status.code(), Some(2), "{}{}", out(&o), err(&o));
    assert!(
        err(&o).contains("jwt policy idp fetches its keys from https://idp.invalid/.well-known/jwks.json; gw test never opens a network connection: declare a test key with `verifies: [idp]`"),
        "{}",
        err(&o)
    );
}

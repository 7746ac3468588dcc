use super::store::{read, write, Entry};
use super::*;
use crate::discovery::SourceKind;

fn ep(a: &str, w: u32) -> DiscoveredEndpoint {
    DiscoveredEndpoint::new(a.parse().unwrap(), w)
}

#[test]
fn static_wins_then_registered_then_discovered() {
    let st = [("10.0.0.1:80".parse().unwrap(), 5)];
    let base = crate::discovery::backends::combine(
        &st,
        Some(&[ep("10.0.0.2:80", 1), ep("10.0.0.3:80", 1)]),
        SourceKind::Dns,
    );
    let out = with_registered(
        base,
        &[
            ep("10.0.0.1:80", 2),
            ep("10.0.0.2:80", 7),
            ep("10.0.0.0:80", 3),
        ],
    );
    let got: Vec<(String, u32, &str)> = out
        .iter()
        .map(|e| (e.addr.to_string(), e.weight, e.origin.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("10.0.0.0:80".into(), 3, "admin"),
            ("10.0.0.1:80".into(), 5, "static"),
            ("10.0.0.2:80".into(), 7, "admin"),
            ("10.0.0.3:80".into(), 1, "dns"),
        ]
    );
}

#[test]
fn insert_remove_conflicts_and_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let regs = Registrations::default();
    regs.inner.lock().state_file = Some(path.clone());
    let a: SocketAddr = "127.0.0.1:3001".parse().unwrap();
    regs.insert("users", a, 2).unwrap();
    assert_eq!(regs.insert("users", a, 3), Err(ChangeError::Exists));
    assert_eq!(
        read(&path).unwrap(),
        vec![Entry {
            upstream: "users".into(),
            address: "127.0.0.1:3001".into(),
            weight: 2
        }]
    );
    // no temporary file is left behind
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(regs.remove("users", a), Ok(2));
    assert_eq!(regs.remove("users", a), Err(ChangeError::Missing));
    assert!(read(&path).unwrap().is_empty());
    assert!(regs.knows("users"));
}

#[test]
fn a_failed_write_undoes_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let regs = Registrations::default();
    // a directory that does not exist: the write fails
    regs.inner.lock().state_file = Some(dir.path().join("nope/state.json"));
    let a: SocketAddr = "127.0.0.1:3001".parse().unwrap();
    assert!(matches!(
        regs.insert("users", a, 1),
        Err(ChangeError::Persist(_))
    ));
    assert!(regs.get("users").is_empty());
}

#[test]
fn invalid_state_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.json");
    assert!(read(&p).unwrap().is_empty(), "missing file = none");
    for (text, want) in [
        ("{not json", "not a gw state file"),
        (
            r#"{"version": 9, "registrations": []}"#,
            "unsupported version 9",
        ),
        (
            r#"{"version": 1, "registrations": [{"upstream": "u", "address": "nope", "weight": 1}]}"#,
            "invalid endpoint address",
        ),
        (
            r#"{"version": 1, "registrations": [{"upstream": "u", "address": "db.local:80", "weight": 1}]}"#,
            "not an IP address",
        ),
        (
            r#"{"version": 1, "registrations": [{"upstream": "u", "address": "127.0.0.1:80", "weight": 0}]}"#,
            "weight must be between 1 and 1000",
        ),
    ] {
        std::fs::write(&p, text).unwrap();
        let e = read(&p).unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
    }
    write(&p, &[]).unwrap();
    assert!(read(&p).unwrap().is_empty());
}

#[test]
fn admin_state_file_is_resolved_against_the_configuration_directory() {
    let yaml = |admin: &str| {
        format!(
            "listeners: [{{name: p, address: \"127.0.0.1:8080\"}}]\nadmin: {admin}\nupstreams: [{{name: u, endpoints: [{{address: \"127.0.0.1:3000\"}}]}}]\nroutes: [{{name: r, match: {{prefix: /}}, upstream: u}}]\n"
        )
    };
    let c = crate::compile(
        "/etc/gw/gw.yaml",
        &yaml("{token: a-token-of-16-chars-or-more, state_file: regs.json}"),
        &|_| None,
    );
    let plan = c.plan.expect("compiles");
    assert_eq!(
        plan.admin.unwrap().state_file,
        Some(PathBuf::from("/etc/gw/regs.json"))
    );
    let c = crate::compile("/etc/gw/gw.yaml", &yaml("{state_file: \"\"}"), &|_| None);
    assert!(c.plan.is_none());
    assert!(c
        .diagnostics
        .iter()
        .any(|d| d.path == "admin.state_file" && d.message == "the path is empty"));
    let c = crate::compile("/etc/gw/gw.yaml", &yaml("{statefile: x.json}"), &|_| None);
    assert!(c.plan.is_none(), "unknown admin fields are errors");
}

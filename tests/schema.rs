//! The committed JSON Schema (`schema/gw.schema.json`) checked with an independent validator (the
//! `jsonschema` crate): every example configuration carries the editor modeline and matches it, and
//! every invalid fixture whose problem is one of *shape* (unknown field, wrong type, bad enum value,
//! bad unit or address string) is rejected by it at the right place, while the fixtures whose problems
//! are semantic (references, conflicts, ranges, key material: `gw validate`'s job) are accepted.
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

const MODELINE: &str = "# yaml-language-server: $schema=../schema/gw.schema.json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("schema/gw.schema.json")).expect("schema");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema is a valid draft 2020-12 schema")
}

/// The YAML document as JSON, as a YAML language server sees it: read with a YAML parser independent
/// of the loader's, numbers beyond 64 bits kept as (imprecise) floats like JavaScript's.
fn json_of(path: &Path) -> Result<Value, String> {
    json_of_text(&std::fs::read_to_string(path).expect("readable"))
}

fn json_of_text(text: &str) -> Result<Value, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    Ok(docs.first().map_or(Value::Null, to_json))
}

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(s.clone()), Value::Number),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) | Yaml::Real(s) => s.clone(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null | Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

/// Where the schema reports errors (JSON pointers), and the messages.
fn errors(v: &jsonschema::Validator, doc: &Value) -> (BTreeSet<String>, Vec<String>) {
    let mut at = BTreeSet::new();
    let mut msgs = Vec::new();
    for e in v.iter_errors(doc) {
        at.insert(e.instance_path().as_str().to_string());
        msgs.push(format!("{}: {e}", e.instance_path().as_str()));
    }
    (at, msgs)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Gateway configurations among `examples/`: not `gw test` expectation files (`*.test.yaml`), not
/// discovery lists (a YAML sequence, not a mapping of sections).
fn is_gateway_config(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    !name.ends_with(".test.yaml") && json_of(path).is_ok_and(|v| v.is_object())
}

#[test]
fn examples_carry_the_modeline_and_match_the_schema() {
    let v = validator();
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for (dir, modeline) in [("examples", true), ("examples/bench", false)] {
        for path in yaml_files(&root().join(dir)) {
            if !is_gateway_config(&path) {
                continue;
            }
            let name = path
                .strip_prefix(root())
                .unwrap_or(&path)
                .display()
                .to_string();
            let text = std::fs::read_to_string(&path).expect("example");
            if modeline && text.lines().next() != Some(MODELINE) {
                failures.push(format!("{name}: the first line must be `{MODELINE}`"));
            }
            let (_, msgs) = errors(&v, &json_of(&path).expect("YAML"));
            if !msgs.is_empty() {
                failures.push(format!("{name}:\n  {}", msgs.join("\n  ")));
            }
            checked.push(name);
        }
    }
    // the examples the documentation and the other suites use are among those checked
    for must in [
        "examples/seed.yaml",
        "examples/quickstart.yaml",
        "examples/jwt.yaml",
        "examples/rate-limit.yaml",
        "examples/discovery.yaml",
        "examples/bench/limits-redis.yaml",
    ] {
        assert!(
            checked.iter().any(|c| c == must),
            "{must} was not checked: {checked:?}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `${VAR}` references are written where the examples use them (secrets, URLs) and in unit strings;
/// the schema sees the raw text and must not refuse them.
#[test]
fn environment_references_are_accepted() {
    let v = validator();
    let doc = json_of_text(
        r#"
listeners: [{ name: p, address: "${LISTEN:-127.0.0.1:8080}" }]
admin: { token: "${GW_ADMIN_TOKEN}" }
server: { grace_period: "${GRACE:-5s}", max_body_size: "${MAX_BODY}" }
upstreams: [{ name: u, endpoints: [{ address: "${USERS_ADDR}" }] }]
routes: [{ name: r, match: { prefix: / }, upstream: u }]
"#,
    )
    .expect("YAML");
    let (_, msgs) = errors(&v, &doc);
    assert!(msgs.is_empty(), "{msgs:?}");
}

/// The invalid fixtures whose errors are all semantic: the schema accepts them (their problems are
/// references, conflicts, ranges, environment, key material, claim paths: `gw validate` finds them).
const SEMANTIC: &[&str] = &["absurd_values", "env", "jwt_keys", "references", "tracing"];

/// The invalid fixtures with shape errors, and where the schema must report them (JSON pointers;
/// nothing else may be reported, so a fixture cannot pass on an unrelated error).
const SHAPE: &[(&str, &[&str])] = &[
    // bad address strings ("localhost:80", "nohost") and an unknown method ("get"); the conflicts,
    // the duplicate and the shadowed route, the bad pattern and path are semantic
    (
        "conflicts",
        &[
            "/listeners/2/address",
            "/routes/4/match/methods/0",
            "/upstreams/0/endpoints/1/address",
        ],
    ),
    // the integer beyond 64 bits and the unknown `retry` field
    (
        "huge_integer",
        &["/routes/0", "/upstreams/0/endpoints/0/weight"],
    ),
    // hosts that look like IPv4 addresses but are not
    (
        "ipv4_lookalike",
        &[
            "/upstreams/0/endpoints/0/address",
            "/upstreams/0/endpoints/1/address",
            "/upstreams/0/endpoints/2/address",
        ],
    ),
    // unknown field `decay` in a tagged variant
    ("redis", &["/upstreams/0/load_balancing"]),
    // outage_share out of (0, 1] and a word other than `auto`; the topology conflicts are semantic
    ("redis_topology", &["/policies/5", "/policies/6"]),
    // bad enum tag, unknown field, bare number for a duration, bad enum value, unknown section
    (
        "typos",
        &[
            "",
            "/policies/0",
            "/routes/0",
            "/routes/1/timeouts/read",
            "/upstreams/0/load_balancing",
        ],
    ),
];

/// Not YAML at all: no schema applies.
const SYNTAX: &[&str] = &["syntax"];

#[test]
fn shape_fixtures_are_rejected_and_semantic_ones_accepted() {
    let v = validator();
    let dir = root().join("tests/fixtures/invalid");
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    for path in yaml_files(&dir) {
        let stem = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        seen.push(stem.clone());
        let doc = json_of(&path);
        if SYNTAX.contains(&stem.as_str()) {
            assert!(doc.is_err(), "{stem}: listed as a syntax error but parses");
            continue;
        }
        let doc = doc.unwrap_or_else(|e| panic!("{stem}: {e}"));
        let (at, msgs) = errors(&v, &doc);
        if SEMANTIC.contains(&stem.as_str()) {
            if !msgs.is_empty() {
                failures.push(format!(
                    "{stem} (semantic) is rejected by the schema:\n  {}",
                    msgs.join("\n  ")
                ));
            }
        } else if let Some((_, want)) = SHAPE.iter().find(|(n, _)| *n == stem) {
            let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
            if at != want {
                failures.push(format!(
                    "{stem} (shape): errors at {at:?}, expected at {want:?}:\n  {}",
                    msgs.join("\n  ")
                ));
            }
        } else {
            failures.push(format!(
                "{stem}.yaml is not classified: add it to SHAPE (with where the schema rejects it) or SEMANTIC in tests/schema.rs"
            ));
        }
    }
    for listed in SEMANTIC
        .iter()
        .chain(SYNTAX)
        .chain(SHAPE.iter().map(|(n, _)| n))
    {
        assert!(
            seen.iter().any(|s| s == listed),
            "{listed}.yaml is listed but missing"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Environment variables of one case.
type Env<'a> = &'a [(&'a str, &'a str)];

/// The schema and the loader agree on small documents around the edges of the language (empty
/// values, environment references, addresses, methods); above all, the schema never refuses a file
/// that `gw validate` accepts.
#[test]
fn schema_agrees_with_the_loader_at_the_edges() {
    let v = validator();
    let base = "listeners: [{ name: p, address: \"127.0.0.1:8080\" }]\n\
                upstreams: [{ name: u, endpoints: [{ address: \"127.0.0.1:1\" }] }]\n";
    let route = "routes: [{ name: r, match: { prefix: / }, upstream: u }]\n";
    // (extra YAML, environment, whether both accept it)
    let cases: &[(&str, Env, bool)] = &[
        // an empty value is an empty list or mapping for the loader
        (
            "routes: [{ name: r, match: { prefix: /, hosts: ~, methods: }, upstream: u, policies: }]\n\
             global_policies:\nadmin:\nserver: { trusted_proxies: ~, downstream: ~, path_policy: }\n",
            &[],
            true,
        ),
        ("server: { grace_period: \"${G}\" }\n", &[("G", "5s")], true),
        ("server: { max_body_size: \"${B:-1MiB}\" }\n", &[], true),
        ("server: { threads: \"${T}\" }\n", &[("T", "2")], false),
        ("server: { threads: 2, grace_period: 5 }\n", &[], false),
        ("admin: { address: \"[::1]:9901\", token: \"${TOKEN}\" }\n", &[("TOKEN", "0123456789abcdef0123")], true),
        ("admin: { address: \"localhost:9901\" }\n", &[], false),
        ("observability: { access_log: { type: stdout }, metrics: false }\n", &[], true),
        ("observability: { access_log: { type: stdout, path: x } }\n", &[], false),
        ("server: { max_body_size: 10 MB }\n", &[], true),
        ("server: { max_body_size: 10 mb }\n", &[], false),
    ];
    let mut wrong = Vec::new();
    for (extra, env, ok) in cases {
        let with_route = if extra.starts_with("routes:") {
            ""
        } else {
            route
        };
        let text = format!("{base}{with_route}{extra}");
        let lookup = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let compiled = gateway_core::compile("edge.yaml", &text, &lookup);
        let by_loader = compiled.errors().count() == 0;
        let doc = json_of_text(&text).expect("YAML");
        let (_, msgs) = errors(&v, &doc);
        let by_schema = msgs.is_empty();
        if by_loader != *ok || by_schema != *ok {
            let diags: Vec<String> = compiled
                .diagnostics
                .iter()
                .map(|d| d.message.clone())
                .collect();
            wrong.push(format!(
                "{extra}  expected {ok}, loader {by_loader} {diags:?}, schema {by_schema} {msgs:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

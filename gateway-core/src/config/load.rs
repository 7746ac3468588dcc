//! Reading a configuration file: YAML syntax, `${ENV}` interpolation, and deserialization of each element
//! on its own so that every bad element is reported, not only the first.
//!
//! This is the only place that knows about `serde_yaml` (archived upstream): swapping the YAML crate
//! touches this file and [`super::spans`] only.
use super::spans::{Pos, SpanIndex};
use super::split::{Body, Slice};
use super::*;
use crate::diag::{did_you_mean, Diags, Severity};
use serde::de::DeserializeOwned;
use serde_yaml::Value;

/// Looks up an environment variable (injected so the compiler stays a pure function of its inputs).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(crate) const TOP_LEVEL: &[&str] = &[
    "server",
    "listeners",
    "admin",
    "observability",
    "upstreams",
    "routes",
    "policies",
    "global_policies",
];

/// Parses `text` into a [`Config`], recording every problem in `diags`. Elements that fail to deserialize
/// are kept as `None` so that their index (and the YAML paths of the others) stay stable.
pub fn load<'t>(
    text: &'t str,
    env: EnvLookup,
    diags: &mut Diags,
) -> Option<(Config, SpanIndex<'t>)> {
    if let Some(sections) = super::split::sections(text) {
        // element by element; any doubt (a slice that does not parse alone) falls back to the whole
        // document below, which reports every problem exactly as before
        let mut local = Diags::new(&diags.file);
        let spans = SpanIndex::build(text);
        if let Some(cfg) = load_sections(text, sections, env, &spans, &mut local) {
            diags.list.append(&mut local.list);
            diags.settled.extend(local.settled);
            return Some((cfg, spans));
        }
    }
    load_whole(text, env, diags)
}

/// [`load`] by parsing the whole document into one YAML tree (any document the splitter is unsure of).
fn load_whole<'t>(
    text: &'t str,
    env: EnvLookup,
    diags: &mut Diags,
) -> Option<(Config, SpanIndex<'t>)> {
    // An integer beyond 64 bits fails the whole YAML document in serde_yaml; each one is reported at
    // its place and blanked (same length, so every position stays put), then parsing goes on.
    let mut work = std::borrow::Cow::Borrowed(text);
    let mut root: Value = loop {
        let e = match serde_yaml::from_str(&work) {
            Ok(v) => break v,
            Err(e) => e,
        };
        if let Some(big) = oversized_integer(&work, &e) {
            diags.push(
                Severity::Error,
                big.pos,
                &big.path,
                format!(
                    "integer {} is too large: the largest accepted is {}",
                    big.token,
                    u64::MAX
                ),
                None,
            );
            if !big.path.is_empty() {
                diags.settled.insert(big.path);
            }
            let blank = format!("~{}", " ".repeat(big.token.len() - 1));
            work.to_mut()
                .replace_range(big.index..big.index + big.token.len(), &blank);
            continue;
        }
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line(),
                column: l.column(),
            })
            .unwrap_or(Pos { line: 1, column: 1 });
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        diags.push(
            Severity::Error,
            pos,
            "",
            format!("invalid YAML: {msg}"),
            None,
        );
        return None;
    };
    // positions are computed only if some diagnostic needs one (see `SpanIndex`)
    let spans = SpanIndex::build(work);
    match &root {
        Value::Mapping(_) => (),
        Value::Null => {
            diags.push(
                Severity::Error,
                Pos { line: 1, column: 1 },
                "",
                "the configuration is empty".into(),
                Some("start from examples/quickstart.yaml".into()),
            );
            return None;
        }
        _ => {
            diags.push(
                Severity::Error,
                spans.value(""),
                "",
                "the configuration must be a mapping of sections".into(),
                None,
            );
            return None;
        }
    }
    interpolate(&mut root, "", env, &spans, diags);
    let fingerprints = Fingerprints::of(&root);

    let Value::Mapping(top) = root else {
        return None;
    };
    let mut raw = RawConfig::default();
    for (k, v) in top {
        let Some(key) = section_name(&k, &spans, diags) else {
            continue;
        };
        match key.as_str() {
            "server" => raw.server = Some(v),
            "listeners" => raw.listeners = Some(v),
            "admin" => raw.admin = Some(v),
            "observability" => raw.observability = Some(v),
            "upstreams" => raw.upstreams = Some(v),
            "routes" => raw.routes = Some(v),
            "policies" => raw.policies = Some(v),
            "global_policies" => raw.global_policies = Some(v),
            other => diags.push(
                Severity::Error,
                spans.key(other),
                other,
                format!("unknown section \"{other}\""),
                did_you_mean(other, TOP_LEVEL.iter().copied())
                    .or_else(|| Some(format!("sections are: {}", TOP_LEVEL.join(", ")))),
            ),
        }
    }

    let mut cfg = Config {
        fingerprints,
        ..Config::default()
    };
    if let Some(v) = raw.server {
        if let Some(s) = de::<ServerConfig>(v, "server", &spans, diags) {
            cfg.server = s;
        }
    }
    if let Some(v) = raw.admin {
        cfg.admin = de::<AdminConfig>(v, "admin", &spans, diags);
    }
    if let Some(v) = raw.observability {
        if let Some(o) = de::<ObservabilityConfig>(v, "observability", &spans, diags) {
            cfg.observability = o;
        }
    }
    cfg.listeners = list::<ListenerConfig>(raw.listeners, "listeners", &spans, diags)
        .into_iter()
        .flatten()
        .collect();
    cfg.upstreams = list(raw.upstreams, "upstreams", &spans, diags);
    cfg.routes = list(raw.routes, "routes", &spans, diags);
    cfg.policies = policies(raw.policies, &spans, diags);
    if let Some(v) = raw.global_policies {
        cfg.global_policies =
            de::<Vec<String>>(v, "global_policies", &spans, diags).unwrap_or_default();
    }
    Some((cfg, spans))
}

/// Content fingerprints of the named elements of `upstreams`, `routes` and `policies` (name →
/// hash of the element's YAML after `${ENV}` interpolation; key order does not matter). A reload
/// compares them by name to report what was added, removed or changed. Stable within a process
/// (SipHash with fixed keys), not meant to be stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprints {
    pub upstreams: BTreeMap<String, u64>,
    pub routes: BTreeMap<String, u64>,
    pub policies: BTreeMap<String, u64>,
    /// Every other top-level section (`server`, `listeners`, `global_policies`, ...) as a whole.
    pub sections: BTreeMap<String, u64>,
}

impl Fingerprints {
    fn of(root: &Value) -> Self {
        let hash = fingerprint;
        let section = |name: &str| -> BTreeMap<String, u64> {
            let Some(Value::Sequence(items)) = root.get(name) else {
                return BTreeMap::new();
            };
            items
                .iter()
                .filter_map(|item| {
                    let n = item.get("name")?.as_str()?;
                    Some((n.to_string(), hash(item)))
                })
                .collect()
        };
        Fingerprints {
            upstreams: section("upstreams"),
            routes: section("routes"),
            policies: section("policies"),
            sections: root
                .as_mapping()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.as_str()?, v)))
                .filter(|(k, _)| !matches!(*k, "upstreams" | "routes" | "policies"))
                .map(|(k, v)| (k.to_string(), hash(v)))
                .collect(),
        }
    }
}

/// The content hash of one element or section.
fn fingerprint(v: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The element-by-element path of [`load`]: each slice of [`super::split`] is parsed, interpolated,
/// fingerprinted and deserialized on its own, then dropped, so at most one element exists as a YAML
/// tree at a time. `None` when a slice does not parse on its own: the caller then parses the whole
/// document, which reports the problem with its position.
fn load_sections(
    text: &str,
    sections: Vec<(String, Body)>,
    env: EnvLookup,
    spans: &SpanIndex,
    diags: &mut Diags,
) -> Option<Config> {
    let parse = |s: &Slice| serde_yaml::from_str::<Value>(&s.document(text)).ok();
    let mut cfg = Config::default();
    let mut fp = Fingerprints::default();
    let mut raw = RawConfig::default();
    for (key, body) in sections {
        match body {
            Body::Items(items) => {
                // sized once: a doubling vector of 100,000 routes keeps ~30 % slack and copies itself
                match key.as_str() {
                    "upstreams" => cfg.upstreams.reserve_exact(items.len()),
                    "routes" => cfg.routes.reserve_exact(items.len()),
                    _ => cfg.policies.reserve_exact(items.len()),
                }
                for (i, slice) in items.iter().enumerate() {
                    let mut v = parse(slice)?;
                    let path = format!("{key}[{i}]");
                    interpolate(&mut v, &path, env, spans, diags);
                    let name = v.get("name").and_then(Value::as_str).map(str::to_string);
                    let hash = fingerprint(&v);
                    let prints = match key.as_str() {
                        "upstreams" => {
                            cfg.upstreams.push(de(v, &path, spans, diags));
                            &mut fp.upstreams
                        }
                        "routes" => {
                            cfg.routes.push(de(v, &path, spans, diags));
                            &mut fp.routes
                        }
                        _ => {
                            cfg.policies.push(policy(v, i, spans, diags));
                            &mut fp.policies
                        }
                    };
                    if let Some(n) = name {
                        prints.insert(n, hash);
                    }
                }
            }
            Body::Whole(slice) => {
                let mut v = parse(&slice)?;
                interpolate(&mut v, &key, env, spans, diags);
                let prints = match key.as_str() {
                    "upstreams" => Some(&mut fp.upstreams),
                    "routes" => Some(&mut fp.routes),
                    "policies" => Some(&mut fp.policies),
                    _ => None,
                };
                match prints {
                    Some(prints) => {
                        for item in v.as_sequence().into_iter().flatten() {
                            if let Some(n) = item.get("name").and_then(Value::as_str) {
                                prints.insert(n.to_string(), fingerprint(item));
                            }
                        }
                    }
                    None => {
                        fp.sections.insert(key.clone(), fingerprint(&v));
                    }
                }
                let field = match key.as_str() {
                    "server" => &mut raw.server,
                    "listeners" => &mut raw.listeners,
                    "admin" => &mut raw.admin,
                    "observability" => &mut raw.observability,
                    "upstreams" => &mut raw.upstreams,
                    "routes" => &mut raw.routes,
                    "policies" => &mut raw.policies,
                    "global_policies" => &mut raw.global_policies,
                    // the splitter only passes known sections
                    _ => return None,
                };
                *field = Some(v);
            }
        }
    }
    cfg.fingerprints = fp;
    if let Some(v) = raw.server {
        if let Some(s) = de::<ServerConfig>(v, "server", spans, diags) {
            cfg.server = s;
        }
    }
    if let Some(v) = raw.admin {
        cfg.admin = de::<AdminConfig>(v, "admin", spans, diags);
    }
    if let Some(v) = raw.observability {
        if let Some(o) = de::<ObservabilityConfig>(v, "observability", spans, diags) {
            cfg.observability = o;
        }
    }
    cfg.listeners = list::<ListenerConfig>(raw.listeners, "listeners", spans, diags)
        .into_iter()
        .flatten()
        .collect();
    if raw.upstreams.is_some() {
        cfg.upstreams = list(raw.upstreams, "upstreams", spans, diags);
    }
    if raw.routes.is_some() {
        cfg.routes = list(raw.routes, "routes", spans, diags);
    }
    if raw.policies.is_some() {
        cfg.policies = policies(raw.policies, spans, diags);
    }
    if let Some(v) = raw.global_policies {
        cfg.global_policies =
            de::<Vec<String>>(v, "global_policies", spans, diags).unwrap_or_default();
    }
    Some(cfg)
}

#[cfg(test)]
pub(in crate::config) mod tests {
    use super::*;

    /// The configuration (as `Debug` text) and the diagnostics of loading `text`, either element by
    /// element (`whole == false`) or as one document.
    fn load_as(text: &str, env: EnvLookup, whole: bool) -> (Option<String>, Vec<String>) {
        let mut d = Diags::new("t.yaml");
        let out = if whole {
            load_whole(text, env, &mut d)
        } else {
            load(text, env, &mut d)
        };
        let cfg = out.map(|(c, _)| format!("{c:?}"));
        let diags = d
            .finish()
            .iter()
            .map(|d| {
                format!(
                    "{}:{} {} {} {:?}",
                    d.line, d.column, d.path, d.message, d.hint
                )
            })
            .collect();
        (cfg, diags)
    }

    /// Every example and fixture (valid and invalid), as (path, text).
    pub(in crate::config) fn example_and_fixture_texts() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut texts = Vec::new();
        for dir in [
            "examples",
            "examples/bench",
            "tests/fixtures",
            "tests/fixtures/invalid",
        ] {
            let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "yaml") {
                    let text = std::fs::read_to_string(&p).expect("read");
                    texts.push((p.display().to_string(), text));
                }
            }
        }
        texts
    }

    fn errors(text: &str) -> Vec<String> {
        let mut d = Diags::new("t.yaml");
        let _ = load(text, &|_| None, &mut d);
        d.finish()
            .iter()
            .map(|d| format!("{}:{} {} {}", d.line, d.column, d.path, d.message))
            .collect()
    }

    /// Texts the line splitter cuts although the event parser would not (anchors and aliases inside
    /// or across elements, a syntax error inside an element) load exactly as the whole document does.
    #[test]
    fn line_cut_texts_load_as_the_whole_document() {
        let base = "listeners: [{ name: l, address: \"127.0.0.1:0\" }]\nupstreams:\n  - name: u\n    endpoints: [{ address: \"127.0.0.1:1\" }]\n";
        for routes in [
            "routes:\n  - name: a\n    match: &m { prefix: /a }\n    upstream: u\n    x: *m\n",
            "routes:\n  - name: a\n    match: &m { prefix: /a }\n    upstream: u\n  - name: b\n    match: *m\n    upstream: u\n",
            "routes:\n  - name: a\n    match: { prefix: /a\n    upstream: u\n",
            "routes:\n  - name: a\n    match: { prefix: /a }\n    upstream: !!str u\n",
            "routes:\n  - name: \"a\n  - name: b\"\n    match: { prefix: /a }\n    upstream: u\n",
            "routes:\n  - name: a\n    match: { prefix: \"/${PREFIX}\" }\n    upstream: u\n",
        ] {
            let text = format!("{base}{routes}");
            assert!(super::super::split::sections(&text).is_some(), "{text}");
            let env = |k: &str| (k == "PREFIX").then(|| "p".to_string());
            let run = |whole: bool| load_as(&text, &env, whole);
            assert_eq!(run(false), run(true), "{text}");
        }
    }

    /// The element-by-element path and the whole-document path read every example and fixture
    /// (valid and invalid ones) into the same configuration with the same diagnostics.
    #[test]
    fn split_and_whole_loads_agree() {
        let files = example_and_fixture_texts();
        assert!(files.len() > 10, "{}", files.len());
        let mut split = 0;
        for (path, text) in &files {
            let env = |k: &str| (k != "UNSET_VAR").then(|| format!("v-{k}"));
            assert_eq!(
                load_as(text, &env, false),
                load_as(text, &env, true),
                "{path}"
            );
            split += usize::from(super::super::split::sections(text).is_some());
        }
        assert!(split > 10, "most files take the element-by-element path");
    }

    /// Found by `both_paths_agree_on_random_layouts`: an empty section value followed by a comment and
    /// a blank last line made the event splitter cut a slice that ends before it starts (a panic in
    /// `gw validate`); a block sequence as a section's whole value was cut after its first `- `.
    #[test]
    fn empty_values_and_sequences_load_as_the_whole_document() {
        let env = |_: &str| None;
        for text in [
            "routes:\n  - { name: c, upstream: u }\npolicies:\n# c\n   ",
            "policies:\n# c\n   ",
            "routes:\nserver:\n- name: top",
            "server:\n  - name: top\n  - b",
        ] {
            assert_eq!(
                load_as(text, &env, false),
                load_as(text, &env, true),
                "{text}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// On random block-style texts (sections, list elements, nested maps, comments, quotes, blank
        /// lines, odd indentation) both load paths give the same configuration and diagnostics.
        #[test]
        fn both_paths_agree_on_random_layouts(lines in proptest::collection::vec(
            "(routes:|upstreams:|policies:|server:|listeners: \\[\\]|  - name: [a-c]|  - \\{ name: [a-c], upstream: u \\}|    match: \\{ prefix: /[a-z] \\}|    upstream: u|    endpoints: \\[\\{ address: \"h:1\" \\}\\]|  threads: [0-9]|# c|  # c|    # c||   |  -   name: x|    x: \\||      text|  - 'q: u'|    y: \"a # b\"|- name: top|\t- bad)",
            0..14,
        )) {
            let text = lines.join("\n");
            let env = |_: &str| None;
            proptest::prop_assert_eq!(load_as(&text, &env, false), load_as(&text, &env, true), "{}", text);
        }
    }

    /// Issue 11 item 13: an integer beyond u64 is a located field error and hides nothing else.
    #[test]
    fn huge_integers_are_field_errors() {
        let e = errors(
            "server: { threads: 99999999999999999999 }\nlisteners: [{ name: l, address: x, bogus: 1 }]\n\
             upstreams:\n  - name: a\n    endpoints: [{ address: \"h:1\", weight: -99999999999999999999 }]\n",
        );
        assert_eq!(
            e,
            [
                "1:20 server.threads integer 99999999999999999999 is too large: the largest accepted is 18446744073709551615",
                "2:36 listeners[0].bogus unknown field \"bogus\"",
                "5:43 upstreams[0].endpoints[0].weight integer -99999999999999999999 is too large: the largest accepted is 18446744073709551615",
            ]
        );
    }

    #[test]
    fn invalid_utf8_has_a_position() {
        assert_eq!(utf8_text(b"a: 1\n"), Ok("a: 1\n"));
        let e = utf8_text(b"a: 1\nb: \xc3\xa9\xff\n").unwrap_err();
        assert_eq!((e.line, e.column, e.byte), (2, 5, 0xff));
        assert!(e.to_string().contains("line 2, column 5"), "{e}");
        let e = utf8_text(b"\xfe").unwrap_err();
        assert_eq!((e.line, e.column), (1, 1));
    }
}

/// An integer scalar too large for any field (serde_yaml reads it as `i128`/`u128` and fails the
/// whole document).
struct OversizedInteger {
    pos: Pos,
    index: usize,
    token: String,
    path: String,
}

fn oversized_integer(text: &str, e: &serde_yaml::Error) -> Option<OversizedInteger> {
    let msg = e.to_string();
    if !(msg.contains(" as u128") || msg.contains(" as i128")) {
        return None;
    }
    let loc = e.location()?;
    let index = loc.index();
    let rest = text.get(index..)?;
    let len = rest
        .find(|c: char| c.is_whitespace() || matches!(c, ',' | '}' | ']' | '#'))
        .unwrap_or(rest.len());
    // only ever blank an integer token (so every round removes one and the loop ends)
    let token = &rest[..len];
    let digits = token.trim_start_matches(['-', '+']);
    if digits.is_empty()
        || !digits
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    let path = match msg.split_once(": invalid type") {
        Some((p, _)) if !p.contains(' ') => p.to_string(),
        _ => String::new(),
    };
    Some(OversizedInteger {
        pos: Pos {
            line: loc.line(),
            column: loc.column(),
        },
        index,
        token: token.to_string(),
        path,
    })
}

/// Why configuration bytes are not text: the first invalid UTF-8 byte, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUtf8 {
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub byte: u8,
}

impl std::fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid UTF-8 at line {}, column {} (byte 0x{:02x}); save the file as UTF-8",
            self.line, self.column, self.byte
        )
    }
}

impl std::error::Error for InvalidUtf8 {}

/// The configuration text of a file's bytes, or where its first invalid UTF-8 byte is.
pub fn utf8_text(bytes: &[u8]) -> Result<&str, InvalidUtf8> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        // the prefix is valid UTF-8 by construction
        let good = std::str::from_utf8(good).unwrap_or_default();
        let line_start = good.rfind('\n').map_or(0, |i| i + 1);
        InvalidUtf8 {
            line: good.matches('\n').count() + 1,
            column: good[line_start..].chars().count() + 1,
            byte: bytes[e.valid_up_to()],
        }
    })
}

/// Policies are `type`-tagged; serde's tagged enums hide the path inside them, so the tag is read here
/// and the variant's own struct is deserialized directly (errors keep their exact path).
fn policies(v: Option<Value>, spans: &SpanIndex, diags: &mut Diags) -> Vec<Option<PolicyConfig>> {
    let Some(Value::Sequence(items)) = v else {
        return list(v, "policies", spans, diags);
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| policy(item, i, spans, diags))
        .collect()
}

/// One element of `policies`.
fn policy(item: Value, i: usize, spans: &SpanIndex, diags: &mut Diags) -> Option<PolicyConfig> {
    const KINDS: &[&str] = &["rate_limit", "jwt"];
    let base = format!("policies[{i}]");
    let Value::Mapping(mut m) = item else {
        diags.push(
            Severity::Error,
            spans.value(&base),
            &base,
            "a policy must be a mapping".into(),
            None,
        );
        return None;
    };
    let kind = m.remove("type");
    match kind.as_ref().and_then(Value::as_str) {
        Some("rate_limit") => de::<RateLimitConfig>(Value::Mapping(m), &base, spans, diags)
            .map(PolicyConfig::RateLimit),
        Some("jwt") => de::<JwtConfig>(Value::Mapping(m), &base, spans, diags)
            .map(|j| PolicyConfig::Jwt(Box::new(j))),
        Some(other) => {
            let p = format!("{base}.type");
            diags.push(
                Severity::Error,
                spans.value(&p),
                &p,
                format!("unknown policy type \"{other}\""),
                did_you_mean(other, KINDS.iter().copied())
                    .or_else(|| Some(format!("expected one of: {}", KINDS.join(", ")))),
            );
            None
        }
        None => {
            diags.push(
                Severity::Error,
                spans.value(&base),
                &base,
                "missing required field \"type\"".into(),
                Some(format!("one of: {}", KINDS.join(", "))),
            );
            None
        }
    }
}

fn list<T: DeserializeOwned>(
    v: Option<Value>,
    path: &str,
    spans: &SpanIndex,
    diags: &mut Diags,
) -> Vec<Option<T>> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| de::<T>(item, &format!("{path}[{i}]"), spans, diags))
            .collect(),
        Some(_) => {
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

/// Deserializes one element, turning a serde error into a positioned diagnostic with a hint
/// (also used for `gw test` files, see [`crate::conftest`]).
/// A top-level key as a section name; a key that is not a string is reported (and `None`).
pub(crate) fn section_name(k: &Value, spans: &SpanIndex, diags: &mut Diags) -> Option<String> {
    let name = k.as_str().map(str::to_string);
    if name.is_none() {
        diags.push(
            Severity::Error,
            spans.value(""),
            "",
            "section names must be strings".into(),
            None,
        );
    }
    name
}

pub(crate) fn de<T: DeserializeOwned>(
    v: Value,
    base: &str,
    spans: &SpanIndex,
    diags: &mut Diags,
) -> Option<T> {
    // Fast path: most elements are valid, and tracking the path of every field (what
    // serde_path_to_error does) costs an allocation per key; only a failure is deserialized again
    // with tracking, to report where it failed (same input, same error).
    if let Ok(t) = T::deserialize(&v) {
        return Some(t);
    }
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let mut path = base.to_string();
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => {
                        path.push_str(&format!("[{index}]"))
                    }
                    serde_path_to_error::Segment::Map { key } => {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(key);
                    }
                    _ => {}
                }
            }
            let raw = e.inner().to_string();
            let (message, hint, key_path) = explain_serde(&raw, &path);
            let pos = match &key_path {
                Some(k) => spans.key(k),
                None => spans.value(&path),
            };
            diags.push(
                Severity::Error,
                pos,
                key_path.as_deref().unwrap_or(&path),
                message,
                hint,
            );
            None
        }
    }
}

/// Rewrites serde's messages (`unknown field `x`, expected one of ...`) into ours, with a hint.
fn explain_serde(raw: &str, path: &str) -> (String, Option<String>, Option<String>) {
    let ticks: Vec<&str> = raw.split('`').collect();
    // ticks[1] is the first back-quoted word; the expected names follow at odd indices.
    let expected = || ticks.iter().skip(3).step_by(2).copied().collect::<Vec<_>>();
    if raw.starts_with("unknown field") && ticks.len() > 1 {
        let field = ticks[1];
        let exp = expected();
        let hint = did_you_mean(field, exp.iter().copied())
            .or_else(|| (!exp.is_empty()).then(|| format!("expected one of: {}", exp.join(", "))));
        // serde_path_to_error may or may not have pushed the unknown key already
        let key_path = if path == field || path.ends_with(&format!(".{field}")) {
            path.to_string()
        } else if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return (format!("unknown field \"{field}\""), hint, Some(key_path));
    }
    if raw.starts_with("unknown variant") && ticks.len() > 1 {
        let variant = ticks[1];
        let exp = expected();
        let hint = did_you_mean(variant, exp.iter().copied())
            .or_else(|| (!exp.is_empty()).then(|| format!("expected one of: {}", exp.join(", "))));
        return (format!("unknown value \"{variant}\""), hint, None);
    }
    if raw.starts_with("missing field") && ticks.len() > 1 {
        let field = ticks[1];
        let hint = if field == "type" {
            Some("add `type: ...` to say which kind this is".to_string())
        } else {
            None
        };
        return (format!("missing required field \"{field}\""), hint, None);
    }
    let msg = raw.replace('`', "\"");
    (msg, None, None)
}

/// Replaces `${NAME}` in every string scalar; an unset variable is an error naming it (and its place).
/// `${NAME:-default}` uses `default` when NAME is unset (for settings, not secrets). `$${` escapes a literal `${`.
fn interpolate(v: &mut Value, path: &str, env: EnvLookup, spans: &SpanIndex, diags: &mut Diags) {
    let mut buf = String::with_capacity(64);
    buf.push_str(path);
    interpolate_at(v, &mut buf, env, spans, diags);
}

/// [`interpolate`] with the node's path in a buffer that each level extends and truncates again (no
/// string is built per node: a route has ~50 nodes and only those with a `$` need their path).
fn interpolate_at(
    v: &mut Value,
    path: &mut String,
    env: EnvLookup,
    spans: &SpanIndex,
    diags: &mut Diags,
) {
    let path_buf = path;
    match v {
        Value::String(s) if s.contains('$') => {
            let path = path_buf.as_str();
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(i) = rest.find('$') {
                out.push_str(&rest[..i]);
                let after = &rest[i..];
                if let Some(stripped) = after.strip_prefix("$${") {
                    out.push_str("${");
                    rest = stripped;
                } else if let Some(body) = after.strip_prefix("${") {
                    match body.find('}') {
                        Some(end) => {
                            let (name, default) = match body[..end].split_once(":-") {
                                Some((n, d)) => (n, Some(d)),
                                None => (&body[..end], None),
                            };
                            let valid = !name.is_empty()
                                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                            if !valid {
                                diags.push(
                                    Severity::Error,
                                    spans.value(path),
                                    path,
                                    format!(
                                        "invalid environment variable reference \"${{{name}}}\""
                                    ),
                                    Some("names use letters, digits and _".into()),
                                );
                            } else {
                                match env(name).or_else(|| default.map(str::to_string)) {
                                    Some(val) => out.push_str(&val),
                                    None => {
                                        diags.push(
                                            Severity::Error,
                                            spans.value(path),
                                            path,
                                            format!("environment variable {name} is not set"),
                                            Some(format!("export {name}=... before running gw")),
                                        );
                                        diags.settled.insert(path.to_string());
                                    }
                                }
                            }
                            rest = &body[end + 1..];
                        }
                        None => {
                            diags.push(
                                Severity::Error,
                                spans.value(path),
                                path,
                                "unterminated \"${\" in string".into(),
                                Some("close it with \"}\", or write \"$${\" for a literal".into()),
                            );
                            out.push_str(after);
                            rest = "";
                        }
                    }
                } else {
                    out.push('$');
                    rest = &after[1..];
                }
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Sequence(items) => {
            let len = path_buf.len();
            for (i, item) in items.iter_mut().enumerate() {
                use std::fmt::Write;
                let _ = write!(path_buf, "[{i}]");
                interpolate_at(item, path_buf, env, spans, diags);
                path_buf.truncate(len);
            }
        }
        Value::Mapping(m) => {
            let len = path_buf.len();
            for (k, item) in m.iter_mut() {
                if let Some(k) = k.as_str() {
                    if len > 0 {
                        path_buf.push('.');
                    }
                    path_buf.push_str(k);
                    interpolate_at(item, path_buf, env, spans, diags);
                    path_buf.truncate(len);
                }
            }
        }
        Value::Tagged(t) => interpolate_at(&mut t.value, path_buf, env, spans, diags),
        _ => {}
    }
}

//! The fuzz targets' properties (`fuzz/`, nightly cargo-fuzz) as stable proptests, sharing the same
//! bodies (`gateway_core::fuzzing`), so CI checks them on every push. Each also replays the committed
//! fuzz corpus of its target, when present.
use gateway_core::fuzzing;
use proptest::prelude::*;
use std::path::Path;

/// Runs `body` on every file of `fuzz/corpus/<target>/` (the corpus the fuzzer kept).
fn replay(target: &str, body: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        if let Ok(data) = std::fs::read(e.path()) {
            body(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn corpora_replay() {
    replay("path_normalize", fuzzing::path_target);
    replay("forwarded_parse", fuzzing::forwarded_target);
    replay("jwt_parse", fuzzing::jwt_target);
    replay("rate_limit_key", fuzzing::rate_key_target);
    replay("config_compile", fuzzing::config_target);
    replay("traceparent_parse", fuzzing::traceparent_target);
}

#[test]
fn path_variants_hold_under_every_policy() {
    for &(p, _) in fuzzing::PATH_VARIANTS {
        for sel in 0..8u8 {
            let mut data = vec![sel];
            data.extend_from_slice(p.as_bytes());
            fuzzing::path_target(&data);
        }
    }
}

/// Path-ish strings: separators, dots, escapes (of dots, slashes, percent, semicolons, overlong
/// bytes, fullwidth characters), semicolons and the route prefixes.
fn pathish() -> impl Strategy<Value = Vec<u8>> {
    let atoms = prop::sample::select(vec![
        "/",
        "//",
        ".",
        "..",
        "...",
        "%2e",
        "%2E",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "%25",
        "%252e",
        "%252f",
        "%3b",
        ";",
        "\\",
        "%c0%af",
        "%c0%ae",
        "%e0%80%af",
        "%u002e",
        "%ef%bc%8e",
        "\u{ff0e}",
        "\u{ff0f}",
        "%20",
        "%09",
        "%00",
        "admin",
        "public",
        "ADMIN",
        "x",
        "%",
        "2",
        "e",
        "f",
        "%2",
        "~",
        "%7e",
        "%41",
    ]);
    (any::<u8>(), prop::collection::vec(atoms, 0..14)).prop_map(|(sel, parts)| {
        let mut v = vec![sel, b'/'];
        for p in parts {
            v.extend_from_slice(p.as_bytes());
        }
        v
    })
}

fn forwardedish() -> impl Strategy<Value = Vec<u8>> {
    let atoms = prop::sample::select(vec![
        "10.0.0.1",
        "10.9.8.7",
        "198.51.100.4",
        "2001:db8::5",
        "[2001:db8::5]:80",
        "[2001:db9::1]",
        "192.0.2.1:8080",
        "unknown",
        "_hidden",
        ",",
        ", ",
        "\n",
        "for=",
        "For=",
        "\"",
        ";",
        "proto=https",
        "by=10.0.0.2",
        "\\",
        "junk",
        " ",
    ]);
    (any::<u8>(), prop::collection::vec(atoms, 0..16)).prop_map(|(sel, parts)| {
        let mut v = vec![sel];
        for p in parts {
            v.extend_from_slice(p.as_bytes());
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn path_normalisation(data in pathish()) {
        fuzzing::path_target(&data);
    }

    #[test]
    fn path_normalisation_bytes(data in prop::collection::vec(any::<u8>(), 0..64)) {
        fuzzing::path_target(&data);
    }

    #[test]
    fn forwarded_parsing(data in forwardedish()) {
        fuzzing::forwarded_target(&data);
    }

    #[test]
    fn forwarded_parsing_bytes(data in prop::collection::vec(any::<u8>(), 0..64)) {
        fuzzing::forwarded_target(&data);
    }

    #[test]
    fn traceparent_parsing(data in traceparentish()) {
        fuzzing::traceparent_target(&data);
    }

    #[test]
    fn traceparent_parsing_bytes(data in prop::collection::vec(any::<u8>(), 0..80)) {
        fuzzing::traceparent_target(&data);
    }

    #[test]
    fn rate_limit_keys(data in prop::collection::vec(any::<u8>(), 0..64)) {
        fuzzing::rate_key_target(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn jwt_tokens(data in "[A-Za-z0-9_.-]{0,200}") {
        fuzzing::jwt_target(data.as_bytes());
    }

    #[test]
    fn jwt_claims(sub in proptest::option::of("[a-z]{0,8}"), exp in any::<i64>(), nbf in proptest::option::of(any::<i64>()), iss in "[a-z]{0,4}", aud in proptest::option::of("[a-z]{0,4}")) {
        let mut claims = serde_json::json!({ "exp": exp, "iss": iss });
        if let Some(s) = sub { claims["sub"] = s.into(); }
        if let Some(n) = nbf { claims["nbf"] = n.into(); }
        if let Some(a) = aud { claims["aud"] = a.into(); }
        fuzzing::jwt_target(claims.to_string().as_bytes());
    }

    #[test]
    fn config_text(text in "(listeners|upstreams|routes|server|policies|[:{}\\[\\], \n-]|name|address|\"127.0.0.1:8\"|prefix|/|1s|99999999999999999999|timeouts|request|~){0,40}") {
        fuzzing::config_target(text.as_bytes());
    }
}

/// Near-valid `traceparent` values: known and unknown versions (`ff` among them), ids that are zero,
/// short, long or upper-case, any flags, and what a later version may append.
fn traceparentish() -> impl Strategy<Value = Vec<u8>> {
    let version = prop::sample::select(vec!["00", "01", "cc", "fe", "ff", "0A", "0", "000"]);
    let id = |n: usize| {
        prop_oneof![
            4 => proptest::string::string_regex(&format!("[0-9a-f]{{{n}}}")).unwrap(),
            1 => Just("0".repeat(n)),
            1 => proptest::string::string_regex(&format!("[0-9a-fA-F]{{{},{}}}", n - 1, n + 1)).unwrap(),
        ]
    };
    let flags = prop_oneof![
        4 => proptest::string::string_regex("[0-9a-f]{2}").unwrap(),
        1 => proptest::string::string_regex("[0-9a-fA-F]{1,3}").unwrap(),
    ];
    let tail = prop::sample::select(vec!["", "", "", "", "-", "-x", "x", "-00-more", " "]);
    let sep = prop::sample::select(vec!["-", "-", "-", "_"]);
    (version, id(32), id(16), flags, tail, sep)
        .prop_map(|(v, t, s, f, tail, sep)| format!("{v}-{t}{sep}{s}-{f}{tail}").into_bytes())
}
